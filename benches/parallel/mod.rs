//! Where parallel starts wait: the hook's createRuntime run N at once, directly (no engine), against N
//! processes that each have a network and mount namespace of their own, each container on a profile of its own
//! (its own wg-quick file and private key, the lab's server as peer: the peer need not answer for a start to
//! succeed). Included by `container_start.rs`:
//!
//! `WG_BENCH_PARALLEL=1,50 cargo bench --bench container_start`
//!
//! runs, for each level N, WG_BENCH_PARALLEL_ROUNDS rounds (default 3; at level 1, 15 starts one after another)
//! and prints per-step medians and maxima, taken from the hook's own `log_level = "debug"` lines, each stamped
//! as it arrives on the hook's stderr, and the CPU the machine spent over the round (/proc/stat) and the
//! daemons spent by the end of it (/proc/PID/stat). WG_BENCH_STRACE=DIR also runs one hook of each parallel
//! round (the first at level 1) under `strace -tt -T` (the main thread: its netlink calls) into DIR;
//! with WG_BENCH_STRACE_ALL=1, every hook of those rounds, tracing only sendto (netlink requests) with
//! seccomp-bpf, to time each request at that level. WG_BENCH_USERSPACE_COMMAND replaces `wireguard-go` in the policy
//! (e.g. `env GOMAXPROCS=1 wireguard-go`). WG_BENCH_BASELINE_HOOK=PATH runs another build of wg-oci-hook too,
//! round by round in turn with this one, and reports both.

use crate::lab::{self, Lab, LabProfile};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// One hook run: when each of its stderr lines arrived, and when it ended (all since its spawn).
struct Run {
    lines: Vec<(Duration, String)>,
    total: Duration,
    daemon_pid: Option<u32>,
    /// The hook's threads, summed, just before it exits: (on a CPU, runnable but waiting for one), from
    /// /proc/PID/task/*/schedstat; and the main thread's alone.
    sched: (Duration, Duration),
    main_sched: (Duration, Duration),
}

/// The steps, as (name, the line that ends it). A step starts where the one before it ended.
const STEPS: &[(&str, &str)] = &[
    ("exec, policy, checks, profile, netlink", "(fork and exec)"),
    ("daemon wait (socket)", " connect attempts"),
    ("UAPI configure", "configuration accepted"),
    ("MTU, move, lo/addr/up, nftables", "nftables table loaded"),
    ("routes, resolv.conf, record", " up ("),
    ("to exit", "\u{0}end"),
];

