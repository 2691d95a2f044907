//! End-to-end: podman + runc run the shipped hook registrations (`hooks.d/`) against a WireGuard server in a
//! lab of network namespaces (see `tests/lab/lab.rs`). Needs root, podman, runc, wireguard-go, wireguard-tools and
//! busybox-static; fails (never skips) without them.

use crate::lab::*;
use std::os::unix::fs::DirBuilderExt;

// ----- the lab itself, without the hook ---------------------------------------------------------------------------

#[test]
fn lab_server_answers_a_manually_configured_client() {
    let lab = Lab::new("lab_self_test");
    let client = lab.start_manual_client();
    lab.host_busybox(&["ping", "-c", "1", "-W", "2", SERVER_TUNNEL_V4])
        .assert_success("ping through the lab tunnel");
    lab.host_busybox(&["ping6", "-c", "1", "-W", "2", SERVER_TUNNEL_V6])
        .assert_success("ping6 through the lab tunnel");
    let fetch = lab.host_busybox(&["nc", SERVER_TUNNEL_V4, "8080"]);
    fetch.assert_success("TCP responder");
    assert_eq!(fetch.stdout, MARKER, "{fetch}");
    let peers = lab.responder_peers();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].ip().to_string(), CLIENT_TUNNEL_V4);
    assert!(lab.host_links().contains(&client));
    assert!(
        !client.starts_with("wgo"),
        "the lab's own links must not look like the hook's"
    );
}

// ----- scenarios ------------------------------------------------------------------------------------------------

#[test]
fn container_reaches_server_through_tunnel_on_first_packet() {
    let lab = Lab::new("first_packet");
    // The very first instruction sends exactly one packet: a tunnel that is not ready yet fails it.
    let script = "set -e
ping -c 1 -W 2 10.77.0.1
ping6 -c 1 -W 2 fd77::1
nc 10.77.0.1 8080 </dev/null
nc fd77::1 8080 </dev/null
echo done";
    let run = lab.podman_run(&RunOpts::wg(script));
    run.assert_success("container through the tunnel");
    assert_eq!(
        run.out.stdout.matches(MARKER.trim_end()).count(),
        2,
        "marker over IPv4 and IPv6\n{run}"
    );
    assert!(run.out.stdout.trim_end().ends_with("done"), "{run}");
    let peers = lab.responder_peer_ips();
    assert_eq!(
        peers,
        [CLIENT_TUNNEL_V4, CLIENT_TUNNEL_V6],
        "the server saw the container's tunnel addresses"
    );
    lab.assert_nothing_left(run.cid());
}

const SHOW_WG0: &str = "set -e
echo BEGIN addr; ip -o addr show dev wg0; echo END addr
echo BEGIN mtu; cat /sys/class/net/wg0/mtu; echo END mtu";

#[test]
fn wg0_carries_config_addresses_and_mtu() {
    let lab = Lab::new("addresses_and_mtu");
    let mut config = lab.client_config();
    config.mtu = Some(1380);
    lab.write_config(&config.render());
    let run = lab.podman_run(&RunOpts::wg(SHOW_WG0));
    run.assert_success("showing wg0");
    let addr = section(&run.out.stdout, "addr").join("\n");
    assert!(
        addr.contains("inet 10.77.0.2/32"),
        "wg0 lacks 10.77.0.2/32\n{run}"
    );
    assert!(
        addr.contains("inet6 fd77::2/128"),
        "wg0 lacks fd77::2/128\n{run}"
    );
    assert_eq!(
        section(&run.out.stdout, "mtu"),
        ["1380"],
        "MTU from the config\n{run}"
    );
    lab.assert_nothing_left(run.cid());
}

#[test]
fn wg0_mtu_without_config_mtu_is_endpoint_route_mtu_minus_80() {
    let lab = Lab::with(
        "default_mtu",
        LabOpts {
            host_mtu: Some(1400),
        },
    );
    let run = lab.podman_run(&RunOpts::wg(SHOW_WG0));
    run.assert_success("showing wg0");
    // wg-quick's rule: the MTU of the route to the endpoint (the 1400 veth) minus 80.
    assert_eq!(section(&run.out.stdout, "mtu"), ["1320"], "{run}");
    lab.assert_nothing_left(run.cid());
}

