//! Turning a policy profile into a complete, checked plan (`TunnelSpec`) before anything is touched: from a
//! static wg-quick file, or from a provider's registration (`provider::pia`).

use crate::config::file_error::FileError;
use crate::config::policy::Profile;
use crate::config::ports::{Inbound, PortMap};
use crate::config::wgquick;
use crate::provider::pia::Registered;
use crate::sys::deadline::Deadline;
use crate::wg::{DeviceConfig, PeerConfig};
use ipnetwork::IpNetwork;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// PIA's registered keys expire after some hours without traffic.
const PIA_KEEPALIVE: u16 = 25;

pub struct TunnelSpec {
    pub source: PathBuf,
    pub device: DeviceConfig,
    pub addresses: Vec<IpNetwork>,
    pub mtu: Option<u32>,
    pub dns_servers: Vec<IpAddr>,
    pub dns_search: Vec<String>,
    /// One route per distinct AllowedIPs prefix of all peers.
    pub routes: Vec<IpNetwork>,
    pub kill_switch: bool,
    pub allow_local: Vec<IpNetwork>,
    pub port_maps: Vec<PortMap>,
    /// What the tunnel's side may open: the profile's `inbound`, or the default for this tunnel.
    pub inbound: Inbound,
    /// Peers whose Endpoint is a host name: the supervisor looks it up again when the handshake goes stale.
    pub named_endpoints: Vec<NamedEndpoint>,
}

/// A peer's Endpoint given as a host name (a home server on dynamic DNS), as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NamedEndpoint {
    /// The peer's public key, base64.
    pub peer: String,
    pub host: String,
    pub port: u16,
}

impl TunnelSpec {
    pub fn endpoints(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.device.peers.iter().filter_map(|p| p.endpoint)
    }
}

/// Loads the profile's wg-quick file and resolves peer endpoints here, in the runtime's netns, where the
/// encrypted UDP socket will live: each name within `resolve_timeout`, all before `deadline`.
pub fn from_wg_quick(
    profile: &Profile,
    path: &Path,
    resolve_timeout: Duration,
    deadline: Deadline,
) -> Result<TunnelSpec, FileError> {
    let config = wgquick::load(path)?;
    let whole_file = |message: String| FileError {
        file: path.display().to_string(),
        line: None,
        message,
    };
    let iface = config.interface;
    let mut routes: Vec<IpNetwork> = Vec::new();
    let mut peers = Vec::with_capacity(config.peers.len());
    let mut named_endpoints = Vec::new();
    for (n, peer) in config.peers.into_iter().enumerate() {
        for net in &peer.allowed_ips {
            if !routes.contains(net) {
                routes.push(*net);
            }
        }
        let endpoint = match &peer.endpoint {
            Some(ep) => {
                if ep.host.parse::<IpAddr>().is_err() {
                    named_endpoints.push(NamedEndpoint {
                        peer: peer.public_key.to_base64(),
                        host: ep.host.clone(),
                        port: ep.port,
                    });
                }
                let limit = Deadline::after(resolve_timeout, "resolve_timeout").earlier(deadline);
                Some(resolve(&ep.host, ep.port, limit).map_err(|e| FileError {
                    file: path.display().to_string(),
                    line: Some(peer.line),
                    message: format!("peer {} endpoint {}:{}: {e}", n + 1, ep.host, ep.port),
                })?)
            }
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
    check_split_tunnel(profile, &routes).map_err(whole_file)?;
    let inbound = inbound_or_default(profile, &routes);
    // wg-quick's `Table = off` (linux.bash, add_route): no routes at all.
    let routes = match iface.table {
        wgquick::Table::Off => Vec::new(),
        wgquick::Table::Auto => routes,
    };
    Ok(TunnelSpec {
        source: path.to_owned(),
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
        kill_switch: profile.kill_switch,
        allow_local: profile.allow_local.clone().unwrap_or_default(),
        port_maps: profile.port_maps.clone(),
        inbound,
        named_endpoints,
    })
}

/// The profile's `inbound`, else by the tunnel's kind. A tunnel that takes the default route (a VPN
/// customer's) leads to a provider's network and its other customers: only replies (and the port maps) come
/// in, as with gluetun. One that routes only some subnets (site to site) leads to the user's own network,
/// which plain wg-quick lets in whole, so nothing more is filtered there than wg-quick would.
fn inbound_or_default(profile: &Profile, allowed_ips: &[IpNetwork]) -> Inbound {
    match &profile.inbound {
        Some(inbound) => inbound.clone(),
        None if allowed_ips.iter().any(|n| n.prefix() == 0) => Inbound::Replies,
        None => Inbound::All,
    }
}

/// A split tunnel (AllowedIPs without a default route of either family) keeps the bridge's default route, but
/// the kill switch would drop everything that takes it. The policy must say what that is, even if nothing:
/// silence here is more likely a mistake than a wish for a container that only reaches the remote subnets.
fn check_split_tunnel(profile: &Profile, allowed_ips: &[IpNetwork]) -> Result<(), String> {
    let full = allowed_ips.iter().any(|n| n.prefix() == 0);
    if full || !profile.kill_switch || profile.allow_local.is_some() {
        return Ok(());
    }
    let what = if allowed_ips.is_empty() {
        "routes nothing into the tunnel (no peer has AllowedIPs)"
    } else {
        "routes only some subnets into the tunnel (no 0.0.0.0/0 or ::/0 in AllowedIPs)"
    };
    Err(format!(
        "{what}, and the kill switch of profile {:?} would drop everything else: list what may leave outside \
         the tunnel in allow_local \
         (allow_local = [] for nothing), or set kill_switch = false",
        profile.name
    ))
}

/// A PIA registration as wg-quick would write it: Address = peer_ip, the server as the one peer with
/// AllowedIPs = 0.0.0.0/0 (PIA is IPv4 only: the kill switch keeps IPv6 off), DNS = dns_servers, keepalive 25 s.
pub fn from_pia(profile: &Profile, credentials: &Path, registered: Registered) -> TunnelSpec {
    let r = registered.registration;
    let default_v4: IpNetwork = "0.0.0.0/0".parse().expect("literal");
    TunnelSpec {
        source: credentials.to_owned(),
        device: DeviceConfig {
            private_key: registered.private_key,
            listen_port: None,
            fwmark: None,
            peers: vec![PeerConfig {
                public_key: r.server_key,
                preshared_key: None,
                endpoint: Some(r.endpoint),
                allowed_ips: vec![default_v4],
                persistent_keepalive: Some(PIA_KEEPALIVE),
            }],
        },
        addresses: vec![IpNetwork::from(r.peer_ip)],
        mtu: None,
        dns_servers: r.dns_servers,
        dns_search: Vec::new(),
        routes: vec![default_v4],
        kill_switch: profile.kill_switch,
        allow_local: profile.allow_local.clone().unwrap_or_default(),
        port_maps: profile.port_maps.clone(),
        inbound: inbound_or_default(profile, &[default_v4]),
        named_endpoints: Vec::new(),
    }
}

/// An Endpoint's address. An IP literal (the common case) is taken as it is, with no thread and no wait.
pub fn resolve(host: &str, port: u16, deadline: Deadline) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    resolve_name(host, port, deadline, system_lookup)
}

type Lookup = fn(&str, u16) -> io::Result<Option<SocketAddr>>;

fn system_lookup(host: &str, port: u16) -> io::Result<Option<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.next())
}

