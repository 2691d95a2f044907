//! One tunnel per network namespace, with real podman and runc: a pod's members (and containers started with
//! `--network container:X`) share the tunnel the first enabled one built; the last member to stop takes it out
//! of a netns that lives on (a pod's infra container, a plain container's); a member that asks for something
//! else is refused without touching it; a static profile serves one netns at a time, a pool one file per netns.
//!
//! Podman 4.3 pods work in the lab: with no `infra_image` configured, podman builds its pause image
//! (`localhost/podman-pause:<version>-<stamp>`) from the machine's catatonit, offline, in the lab's own storage.
//! The pod is created with `--network none` (or on a lab bridge), so its infra container holds a private netns
//! that outlives every member, which is exactly the case where poststop must clean up after the last one.

use crate::lab::*;
use std::path::PathBuf;

/// The lab's responder through the tunnel, from inside a container (busybox wget segfaults in the lab).
const NC_SERVER: &str = "nc -w 2 10.77.0.1 8080 </dev/null";

/// A podman pod of the lab, removed (with its infra container and any member left) when dropped, before the lab
/// (declare it after the lab): the lab's own teardown removes containers, not pods.
struct Pod<'a> {
    lab: &'a Lab,
    name: String,
}

impl<'a> Pod<'a> {
    /// `podman pod create --name <tag>-<lab id>` and `extra` (`--network ...`).
    fn create(lab: &'a Lab, tag: &str, extra: &[&str]) -> Pod<'a> {
        let name = format!("{tag}-{}", lab.id);
        let mut args = vec!["pod", "create", "--name", &name];
        args.extend_from_slice(extra);
        lab.podman(&args).assert_success("podman pod create");
        let pod = Pod { lab, name };
        // The infra container runs from `pod start` (or its first member's start): start it now, so that its
        // netns exists before any member and outlives them all.
        lab.podman(&["pod", "start", &pod.name])
            .assert_success("podman pod start");
        pod
    }

    /// The pid of the pod's infra container, whose netns is the pod's.
    fn infra_pid(&self) -> String {
        let out = self.lab.podman(&[
            "pod",
            "inspect",
            "--format",
            "{{.InfraContainerID}}",
            &self.name,
        ]);
        out.assert_success("podman pod inspect");
        let infra = out.stdout.trim().to_owned();
        assert!(!infra.is_empty(), "the pod has no infra container\n{out}");
        pid_of(self.lab, &infra)
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        let out = self.lab.podman(&["pod", "rm", "-f", "-t", "0", &self.name]);
        if !out.success() {
            eprintln!("removing pod {}:\n{out}", self.name);
        }
    }
}

/// The pid of container `cid`'s init, as podman says.
fn pid_of(lab: &Lab, cid: &str) -> String {
    let out = lab.podman(&["inspect", "--format", "{{.State.Pid}}", cid]);
    out.assert_success("podman inspect Pid");
    let pid = out.stdout.trim().to_owned();
    assert!(
        pid.parse::<u32>().is_ok_and(|p| p > 0),
        "container {cid} does not run\n{out}"
    );
    pid
}

fn running(lab: &Lab, cid: &str) -> bool {
    let out = lab.podman(&["inspect", "--format", "{{.State.Running}}", cid]);
    out.success() && out.stdout.trim() == "true"
}

/// `args` run in the netns of process `pid` (seen from outside the container).
fn in_netns_of(lab: &Lab, pid: &str, args: &[&str]) -> CmdOutput {
    let net = format!("--net=/proc/{pid}/ns/net");
    let mut argv = vec!["nsenter", net.as_str()];
    argv.extend_from_slice(args);
    lab.run(&argv)
}

/// What of a tunnel a netns holds, seen from outside: its links, our two policy rules, our nft table.
#[derive(Debug)]
struct NetnsView {
    links: Vec<String>,
    /// `ip rule` and `ip -6 rule` lines with priority 32764 or 32765.
    rules: Vec<String>,
    table: bool,
}

impl NetnsView {
    fn of(lab: &Lab, pid: &str) -> NetnsView {
        let links = in_netns_of(lab, pid, &["ip", "-o", "link"]);
        links.assert_success("listing the netns's links");
        let mut rules = Vec::new();
        for family in ["-4", "-6"] {
            let out = in_netns_of(lab, pid, &["ip", family, "rule"]);
            out.assert_success("listing the netns's rules");
            rules.extend(
                out.stdout
                    .lines()
                    .filter(|l| l.starts_with("32764:") || l.starts_with("32765:"))
                    .map(|l| format!("{family} {l}")),
            );
        }
        let table = in_netns_of(lab, pid, &["nft", "list", "table", "inet", "wg-oci-hook"]);
        NetnsView {
            links: parse_link_names(&links.stdout),
            rules,
            table: table.success(),
        }
    }

