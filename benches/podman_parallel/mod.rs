//! N podman containers started at once, with and without the hook: the issue's "50 parallel starts at most
//! 1.3x the same 50 without the hook". Included by `container_start.rs`:
//!
//! `WG_BENCH_PODMAN_PARALLEL=50 cargo bench --bench container_start`
//!
//! Each round starts N `podman run --rm --network none ... true` at once (released together by a barrier) and
//! times until the last one has exited, once with `wg.enable=true` (a pool of N wg-quick files: a static
//! profile serves one netns, a pool one lease each) and once without; the two take turns going first, round by
//! round (WG_BENCH_PODMAN_PARALLEL_ROUNDS, default 3). Prints the median wall time of each and their ratio.

use crate::lab::{Lab, LabPool, RunOpts};
use std::sync::Barrier;
use std::time::{Duration, Instant};

fn wave(lab: &Lab, n: usize, with_hook: bool) -> Duration {
    let barrier = Barrier::new(n);
    let start = std::sync::Mutex::new(None::<Instant>);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    start.lock().unwrap().get_or_insert_with(Instant::now);
                    let opts = if with_hook {
                        RunOpts::wg("true")
                    } else {
                        RunOpts::plain("true")
                    };
                    let out = lab.podman_run(&opts);
                    out.assert_success(if with_hook {
                        "podman run with the hook, in a wave"
                    } else {
                        "podman run, in a wave"
                    });
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a podman run thread");
        }
    });
    let started = start.lock().unwrap().expect("a start");
    started.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub fn run(n: usize) {
    let rounds: usize = std::env::var("WG_BENCH_PODMAN_PARALLEL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let lab = Lab::new("bench-podman-parallel");
    let pool: LabPool = lab.write_pool("pool", n);
    let mut policy = lab.policy();
    policy.default_profile = "pool".into();
    policy.profiles.push(pool.profile("pool"));
    lab.write_policy(&policy);
    // One of each first, not counted: podman's first runs in a fresh root set up its storage.
    wave(&lab, 2, false);
    wave(&lab, 2, true);
    let (mut plain, mut tunnel) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for with_hook in [round % 2 == 0, round % 2 != 0] {
            let took = wave(&lab, n, with_hook);
            if with_hook {
                tunnel.push(took)
            } else {
                plain.push(took)
            }
        }
    }
    let (plain, tunnel) = (median(plain), median(tunnel));
    println!(
        "{n} podman run --rm --network none ... true at once, {rounds} rounds (medians, one run):"
    );
    println!(
        "  without the hook:        {:.0} ms",
        plain.as_secs_f64() * 1e3
    );
    println!(
        "  with wg.enable=true:     {:.0} ms (a pool of {n} wg-quick files, built-in userspace daemon)",
        tunnel.as_secs_f64() * 1e3
    );
    println!(
        "  ratio with/without: {:.2}",
        tunnel.as_secs_f64() / plain.as_secs_f64()
    );
}
