//! What `status` prints: a table for people (short ids, human units, ages), or one JSON object for machines
//! (full ids, raw numbers: bytes, unix seconds, ages in seconds), with field names that stay.

use super::{DaemonState, LinkState, Report, Tunnel};
use crate::hook::record::short;
use crate::wg::BackendKind;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::SystemTime;

const HEADER: [&str; 12] = [
    "CONTAINER",
    "PROFILE",
    "BACKEND",
    "INTERFACE",
    "ADDRESSES",
    "ENDPOINT",
    "HANDSHAKE",
    "RX",
    "TX",
    "DAEMON",
    "PORT",
    "HEALTH",
];
/// Columns aligned right (numbers).
const RIGHT: [bool; 12] = [
    false, false, false, false, false, false, false, true, true, false, false, false,
];

/// Seconds since the epoch (0 for a time before it).
fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds from `t` to `now` (0 for a time ahead of our clock).
fn age(t: SystemTime, now: SystemTime) -> u64 {
    now.duration_since(t).map_or(0, |d| d.as_secs())
}

/// The most recent handshake of any peer, and the bytes of all peers.
fn totals(tunnel: &Tunnel) -> Option<(Option<SystemTime>, u64, u64)> {
    let device = tunnel.device.as_ref()?;
    let latest = device.peers.iter().filter_map(|p| p.last_handshake).max();
    let rx = device.peers.iter().map(|p| p.rx_bytes).sum();
    let tx = device.peers.iter().map(|p| p.tx_bytes).sum();
    Some((latest, rx, tx))
}

/// `1m12s ago`, as people read an age: the two largest units.
pub(super) fn ago(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3_600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if d > 0 {
        format!("{d}d{h:02}h ago")
    } else if h > 0 {
        format!("{h}h{m:02}m ago")
    } else if m > 0 {
        format!("{m}m{s:02}s ago")
    } else {
        format!("{s}s ago")
    }
}

/// Bytes in binary units with one decimal (`1.5 KiB`), as `wg show` counts them; plain below 1 KiB.
pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn link_word(state: LinkState) -> &'static str {
    match state {
        LinkState::Up => "up",
        LinkState::Down => "down",
        LinkState::Gone => "gone",
    }
}

fn daemon_word(state: DaemonState) -> &'static str {
    match state {
        DaemonState::Alive => "alive",
        DaemonState::Dead => "dead",
        DaemonState::Unresponsive => "unresponsive",
    }
}

fn joined<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let mut out = String::new();
    for item in items {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{item}");
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// One table row.
fn row(tunnel: &Tunnel, now: SystemTime) -> [String; 12] {
    let r = &tunnel.record;
    let dash = || "-".to_owned();
    let interface = match tunnel.link.as_ref().map(|l| l.state) {
        Some(LinkState::Up) => r.interface.clone(),
        Some(state) => format!("{} ({})", r.interface, link_word(state)),
        None => format!("{} (?)", r.interface),
    };
    let addresses = tunnel
        .link
        .as_ref()
        .map_or_else(dash, |l| joined(l.addresses.iter()));
    let endpoint = tunnel
        .device
        .as_ref()
        .map_or_else(dash, |d| joined(d.peers.iter().filter_map(|p| p.endpoint)));
    let (handshake, rx, tx) = match totals(tunnel) {
        Some((latest, rx, tx)) => (
            latest.map_or_else(|| "never".to_owned(), |t| ago(age(t, now))),
            human_bytes(rx),
            human_bytes(tx),
        ),
        None => (dash(), dash(), dash()),
    };
    let daemon = match (&tunnel.daemon, r.backend) {
        (Some(d), _) => daemon_word(d.state).to_owned(),
        (None, BackendKind::Kernel) => "kernel".to_owned(),
        (None, BackendKind::Userspace) => dash(),
    };
    let port = match &tunnel.port {
        Some(p) if p.helper_pid.is_some() => p.port.to_string(),
        Some(p) => format!("{} (helper gone)", p.port),
        None => dash(),
    };
    let health = match (&tunnel.health, tunnel.supervisor_pid) {
        (_, None) if r.supervisor.is_some() => "unwatched".to_owned(),
        (Some(h), _) if h.healthy => "healthy".to_owned(),
        (Some(_), _) => "unhealthy".to_owned(),
        (None, _) => dash(),
    };
    [
        joined(r.members.iter().map(|m| short(&m.container_id))),
        r.profile.clone(),
        r.backend.to_string(),
        interface,
        addresses,
        endpoint,
        handshake,
        rx,
        tx,
        daemon,
        port,
        health,
    ]
}

/// The table: a header and a row per tunnel; nothing at all when there is no tunnel.
pub(super) fn table(tunnels: &[Tunnel], now: SystemTime) -> String {
    if tunnels.is_empty() {
        return String::new();
    }
    let rows: Vec<[String; 12]> = tunnels.iter().map(|t| row(t, now)).collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::with_capacity((rows.len() + 1) * (widths.iter().sum::<usize>() + 32));
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let start = out.len();
        for (n, cell) in cells.enumerate() {
            if n > 0 {
                out.push_str("  ");
            }
            let width = widths[n];
            let _ = if RIGHT[n] {
                write!(out, "{cell:>width$}")
            } else {
                write!(out, "{cell:<width$}")
            };
        }
        out.truncate(start + out[start..].trim_end().len());
        out.push('\n');
    };
    line(&mut HEADER.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[derive(Serialize)]
struct JsonReport<'a> {
    state_dir: &'a str,
    /// When status looked, in unix seconds (the ages are counted to it).
    now: u64,
    /// Whether the exit status is 0.
    ok: bool,
    tunnels: Vec<JsonTunnel<'a>>,
    /// Tunnels none of whose containers runs, not listed (`gc` takes them down).
    dead_tunnels: usize,
}

#[derive(Serialize)]
struct JsonTunnel<'a> {
    key: &'a str,
    containers: Vec<&'a str>,
    profile: &'a str,
    backend: BackendKind,
    interface: &'a str,
    host_link: &'a str,
    /// `up`, `down` or `gone`; null when the netns could not be reached.
    link: Option<&'static str>,
    addresses: Vec<String>,
    /// `alive`, `dead` or `unresponsive`; null on the kernel backend.
    daemon: Option<&'static str>,
    daemon_pid: Option<u32>,
    /// The device's UDP port in the host; null when the device could not be read.
    listen_port: Option<u16>,
    latest_handshake: Option<u64>,
    handshake_age_seconds: Option<u64>,
    rx_bytes: Option<u64>,
    tx_bytes: Option<u64>,
    peers: Vec<JsonPeer>,
    /// A pool's file this tunnel holds.
    lease: Option<&'a str>,
    pia: Option<JsonPia<'a>>,
    /// `running` or `gone`; null for a tunnel from before supervisors.
    supervisor: Option<&'static str>,
    supervisor_pid: Option<u32>,
    /// The supervisor's last verdict (`healthy`, `reason`, `checked_at`, `since`, `handshake_age`,
    /// `recoveries`, `last_recovery`); null before its first.
    health: Option<&'a crate::hook::supervisor::health::Report>,
    /// No problem at all (the supervisor's verdict included).
    healthy: bool,
    problems: &'a [String],
}