    fn wg0_count(&self) -> usize {
        self.links.iter().filter(|l| *l == "wg0").count()
    }

    /// One wg0, both rules for both families, the table.
    #[track_caller]
    fn assert_tunnel(&self, what: &str) {
        assert!(
            self.wg0_count() == 1 && self.rules.len() == 4 && self.table,
            "{what}: the netns should hold one wg0, rules 32764/32765 (v4 and v6) and table inet wg-oci-hook: {self:?}"
        );
    }

    /// No wg0, none of our rules, no table.
    #[track_caller]
    fn assert_clean(&self, what: &str) {
        assert!(
            self.wg0_count() == 0 && self.rules.is_empty() && !self.table,
            "{what}: the netns still holds a part of the tunnel: {self:?}"
        );
    }
}

/// Starts a detached container that idles, and returns its id.
#[track_caller]
fn start(lab: &Lab, opts: RunOpts, what: &str) -> String {
    start_run(lab, opts, what).cid().to_owned()
}

/// Starts a detached container that idles (its rootfs in the output).
#[track_caller]
fn start_run(lab: &Lab, opts: RunOpts, what: &str) -> RunOutput {
    let mut opts = opts.detached();
    opts.script = "sleep 600".to_owned();
    let run = lab.podman_run(&opts);
    run.assert_success(what);
    run
}

/// The `nameserver` lines of `text` (a resolv.conf).
fn nameservers(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.split_whitespace().next() == Some("nameserver"))
        .collect()
}

/// What a plain container started in pod `pod` reads in its resolv.conf.
fn pod_resolv_conf(lab: &Lab, pod: &Pod) -> RunOutput {
    let run = lab.podman_run(&RunOpts::plain("cat /etc/resolv.conf").in_pod(&pod.name));
    run.assert_success("reading the pod's resolv.conf");
    run
}

/// Container `cid` reaches the lab's responder through the tunnel.
#[track_caller]
fn assert_reaches_server(lab: &Lab, cid: &str, what: &str) {
    let out = lab.podman(&["exec", cid, "sh", "-c", NC_SERVER]);
    assert!(
        out.success() && out.stdout == MARKER,
        "{what}: container {cid} should reach {SERVER_TUNNEL_V4}:{RESPONDER_PORT} through the tunnel\n{out}"
    );
}

/// Container `cid`'s resolv.conf has the lab profile's DNS.
#[track_caller]
fn assert_lab_dns(lab: &Lab, cid: &str) {
    let out = lab.podman(&["exec", cid, "cat", "/etc/resolv.conf"]);
    out.assert_success("reading resolv.conf");
    assert_eq!(
        nameservers(&out.stdout),
        [format!("nameserver {DNS_SERVER}")],
        "container {cid}'s resolv.conf should name the tunnel's DNS alone\n{out}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("search") && l.contains(DNS_SEARCH)),
        "container {cid}'s resolv.conf lacks `search {DNS_SEARCH}`\n{out}"
    );
}

fn remove(lab: &Lab, cid: &str) {
    lab.podman(&["rm", "-f", "-t", "0", cid])
        .assert_success("removing the container");
}

#[test]
fn a_podman_pod_gets_one_tunnel_that_every_enabled_member_uses() {
    let lab = Lab::new("pod_one_tunnel");
    let pod = Pod::create(&lab, "pod", &["--network", "none"]);
    let infra = pod.infra_pid();
    NetnsView::of(&lab, &infra).assert_clean("the pod before any member");

    let first_run = start_run(&lab, RunOpts::wg("").in_pod(&pod.name), "the first member");
    let second_run = start_run(&lab, RunOpts::wg("").in_pod(&pod.name), "the second member");
    let (first, second) = (first_run.cid(), second_run.cid());
    assert_eq!(
        ns_id(&format!("/proc/{}/ns/net", pid_of(&lab, first))),
        ns_id(&format!("/proc/{}/ns/net", pid_of(&lab, second))),
        "the pod's members share its netns"
    );
    assert_reaches_server(&lab, first, "the builder");
    assert_reaches_server(&lab, second, "the member that joined");
    NetnsView::of(&lab, &infra).assert_tunnel("the pod with two members");
    let daemons = lab.hook_daemons();
    assert_eq!(
        daemons.len(),
        1,
        "one tunnel, one hook daemon, for the whole pod: {daemons:?}"
    );
    assert_lab_dns(&lab, first);
    assert_lab_dns(&lab, second);

    remove(&lab, first);
    assert_reaches_server(&lab, second, "the member left alone");
    assert_lab_dns(&lab, second);
    NetnsView::of(&lab, &infra).assert_tunnel("the pod after its builder left");

    remove(&lab, second);
    lab.assert_nothing_left(first);
    lab.assert_nothing_left(second);
    // With `--network none` podman mounts no resolv.conf: the hook wrote each member's into its rootfs.
    for run in [&first_run, &second_run] {
        let text = std::fs::read_to_string(run.rootfs.join("etc/resolv.conf")).unwrap_or_default();
        assert!(
            !text.contains(DNS_SERVER),
            "container {}'s resolv.conf still names the tunnel's DNS:\n{text}",
            run.cid()
        );
    }
    assert!(
        lab.hook_daemons().is_empty(),
        "the daemon outlived the pod's last member"
    );
    NetnsView::of(&lab, &infra).assert_clean("the pod after its last member left");

    // The pod's netns lived on: a new member builds the tunnel again in it.
    let third = start(
        &lab,
        RunOpts::wg("").in_pod(&pod.name),
        "a member after all left",
    );
    assert_reaches_server(&lab, &third, "the rebuilt tunnel");
    NetnsView::of(&lab, &infra).assert_tunnel("the pod with its new member");
    remove(&lab, &third);
    lab.assert_nothing_left(&third);
    NetnsView::of(&lab, &infra).assert_clean("the pod after its new member left");
}

