use super::render::{ago, human_bytes};
use super::*;
use crate::sys::process;
use crate::wg::key::Key;
use crate::wg::PeerState;
use serde_json::json;
use std::time::UNIX_EPOCH;

const NOW: u64 = 1_700_000_100;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// A member that runs (this very process) or one that does not (pid 0).
fn member(id: &str, runs: bool) -> serde_json::Value {
    let me = std::process::id();
    let start = process::start_time(me).unwrap();
    if runs {
        json!({"container_id": id, "pid": me, "start_time": start})
    } else {
        json!({"container_id": id, "pid": 0, "start_time": 0})
    }
}

fn record(members: &[serde_json::Value], backend: &str, extra: serde_json::Value) -> Record {
    let mut r = json!({
        "version": 3, "netns": {"dev": 4, "ino": 4026532999u64}, "members": members, "profile": "vpn",
        "interface": "wg0", "host_link": "wgo0123456789ab", "backend": backend, "complete": true,
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    serde_json::from_value(r).unwrap()
}

fn peer(endpoint: &str, handshake: Option<u64>, rx: u64, tx: u64) -> PeerState {
    PeerState {
        public_key: Key::from_bytes([7; 32]),
        endpoint: Some(endpoint.parse().unwrap()),
        allowed_ips: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        last_handshake: handshake.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        rx_bytes: rx,
        tx_bytes: tx,
        persistent_keepalive: Some(25),
    }
}

fn live_link() -> Option<Link> {
    Some(Link {
        state: LinkState::Up,
        addresses: vec![
            "10.77.0.2/32".parse().unwrap(),
            "fd77::2/128".parse().unwrap(),
        ],
    })
}

fn tunnel(record: Record) -> Tunnel {
    Tunnel {
        key: "4-4026532999".into(),
        record,
        link: live_link(),
        device: Some(DeviceState {
            listen_port: Some(41641),
            peers: vec![peer("198.18.0.2:51820", Some(NOW - 72), 92_160, 1_572_864)],
        }),
        daemon: Some(Daemon {
            state: DaemonState::Alive,
            pid: Some(4242),
        }),
        port: None,
        supervisor_pid: None,
        health: None,
        problems: Vec::new(),
    }
}

const A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const B: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

#[test]
fn ages_and_sizes_read_as_people_count_them() {
    assert_eq!(ago(0), "0s ago");
    assert_eq!(ago(59), "59s ago");
    assert_eq!(ago(72), "1m12s ago");
    assert_eq!(ago(3_600 + 180), "1h03m ago");
    assert_eq!(ago(3 * 86_400 + 4 * 3_600 + 59), "3d04h ago");
    assert_eq!(human_bytes(0), "0 B");
    assert_eq!(human_bytes(1023), "1023 B");
    assert_eq!(human_bytes(1024), "1.0 KiB");
    assert_eq!(human_bytes(92_160), "90.0 KiB");
    assert_eq!(human_bytes(1_572_864), "1.5 MiB");
    assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
    assert_eq!(human_bytes(5 << 40), "5.0 TiB");
    assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
}

#[test]
fn the_table_has_a_row_per_tunnel_and_says_what_is_wrong_in_it() {
    let healthy = tunnel(record(
        &[member(A, true), member("my-sidecar", true)],
        "userspace",
        json!({}),
    ));
    let mut healthy = healthy;
    healthy.supervisor_pid = Some(4244);
    healthy.health = Some(crate::hook::supervisor::health::Report {
        healthy: true,
        reason: "handshake 72 s ago".into(),
        checked_at: NOW,
        since: NOW - 600,
        handshake_age: Some(72),
        recoveries: 0,
        last_recovery: None,
    });
    let mut dead = tunnel(record(&[member(B, true)], "userspace", json!({})));
    dead.link = Some(Link {
        state: LinkState::Gone,
        addresses: Vec::new(),
    });
    dead.device = None;
    dead.daemon = Some(Daemon {
        state: DaemonState::Dead,
        pid: None,
    });
    dead.problems = vec!["its userspace daemon (pid 4243) is not running".into()];
    let mut kernel = tunnel(record(
        &[member("k1", true)],
        "kernel",
        json!({"pia": {"region": "swiss", "server_cn": "zurich406", "server_ip": "198.18.0.2",
            "server_vip": "10.0.0.1", "peer_ip": "10.77.0.2", "container_pid": 1, "rootfs": "/r",
            "port_forward": {"port": 47001, "port_file": "/run/pia-port"}}}),
    ));
    kernel.daemon = None;
    kernel.device.as_mut().unwrap().peers = vec![
        peer("198.18.0.2:51820", None, 0, 148),
        peer("198.18.0.3:51820", Some(NOW - 3_700), 1024, 0),
    ];
    kernel.port = Some(Port {
        port: 47001,
        helper_pid: None,
    });
    let table = render::table(&[healthy, dead, kernel], now());
    let expected = "\
CONTAINER                PROFILE  BACKEND    INTERFACE   ADDRESSES                 ENDPOINT                           HANDSHAKE        RX       TX  DAEMON  PORT                 HEALTH
0123456789ab,my-sidecar  vpn      userspace  wg0         10.77.0.2/32,fd77::2/128  198.18.0.2:51820                   1m12s ago  90.0 KiB  1.5 MiB  alive   -                    healthy
fedcba987654             vpn      userspace  wg0 (gone)  -                         -                                  -                 -        -  dead    -                    -
k1                       vpn      kernel     wg0         10.77.0.2/32,fd77::2/128  198.18.0.2:51820,198.18.0.3:51820  1h01m ago   1.0 KiB    148 B  kernel  47001 (helper gone)  -
";
    assert_eq!(table, expected, "\n{table}");
    assert_eq!(render::table(&[], now()), "", "no tunnel, no header");
}

#[test]
fn json_carries_full_ids_raw_numbers_and_stable_names() {
    let mut t = tunnel(record(
        &[member(A, true)],
        "userspace",
        json!({"lease": {"profile": "vpn", "config": "lease-3.conf"}}),
    ));
    t.device.as_mut().unwrap().peers.push(PeerState {
        last_handshake: None,
        endpoint: None,
        ..peer("198.18.0.9:1", None, 1, 2)
    });
    let mut sick = tunnel(record(&[member(B, true)], "kernel", json!({})));
    sick.daemon = None;
    sick.link = None;
    sick.device = None;
    sick.problems = vec!["its network namespace is gone".into()];
    let report = Report {
        state_dir: "/run/wg-oci-hook".into(),
        tunnels: vec![t, sick],
        dead: 2,
        notes: Vec::new(),
        failed: false,
    };
    let v: serde_json::Value = serde_json::from_str(&render::json(&report, now())).unwrap();
    let key = Key::from_bytes([7; 32]).to_base64();
    assert_eq!(
        v,
        json!({
            "state_dir": "/run/wg-oci-hook", "now": NOW, "ok": false, "dead_tunnels": 2,
            "tunnels": [
                {
                    "key": "4-4026532999", "containers": [A], "profile": "vpn", "backend": "userspace",
                    "interface": "wg0", "host_link": "wgo0123456789ab", "link": "up",
                    "addresses": ["10.77.0.2/32", "fd77::2/128"], "daemon": "alive", "daemon_pid": 4242,
                    "listen_port": 41641, "latest_handshake": NOW - 72, "handshake_age_seconds": 72,
                    "rx_bytes": 92_161, "tx_bytes": 1_572_866,
                    "peers": [
                        {"public_key": key, "endpoint": "198.18.0.2:51820", "allowed_ips": ["0.0.0.0/0", "::/0"],
                         "latest_handshake": NOW - 72, "handshake_age_seconds": 72, "rx_bytes": 92_160,
                         "tx_bytes": 1_572_864, "persistent_keepalive": 25},
                        {"public_key": key, "endpoint": null, "allowed_ips": ["0.0.0.0/0", "::/0"],
                         "latest_handshake": null, "handshake_age_seconds": null, "rx_bytes": 1, "tx_bytes": 2,
                         "persistent_keepalive": 25}
                    ],
                    "lease": "lease-3.conf", "pia": null, "supervisor": null, "supervisor_pid": null, "health": null,
                    "healthy": true, "problems": []
                },
                {
                    "key": "4-4026532999", "containers": [B], "profile": "vpn", "backend": "kernel",
                    "interface": "wg0", "host_link": "wgo0123456789ab", "link": null, "addresses": [],
                    "daemon": null, "daemon_pid": null, "listen_port": null, "latest_handshake": null,
                    "handshake_age_seconds": null, "rx_bytes": null, "tx_bytes": null, "peers": [],
                    "lease": null, "pia": null, "supervisor": null, "supervisor_pid": null, "health": null,
                    "healthy": false, "problems": ["its network namespace is gone"]
                }
            ]
        })
    );
}

fn records(list: Vec<Record>) -> Vec<(String, Record)> {
    list.into_iter()
        .enumerate()
        .map(|(n, r)| (format!("4-{n}"), r))
        .collect()
}

#[test]
fn an_id_is_a_full_id_or_the_start_of_exactly_one() {
    let all = records(vec![
        record(
            &[
                member(A, true),
                member("sidecar", true),
                member("fff", true),
            ],
            "userspace",
            json!({}),
        ),
        record(&[member(B, true)], "kernel", json!({})),
        record(&[member("fe-dead", false)], "kernel", json!({})),
        record(
            &[member("starting", true)],
            "kernel",
            json!({"complete": false}),
        ),
    ]);
    assert_eq!(select(&all, A), Ok(0));
    assert_eq!(select(&all, "0123"), Ok(0));
    assert_eq!(select(&all, "side"), Ok(0));
    assert_eq!(select(&all, "fedcba"), Ok(1));
    assert_eq!(
        select(&all, "fe").unwrap_err(),
        format!("fe is the start of two containers' ids (fe-dead, {B}): give more of it")
    );
    assert_eq!(
        select(&all, "f").unwrap_err(),
        format!("f is the start of 3 containers' ids (fe-dead, {B}, ...): give more of it")
    );
    assert_eq!(select(&all, "ff"), Ok(0));
    assert_eq!(
        select(&all, "nope").unwrap_err(),
        "no tunnel for container nope"
    );
    assert_eq!(
        select(&all, "fe-d").unwrap_err(),
        "no live tunnel for container fe-dead: none of its containers runs (`wg-oci-hook gc` takes it down)"
    );
    assert_eq!(
        select(&all, "starting").unwrap_err(),
        "no live tunnel for container starting: its start has not finished (or was killed)"
    );
    // A container restarted without a poststop: its dead tunnel and its live one; the live one is its.
    let restarted = records(vec![
        record(&[member("again", false)], "kernel", json!({})),
        record(&[member("again", true)], "kernel", json!({})),
    ]);
    assert_eq!(select(&restarted, "again"), Ok(1));
    assert_eq!(select(&restarted, "ag"), Ok(1));
}