#[derive(Serialize)]
struct JsonPeer {
    public_key: String,
    endpoint: Option<String>,
    allowed_ips: Vec<String>,
    latest_handshake: Option<u64>,
    handshake_age_seconds: Option<u64>,
    rx_bytes: u64,
    tx_bytes: u64,
    persistent_keepalive: Option<u16>,
}

#[derive(Serialize)]
struct JsonPia<'a> {
    region: &'a str,
    server: &'a str,
    server_ip: String,
    address: String,
    /// The forwarded port; null without port forwarding.
    port: Option<u16>,
    port_file: Option<&'a str>,
    /// `running` or `gone`; null without port forwarding.
    helper: Option<&'static str>,
    helper_pid: Option<u32>,
}

fn json_tunnel(tunnel: &Tunnel, now: SystemTime) -> JsonTunnel<'_> {
    let r = &tunnel.record;
    let totals = totals(tunnel);
    let latest = totals.and_then(|(latest, _, _)| latest);
    let peers = tunnel.device.as_ref().map_or_else(Vec::new, |d| {
        d.peers
            .iter()
            .map(|p| JsonPeer {
                public_key: p.public_key.to_base64(),
                endpoint: p.endpoint.map(|e| e.to_string()),
                allowed_ips: p.allowed_ips.iter().map(|n| n.to_string()).collect(),
                latest_handshake: p.last_handshake.map(unix),
                handshake_age_seconds: p.last_handshake.map(|t| age(t, now)),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                persistent_keepalive: p.persistent_keepalive,
            })
            .collect()
    });
    let pia = r.pia.as_ref().map(|p| {
        let pf = p.port_forward.as_ref();
        JsonPia {
            region: &p.region,
            server: &p.server_cn,
            server_ip: p.server_ip.to_string(),
            address: p.peer_ip.to_string(),
            port: tunnel.port.as_ref().map(|p| p.port),
            port_file: pf.map(|pf| pf.port_file.as_str()),
            helper: tunnel.port.as_ref().map(|p| {
                if p.helper_pid.is_some() {
                    "running"
                } else {
                    "gone"
                }
            }),
            helper_pid: tunnel.port.as_ref().and_then(|p| p.helper_pid),
        }
    });
    JsonTunnel {
        key: &tunnel.key,
        containers: r.members.iter().map(|m| m.container_id.as_str()).collect(),
        profile: &r.profile,
        backend: r.backend,
        interface: &r.interface,
        host_link: &r.host_link,
        link: tunnel.link.as_ref().map(|l| link_word(l.state)),
        addresses: tunnel.link.as_ref().map_or_else(Vec::new, |l| {
            l.addresses.iter().map(|n| n.to_string()).collect()
        }),
        daemon: tunnel.daemon.as_ref().map(|d| daemon_word(d.state)),
        daemon_pid: tunnel.daemon.as_ref().and_then(|d| d.pid),
        listen_port: tunnel.device.as_ref().and_then(|d| d.listen_port),
        latest_handshake: latest.map(unix),
        handshake_age_seconds: latest.map(|t| age(t, now)),
        rx_bytes: totals.map(|(_, rx, _)| rx),
        tx_bytes: totals.map(|(_, _, tx)| tx),
        peers,
        lease: super::pool_file(r),
        pia,
        supervisor: r.supervisor.as_ref().map(|_| {
            if tunnel.supervisor_pid.is_some() {
                "running"
            } else {
                "gone"
            }
        }),
        supervisor_pid: tunnel.supervisor_pid,
        health: tunnel.health.as_ref(),
        healthy: tunnel.problems.is_empty(),
        problems: &tunnel.problems,
    }
}

/// The report as one line of JSON.
pub(super) fn json(report: &Report, now: SystemTime) -> String {
    let out = JsonReport {
        state_dir: &report.state_dir,
        now: unix(now),
        ok: report.ok(),
        tunnels: report.tunnels.iter().map(|t| json_tunnel(t, now)).collect(),
        dead_tunnels: report.dead,
    };
    // Strings, numbers and lists only: serialising cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}