/// A name, looked up on a thread of its own: getaddrinfo cannot be cancelled, and a resolver that never answers
/// (glibc waits `timeout` x `attempts` per nameserver) would keep the hook until the engine kills it, saying
/// nothing of why. When `deadline` passes first, the thread is left to end with the process.
fn resolve_name(
    host: &str,
    port: u16,
    deadline: Deadline,
    lookup: Lookup,
) -> Result<SocketAddr, String> {
    let wait = deadline.left();
    if wait.is_zero() {
        return Err(format!("not resolved: {}", deadline.check().unwrap_err()));
    }
    let (tx, rx) = mpsc::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ = tx.send(lookup(&name, port));
        })
        .map_err(|e| format!("starting a resolver thread: {e}"))?;
    match rx.recv_timeout(wait) {
        Ok(Ok(Some(addr))) => Ok(addr),
        Ok(Ok(None)) => Err("the name has no addresses".to_owned()),
        Ok(Err(e)) => Err(format!("cannot resolve: {e}")),
        Err(_) => Err(format!(
            "no answer from the resolver within {:.1} s ({})",
            wait.as_secs_f64(),
            deadline.name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(kill_switch: bool, allow_local: Option<Vec<IpNetwork>>) -> Profile {
        Profile {
            name: "site".into(),
            source: crate::config::policy::ProfileSource::WgQuick(
                "/etc/wg-oci-hook/site.conf".into(),
            ),
            kill_switch,
            allow_local,
            port_maps: Vec::new(),
            inbound: None,
            shared: false,
            health: Default::default(),
            lines: Default::default(),
        }
    }

    #[test]
    fn a_split_tunnel_with_a_kill_switch_must_say_what_else_is_allowed() {
        let subnets: Vec<IpNetwork> = vec!["10.20.0.0/16".parse().unwrap()];
        let e = check_split_tunnel(&profile(true, None), &subnets).unwrap_err();
        assert!(
            e.starts_with("routes only some subnets") && e.contains("profile \"site\""),
            "{e}"
        );
        assert!(e.contains("allow_local"), "{e}");
        assert!(check_split_tunnel(&profile(true, Some(vec![])), &subnets).is_ok());
        assert!(check_split_tunnel(&profile(false, None), &subnets).is_ok());
        // A config without peers (wg-quick accepts one) routes nothing: the message says so.
        let e = check_split_tunnel(&profile(true, None), &[]).unwrap_err();
        assert!(
            e.starts_with("routes nothing into the tunnel (no peer has AllowedIPs), and"),
            "{e}"
        );
        let full: Vec<IpNetwork> = vec!["10.20.0.0/16".parse().unwrap(), "::/0".parse().unwrap()];
        assert!(check_split_tunnel(&profile(true, None), &full).is_ok());
    }

    fn within(seconds: u64) -> Deadline {
        Deadline::after(Duration::from_secs(seconds), "resolve_timeout")
    }

    #[test]
    fn inbound_defaults_to_replies_on_a_full_tunnel_and_all_on_a_split_one() {
        let nets =
            |list: &[&str]| -> Vec<IpNetwork> { list.iter().map(|s| s.parse().unwrap()).collect() };
        let p = profile(true, Some(vec![]));
        for full in [&["0.0.0.0/0"][..], &["10.0.0.0/8", "::/0"]] {
            assert_eq!(
                inbound_or_default(&p, &nets(full)),
                Inbound::Replies,
                "{full:?}"
            );
        }
        assert_eq!(
            inbound_or_default(&p, &nets(&["10.20.0.0/16", "fd20::/64"])),
            Inbound::All
        );
        let mut listed = profile(true, Some(vec![]));
        listed.inbound = Some(Inbound::All);
        assert_eq!(
            inbound_or_default(&listed, &nets(&["0.0.0.0/0"])),
            Inbound::All
        );
        listed.inbound = Some(Inbound::Replies);
        assert_eq!(
            inbound_or_default(&listed, &nets(&["10.20.0.0/16"])),
            Inbound::Replies
        );
    }

    #[test]
    fn endpoints_resolve_literals_without_dns_or_time() {
        // A deadline already passed: a literal still resolves, since it never waits for anything.
        let passed = Deadline::after(Duration::ZERO, "create_timeout");
        assert_eq!(
            resolve("192.0.2.1", 51820, passed).unwrap(),
            "192.0.2.1:51820".parse().unwrap()
        );
        assert_eq!(
            resolve("2001:db8::1", 443, passed).unwrap(),
            "[2001:db8::1]:443".parse().unwrap()
        );
        // A name does wait, so it does not get that far.
        assert_eq!(
            resolve("localhost", 1, passed).unwrap_err(),
            "not resolved: the create_timeout of 0 s passed"
        );
    }

    #[test]
    fn a_name_that_resolves_still_does() {
        let addr = resolve("localhost", 51820, within(5)).unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 51820);
    }

    #[test]
    fn a_resolver_that_never_answers_is_given_up_at_the_deadline() {
        fn silent(_: &str, _: u16) -> io::Result<Option<SocketAddr>> {
            std::thread::sleep(Duration::from_secs(30));
            Ok(None)
        }
        let deadline = Deadline::after(Duration::from_millis(200), "resolve_timeout");
        let started = std::time::Instant::now();
        let e = resolve_name("vpn.example", 51820, deadline, silent).unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            e,
            "no answer from the resolver within 0.2 s (resolve_timeout)"
        );
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // An answer that comes in time, and one that says the name has nothing.
        fn answers(_: &str, port: u16) -> io::Result<Option<SocketAddr>> {
            Ok(Some(SocketAddr::new([192, 0, 2, 7].into(), port)))
        }
        fn empty(_: &str, _: u16) -> io::Result<Option<SocketAddr>> {
            Ok(None)
        }
        fn fails(_: &str, _: u16) -> io::Result<Option<SocketAddr>> {
            Err(io::Error::other("failed to lookup address information"))
        }
        assert_eq!(
            resolve_name("vpn.example", 1, within(5), answers).unwrap(),
            "192.0.2.7:1".parse().unwrap()
        );
        assert_eq!(
            resolve_name("vpn.example", 1, within(5), empty).unwrap_err(),
            "the name has no addresses"
        );
        assert!(resolve_name("vpn.example", 1, within(5), fails)
            .unwrap_err()
            .starts_with("cannot resolve: failed"));
    }
}
