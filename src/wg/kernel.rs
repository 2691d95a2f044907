//! Kernel WireGuard: the link is created with rtnetlink, then configured through wireguard-control's
//! generic-netlink backend, both in the calling thread's netns (the host side).

use super::DeviceConfig;
use std::io;
use wireguard_control::{Backend, DeviceUpdate, InterfaceName, Key as WgKey, PeerConfigBuilder};

/// Applies the device configuration to an existing kernel WireGuard link named `name`.
pub fn configure(name: &str, config: &DeviceConfig) -> io::Result<()> {
    let iface: InterfaceName = name
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "invalid interface name"))?;
    let mut update = DeviceUpdate::new()
        .set_private_key(WgKey(*config.private_key.as_bytes()))
        .replace_peers();
    if let Some(port) = config.listen_port {
        update = update.set_listen_port(port);
    }
    if let Some(mark) = config.fwmark {
        update = update.set_fwmark(mark);
    }
    for peer in &config.peers {
        let mut builder =
            PeerConfigBuilder::new(&WgKey(*peer.public_key.as_bytes())).replace_allowed_ips();
        if let Some(psk) = &peer.preshared_key {
            builder = builder.set_preshared_key(WgKey(*psk.as_bytes()));
        }
        if let Some(endpoint) = peer.endpoint {
            builder = builder.set_endpoint(endpoint);
        }
        if let Some(interval) = peer.persistent_keepalive {
            builder = builder.set_persistent_keepalive_interval(interval);
        }
        for net in &peer.allowed_ips {
            builder = builder.add_allowed_ip(net.network(), net.prefix());
        }
        update = update.add_peer(builder);
    }
    update.apply(&iface, Backend::Kernel)
}
