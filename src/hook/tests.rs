//! The hook tier: createRuntime and poststop called directly, with no engine, against namespaces the test makes
//! (root, wireguard-go and nft, as CI installs them). The test's own thread enters a fresh netns that plays the
//! runtime's ("host") side, so nothing touches the machine's; the container is a sleeper in new network and mount
//! namespaces, with a bundle and rootfs under a temp dir. The profile's peer is a TEST-NET address that no route
//! leads to: nothing leaves either netns.
//!
//! Each step of the create is failed in turn (`FAIL_AT`), and afterwards nothing it made may be left: no link in
//! either netns, no nftables table, no routing rule, no daemon or UAPI socket, no record, and the rootfs's
//! resolv.conf as it was.

use super::{create_runtime, poststop, StepError};
use crate::config::policy::Policy;
use crate::oci::state::ContainerState;
use crate::wg::uapi;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

thread_local! {
    /// The step a test makes fail.
    static FAIL_AT: Cell<Option<&'static str>> = const { Cell::new(None) };
    /// The temporary host-side link name, as the last step to pass a fail point saw it.
    static HOST_LINK: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Called by `Setup` before each step (see `create.rs`).
pub(super) fn fail_point(step: &'static str, host_link: &str) -> Result<(), StepError> {
    HOST_LINK.with(|h| h.replace(host_link.to_owned()));
    if FAIL_AT.get() == Some(step) {
        return Err(StepError {
            step,
            cause: "failed by the test".into(),
        });
    }
    Ok(())
}

/// The example keys of wg(8): any valid pair will do, nothing handshakes.
const PRIVATE_KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PEER_KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const RESOLV_BEFORE: &str = "nameserver 10.0.0.53\n";

/// The tier's policy: profile `vpn` on `wg0.conf`, then `more` (further TOML). wireguard-go, since the built-in
/// daemon is this executable, which here is the test harness; the end-to-end tests run the built-in one.
fn policy(dir: &std::path::Path, more: &str) -> Policy {
    Policy::parse(
        &format!(
            "default_profile = \"vpn\"\nstate_dir = {:?}\nbackend = \"userspace\"\n\
             userspace_command = [\"wireguard-go\"]\n\n\
             [profiles.vpn]\nconfig = {:?}\n{more}",
            dir.join("state"),
            dir.join("wg0.conf")
        ),
        &dir.join("policy.toml"),
    )
    .unwrap()
}

/// A wg-quick file like the lab's, with tunnel address 10.99.0.`n`.
fn profile_text(n: u8) -> String {
    format!(
        "[Interface]\nPrivateKey = {PRIVATE_KEY}\nAddress = 10.99.0.{n}/32, fd99::{n}/128\nDNS = 10.99.0.1\n\n\
         [Peer]\nPublicKey = {PEER_KEY}\nEndpoint = 192.0.2.1:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n"
    )
}

/// One container with its policy, profile, bundle and state dir.
struct Lab {
    dir: PathBuf,
    sleeper: Child,
    policy: Policy,
    state: ContainerState,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let dir = std::env::temp_dir().join(format!("wgoh-tier-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bundle/rootfs/etc")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let profile = dir.join("wg0.conf");
        std::fs::write(&profile, profile_text(2)).unwrap();
        std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            dir.join("bundle/config.json"),
            r#"{"root": {"path": "rootfs"}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("bundle/rootfs/etc/resolv.conf"), RESOLV_BEFORE).unwrap();
        let policy = policy(&dir, "");
        let sleeper = Command::new("unshare")
            .args(["--net", "--mount", "sleep", "600"])
            .spawn()
            .expect("unshare (util-linux) runs the container's stand-in");
        wait_for_own_namespaces(sleeper.id());
        let state = ContainerState {
            id: format!("tier-{tag}"),
            pid: Some(i64::from(sleeper.id())),
            bundle: dir.join("bundle"),
            annotations: HashMap::from([("wg.enable".to_owned(), "true".to_owned())]),
        };
        Lab {
            dir,
            sleeper,
            policy,
            state,
        }
    }

    fn container_ns(&self) -> String {
        format!("--net=/proc/{}/ns/net", self.sleeper.id())
    }

    /// `cmd` run in the container's netns.
    fn in_container(&self, cmd: &[&str]) -> String {
        let mut args = vec![self.container_ns()];
        args.extend(cmd.iter().map(|s| s.to_string()));
        output("nsenter", &args)
    }

    fn resolv_conf(&self) -> String {
        std::fs::read_to_string(self.dir.join("bundle/rootfs/etc/resolv.conf")).unwrap()
    }

    /// The state dir's files (records, memberships, leases), but for the per-profile lease locks.
    fn records(&self) -> Vec<String> {
        fn walk(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
                if entry.file_type().unwrap().is_dir() {
                    walk(&entry.path(), &format!("{name}/"), out);
                } else if !(name.starts_with("leases/") && name.ends_with(".lock")) {
                    out.push(name);
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.dir.join("state"), "", &mut files);
        files.sort();
        files
    }

    /// The tunnel is up: the link with its addresses in the container, the table, the rules, the record.
    fn assert_tunnel_up(&self) {
        let links = self.in_container(&["ip", "-o", "addr", "show", "dev", "wg0"]);
        assert!(links.contains("10.99.0.2/32"), "{links}");
        assert!(links.contains("fd99::2/128"), "{links}");
        let tables = self.in_container(&["nft", "list", "tables"]);
        assert!(tables.contains("inet wg-oci-hook"), "{tables}");
        let rules = self.in_container(&["ip", "rule", "show"]);
        assert!(rules.contains("32765:"), "{rules}");
        let key =
            std::fs::read_to_string(self.dir.join("state/members").join(&self.state.id)).unwrap();
        // The supervisor's files come and go with it (its verdict after its first look).
        let mut records = self.records();
        records.retain(|f| !f.ends_with(".supervisor.log") && !f.ends_with(".health"));
        assert_eq!(
            records,
            [
                "leases/vpn/-".to_owned(),
                format!("members/{}", self.state.id),
                format!("tunnels/{key}.json"),
                format!("tunnels/{key}.lock"),
            ]
        );
        assert!(self.resolv_conf().contains("nameserver 10.99.0.1"));
    }

    /// Nothing of ours is left, on either side.
    fn assert_nothing_left(&self, host_link: &str) {
        assert!(host_link.starts_with("wgo"), "{host_link:?}");
        let host_links = output("ip", &["-o", "link", "show"]);
        assert_eq!(host_links.lines().count(), 1, "host netns: {host_links}");
        let links = self.in_container(&["ip", "-o", "link", "show"]);
        assert_eq!(links.lines().count(), 1, "container netns: {links}");
        let tables = self.in_container(&["nft", "list", "tables"]);
        assert_eq!(tables.trim(), "", "container netns: {tables}");
        for family in ["-4", "-6"] {
            let rules = self.in_container(&["ip", family, "rule", "show"]);
            assert!(
                !rules.contains("32764:") && !rules.contains("32765:"),
                "container netns: {rules}"
            );
        }
        assert!(
            !uapi::socket_path(host_link).exists(),
            "{host_link}'s UAPI socket is left"
        );
        assert_eq!(processes_naming(host_link), Vec::<u32>::new());
        assert_eq!(self.records(), Vec::<String>::new());
        assert_eq!(self.resolv_conf(), RESOLV_BEFORE);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let link = HOST_LINK.with(|h| h.borrow().clone());
        if !link.is_empty() {
            for pid in processes_naming(&link) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = std::fs::remove_file(uapi::socket_path(&link));
        }
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `unshare` has made its namespaces once both differ from this thread's.
fn wait_for_own_namespaces(pid: u32) {
    let started = Instant::now();
    let ns = |who: &str, kind: &str| std::fs::read_link(format!("/proc/{who}/ns/{kind}")).ok();
    while ns(&pid.to_string(), "net") == ns("thread-self", "net")
        || ns(&pid.to_string(), "mnt") == ns("thread-self", "mnt")
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "unshare made no namespaces"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn output(program: &str, args: &[impl AsRef<std::ffi::OsStr>]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Processes whose argv holds `name` (the userspace daemon names its link).
fn processes_naming(name: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|&b| b == 0).any(|arg| arg == name.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Runs `test` on a thread of its own in a fresh netns, the "host" side, and passes its panic on.
fn in_own_host_netns(test: impl FnOnce() + Send + 'static) {
    let result = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("a netns of its own for the test thread (root)");
        test();
    })
    .join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Fails `step` and checks that the undo left nothing.
fn undone_after_failing(tag: &'static str, step: &'static str) {
    in_own_host_netns(move || {
        let lab = Lab::new(tag);
        FAIL_AT.set(Some(step));
        let err = create_runtime(&lab.state, &lab.policy, None).unwrap_err();
        assert_eq!(
            (err.step, err.cause.as_str()),
            (step, "failed by the test"),
            "{err}"
        );
        let link = HOST_LINK.with(|h| h.borrow().clone());
        lab.assert_nothing_left(&link);
    });
}

#[test]
fn undo_when_creating_the_device_fails() {
    undone_after_failing("device", "creating the WireGuard interface");
}

#[test]
fn undo_when_configuring_wireguard_fails_stops_the_daemon() {
    undone_after_failing("configure", "configuring WireGuard");
}

#[test]
fn undo_when_the_move_fails_deletes_the_host_link() {
    undone_after_failing("move", "moving the interface into the container");
}

#[test]
fn undo_when_the_kill_switch_fails_deletes_the_link_in_the_container() {
    undone_after_failing("nft", "loading the kill switch (nftables)");
}

#[test]
fn undo_when_resolv_conf_fails_deletes_the_table_and_the_rules() {
    undone_after_failing("resolv", "writing resolv.conf");
}

#[test]
fn undo_when_the_last_record_fails_restores_resolv_conf() {
    undone_after_failing("record", "writing the state record");
}

#[test]
fn poststop_takes_down_a_tunnel_whose_netns_lives_on() {
    in_own_host_netns(|| {
        let lab = Lab::new("poststop");
        create_runtime(&lab.state, &lab.policy, None).unwrap();
        lab.assert_tunnel_up();
        let link = HOST_LINK.with(|h| h.borrow().clone());
        assert_eq!(processes_naming(&link).len(), 1, "one userspace daemon");
        poststop(&lab.state, &lab.policy).unwrap();
        lab.assert_nothing_left(&link);
        // Idempotent: a second poststop finds no record and does nothing.
        poststop(&lab.state, &lab.policy).unwrap();
    });
}

/// Another container: a sleeper with its own bundle and rootfs, in the lab container's netns or a new one.
struct Other {
    sleeper: Child,
    state: ContainerState,
}

impl Drop for Other {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
    }
}

impl Other {
    /// Its process ends (the container stops without a poststop, or before its poststop).
    fn stop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
    }
}

impl Lab {
    fn other(&self, name: &str, same_netns: bool, annotations: &[(&str, &str)]) -> Other {
        let bundle = self.dir.join(format!("bundle-{name}"));
        std::fs::create_dir_all(bundle.join("rootfs/etc")).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            r#"{"root": {"path": "rootfs"}}"#,
        )
        .unwrap();
        std::fs::write(bundle.join("rootfs/etc/resolv.conf"), RESOLV_BEFORE).unwrap();
        let sleeper = if same_netns {
            Command::new("nsenter")
                .args([&self.container_ns(), "unshare", "--mount", "sleep", "600"])
                .spawn()
        } else {
            Command::new("unshare")
                .args(["--net", "--mount", "sleep", "600"])
                .spawn()
        }
        .unwrap();
        wait_for_own_namespaces(sleeper.id());
        // nsenter execs unshare, which execs sleep: the pid stays.
        let mut all = HashMap::from([("wg.enable".to_owned(), "true".to_owned())]);
        all.extend(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let state = ContainerState {
            id: format!("{}-{name}", self.state.id),
            pid: Some(i64::from(sleeper.id())),
            bundle,
            annotations: all,
        };
        Other { sleeper, state }
    }

    fn resolv_conf_of(&self, other: &Other) -> String {
        std::fs::read_to_string(other.state.bundle.join("rootfs/etc/resolv.conf")).unwrap()
    }

    fn wg_links_in(&self, pid: u32) -> usize {
        let out = output(
            "nsenter",
            &[
                format!("--net=/proc/{pid}/ns/net"),
                "ip".into(),
                "-o".into(),
                "link".into(),
            ],
        );
        out.lines().filter(|l| l.contains(": wg0")).count()
    }

    fn record(&self) -> serde_json::Value {
        let key = std::fs::read_to_string(self.dir.join("state/members").join(&self.state.id))
            .expect("a membership");
        let text = std::fs::read_to_string(self.dir.join(format!("state/tunnels/{key}.json")))
            .expect("a record");
        serde_json::from_str(&text).unwrap()
    }

    fn member_ids(&self) -> Vec<String> {
        self.record()["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["container_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[test]
fn a_second_container_in_the_netns_joins_the_tunnel_and_the_last_to_leave_takes_it_down() {
    in_own_host_netns(|| {
        let lab = Lab::new("join");
        create_runtime(&lab.state, &lab.policy, None).unwrap();
        let link = HOST_LINK.with(|h| h.borrow().clone());
        let second = lab.other("b", true, &[]);
        create_runtime(&second.state, &lab.policy, None).expect("the second member joins");
        assert_eq!(
            lab.wg_links_in(second.sleeper.id()),
            1,
            "one tunnel for both"
        );
        assert_eq!(processes_naming(&link).len(), 1, "one daemon for both");
        assert_eq!(
            lab.member_ids(),
            [lab.state.id.clone(), second.state.id.clone()]
        );
        assert!(lab.resolv_conf_of(&second).contains("nameserver 10.99.0.1"));
        // The builder leaves first: the tunnel stays for the other, and the builder's resolv.conf is restored.
        poststop(&lab.state, &lab.policy).unwrap();
        assert_eq!(lab.resolv_conf(), RESOLV_BEFORE);
        assert_eq!(lab.wg_links_in(second.sleeper.id()), 1, "the tunnel stays");
        assert_eq!(processes_naming(&link).len(), 1);
        assert!(lab.resolv_conf_of(&second).contains("nameserver 10.99.0.1"));
        poststop(&second.state, &lab.policy).unwrap();
        assert_eq!(lab.resolv_conf_of(&second), RESOLV_BEFORE);
        lab.assert_nothing_left(&link);
    });
}

#[test]
fn a_member_asking_for_another_profile_is_refused_and_the_tunnel_is_untouched() {
    in_own_host_netns(|| {
        let mut lab = Lab::new("other-profile");
        std::fs::write(lab.dir.join("other.conf"), profile_text(3)).unwrap();
        std::fs::set_permissions(
            lab.dir.join("other.conf"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        lab.policy = policy(
            &lab.dir,
            &format!(
                "[profiles.other]\nconfig = {:?}\n",
                lab.dir.join("other.conf")
            ),
        );
        create_runtime(&lab.state, &lab.policy, None).unwrap();
        let second = lab.other("b", true, &[]);
        let e = create_runtime(&second.state, &lab.policy, Some("other")).unwrap_err();
        assert_eq!(e.step, "joining the tunnel of its network namespace");
        assert!(
            e.cause.contains(&format!(
                "tunnel of container {} on profile \"vpn\"",
                lab.state.id
            )) && e.cause.contains("asks for profile \"other\""),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'));
        lab.assert_tunnel_up();
        assert_eq!(lab.member_ids(), std::slice::from_ref(&lab.state.id));
        // Its poststop (runc runs it after a failed create) leaves the tunnel alone.
        poststop(&second.state, &lab.policy).unwrap();
        lab.assert_tunnel_up();
    });
}

#[test]
fn create_runtime_twice_is_one_tunnel_and_poststop_twice_or_without_create_does_nothing() {
    in_own_host_netns(|| {
        let lab = Lab::new("twice");
        let stray = lab.other("never-created", false, &[]);
        poststop(&stray.state, &lab.policy).expect("poststop without createRuntime");
        create_runtime(&lab.state, &lab.policy, None).unwrap();
        let link = HOST_LINK.with(|h| h.borrow().clone());
        let again = create_runtime(&lab.state, &lab.policy, None).expect("createRuntime again");
        assert_eq!(again.host_link, link);
        lab.assert_tunnel_up();
        assert_eq!(lab.member_ids(), std::slice::from_ref(&lab.state.id));
        poststop(&lab.state, &lab.policy).unwrap();
        poststop(&lab.state, &lab.policy).expect("poststop again");
        lab.assert_nothing_left(&link);
    });
}

#[test]
fn a_container_restarted_in_a_netns_that_outlived_it_rebuilds_its_tunnel() {
    in_own_host_netns(|| {
        let lab = Lab::new("rebuild");
        create_runtime(&lab.state, &lab.policy, None).unwrap();
        let first = HOST_LINK.with(|h| h.borrow().clone());
        // A pod: the netns lives on (the sleeper), runc's poststop state has no pid.
        let mut state = lab.state.clone();
        state.pid = None;
        poststop(&state, &lab.policy).unwrap();
        lab.assert_nothing_left(&first);
        create_runtime(&lab.state, &lab.policy, None).expect("rebuilt in the same netns");
        lab.assert_tunnel_up();
        poststop(&lab.state, &lab.policy).unwrap();
    });
}

#[test]
fn a_static_profile_serves_one_netns_unless_shared() {
    in_own_host_netns(|| {
        let mut lab = Lab::new("held");
        create_runtime(&lab.state, &lab.policy, None).unwrap();
        let elsewhere = lab.other("c", false, &[]);
        let e = create_runtime(&elsewhere.state, &lab.policy, None).unwrap_err();
        assert_eq!(e.step, "leasing the profile");
        assert!(
            e.cause.contains(&format!(
                "in use by the tunnel of container {}",
                lab.state.id
            )) && e.cause.contains("shared = true"),
            "{e}"
        );
        assert_eq!(lab.wg_links_in(elsewhere.sleeper.id()), 0);
        // The refused start leaves no file: not even its netns's lock.
        let held = lab.records();
        assert_eq!(
            held.iter().filter(|f| f.ends_with(".lock")).count(),
            1,
            "{held:?}"
        );
        lab.policy = policy(&lab.dir, "");
        lab.policy.profiles.get_mut("vpn").unwrap().shared = true;
        create_runtime(&elsewhere.state, &lab.policy, None).expect("a shared profile");
        assert_eq!(lab.wg_links_in(elsewhere.sleeper.id()), 1);
        poststop(&elsewhere.state, &lab.policy).unwrap();
        poststop(&lab.state, &lab.policy).unwrap();
    });
}

#[test]
fn a_pool_leases_each_netns_its_own_config_and_refuses_when_empty() {
    in_own_host_netns(|| {
        let mut lab = Lab::new("pool");
        let pool = lab.dir.join("pool");
        std::fs::create_dir(&pool).unwrap();
        for n in [11, 12] {
            let file = pool.join(format!("p{n}.conf"));
            std::fs::write(&file, profile_text(n)).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        lab.policy = policy(&lab.dir, &format!("[profiles.pool]\npool = {pool:?}\n"));
        let addr = |pid: u32| {
            output(
                "nsenter",
                &[
                    format!("--net=/proc/{pid}/ns/net"),
                    "ip".into(),
                    "-o".into(),
                    "-4".into(),
                    "addr".into(),
                ],
            )
        };
        let a = lab.other("a", false, &[]);
        let b = lab.other("b", false, &[]);
        let c = lab.other("c", false, &[]);
        create_runtime(&a.state, &lab.policy, Some("pool")).unwrap();
        create_runtime(&b.state, &lab.policy, Some("pool")).unwrap();
        assert!(
            addr(a.sleeper.id()).contains("10.99.0.11/32"),
            "{}",
            addr(a.sleeper.id())
        );
        assert!(
            addr(b.sleeper.id()).contains("10.99.0.12/32"),
            "{}",
            addr(b.sleeper.id())
        );
        let e = create_runtime(&c.state, &lab.policy, Some("pool")).unwrap_err();
        assert!(
            e.cause.contains("all 2 configs of the pool") && e.cause.contains("are leased"),
            "{e}"
        );
        assert_eq!(lab.wg_links_in(c.sleeper.id()), 0);
        poststop(&a.state, &lab.policy).unwrap();
        create_runtime(&c.state, &lab.policy, Some("pool")).expect("a returned lease");
        assert!(addr(c.sleeper.id()).contains("10.99.0.11/32"));
        poststop(&b.state, &lab.policy).unwrap();
        poststop(&c.state, &lab.policy).unwrap();
        assert_eq!(lab.records(), Vec::<String>::new());
    });
}

#[test]
fn the_next_start_sweeps_a_tunnel_whose_containers_died_without_a_poststop() {
    in_own_host_netns(|| {
        let lab = Lab::new("sweep");
        let mut dead = lab.other("dead", false, &[]);
        create_runtime(&dead.state, &lab.policy, None).unwrap();
        let link = HOST_LINK.with(|h| h.borrow().clone());
        assert_eq!(processes_naming(&link).len(), 1);
        dead.stop();
        // The static profile is free again for the next netns, once the dead tunnel is swept.
        create_runtime(&lab.state, &lab.policy, None).expect("the dead tunnel's lease is swept");
        assert_eq!(
            processes_naming(&link),
            Vec::<u32>::new(),
            "the dead tunnel's daemon"
        );
        assert!(!uapi::socket_path(&link).exists());
        let members = std::fs::read_dir(lab.dir.join("state/members"))
            .unwrap()
            .count();
        assert_eq!(members, 1, "only the live container's membership");
        lab.assert_tunnel_up();
        poststop(&lab.state, &lab.policy).unwrap();
    });
}

#[test]
fn the_sandbox_leaving_takes_the_tunnel_but_leaves_the_kill_switch_to_members_that_run() {
    in_own_host_netns(|| {
        let mut lab = Lab::new("sandbox");
        lab.state
            .annotations
            .insert("io.kubernetes.cri.container-type".into(), "sandbox".into());
        create_runtime(&lab.state, &lab.policy, None).unwrap();
        let link = HOST_LINK.with(|h| h.borrow().clone());
        let app = lab.other(
            "app",
            true,
            &[("io.kubernetes.cri.container-type", "container")],
        );
        create_runtime(&app.state, &lab.policy, None).unwrap();
        poststop(&lab.state, &lab.policy).unwrap();
        assert_eq!(
            lab.wg_links_in(app.sleeper.id()),
            0,
            "the tunnel went with the sandbox"
        );
        assert_eq!(processes_naming(&link), Vec::<u32>::new());
        let tables = lab.in_container(&["nft", "list", "tables"]);
        assert!(
            tables.contains("inet wg-oci-hook"),
            "the app keeps no network: {tables}"
        );
        // The app's own poststop then finds its tunnel gone, and is done.
        poststop(&app.state, &lab.policy).unwrap();
        assert_eq!(lab.records(), Vec::<String>::new());
    });
}

#[test]
fn containers_of_two_netns_sharing_a_rootfs_leave_its_resolv_conf_as_it_was_whoever_stops_first() {
    in_own_host_netns(|| {
        let mut lab = Lab::new("one-rootfs");
        lab.policy.profiles.get_mut("vpn").unwrap().shared = true;
        for a_first in [true, false] {
            let mut b = lab.other(if a_first { "b1" } else { "b2" }, false, &[]);
            // B's bundle is A's: one rootfs directory, two network namespaces.
            b.state.bundle = lab.state.bundle.clone();
            create_runtime(&lab.state, &lab.policy, None).unwrap();
            let written_by_a = lab.resolv_conf();
            create_runtime(&b.state, &lab.policy, None).unwrap();
            let written_by_b = lab.resolv_conf();
            assert!(written_by_b.contains(&b.state.id), "B wrote last");
            let (first, second) = if a_first {
                (&lab.state, &b.state)
            } else {
                (&b.state, &lab.state)
            };
            poststop(first, &lab.policy).unwrap();
            let expected_after_first = if a_first {
                written_by_b.clone()
            } else {
                written_by_a.clone()
            };
            assert!(
                lab.resolv_conf().contains("nameserver 10.99.0.1"),
                "the container still running keeps the tunnel's DNS: {}",
                lab.resolv_conf()
            );
            assert_eq!(lab.resolv_conf(), expected_after_first);
            poststop(second, &lab.policy).unwrap();
            assert_eq!(lab.resolv_conf(), RESOLV_BEFORE, "a_first={a_first}");
            b.stop();
        }
    });
}

#[test]
fn a_start_that_died_half_way_in_a_netns_that_lives_on_is_rebuilt_with_one_kill_switch() {
    in_own_host_netns(|| {
        let lab = Lab::new("half-way");
        create_runtime(&lab.state, &lab.policy, None).unwrap();
        let table = lab.in_container(&["nft", "list", "table", "inet", "wg-oci-hook"]);
        let old_link = HOST_LINK.with(|h| h.borrow().clone());
        // As a start killed before its last save leaves it: the record not complete, its container alive.
        let key =
            std::fs::read_to_string(lab.dir.join("state/members").join(&lab.state.id)).unwrap();
        let path = lab.dir.join(format!("state/tunnels/{key}.json"));
        let mut record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        record["complete"] = false.into();
        std::fs::write(&path, record.to_string()).unwrap();
        create_runtime(&lab.state, &lab.policy, None).expect("rebuilt");
        assert_eq!(
            processes_naming(&old_link),
            Vec::<u32>::new(),
            "the dead start's daemon"
        );
        lab.assert_tunnel_up();
        assert_eq!(
            lab.in_container(&["nft", "list", "table", "inet", "wg-oci-hook"]),
            table,
            "the kill switch kept meanwhile is replaced, not added to"
        );
        poststop(&lab.state, &lab.policy).unwrap();
    });
}
