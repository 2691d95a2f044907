//! CDI: a tunnel as a device. podman 4.3 + runc with an empty hooks dir, the spec that `wg-oci-hook install cdi`
//! wrote into the lab's CDI dir (which podman sees as /etc/cdi, in a mount namespace of its own), and
//! `--device wg-oci-hook.dev/tunnel=PROFILE` as the container's only request: no annotation, no wrapper.

use crate::lab::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::{Duration, Instant};

/// The first instruction sends one packet through the tunnel; then what the container sees of its network.
const FIRST_PACKET: &str = "set -e
nc 10.77.0.1 8080 </dev/null
echo BEGIN links; ip -o link show | cut -d: -f2 | tr -d ' '; echo END links
echo done
exec sleep 600";

fn status_json(lab: &Lab) -> Value {
    let policy = lab.policy_path.to_string_lossy().into_owned();
    let out = lab.run(&[HOOK_BIN, "--policy", &policy, "status", "--json"]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}\n{out}"))
}

fn check(lab: &Lab) -> CmdOutput {
    let policy = lab.policy_path.to_string_lossy().into_owned();
    let dir = lab.cdi_dir().to_string_lossy().into_owned();
    lab.run(&[HOOK_BIN, "--policy", &policy, "check", "--cdi-dir", &dir])
}

