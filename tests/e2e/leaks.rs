//! Leak tests in the manner of Mullvad's: real podman bridge networks (netavark, aardvark-dns), a capture on the
//! host side of the container's link started before the container exists, and probes from the workload (ICMP,
//! TCP, UDP; IPv4 and IPv6; to a public-looking address that exists only in the lab, to the LAN gateway, to port
//! 53 of each). The verdict counts every IPv4/IPv6 packet the container put on its link:
//! - from the moment podman says the workload started (`State.StartedAt`) to its exit: none at all;
//! - before it (netavark has brought eth0 up, the hook has not run yet): only the kernel's own link-control
//!   chatter (MLD, router and neighbour solicitations from a link-local source), which no hook can prevent.
//!
//! Every "none" has a positive control: the same probes from a container without the tunnel do appear, within
//! the same time window. Needs what `podman` needs, plus netavark, aardvark-dns and tcpdump.

use crate::lab::*;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Prints the lab responder's marker through the tunnel, or TUNNEL-FAILED.
const TUNNEL_CHECK: &str = "nc -w 2 10.77.0.1 8080 </dev/null || echo TUNNEL-FAILED";

fn probes(net: &BridgeNet) -> String {
    let targets = lab_probe_targets(net);
    let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    leak_probe_script(&refs)
}

/// The probes a second after the workload starts, for tests that must SEE packets: podman stamps StartedAt once
/// `runc start` returns, and on a loaded machine the workload's first packets can come before that, outside the
/// window the tests count (the leak checks count packets before it too, so they need no such wait).
fn probes_after_start(net: &BridgeNet) -> String {
    format!("sleep 1\n{}", probes(net))
}

/// When podman says the workload started, in seconds since the epoch (tcpdump's clock).
fn started_at(lab: &Lab, cid: &str) -> f64 {
    let out = lab.podman(&["inspect", "--format", "{{.State.StartedAt.UnixNano}}", cid]);
    out.assert_success("podman inspect StartedAt");
    let nanos: u64 = out
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("StartedAt.UnixNano is not a number\n{out}"));
    assert!(nanos > 0, "the container never started\n{out}");
    nanos as f64 / 1e9
}

fn container_pid(lab: &Lab, cid: &str) -> String {
    let out = lab.podman(&["inspect", "--format", "{{.State.Pid}}", cid]);
    out.assert_success("podman inspect Pid");
    out.stdout.trim().to_owned()
}

fn remove(lab: &Lab, cid: &str) {
    lab.podman(&["rm", "-f", "-t", "0", cid])
        .assert_success("removing the container");
}

/// One container's run on a bridge, seen from the bridge.
struct Observed {
    run: RunOutput,
    /// Every IPv4/IPv6 packet the container put on the bridge, from before it existed until after it was gone.
    packets: Packets,
    started: f64,
}

impl Observed {
    /// What the workload sent (see the module comment for the window).
    fn workload_packets(&self) -> Packets {
        self.packets.since(self.started)
    }