#[test]
fn default_routes_live_in_the_tunnel_table_behind_policy_rules() {
    let lab = Lab::new("default_routes");
    // 198.51.100.1 and 2001:db8::1 are never contacted: `ip route get` only asks the kernel.
    let script = "set -e
echo BEGIN get4; ip route get 198.51.100.1; echo END get4
echo BEGIN get6; ip -6 route get 2001:db8::1; echo END get6
echo BEGIN table4; ip route show table all; echo END table4
echo BEGIN table6; ip -6 route show table all; echo END table6
echo BEGIN rules4; ip rule; echo END rules4
echo BEGIN rules6; ip -6 rule; echo END rules6";
    let run = lab.podman_run(&RunOpts::wg(script));
    run.assert_success("showing routes");
    let via_wg0 = |line: &str| {
        line.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w == ["dev", "wg0"])
    };
    for family in ["4", "6"] {
        let get = section(&run.out.stdout, &format!("get{family}")).join(" ");
        assert!(
            via_wg0(&get),
            "IPv{family} lookups do not lead into wg0: {get}\n{run}"
        );
        let table = section(&run.out.stdout, &format!("table{family}"));
        assert!(
            table
                .iter()
                .any(|r| r.starts_with("default") && via_wg0(r) && r.contains("table 51820")),
            "table 51820 lacks `default dev wg0` for IPv{family}\n{run}"
        );
        let rules = section(&run.out.stdout, &format!("rules{family}"));
        for (priority, lookup) in [("32764:", "lookup main"), ("32765:", "lookup 51820")] {
            assert!(
                rules
                    .iter()
                    .any(|r| r.starts_with(priority) && r.contains(lookup)),
                "IPv{family} rules lack `{priority} ... {lookup}`\n{run}"
            );
        }
    }
    lab.assert_nothing_left(run.cid());
}

#[test]
fn resolv_conf_holds_config_dns() {
    let lab = Lab::new("resolv_conf");
    let run = lab.podman_run(&RunOpts::wg(
        "set -e; echo BEGIN rc; cat /etc/resolv.conf; echo END rc",
    ));
    run.assert_success("reading resolv.conf");
    let lines = section(&run.out.stdout, "rc");
    let nameservers: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.split_whitespace().next() == Some("nameserver"))
        .collect();
    assert_eq!(
        nameservers,
        ["nameserver 10.77.0.53"],
        "exactly the config's DNS server\n{run}"
    );
    assert!(
        lines.iter().any(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some("search") && w.any(|d| d == DNS_SEARCH)
        }),
        "no `search {DNS_SEARCH}` line\n{run}"
    );
    lab.assert_nothing_left(run.cid());
}

/// A workload running as root replaces its /etc with an absolute symlink to a host directory (it can read its
/// rootfs's host path in /proc/self/mountinfo). With `--network none` podman bind-mounts no resolv.conf, so the
/// hook wrote `<rootfs>/etc/resolv.conf` and poststop puts it back: it must do so inside the container's root,
/// never through the planted symlink into the host directory. The stand-in host `resolv.conf` holds exactly what
/// the hook wrote, as when a flip of the symlink wins the race between poststop's check and its write.
#[test]
fn poststop_never_follows_an_etc_symlink_the_workload_planted() {
    let lab = Lab::new("hostile_etc_symlink");
    let host_dir = lab.dir.join("host-etc");
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::write(host_dir.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    let script = format!(
        "nc -w 2 {SERVER_TUNNEL_V4} 8080 </dev/null > /tmp/tunnel 2>&1
echo > /tmp/ready
while [ ! -e /tmp/go ]; do sleep 0.1; done
/bin/busybox mv /etc /etc.image
/bin/busybox ln -s {} /etc
echo > /tmp/replaced",
        host_dir.display()
    );
    let mut opts = RunOpts::wg(&script).detached();
    opts.keep = true;
    let run = lab.podman_run(&opts);
    run.assert_success("starting the container");
    let cid = run.cid().to_owned();
    let tmp = run.rootfs.join("tmp");
    wait_until(
        || tmp.join("ready").exists(),
        "the workload's ready file",
        &run,
    );

    let record = lab
        .wait_for_record(&cid)
        .unwrap_or_else(|| panic!("no state record for {cid}\n{run}"));
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    let written = record["resolv_confs"][0]["change"]["written"]
        .as_str()
        .unwrap_or_else(|| panic!("the record holds no resolv.conf change: {record}"))
        .to_owned();
    assert_eq!(
        std::fs::read_to_string(run.rootfs.join("etc/resolv.conf")).unwrap(),
        written,
        "the hook wrote resolv.conf into the rootfs (not the engine's bind-mount source)"
    );
    std::fs::write(host_dir.join("resolv.conf"), &written).unwrap();
    let before = dir_snapshot(&host_dir);

    std::fs::write(tmp.join("go"), "").unwrap();
    wait_until(
        || tmp.join("replaced").exists(),
        "the workload's /etc symlink",
        &run,
    );
    lab.podman(&["wait", &cid]).assert_success("podman wait");
    lab.podman(&["rm", "-f", "-t", "0", &cid])
        .assert_success("podman rm");
    lab.assert_nothing_left(&cid);
    assert_eq!(
        std::fs::read_link(run.rootfs.join("etc")).unwrap(),
        host_dir,
        "the workload replaced /etc"
    );
    assert_eq!(
        dir_snapshot(&host_dir),
        before,
        "poststop changed the host directory the workload's /etc pointed at\n{}",
        lab.transcript()
    );
    let tunnel = std::fs::read_to_string(tmp.join("tunnel")).unwrap();
    assert_eq!(tunnel, MARKER, "the tunnel worked while the workload ran");
}

/// Each entry of `dir`: its name, and its content or symlink target.
fn dir_snapshot(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let what = match std::fs::read_link(&path) {
                Ok(target) => format!("symlink to {}", target.display()),
                Err(_) => format!(
                    "file {:?}",
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap())
                ),
            };
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                what,
            )
        })
        .collect();
    entries.sort();
    entries
}

