//! What the supervisor does for an unhealthy tunnel, in place (wg0 stays, and with it the container's routes
//! and its kill switch):
//! - a static profile's peers whose Endpoint is a host name: looked up again in the host's netns (where the
//!   device's UDP socket is), and a changed address set on the peer, as wireguard-tools' reresolve-dns.sh does;
//! - a PIA tunnel (`reconnect`, on by default): a fresh key registered (its region first, then the profile's
//!   other regions; a `wg.region` container's region alone) and applied: the new address added, the table
//!   replaced in one transaction with the new address as the tunnel's own (the kill switch never leaves), the
//!   device given the new key and peer, the old address removed, resolv.conf rewritten if the DNS changed, and
//!   the record updated under the tunnel's lock.

use crate::config::pia_credentials;
use crate::config::policy::{Policy, Profile};
use crate::config::ports::PortMap;
use crate::hook::firewall::Rules;
use crate::hook::record::{Record, StateDir};
use crate::hook::resolv_conf;
use crate::hook::tunnel::{self, TunnelSpec};
use crate::provider::pia::{self, Wanted};
use crate::sys::deadline::Deadline;
use crate::sys::netlink::Netlink;
use crate::sys::netns::NetNs;
use crate::sys::nft;
use crate::wg::key::Key;
use crate::wg::{kernel, uapi, BackendKind, DeviceState};
use ipnetwork::IpNetwork;
use log::info;
use nix::errno::Errno;
use std::time::Duration;

/// How long a recovery waits for the tunnel's lock (a start joining, a poststop leaving).
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Bound on one reconfiguration of the device.
const APPLY_WAIT: Duration = Duration::from_secs(5);

pub struct Context<'a> {
    pub policy: &'a Policy,
    pub state: &'a StateDir,
    pub key: &'a str,
    pub profile: &'a Profile,
}

/// Recovers the tunnel if its profile knows how: what was done, None when there was nothing to do.
pub fn recover(
    ctx: &Context,
    record: &Record,
    ns: &NetNs,
    device: &DeviceState,
) -> Result<Option<String>, String> {
    match ctx.profile.pia() {
        Some(settings) if settings.reconnect => renew_pia(ctx, record, ns).map(Some),
        Some(_) => Ok(None),
        None => reresolve(ctx, record, ns, device),
    }
}

/// Each named Endpoint looked up again; a peer whose address changed is pointed at the new one.
fn reresolve(
    ctx: &Context,
    record: &Record,
    ns: &NetNs,
    device: &DeviceState,
) -> Result<Option<String>, String> {
    let mut changed = Vec::new();
    for named in &record.named_endpoints {
        let key = Key::from_base64(&named.peer).ok_or("a recorded peer key is not base64")?;
        let deadline = Deadline::after(ctx.policy.resolve_timeout, "resolve_timeout");
        let now = tunnel::resolve(&named.host, named.port, deadline)
            .map_err(|e| format!("{}:{}: {e}", named.host, named.port))?;
        let current = device
            .peers
            .iter()
            .find(|p| p.public_key == key)
            .and_then(|p| p.endpoint);
        if current == Some(now) {
            continue;
        }
        let deadline = Deadline::after(APPLY_WAIT, "the device's answer");
        match record.backend {
            BackendKind::Kernel => {
                ns.run(|| kernel::set_peer_endpoint(&record.interface, &key, now))
            }
            BackendKind::Userspace => {
                uapi::set_peer_endpoint(&uapi::socket_path(&record.host_link), &key, now, deadline)
            }
        }
        .map_err(|e| format!("setting the endpoint of {}: {e}", named.host))?;
        changed.push(format!(
            "{} now at {now} (was {})",
            named.host,
            current.map_or("none".into(), |c| c.to_string())
        ));
    }
    Ok((!changed.is_empty()).then(|| format!("endpoint followed: {}", changed.join(", "))))
}

