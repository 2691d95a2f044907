//! End-to-end: the state directory and the names and processes the hook leaves behind, attacked (issue 12,
//! items 3 and 4). A state dir others could write to, or that is not ours, or that is a symlink, is refused; a
//! symlink planted in it is never followed; a poststop never signals a process it did not start, whatever its
//! argv holds or whichever pid it took over; the userspace daemon gets none of the hook's environment.
//! Needs what `podman` needs; fails (never skips) without it.

use crate::lab::*;
use std::fs;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::time::Duration;

fn record_json(lab: &Lab, id: &str) -> serde_json::Value {
    let text = fs::read_to_string(lab.record_path(id))
        .unwrap_or_else(|e| panic!("no record for {id}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("record for {id}: {e}\n{text}"))
}

/// The recorded daemon pid, under either record format (`daemon_pid`, or `daemon.pid`).
fn recorded_daemon_pid(record: &serde_json::Value) -> u32 {
    record["daemon_pid"]
        .as_u64()
        .or_else(|| record["daemon"]["pid"].as_u64())
        .unwrap_or_else(|| panic!("the record names no daemon pid: {record}")) as u32
}

fn set_recorded_daemon_pid(record: &mut serde_json::Value, pid: u32) {
    if record.get("daemon_pid").is_some() {
        record["daemon_pid"] = pid.into();
    } else {
        record["daemon"]["pid"] = pid.into();
    }
}

/// Today's (FNV-1a) derivation of a host link name from a container id: what a crafted id targets.
fn fnv_link_name(id: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id.as_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("wgo{:012x}", hash >> 16)
}

fn make_dir(path: &std::path::Path, mode: u32) {
    fs::DirBuilder::new().mode(mode).create(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

// ----- item 3: the state directory ---------------------------------------------------------------------------------

#[test]
fn a_state_dir_others_may_write_to_is_refused() {
    let lab = Lab::new("state_dir_0777");
    make_dir(&lab.state_dir, 0o777);
    let dir = lab.state_dir.to_string_lossy().into_owned();
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &[&dir, "writable by group or others"],
    );
    assert_eq!(fs::read_dir(&lab.state_dir).unwrap().count(), 0);
}

#[test]
fn a_state_dir_owned_by_another_user_is_refused() {
    let lab = Lab::new("state_dir_owner");
    make_dir(&lab.state_dir, 0o700);
    std::os::unix::fs::chown(&lab.state_dir, Some(65534), Some(65534)).unwrap();
    let dir = lab.state_dir.to_string_lossy().into_owned();
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &[&dir, "owned by uid 65534"],
    );
    assert_eq!(fs::read_dir(&lab.state_dir).unwrap().count(), 0);
}

#[test]
fn a_state_dir_that_is_a_symlink_is_refused() {
    let lab = Lab::new("state_dir_symlink");
    let elsewhere = lab.dir.join("elsewhere");
    make_dir(&elsewhere, 0o700);
    symlink(&elsewhere, &lab.state_dir).unwrap();
    let dir = lab.state_dir.to_string_lossy().into_owned();
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &[&dir, "symlink"],
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// Root planting a symlink where the record's temporary file goes (a stale one, or someone who could write
/// there) must not make the hook write the record through it.
#[test]
fn a_symlink_at_the_record_temp_path_is_not_followed() {
    let lab = Lab::new("record_tmp_symlink");
    make_dir(&lab.state_dir, 0o700);
    let host_file = lab.write_file("host-file", "precious\n", 0o644);
    let id = format!("tmp-link-{}", lab.id);
    lab.track_container_id(&id);
    symlink(&host_file, lab.state_dir.join(format!(".{id}.json.tmp"))).unwrap();
    let pid = lab.spawn_netns_sleeper();
    let state = lab.fake_state(&id, pid, &[("wg.enable", "true")]);
    let policy = lab.policy_path.to_string_lossy().into_owned();
    let out = lab.run_hook_direct(&["create-runtime", "--policy", &policy], &state);
    assert_eq!(
        fs::read_to_string(&host_file).unwrap(),
        "precious\n",
        "the hook wrote through the planted symlink\n{out}"
    );
    assert!(out.success(), "create-runtime\n{out}");
    let record = fs::symlink_metadata(lab.record_path(&id)).unwrap();
    assert!(record.is_file(), "the record must be a file of its own");
    // The hook's temporary files are its own (fresh, made with O_EXCL|O_NOFOLLOW): the planted link is left
    // as it was, and is the test's to remove.
    fs::remove_file(lab.state_dir.join(format!(".{id}.json.tmp"))).unwrap();
    let out = lab.run_hook_direct(&["poststop", "--policy", &policy], &state);
    assert!(out.success(), "poststop\n{out}");
    lab.assert_nothing_left(&id);
    assert_eq!(fs::read_to_string(&host_file).unwrap(), "precious\n");
}

// ----- item 4: names and processes -----------------------------------------------------------------------------

/// A record-less poststop for a crafted container id touches nothing: not a process whose argv holds the host
/// link name its id would have hashed to, not one holding a running container's link name, and not that
/// container's daemon, whose tunnel still works afterwards.
#[test]
fn a_recordless_poststop_spares_every_process_whatever_its_argv() {
    let lab = Lab::new("recordless_poststop");
    let run = lab.podman_run(&RunOpts::wg("sleep 600").detached());
    run.assert_success("starting the victim");
    let victim = run.cid().to_owned();
    let record = serde_json::from_str::<serde_json::Value>(
        &lab.wait_for_record(&victim).expect("the victim's record"),
    )
    .unwrap();
    let victim_link = record["host_link"].as_str().unwrap().to_owned();
    let victim_daemon = recorded_daemon_pid(&record);
    let crafted = format!("crafted-{}", lab.id);
    lab.track_container_id(&crafted);
    let mut bystanders = Bystanders::default();
    let near_victim = bystanders.spawn(&victim_link);
    let near_crafted = bystanders.spawn(&fnv_link_name(&crafted));

    let pid = lab.spawn_netns_sleeper();
    let state = lab.fake_state(&crafted, pid, &[("wg.enable", "true")]);
    let policy = lab.policy_path.to_string_lossy().into_owned();
    let out = lab.run_hook_direct(&["poststop", "--policy", &policy], &state);
    assert!(out.success(), "poststop without a record\n{out}");
    std::thread::sleep(Duration::from_millis(200));
    for (pid, what) in [
        (near_victim, "the process naming the victim's link"),
        (
            near_crafted,
            "the process naming the crafted id's hashed name",
        ),
        (victim_daemon, "the victim's daemon"),
    ] {
        assert!(alive(pid), "{what} ({pid}) was killed\n{out}");
    }
    lab.podman(&[
        "exec",
        &victim,
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        SERVER_TUNNEL_V4,
    ])
    .assert_success("the victim's tunnel still works");
    lab.podman(&["rm", "-f", "-t", "0", &victim])
        .assert_success("podman rm -f");
    lab.assert_nothing_left(&victim);
}

/// A recorded daemon pid that now belongs to another process (the daemon died, the pid was reused), even one
/// whose argv holds the link name, is spared.
#[test]
fn poststop_spares_a_process_that_took_over_the_recorded_pid() {
    let lab = Lab::new("reused_pid");
    let id = format!("reused-{}", lab.id);
    lab.track_container_id(&id);
    let pid = lab.spawn_netns_sleeper();
    let state = lab.fake_state(&id, pid, &[("wg.enable", "true")]);
    let policy = lab.policy_path.to_string_lossy().into_owned();
    let out = lab.run_hook_direct(&["create-runtime", "--policy", &policy], &state);
    assert!(out.success(), "create-runtime\n{out}");
    let mut record = record_json(&lab, &id);
    let daemon = recorded_daemon_pid(&record);
    let link = record["host_link"].as_str().unwrap().to_owned();
    let mut bystanders = Bystanders::default();
    let impostor = bystanders.spawn(&link);
    set_recorded_daemon_pid(&mut record, impostor);
    fs::write(lab.record_path(&id), record.to_string()).unwrap();

    let out = lab.run_hook_direct(&["poststop", "--policy", &policy], &state);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        alive(impostor),
        "poststop killed {impostor}, which only took over the recorded pid\n{out}"
    );
    // The real daemon, which the doctored record no longer names, is the test's to stop.
    kill(daemon, nix::sys::signal::Signal::SIGKILL);
    let _ = fs::remove_file(format!("/var/run/wireguard/{link}.sock"));
    lab.assert_nothing_left(&id);
}

/// The built-in daemon gets an empty environment; wireguard-go PATH and WG_PROCESS_FOREGROUND, nothing else of
/// the hook's.
#[test]
fn the_daemon_gets_none_of_the_hooks_environment() {
    daemon_environment(false);
    daemon_environment(true);
}

fn daemon_environment(wireguard_go: bool) {
    let lab = Lab::new("daemon_env");
    if wireguard_go {
        let mut policy = lab.policy();
        policy.userspace_command = vec!["wireguard-go".to_owned()];
        lab.write_policy(&policy);
    }
    let id = format!("env-{}", lab.id);
    lab.track_container_id(&id);
    let pid = lab.spawn_netns_sleeper();
    let state = lab.fake_state(&id, pid, &[("wg.enable", "true")]);
    let policy = lab.policy_path.to_string_lossy().into_owned();
    let out = lab.run_hook_direct_env(
        &["create-runtime", "--policy", &policy],
        &state,
        &[
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            ("API_TOKEN", "s3cret-in-the-hooks-env"),
            ("LOG_LEVEL", "debug"),
        ],
    );
    assert!(out.success(), "create-runtime\n{out}");
    let daemon = recorded_daemon_pid(&record_json(&lab, &id));
    let environ = fs::read(format!("/proc/{daemon}/environ")).unwrap();
    let mut names: Vec<String> = environ
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    names.sort();
    let out_post = lab.run_hook_direct(&["poststop", "--policy", &policy], &state);
    assert!(out_post.success(), "poststop\n{out_post}");
    lab.assert_nothing_left(&id);
    let keys: Vec<&str> = names.iter().map(|v| v.split('=').next().unwrap()).collect();
    if !wireguard_go {
        assert!(
            keys.is_empty(),
            "the built-in daemon's environment: {names:?}"
        );
        return;
    }
    assert_eq!(
        keys,
        ["PATH", "WG_PROCESS_FOREGROUND"],
        "wireguard-go's environment: {names:?}"
    );
    assert!(names.contains(&"WG_PROCESS_FOREGROUND=1".to_owned()));
}

/// The PIA cache under the state dir (tokens, the server list) is checked like the state dir itself.
#[test]
fn a_pia_cache_dir_others_may_write_to_is_refused() {
    let lab = Lab::new("pia_cache_0777");
    let pia = PiaLab::start(&lab);
    lab.write_policy(&pia.policy(&lab, &[]));
    make_dir(&lab.state_dir, 0o700);
    let cache = lab.state_dir.join("pia");
    make_dir(&cache, 0o777);
    let dir = cache.to_string_lossy().into_owned();
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["registering with PIA", &dir, "writable by group or others"],
    );
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 0, "no token cached");
}