#[test]
fn network_container_x_joins_a_plain_containers_netns() {
    let lab = Lab::new("network_container");
    let x = start(&lab, RunOpts::plain(""), "the plain container X");
    let x_pid = pid_of(&lab, &x);
    NetnsView::of(&lab, &x_pid).assert_clean("X alone");

    let y = start(
        &lab,
        RunOpts::wg("").network(&format!("container:{x}")),
        "Y in X's netns",
    );
    assert_reaches_server(&lab, &y, "Y");
    NetnsView::of(&lab, &x_pid).assert_tunnel("X's netns once Y built its tunnel");

    remove(&lab, &y);
    lab.assert_nothing_left(&y);
    NetnsView::of(&lab, &x_pid).assert_clean("X's netns after Y left");
    assert!(running(&lab, &x), "X must outlive Y");
    remove(&lab, &x);
}

#[test]
fn a_refused_member_leaves_the_pods_kill_switch_in_place() {
    let lab = Lab::new("pod_refused_member");
    let mut config = lab.client_config();
    config.mtu = Some(1300);
    let other = lab.write_file("other.conf", &config.render(), 0o600);
    let mut policy = lab.policy();
    policy.profiles.push(LabProfile::new("other", other));
    lab.write_policy(&policy);
    let net = lab.bridge_network("pod");
    let targets = [net.gateway4.as_str(), net.gateway6.as_str()];

    // The control: from a netns of its own on the bridge, the probes reach the gateway.
    let control = lab.podman_run(&RunOpts::plain(&leak_probe_script(&targets)).network(&net.name));
    control.assert_success("probing the bridge without a tunnel");
    let answered: Vec<ProbeResult> = probe_results(&control.out.stdout)
        .into_iter()
        .filter(|r| r.rc == 0)
        .collect();
    assert!(
        answered
            .iter()
            .any(|r| r.kind == "icmp" && r.addr == net.gateway4),
        "the control's ping to the gateway should answer\n{control}"
    );

    lab.ensure_bridge(&net);
    let pod = Pod::create(&lab, "pod", &["--network", &net.name]);
    let infra = pod.infra_pid();
    let a = start(&lab, RunOpts::wg("").in_pod(&pod.name), "A, the builder");
    assert_reaches_server(&lab, &a, "A");
    NetnsView::of(&lab, &infra).assert_tunnel("the pod with A");

    let refused = assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run")
            .annotation("wg.profile", "other")
            .in_pod(&pod.name),
        &[&a[..12], "profile \"lab\"", "profile \"other\""],
    );
    let line = refused.hook_error_line().unwrap();
    let stderr_lines = refused
        .out
        .stderr
        .lines()
        .filter(|l| l.contains("wg-oci-hook: container"))
        .count();
    assert_eq!(
        stderr_lines, 1,
        "the refusal is one line: {line}\n{refused}"
    );
    NetnsView::of(&lab, &infra).assert_tunnel("the pod after B's refusal");

    // A plain container of the pod: the kill switch still stops it at the bridge.
    let plain = lab.podman_run(&RunOpts::plain(&leak_probe_script(&targets)).in_pod(&pod.name));
    plain.assert_success("probing from the pod");
    let results = probe_results(&plain.out.stdout);
    assert_eq!(
        results.len(),
        targets.len() * PROBE_KINDS.len(),
        "every probe reported\n{plain}"
    );
    let leaked: Vec<&ProbeResult> = results.iter().filter(|r| r.rc == 0).collect();
    assert!(
        leaked.is_empty(),
        "a container of the pod reached the bridge outside the tunnel: {leaked:?}\n{plain}"
    );
    assert_reaches_server(&lab, &a, "A after B's refusal");
    // The pod's members read the infra container's resolv.conf: the hook wrote the tunnel's DNS into it...
    let during = pod_resolv_conf(&lab, &pod);
    assert_eq!(
        nameservers(&during.out.stdout),
        [format!("nameserver {DNS_SERVER}")],
        "a plain member reads the pod's resolv.conf, which has the tunnel's DNS while A runs\n{during}"
    );
    remove(&lab, &a);
    lab.assert_nothing_left(&a);
    NetnsView::of(&lab, &infra).assert_clean("the pod after A left");
    // ...and put back podman's once A, its only member, left.
    let after = pod_resolv_conf(&lab, &pod);
    let after_ns = nameservers(&after.out.stdout);
    assert!(
        after_ns.contains(&format!("nameserver {}", net.gateway4).as_str())
            && !after.out.stdout.contains(DNS_SERVER),
        "the pod's resolv.conf once the tunnel is gone: podman's again (aardvark-dns on the gateway)\n{after}"
    );
}

