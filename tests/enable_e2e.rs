//! Issue 12, item 2, end to end: every value of `wg.enable` either gives the tunnel, gives none with the hook
//! touching nothing, or is refused (never a silent start without the tunnel). Real podman and runc against the
//! lab's WireGuard server (see `lab/mod.rs`). Needs root, podman, runc, wireguard-go, busybox-static; fails
//! (never skips) without them.

mod lab;

use lab::*;
use std::fs;

const PROBE: &str = "ping -c 1 -W 2 10.77.0.1 && nc -w 2 10.77.0.1 8080 </dev/null";
/// What the workload prints first: it must not appear when the start is refused.
const STARTED: &str = "workload-started";

fn show_links() -> String {
    format!("echo {STARTED}; ip -o link")
}

// ----- wg.enable values under podman (the shipped hooks.d) -------------------------------------------------------

#[test]
fn wg_enable_true_in_another_spelling_gets_the_tunnel() {
    let lab = Lab::new("enable_true_spelling");
    let run = lab.podman_run(&RunOpts::plain(PROBE).annotation("wg.enable", "True"));
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
