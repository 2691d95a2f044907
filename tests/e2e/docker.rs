//! wg-oci-runtime end to end: a real dockerd 20.10 (started by the lab in its own netns, with its own containerd,
//! data-root, exec-root and socket; see `tests/lab/docker.rs`) and podman with `--runtime` and no hooks.d, both
//! running our hook only through the wrapper, against the lab's WireGuard server. Needs root, docker.io, podman,
//! runc, wireguard-go, tcpdump, busybox-static; fails (never skips) without them.

use crate::lab::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A dockerd with two wrapper runtimes: `wg-lab` binds the lab's profile (for Docker before 24, which has no
/// `--annotation`), `wg` enables only annotated containers.
fn dockerd(lab: &Lab) -> (Dockerd, String) {
    dockerd_with(lab, &[("wg-lab", "lab")])
}

/// A dockerd with, for each (runtime name, profile) of `bound`, a wrapper runtime with runtimeArgs
/// `--wg-profile=PROFILE` (what `wg-oci-hook install docker --profile PROFILE` registers), then `wg`, which
/// enables only annotated containers; all with the lab's policy and the built hook. Returns it and the lab's
/// busybox image.
fn dockerd_with(lab: &Lab, bound: &[(&str, &str)]) -> (Dockerd, String) {
    let policy = format!("--wg-policy={}", lab.policy_path.display());
    let hook = format!("--wg-hook={HOOK_BIN}");
    let profiles: Vec<String> = bound
        .iter()
        .map(|(_, profile)| format!("--wg-profile={profile}"))
        .collect();
    let bound_args: Vec<[&str; 3]> = profiles
        .iter()
        .map(|profile| [profile.as_str(), policy.as_str(), hook.as_str()])
        .collect();
    let plain = [policy.as_str(), hook.as_str()];
    let mut runtimes: Vec<(&str, &str, &[&str])> = bound
        .iter()
        .zip(&bound_args)
        .map(|((name, _), args)| (*name, WRAPPER_BIN, &args[..]))
        .collect();
    runtimes.push(("wg", WRAPPER_BIN, &plain));
    let d = lab.start_dockerd(&runtimes);
    let image = d.import_busybox(lab);
    (d, image)
}

fn cidfile(lab: &Lab, name: &str) -> PathBuf {
    lab.dir.join(format!("{name}.cid"))
}

fn read_cid(lab: &Lab, path: &PathBuf) -> String {
    let cid = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned();
    lab.track_container_id(&cid);
    cid
}

/// `docker run (--rm | -d) --cidfile ... --runtime RUNTIME --network none IMAGE COMMAND...`, which must succeed;
/// returns its output and the container id.
fn docker_run(
    lab: &Lab,
    d: &Dockerd,
    image: &str,
    runtime: &str,
    detach: bool,
    command: &[&str],
) -> (CmdOutput, String) {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let cidf = cidfile(lab, &format!("run-{}", RUNS.fetch_add(1, Ordering::SeqCst)));
    let cidf_arg = cidf.to_string_lossy().into_owned();
    let mut args = vec![
        "run",
        if detach { "-d" } else { "--rm" },
        "--cidfile",
        &cidf_arg,
        "--runtime",
        runtime,
        "--network",
        "none",
        image,
    ];
    args.extend_from_slice(command);
    let out = d.docker(&args);
    out.assert_success(&format!("docker run --runtime {runtime}"));
    let cid = read_cid(lab, &cidf);
    (out, cid)
}

#[test]
fn docker_run_with_a_profile_bound_runtime_gets_the_tunnel_from_its_first_command() {
    let lab = Lab::new("docker_first_packet");
    let (d, image) = dockerd(&lab);
    let (out, cid) = docker_run(
        &lab,
        &d,
        &image,
        "wg-lab",
        false,
        &["/bin/sh", "-c", TUNNEL_PROBE],
    );
    assert!(
        out.stdout.contains(MARKER.trim_end()),
        "no answer through the tunnel\n{out}"
    );
    let peers = lab.responder_peer_ips();
    assert_eq!(
        peers,
        [CLIENT_TUNNEL_V4],
        "the server saw the container's tunnel address"
    );
    lab.assert_nothing_left(&cid);
}

#[test]
fn docker_rm_f_tears_the_tunnel_down() {
    let lab = Lab::new("docker_rm_f");
    let (d, image) = dockerd(&lab);
    let (_, cid) = docker_run(&lab, &d, &image, "wg-lab", true, &["sleep", "600"]);
    d.docker(&["exec", &cid, "/bin/sh", "-c", TUNNEL_PROBE])
        .assert_success("the tunnel of a running container");
    assert!(
        lab.wait_for_record(&cid).is_some(),
        "no state record while it runs"
    );
    assert!(
        !lab.leftovers(&cid).is_empty(),
        "a running tunnel should show in the lab's leftovers check"
    );
    d.docker(&["rm", "-f", &cid]).assert_success("docker rm -f");
    lab.assert_nothing_left(&cid);
}