#[track_caller]
fn wait_until(done: impl Fn() -> bool, what: &str, run: &RunOutput) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{run}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn container_without_annotation_is_untouched() {
    let lab = Lab::new("untouched");
    let run = lab.podman_run(&RunOpts::plain(
        "set -e; echo BEGIN links; ip -o link; echo END links",
    ));
    run.assert_success("plain container");
    let links = parse_link_names(&section(&run.out.stdout, "links").join("\n"));
    assert_eq!(
        links,
        ["lo"],
        "a container without wg.enable gets no wg0\n{run}"
    );
    assert!(
        !run.rootfs.join("etc/resolv.conf").exists(),
        "resolv.conf was written into an untouched container"
    );
    assert!(!lab.record_path(run.cid()).exists());
    lab.assert_nothing_left(run.cid());

    // The hook itself, started as runc may start it (empty environment), for containers that did not ask.
    let sleeper = lab.spawn_sleeper();
    let policy = lab.policy_path.to_string_lossy().into_owned();
    for (id, annotations) in [
        ("direct-no-annotation", vec![("org.example.other", "x")]),
        ("direct-enable-false", vec![("wg.enable", "false")]),
    ] {
        let state = lab.fake_state(id, sleeper, &annotations);
        for stage in ["create-runtime", "poststop"] {
            let out = lab.run_hook_direct(&[stage, "--policy", &policy], &state);
            assert!(
                out.success(),
                "{stage} for a container without wg.enable=true must succeed\n{out}"
            );
            assert!(
                out.stdout.is_empty() && out.stderr.is_empty(),
                "{stage} must print nothing\n{out}"
            );
            lab.assert_nothing_left(id);
        }
    }
    assert!(
        !lab.state_dir.exists() || std::fs::read_dir(&lab.state_dir).unwrap().next().is_none(),
        "the state dir must stay empty"
    );
    assert!(lab.host_links().iter().all(|l| !l.starts_with("wgo")));
}

// ----- refusals ---------------------------------------------------------------------------------------------------

#[test]
fn bad_config_fails_start_and_names_the_line() {
    let lab = Lab::new("bad_config");
    let mut config = lab.client_config();
    config
        .extra_interface_lines
        .push("PostUp = touch /tmp/pwned".to_owned());
    let text = config.render();
    let line = text.lines().position(|l| l.starts_with("PostUp")).unwrap() + 1;
    lab.write_config(&text);
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &[&format!("lab.conf:{line}")],
    );
}

#[test]
fn group_readable_config_is_refused() {
    let lab = Lab::new("readable_config");
    let config = lab.client_config().render();
    let path = lab.write_file("lab.conf", &config, 0o644);
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &[&path.to_string_lossy()],
    );
}

#[test]
fn missing_profile_is_refused() {
    let lab = Lab::new("missing_profile");
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run").annotation("wg.profile", "nope"),
        &["wg.profile", "nope"],
    );
}

#[test]
fn refused_annotation() {
    let lab = Lab::new("refused_annotation");
    let mut policy = lab.policy();
    policy.allowed_annotations.clear();
    lab.write_policy(&policy);
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run").annotation("wg.profile", "lab"),
        &["wg.profile"],
    );
}

#[test]
fn unknown_wg_annotation_is_refused() {
    let lab = Lab::new("unknown_annotation");
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run").annotation("wg.profle", "lab"),
        &["wg.profle"],
    );
}

