//! Issue 12, items 2 and 6, end to end: every value of `wg.enable` either gives the tunnel, gives none with the
//! hook touching nothing, or is refused (never a silent start without the tunnel); a runtime-bound profile works
//! under containerd; and the runtime wrapper neither blocks other containers' `state`/`kill`/`delete` over a
//! policy typo nor writes into a container's own streams. Real podman, dockerd, containerd and runc against the
//! lab's WireGuard server (see `tests/lab/lab.rs`). Needs root, podman, docker.io, containerd, runc, wireguard-go,
//! busybox-static; fails (never skips) without them.

use crate::lab::*;
use std::fs;
use std::path::{Path, PathBuf};

/// What the workload prints first: it must not appear when the start is refused.
const STARTED: &str = "workload-started";

fn show_links() -> String {
    format!("echo {STARTED}; ip -o link")
}

// ----- wg.enable values under podman (the shipped hooks.d) -------------------------------------------------------

#[test]
fn wg_enable_true_in_another_spelling_gets_the_tunnel() {
    let lab = Lab::new("enable_true_spelling");
    let run = lab.podman_run(&RunOpts::plain(TUNNEL_PROBE).annotation("wg.enable", "True"));
    run.assert_success("wg.enable=True");
    assert!(
        run.out.stdout.contains(MARKER.trim_end()),
        "wg.enable=True started without the tunnel\n{run}"
    );
    assert_eq!(lab.responder_peer_ips(), [CLIENT_TUNNEL_V4]);
    lab.assert_nothing_left(run.cid());
}

#[test]
fn wg_enable_maybe_is_refused_with_one_line_and_nothing_left() {
    let lab = Lab::new("enable_maybe");
    for (value, shown) in [("maybe", "\"maybe\""), (" true", "\" true\""), ("", "\"\"")] {
        let run = assert_refused(
            &lab,
            &RunOpts::plain(&show_links()).annotation("wg.enable", value),
            &[],
        );
        let want = format!(
            "wg-oci-hook: container {}: reading annotations: annotation wg.enable={shown}: expected true or false",
            run.cid()
        );
        assert_eq!(run.hook_error_line(), Some(want.as_str()), "{run}");
        assert!(!run.out.stdout.contains(STARTED), "the workload ran\n{run}");
        assert!(!lab.record_path(run.cid()).exists());
    }
    // A long value is quoted only in part, on one line.
    let long = "x".repeat(10_000);
    let run = assert_refused(
        &lab,
        &RunOpts::plain(&show_links()).annotation("wg.enable", &long),
        &["annotation wg.enable=\"xxxx", "expected true or false"],
    );
    assert!(run.hook_error_line().unwrap().len() < 300, "{run}");
}

/// Annotation names are case-sensitive: `wg.Enable=true` is not `wg.enable`, but whoever wrote it wants the tunnel.
/// hooks.d matches the name in any case, and the hook refuses every spelling other than `wg.enable`.
#[test]
fn a_mis_cased_wg_enable_is_refused_not_ignored() {
    let lab = Lab::new("enable_case");
    for key in ["wg.Enable", "WG.ENABLE"] {
        let run = assert_refused(
            &lab,
            &RunOpts::plain(&show_links()).annotation(key, "true"),
            &[&format!("annotation \"{key}\""), "write wg.enable"],
        );
        assert!(!run.out.stdout.contains(STARTED), "the workload ran\n{run}");
        assert!(!lab.record_path(run.cid()).exists());
    }
    // Another wg.* name in another case is an unknown annotation, as a typo is.
    assert_refused(
        &lab,
        &RunOpts::wg(&show_links()).annotation("WG.profile", "lab"),
        &["annotation \"WG.profile\"", "unknown wg.* annotation"],
    );
}