    /// The positive control: every kind of probe to every target is in the capture (else "no packets" elsewhere
    /// would prove nothing).
    #[track_caller]
    fn assert_probes_seen(&self, net: &BridgeNet) {
        let seen = self.workload_packets();
        let mut missing = Vec::new();
        for target in lab_probe_targets(net) {
            for kind in PROBE_KINDS {
                if seen.to_addr(&target).probe_kind(kind).is_empty() {
                    missing.push(format!("{kind} to {target}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "the capture lacks probes, so it could not have seen them leak either:\n  {}\n{}\n{}",
            missing.join("\n  "),
            self.packets,
            self.run
        );
    }

    #[track_caller]
    fn assert_no_leak(&self, what: &str) {
        let during = self.workload_packets();
        let before = self.packets.before(self.started).without_link_control();
        assert!(
            during.is_empty() && before.is_empty(),
            "{what}: the container put packets on its bridge outside the tunnel\n\
             while the workload ran:\n{during}\nbefore it started (other than link control):\n{before}\n{}",
            self.run
        );
    }
}

/// Runs `opts` on `net` with a capture on the bridge from before the container exists until after it is gone.
fn observe(lab: &Lab, net: &BridgeNet, opts: RunOpts) -> Observed {
    lab.ensure_bridge(net);
    let capture = Capture::start(lab, &lab.host_ns, &net.bridge);
    let mut opts = opts.network(&net.name);
    opts.keep = true;
    let run = lab.podman_run(&opts);
    let started = started_at(lab, run.cid());
    remove(lab, run.cid());
    let packets = capture.stop().not_from(&net.bridge_mac).ip_only();
    Observed {
        run,
        packets,
        started,
    }
}

fn has_marker(text: &str) -> bool {
    text.contains(MARKER.trim_end())
}

/// Waits for `path` (in the container's rootfs, a host directory) to exist.
#[track_caller]
fn wait_for_file(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({})",
            path.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A workload that checks its tunnel, says it is ready, waits for the test's go, runs `probes`, checks the tunnel
/// again and says it is done; then idles until removed.
fn handshake_script(probes: &str) -> String {
    format!(
        "{{ {TUNNEL_CHECK}; }} > /tmp/tunnel-before
touch /tmp/ready
while [ ! -e /tmp/go ]; do sleep 0.1; done
{probes} > /tmp/probes 2>&1
{{ {TUNNEL_CHECK}; }} > /tmp/tunnel-after
touch /tmp/done
sleep 600"
    )
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

// ----- the positive control and the main leak tests -------------------------------------------------------------

/// Without it, "no packets" would prove nothing: the same probes, from a container without the tunnel, are all
/// on the bridge, inside the window the leak tests count.
#[test]
fn probes_without_the_tunnel_do_reach_the_bridge() {
    let lab = Lab::new("leak_positive_control");
    let net = lab.bridge_network("leak");
    let obs = observe(&lab, &net, RunOpts::plain(&probes_after_start(&net)));
    obs.run.assert_success("probing without a tunnel");
    obs.assert_probes_seen(&net);
}

#[test]
fn a_tunnelled_workload_puts_nothing_on_its_bridge() {
    let lab = Lab::new("leak_dual_stack");
    let net = lab.bridge_network("leak");
    let script = format!(
        "{}\n{TUNNEL_CHECK}\necho BEGIN route; ip route get {PUBLIC_V4}; ip -6 route get {PUBLIC_V6}; echo END route",
        probes(&net)
    );
    let obs = observe(&lab, &net, RunOpts::wg(&script));
    obs.run.assert_success("probing through the tunnel");
    let out = &obs.run.out.stdout;
    assert!(has_marker(out), "the tunnel did not work\n{}", obs.run);
    // Public destinations go into the tunnel (where the lab server drops them); the LAN gateway is on-link, so
    // its probes meet the kill switch and fail at once.
    for line in out
        .lines()
        .filter(|l| l.contains(PUBLIC_V4) || l.contains(PUBLIC_V6))
    {
        if !line.starts_with("PROBE") {
            assert!(line.contains("dev wg0"), "{line}\n{}", obs.run);
        }
    }
    for r in probe_results(out) {
        if r.addr == net.gateway4 || r.addr == net.gateway6 {
            assert_ne!(r.rc, 0, "{} to {} succeeded\n{}", r.kind, r.addr, obs.run);
        }
    }
    obs.assert_no_leak("kill switch on a dual-stack bridge");
    lab.assert_nothing_left(obs.run.cid());
}

/// CDI (`--device wg-oci-hook.dev/tunnel=lab`, an empty hooks dir, the spec `install cdi` wrote): the device's
/// container puts nothing on its bridge; the same probes from the same podman set-up without the device do.
#[test]
fn a_cdi_device_container_puts_nothing_on_its_bridge_and_without_the_device_its_probes_do() {
    let lab = Lab::new("leak_cdi");
    lab.install_cdi();
    let net = lab.bridge_network("leak");
    let mut control = RunOpts::plain(&probes_after_start(&net)).without_hooks_dir();
    control.cdi = true;
    let obs = observe(&lab, &net, control);
    obs.run.assert_success("probing without the device");
    obs.assert_probes_seen(&net);

    let script = format!("{}\n{TUNNEL_CHECK}", probes(&net));
    let opts = RunOpts::plain(&script).device("lab").without_hooks_dir();
    let obs = observe(&lab, &net, opts);
    obs.run
        .assert_success("probing through the device's tunnel");
    assert!(
        has_marker(&obs.run.out.stdout),
        "the tunnel did not work\n{}",
        obs.run
    );
    obs.assert_no_leak("a CDI device's kill switch on a dual-stack bridge");
    lab.assert_nothing_left(obs.run.cid());
}

#[test]
fn an_ipv4_only_profile_sends_no_ipv6_at_all() {
    let lab = Lab::new("leak_v4_only");
    let mut config = lab.client_config();
    config.addresses = vec![format!("{CLIENT_TUNNEL_V4}/32")];
    config.allowed_ips = vec!["0.0.0.0/0".to_owned()];
    lab.write_config(&config.render());
    let net = lab.bridge_network("leak");
    let script = format!("{}\n{TUNNEL_CHECK}", probes(&net));
    let obs = observe(&lab, &net, RunOpts::wg(&script));
    obs.run.assert_success("an IPv4-only tunnel");
    assert!(
        has_marker(&obs.run.out.stdout),
        "the tunnel did not work\n{}",
        obs.run
    );
    for r in probe_results(&obs.run.out.stdout) {
        if r.addr.contains(':') {
            assert_ne!(r.rc, 0, "{} to {} succeeded\n{}", r.kind, r.addr, obs.run);
        }
    }
    obs.assert_no_leak("an IPv4-only profile on a dual-stack bridge");
    let v6 = obs.workload_packets().ipv6_only();
    assert!(v6.is_empty(), "IPv6 left the container\n{v6}");
    lab.assert_nothing_left(obs.run.cid());
}

/// A PIA registration (IPv4 only) with port forwarding: the workload's probes and the helper's calls through
/// the tunnel (getSignature, bindPort every second) put nothing on the bridge, IPv6 included.
#[test]
fn a_pia_container_with_port_forwarding_puts_nothing_on_its_bridge() {
    let lab = Lab::new("leak_pia");
    let pia = PiaLab::start(&lab);
    lab.write_policy(&pia.policy(&lab, &[("port_forwarding", "true"), ("bind_interval", "1")]));
    let net = lab.bridge_network("leak");
    // Long enough for a few bindPort rounds while the capture runs.
    let script = format!(
        "{}\n{TUNNEL_CHECK}\ncat /run/pia-port\nsleep 3",
        probes(&net)
    );
    let obs = observe(&lab, &net, RunOpts::wg(&script));
    obs.run.assert_success("a PIA container on a bridge");
    assert!(
        has_marker(&obs.run.out.stdout),
        "the tunnel did not work\n{}",
        obs.run
    );
    assert!(
        obs.run.out.stdout.contains(&PIA_PF_PORT.to_string()),
        "the forwarded port\n{}",
        obs.run
    );
    let binds = pia.stats().bind_port.len();
    assert!(
        binds >= 3,
        "the helper kept binding during the capture: {binds}"
    );
    obs.assert_no_leak("a PIA registration with port forwarding on a dual-stack bridge");
    let v6 = obs.workload_packets().ipv6_only();
    assert!(v6.is_empty(), "IPv6 left the container\n{v6}");
    lab.assert_nothing_left(obs.run.cid());
}

#[test]
fn a_peer_unreachable_from_the_start_leaks_nothing() {
    let lab = Lab::new("leak_dead_peer");
    let mut config = lab.client_config();
    // Nothing listens there: no handshake ever completes.
    config.endpoint = format!("{SERVER_UNDERLAY}:{}", SERVER_PORT + 1);
    lab.write_config(&config.render());
    let net = lab.bridge_network("leak");
    let script = format!("{}\n{TUNNEL_CHECK}", probes(&net));
    let obs = observe(&lab, &net, RunOpts::wg(&script));
    obs.run.assert_success("a tunnel to nowhere");
    assert!(
        obs.run.out.stdout.contains("TUNNEL-FAILED"),
        "the tunnel should not have worked\n{}",
        obs.run
    );
    obs.assert_no_leak("peer unreachable from the start");
    lab.assert_nothing_left(obs.run.cid());
}

#[test]
fn a_peer_stopped_mid_run_leaks_nothing() {
    let lab = Lab::new("leak_peer_stops");
    let net = lab.bridge_network("leak");
    lab.ensure_bridge(&net);
    let capture = Capture::start(&lab, &lab.host_ns, &net.bridge);
    let run = lab.podman_run(
        &RunOpts::wg(&handshake_script(&probes(&net)))
            .network(&net.name)
            .detached(),
    );
    run.assert_success("starting the workload");
    let tmp = run.rootfs.join("tmp");
    wait_for_file(&tmp.join("ready"), "the workload's first tunnel check");
    let started = started_at(&lab, run.cid());
    assert!(
        has_marker(&read(&tmp.join("tunnel-before"))),
        "the tunnel did not work before the peer stopped"
    );
    // The peer goes away: nothing answers at the endpoint any more.
    lab.ip(&lab.server_ns, &["link", "set", &lab.server_if, "down"])
        .assert_success("stopping the peer");
    fs::write(tmp.join("go"), "").unwrap();
    wait_for_file(&tmp.join("done"), "the workload's probes");
    let after = read(&tmp.join("tunnel-after"));
    assert!(
        after.contains("TUNNEL-FAILED"),
        "the stopped peer still answered: {after:?}"
    );
    remove(&lab, run.cid());
    let obs = Observed {
        packets: capture.stop().not_from(&net.bridge_mac).ip_only(),
        run,
        started,
    };
    obs.assert_no_leak("peer stopped mid-run");
    lab.assert_nothing_left(obs.run.cid());
}

/// What Docker 28 does after the runtime's create (after our hook): a veth with IPv4 and IPv6 addresses and
/// default routes appears in the container's netns. Returns what the workload then put on that veth and the
/// workload's second tunnel check.
fn late_network(lab: &Lab, opts: RunOpts) -> (Packets, String, RunOutput) {
    let opts = RunOpts {
        script: handshake_script(&leak_probe_script(&LATE_TARGETS)),
        ..opts
    };
    let run = lab.podman_run(&opts.detached());
    run.assert_success("starting the workload on --network none");
    let tmp = run.rootfs.join("tmp");
    wait_for_file(&tmp.join("ready"), "the workload's first tunnel check");
    let pid = container_pid(lab, run.cid());
    let capture = lab.attach_late_network(&pid);
    fs::write(tmp.join("go"), "").unwrap();
    wait_for_file(&tmp.join("done"), "the workload's probes");
    let after = read(&tmp.join("tunnel-after"));
    let probes_out = read(&tmp.join("probes"));
    remove(lab, run.cid());
    // Everything from the container's side of the veth counts, kernel chatter included: the hook ran long
    // before this link existed.
    let packets = capture.stop().not_from_capture_iface().ip_only();
    println!("probes on the late network:\n{probes_out}");
    (packets, after, run)
}

#[test]
fn a_network_attached_after_the_hook_carries_nothing() {
    let lab = Lab::new("leak_late_network");
    let (packets, after, run) = late_network(&lab, RunOpts::wg(""));
    assert!(
        packets.is_empty(),
        "the late network carried packets from the container:\n{packets}\n{run}"
    );
    assert!(
        has_marker(&after),
        "the tunnel stopped working once another default route appeared: {after:?}"
    );
    lab.assert_nothing_left(run.cid());
}

#[test]
fn a_network_attached_later_does_carry_probes_without_the_tunnel() {
    let lab = Lab::new("leak_late_network_control");
    let (packets, _, run) = late_network(&lab, RunOpts::plain(""));
    for target in LATE_TARGETS {
        assert!(
            packets.to_addr(target).has_kind("icmp"),
            "no ping to {target} on the late network: the check above could not see a leak\n{packets}\n{run}"
        );
    }
}

/// CVE-2019-14899: a neighbour on the bridge routes packets for the tunnel's addresses to the container's eth0.
/// With the kill switch off, only the anti-spoofing chain stands in the way; the container's own eth0 address
/// answers (the control), its tunnel addresses must not.
#[test]
fn spoofed_packets_to_the_tunnel_address_get_no_answer() {
    let lab = Lab::new("leak_spoof");
    let mut policy = lab.policy();
    policy.profiles[0]
        .extra
        .push(("kill_switch".into(), "false".into()));
    lab.write_policy(&policy);
    let net = lab.bridge_network("leak");
    let script = "ip -o -4 addr show eth0 > /tmp/eth0
ip -o -6 addr show eth0 scope global > /tmp/eth0v6
nc -ll -p 9000 -e /bin/echo spoof-answered &
touch /tmp/ready
sleep 600";
    lab.ensure_bridge(&net);
    let run = lab.podman_run(&RunOpts::wg(script).network(&net.name).detached());
    run.assert_success("starting the target");
    let tmp = run.rootfs.join("tmp");
    wait_for_file(&tmp.join("ready"), "the target");
    let addr_of = |file: &str| -> String {
        let text = read(&tmp.join(file));
        let cidr = text
            .split_whitespace()
            .skip_while(|w| *w != "inet" && *w != "inet6")
            .nth(1)
            .unwrap_or_else(|| panic!("no address in {file}: {text:?}"));
        cidr.split('/').next().unwrap().to_owned()
    };
    let (eth0, eth0v6) = (addr_of("eth0"), addr_of("eth0v6"));
    let h = lab.host_ns.clone();
    lab.ip(
        &h,
        &[
            "route",
            "add",
            &format!("{CLIENT_TUNNEL_V4}/32"),
            "via",
            &eth0,
        ],
    )
    .assert_success("routing the tunnel address to the container's eth0");
    lab.ip(
        &h,
        &[
            "-6",
            "route",
            "add",
            &format!("{CLIENT_TUNNEL_V6}/128"),
            "via",
            &eth0v6,
        ],
    )
    .assert_success("routing the tunnel address to the container's eth0");
    let capture = Capture::start(&lab, &h, &net.bridge);
    let nc = |addr: &str| lab.host_busybox(&["timeout", "3", "nc", "-w", "2", addr, "9000"]);
    let ping = |addr: &str| lab.host_busybox(&["ping", "-c", "2", "-W", "1", addr]);
    for addr in [eth0.as_str(), eth0v6.as_str()] {
        ping(addr).assert_success("the control: the container's own eth0 address answers a ping");
        let out = nc(addr);
        assert!(
            out.stdout.contains("spoof-answered"),
            "the control: no TCP answer from {addr}\n{out}"
        );
    }
    for addr in [CLIENT_TUNNEL_V4, CLIENT_TUNNEL_V6] {
        let out = ping(addr);
        assert!(
            !out.success(),
            "the tunnel address {addr} answered a ping from the bridge\n{out}"
        );
        let out = nc(addr);
        assert!(
            !out.stdout.contains("spoof-answered"),
            "the tunnel address {addr} answered TCP from the bridge\n{out}"
        );
    }
    let packets = capture.stop().not_from(&net.bridge_mac).ip_only();
    remove(&lab, run.cid());
    for addr in [CLIENT_TUNNEL_V4, CLIENT_TUNNEL_V6] {
        let answers: Vec<&Packet> = packets
            .iter()
            .filter(|p| p.src_ip.map(|ip| ip.to_string()) == Some(addr.to_owned()))
            .collect();
        assert!(
            answers.is_empty(),
            "the container answered from {addr}:\n{packets}"
        );
    }
    lab.assert_nothing_left(run.cid());
}

/// Podman gives no CAP_NET_ADMIN by default: the workload can neither take down the tunnel's links, rules and
/// routes nor touch the nftables table (nft itself is bind-mounted in, so its failures are permission ones).
#[test]
fn the_workload_cannot_remove_the_rules_or_routes() {
    let lab = Lab::new("leak_no_net_admin");
    let net = lab.bridge_network("leak");
    let script = format!(
        "attempt() {{ name=$1; shift; \"$@\" >/tmp/attempt 2>&1; rc=$?; \
echo \"ATTEMPT $name rc=$rc $(head -c 200 /tmp/attempt | tr '\\n' ' ')\"; }}
attempt nft-runs nft --version
attempt nft-flush nft flush ruleset
attempt nft-delete nft delete table inet wg-oci-hook
attempt nft-list nft list ruleset
attempt link-down ip link set wg0 down
attempt link-delete ip link del wg0
attempt addr-flush ip addr flush dev wg0
attempt rule-delete ip rule del pref 32764
attempt rule6-delete ip -6 rule del pref 32765
attempt route-add ip route add {PUBLIC_V4}/32 via {}
attempt route-replace ip route replace default via {}
{}
{TUNNEL_CHECK}",
        net.gateway4,
        net.gateway4,
        probes(&net)
    );
    let opts = RunOpts {
        extra_args: [
            "-v",
            "/usr/sbin/nft:/bin/nft:ro",
            "-v",
            "/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro",
            "-v",
            "/usr/lib64:/lib64:ro",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..RunOpts::wg(&script)
    };
    let obs = observe(&lab, &net, opts);
    obs.run.assert_success("the attempts");
    let out = &obs.run.out.stdout;
    let attempts: Vec<&str> = out.lines().filter(|l| l.starts_with("ATTEMPT ")).collect();
    assert_eq!(attempts.len(), 11, "{}", obs.run);
    for line in attempts {
        if line.starts_with("ATTEMPT nft-runs ") {
            assert!(
                line.contains(" rc=0 "),
                "nft does not run in the container: {line}\n{}",
                obs.run
            );
        } else {
            assert!(
                !line.contains(" rc=0 "),
                "the workload could: {line}\n{}",
                obs.run
            );
            assert!(
                line.contains("not permitted") || line.contains("Permission denied"),
                "not a permission failure: {line}\n{}",
                obs.run
            );
        }
    }
    assert!(
        has_marker(out),
        "the tunnel did not survive the attempts\n{}",
        obs.run
    );
    obs.assert_no_leak("after the workload's attempts");
    lab.assert_nothing_left(obs.run.cid());
}

// ----- what the policy lets through ---------------------------------------------------------------------------

#[test]
fn allow_local_lets_exactly_that_cidr_through() {
    let lab = Lab::new("leak_allow_local");
    let net = lab.bridge_network("leak");
    let mut policy = lab.policy();
    let allowed = format!("[\"{}\"]", net.subnet4);
    policy.profiles[0]
        .extra
        .push(("allow_local".into(), allowed));
    lab.write_policy(&policy);
    let obs = observe(&lab, &net, RunOpts::wg(&probes_after_start(&net)));
    obs.run.assert_success("probing with allow_local");
    let seen = obs.workload_packets();
    for kind in PROBE_KINDS {
        assert!(
            seen.to_addr(&net.gateway4).has_kind(kind),
            "no {kind} to the allowed {} on the bridge\n{seen}\n{}",
            net.gateway4,
            obs.run
        );
    }
    let others = seen.not_to_addr(&net.gateway4);
    assert!(
        others.is_empty(),
        "packets to other than the allowed CIDR {}:\n{others}",
        net.subnet4
    );
    lab.assert_nothing_left(obs.run.cid());
}

/// The site-to-site case: AllowedIPs names only the remote subnets, the bridge's default route stays, and with
/// the kill switch on the profile says what else may go out (here: one public-looking address).
#[test]
fn a_split_tunnel_keeps_the_bridge_default_and_tunnels_only_its_subnets() {
    let lab = Lab::new("leak_split");
    let mut config = lab.client_config();
    config.allowed_ips = vec!["10.77.0.0/24".into(), "fd77::/64".into()];
    lab.write_config(&config.render());
    let mut policy = lab.policy();
    policy.profiles[0]
        .extra
        .push(("allow_local".into(), format!("[\"{PUBLIC_V4}/32\"]")));
    lab.write_policy(&policy);
    let net = lab.bridge_network("leak");
    let script = format!(
        "echo BEGIN route; ip route get {PUBLIC_V4}; ip route get 10.77.0.1; echo END route
{TUNNEL_CHECK}
{}",
        probes_after_start(&net)
    );
    let obs = observe(&lab, &net, RunOpts::wg(&script));
    obs.run.assert_success("a split tunnel");
    let out = &obs.run.out.stdout;
    assert!(
        has_marker(out),
        "the tunnel's subnet is not reached\n{}",
        obs.run
    );
    let route = |dest: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{dest} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        route(PUBLIC_V4).contains("dev eth0"),
        "the bridge's default route is gone\n{}",
        obs.run
    );
    assert!(
        route("10.77.0.1").contains("dev wg0"),
        "the tunnel's subnet is not routed into wg0\n{}",
        obs.run
    );
    let seen = obs.workload_packets();
    assert!(
        seen.to_addr(PUBLIC_V4).has_kind("icmp"),
        "the allowed address was not reached over the bridge\n{seen}\n{}",
        obs.run
    );
    let others = seen.not_to_addr(PUBLIC_V4);
    assert!(
        others.is_empty(),
        "packets to other than the allowed address:\n{others}"
    );
    lab.assert_nothing_left(obs.run.cid());
}

#[test]
fn a_split_tunnel_that_does_not_say_what_else_is_allowed_is_refused() {
    let lab = Lab::new("leak_split_refused");
    let mut config = lab.client_config();
    config.allowed_ips = vec!["10.77.0.0/24".into()];
    lab.write_config(&config.render());
    assert_refused(
        &lab,
        &RunOpts::wg("true"),
        &[
            "routes only some subnets",
            "allow_local",
            "kill_switch = false",
        ],
    );
}

#[test]
fn resolv_conf_replaces_the_bridge_resolver() {
    let lab = Lab::new("leak_dns");
    let net = lab.bridge_network("leak");
    let obs = observe(
        &lab,
        &net,
        RunOpts::wg("echo BEGIN rc; cat /etc/resolv.conf; echo END rc"),
    );
    obs.run.assert_success("reading resolv.conf");
    let out = &obs.run.out.stdout;
    let nameservers: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .collect();
    assert_eq!(
        nameservers,
        [format!("nameserver {DNS_SERVER}")],
        "{}",
        obs.run
    );
    let search: Vec<&str> = out.lines().filter(|l| l.starts_with("search")).collect();
    assert_eq!(search.len(), 1, "{}", obs.run);
    assert!(
        search[0].split_whitespace().any(|d| d == DNS_SEARCH),
        "{}",
        obs.run
    );
    assert!(
        !out.contains("dns.podman"),
        "podman's search domain stayed\n{}",
        obs.run
    );
    obs.assert_no_leak("reading resolv.conf");
}

// ----- port maps ---------------------------------------------------------------------------------------------------

#[test]
fn port_maps_reach_the_container_through_the_tunnel() {
    let lab = Lab::new("port_maps");
    let mut policy = lab.policy();
    policy.allowed_annotations.push("wg.ports".into());
    policy.profiles[0]
        .extra
        .push(("port_maps".into(), "[\"9080:80/tcp\"]".into()));
    lab.write_policy(&policy);
    let net = lab.bridge_network("leak");
    let script = "nc -ll -p 80 -e /bin/echo mapped-80 &
nc -ll -p 81 -e /bin/echo mapped-81 &
touch /tmp/ready
sleep 600";
    lab.ensure_bridge(&net);
    let run = lab.podman_run(
        &RunOpts::wg(script)
            .annotation("wg.ports", "9081:81/tcp")
            .network(&net.name)
            .detached(),
    );
    run.assert_success("starting the server");
    wait_for_file(&run.rootfs.join("tmp/ready"), "the server");
    for (addr, port, want) in [
        (CLIENT_TUNNEL_V4, "9080", "mapped-80"),
        (CLIENT_TUNNEL_V6, "9080", "mapped-80"),
        (CLIENT_TUNNEL_V4, "9081", "mapped-81"),
    ] {
        let out = lab.nc_from_server(addr, port);
        assert!(
            out.stdout.contains(want),
            "{addr} port {port} through the tunnel did not reach {want}\n{out}"
        );
    }
    // The mapped ports answer only through the tunnel: from the bridge, the container's eth0 is shut.
    let eth0 = lab.podman(&["exec", run.cid(), "ip", "-o", "-4", "addr", "show", "eth0"]);
    let eth0 = eth0
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap_or_else(|| panic!("no eth0 address\n{eth0}"))
        .to_owned();
    let out = lab.host_busybox(&["timeout", "3", "nc", "-w", "2", &eth0, "80"]);
    assert!(
        !out.stdout.contains("mapped-80"),
        "port 80 answered on the bridge\n{out}"
    );
    remove(&lab, run.cid());
    lab.assert_nothing_left(run.cid());
}

#[test]
fn port_maps_by_annotation_need_the_policys_leave() {
    let lab = Lab::new("port_maps_refused");
    assert_refused(
        &lab,
        &RunOpts::wg("true").annotation("wg.ports", "9080:80/tcp"),
        &["wg.ports", "does not let containers map ports"],
    );
}