#[test]
fn a_static_profile_is_refused_to_a_second_netns_naming_its_holder() {
    let lab = Lab::new("static_lease");
    let first = start(&lab, RunOpts::wg(""), "the first container");
    assert_reaches_server(&lab, &first, "the first container");
    let refused = assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &[
            "leasing the profile",
            "profile \"lab\" is in use",
            &first[..12],
            "shared = true",
        ],
    );
    assert!(
        running(&lab, &first),
        "the refusal must not touch the holder\n{refused}"
    );
    assert_reaches_server(&lab, &first, "the holder after the refusal");

    let mut policy = lab.policy();
    policy.profiles[0] = LabProfile::new("lab", &lab.config_path).with("shared", "true");
    lab.write_policy(&policy);
    let second = start(&lab, RunOpts::wg(""), "a second netns on a shared profile");
    for cid in [&first, &second] {
        let out = lab.podman(&["exec", cid, "ip", "-o", "addr", "show", "dev", "wg0"]);
        assert!(
            out.success() && out.stdout.contains(&format!("inet {CLIENT_TUNNEL_V4}/32")),
            "container {cid} should have its wg0\n{out}"
        );
    }
    assert_eq!(lab.hook_daemons().len(), 2, "two netns, two tunnels");
    remove(&lab, &first);
    remove(&lab, &second);
    lab.assert_nothing_left(&first);
    lab.assert_nothing_left(&second);
}

#[test]
fn a_pool_gives_each_container_its_own_config_and_refuses_when_empty() {
    let lab = Lab::new("pool_lease");
    let pool: PathBuf = lab.dir.join("pool");
    std::fs::create_dir(&pool).unwrap();
    let hosts = ["10.77.0.3", "10.77.0.4"];
    for (i, host) in [3u8, 4].into_iter().enumerate() {
        let config = lab.add_client_peer(host);
        lab.write_file(&format!("pool/p{}.conf", i + 1), &config.render(), 0o600);
    }
    let mut policy = lab.policy();
    policy.profiles.push(
        LabProfile::new("pool", PathBuf::new()).with("pool", &toml_str(&pool.to_string_lossy())),
    );
    lab.write_policy(&policy);
    let opts = || RunOpts::wg("").annotation("wg.profile", "pool");

    let a = start(&lab, opts(), "the pool's first container");
    let b = start(&lab, opts(), "the pool's second container");
    assert_reaches_server(&lab, &a, "the first");
    assert_reaches_server(&lab, &b, "the second");
    let peers = lab.responder_peer_ips();
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert_ne!(peers[0], peers[1], "each container its own address");
    for peer in &peers {
        assert!(hosts.contains(&peer.as_str()), "{peer} is no pool address");
    }

    assert_refused(
        &lab,
        &opts(),
        &[
            "leasing the profile",
            "all 2 configs of the pool",
            "are leased",
        ],
    );

    remove(&lab, &a);
    lab.assert_nothing_left(&a);
    let c = start(&lab, opts(), "a third container once a config is free");
    assert_reaches_server(&lab, &c, "the third");
    let peers = lab.responder_peer_ips();
    assert_eq!(
        peers.get(2),
        Some(&peers[0]),
        "the third container got the first one's freed config: {peers:?}"
    );
    remove(&lab, &b);
    remove(&lab, &c);
    lab.assert_nothing_left(&b);
    lab.assert_nothing_left(&c);
}