/// `wg.enable=false` (and its spellings) now reaches the hook (hooks.d matches every value), which must leave
/// without even reading the policy: the policy here is not even TOML.
#[test]
fn wg_enable_false_starts_without_a_tunnel_and_the_hook_touches_nothing() {
    let lab = Lab::new("enable_false");
    fs::write(&lab.policy_path, "this is [not a policy\n").unwrap();
    for value in ["false", "Off", "0"] {
        let run = lab.podman_run(&RunOpts::plain(&show_links()).annotation("wg.enable", value));
        run.assert_success(&format!("wg.enable={value}"));
        let after = run.out.stdout.split(STARTED).nth(1).unwrap_or_default();
        assert_eq!(
            parse_link_names(after),
            ["lo"],
            "wg.enable={value} got more than lo\n{run}"
        );
        assert!(
            !run.out.stderr.contains("wg-oci-hook"),
            "the hook spoke\n{run}"
        );
        assert!(!lab.record_path(run.cid()).exists());
        lab.assert_nothing_left(run.cid());
    }
    assert!(
        !lab.state_dir.exists() || fs::read_dir(&lab.state_dir).unwrap().next().is_none(),
        "the state dir is not empty"
    );
}

/// poststop for a value the create refused still tears down whatever exists (here a tunnel made for the same id
/// while it said `true`) and does not fail.
#[test]
fn poststop_with_an_invalid_value_still_tears_down() {
    let lab = Lab::new("enable_poststop");
    let policy = lab.policy_path.to_string_lossy().into_owned();
    let id = format!("enpost{}", lab.id);
    lab.track_container_id(&id);
    let pid = lab.spawn_netns_sleeper();
    let state = lab.fake_state(&id, pid, &[("wg.enable", "true")]);
    lab.run_hook_direct(&["--policy", &policy, "create-runtime"], &state)
        .assert_success("create-runtime");
    assert!(lab.record_path(&id).exists(), "no record after create");
    let state = lab.fake_state(&id, pid, &[("wg.enable", "maybe")]);
    let out = lab.run_hook_direct(&["--policy", &policy, "poststop"], &state);
    out.assert_success("poststop with wg.enable=maybe");
    lab.assert_nothing_left(&id);
    // And again, with nothing left: still no failure.
    lab.run_hook_direct(&["--policy", &policy, "poststop"], &state)
        .assert_success("a second poststop");
}

// ----- the runtime wrapper under dockerd and containerd --------------------------------------------------------

fn dockerd(lab: &Lab) -> (Dockerd, String) {
    let policy = format!("--wg-policy={}", lab.policy_path.display());
    let hook = format!("--wg-hook={HOOK_BIN}");
    let bound = ["--wg-profile=lab", policy.as_str(), hook.as_str()];
    let d = lab.start_dockerd(&[("wg-lab", WRAPPER_BIN, &bound[..])]);
    let image = d.import_busybox(lab);
    (d, image)
}

fn docker_run_detached(lab: &Lab, d: &Dockerd, image: &str, script: &str) -> String {
    let out = d.docker(&[
        "run",
        "-d",
        "--runtime",
        "wg-lab",
        "--network",
        "none",
        image,
        "/bin/sh",
        "-c",
        script,
    ]);
    out.assert_success("docker run -d");
    let cid = out.stdout.trim().to_owned();
    lab.track_container_id(&cid);
    cid
}

