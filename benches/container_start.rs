//! What the hook costs a container start, measured on the real thing (root, podman, runc, wireguard-go).
//!
//! `cargo bench --bench container_start` prints, from one run:
//! - the hook alone: wall time of `wg-oci-hook create-runtime` and of `poststop` for a process in its own
//!   netns (userspace backend), run from a thread inside the lab's host netns;
//! - a whole container: `podman run --rm ... true` with and without `wg.enable=true`, interleaved so that
//!   drift hits both alike; medians and their ratio;
//! - the same two with a PIA profile against the lab's PIA server (`tests/lab/pia.rs`), token and server list
//!   cached as they are after the first start: what each start adds is one addKey over HTTPS; and the hook
//!   alone with port forwarding (the first getSignature and bindPort through the tunnel, and the helper).
//!
//! `WG_BENCH_PARALLEL=1,50 cargo bench --bench container_start` measures instead where N createRuntime runs at
//! once wait (`parallel/mod.rs`).
//!
//! Set WG_BENCH_ROUNDS to change the number of rounds (default 21). Set WG_BENCH_BASELINE_HOOK to another
//! build of wg-oci-hook to time it on the static profile too, interleaved with this one. Set WG_BENCH_HOOK_ONLY=1
//! to stop after the hook alone on the static profile (a quick A/B of two builds), WG_BENCH_SHOW_LOG=1 to see
//! each hook run's log (the lab's policy logs at debug level, with each step's time).

#[path = "../tests/lab/mod.rs"]
mod lab;
mod parallel;

use lab::{Lab, PiaLab, RunOpts, HOOK_BIN};
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
    // WG_BENCH_PARALLEL=1,50: where parallel starts wait (see `parallel/mod.rs`), instead of the rest.
    if let Ok(levels) = std::env::var("WG_BENCH_PARALLEL") {
        let levels: Vec<usize> = levels
            .split(',')
            .map(|l| l.trim().parse().expect("WG_BENCH_PARALLEL: numbers"))
            .collect();
        parallel::run(&levels);
        return;
    }
    let rounds: usize = std::env::var("WG_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let lab = Lab::new("bench");
    let baseline = std::env::var_os("WG_BENCH_BASELINE_HOOK").map(std::path::PathBuf::from);
    let hooks: Vec<&std::path::Path> = std::iter::once(std::path::Path::new(HOOK_BIN))
        .chain(baseline.as_deref())
        .collect();
    let static_hook = hook_alone(&lab, rounds, &hooks);
    if std::env::var_os("WG_BENCH_HOOK_ONLY").is_some() {
        print_hook_alone(rounds, &static_hook);
        return;
    }
    let (plain, tunnel) = podman_runs(&lab, rounds);

    let pia = PiaLab::start(&lab);
    lab.write_policy(&pia.policy(&lab, &[]));
    let pia_hook = hook_alone(&lab, rounds, &hooks[..1]);
    let (pia_plain, pia_tunnel) = podman_runs(&lab, rounds);
    let forwarding = pia.policy(&lab, &[("port_forwarding", "true")]);
    lab.write_policy(&forwarding);
    let pf_hook = hook_alone(&lab, rounds, &hooks[..1]);
    let stats = pia.stats();

    print_hook_alone(rounds, &static_hook);
    println!("  podman run --rm without the hook:      {}", ms(plain));
    println!("  podman run --rm with wg.enable=true:   {}", ms(tunnel));
    println!(
        "  ratio with/without: {:.2} (+{})",
        tunnel.as_secs_f64() / plain.as_secs_f64(),
        ms(tunnel.saturating_sub(plain))
    );
    println!("PIA profile (token and server list cached; one addKey per start):");
    println!(
        "  hook create-runtime:                   {}",
        ms(pia_hook[0].0)
    );
    println!(
        "  hook poststop:                         {}",
        ms(pia_hook[0].1)
    );
    println!("  podman run --rm without the hook:      {}", ms(pia_plain));
    println!(
        "  podman run --rm with wg.enable=true:   {}",
        ms(pia_tunnel)
    );
    println!(
        "  ratio with/without: {:.2} (+{})",
        pia_tunnel.as_secs_f64() / pia_plain.as_secs_f64(),
        ms(pia_tunnel.saturating_sub(pia_plain))
    );
    println!(
        "  with port forwarding, hook create-runtime: {}",
        ms(pf_hook[0].0)
    );
    println!(
        "  with port forwarding, hook poststop:       {}",
        ms(pf_hook[0].1)
    );
    println!(
        "  lab server saw: {} token, {} list, {} addKey, {} getSignature requests",
        stats.token_requests,
        stats.list_requests,
        stats.add_key.len(),
        stats.get_signature
    );
}

