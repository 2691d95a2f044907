//! Turning a policy profile into a complete, checked plan (`TunnelSpec`) before anything is touched.
//! Today a profile is a static wg-quick file; pools and providers will produce the same plan.

use crate::policy::Profile;
use crate::wg::{DeviceConfig, PeerConfig};
use crate::wgquick;
use ipnetwork::IpNetwork;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

pub struct TunnelSpec {
    pub source: PathBuf,
    pub device: DeviceConfig,
    pub addresses: Vec<IpNetwork>,
    pub mtu: Option<u32>,
    pub dns_servers: Vec<IpAddr>,
    pub dns_search: Vec<String>,
    /// One route per distinct AllowedIPs prefix of all peers.
    pub routes: Vec<IpNetwork>,
}

impl TunnelSpec {
    pub fn endpoints(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.device.peers.iter().filter_map(|p| p.endpoint)
    }
}

/// Loads the profile's wg-quick file and resolves peer endpoints here, in the runtime's netns, where the
/// encrypted UDP socket will live.
pub fn tunnel_spec(profile: &Profile) -> Result<TunnelSpec, String> {
    let config = wgquick::load(&profile.config).map_err(|e| e.to_string())?;
    let iface = config.interface;
    let mut routes: Vec<IpNetwork> = Vec::new();
    let mut peers = Vec::with_capacity(config.peers.len());
    for peer in config.peers {
        for net in &peer.allowed_ips {
            if !routes.contains(net) {
                routes.push(*net);
            }
        }
        let endpoint = match &peer.endpoint {
            Some(ep) => Some(resolve(&ep.host, ep.port).map_err(|e| {
                format!(
                    "{}: Endpoint {}:{}: {e}",
                    profile.config.display(),
                    ep.host,
                    ep.port
                )
            })?),
            None => None,
        };
        peers.push(PeerConfig {
            public_key: peer.public_key,
            preshared_key: peer.preshared_key,
            endpoint,
            allowed_ips: peer.allowed_ips,
            persistent_keepalive: peer.persistent_keepalive,
        });
    }
    Ok(TunnelSpec {
        source: profile.config.clone(),
        device: DeviceConfig {
            private_key: iface.private_key,
            listen_port: iface.listen_port,
            fwmark: iface.fwmark,
            peers,
        },
        addresses: iface.addresses,
        mtu: iface.mtu,
        dns_servers: iface.dns_servers,
        dns_search: iface.dns_search,
        routes,
    })
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| "the name has no addresses".to_owned())
}