/// The workload's stdout and stderr are its own: the wrapper's info line goes to runc's log file only.
#[test]
fn an_enabled_containers_logs_hold_only_the_workloads_lines() {
    let lab = Lab::new("docker_logs_clean");
    let (d, image) = dockerd(&lab);
    let cid = docker_run_detached(
        &lab,
        &d,
        &image,
        &format!(
            "( {TUNNEL_PROBE} ) >/dev/null 2>&1 && echo tunnel-up; echo to-stderr >&2; sleep 600"
        ),
    );
    assert!(lab.wait_for_record(&cid).is_some(), "no tunnel record");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let logs = loop {
        let logs = d.docker(&["logs", &cid]);
        logs.assert_success("docker logs");
        if logs.stdout.contains("tunnel-up") && logs.stderr.contains("to-stderr") {
            break logs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the workload's lines never came\n{logs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(logs.stdout, "tunnel-up\n", "{logs}");
    assert_eq!(logs.stderr, "to-stderr\n", "{logs}");
    d.docker(&["rm", "-f", &cid]).assert_success("docker rm -f");
    lab.assert_nothing_left(&cid);
}

/// A typo in the policy after a container started: `state` (docker exec), `kill` and `delete` (docker rm) of that
/// container go through the wrapper all the same.
#[test]
fn a_policy_typo_does_not_stop_state_kill_or_delete_of_a_running_container() {
    let lab = Lab::new("docker_policy_typo");
    let (d, image) = dockerd(&lab);
    let cid = docker_run_detached(&lab, &d, &image, "trap '' USR1; while :; do sleep 1; done");
    assert!(lab.wait_for_record(&cid).is_some(), "no tunnel record");
    let pid = d.docker(&["inspect", "-f", "{{.State.Pid}}", &cid]);
    pid.assert_success("docker inspect");
    let pid: u32 = pid.stdout.trim().parse().unwrap();
    let good = fs::read_to_string(&lab.policy_path).unwrap();
    fs::write(&lab.policy_path, format!("kill_swich = true\n{good}")).unwrap();

    d.docker(&["exec", &cid, "/bin/sh", "-c", TUNNEL_PROBE])
        .assert_success("docker exec (runc state, exec) with a policy typo");
    d.docker(&["kill", "-s", "USR1", &cid])
        .assert_success("docker kill (runc kill) with a policy typo");
    d.docker(&["rm", "-f", &cid])
        .assert_success("docker rm -f (runc kill, delete) with a policy typo");
    let ps = d.docker(&["ps", "-aq", "--no-trunc"]);
    ps.assert_success("docker ps -a");
    assert!(
        !ps.stdout.contains(&cid),
        "the container is still there\n{ps}"
    );

    // The hook's poststop needs the policy to find the record: once fixed, it tears the tunnel down.
    fs::write(&lab.policy_path, good).unwrap();
    let policy = lab.policy_path.to_string_lossy().into_owned();
    lab.run_hook_direct(
        &["--policy", &policy, "poststop"],
        &lab.fake_state(&cid, pid, &[("wg.enable", "true")]),
    )
    .assert_success("poststop once the policy is fixed");
    lab.assert_nothing_left(&cid);
}

/// `wg-oci-hook install containerd --profile lab`: containerd's runc options have no arguments, so the handler it
/// edits into config.toml has a BinaryName that is a link named for the profile. A container run through it with
/// no annotation at all (here by `ctr run --runc-binary`, which sets the same runc.v2 `BinaryName` option) gets
/// the profile's tunnel.
#[test]
fn containerd_handler_installed_with_a_profile_applies_it() {
    let lab = Lab::new("containerd_profile");
    // Beside each other in a dir of the lab, as they would be in /usr/local/bin.
    let bin = lab.dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    for (from, name) in [(HOOK_BIN, "wg-oci-hook"), (WRAPPER_BIN, "wg-oci-runtime")] {
        fs::hard_link(from, bin.join(name))
            .or_else(|_| fs::copy(from, bin.join(name)).map(drop))
            .unwrap();
    }
    let config = lab.dir.join("containerd-config.toml");
    let out = lab.run(&[
        "env",
        &format!("WG_OCI_HOOK_POLICY={}", lab.policy_path.display()),
        &bin.join("wg-oci-hook").to_string_lossy(),
        "install",
        "containerd",
        "--config",
        &config.to_string_lossy(),
        "--profile",
        "lab",
    ]);
    out.assert_success("wg-oci-hook install containerd --profile lab");
    let written = fs::read_to_string(&config).unwrap();
    let parsed: toml::Table = toml::from_str(&written).unwrap();
    let handler =
        &parsed["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["wg-lab"];
    assert_eq!(handler["pod_annotations"][0].as_str(), Some("wg.*"));
    let binary = PathBuf::from(handler["options"]["BinaryName"].as_str().unwrap());
    assert_eq!(binary.parent(), Some(bin.as_path()), "{written}");
    assert_eq!(
        fs::canonicalize(&binary).unwrap(),
        fs::canonicalize(bin.join("wg-oci-runtime")).unwrap(),
        "BinaryName is not wg-oci-runtime"
    );

    // The lab's containerd has WG_OCI_HOOK_POLICY (the README's way to give containerd's handlers a policy).
    let d = lab.start_dockerd(&[]);
    let image = d.import_busybox_into_containerd(&lab);
    let id = format!("wgctr{}", lab.id);
    lab.track_container_id(&id);
    let out = d.ctr_run(&binary, &image, &id, TUNNEL_PROBE);
    out.assert_success("ctr run through the installed handler");
    assert!(
        out.stdout.contains(MARKER.trim_end()),
        "no answer through the profile's tunnel\n{out}"
    );
    assert_eq!(lab.responder_peer_ips(), [CLIENT_TUNNEL_V4]);
    lab.assert_nothing_left(&id);
    assert!(Path::new(&binary).exists());
}
