//! Taking a tunnel down, whole: what its record says was made, wherever it still is. Shared by poststop (the
//! last member leaves), the sweep of dead tunnels (`gc`, and every createRuntime) and a start that finds a dead
//! tunnel in its netns. The caller holds the tunnel's lock.

use super::lease;
use super::record::{Record, SharedResolvConf, StateDir};
use super::{port_forward, resolv_conf, routing, supervisor};
use crate::sys::netlink::Netlink;
use crate::sys::netns::NetNs;
use crate::sys::nft;
use crate::sys::process;
use crate::wg;
use std::io;
use std::path::Path;

/// Takes down everything `record` says was made, then removes its record, its members' files and its lease.
/// `ns` is the tunnel's netns when the caller has it open (checked against the record before use); otherwise it
/// is reached through the engine's path or a live member, if it still exists. `leaving` is the member whose
/// poststop this is. Best effort: every step is tried, and the failures are returned, a phrase each.
pub fn tear_down(
    state_dir: &StateDir,
    record: &Record,
    ns: Option<&NetNs>,
    leaving: Option<&str>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let key = record.key();
    // The files of a record before version 3 are named by its container.
    let files = key
        .clone()
        .or_else(|| record.legacy_container_id.clone())
        .unwrap_or_default();
    if let Some(forward) = record.pia.as_ref().and_then(|p| p.port_forward.as_ref()) {
        port_forward::stop(state_dir, &files, forward);
    }
    for shared in &record.resolv_confs {
        restore(state_dir, key.as_deref(), &shared.change, &mut failures);
    }
    if let Some(change) = &record.legacy_resolv_conf {
        restore(state_dir, None, change, &mut failures);
    }
    // The daemon stops while the rest is taken down: its exit (the TUN's unregistering included) overlaps the
    // netns's cleanup.
    // The lease, memberships and record go only once the daemon is gone: its key is free for the next start.
    std::thread::scope(|s| {
        let stopping = record
            .daemon
            .as_ref()
            .map(|daemon| s.spawn(|| wg::userspace::stop(daemon, &record.host_link)));
        // The supervisor too; its exit is awaited, so it writes nothing after its files are removed.
        if let Some(started) = &record.supervisor {
            s.spawn(|| supervisor::stop(state_dir.dir(), &files, started));
        }
        take_down_links(record, ns, leaving, &mut failures);
        if let Some(Err(e)) = stopping.map(|t| t.join().expect("the daemon's stop")) {
            failures.push(format!("stopping the userspace daemon: {e}"));
        }
    });
    forget(state_dir, record, &key, &mut failures);
    failures
}

/// A legacy daemon, a link left in the host netns, and our link, rules and table in a netns that lives on.
fn take_down_links(
    record: &Record,
    ns: Option<&NetNs>,
    leaving: Option<&str>,
    failures: &mut Vec<String>,
) {
    if let Some(pid) = record.legacy_daemon_pid {
        process::stop_legacy(pid, &[&record.host_link]);
        if let Err(e) = wg::userspace::remove_socket(&record.host_link) {
            failures.push(format!("stopping the userspace daemon: {e}"));
        }
    }
    // A link that never left the host netns (a start killed half-way).
    if let Err(e) = Netlink::connect().and_then(|host| host.delete_link_named(&record.host_link)) {
        failures.push(format!("deleting {}: {e}", record.host_link));
    }
    // The netns normally died with its containers; one that lives on (a pod's, held by its infra container or
    // by a container that is not a member) must not keep our link, rules or table.
    let found;
    let ns = match (ns, record.netns) {
        (Some(ns), Some(id)) if ns.id().is_ok_and(|have| have == id) => Some(ns),
        // A record before version 3 knows no netns: the caller's is the container's.
        (Some(ns), None) => Some(ns),
        _ => {
            found = find_netns(record);
            found.as_ref()
        }
    };
    if let Some(ns) = ns {
        // Members that still run (the sandbox went first) keep the kill switch, and so no network at all.
        let keep_kill_switch = record.member_runs_besides(leaving);
        if let Err(e) = clean_netns(ns, !keep_kill_switch, &record.interface, &record.host_link) {
            failures.push(format!(
                "deleting {} in the container: {e}",
                record.interface
            ));
        }
    }
}

