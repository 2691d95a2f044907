//! The tunnel's MTU when the profile sets none, by wg-quick's rule.

use super::tunnel::TunnelSpec;
use crate::sys::netlink::Netlink;
use std::io;

/// wg-quick's fallback when nothing tells it the path MTU, and its WireGuard overhead (IPv6 + UDP + WG).
const FALLBACK_UNDERLAY_MTU: u32 = 1500;
const WIREGUARD_OVERHEAD: u32 = 80;
/// IPv6's minimum, which a tunnel carrying IPv6 must not go below.
const MINIMUM_MTU: u32 = 1280;

/// The largest MTU towards any endpoint (route metric, else its device), else the default route's, else
/// 1500; minus WireGuard's 80 bytes of overhead. Read in the runtime's netns, where the UDP socket lives.
pub(super) fn computed(host: &Netlink, spec: &TunnelSpec) -> io::Result<u32> {
    let mut underlay = 0;
    for endpoint in spec.endpoints() {
        if let Some(mtu) = host.path_mtu_to(endpoint.ip())? {
            underlay = underlay.max(mtu);
        }
    }
    if underlay == 0 {
        if let Some(route) = host.default_routes(false)?.first() {
            underlay = host.route_mtu(route)?.unwrap_or(0);
        }
    }
    if underlay == 0 {
        underlay = FALLBACK_UNDERLAY_MTU;
    }
    Ok(underlay.saturating_sub(WIREGUARD_OVERHEAD).max(MINIMUM_MTU))
}