#[test]
fn docker_runtime_without_a_profile_leaves_unannotated_containers_alone() {
    let lab = Lab::new("docker_untouched");
    let (d, image) = dockerd(&lab);
    let (out, cid) = docker_run(
        &lab,
        &d,
        &image,
        "wg",
        false,
        &["/bin/sh", "-c", "ip -o link; echo BEGIN; ls /sys/class/net"],
    );
    let after = out.stdout.split("BEGIN").nth(1).unwrap_or_default();
    let links: Vec<&str> = after.split_whitespace().collect();
    assert_eq!(links, ["lo"], "the container got more than lo\n{out}");
    assert!(!lab.record_path(&cid).exists());
    lab.assert_nothing_left(&cid);
}

/// The README's Docker setup with a PIA profile: a runtime registered with `--wg-profile=pia` (as `wg-oci-hook
/// install docker --profile pia` would add it), a policy whose `pia` profile points at the lab's PIA-compatible
/// server. The hook, run by runc under dockerd's containerd, gets a token and the signed server list and
/// registers a key with addKey before the workload starts; its first instruction goes through that tunnel.
#[test]
fn docker_container_on_a_pia_profile_reaches_the_lab_through_its_registered_tunnel() {
    const PIA_PROBE: &str = "set -e
ping -c 1 -W 2 10.77.0.1
nc -w 2 10.77.0.1 8080 </dev/null
echo BEGIN addr; ip -o -4 addr show dev wg0; echo END addr";
    let lab = Lab::new("docker_pia");
    let pia = PiaLab::start(&lab);
    lab.write_policy(&pia.policy(&lab, &[]));
    let (d, image) = dockerd_with(&lab, &[("wg-pia", "pia")]);
    let (out, cid) = docker_run(
        &lab,
        &d,
        &image,
        "wg-pia",
        false,
        &["/bin/sh", "-c", PIA_PROBE],
    );
    assert!(
        out.stdout.contains(MARKER.trim_end()),
        "no answer through the PIA tunnel\n{out}"
    );
    pia.assert_registered_on_first_try(&lab, "laba401", &out.stdout);
    for (what, text) in [
        (
            "docker run's output",
            format!("{}\n{}", out.stdout, out.stderr),
        ),
        ("dockerd's log", d.log()),
    ] {
        assert!(
            !text.contains(PIA_PASSWORD),
            "{what} holds the PIA password"
        );
        for token in pia.tokens_issued() {
            assert!(!text.contains(&token), "{what} holds a PIA token");
        }
    }
    // `--rm`: docker removed the container; should it still be listed, remove it by force.
    let listed = d.docker(&["ps", "-aq", "--no-trunc", "--filter", &format!("id={cid}")]);
    listed.assert_success("docker ps -a");
    if listed.stdout.contains(&cid) {
        d.docker(&["rm", "-f", &cid]).assert_success("docker rm -f");
    }
    lab.assert_nothing_left(&cid);
}

/// Docker 28 attaches networks after the runtime's create, that is after our hook (20.10 does it before, so
/// the test does by hand what libnetwork would): the late default routes neither win nor leak.
#[test]
fn docker_network_attached_after_the_hook_carries_nothing() {
    let lab = Lab::new("docker_late_network");
    let (d, image) = dockerd(&lab);
    let (_, cid) = docker_run(&lab, &d, &image, "wg-lab", true, &["sleep", "600"]);
    let pid = d.docker(&["inspect", "-f", "{{.State.Pid}}", &cid]);
    pid.assert_success("docker inspect");
    let capture = lab.attach_late_network(pid.stdout.trim());
    let probes = d.docker(&[
        "exec",
        &cid,
        "/bin/sh",
        "-c",
        &leak_probe_script(&LATE_TARGETS),
    ]);
    let tunnel = d.docker(&["exec", &cid, "/bin/sh", "-c", TUNNEL_PROBE]);
    d.docker(&["rm", "-f", &cid]).assert_success("docker rm -f");
    let packets = capture.stop().not_from_capture_iface().ip_only();
    assert!(
        packets.is_empty(),
        "the late network carried packets from the container:\n{packets}\n{probes}"
    );
    assert!(
        tunnel.stdout.contains(MARKER.trim_end()),
        "the tunnel stopped working once another default route appeared\n{tunnel}"
    );
    lab.assert_nothing_left(&cid);
}

/// podman with `--runtime <wrapper>` and an empty hooks dir: the hooks come only from the wrapper. podman passes
/// `--log-format=json` only to runtimes whose file is named like one it knows, so the wrapper is called through
/// a script named `runc` (what the README suggests for fixed options, too).
#[test]
fn podman_through_the_wrapper_without_hooks_d() {
    let lab = Lab::new("podman_wrapper");
    let bin = lab.dir.join("wrapper-bin");
    fs::create_dir_all(&bin).unwrap();
    let script = bin.join("runc");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {WRAPPER_BIN} --wg-policy={} --wg-hook={HOOK_BIN} \"$@\"\n",
            lab.policy_path.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let run = lab.podman_run(&RunOpts::wg(TUNNEL_PROBE).via(&script));
    run.assert_success("podman --runtime wrapper");
    assert!(
        run.out.stdout.contains(MARKER.trim_end()),
        "no answer through the tunnel\n{run}"
    );
    let cid = run.cid().to_owned();
    // The record's removal (poststop) can trail podman's exit by a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.record_path(&cid).exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    lab.assert_nothing_left(&cid);
}
