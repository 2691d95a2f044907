//! Kernel WireGuard: the link is created with rtnetlink (`sys::netlink`, from the host into the container's netns),
//! then configured and read back here through wireguard-control's generic-netlink backend, in the calling
//! thread's netns: a thread inside the container's, where the link is.

use super::{DeviceConfig, DeviceState, PeerState};
use crate::wg::key::Key;
use ipnetwork::IpNetwork;
use std::io;
use wireguard_control::{
    Backend, Device, DeviceUpdate, InterfaceName, Key as WgKey, PeerConfigBuilder,
};

fn interface_name(name: &str) -> io::Result<InterfaceName> {
    name.parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "invalid interface name"))
}

/// Applies the device configuration to the kernel WireGuard link named `name` of the calling thread's netns.
/// wireguard-control first asks for a link of that name (NEWLINK, "exists" ignored): were there none, it would
/// make one here, whose socket would be in this netns, so the caller checks afterwards that the link is still
/// the one it made.
pub fn configure(name: &str, config: &DeviceConfig) -> io::Result<()> {
    let iface = interface_name(name)?;
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

/// Points the existing peer `public_key` of device `name` (in the calling thread's netns) at `endpoint`, and
/// changes nothing else.
pub fn set_peer_endpoint(
    name: &str,
    public_key: &Key,
    endpoint: std::net::SocketAddr,
) -> io::Result<()> {
    let peer = PeerConfigBuilder::new(&WgKey(*public_key.as_bytes())).set_endpoint(endpoint);
    DeviceUpdate::new()
        .add_peer(peer)
        .apply(&interface_name(name)?, Backend::Kernel)
}

/// Reads the kernel WireGuard device `name` of the calling thread's netns (WG_CMD_GET_DEVICE) and changes
/// nothing. The kernel's answer holds the private and preshared keys: wireguard-control parses them into its
/// `Device`, and they are wiped there before this returns (the netlink library's own receive buffers are out of
/// our reach).
pub fn get(name: &str) -> io::Result<DeviceState> {
    let mut device = Device::get(&interface_name(name)?, Backend::Kernel)?;
    if let Some(key) = device.private_key.as_mut() {
        wipe(key);
    }
    device.private_key = None;
    let peers = device
        .peers
        .iter_mut()
        .map(|peer| {
            if let Some(key) = peer.config.preshared_key.as_mut() {
                wipe(key);
            }
            peer.config.preshared_key = None;
            PeerState {
                public_key: Key::from_bytes(peer.config.public_key.0),
                endpoint: peer.config.endpoint,
                allowed_ips: peer
                    .config
                    .allowed_ips
                    .iter()
                    .filter_map(|ip| IpNetwork::new(ip.address, ip.cidr).ok())
                    .collect(),
                last_handshake: peer.stats.last_handshake_time,
                rx_bytes: peer.stats.rx_bytes,
                tx_bytes: peer.stats.tx_bytes,
                persistent_keepalive: peer.config.persistent_keepalive_interval.filter(|&s| s > 0),
            }
        })
        .collect();
    Ok(DeviceState {
        listen_port: device.listen_port,
        peers,
    })
}

fn wipe(key: &mut WgKey) {
    for b in key.0.iter_mut() {
        // SAFETY: a valid, aligned &mut u8. Volatile so the wipe is not optimised away.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}