#[test]
fn unreachable_backend_fails_start() {
    let lab = Lab::new("unreachable_backend");
    let mut policy = lab.policy();
    policy.userspace_command = vec!["/nonexistent/wireguard-go".to_owned()];
    lab.write_policy(&policy);
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["/nonexistent/wireguard-go"],
    );
}

#[test]
fn profile_annotation_picks_an_allowed_profile() {
    let lab = Lab::new("profile_pick");
    // A second profile whose config has another MTU: the container must get that one.
    let mut config = lab.client_config();
    config.mtu = Some(1300);
    let other = lab.write_file("other.conf", &config.render(), 0o600);
    let mut policy = lab.policy();
    policy.profiles.push(("other".to_owned(), other));
    lab.write_policy(&policy);
    let run = lab.podman_run(&RunOpts::wg(SHOW_WG0).annotation("wg.profile", "other"));
    run.assert_success("container with wg.profile=other");
    assert_eq!(section(&run.out.stdout, "mtu"), ["1300"], "{run}");
    lab.assert_nothing_left(run.cid());
}

// ----- lifecycle ------------------------------------------------------------------------------------------------

#[test]
fn stopping_a_long_running_container_removes_everything() {
    let lab = Lab::new("long_running");
    let run = lab.podman_run(&RunOpts::wg("sleep 600").detached());
    run.assert_success("starting a detached container");
    let cid = run.cid().to_owned();
    lab.podman(&["exec", &cid, "ping", "-c", "1", "-W", "2", SERVER_TUNNEL_V4])
        .assert_success("ping via podman exec");
    assert!(
        lab.record_path(&cid).exists(),
        "a running container has a state record"
    );
    let links = lab.host_links();
    assert!(
        links.iter().all(|l| !l.starts_with("wgo")),
        "the link must have moved into the container: {links:?}"
    );
    // The checker is not blind: while the container runs, its userspace daemon and record are visible.
    let running = lab.leftovers(&cid);
    assert!(
        running.iter().any(|l| l.starts_with("process "))
            && running.iter().any(|l| l.starts_with("state record ")),
        "expected the running tunnel's daemon and record, found {running:?}"
    );
    lab.podman(&["rm", "-f", "-t", "0", &cid])
        .assert_success("podman rm -f");
    lab.assert_nothing_left(&cid);
}

#[test]
fn private_key_never_appears_in_output_or_record() {
    let lab = Lab::new("private_key");
    let key = lab.client_private_key.clone();
    assert!(lab.policy().log_level == "debug");
    let run = lab.podman_run(&RunOpts::wg("ping -c 1 -W 2 10.77.0.1; sleep 600").detached());
    run.assert_success("starting a detached container");
    let cid = run.cid().to_owned();
    let record = lab
        .wait_for_record(&cid)
        .unwrap_or_else(|| panic!("no state record for {cid}\n{run}"));
    serde_json::from_str::<serde_json::Value>(&record)
        .unwrap_or_else(|e| panic!("record is not JSON: {e}\n{record}"));
    assert!(
        !record.contains(&key),
        "the state record holds the private key:\n{record}"
    );
    let with_key = processes_mentioning(&key);
    assert!(
        with_key.is_empty(),
        "a process has the private key in its argv: {with_key:?}"
    );
    // The workload's ping is done once its statistics line is in the log.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let logs = loop {
        let logs = lab.podman(&["logs", &cid]);
        if logs.stdout.contains("packet loss") || std::time::Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    lab.podman(&["rm", "-f", "-t", "0", &cid])
        .assert_success("podman rm -f");
    lab.assert_nothing_left(&cid);
    assert!(
        logs.stdout.contains("1 packets received"),
        "the container's ping went through\n{logs}"
    );

    // A start that fails after the key was read: runc relays the hook's whole stderr (debug log included).
    let mut policy = lab.policy();
    policy.userspace_command = vec!["/nonexistent/wireguard-go".to_owned()];
    lab.write_policy(&policy);
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["/nonexistent/wireguard-go"],
    );
    lab.write_policy(&lab.policy());

    // A malformed key must not be echoed in the config error either (it is still secret material).
    let mut config = lab.client_config();
    let broken = key[..key.len() - 1].to_owned();
    config.private_key = broken.clone();
    let text = config.render();
    let line = text
        .lines()
        .position(|l| l.starts_with("PrivateKey"))
        .unwrap()
        + 1;
    lab.write_config(&text);
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &[&format!("lab.conf:{line}")],
    );

    let transcript = lab.transcript();
    assert!(
        !transcript.contains(&broken),
        "the private key appeared in captured output:\n{transcript}"
    );
}