/// The lease, the members' files and the record.
fn forget(state_dir: &StateDir, record: &Record, key: &Option<String>, failures: &mut Vec<String>) {
    if let (Some(lease), Some(key)) = (&record.lease, key) {
        if let Err(e) = lease::release(state_dir, lease, key) {
            failures.push(e);
        }
    }
    for member in &record.members {
        // Only a membership of this tunnel: the container may since have joined another.
        if key.is_some() && state_dir.membership(&member.container_id).ok().flatten() == *key {
            if let Err(e) = state_dir.remove_membership(&member.container_id) {
                failures.push(format!(
                    "removing the membership of {}: {e}",
                    member.container_id
                ));
            }
        }
    }
    let removed = match (key, &record.legacy_container_id) {
        (Some(key), _) => state_dir.remove(key),
        (None, Some(id)) => state_dir.remove_legacy(id),
        (None, None) => Ok(()),
    };
    if let Err(e) = removed {
        failures.push(format!("removing the state record: {e}"));
    }
}

/// Takes `leaving` off the resolv.conf files tunnel `key` wrote, restoring each one no member reads any more.
pub fn leave_resolv_confs(
    state_dir: &StateDir,
    key: Option<&str>,
    shared: &mut Vec<SharedResolvConf>,
    leaving: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    shared.retain_mut(|s| {
        s.users.retain(|u| u != leaving);
        if s.users.is_empty() {
            restore(state_dir, key, &s.change, &mut failures);
            false
        } else {
            true
        }
    });
    failures
}

/// Puts back what `change` replaced, if the file still holds what it wrote. When another live tunnel wrote the
/// same file too (containers of different netns started from one rootfs), the file goes to that tunnel's
/// content instead: its containers still run, and it restores the original when its turn comes.
pub fn restore(
    state_dir: &StateDir,
    key: Option<&str>,
    change: &resolv_conf::ResolvConfChange,
    failures: &mut Vec<String>,
) {
    let restored = match other_writer(state_dir, key, &change.location) {
        Some(other) => resolv_conf::restore(&resolv_conf::ResolvConfChange {
            previous: resolv_conf::Previous::File {
                content: other.written,
            },
            ..change.clone()
        }),
        None => resolv_conf::restore(change),
    };
    if let Err(e) = restored {
        failures.push(format!("restoring {}: {e}", change.location));
    }
}

/// A change to the file at `location` by a live tunnel other than `key`.
pub fn other_writer(
    state_dir: &StateDir,
    key: Option<&str>,
    location: &resolv_conf::Location,
) -> Option<resolv_conf::ResolvConfChange> {
    state_dir
        .keys()
        .ok()?
        .iter()
        .filter(|k| Some(k.as_str()) != key)
        .filter_map(|k| state_dir.load(k).ok().flatten())
        .filter(Record::any_member_alive)
        .flat_map(|r| r.resolv_confs)
        .map(|s| s.change)
        .find(|c| c.location == *location)
}

/// The tunnel's netns, if it still exists: through the engine's path to it, or a member that still runs.
pub fn find_netns(record: &Record) -> Option<NetNs> {
    let id = record.netns?;
    if let Some(ns) = record
        .netns_path
        .as_deref()
        .and_then(|path| NetNs::open_if(path, id))
    {
        return Some(ns);
    }
    record
        .members
        .iter()
        .filter(|m| m.alive())
        .find_map(|m| NetNs::open_if(Path::new(&format!("/proc/{}/ns/net", m.pid)), id))
}

/// Takes our link, rules and (given `delete_table`) table out of a netns that outlives the tunnel. The link is
/// `interface`, or still `host_link` (random, ours alone) when a start was killed between making a kernel link in
/// the netns under that name and renaming it (a host with a link of the interface's name).
fn clean_netns(ns: &NetNs, delete_table: bool, interface: &str, host_link: &str) -> io::Result<()> {
    // The table's deletion and the link's each wait for an RCU grace period in the kernel (about 10 ms each
    // here): side by side, they wait for about one.
    std::thread::scope(|s| {
        let table = delete_table.then(|| s.spawn(|| nft::delete_table(ns)));
        let links = (|| {
            let nl = ns.run(Netlink::connect)?;
            routing::delete_rules(&nl)?;
            nl.delete_link_named(interface)?;
            if !host_link.is_empty() {
                nl.delete_link_named(host_link)?;
            }
            Ok(())
        })();
        let table = table.map_or(Ok(()), |t| t.join().expect("the table's deletion"));
        links.and(table)
    })
}