/// The hook alone on the static profile: this build, and the baseline's if there is one.
fn print_hook_alone(rounds: usize, static_hook: &[(Duration, Duration)]) {
    println!("rounds: {rounds} (one run; medians)");
    println!("static profile (userspace backend):");
    println!(
        "  hook create-runtime:                   {}",
        ms(static_hook[0].0)
    );
    println!(
        "  hook poststop:                         {}",
        ms(static_hook[0].1)
    );
    if let Some((create, poststop)) = static_hook.get(1) {
        println!(
            "  baseline hook create-runtime:          {} (this build / baseline: {:.2})",
            ms(*create),
            static_hook[0].0.as_secs_f64() / create.as_secs_f64()
        );
        println!(
            "  baseline hook poststop:                {} (this build / baseline: {:.2})",
            ms(*poststop),
            static_hook[0].1.as_secs_f64() / poststop.as_secs_f64()
        );
    }
}

/// Runs the hook binary the way runc does (state on stdin, empty environment) against a process that has
/// a netns of its own, from a thread that entered the lab's host netns (so no nsenter is timed).
/// Returns (create-runtime, poststop) medians for each of `hooks`, run in turn on every round.
fn hook_alone(lab: &Lab, rounds: usize, hooks: &[&std::path::Path]) -> Vec<(Duration, Duration)> {
    let host_ns =
        std::fs::File::open(format!("/var/run/netns/{}", lab.host_ns)).expect("lab host netns");
    let policy = lab.policy_path.clone();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&host_ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the lab");
            let mut samples = vec![(Vec::new(), Vec::new()); hooks.len()];
            for round in 0..rounds {
                // Alternate which build goes first: the second of two runs in a row is quicker (caches, the
                // first one's leftovers being reaped), which was a 14% bias on poststop in an A/A run.
                let order: Vec<usize> = if round % 2 == 0 {
                    (0..hooks.len()).collect()
                } else {
                    (0..hooks.len()).rev().collect()
                };
                for n in order {
                    let hook = hooks[n];
                    let container = lab.spawn_netns_sleeper();
                    let id = format!("bench{round}-{n}-{}", lab.id);
                    let state = lab.fake_state(&id, container, &[("wg.enable", "true")]);
                    std::fs::create_dir_all(lab.dir.join(format!("bundle-{id}/rootfs/run")))
                        .unwrap();
                    samples[n]
                        .0
                        .push(time_hook(hook, "create-runtime", &policy, &state));
                    samples[n]
                        .1
                        .push(time_hook(hook, "poststop", &policy, &state));
                }
            }
            samples
                .iter_mut()
                .map(|(create, poststop)| (median(create), median(poststop)))
                .collect()
        })
        .join()
        .expect("bench thread")
    })
}

fn time_hook(
    hook: &std::path::Path,
    stage: &str,
    policy: &std::path::Path,
    state: &str,
) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(hook)
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
    if std::env::var_os("WG_BENCH_SHOW_LOG").is_some() {
        eprintln!(
            "--- {} {stage}:\n{}",
            hook.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
    for counted in std::iter::once(false).chain(std::iter::repeat_n(true, rounds)) {
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
