//! `wg-oci-hook status [ID] [--json]` against live lab tunnels on the userspace backend (the kernel backend's
//! are in the VM, `kernel_vm.rs`): what the devices say (addresses, endpoint, handshake, bytes), the daemon's
//! liveness (alive, stopped so it cannot answer, killed), a netns that vanished with its container, and the exit
//! status of each. Every packet stays in the lab: the containers reach only the lab's server through their tunnels.

use crate::lab::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime};

/// `wg-oci-hook --policy <lab policy> status ARGS...`, as root in the lab's host netns, with no environment.
fn status(lab: &Lab, args: &[&str]) -> CmdOutput {
    let policy = lab.policy_path.to_string_lossy().into_owned();
    let mut argv = vec!["--policy", policy.as_str(), "status"];
    argv.extend_from_slice(args);
    lab.run_hook_direct(&argv, "")
}

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

/// The table's rows (the header checked and left out), each cell by name. Cells are at least two spaces apart
/// and never hold two spaces themselves.
#[track_caller]
fn rows(out: &CmdOutput) -> Vec<Vec<(&'static str, String)>> {
    let mut lines = out.stdout.lines();
    let cells = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    let header = lines.next().unwrap_or_else(|| panic!("no table\n{out}"));
    assert_eq!(cells(header), HEADER, "{out}");
    lines
        .map(|line| {
            let row = cells(line);
            assert_eq!(row.len(), HEADER.len(), "a row of {line:?}\n{out}");
            HEADER.iter().copied().zip(row).collect()
        })
        .collect()
}

