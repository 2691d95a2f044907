//! `wg-oci-hook status [ID] [--json]`: the live tunnels of the policy's state dir, each as its device says it is.
//!
//! The records say what was made; the devices say how it is doing. For each tunnel with a member that runs,
//! status reaches its netns (through the engine's path or a live member, and only if that leads to the recorded
//! netns identity), reads `wg0` there (up or not, its addresses) on a thread that entered it, and asks the device
//! for its peers: the kernel over netlink from inside the netns, wireguard-go over its UAPI socket in the host
//! (`get=1`), once the daemon's recorded process identity is checked. Nothing is written, created or signalled.
//!
//! A tunnel none of whose containers runs is not live and is not listed (`gc`, or the next start, takes it
//! down); it is counted. A listed tunnel whose daemon died, whose link is gone or down, or whose port-forwarding
//! helper is gone is shown so, with a line per problem, and the exit status is 1.

mod render;

use super::fail;
use crate::config::policy::Policy;
use crate::hook;
use crate::hook::lease;
use crate::hook::record::{Record, StateDir};
use crate::hook::supervisor;
use crate::provider::pia::port_forward;
use crate::sys::netlink::Netlink;
use crate::wg::{self, BackendKind, DeviceState};
use ipnetwork::IpNetwork;
use std::io;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// How long a daemon may take to answer `get=1` (it answers in microseconds when it works).
const DAEMON_WAIT: Duration = Duration::from_secs(2);