/// A fresh PIA key, registered and applied in place.
fn renew_pia(ctx: &Context, record: &Record, ns: &NetNs) -> Result<String, String> {
    let settings = ctx.profile.pia().expect("a PIA profile");
    let old = record
        .pia
        .as_ref()
        .ok_or("the record has no PIA registration")?;
    let credentials = pia_credentials::load(&settings.credentials).map_err(|e| e.to_string())?;
    let wanted = Wanted::new(settings, old.requested_region.as_deref()).first(&old.region);
    let deadline = Deadline::after(settings.api_deadline, "api_deadline");
    let registered = pia::register(
        settings,
        &credentials,
        ctx.state.dir(),
        &wanted,
        &format!("tunnel {}", ctx.key),
        deadline,
    )?;
    let mut new = registered.record(
        old.requested_region.as_deref(),
        old.container_pid,
        &old.rootfs,
    );
    new.port_forward = old.port_forward.clone();
    let summary = format!(
        "registered again on {} (region {}), address {}",
        new.server_cn, new.region, new.peer_ip
    );
    let mut spec = tunnel::from_pia(ctx.profile, &settings.credentials, registered);
    // A fresh UDP port with the fresh key: gotatun rebinds its socket when the key changes, and the old port
    // may still be bound by its closing connection (EADDRINUSE, answered as EINVAL).
    spec.device.listen_port = Some(0);

    // Under the tunnel's lock: a member joining or leaving sees the record before or after, never half.
    let lock = ctx
        .state
        .lock(ctx.key, Deadline::after(LOCK_WAIT, "the tunnel's lock"))
        .map_err(|e| format!("the tunnel's lock: {e}"))?;
    let mut record = ctx
        .state
        .load(ctx.key)
        .map_err(|e| format!("reading the record: {e}"))?
        .ok_or("the tunnel was taken down meanwhile")?;
    let old_addresses: Vec<IpNetwork> = record
        .pia
        .as_ref()
        .map(|p| vec![IpNetwork::from(p.peer_ip)])
        .unwrap_or_default();
    apply(&record, ns, &spec, &old_addresses, settings.port_forwarding)?;
    if spec.dns_servers != record.dns_servers && !spec.dns_servers.is_empty() {
        let content = resolv_conf::render(
            &spec.dns_servers,
            &spec.dns_search,
            &record.interface,
            record.builder(),
        );
        for shared in &mut record.resolv_confs {
            if let Err(e) = resolv_conf::rewrite(&mut shared.change, &content) {
                log::warn!("tunnel {}: resolv.conf: {e}", ctx.key);
            }
        }
        record.dns_servers = spec.dns_servers.clone();
    }
    record.pia = Some(new);
    ctx.state
        .save(&record)
        .map_err(|e| format!("saving the record: {e}"))?;
    drop(lock);
    info!("tunnel {}: {summary}", ctx.key);
    Ok(summary)
}

/// The new registration on the live tunnel, in the order that lets nothing out: the new address, then the
/// table naming it (one transaction: the old table's kill switch holds until the new one's does), then the
/// device's key and peer, then the old address gone.
fn apply(
    record: &Record,
    ns: &NetNs,
    spec: &TunnelSpec,
    old_addresses: &[IpNetwork],
    port_forwarding: bool,
) -> Result<(), String> {
    let nl = ns
        .run(Netlink::connect)
        .map_err(|e| format!("netlink in the container: {e}"))?;
    let index = nl
        .index_of(&record.interface)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} is gone from the container", record.interface))?;
    for addr in &spec.addresses {
        match nl.add_address(index, *addr) {
            Err(e) if e.raw_os_error() != Some(Errno::EEXIST as i32) => {
                return Err(format!("adding {addr}: {e}"));
            }
            _ => {}
        }
    }
    let port_maps: Vec<PortMap> = record
        .port_maps
        .iter()
        .map(|m| m.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the recorded port maps: {e}"))?;
    let rules = Rules {
        interface: &record.interface,
        kill_switch: spec.kill_switch,
        allow_local: &spec.allow_local,
        tunnel_addresses: &spec.addresses,
        port_maps: &port_maps,
        inbound: &spec.inbound,
        port_forwarding,
    };
    nft::replace(ns, &rules.table())
        .map_err(|e| format!("replacing the kill switch table: {e}"))?;
    let deadline = Deadline::after(APPLY_WAIT, "the device's answer");
    match record.backend {
        BackendKind::Kernel => ns.run(|| kernel::configure(&record.interface, &spec.device)),
        BackendKind::Userspace => uapi::configure(
            &uapi::socket_path(&record.host_link),
            &spec.device,
            deadline,
        ),
    }
    .map_err(|e| format!("configuring WireGuard: {e}"))?;
    for addr in old_addresses {
        if !spec.addresses.contains(addr) {
            nl.delete_address(index, *addr)
                .map_err(|e| format!("removing {addr}: {e}"))?;
        }
    }
    Ok(())
}
