//! What the hook costs a container start, measured on the real thing (root, podman, runc, wireguard-go).
//!
//! `cargo bench --bench container_start` prints, from one run:
//! - the hook alone: wall time of `wg-oci-hook create-runtime` and of `poststop` for a process in its own
//!   netns (userspace backend), run from a thread inside the lab's host netns;
//! - a whole container: `podman run --rm ... true` with and without `wg.enable=true`, interleaved so that
//!   drift hits both alike; medians and their ratio.
//!
//! Set WG_BENCH_ROUNDS to change the number of rounds (default 21).

#[path = "../tests/lab/mod.rs"]
mod lab;

use lab::{Lab, RunOpts, HOOK_BIN};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing we need to run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("WG_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let lab = Lab::new("bench");
    let (create, poststop) = hook_alone(&lab, rounds);
    let (plain, tunnel) = podman_runs(&lab, rounds);
    println!("rounds: {rounds} (one run; medians)");
    println!("hook create-runtime (userspace backend): {}", ms(create));
    println!("hook poststop:                           {}", ms(poststop));
    println!("podman run --rm without the hook:        {}", ms(plain));
    println!("podman run --rm with wg.enable=true:     {}", ms(tunnel));
    println!(
        "ratio with/without: {:.2} (+{})",
        tunnel.as_secs_f64() / plain.as_secs_f64(),
        ms(tunnel.saturating_sub(plain))
    );
}

/// Runs the hook binary the way runc does (state on stdin, empty environment) against a process that has
/// a netns of its own, from a thread that entered the lab's host netns (so no nsenter is timed).
fn hook_alone(lab: &Lab, rounds: usize) -> (Duration, Duration) {
    let host_ns =
        std::fs::File::open(format!("/var/run/netns/{}", lab.host_ns)).expect("lab host netns");
    let policy = lab.policy_path.clone();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&host_ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the lab");
            let (mut create, mut poststop) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                let container = lab.spawn_netns_sleeper();
                let id = format!("bench{round}");
                let state = lab.fake_state(&id, container, &[("wg.enable", "true")]);
                create.push(time_hook("create-runtime", &policy, &state));
                poststop.push(time_hook("poststop", &policy, &state));
            }
            (median(&mut create), median(&mut poststop))
        })
        .join()
        .expect("bench thread")
    })
}

fn time_hook(stage: &str, policy: &std::path::Path, state: &str) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(HOOK_BIN)
        .args([stage, "--policy"])
        .arg(policy)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hook");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(state.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{stage} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn podman_runs(lab: &Lab, rounds: usize) -> (Duration, Duration) {
    let (mut plain, mut tunnel) = (Vec::new(), Vec::new());
    // One warm-up of each, not counted: podman's first run in a fresh root initialises its storage.
    for counted in std::iter::once(false).chain(std::iter::repeat(true).take(rounds)) {
        for with_hook in [false, true] {
            let opts = if with_hook {
                RunOpts::wg("true")
            } else {
                RunOpts::plain("true")
            };
            let start = Instant::now();
            let out = lab.podman_run(&opts);
            let took = start.elapsed();
            out.assert_success(if with_hook {
                "podman run with the hook"
            } else {
                "podman run"
            });
            if counted {
                if with_hook {
                    tunnel.push(took)
                } else {
                    plain.push(took)
                }
            }
        }
    }
    (median(&mut plain), median(&mut tunnel))
}