pub fn run(policy: &Policy, only: Option<&str>, json: bool) -> ExitCode {
    let report = match gather(policy, only) {
        Ok(report) => report,
        Err(e) => return fail(&e),
    };
    let now = SystemTime::now();
    if json {
        println!("{}", render::json(&report, now));
    } else {
        print!("{}", render::table(&report.tunnels, now));
        for tunnel in &report.tunnels {
            for problem in &tunnel.problems {
                eprintln!(
                    "wg-oci-hook: tunnel of {}: {problem}",
                    tunnel.record.member_ids()
                );
            }
        }
    }
    for note in &report.notes {
        eprintln!("wg-oci-hook: {note}");
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What status found: the tunnels it shows, and what it has to say besides.
pub(super) struct Report {
    state_dir: String,
    tunnels: Vec<Tunnel>,
    /// Tunnels none of whose containers runs: not shown (`gc` takes them down).
    dead: usize,
    /// Lines for stderr: a container named that has no live tunnel, a record that cannot be read, the dead.
    notes: Vec<String>,
    /// A note that makes the exit status 1 (the dead tunnels' alone does not).
    failed: bool,
}

impl Report {
    fn ok(&self) -> bool {
        !self.failed && self.tunnels.iter().all(|t| t.problems.is_empty())
    }
}

/// A live tunnel: its record, and what its netns and device say.
pub(super) struct Tunnel {
    key: String,
    record: Record,
    /// None when the netns could not be reached (see `problems`).
    link: Option<Link>,
    /// None when the device could not be read (see `problems`).
    device: Option<DeviceState>,
    daemon: Option<Daemon>,
    port: Option<Port>,
    /// The supervisor's pid while it runs (None: gone, or a tunnel from before supervisors), and its verdict.
    supervisor_pid: Option<u32>,
    health: Option<supervisor::health::Report>,
    problems: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkState {
    Up,
    Down,
    Gone,
}

pub(super) struct Link {
    state: LinkState,
    addresses: Vec<IpNetwork>,
}

/// The userspace daemon, as its process and its socket say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DaemonState {
    Alive,
    /// Its process is gone, or nothing serves its socket.
    Dead,
    /// It runs and holds its socket, but gave no good answer.
    Unresponsive,
}

pub(super) struct Daemon {
    state: DaemonState,
    pid: Option<u32>,
}

/// A PIA tunnel's forwarded port and its helper.
pub(super) struct Port {
    port: u16,
    helper_pid: Option<u32>,
}

/// Reads the state dir and asks every live tunnel's device (or only `only`'s: a full container id or a prefix
/// of one container's). An Err is a state dir that cannot be read at all.
fn gather(policy: &Policy, only: Option<&str>) -> Result<Report, String> {
    let mut report = Report {
        state_dir: policy.state_dir.display().to_string(),
        tunnels: Vec::new(),
        dead: 0,
        notes: Vec::new(),
        failed: false,
    };
    // Opening the state dir creates what is missing: a host where no tunnel was ever made has none to show.
    let state = match std::fs::symlink_metadata(policy.state_dir.join("tunnels")) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        _ => Some(StateDir::open(&policy.state_dir).map_err(|e| format!("the state dir {e}"))?),
    };
    let mut records = Vec::new();
    if let Some(state) = &state {
        let keys = state
            .keys()
            .map_err(|e| format!("{}: {e}", policy.state_dir.display()))?;
        for key in keys {
            match state.load(&key) {
                Ok(Some(record)) => records.push((key, record)),
                // Gone since it was listed (a poststop, a sweep).
                Ok(None) => {}
                Err(e) => {
                    report.failed = true;
                    report
                        .notes
                        .push(format!("tunnel {key}: reading its record: {e}"));
                }
            }
        }
    }
    let chosen = match only {
        Some(id) => match select(&records, id) {
            Ok(n) => vec![records.swap_remove(n)],
            Err(e) => {
                report.failed = true;
                report.notes.push(format!("{e} in {}", report.state_dir));
                Vec::new()
            }
        },
        None => {
            // A start still at work (or one that died: `gc` knows) has nothing to show yet.
            let (live, other): (Vec<_>, Vec<_>) = records
                .into_iter()
                .partition(|(_, r)| r.complete && r.any_member_alive());
            report.dead = other.iter().filter(|(_, r)| !r.any_member_alive()).count();
            if report.dead > 0 {
                report.notes.push(format!(
                    "not shown: {} tunnel(s) none of whose containers runs (stopped without a poststop); \
                     `wg-oci-hook gc` takes them down",
                    report.dead
                ));
            }
            live
        }
    };
    let state = state.as_ref();
    report.tunnels = chosen
        .into_iter()
        .map(|(key, record)| inspect(state, key, record))
        .collect();
    report
        .tunnels
        .sort_by(|a, b| first_member(&a.record).cmp(first_member(&b.record)));
    Ok(report)
}

fn first_member(record: &Record) -> &str {
    record
        .members
        .first()
        .map_or("", |m| m.container_id.as_str())
}

/// The record whose members hold container `id` (a full id, or a prefix of exactly one container's), if its
/// tunnel is live; else one line saying why not. A container restarted without a poststop may be on a dead
/// tunnel and a live one: the live one is its.
fn select(records: &[(String, Record)], id: &str) -> Result<usize, String> {
    let members = || {
        records
            .iter()
            .enumerate()
            .flat_map(|(n, (_, r))| r.members.iter().map(move |m| (n, m.container_id.as_str())))
    };
    let mut found: Vec<(usize, &str)> = members().filter(|(_, c)| *c == id).collect();
    if found.is_empty() {
        found = members().filter(|(_, c)| c.starts_with(id)).collect();
    }
    let mut ids: Vec<&str> = found.iter().map(|(_, c)| *c).collect();
    ids.sort_unstable();
    ids.dedup();
    match ids[..] {
        [] => return Err(format!("no tunnel for container {id}")),
        [_] => {}
        [a, b] => {
            return Err(format!(
                "{id} is the start of two containers' ids ({a}, {b}): give more of it"
            ))
        }
        [a, b, ..] => {
            return Err(format!(
                "{id} is the start of {} containers' ids ({a}, {b}, ...): give more of it",
                ids.len()
            ))
        }
    }
    let live = |n: &usize| records[*n].1.complete && records[*n].1.any_member_alive();
    if let Some(&(n, _)) = found.iter().find(|(n, _)| live(n)) {
        return Ok(n);
    }
    let (n, full) = found[0];
    if records[n].1.any_member_alive() {
        Err(format!(
            "no live tunnel for container {full}: its start has not finished (or was killed)"
        ))
    } else {
        Err(format!(
            "no live tunnel for container {full}: none of its containers runs (`wg-oci-hook gc` takes it down)"
        ))
    }
}

/// What a tunnel's netns holds of it, read from a thread inside the netns.
struct Inside {
    link: Link,
    /// The kernel device (the kernel backend only).
    device: Option<io::Result<DeviceState>>,
}

/// Asks tunnel `key`'s netns and device how they are. Reads only.
fn inspect(state: Option<&StateDir>, key: String, record: Record) -> Tunnel {
    let mut tunnel = Tunnel {
        key,
        link: None,
        device: None,
        daemon: None,
        port: None,
        supervisor_pid: None,
        health: None,
        problems: Vec::new(),
        record,
    };
    let record = &tunnel.record;
    let interface = record.interface.as_str();
    let kernel = record.backend == BackendKind::Kernel;
    // The daemon first: a dead one takes its link with it, and is the cause to name first.
    if !kernel {
        let (daemon, device) = ask_daemon(record, &mut tunnel.problems);
        tunnel.daemon = Some(daemon);
        tunnel.device = device;
    }
    match hook::find_netns(record) {
        None => tunnel
            .problems
            .push("its network namespace is gone".to_owned()),
        Some(ns) => match ns.run(|| read_netns(interface, kernel)) {
            Err(e) => tunnel
                .problems
                .push(format!("reading its network namespace: {e}")),
            Ok(inside) => {
                match inside.link.state {
                    LinkState::Gone => tunnel
                        .problems
                        .push(format!("{interface} is gone from its network namespace")),
                    LinkState::Down => tunnel.problems.push(format!("{interface} is down")),
                    LinkState::Up => {}
                }
                match inside.device {
                    Some(Ok(device)) => tunnel.device = Some(device),
                    Some(Err(e)) => tunnel
                        .problems
                        .push(format!("reading the kernel's {interface}: {e}")),
                    None => {}
                }
                tunnel.link = Some(inside.link);
            }
        },
    }
    if let Some(started) = &record.supervisor {
        tunnel.supervisor_pid = started.find();
        if tunnel.supervisor_pid.is_none() {
            tunnel.problems.push(
                "its supervisor is not running: nothing watches its health or keeps it up"
                    .to_owned(),
            );
        }
        tunnel.health = state.and_then(|s| supervisor::last_report(s.dir(), &tunnel.key));
        if let Some(health) = tunnel.health.as_ref().filter(|h| !h.healthy) {
            tunnel
                .problems
                .push(format!("unhealthy: {}", health.reason));
        }
    }
    if let Some(pf) = record.pia.as_ref().and_then(|p| p.port_forward.as_ref()) {
        let port = state
            .and_then(|s| port_forward::current_port(s.dir(), &tunnel.key))
            .unwrap_or(pf.port);
        // The supervisor keeps it (a helper of its own in tunnels an earlier version started).
        let helper_pid = match &pf.helper {
            Some(helper) => helper.find(),
            None => tunnel.supervisor_pid,
        };
        if helper_pid.is_none() && pf.helper.is_some() {
            tunnel.problems.push(format!(
                "its port-forwarding helper is not running: port {port} is no longer kept open"
            ));
        }
        tunnel.port = Some(Port { port, helper_pid });
    }
    tunnel
}

/// On a thread inside the tunnel's netns: the link, its addresses, and the kernel's device.
fn read_netns(interface: &str, kernel: bool) -> io::Result<Inside> {
    let nl = Netlink::connect()?;
    let Some(link) = nl.link_by_name(interface)? else {
        return Ok(Inside {
            link: Link {
                state: LinkState::Gone,
                addresses: Vec::new(),
            },
            device: None,
        });
    };
    let state = if Netlink::is_up(&link) {
        LinkState::Up
    } else {
        LinkState::Down
    };
    let mut addresses = nl.addresses(link.header.index)?;
    // The kernel's own fe80::/10 (a TUN gets one): not the tunnel's.
    addresses.retain(
        |net| !matches!(net, IpNetwork::V6(v6) if v6.ip().segments()[0] & 0xffc0 == 0xfe80),
    );
    Ok(Inside {
        link: Link { state, addresses },
        device: kernel.then(|| wg::kernel::get(interface)),
    })
}

/// The userspace daemon: the very process the record names, and its answer on its socket.
fn ask_daemon(record: &Record, problems: &mut Vec<String>) -> (Daemon, Option<DeviceState>) {
    let recorded = record.daemon.as_ref();
    let pid = recorded.and_then(|d| d.find());
    let Some(pid) = pid else {
        let which = recorded
            .and_then(|d| d.pid)
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        problems.push(format!("its userspace daemon{which} is not running"));
        return (
            Daemon {
                state: DaemonState::Dead,
                pid: None,
            },
            None,
        );
    };
    let socket = wg::uapi::socket_path(&record.host_link);
    match wg::uapi::get(&socket, DAEMON_WAIT) {
        Ok(device) => (
            Daemon {
                state: DaemonState::Alive,
                pid: Some(pid),
            },
            Some(device),
        ),
        Err(e) => {
            let dead = matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            );
            problems.push(format!(
                "its userspace daemon (pid {pid}) {} {}: {e}",
                if dead {
                    "does not serve"
                } else {
                    "gave no answer on"
                },
                socket.display()
            ));
            let state = if dead {
                DaemonState::Dead
            } else {
                DaemonState::Unresponsive
            };
            (
                Daemon {
                    state,
                    pid: Some(pid),
                },
                None,
            )
        }
    }
}

/// The lease a tunnel holds, when it is a pool's file (a static profile's only config says nothing).
fn pool_file(record: &Record) -> Option<&str> {
    record
        .lease
        .as_ref()
        .filter(|l| l.config != lease::ONLY_CONFIG)
        .map(|l| l.config.as_str())
}

#[cfg(test)]
mod tests;
