//! End-to-end: what the tunnel's side may open (the profile's `inbound`). The workload listens on several TCP
//! ports; the lab's WireGuard server netns (the VPN's side: the provider, other peers) connects to them
//! through the tunnel. Each listener that must stay shut is first shown to be listening, from inside the
//! container, so "no answer" means the filter dropped it. Needs what `podman` needs (PIA: plus openssl).

use crate::lab::*;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Starts `nc` listeners that answer `open-PORT` on each port, connects once to the lab's responder through
/// the tunnel (the workload's own outgoing connection), then says it is ready and idles.
fn listeners(ports: &[u16]) -> String {
    let mut s = String::new();
    for p in ports {
        s += &format!("nc -ll -p {p} -e /bin/echo open-{p} &\n");
    }
    s += "nc -w 2 10.77.0.1 8080 </dev/null > /tmp/reply 2>&1\n";
    s += "touch /tmp/ready\nexec sleep 600";
    s
}

/// Starts a detached container running `listeners(ports)` with `opts`' annotations, and waits until ready.
#[track_caller]
fn start_listening(lab: &Lab, opts: RunOpts, ports: &[u16]) -> RunOutput {
    let mut opts = opts.detached();
    opts.script = listeners(ports);
    let run = lab.podman_run(&opts);
    run.assert_success("starting the listening container");
    let ready = run.rootfs.join("tmp/ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(
            Instant::now() < deadline,
            "the workload never got ready\n{run}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    run
}

/// Connects from the lab's WireGuard server netns (through the tunnel) to `addr` `port`; the listener's
/// answer, or "" when nothing answered.
fn from_the_tunnel(lab: &Lab, addr: &str, port: u16) -> String {
    let out = lab.nc_from_server(addr, &port.to_string());
    out.stdout.trim().to_owned()
}

/// Each of `ports` answers through the tunnel at `addr`.
#[track_caller]
fn assert_open(lab: &Lab, run: &RunOutput, addr: &str, ports: &[u16], answers: &[u16]) {
    for (port, answer) in ports.iter().zip(answers) {
        let got = from_the_tunnel(lab, addr, *port);
        assert_eq!(
            got,
            format!("open-{answer}"),
            "{addr} port {port} should be open from the tunnel\n{run}\n=== transcript ===\n{}",
            lab.transcript()
        );
    }
}

/// Each of `ports` listens inside the container, yet nothing answers it through the tunnel at `addr`.
#[track_caller]
fn assert_shut(lab: &Lab, run: &RunOutput, addr: &str, ports: &[u16]) {
    for port in ports {
        let inside = lab.podman(&[
            "exec",
            run.cid(),
            "nc",
            "-w",
            "2",
            "127.0.0.1",
            &port.to_string(),
        ]);
        assert_eq!(
            inside.stdout.trim(),
            format!("open-{port}"),
            "control: port {port} does not even listen\n{inside}"
        );
        let got = from_the_tunnel(lab, addr, *port);
        assert_eq!(
            got, "",
            "{addr} port {port} must be shut from the tunnel\n{run}"
        );
    }
}

/// The workload's own connection through the tunnel got its answer back.
#[track_caller]
fn assert_replies_came_back(run: &RunOutput) {
    let reply = std::fs::read_to_string(run.rootfs.join("tmp/reply")).unwrap_or_default();
    assert_eq!(
        reply, MARKER,
        "the reply to the workload's own connection did not come back\n{run}"
    );
}

fn remove(lab: &Lab, run: &RunOutput) {
    lab.podman(&["rm", "-f", "-t", "0", run.cid()])
        .assert_success("removing the container");
    lab.assert_nothing_left(run.cid());
}

fn with_profile_keys(lab: &Lab, keys: &[(&str, &str)]) {
    let mut policy = lab.policy();
    for (k, v) in keys {
        policy.profiles[0]
            .extra
            .push((k.to_string(), v.to_string()));
    }
    lab.write_policy(&policy);
}

/// A VPN customer's profile (AllowedIPs = 0.0.0.0/0, ::/0), no `inbound`: only replies and the port maps.
#[test]
fn a_full_tunnel_profile_lets_in_only_replies_and_port_maps() {
    let lab = Lab::new("inbound_default_full");
    with_profile_keys(&lab, &[("port_maps", "[\"9080:80/tcp\"]")]);
    let run = start_listening(&lab, RunOpts::wg(""), &[80, 81, 9080]);
    assert_replies_came_back(&run);
    for addr in [CLIENT_TUNNEL_V4, CLIENT_TUNNEL_V6] {
        assert_open(&lab, &run, addr, &[9080], &[80]);
        // The map's inner port is not open by itself, nor is any other.
        assert_shut(&lab, &run, addr, &[80, 81]);
    }
    remove(&lab, &run);
}

#[test]
fn listed_inbound_ports_open_exactly_those() {
    let lab = Lab::new("inbound_listed");
    with_profile_keys(&lab, &[("inbound", "[\"7000/tcp\", \"7100-7102/tcp\"]")]);
    let run = start_listening(&lab, RunOpts::wg(""), &[7000, 7001, 7100, 7102, 7103]);
    assert_replies_came_back(&run);
    assert_open(
        &lab,
        &run,
        CLIENT_TUNNEL_V4,
        &[7000, 7100, 7102],
        &[7000, 7100, 7102],
    );
    assert_open(&lab, &run, CLIENT_TUNNEL_V6, &[7000], &[7000]);
    assert_shut(&lab, &run, CLIENT_TUNNEL_V4, &[7001, 7103]);
    remove(&lab, &run);
}

#[test]
fn inbound_all_opens_every_port() {
    let lab = Lab::new("inbound_all");
    with_profile_keys(&lab, &[("inbound", "\"all\"")]);
    let run = start_listening(&lab, RunOpts::wg(""), &[81, 7001]);
    assert_replies_came_back(&run);
    assert_open(&lab, &run, CLIENT_TUNNEL_V4, &[81, 7001], &[81, 7001]);
    assert_open(&lab, &run, CLIENT_TUNNEL_V6, &[81], &[81]);
    remove(&lab, &run);
}

/// Site-to-site (no /0 in AllowedIPs): the peers are the user's own network, as with plain wg-quick.
#[test]
fn a_split_tunnel_profile_lets_everything_in_by_default() {
    let lab = Lab::new("inbound_split");
    let mut config = lab.client_config();
    config.allowed_ips = vec!["10.77.0.0/24".into(), "fd77::/64".into()];
    lab.write_config(&config.render());
    with_profile_keys(&lab, &[("allow_local", "[]")]);
    let run = start_listening(&lab, RunOpts::wg(""), &[81, 7001]);
    assert_replies_came_back(&run);
    assert_open(&lab, &run, CLIENT_TUNNEL_V4, &[81, 7001], &[81, 7001]);
    assert_open(&lab, &run, CLIENT_TUNNEL_V6, &[81], &[81]);
    remove(&lab, &run);
}

/// The split tunnel's default can be narrowed like any other.
#[test]
fn a_split_tunnel_profile_can_say_replies() {
    let lab = Lab::new("inbound_split_replies");
    let mut config = lab.client_config();
    config.allowed_ips = vec!["10.77.0.0/24".into()];
    lab.write_config(&config.render());
    with_profile_keys(&lab, &[("allow_local", "[]"), ("inbound", "\"replies\"")]);
    let run = start_listening(&lab, RunOpts::wg(""), &[81]);
    assert_replies_came_back(&run);
    assert_shut(&lab, &run, CLIENT_TUNNEL_V4, &[81]);
    remove(&lab, &run);
}

/// Without the kill switch, the inbound filter still holds on wg0 (and only there).
#[test]
fn without_the_kill_switch_inbound_is_still_filtered() {
    let lab = Lab::new("inbound_no_kill_switch");
    let mut policy = lab.policy();
    policy.allowed_annotations.push("wg.ports".into());
    policy.profiles[0]
        .extra
        .push(("kill_switch".into(), "false".into()));
    lab.write_policy(&policy);
    let run = start_listening(
        &lab,
        RunOpts::wg("").annotation("wg.ports", "9081:81/tcp"),
        &[80, 81],
    );
    assert_replies_came_back(&run);
    assert_open(&lab, &run, CLIENT_TUNNEL_V4, &[9081], &[81]);
    assert_shut(&lab, &run, CLIENT_TUNNEL_V4, &[80, 81]);
    assert_shut(&lab, &run, CLIENT_TUNNEL_V6, &[80]);
    remove(&lab, &run);
}

/// PIA: the forwarded port is open from the tunnel and no other is; when PIA hands out another port, the new
/// one opens and the old one shuts.
#[test]
fn the_pia_forwarded_port_is_open_and_follows_its_changes() {
    const NEW_PORT: u16 = 47002;
    let lab = Lab::new("inbound_pia_forwarded");
    let pia = PiaLab::start(&lab);
    lab.write_policy(&pia.policy(
        &lab,
        &[
            ("port_forwarding", "true"),
            ("port_file", "\"/run/pia-port\""),
            ("bind_interval", "1"),
        ],
    ));
    // Signatures that expire at once: every round gets a new one, with whatever port the server says.
    pia.set_behaviour(|b| b.signature_lifetime_secs = Some(3));
    let run = start_listening(&lab, RunOpts::wg(""), &[PIA_PF_PORT, NEW_PORT, 81]);
    let peer_ip = pia.stats().registered[0].1.clone();
    assert_replies_came_back(&run);
    assert_open(&lab, &run, &peer_ip, &[PIA_PF_PORT], &[PIA_PF_PORT]);
    assert_shut(&lab, &run, &peer_ip, &[NEW_PORT, 81]);

    pia.set_behaviour(|b| b.pf_port = Some(NEW_PORT));
    // The helper's files are named by the tunnel's key.
    let key = lab
        .tunnel_key_of(run.cid())
        .expect("the container's tunnel");
    let port_file = lab.state_dir.join(format!("{key}.port"));
    wait_for_port(&port_file, NEW_PORT);
    assert_open(&lab, &run, &peer_ip, &[NEW_PORT], &[NEW_PORT]);
    assert_shut(&lab, &run, &peer_ip, &[PIA_PF_PORT, 81]);
    remove(&lab, &run);
}

#[track_caller]
fn wait_for_port(path: &Path, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if std::fs::read_to_string(path).unwrap_or_default() == format!("{port}\n") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the helper never moved to port {port} ({})",
            path.display()
        );
        thread::sleep(Duration::from_millis(100));
    }
}