fn cell<'a>(row: &'a [(&'static str, String)], column: &str) -> &'a str {
    row.iter()
        .find(|(c, _)| *c == column)
        .map(|(_, v)| v.as_str())
        .unwrap()
}

#[track_caller]
fn json(out: &CmdOutput) -> Value {
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "--json prints one line\n{out}"
    );
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

fn exit_code(out: &CmdOutput) -> Option<i32> {
    out.status.code()
}

/// A podman container id as engines print it.
fn short(id: &str) -> &str {
    &id[..12]
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The record of container `cid`'s tunnel.
fn record(lab: &Lab, cid: &str) -> Value {
    let text = lab
        .wait_for_record(cid)
        .unwrap_or_else(|| panic!("no record for {cid}"));
    serde_json::from_str(&text).unwrap()
}

/// Waits (up to 20 s) for `podman logs CID` to show `needle`.
#[track_caller]
fn wait_for_log(lab: &Lab, cid: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = lab.podman(&["logs", cid]);
        if logs.stdout.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "container {cid} never printed {needle}\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A workload that sends through its tunnel first (a handshake, bytes both ways), then idles.
const TRAFFIC_THEN_IDLE: &str =
    "ping -c 2 -W 2 10.77.0.1 >/dev/null && nc -w 2 10.77.0.1 8080 </dev/null \
                                 && echo TRAFFIC-OK; exec sleep 600";

/// Checks a live, healthy tunnel's JSON: `containers`, the pool lease `lease` (its wg-quick file) and address,
/// the daemon the record names, the lab's server as peer, traffic.
#[track_caller]
fn assert_live_json(lab: &Lab, t: &Value, containers: &[&str], address: &str, out: &CmdOutput) {
    let rec = record(lab, containers[0]);
    assert_eq!(t["containers"], serde_json::json!(containers), "{out}");
    assert_eq!(
        t["key"].as_str(),
        lab.tunnel_key_of(containers[0]).as_deref()
    );
    assert_eq!(
        (&t["profile"], &t["backend"], &t["interface"]),
        (&"pool".into(), &"userspace".into(), &"wg0".into()),
        "{out}"
    );
    assert_eq!(t["host_link"], rec["host_link"], "{out}");
    assert_eq!(t["link"], "up", "{out}");
    assert_eq!(t["addresses"], serde_json::json!([format!("{address}/32")]));
    assert_eq!(t["daemon"], "alive", "{out}");
    assert_eq!(t["daemon_pid"], rec["daemon"]["pid"], "{out}");
    assert!(t["listen_port"].as_u64().is_some_and(|p| p > 0), "{out}");
    let peers = t["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{out}");
    let peer = &peers[0];
    assert_eq!(peer["public_key"], lab.server_public_key.as_str(), "{out}");
    assert_eq!(
        peer["endpoint"],
        format!("{SERVER_UNDERLAY}:{SERVER_PORT}"),
        "{out}"
    );
    assert_eq!(
        peer["allowed_ips"],
        serde_json::json!(["0.0.0.0/0", "::/0"])
    );
    // The handshake happened within this test, and traffic went both ways.
    let now = unix_now();
    let handshake = t["latest_handshake"].as_u64().expect("a handshake");
    assert!(
        handshake + 300 > now && handshake <= now,
        "handshake at {handshake}, now {now}\n{out}"
    );
    assert!(
        t["handshake_age_seconds"].as_u64().is_some_and(|a| a < 300),
        "{out}"
    );
    assert_eq!(t["latest_handshake"], peer["latest_handshake"]);
    for field in ["rx_bytes", "tx_bytes"] {
        assert!(t[field].as_u64().is_some_and(|b| b > 0), "{field}\n{out}");
        assert_eq!(t[field], peer[field], "{field}\n{out}");
    }
    assert_eq!(t["pia"], Value::Null);
    assert_eq!(t["healthy"], true, "{out}");
    assert_eq!(t["problems"], serde_json::json!([]), "{out}");
}

/// Two pool tunnels through real podman and runc, one shared by two containers (`--network container:X`): the
/// table and the JSON say what each device says, for all or for one container named by a prefix of its id, and
/// no key but public ones is printed.
#[test]
fn status_shows_live_userspace_tunnels_as_their_devices_see_them() {
    let lab = Lab::new("status_live");
    let pool = lab.write_pool("pool", 2);
    let mut policy = lab.policy();
    policy.default_profile = "pool".into();
    policy.profiles.push(pool.profile("pool"));
    lab.write_policy(&policy);

    let start = |opts: RunOpts, what: &str| -> String {
        let run = lab.podman_run(&opts.detached());
        run.assert_success(what);
        run.cid().to_owned()
    };
    let a = start(RunOpts::wg(TRAFFIC_THEN_IDLE), "container a");
    wait_for_log(&lab, &a, "TRAFFIC-OK");
    let b = start(RunOpts::wg(TRAFFIC_THEN_IDLE), "container b");
    wait_for_log(&lab, &b, "TRAFFIC-OK");
    let joined = start(
        RunOpts::wg("exec sleep 600").network(&format!("container:{a}")),
        "a container in a's netns",
    );
    // Before the lab's `podman rm -fa`, which refuses a container another one depends on.
    let _joined_first = RemovedFirst(&lab, joined.clone());
    let lease_of = |cid: &str| -> (String, String) {
        let file = record(&lab, cid)["lease"]["config"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_, address, _) = pool
            .leases
            .iter()
            .find(|(path, _, _)| path.file_name().unwrap().to_string_lossy() == file)
            .unwrap_or_else(|| panic!("{file} is not a lease of the pool"));
        (file, address.clone())
    };
    let (a_file, a_address) = lease_of(&a);
    let (b_file, b_address) = lease_of(&b);

    // The table.
    let out = status(&lab, &[]);
    println!("{out}");
    assert_eq!(exit_code(&out), Some(0), "{out}");
    assert_eq!(out.stderr, "", "{out}");
    let table = rows(&out);
    assert_eq!(table.len(), 2, "two tunnels\n{out}");
    let row_of = |cid: &str| {
        table
            .iter()
            .find(|r| cell(r, "CONTAINER").starts_with(short(cid)))
            .unwrap_or_else(|| panic!("no row for {cid}\n{out}"))
    };
    for (row, containers, address) in [
        (
            row_of(&a),
            format!("{},{}", short(&a), short(&joined)),
            &a_address,
        ),
        (row_of(&b), short(&b).to_owned(), &b_address),
    ] {
        assert_eq!(cell(row, "CONTAINER"), containers, "{out}");
        assert_eq!(cell(row, "PROFILE"), "pool");
        assert_eq!(cell(row, "BACKEND"), "userspace");
        assert_eq!(cell(row, "INTERFACE"), "wg0");
        assert_eq!(cell(row, "ADDRESSES"), format!("{address}/32"));
        assert_eq!(
            cell(row, "ENDPOINT"),
            format!("{SERVER_UNDERLAY}:{SERVER_PORT}")
        );
        let handshake = cell(row, "HANDSHAKE");
        assert!(
            handshake.ends_with("s ago") && !handshake.contains('h'),
            "a handshake within the test: {handshake}\n{out}"
        );
        for column in ["RX", "TX"] {
            let bytes = cell(row, column);
            assert!(
                bytes != "0 B" && (bytes.ends_with(" B") || bytes.ends_with("KiB")),
                "{column} {bytes}\n{out}"
            );
        }
        assert_eq!(cell(row, "DAEMON"), "alive");
        assert_eq!(cell(row, "PORT"), "-");
    }

    // The JSON.
    let out = status(&lab, &["--json"]);
    println!("{out}");
    assert_eq!(exit_code(&out), Some(0), "{out}");
    let v = json(&out);
    assert_eq!(v["ok"], true, "{out}");
    assert_eq!(v["dead_tunnels"], 0, "{out}");
    assert_eq!(v["state_dir"], lab.state_dir.to_string_lossy().as_ref());
    let now = v["now"].as_u64().unwrap();
    assert!(now.abs_diff(unix_now()) < 60, "{out}");
    let tunnels = v["tunnels"].as_array().unwrap();
    assert_eq!(tunnels.len(), 2, "{out}");
    let of = |cid: &str| {
        tunnels
            .iter()
            .find(|t| t["containers"][0] == cid)
            .unwrap_or_else(|| panic!("no tunnel of {cid}\n{out}"))
    };
    assert_live_json(&lab, of(&a), &[&a, &joined], &a_address, &out);
    assert_eq!(of(&a)["lease"], a_file.as_str());
    assert_live_json(&lab, of(&b), &[&b], &b_address, &out);
    assert_eq!(of(&b)["lease"], b_file.as_str());
    for (file, _, _) in &pool.leases {
        let config = std::fs::read_to_string(file).unwrap();
        let private = config
            .lines()
            .find_map(|l| l.strip_prefix("PrivateKey = "))
            .expect("a PrivateKey line");
        let hex: String = base64_to_hex(private);
        for printed in [&out.stdout, &out.stderr] {
            assert!(
                !printed.contains(private) && !printed.contains(&hex),
                "a private key was printed\n{out}"
            );
        }
    }

    // One container, by the short id engines print, or by any prefix of one: its tunnel alone.
    for id in [short(&joined), &joined[..5], b.as_str()] {
        let out = status(&lab, &[id]);
        assert_eq!(exit_code(&out), Some(0), "{out}");
        let table = rows(&out);
        assert_eq!(table.len(), 1, "{out}");
        let expected = if id == b.as_str() {
            short(&b)
        } else {
            short(&a)
        };
        assert!(cell(&table[0], "CONTAINER").starts_with(expected), "{out}");
    }
    let out = status(&lab, &[short(&b), "--json"]);
    println!("{out}");
    assert_eq!(exit_code(&out), Some(0), "{out}");
    let v = json(&out);
    assert_eq!(v["tunnels"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(v["tunnels"][0]["containers"], serde_json::json!([b]));

    // A container with no tunnel: exit 1, a line saying so, and the JSON's empty list.
    let out = status(&lab, &["nosuchcontainer"]);
    assert_eq!(exit_code(&out), Some(1), "{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert!(
        out.stderr
            .contains("no tunnel for container nosuchcontainer in "),
        "{out}"
    );
    let out = status(&lab, &["nosuchcontainer", "--json"]);
    assert_eq!(exit_code(&out), Some(1), "{out}");
    let v = json(&out);
    assert_eq!(
        (&v["ok"], &v["tunnels"]),
        (&false.into(), &serde_json::json!([])),
        "{out}"
    );

    for cid in [&joined, &a, &b] {
        lab.podman(&["rm", "-f", "-t", "0", cid])
            .assert_success("podman rm");
    }
    for cid in [&joined, &a, &b] {
        lab.assert_nothing_left(cid);
    }
    let out = status(&lab, &[]);
    assert_eq!(
        (exit_code(&out), out.stdout.as_str()),
        (Some(0), ""),
        "{out}"
    );
}

/// Removes a container when the test ends, however it ends (declared after the lab: dropped before it).
struct RemovedFirst<'a>(&'a Lab, String);

impl Drop for RemovedFirst<'_> {
    fn drop(&mut self) {
        let _ = self.0.podman(&["rm", "-f", "-t", "0", &self.1]);
    }
}

fn base64_to_hex(b64: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = String::new();
    for c in b64.bytes().take_while(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        bits = bits << 6 | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out += &format!("{:02x}", (bits >> n) & 0xff);
        }
    }
    out
}

/// A tunnel made by the hook run directly for a stand-in container (a process in namespaces of its own), with
/// traffic through it. Returns (container id, its init's pid).
fn direct_tunnel(lab: &Lab, tag: &str) -> (String, u32) {
    let id = format!("{tag}-{}", lab.id);
    lab.track_container_id(&id);
    let pid = lab.spawn_netns_sleeper();
    let state = lab.fake_state(&id, pid, &[("wg.enable", "true")]);
    let policy = lab.policy_path.to_string_lossy().into_owned();
    lab.run_hook_direct(&["--policy", &policy, "create-runtime"], &state)
        .assert_success("create-runtime");
    let net = format!("--net=/proc/{pid}/ns/net");
    lab.run(&[
        "nsenter",
        &net,
        "busybox",
        "ping",
        "-c",
        "2",
        "-W",
        "2",
        SERVER_TUNNEL_V4,
    ])
    .assert_success("a ping through the tunnel");
    (id, pid)
}

/// wireguard-go stopped (it holds its socket and cannot answer) and then killed: status says `unresponsive`,
/// then `dead` with its link gone, never `alive`, and exits 1; the tunnel's own poststop still takes it down.
#[test]
fn status_shows_a_stopped_or_killed_daemon_and_exits_1() {
    let lab = Lab::new("status_dead_daemon");
    let (id, pid) = direct_tunnel(&lab, "dd");
    let out = status(&lab, &[]);
    assert_eq!(exit_code(&out), Some(0), "{out}");
    let table = rows(&out);
    assert_eq!(table.len(), 1, "{out}");
    assert_eq!(cell(&table[0], "CONTAINER"), id);
    assert_eq!(cell(&table[0], "DAEMON"), "alive");
    assert_eq!(
        cell(&table[0], "ADDRESSES"),
        format!("{CLIENT_TUNNEL_V4}/32,{CLIENT_TUNNEL_V6}/128")
    );
    let daemon = record(&lab, &id)["daemon"]["pid"]
        .as_u64()
        .expect("the daemon's pid") as u32;
    assert!(alive(daemon));

    // Stopped: it still holds its socket (the kernel queues our connection) and never answers.
    kill(daemon, Signal::SIGSTOP);
    let started = Instant::now();
    let out = status(&lab, &[]);
    kill(daemon, Signal::SIGCONT);
    println!("{out}");
    assert_eq!(exit_code(&out), Some(1), "{out}");
    assert!(started.elapsed() < Duration::from_secs(10), "{out}");
    let table = rows(&out);
    assert_eq!(cell(&table[0], "DAEMON"), "unresponsive", "{out}");
    assert_eq!(cell(&table[0], "HANDSHAKE"), "-", "{out}");
    assert!(
        out.stderr.contains(&format!(
            "wg-oci-hook: tunnel of {id}: its userspace daemon (pid {daemon}) gave no answer on \
             /var/run/wireguard/"
        )) && out
            .stderr
            .contains("the daemon did not answer within 2.0 s"),
        "{out}"
    );
    let out = status(&lab, &["--json"]);
    assert_eq!(exit_code(&out), Some(0), "running again\n{out}");
    assert_eq!(json(&out)["tunnels"][0]["daemon"], "alive", "{out}");

    // Killed: its TUN goes with it.
    kill(daemon, Signal::SIGKILL);
    let net = format!("--net=/proc/{pid}/ns/net");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(daemon)
        || lab
            .run(&["nsenter", &net, "ip", "link", "show", "wg0"])
            .success()
    {
        assert!(
            Instant::now() < deadline,
            "wireguard-go or its wg0 outlived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = status(&lab, &[]);
    println!("{out}");
    assert_eq!(exit_code(&out), Some(1), "{out}");
    let table = rows(&out);
    assert_eq!(table.len(), 1, "the tunnel is listed, as dead\n{out}");
    let row = &table[0];
    for (column, expected) in [
        ("CONTAINER", id.as_str()),
        ("INTERFACE", "wg0 (gone)"),
        ("ADDRESSES", "-"),
        ("ENDPOINT", "-"),
        ("HANDSHAKE", "-"),
        ("RX", "-"),
        ("TX", "-"),
        ("DAEMON", "dead"),
    ] {
        assert_eq!(cell(row, column), expected, "{column}\n{out}");
    }
    for line in [
        format!(
            "wg-oci-hook: tunnel of {id}: its userspace daemon (pid {daemon}) is not running\n"
        ),
        format!("wg-oci-hook: tunnel of {id}: wg0 is gone from its network namespace\n"),
    ] {
        assert!(out.stderr.contains(&line), "{line}\n{out}");
    }
    let out = status(&lab, &[&id, "--json"]);
    println!("{out}");
    assert_eq!(exit_code(&out), Some(1), "{out}");
    let v = json(&out);
    let t = &v["tunnels"][0];
    assert_eq!(v["ok"], false, "{out}");
    assert_eq!(
        (&t["daemon"], &t["daemon_pid"], &t["link"], &t["healthy"]),
        (&"dead".into(), &Value::Null, &"gone".into(), &false.into()),
        "{out}"
    );
    assert_eq!(
        (&t["rx_bytes"], &t["latest_handshake"], &t["peers"]),
        (&Value::Null, &Value::Null, &serde_json::json!([])),
        "{out}"
    );
    // The two above, and perhaps the supervisor's verdict on the same death, if it has looked since.
    let problems: Vec<&str> = t["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|p| !p.starts_with("unhealthy: the device cannot be read"))
        .collect();
    assert_eq!(problems.len(), 2, "{out}");

    let policy = lab.policy_path.to_string_lossy().into_owned();
    let state = lab.fake_state(&id, pid, &[("wg.enable", "true")]);
    lab.run_hook_direct(&["--policy", &policy, "poststop"], &state)
        .assert_success("poststop");
    lab.assert_nothing_left(&id);
}

/// A container that dies without its poststop takes its netns with it: its tunnel is not live, so it is not
/// listed (and does not fail status), but it is counted, and status for that container says why and exits 1.
#[test]
fn status_does_not_list_a_tunnel_whose_netns_vanished_and_says_so() {
    let lab = Lab::new("status_vanished");
    let (id, pid) = direct_tunnel(&lab, "gone");
    assert_eq!(rows(&status(&lab, &[])).len(), 1);
    let netns = format!("/proc/{pid}/ns/net");
    kill(pid, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) || std::fs::metadata(&netns).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the stand-in container outlived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let out = status(&lab, &[]);
    println!("{out}");
    assert_eq!(exit_code(&out), Some(0), "{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert_eq!(
        out.stderr,
        "wg-oci-hook: not shown: 1 tunnel(s) none of whose containers runs (stopped without a poststop); \
         `wg-oci-hook gc` takes them down\n",
        "{out}"
    );
    let out = status(&lab, &["--json"]);
    assert_eq!(exit_code(&out), Some(0), "{out}");
    let v = json(&out);
    assert_eq!(
        (&v["ok"], &v["tunnels"], &v["dead_tunnels"]),
        (&true.into(), &serde_json::json!([]), &1.into()),
        "{out}"
    );
    let out = status(&lab, &[&id]);
    assert_eq!(exit_code(&out), Some(1), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "no live tunnel for container {id}: none of its containers runs (`wg-oci-hook gc` takes it down)"
        )),
        "{out}"
    );

    let policy = lab.policy_path.to_string_lossy().into_owned();
    let gc = lab.run_hook_direct(&["--policy", &policy, "gc"], "");
    assert!(gc.stdout.contains("1 tunnel(s) taken down"), "{gc}");
    lab.assert_nothing_left(&id);
    let out = status(&lab, &["--json"]);
    assert_eq!(json(&out)["dead_tunnels"], 0, "{out}");
}
