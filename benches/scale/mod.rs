//! createRuntime and the daemons' memory against the number of live tunnels (issue 16), for each userspace
//! daemon (the built-in one, wireguard-go). Included by `container_start.rs`:
//!
//! `WG_BENCH_SCALE=1,10,50,100,200 cargo bench --bench container_start`
//!
//! For each level N, each daemon in turn (the first another each level): N tunnels are brought up one after
//! another, each for a stand-in container of its own (a `sleep` with its own netns and mount namespace) and on
//! a profile of its own (its own wg-quick file and key; the lab's server is the peer, the tunnels stay idle),
//! by running the hook directly as `hook_alone` does. With those N up, WG_BENCH_SCALE_PROBES (default 7) more
//! starts are timed, each followed by its poststop (so N stay live); then the N daemons' memory is read from
//! /proc/PID/smaps_rollup: PSS (each page shared by n processes counted 1/n in each, so the binary's pages
//! shared by all the daemons are counted once in the sum) and RSS, summed over the N daemons and divided by
//! N; and, before the timed starts, the CPU the N idle daemons use over 3 s (their timers, which compete
//! with the starts for the CPUs). Then each of the N is stopped (poststop), its sleeper killed, and the lab's leftover
//! checks must pass before the next level. The createRuntime of each of the N bring-up starts, against how
//! many were live before it, goes to `scale_ramp.csv`.
//!
//! Prints a table, whether createRuntime stays flat from the lowest level to the highest (the target:
//! within 20%), and writes `scale.csv` and `scale_ramp.csv` under `target/bench/` (WG_BENCH_OUT to change
//! it). `tools/plot_bench.py` draws them.

use crate::daemons::{self, Daemon, HookRun, Mem, Sleepers};
use crate::lab::Lab;
use std::time::{Duration, Instant};

