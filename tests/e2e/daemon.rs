//! End-to-end: the built-in userspace daemon (`wg-oci-hook tunnel-daemon`, issue 16). Its TUN is born in the
//! container's netns under the tunnel's name and its UDP socket lives in the host's, with nothing moved; it is
//! named in ps, holds nothing of the hook's, ends by itself when the container's netns goes, and never serves a
//! TUN the container made. Needs what `podman` needs; fails (never skips) without it.

use crate::lab::*;
use std::fs;
use std::time::{Duration, Instant};

fn daemon_pid(lab: &Lab, id: &str) -> u32 {
    let text = fs::read_to_string(lab.record_path(id)).expect("a record");
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    record["daemon"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no daemon pid: {record}")) as u32
}

fn create(lab: &Lab, id: &str, pid: u32) -> String {
    lab.track_container_id(id);
    let state = lab.fake_state(id, pid, &[("wg.enable", "true")]);
    let policy = lab.policy_path.to_string_lossy().into_owned();
    let out = lab.run_hook_direct(&["create-runtime", "--policy", &policy], &state);
    assert!(out.success(), "create-runtime\n{out}");
    state
}

fn netns_of(pid: u32) -> String {
    fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn its_tun_is_the_containers_and_its_socket_the_hosts() {
    let lab = Lab::new("daemon_where");
    let sleeper = lab.spawn_netns_sleeper();
    let id = format!("where-{}", lab.id);
    let state = create(&lab, &id, sleeper);
    let daemon = daemon_pid(&lab, &id);
    assert_eq!(
        netns_of(daemon),
        netns_of_path(&lab.host_ns),
        "the daemon runs in the lab's host netns"
    );
    assert_eq!(
        fs::read_to_string(format!("/proc/{daemon}/comm"))
            .unwrap()
            .trim_end(),
        "wg-oci-tunnel"
    );
    // The container's wg0 is a TUN, and the only link besides lo; the host got no link of ours.
    let links = lab.run(&[
        "nsenter",
        &format!("--net=/proc/{sleeper}/ns/net"),
        "ip",
        "-d",
        "-o",
        "link",
    ]);
    links.assert_success("ip link in the container");
    let wg0: Vec<&str> = links
        .stdout
        .lines()
        .filter(|l| l.contains(" wg0:"))
        .collect();
    assert!(wg0.len() == 1 && wg0[0].contains("tun type tun"), "{links}");
    assert!(
        !lab.host_links()
            .iter()
            .any(|l| l.starts_with(HOST_LINK_PREFIX)),
        "a link of ours in the host netns: {:?}",
        lab.host_links()
    );
    // Its UDP sockets are in the host netns, none in the container's.
    let host_udp = lab.run_in(&lab.host_ns, &["ss", "-Hunap"]);
    assert!(
        host_udp.stdout.contains(&format!("pid={daemon},")),
        "the daemon has no UDP socket in the host netns:\n{host_udp}"
    );
    let container_udp = lab.run(&[
        "nsenter",
        &format!("--net=/proc/{sleeper}/ns/net"),
        "ss",
        "-Hunap",
    ]);
    assert!(
        !container_udp.stdout.contains(&format!("pid={daemon},")),
        "the daemon has a socket in the container's netns:\n{container_udp}"
    );
    // It holds the TUN, its sockets and nothing of the hook's beyond them (no state dir, no policy, no pipe).
    let fds: Vec<String> = fs::read_dir(format!("/proc/{daemon}/fd"))
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert!(
        fds.iter().any(|f| f == "/dev/net/tun"),
        "no TUN among its descriptors: {fds:?}"
    );
    assert!(
        !fds.iter()
            .any(|f| f.starts_with("/tmp") || f.starts_with("pipe:")),
        "it holds something of the hook's: {fds:?}"
    );
    let policy = lab.policy_path.to_string_lossy().into_owned();
    lab.run_hook_direct(&["poststop", "--policy", &policy], &state)
        .assert_success("poststop");
    lab.assert_nothing_left(&id);
}

fn netns_of_path(name: &str) -> String {
    // The lab's host netns as a process in it sees it.
    let probe = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{name}"))
        .args(["readlink", "/proc/self/ns/net"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&probe.stdout).trim().to_owned()
}

#[test]
fn it_ends_by_itself_when_the_containers_netns_goes() {
    let lab = Lab::new("daemon_ends");
    let sleeper = lab.spawn_netns_sleeper();
    let id = format!("ends-{}", lab.id);
    create(&lab, &id, sleeper);
    let daemon = daemon_pid(&lab, &id);
    assert!(alive(daemon));
    // The container dies and nothing runs its poststop: its netns goes, and the TUN with it.
    kill(sleeper, nix::sys::signal::Signal::SIGKILL);
    let start = Instant::now();
    while alive(daemon) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the daemon {daemon} outlived its container's netns by 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "the daemon ended {:.0} ms after its container",
        start.elapsed().as_secs_f64() * 1e3
    );
    // What is left is the record, which gc (or the next start) sweeps.
    let policy = lab.policy_path.to_string_lossy().into_owned();
    lab.run_hook_direct(&["--policy", &policy, "gc"], "")
        .assert_success("gc");
    lab.assert_nothing_left(&id);
}

#[test]
fn a_tun_the_container_made_is_refused_never_served() {
    let lab = Lab::new("daemon_excl");
    let sleeper = lab.spawn_netns_sleeper();
    let ns = format!("--net=/proc/{sleeper}/ns/net");
    // A container with CAP_NET_ADMIN made a persistent TUN named like the tunnel, hoping the hook attaches to it.
    lab.run(&[
        "nsenter", &ns, "ip", "tuntap", "add", "dev", "wg0", "mode", "tun",
    ])
    .assert_success("ip tuntap add in the container");
    let id = format!("excl-{}", lab.id);
    lab.track_container_id(&id);
    let state = lab.fake_state(&id, sleeper, &[("wg.enable", "true")]);
    let policy = lab.policy_path.to_string_lossy().into_owned();
    let out = lab.run_hook_direct(&["create-runtime", "--policy", &policy], &state);
    assert!(
        !out.success(),
        "create-runtime took the container's TUN\n{out}"
    );
    assert!(
        out.stderr
            .contains("the container already has an interface named wg0"),
        "{out}"
    );
    lab.assert_nothing_left(&id);
    // The container's TUN is still there, untouched.
    let links = lab.run(&["nsenter", &ns, "ip", "-o", "link", "show", "wg0"]);
    assert!(links.success(), "the container's own wg0 is gone\n{links}");
}
