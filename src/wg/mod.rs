//! Configuring the WireGuard device: the kernel backend (generic netlink via wireguard-control) and the
//! userspace backend: the built-in daemon (`daemon`, on gotatun, configured over a socketpair) or a
//! `userspace_command` such as wireguard-go (configured over its UAPI socket). Either way the device's UDP
//! socket is in the runtime's (host) netns for its whole life: the kernel opens it in the netns the link was
//! created from (the hook makes it from there straight into the container's), a daemon in its own.

pub mod daemon;
pub mod kernel;
pub mod key;
pub mod tun;
pub mod uapi;
pub mod userspace;

use crate::wg::key::Key;
use ipnetwork::IpNetwork;
use std::net::SocketAddr;
use std::time::SystemTime;

/// Everything WireGuard itself needs; addresses, routes and DNS are applied by the caller.
pub struct DeviceConfig {
    pub private_key: Key,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerConfig>,
}

pub struct PeerConfig {
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNetwork>,
    pub persistent_keepalive: Option<u16>,
}

/// What a device says of itself when asked (`wg show`'s view), from either backend: never a private or
/// preshared key, which both answers carry and the readers drop as they parse.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeviceState {
    pub listen_port: Option<u16>,
    pub peers: Vec<PeerState>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct PeerState {
    pub public_key: Key,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNetwork>,
    /// None: no handshake yet.
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Kernel,
    Userspace,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Kernel => "kernel",
            BackendKind::Userspace => "userspace",
        })
    }
}