/// How long the N daemons' and supervisors' idle CPU is measured at each level (clock ticks are 10 ms), unless
/// WG_BENCH_SCALE_IDLE (seconds) says otherwise: a supervisor looks at its tunnel every 10 s, so its idle CPU
/// wants a window of a minute or more.
fn idle_window() -> Duration {
    std::env::var("WG_BENCH_SCALE_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(3), Duration::from_secs)
}

/// One daemon at one level.
struct Level {
    daemon: Daemon,
    live: usize,
    /// The probes' createRuntime and poststop times.
    create: Vec<Duration>,
    poststop: Vec<Duration>,
    /// Summed over the N live daemons.
    mem: Mem,
    /// The CPU the N live daemons used, all together, over `idle_window()` with nothing else of ours running,
    /// as a share of one CPU.
    idle_cpu: f64,
    /// The same for the N tunnels' supervisors (issue 17).
    sup_mem: Mem,
    sup_idle_cpu: f64,
    /// How long the N bring-up starts took, all together.
    bring_up: Duration,
    /// When a bring-up start failed `TRIES` times: which (0-based) and the hook's last error; nothing else was
    /// measured then.
    failed: Option<(usize, String)>,
    /// Every start that failed (and was tried again) or daemon that died, a line each.
    failures: Vec<String>,
    /// The same N stopped, all together.
    tear_down: Duration,
    load1: f64,
}

pub fn run(levels: &[usize]) {
    let probes: usize = std::env::var("WG_BENCH_SCALE_PROBES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    assert!(probes > 0, "WG_BENCH_SCALE_PROBES: at least 1");
    let max = levels.iter().copied().max().unwrap_or(1);
    let start = Instant::now();
    println!(
        "scale: levels {levels:?}, {probes} timed starts each, load average at start {}, \
         fs.inotify.max_user_instances {}",
        daemons::loadavg(),
        daemons::inotify_max_user_instances().map_or("?".to_owned(), |n| n.to_string())
    );
    let lab = Lab::new("bench-scale");
    let compared = daemons::compared();
    if let Some(limit) = daemons::inotify_max_user_instances() {
        let held = daemons::inotify_instances();
        if compared.contains(&Daemon::WireguardGo) && held + max + 1 > limit {
            println!(
                "  note: fs.inotify.max_user_instances is {limit} and {held} inotify instances are held already: each \
                 wireguard-go holds one (its UAPI listener), so root cannot run {max} more (+1 for the timed starts); \
                 its levels will fail where it runs out (sysctl fs.inotify.max_user_instances=1024 lifts it)"
            );
        }
    }
    let mut profiles = daemons::own_key_profiles(&lab, "live", max);
    profiles.extend(daemons::own_key_profiles(&lab, "probe", probes));
    // One policy per daemon, the same profiles in each, all written once: its size is the same at every level.
    let policies: Vec<_> = compared
        .iter()
        .map(|d| d.write_policy(&lab, &profiles))
        .collect();
    let mut results = Vec::new();
    let mut ramp = Vec::new();
    for (l, &live) in levels.iter().enumerate() {
        for i in 0..compared.len() {
            let d = (l + i) % compared.len();
            let (level, level_ramp) = daemons::in_host_ns(&lab, || {
                one_level(&lab, compared[d], &policies[d], live, probes)
            });
            match &level.failed {
                None => eprintln!(
                    "scale: {} with {live} live: createRuntime median {:.1} ms, PSS {:.2} MiB per tunnel",
                    level.daemon.name(),
                    daemons::ms(daemons::median(&level.create)),
                    daemons::mib(level.mem.pss as f64 / live as f64)
                ),
                Some((n, e)) => eprintln!(
                    "scale: {} with {live} live: start {} failed: {e}",
                    level.daemon.name(),
                    n + 1
                ),
            }
            ramp.extend(
                level_ramp
                    .into_iter()
                    .map(|(n, took)| (compared[d], live, n, took)),
            );
            results.push(level);
        }
    }
    results.sort_by_key(|r| (compared.iter().position(|d| *d == r.daemon), r.live));
    print_table(&results, &compared, probes);
    let header = [
        "daemon",
        "live_tunnels",
        "create_ms_median",
        "create_ms_min",
        "create_ms_max",
        "poststop_ms_median",
        "pss_kib_per_tunnel",
        "rss_kib_per_tunnel",
        "pss_kib_total",
        "rss_kib_total",
        "idle_cpu_percent",
        "bring_up_s",
        "tear_down_s",
        "probes",
        "load1",
        "failed_at",
        "failed_starts",
        "supervisor_pss_kib_per_tunnel",
        "supervisor_rss_kib_per_tunnel",
        "supervisor_idle_cpu_percent",
    ];
    let rows: Vec<Vec<String>> = results.iter().map(csv_row).collect();
    let csv = daemons::write_csv("scale.csv", &header, &rows);
    let ramp_rows: Vec<Vec<String>> = ramp
        .iter()
        .map(|(d, level, n, took)| {
            vec![
                d.name().to_owned(),
                level.to_string(),
                n.to_string(),
                format!("{:.2}", daemons::ms(*took)),
            ]
        })
        .collect();
    let ramp_csv = daemons::write_csv(
        "scale_ramp.csv",
        &["daemon", "level", "live_before", "create_ms"],
        &ramp_rows,
    );
    println!(
        "wrote {} and {}; load average at the end {}; took {:.0} s",
        csv.display(),
        ramp_csv.display(),
        daemons::loadavg(),
        start.elapsed().as_secs_f64()
    );
}

/// `live` tunnels of `daemon` up, `probes` timed starts beside them, their memory, all of it down again.
/// Returns the level and, for each bring-up start, (tunnels live before it, its createRuntime).
fn one_level(
    lab: &Lab,
    daemon: Daemon,
    policy: &std::path::Path,
    live: usize,
    probes: usize,
) -> (Level, Vec<(usize, Duration)>) {
    let load1 = daemons::load1();
    let mut sleepers = Sleepers::new(lab);
    let name = daemon.name();
    // Bring-up: `live` tunnels, one after another.
    let mut up: Vec<Started> = Vec::new();
    let mut ramp = Vec::new();
    let mut failed = None;
    let mut failures = Vec::new();
    let bring_up = Instant::now();
    for n in 0..live {
        let id = format!("scale{live}-{name}-{n}-{}", lab.id);
        match start(
            lab,
            &mut sleepers,
            policy,
            &id,
            &format!("live{n}"),
            &mut failures,
        ) {
            Ok(started) => {
                ramp.push((n, started.run.took));
                up.push(started);
            }
            Err(e) => {
                // Whatever limit it met, the rest of this level is not measured; what is up comes down.
                failed = Some((n, e));
                break;
            }
        }
    }
    let bring_up = bring_up.elapsed();
    let (mut create, mut poststop) = (Vec::new(), Vec::new());
    let mut mem = Mem::default();
    let mut idle_cpu = 0.0;
    let mut sup_mem = Mem::default();
    let mut sup_idle_cpu = 0.0;
    if failed.is_none() {
        // The last ones' daemons are still starting their threads: let them settle.
        std::thread::sleep(Duration::from_secs(1));
        // A daemon that died after its start succeeded (the race `start` retries can also end a daemon just
        // after it answered) is noted, its tunnel stopped and another started in its place.
        for (n, slot) in up.iter_mut().enumerate() {
            if daemons::mem(slot.daemon_pid).is_some() {
                continue;
            }
            failures.push(format!(
                "{}: its daemon {} died after the start",
                slot.id, slot.daemon_pid
            ));
            daemons::run_hook(policy, "poststop", &slot.state);
            sleepers.stop(slot.sleeper);
            lab.assert_nothing_left(&slot.id);
            let id = format!("{}-again", slot.id);
            match start(
                lab,
                &mut sleepers,
                policy,
                &id,
                &format!("live{n}"),
                &mut failures,
            ) {
                Ok(started) => *slot = started,
                Err(e) => panic!("{id}: {e}"),
            }
        }
        // Their CPU, idle.
        let cpu = || -> Duration {
            up.iter()
                .filter_map(|s| daemons::cpu_time(s.daemon_pid))
                .sum()
        };
        let sup_cpu = || -> Duration {
            up.iter()
                .filter_map(|s| daemons::cpu_time(s.supervisor_pid))
                .sum()
        };
        let (cpu_before, sup_before, quiet) = (cpu(), sup_cpu(), Instant::now());
        std::thread::sleep(idle_window());
        let window = quiet.elapsed().as_secs_f64();
        idle_cpu = cpu().saturating_sub(cpu_before).as_secs_f64() / window;
        sup_idle_cpu = sup_cpu().saturating_sub(sup_before).as_secs_f64() / window;
        // Probes: one more start at a time, stopped again, so that `live` stay live.
        for k in 0..probes {
            let id = format!("scale{live}-{name}-probe{k}-{}", lab.id);
            let probe = start(
                lab,
                &mut sleepers,
                policy,
                &id,
                &format!("probe{k}"),
                &mut failures,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let p = daemons::run_hook(policy, "poststop", &probe.state);
            create.push(probe.run.took);
            poststop.push(p.took);
            sleepers.stop(probe.sleeper);
            lab.assert_nothing_left(&probe.id);
        }
        // Memory of the `live` daemons, all still there.
        for s in &up {
            mem += daemons::mem(s.daemon_pid)
                .unwrap_or_else(|| panic!("{}: its daemon {} is gone", s.id, s.daemon_pid));
            sup_mem += daemons::mem(s.supervisor_pid)
                .unwrap_or_else(|| panic!("{}: its supervisor {} is gone", s.id, s.supervisor_pid));
        }
        let running = lab.hook_daemons().len();
        assert_eq!(
            running, live,
            "{live} tunnels of {name} up, but {running} hook daemons in the lab's host netns"
        );
    }
    // Down again: poststop each, then the sleepers; nothing may be left.
    let tear_down = Instant::now();
    for s in &up {
        daemons::run_hook(policy, "poststop", &s.state);
    }
    let tear_down = tear_down.elapsed();
    sleepers.stop_all();
    for s in &up {
        lab.assert_nothing_left(&s.id);
    }
    assert!(
        lab.hook_daemons().is_empty(),
        "hook daemons left in the lab's host netns after {live} of {name}: {:?}",
        lab.hook_daemons()
    );
    let level = Level {
        daemon,
        live,
        create,
        poststop,
        mem,
        idle_cpu,
        sup_mem,
        sup_idle_cpu,
        bring_up,
        failed,
        failures,
        tear_down,
        load1,
    };
    (level, ramp)
}

/// How many times a start is tried before its level is given up.
const TRIES: usize = 3;

/// A tunnel up for a stand-in container.
struct Started {
    id: String,
    state: String,
    sleeper: u32,
    daemon_pid: u32,
    supervisor_pid: u32,
    run: HookRun,
}

/// Starts a tunnel for a new stand-in container `id` on `profile`. A start that fails is tried again, with a
/// new container, once the lab's leftover checks pass, up to `TRIES` times, each failure noted in `failures`:
/// a level of 200 is hundreds of starts, and one lost to a rare fault (before 8e180a6, the built-in daemon's
/// descriptor race ended about one start in 500) should be counted, not end the level. Returns the last error
/// when every try failed (a limit, such as wireguard-go's inotify instances).
fn start(
    lab: &Lab,
    sleepers: &mut Sleepers,
    policy: &std::path::Path,
    id: &str,
    profile: &str,
    failures: &mut Vec<String>,
) -> Result<Started, String> {
    let mut last = String::new();
    for attempt in 0..TRIES {
        let id = match attempt {
            0 => id.to_owned(),
            n => format!("{id}-try{}", n + 1),
        };
        let sleeper = sleepers.spawn();
        let state = container(lab, &id, sleeper, profile);
        match daemons::try_run_hook(policy, "create-runtime", &state) {
            Ok(run) => {
                let daemon_pid = run
                    .daemon_pid()
                    .unwrap_or_else(|| panic!("no daemon pid in the hook's log:\n{}", run.log));
                let record: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(lab.record_path(&id)).unwrap())
                        .unwrap();
                let supervisor_pid = record["supervisor"]["pid"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no supervisor in {record}"))
                    as u32;
                return Ok(Started {
                    id,
                    state,
                    sleeper,
                    daemon_pid,
                    supervisor_pid,
                    run,
                });
            }
            Err((status, log)) => {
                eprintln!("scale: {id}: create-runtime failed ({status}), its log:\n{log}");
                last = format!("{id}: {status}: {}", daemons::error_line(&log));
                failures.push(last.clone());
                sleepers.stop(sleeper);
                lab.assert_nothing_left(&id);
            }
        }
    }
    Err(last)
}

/// A stand-in container `id` whose init is `pid`, on `profile`: its OCI state.
fn container(lab: &Lab, id: &str, pid: u32, profile: &str) -> String {
    lab.track_container_id(id);
    let state = lab.fake_state(id, pid, &[("wg.enable", "true"), ("wg.profile", profile)]);
    std::fs::create_dir_all(lab.dir.join(format!("bundle-{id}/rootfs/etc"))).unwrap();
    state
}

fn print_table(results: &[Level], compared: &[Daemon], probes: usize) {
    println!(
        "createRuntime with N tunnels live (median of {probes} starts, min-max; each start stopped again), the N \
         daemons' memory per tunnel (PSS: shared pages split among the processes sharing them; RSS: counted whole \
         in each), and the CPU the N idle daemons use, all together (% of one CPU, over {:.0} s); then the same for \
         the N tunnels' supervisors:",
        idle_window().as_secs_f64()
    );
    println!(
        "  {:<13} {:>5} {:>12} {:>17} {:>10} {:>14} {:>14} {:>9} {:>10} {:>9} {:>6}",
        "daemon",
        "N",
        "createRuntime",
        "min-max",
        "poststop",
        "PSS/tunnel",
        "RSS/tunnel",
        "N idle",
        "bring-up",
        "teardown",
        "load1"
    );
    for r in results {
        let n = r.live as f64;
        if let Some((k, e)) = &r.failed {
            println!(
                "  {:<13} {:>5}   start {} of {} failed, after {:.1} s: {e}",
                r.daemon.name(),
                r.live,
                k + 1,
                r.live,
                r.bring_up.as_secs_f64()
            );
            continue;
        }
        println!(
            "  {:<13} {:>5} {:>9.1} ms {:>17} {:>7.1} ms {:>10.2} MiB {:>10.2} MiB {:>7.1} % {:>8.1} s {:>7.1} s {:>6.2}",
            r.daemon.name(),
            r.live,
            daemons::ms(daemons::median(&r.create)),
            format!(
                "{:.1}-{:.1}",
                daemons::ms(*r.create.iter().min().unwrap()),
                daemons::ms(*r.create.iter().max().unwrap())
            ),
            daemons::ms(daemons::median(&r.poststop)),
            daemons::mib(r.mem.pss as f64 / n),
            daemons::mib(r.mem.rss as f64 / n),
            r.idle_cpu * 100.0,
            r.bring_up.as_secs_f64(),
            r.tear_down.as_secs_f64(),
            r.load1
        );
        println!(
            "  {:<13} {:>5}   supervisors: PSS {:.2} MiB, RSS {:.2} MiB per tunnel; {:.2} % of one CPU for all {} idle",
            "",
            "",
            daemons::mib(r.sup_mem.pss as f64 / n),
            daemons::mib(r.sup_mem.rss as f64 / n),
            r.sup_idle_cpu * 100.0,
            r.live
        );
    }
    for &daemon in compared {
        let mine: Vec<&Level> = results
            .iter()
            .filter(|r| r.daemon == daemon && r.failed.is_none())
            .collect();
        let (Some(low), Some(high)) = (mine.first(), mine.last()) else {
            continue;
        };
        if low.live == high.live {
            continue;
        }
        let (a, b) = (
            daemons::median(&low.create).as_secs_f64(),
            daemons::median(&high.create).as_secs_f64(),
        );
        let change = (b / a - 1.0) * 100.0;
        println!(
            "  {}: createRuntime {:.1} ms with {} live, {:.1} ms with {} live: {:+.0}%, {} (target: within 20%)",
            daemon.name(),
            a * 1e3,
            low.live,
            b * 1e3,
            high.live,
            change,
            if change.abs() <= 20.0 {
                "flat"
            } else {
                "NOT flat"
            }
        );
    }
    let failures: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.failures
                .iter()
                .map(move |f| format!("{} at {}: {f}", r.daemon.name(), r.live))
        })
        .collect();
    if !failures.is_empty() {
        let starts: usize = results.iter().map(|r| r.live + r.create.len()).sum();
        println!(
            "  {} failures among about {starts} starts, each tried again with a new container (up to {TRIES} times):",
            failures.len()
        );
        for f in failures {
            println!("    {f}");
        }
    }
}

/// `r` as a row of scale.csv (a failed level has only its daemon, N, times of its bring-up and `failed_at`).
fn csv_row(r: &Level) -> Vec<String> {
    let n = r.live as f64;
    let measured = |f: &dyn Fn() -> String| {
        if r.failed.is_none() {
            f()
        } else {
            String::new()
        }
    };
    vec![
        r.daemon.name().to_owned(),
        r.live.to_string(),
        measured(&|| format!("{:.2}", daemons::ms(daemons::median(&r.create)))),
        measured(&|| format!("{:.2}", daemons::ms(*r.create.iter().min().unwrap()))),
        measured(&|| format!("{:.2}", daemons::ms(*r.create.iter().max().unwrap()))),
        measured(&|| format!("{:.2}", daemons::ms(daemons::median(&r.poststop)))),
        measured(&|| format!("{:.0}", r.mem.pss as f64 / n)),
        measured(&|| format!("{:.0}", r.mem.rss as f64 / n)),
        measured(&|| r.mem.pss.to_string()),
        measured(&|| r.mem.rss.to_string()),
        measured(&|| format!("{:.2}", r.idle_cpu * 100.0)),
        format!("{:.2}", r.bring_up.as_secs_f64()),
        format!("{:.2}", r.tear_down.as_secs_f64()),
        r.create.len().to_string(),
        format!("{:.2}", r.load1),
        r.failed
            .as_ref()
            .map(|(k, _)| (k + 1).to_string())
            .unwrap_or_default(),
        r.failures.len().to_string(),
        measured(&|| format!("{:.0}", r.sup_mem.pss as f64 / n)),
        measured(&|| format!("{:.0}", r.sup_mem.rss as f64 / n)),
        measured(&|| format!("{:.3}", r.sup_idle_cpu * 100.0)),
    ]
}