pub fn run(levels: &[usize]) {
    let rounds: usize = std::env::var("WG_BENCH_PARALLEL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let max = levels.iter().copied().max().unwrap_or(1);
    let lab = Lab::new("bench-parallel");
    let mut policy = lab.policy();
    if let Ok(command) = std::env::var("WG_BENCH_USERSPACE_COMMAND") {
        policy.userspace_command = command.split_whitespace().map(String::from).collect();
    }
    for n in 0..max {
        let mut config = lab.client_config();
        config.private_key = genkey();
        let path = lab.write_file(&format!("p{n}.conf"), &config.render(), 0o600);
        policy
            .profiles
            .push(LabProfile::new(&format!("p{n}"), path));
    }
    lab.write_policy(&policy);
    let strace_dir = std::env::var_os("WG_BENCH_STRACE").map(std::path::PathBuf::from);
    let baseline = std::env::var_os("WG_BENCH_BASELINE_HOOK").map(std::path::PathBuf::from);
    let hooks: Vec<std::path::PathBuf> = std::iter::once(lab::HOOK_BIN.into())
        .chain(baseline)
        .collect();
    for &level in levels {
        let (rounds, size) = if level == 1 {
            (rounds * 5, 1)
        } else {
            (rounds, level)
        };
        let mut stats: Vec<Stats> = hooks.iter().map(|_| Stats::default()).collect();
        for round in 0..rounds {
            // Each build in turn, so that the machine's other load hits all alike.
            for (h, hook_bin) in hooks.iter().enumerate() {
                let strace = strace_dir
                    .as_deref()
                    .filter(|_| round == 0 && h == 0)
                    .map(|d| d.join(format!("create-{level}-{round}.strace")));
                let (round_runs, busy, wall, post, ticks) =
                    one_round(&lab, hook_bin, round * hooks.len() + h, size, strace);
                let st = &mut stats[h];
                st.daemon_cpu.extend(ticks);
                // A run under strace is slow and waits for its daemon: left out.
                st.runs.extend(
                    round_runs
                        .into_iter()
                        .filter(|r| r.sched.0 > Duration::ZERO),
                );
                st.cpu.push(busy);
                st.walls.push(wall);
                st.poststops.push(post);
                // The poststops stopped the daemons: let their netns go before the next round.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        for (hook_bin, st) in hooks.iter().zip(&stats) {
            println!("hook: {}", hook_bin.display());
            report(
                level,
                &st.runs,
                &st.cpu,
                &st.walls,
                &st.daemon_cpu,
                &st.poststops,
            );
        }
    }
}

/// One build's rounds at one level.
#[derive(Default)]
struct Stats {
    runs: Vec<Run>,
    cpu: Vec<f64>,
    walls: Vec<Duration>,
    daemon_cpu: Vec<u64>,
    poststops: Vec<Duration>,
}

fn genkey() -> String {
    let out = Command::new("wg")
        .arg("genkey")
        .output()
        .expect("wg genkey");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `size` hooks at once; returns their runs, the machine's busy share over the round (0..=1 of all CPUs),
/// the round's wall time, the wall time of the `size` poststops run at once afterwards, and the CPU ticks each
/// daemon had used when the round ended.
fn one_round(
    lab: &Lab,
    hook_bin: &std::path::Path,
    round: usize,
    size: usize,
    strace: Option<std::path::PathBuf>,
) -> (Vec<Run>, f64, Duration, Duration, Vec<u64>) {
    let mut states = Vec::new();
    for n in 0..size {
        let pid = lab.spawn_netns_sleeper();
        let id = format!("par{size}-{round}-{n}-{}", lab.id);
        lab.track_container_id(&id);
        let state = lab.fake_state(
            &id,
            pid,
            &[("wg.enable", "true"), ("wg.profile", &format!("p{n}"))],
        );
        std::fs::create_dir_all(lab.dir.join(format!("bundle-{id}/rootfs/etc"))).unwrap();
        states.push(state);
    }
    let host_ns = format!("/var/run/netns/{}", lab.host_ns);
    let policy = lab.policy_path.clone();
    let barrier = Arc::new(Barrier::new(size));
    let cpu_before = cpu_stat();
    let start = Instant::now();
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = states
            .iter()
            .enumerate()
            .map(|(n, state)| {
                let (barrier, host_ns, policy) = (barrier.clone(), &host_ns, &policy);
                let all = std::env::var_os("WG_BENCH_STRACE_ALL").is_some();
                let strace = strace
                    .as_ref()
                    .filter(|_| all || n == size / 2)
                    .map(|p| p.with_extension(format!("{n}.strace")));
                s.spawn(move || {
                    let ns = std::fs::File::open(host_ns).unwrap();
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    barrier.wait();
                    hook(hook_bin, policy, "create-runtime", state, strace.as_ref())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed();
    let busy = cpu_busy(cpu_before, cpu_stat());
    let ticks = runs
        .iter()
        .filter_map(|r| cpu_ticks(r.daemon_pid?))
        .collect();
    let barrier = Arc::new(Barrier::new(size));
    let post_start = Instant::now();
    std::thread::scope(|s| {
        for state in &states {
            let (barrier, host_ns, policy) = (barrier.clone(), &host_ns, &policy);
            s.spawn(move || {
                let ns = std::fs::File::open(host_ns).unwrap();
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                barrier.wait();
                hook(hook_bin, policy, "poststop", state, None);
            });
        }
    });
    (runs, busy, wall, post_start.elapsed(), ticks)
}

/// Runs the hook as runc does (state on stdin, empty environment), stamping each stderr line as it arrives.
fn hook(
    hook_bin: &std::path::Path,
    policy: &std::path::Path,
    stage: &str,
    state: &str,
    strace: Option<&std::path::PathBuf>,
) -> Run {
    let mut argv: Vec<String> = Vec::new();
    if let Some(out) = strace {
        argv.extend(
            if std::env::var_os("WG_BENCH_STRACE_ALL").is_some() {
                ["strace", "--seccomp-bpf", "-T", "-e", "trace=sendto", "-o"]
            } else {
                [
                    "strace",
                    "-tt",
                    "-T",
                    "-e",
                    "trace=%network,%process,write",
                    "-o",
                ]
            }
            .map(String::from)
            .into_iter()
            .chain([out.to_string_lossy().into_owned()]),
        );
    }
    argv.push(hook_bin.to_string_lossy().into_owned());
    argv.extend([stage.into(), "--policy".into()]);
    argv.push(policy.to_string_lossy().into_owned());
    let start = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
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
    let mut lines = Vec::new();
    let (mut sched, mut main_sched) = Default::default();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        // The outcome line, the hook's last.
        if line.contains(" outcome=") && strace.is_none() {
            (sched, main_sched) = schedstat(child.id());
        }
        lines.push((start.elapsed(), line));
    }
    let status = child.wait().unwrap();
    let total = start.elapsed();
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status.success(), "{stage} failed:\n{}", text.join("\n"));
    let daemon_pid = lines.iter().find_map(|(_, l)| {
        let rest = l.split(" started as pid ").nth(1)?;
        rest.split(' ').next()?.parse().ok()
    });
    Run {
        lines,
        total,
        daemon_pid,
        sched,
        main_sched,
    }
}

/// (on CPU, waiting on a run queue) of all of `pid`'s threads, and of its main thread.
fn schedstat(pid: u32) -> ((Duration, Duration), (Duration, Duration)) {
    let read = |path: &std::path::Path| -> Option<(Duration, Duration)> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
        Some((
            Duration::from_nanos(f.next()??),
            Duration::from_nanos(f.next()??),
        ))
    };
    let main = read(format!("/proc/{pid}/schedstat").as_ref()).unwrap_or_default();
    let mut all = (Duration::ZERO, Duration::ZERO);
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some((run, wait)) = read(&task.path().join("schedstat")) {
            all.0 += run;
            all.1 += wait;
        }
    }
    (all, main)
}

/// Each step's duration in `run` (None for a step whose end line is missing).
fn steps(run: &Run) -> Vec<Option<Duration>> {
    let mut at = Duration::ZERO;
    STEPS
        .iter()
        .map(|(_, marker)| {
            let end = if *marker == "\u{0}end" {
                Some(run.total)
            } else {
                run.lines
                    .iter()
                    .find(|(_, l)| l.contains(marker))
                    .map(|(t, _)| *t)
            }?;
            let d = end.saturating_sub(at);
            at = end;
            Some(d)
        })
        .collect()
}

/// Durations the hook itself logged, by what it said before ` in X ms` / ` after X ms`.
fn logged(run: &Run) -> BTreeMap<&'static str, Duration> {
    let mut m = BTreeMap::new();
    for (_, line) in &run.lines {
        let ms = |prefix: &str, suffix: &str| -> Option<Duration> {
            let rest = line.split(prefix).nth(1)?;
            let v: f64 = rest.split(suffix).next()?.trim().parse().ok()?;
            Some(Duration::from_secs_f64(v / 1e3))
        };
        if line.contains("(fork and exec)") {
            if let Some(d) = line
                .rsplit(" in ")
                .next()
                .and_then(|r| r.split(" ms").next()?.parse::<f64>().ok())
            {
                m.insert("daemon fork+exec", Duration::from_secs_f64(d / 1e3));
            }
        }
        if let Some(d) = ms(" served after ", " ms") {
            m.insert("daemon socket wait", d);
        }
        if let Some(d) = ms("configuration accepted in ", " ms") {
            m.insert("UAPI configure", d);
        }
        if let Some(d) = ms(" messages, answered in ", " ms") {
            m.insert("nftables batch (netlink)", d);
        }
        if line.contains(": create-runtime container=") {
            if let Some(d) = ms(" duration_ms=", " ") {
                m.insert("hook's own total", d);
            }
        }
        if let Some(n) = line
            .split(" ms (")
            .nth(1)
            .filter(|r| r.contains(" connect attempts"))
            .and_then(|r| r.split(' ').next()?.parse::<f64>().ok())
        {
            m.insert(
                "socket connect attempts (count, as ms)",
                Duration::from_millis(n as u64),
            );
        }
    }
    m
}

fn median_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    (v[v.len() / 2], v[v.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:7.1} ms", d.as_secs_f64() * 1e3)
}

fn report(
    level: usize,
    runs: &[Run],
    cpu: &[f64],
    walls: &[Duration],
    daemon_cpu: &[u64],
    poststops: &[Duration],
) {
    println!(
        "== {level} at once: {} starts in {} round(s) ==",
        runs.len(),
        walls.len()
    );
    let (m, x) = median_max(runs.iter().map(|r| r.total).collect());
    println!(
        "  {:<42} median {} max {}",
        "createRuntime wall",
        ms(m),
        ms(x)
    );
    let timed: Vec<&Run> = runs.iter().filter(|r| r.sched.0 > Duration::ZERO).collect();
    type Pick = fn(&Run) -> Duration;
    let picks: [(&str, Pick); 5] = [
        ("hook threads on CPU", |r| r.sched.0),
        ("hook threads runnable, no CPU", |r| r.sched.1),
        ("main thread on CPU", |r| r.main_sched.0),
        ("main thread runnable, no CPU", |r| r.main_sched.1),
        ("main thread blocked (rest of wall)", |r| {
            r.total.saturating_sub(r.main_sched.0 + r.main_sched.1)
        }),
    ];
    for (name, pick) in picks {
        let (m, x) = median_max(timed.iter().map(|r| pick(r)).collect());
        println!("  {:<42} median {} max {}", name, ms(m), ms(x));
    }
    let per_step: Vec<Vec<Option<Duration>>> = runs.iter().map(steps).collect();
    for (i, (name, _)) in STEPS.iter().enumerate() {
        let v: Vec<Duration> = per_step.iter().filter_map(|s| s[i]).collect();
        let (m, x) = median_max(v);
        println!("  step {:<37} median {} max {}", name, ms(m), ms(x));
    }
    let mut by_name: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for r in runs {
        for (k, v) in logged(r) {
            by_name.entry(k).or_default().push(v);
        }
    }
    for (k, v) in by_name {
        let (m, x) = median_max(v);
        if k.starts_with("socket connect attempts") {
            println!(
                "  logged {:<35} median {:>7} max {:>7}",
                "socket connect attempts",
                m.as_millis(),
                x.as_millis()
            );
        } else {
            println!("  logged {:<35} median {} max {}", k, ms(m), ms(x));
        }
    }
    let (m, x) = median_max(walls.to_vec());
    println!(
        "  {:<42} median {} max {}",
        "round wall (all done)",
        ms(m),
        ms(x)
    );
    let (m, x) = median_max(poststops.to_vec());
    println!(
        "  {:<42} median {} max {}",
        "poststop round wall",
        ms(m),
        ms(x)
    );
    let mut c = cpu.to_vec();
    c.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "  machine CPU busy over the create round:    median {:.0}% (of {} CPUs)",
        c[c.len() / 2] * 100.0,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    if !daemon_cpu.is_empty() {
        let mut d = daemon_cpu.to_vec();
        d.sort();
        let tick_ms = 10.0;
        println!(
            "  wireguard-go CPU by the round's end:       median {:.0} ms, sum over a round {:.0} ms",
            d[d.len() / 2] as f64 * tick_ms,
            d.iter().sum::<u64>() as f64 * tick_ms / walls.len() as f64
        );
    }
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// (busy, total) jiffies of all CPUs.
fn cpu_stat() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap();
    let line = text.lines().next().unwrap();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    (total - idle, total)
}

fn cpu_busy(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = (after.0 - before.0) as f64;
    let total = (after.1 - before.1) as f64;
    if total == 0.0 {
        0.0
    } else {
        busy / total
    }
}