/// The container's output once it holds `needle` (or after 20 s, for the caller's assertion to show).
fn logs_once_they_hold(lab: &Lab, cid: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = lab.podman(&["logs", cid]).stdout;
        if logs.contains(needle) || Instant::now() > deadline {
            return logs;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// `podman rm -f`, and nothing of the container's tunnel left.
fn remove(lab: &Lab, cid: &str) {
    lab.podman(&["rm", "-f", "-t", "0", cid])
        .assert_success("podman rm -f");
    lab.assert_nothing_left(cid);
}

/// The lab's policy with a second profile `vpn` (the same server), `lab` still the default.
fn two_profiles(lab: &Lab) -> Policy {
    let mut policy = lab.policy();
    policy
        .profiles
        .push(LabProfile::new("vpn", &lab.config_path));
    policy
}

#[test]
fn a_device_alone_gives_the_container_its_tunnel_before_its_first_instruction() {
    let lab = Lab::new("cdi_first_packet");
    lab.write_policy(&two_profiles(&lab));
    let installed = lab.install_cdi();
    println!("{installed}");
    let spec_path = lab.cdi_dir().join("wg-oci-hook.json");
    let text = fs::read_to_string(&spec_path).unwrap();
    println!("the spec install cdi wrote:\n{text}");
    assert_eq!(
        fs::metadata(&spec_path).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    let spec: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(spec["kind"], "wg-oci-hook.dev/tunnel");
    let names: Vec<&str> = spec["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lab", "vpn"]);
    let out = check(&lab);
    assert!(out.success(), "check accepts the spec it wrote\n{out}");

    let run = lab.podman_run(
        &RunOpts::plain(FIRST_PACKET)
            .device("vpn")
            .without_hooks_dir()
            .detached(),
    );
    run.assert_success("a container with the device");
    let cid = run.cid().to_owned();
    let logs_text = logs_once_they_hold(&lab, &cid, "done");
    assert!(
        logs_text.starts_with(MARKER.trim_end()),
        "the first instruction went through the tunnel\n{logs_text}\n{run}"
    );
    let links = section(&logs_text, "links");
    assert_eq!(links, ["lo", "wg0"], "{logs_text}");
    // The config.json podman wrote has our hooks from the device, and no annotation asked for them.
    let inspect = lab.podman(&["inspect", "--format", "{{json .Config.Annotations}}", &cid]);
    assert!(!inspect.stdout.contains("wg.enable"), "{inspect}");
    let status = status_json(&lab);
    let tunnels = status["tunnels"].as_array().unwrap();
    assert_eq!(tunnels.len(), 1, "{status}");
    assert_eq!(
        tunnels[0]["profile"], "vpn",
        "the device's profile\n{status}"
    );
    remove(&lab, &cid);
}

#[test]
fn a_device_and_the_hooks_d_registration_build_one_tunnel_of_the_devices_profile() {
    let lab = Lab::new("cdi_and_hooks_d");
    lab.write_policy(&two_profiles(&lab));
    lab.install_cdi();
    // hooks.d runs for the annotation, the device's hooks for the device: the default profile is `lab`, the
    // device's `vpn`, and whichever runs first builds the device's tunnel.
    let run = lab.podman_run(
        &RunOpts::wg("nc 10.77.0.1 8080 </dev/null; ip -o link show | grep -c ': wg'; sleep 600")
            .device("vpn")
            .detached(),
    );
    run.assert_success("a container with the device and wg.enable=true");
    let cid = run.cid().to_owned();
    // Both registrations are in the container's config.json: the device's first (podman applies CDI before
    // hooks.d), then hooks.d's.
    let config = lab.podman(&["inspect", "--format", "{{.OCIConfigPath}}", &cid]);
    config.assert_success("podman inspect OCIConfigPath");
    let config: Value =
        serde_json::from_str(&fs::read_to_string(config.stdout.trim()).unwrap()).unwrap();
    let args: Vec<String> = config["hooks"]["createRuntime"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["args"].to_string())
        .collect();
    assert_eq!(args.len(), 2, "{args:?}");
    assert!(args[0].contains("\"--cdi-device\",\"vpn\""), "{args:?}");
    assert!(!args[1].contains("--cdi-device"), "{args:?}");
    let status = status_json(&lab);
    let tunnels = status["tunnels"].as_array().unwrap();
    assert_eq!(tunnels.len(), 1, "one tunnel\n{status}");
    assert_eq!(tunnels[0]["profile"], "vpn", "{status}");
    assert_eq!(
        tunnels[0]["containers"],
        serde_json::json!([cid]),
        "{status}"
    );
    let key = lab.tunnel_key_of(&cid).expect("the tunnel's key");
    assert_eq!(supervisors(&key).len(), 1, "one supervisor");
    let logs = logs_once_they_hold(&lab, &cid, MARKER.trim_end());
    assert!(logs.starts_with(MARKER.trim_end()), "{logs}");
    remove(&lab, &cid);
}

#[test]
fn two_devices_or_a_device_with_wg_enable_false_are_refused_and_leave_nothing() {
    let lab = Lab::new("cdi_refusals");
    lab.write_policy(&two_profiles(&lab));
    lab.install_cdi();
    assert_refused(
        &lab,
        &RunOpts::plain("echo should not run")
            .device("lab")
            .device("vpn")
            .without_hooks_dir(),
        &[
            "choosing a profile: it asked for 2 devices",
            "wg-oci-hook.dev/tunnel=lab and wg-oci-hook.dev/tunnel=vpn",
            "a container has one tunnel",
        ],
    );
    let run = assert_refused(
        &lab,
        &RunOpts::plain("echo should not run")
            .annotation("wg.enable", "false")
            .device("vpn")
            .without_hooks_dir(),
        &["annotation wg.enable=\"false\" contradicts the device wg-oci-hook.dev/tunnel=vpn"],
    );
    assert!(!run.out.stdout.contains("should not run"), "{run}");
    // The rules of a bound profile: another only where the policy lets the container choose.
    let mut policy = two_profiles(&lab);
    policy.allowed_annotations.clear();
    lab.write_policy(&policy);
    assert_refused(
        &lab,
        &RunOpts::plain("echo should not run")
            .annotation("wg.profile", "lab")
            .device("vpn")
            .without_hooks_dir(),
        &["wg.profile"],
    );
}

#[test]
fn install_cdi_follows_the_policy_check_says_when_it_does_not_and_uninstall_removes_it() {
    let lab = Lab::new("cdi_install");
    lab.install_cdi();
    let out = check(&lab);
    assert!(out.success(), "{out}");
    // A profile added to the policy: check names it, until install runs again (which says what it changed).
    lab.write_policy(&two_profiles(&lab));
    let out = check(&lab);
    assert!(!out.success(), "{out}");
    assert!(
        out.stdout.contains(
            "wg-oci-hook.json: profile \"vpn\" has no device; run `wg-oci-hook install cdi` again"
        ),
        "{out}"
    );
    let again = lab.install_cdi();
    assert!(again.stdout.contains("rewrote"), "{again}");
    assert!(check(&lab).success());
    let same = lab.install_cdi();
    assert!(same.stdout.contains("nothing to change"), "{same}");
    // The device of the new profile works at once: engines read the spec at each start.
    let run = lab.podman_run(
        &RunOpts::plain("nc 10.77.0.1 8080 </dev/null")
            .device("vpn")
            .without_hooks_dir(),
    );
    run.assert_success("the new profile's device");
    assert!(run.out.stdout.contains(MARKER.trim_end()), "{run}");
    lab.assert_nothing_left(run.cid());

    let policy = lab.policy_path.to_string_lossy().into_owned();
    let dir = lab.cdi_dir().to_string_lossy().into_owned();
    let out = lab.run(&[
        HOOK_BIN,
        "--policy",
        &policy,
        "uninstall",
        "cdi",
        "--dir",
        &dir,
    ]);
    out.assert_success("uninstall cdi");
    assert!(!lab.cdi_dir().join("wg-oci-hook.json").exists(), "{out}");
    // Without the spec, podman refuses the device (and so the container starts with no network at all).
    let run = lab.podman_run(
        &RunOpts::plain("echo should not run")
            .device("vpn")
            .without_hooks_dir(),
    );
    assert!(!run.success(), "{run}");
    assert!(
        run.out.stderr.contains("wg-oci-hook.dev/tunnel=vpn"),
        "{run}"
    );
}