/// `backend = "auto"` uses the kernel when it can create a wireguard link and userspace otherwise, and says
/// which and why at info level. Checked against the kernel's own answer, so it holds on any machine.
#[test]
fn auto_backend_chooses_by_what_the_kernel_can_do_and_says_why() {
    let lab = Lab::new("auto_backend");
    let mut policy = lab.policy();
    policy.backend = "auto".into();
    policy.log_level = "info".into();
    lab.write_policy(&policy);
    let probe = lab.ip(
        &lab.host_ns,
        &["link", "add", "wgprobe0", "type", "wireguard"],
    );
    let kernel_has_wireguard = probe.success();
    if kernel_has_wireguard {
        lab.ip(&lab.host_ns, &["link", "del", "wgprobe0"])
            .assert_success("deleting the probe");
    }
    let pid = lab.spawn_netns_sleeper();
    let id = format!("direct-auto-{}", lab.id);
    let id = id.as_str();
    let state = lab.fake_state(id, pid, &[("wg.enable", "true")]);
    let policy_path = lab.policy_path.to_string_lossy().into_owned();
    let out = lab.run_hook_direct(&["create-runtime", "--policy", &policy_path], &state);
    assert!(out.success(), "create-runtime with backend auto\n{out}");
    let (expected, why) = if kernel_has_wireguard {
        (
            "kernel",
            "backend auto: kernel WireGuard link created, using the kernel",
        )
    } else {
        (
            "userspace",
            "backend auto: the kernel cannot create a wireguard link",
        )
    };
    assert!(
        out.stderr.contains(why),
        "the info log must say which backend and why\n{out}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.record_path(id)).unwrap()).unwrap();
    assert_eq!(record["backend"], expected, "{record}");
    let out = lab.run_hook_direct(&["poststop", "--policy", &policy_path], &state);
    assert!(out.success(), "poststop\n{out}");
    lab.assert_nothing_left(id);
}

/// runc kills a hook at its timeout. The record names the link (and the daemon's exact argv) before anything is
/// made; if the kill comes between starting the daemon and recording its pid, poststop finds that daemon by its
/// exact argv, started after the record, and stops it, and nothing else: a process that merely mentions the
/// name is spared.
#[test]
fn poststop_stops_a_daemon_whose_pid_a_killed_create_did_not_record() {
    let lab = Lab::new("killed_create");
    let id = format!("killed-{}", lab.id);
    let id = id.as_str();
    lab.track_container_id(id);
    let name = format!("{HOST_LINK_PREFIX}{}beef", lab.id);
    let wireguard_go = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(|d| format!("{d}/wireguard-go"))
    .find(|p| std::path::Path::new(p).exists())
    .expect("wireguard-go");
    let me = std::fs::read_to_string("/proc/self/stat").unwrap();
    let started_after: u64 = me
        .rsplit_once(") ")
        .unwrap()
        .1
        .split(' ')
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    // What create-runtime saved just before it started the daemon, in a hook before version 3 (one record per
    // container): the hook still reads these, so that an upgrade leaves no tunnel behind.
    let record = serde_json::json!({
        "version": 2, "container_id": id, "profile": "lab", "interface": "wg0", "host_link": name,
        "backend": "userspace",
        "daemon": { "start_time": started_after, "argv": [wireguard_go, name] },
    });
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&lab.state_dir)
        .unwrap();
    std::fs::write(lab.state_dir.join(format!("{id}.json")), record.to_string()).unwrap();
    lab.run_in(&lab.host_ns, &[&wireguard_go, &name])
        .assert_success("starting the daemon the killed create left");
    let mut bystanders = Bystanders::default();
    let bystander = bystanders.spawn(&name);
    assert!(
        lab.host_links().contains(&name),
        "the orphan's link is missing: {:?}",
        lab.host_links()
    );
    assert!(
        lab.leftovers(id).iter().any(|l| l.starts_with("process ")),
        "the leftover check must see the orphan"
    );
    let pid = lab.spawn_netns_sleeper();
    let state = lab.fake_state(id, pid, &[("wg.enable", "true")]);
    let policy_path = lab.policy_path.to_string_lossy().into_owned();
    let out = lab.run_hook_direct(&["poststop", "--policy", &policy_path], &state);
    let spared = alive(bystander);
    drop(bystanders);
    assert!(out.success(), "poststop\n{out}");
    assert!(
        spared,
        "poststop killed a process that only mentions {name}\n{out}"
    );
    lab.assert_nothing_left(id);
}
