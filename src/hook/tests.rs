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
        std::fs::write(
            &profile,
            format!(
                "[Interface]\nPrivateKey = {PRIVATE_KEY}\nAddress = 10.99.0.2/32, fd99::2/128\nDNS = 10.99.0.1\n\n\
                 [Peer]\nPublicKey = {PEER_KEY}\nEndpoint = 192.0.2.1:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            dir.join("bundle/config.json"),
            r#"{"root": {"path": "rootfs"}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("bundle/rootfs/etc/resolv.conf"), RESOLV_BEFORE).unwrap();
        let policy_path = dir.join("policy.toml");
        let policy = Policy::parse(
            &format!(
                "default_profile = \"vpn\"\nstate_dir = {:?}\nbackend = \"userspace\"\n\n\
                 [profiles.vpn]\nconfig = {profile:?}\n",
                dir.join("state")
            ),
            &policy_path,
        )
        .unwrap();
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

    fn records(&self) -> Vec<String> {
        match std::fs::read_dir(self.dir.join("state")) {
            Err(_) => Vec::new(),
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
        }
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
        assert_eq!(self.records(), [format!("{}.json", self.state.id)]);
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
