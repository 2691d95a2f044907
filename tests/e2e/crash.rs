//! Crash recovery: a createRuntime killed half-way (as runc kills a hook at its timeout), containers that die
//! without a poststop, network namespaces deleted behind the hook's back. Whatever was made is found and taken
//! down by `wg-oci-hook gc`, or by the next createRuntime, and `status` never lists a tunnel whose containers are
//! gone. The hook is the test build's (feature `fault-injection`): `WG_OCI_HOOK_PAUSE_AT` stops it at a step.

use crate::lab::*;
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The steps a kill leaves something at: a daemon and its TUN in the container, then the table, resolv.conf,
/// and everything but the record's last save.
const STEPS: [&str; 4] = [
    "configuring WireGuard",
    "loading the kill switch (nftables)",
    "writing resolv.conf",
    "writing the state record",
];

/// With wireguard-go, whose TUN is made in the host's netns and moved: a daemon and a host link first.
const WIREGUARD_GO_STEPS: [&str; 2] = [
    "configuring WireGuard",
    "moving the interface into the container",
];

/// Starts createRuntime for container `id` (init `pid`), waits until it pauses at `step`, and SIGKILLs it.
fn kill_create_at(lab: &Lab, id: &str, pid: u32, step: &str) {
    let state = lab.fake_state(id, pid, &[("wg.enable", "true")]);
    let paused = lab.dir.join(format!("paused-{id}"));
    let policy = lab.policy_path.to_string_lossy().into_owned();
    let mut hook = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", lab.host_ns))
        .args([HOOK_BIN, "--policy", &policy, "create-runtime"])
        .env_clear()
        .env("WG_OCI_HOOK_PAUSE_AT", step)
        .env("WG_OCI_HOOK_PAUSED_FILE", &paused)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the hook");
    use std::io::Write;
    hook.stdin
        .take()
        .unwrap()
        .write_all(state.as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !paused.exists() {
        if let Some(status) = hook.try_wait().unwrap() {
            let out = hook.wait_with_output().unwrap();
            panic!(
                "the hook ended ({status}) instead of pausing at {step:?}: is it built with --features \
                 fault-injection (make test)?\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "the hook never paused at {step:?}: is it built with --features fault-injection (make test)?"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // nsenter execs the hook: this pid is the hook's.
    kill(hook.id(), Signal::SIGKILL);
    hook.wait().unwrap();
}

fn gc(lab: &Lab) -> CmdOutput {
    let policy = lab.policy_path.to_string_lossy().into_owned();
    lab.run_hook_direct(&["--policy", &policy, "gc"], "")
}

fn status(lab: &Lab) -> CmdOutput {
    let policy = lab.policy_path.to_string_lossy().into_owned();
    lab.run_hook_direct(&["--policy", &policy, "status"], "")
}

#[test]
fn gc_takes_down_what_a_create_killed_at_each_step_left_once_its_container_is_gone() {
    gc_after_kills(&Lab::new("crash_gc"), &STEPS);
    let lab = Lab::new("crash_gc_wggo");
    let mut policy = lab.policy();
    policy.userspace_command = vec!["wireguard-go".to_owned()];
    lab.write_policy(&policy);
    gc_after_kills(&lab, &WIREGUARD_GO_STEPS);
}

fn gc_after_kills(lab: &Lab, steps: &[&str]) {
    for (n, step) in steps.iter().enumerate() {
        let id = format!("crash-{}-{n}", lab.id);
        lab.track_container_id(&id);
        let pid = lab.spawn_netns_sleeper();
        kill_create_at(lab, &id, pid, step);
        let left = lab.leftovers(&id);
        assert!(
            left.iter().any(|l| l.starts_with("process ")),
            "killed at {step:?}: no daemon left, so this proves nothing: {left:?}"
        );
        assert_eq!(
            status(lab).assert_success("status").stdout.trim(),
            "",
            "killed at {step:?}: status lists a tunnel that never came up"
        );
        // The container dies (runc kills it when its hook fails) and no poststop runs.
        kill(pid, Signal::SIGKILL);
        let out = gc(lab);
        out.assert_success("gc");
        assert!(
            out.stdout.contains("1 tunnel(s) taken down"),
            "killed at {step:?}:\n{out}"
        );
        lab.assert_nothing_left(&id);
        let out = gc(lab);
        assert!(out.stdout.contains("0 tunnel(s) taken down"), "{out}");
    }
}

#[test]
fn the_next_start_sweeps_a_killed_start_and_takes_its_lease() {
    let lab = Lab::new("crash_next");
    let dead = format!("dead-{}", lab.id);
    lab.track_container_id(&dead);
    let pid = lab.spawn_netns_sleeper();
    kill_create_at(&lab, &dead, pid, "writing the state record");
    kill(pid, Signal::SIGKILL);
    assert!(!lab.leftovers(&dead).is_empty());
    // The lab's profile is static: had the dead start kept its lease, this one would be refused.
    let next = format!("next-{}", lab.id);
    lab.track_container_id(&next);
    let live = lab.spawn_netns_sleeper();
    let state = lab.fake_state(&next, live, &[("wg.enable", "true")]);
    let policy = lab.policy_path.to_string_lossy().into_owned();
    lab.run_hook_direct(&["--policy", &policy, "create-runtime"], &state)
        .assert_success("the next start");
    lab.assert_nothing_left(&dead);
    let listed = status(&lab).assert_success("status").stdout.clone();
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert!(
        listed.starts_with("CONTAINER ")
            && rows.len() == 1
            && rows[0].starts_with(&format!("{next} ")),
        "{listed}"
    );
    lab.run_hook_direct(&["--policy", &policy, "poststop"], &state)
        .assert_success("poststop");
    lab.assert_nothing_left(&next);
}

#[test]
fn a_tunnel_whose_netns_was_deleted_behind_its_back_is_not_listed_and_gc_removes_it() {
    let lab = Lab::new("crash_netns");
    let id = format!("gone-{}", lab.id);
    lab.track_container_id(&id);
    // A netns of its own, by name (as podman's and CNI's are), with the container's init in it.
    let name = format!("{}c", lab.host_ns);
    run_ok("ip", &["netns", "add", &name]);
    let _gone_at_last = NetnsGuard(name.clone());
    let netns = format!("/var/run/netns/{name}");
    let mut init = Command::new("nsenter")
        .args([
            &format!("--net={netns}"),
            "unshare",
            "--mount",
            "sleep",
            "120",
        ])
        .spawn()
        .unwrap();
    wait_until_in(init.id(), &netns);
    let state = lab.fake_state(&id, init.id(), &[("wg.enable", "true")]);
    let policy = lab.policy_path.to_string_lossy().into_owned();
    lab.run_hook_direct(&["--policy", &policy, "create-runtime"], &state)
        .assert_success("create-runtime");
    let listed = status(&lab);
    assert!(
        listed
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|row| row.starts_with(&format!("{id} "))),
        "{listed}"
    );
    // The container dies without its poststop, and its netns is deleted.
    let _ = init.kill();
    let _ = init.wait();
    run_ok("ip", &["netns", "delete", &name]);
    assert_eq!(
        status(&lab).assert_success("status").stdout.trim(),
        "",
        "status lists a tunnel whose netns is gone"
    );
    let out = gc(&lab);
    assert!(out.stdout.contains("1 tunnel(s) taken down"), "{out}");
    lab.assert_nothing_left(&id);
}

/// Deletes the named netns when the test ends, however it ends.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `pid` is in the netns at `path` and in a mount namespace of its own.
fn wait_until_in(pid: u32, path: &str) {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while id(&format!("/proc/{pid}/ns/net")) != id(path)
        || id(&format!("/proc/{pid}/ns/mnt")) == id("/proc/self/ns/mnt")
    {
        assert!(Instant::now() < deadline, "pid {pid} never entered {path}");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(Path::new(path).exists());
}
