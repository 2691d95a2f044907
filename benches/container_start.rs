//! What the hook costs a container start, measured on the real thing (root, podman, runc, wireguard-go).
//!
//! `cargo bench --bench container_start` prints, from one run:
//! - the hook alone: wall time of `create-runtime` and of `poststop` for a process in its own netns, run from a
//!   thread inside the lab's host netns, for our hook on each backend this machine has (userspace; the kernel's
//!   only where `ip link add type wireguard` works, else the output says it is not available) and for the
//!   reference shell hook (`reference-hook.sh`, a benchmark reference and not a product: the same steps with
//!   jq, wireguard-go, wg, ip, nsenter and nft; see `reference/mod.rs`), all interleaved, with the ratio
//!   ours / reference; and the peak RSS of each at create-runtime (see "Peak RSS" below);
//! - a whole container: `podman run --rm ... true` without a hook, with `wg.enable=true` (ours, each backend)
//!   and with the reference's annotation (`bench.wg-reference=true`, through a hooks.d entry of its own),
//!   interleaved so that drift hits all alike; medians and their ratios to no hook;
//! - the same for ours with a PIA profile against the lab's PIA server (`tests/lab/pia.rs`), token and server
//!   list cached as they are after the first start: what each start adds is one addKey over HTTPS; and the hook
//!   alone with port forwarding (the first getSignature and bindPort through the tunnel, and the helper).
//!
//! Before anything is timed, the reference is proven (`Reference::prove`): its table is the one
//! `src/hook/firewall.rs` renders for the profile, its container's netns holds what ours does (addresses, MTU,
//! rules, routes, ruleset), and its container pings the lab's peer through the tunnel, run directly and under
//! podman, and leaves nothing behind.
//!
//! Peak RSS, at create-runtime, in a few extra runs (not the timed ones) through a small runner, this bench's
//! binary re-executed (`--rss-runner`): "tree", wait4's `ru_maxrss` for the hook, which is the largest of the
//! hook and of the processes it waited for (ours: nft; the reference: ip, wg, nft, nsenter ...); "own", the
//! hook process's own high-water mark (VmHWM), read while it is stopped at its exit (ptrace). Not from this
//! bench itself: a child's maxrss starts from its parent's memory at the fork, so wait4 here would report the
//! bench's size; the runner's own floor (what it reports for /bin/true) is printed beside.
//!
//! `WG_BENCH_PARALLEL=1,50 cargo bench --bench container_start` measures instead where N createRuntime runs at
//! once wait (`parallel/mod.rs`); `WG_BENCH_PODMAN_PARALLEL=50`, N podman starts at once with and without the
//! hook (`podman_parallel/mod.rs`).
//!
//! `WG_BENCH_SCALE=1,10,50,100,200 cargo bench --bench container_start` measures instead createRuntime and the
//! daemons' memory per tunnel against the number of tunnels live, for each userspace daemon (`scale/mod.rs`);
//! `WG_BENCH_THROUGHPUT=1` iperf3 through a tunnel of each (`throughput/mod.rs`). Both write CSV files under
//! `target/bench/`, which `tools/plot_bench.py` draws; set both to run both.
//!
//! Set WG_BENCH_ROUNDS to change the number of rounds (default 21). Set WG_BENCH_BASELINE_HOOK to another
//! build of wg-oci-hook to time it on the static profile too, interleaved with this one. Set WG_BENCH_HOOK_ONLY=1
//! to stop after the hook alone on the static profile (a quick A/B of two builds, the reference beside them),
//! WG_BENCH_SHOW_LOG=1 to see each hook run's log (the lab's policy logs at debug level, with each step's time).
//! Set WG_BENCH_RSS_ROUNDS to change the number of create-runtime runs per hook for the peak RSS (default 3).
//! Set WG_BENCH_POSTSTOP_AFTER_EXIT=1 to run each poststop once the container's init has exited, as engines do
//! (by default its netns still lives, as a pod's does: poststop then cleans it too).

mod daemons;
#[path = "../tests/lab/mod.rs"]
mod lab;
mod parallel;
mod podman_parallel;
mod reference;
mod scale;
mod throughput;

use lab::{Lab, PiaLab, RunOpts, HOOK_BIN};
use reference::Reference;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The first argument of this binary run as the peak-RSS runner: `--rss-runner OUT PROGRAM ARGS...`.
const RSS_RUNNER: &str = "--rss-runner";

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(RSS_RUNNER) {
        rss_runner(&args[2..]);
    }
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing we need to run.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    // WG_BENCH_PODMAN_PARALLEL=50: N podman starts at once, with and without the hook (`podman_parallel/mod.rs`).
    if let Ok(n) = std::env::var("WG_BENCH_PODMAN_PARALLEL") {
        podman_parallel::run(
            n.trim()
                .parse()
                .expect("WG_BENCH_PODMAN_PARALLEL: a number"),
        );
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
    // WG_BENCH_SCALE=1,10,50,100,200 and WG_BENCH_THROUGHPUT=1: live tunnels and iperf3, per daemon (see
    // `scale/mod.rs`, `throughput/mod.rs`), instead of the rest.
    let scale = std::env::var("WG_BENCH_SCALE").ok();
    let throughput = std::env::var_os("WG_BENCH_THROUGHPUT").is_some_and(|v| v != "0");
    if let Some(levels) = &scale {
        let levels: Vec<usize> = levels
            .split(',')
            .map(|l| l.trim().parse().expect("WG_BENCH_SCALE: numbers"))
            .collect();
        assert!(
            levels.iter().all(|&l| l > 0),
            "WG_BENCH_SCALE: levels of 1 or more"
        );
        scale::run(&levels);
    }
    if throughput {
        throughput::run();
    }
    if scale.is_some() || throughput {
        return;
    }
    let rounds: usize = env_number("WG_BENCH_ROUNDS").unwrap_or(21);
    let rss_rounds: usize = env_number("WG_BENCH_RSS_ROUNDS").unwrap_or(3);
    let bench_start = Instant::now();
    let lab = Lab::new("bench");
    // Declared after the lab, so dropped before it: kills whatever daemon a reference record still names.
    let reference = Reference::install(&lab);
    reference.prove(&lab);
    let kernel = kernel_policy(&lab);

    let ours = |label: &str, bin: &Path, policy: &Path| HookVariant {
        label: label.to_owned(),
        hook: Hook::Ours {
            bin: bin.to_owned(),
            policy: policy.to_owned(),
        },
    };
    let mut hooks = vec![ours(
        "wg-oci-hook, userspace backend",
        Path::new(HOOK_BIN),
        &lab.policy_path,
    )];
    if let Ok((path, _)) = &kernel {
        hooks.push(ours(
            "wg-oci-hook, kernel backend",
            Path::new(HOOK_BIN),
            path,
        ));
    }
    if let Some(baseline) = std::env::var_os("WG_BENCH_BASELINE_HOOK") {
        hooks.push(ours(
            "baseline build, userspace backend",
            Path::new(&baseline),
            &lab.policy_path,
        ));
    }
    hooks.push(HookVariant {
        label: "reference shell hook".to_owned(),
        hook: Hook::Reference(&reference),
    });
    let static_hook = hook_alone(&lab, rounds, rss_rounds, &hooks);
    let rss_floor = rss_floor();
    if std::env::var_os("WG_BENCH_HOOK_ONLY").is_some() {
        print_hook_alone(rounds, rss_rounds, &hooks, rss_floor, &static_hook, &kernel);
        println!("took {:.0} s", bench_start.elapsed().as_secs_f64());
        return;
    }

    // A whole container: no hook, ours on each backend, the reference.
    let mut variants = vec![PodmanVariant::new("no hook", RunOpts::plain("true"))];
    let mut userspace = PodmanVariant::new("wg-oci-hook, userspace backend", RunOpts::wg("true"));
    if let Ok((_, policy)) = &kernel {
        // Both backends share the lab's hooks.d entry and so its policy file: each run writes its own first.
        userspace.policy = Some(lab.policy());
        variants.push(userspace);
        let mut on_kernel = PodmanVariant::new("wg-oci-hook, kernel backend", RunOpts::wg("true"));
        on_kernel.policy = Some(policy.clone());
        variants.push(on_kernel);
    } else {
        variants.push(userspace);
    }
    variants.push(PodmanVariant::new(
        "reference shell hook",
        RunOpts::plain("true").annotation(reference::ANNOTATION, "true"),
    ));
    let podman = podman_runs(&lab, rounds, &variants);
    lab.write_policy(&lab.policy());

    let pia = PiaLab::start(&lab);
    lab.write_policy(&pia.policy(&lab, &[]));
    let pia_hook = hook_alone(&lab, rounds, 0, &hooks[..1]);
    let pia_podman = podman_runs(
        &lab,
        rounds,
        &[
            PodmanVariant::new("no hook", RunOpts::plain("true")),
            PodmanVariant::new("wg-oci-hook, userspace backend", RunOpts::wg("true")),
        ],
    );
    let forwarding = pia.policy(&lab, &[("port_forwarding", "true")]);
    lab.write_policy(&forwarding);
    let pf_hook = hook_alone(&lab, rounds, 0, &hooks[..1]);
    let stats = pia.stats();

    print_hook_alone(rounds, rss_rounds, &hooks, rss_floor, &static_hook, &kernel);
    print_podman(&variants, &podman);
    println!("PIA profile (token and server list cached; one addKey per start):");
    println!(
        "  hook create-runtime:                   {}",
        ms(pia_hook[0].create)
    );
    println!(
        "  hook poststop:                         {}",
        ms(pia_hook[0].poststop)
    );
    println!(
        "  podman run --rm without the hook:      {}",
        ms(pia_podman[0])
    );
    println!(
        "  podman run --rm with wg.enable=true:   {}",
        ms(pia_podman[1])
    );
    println!(
        "  ratio with/without: {:.2} (+{})",
        pia_podman[1].as_secs_f64() / pia_podman[0].as_secs_f64(),
        ms(pia_podman[1].saturating_sub(pia_podman[0]))
    );
    println!(
        "  with port forwarding, hook create-runtime: {}",
        ms(pf_hook[0].create)
    );
    println!(
        "  with port forwarding, hook poststop:       {}",
        ms(pf_hook[0].poststop)
    );
    println!(
        "  lab server saw: {} token, {} list, {} addKey, {} getSignature requests",
        stats.token_requests,
        stats.list_requests,
        stats.add_key.len(),
        stats.get_signature
    );
    println!("took {:.0} s", bench_start.elapsed().as_secs_f64());
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// A policy file like the lab's but for the kernel backend, when this machine's kernel can make a WireGuard
/// link (probed in the lab's host netns); else why not.
fn kernel_policy(lab: &Lab) -> Result<(PathBuf, lab::Policy), String> {
    let probe = lab.ip(
        &lab.host_ns,
        &["link", "add", "wgprobe0", "type", "wireguard"],
    );
    if !probe.success() {
        return Err(format!(
            "not available on this machine (`ip link add type wireguard`: {})",
            probe.stderr.trim()
        ));
    }
    lab.ip(&lab.host_ns, &["link", "del", "wgprobe0"])
        .assert_success("deleting the kernel probe link");
    let mut policy = lab.policy();
    policy.backend = "kernel".to_owned();
    let path = lab.write_file("policy-kernel.toml", &policy.render(), 0o600);
    Ok((path, policy))
}

/// A hook the hook-alone part runs.
enum Hook<'a> {
    /// A build of wg-oci-hook, with a policy file.
    Ours { bin: PathBuf, policy: PathBuf },
    /// `reference-hook.sh`.
    Reference(&'a Reference),
}

struct HookVariant<'a> {
    label: String,
    hook: Hook<'a>,
}

impl Hook<'_> {
    /// (argv, the whole environment) of `stage`, as runc runs it.
    fn argv_env(&self, stage: &str) -> (Vec<String>, Vec<(String, String)>) {
        match self {
            Hook::Ours { bin, policy } => (
                vec![
                    bin.to_string_lossy().into_owned(),
                    stage.to_owned(),
                    "--policy".to_owned(),
                    policy.to_string_lossy().into_owned(),
                ],
                Vec::new(),
            ),
            Hook::Reference(r) => (
                vec![reference::SCRIPT.to_owned(), stage.to_owned()],
                r.env()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            ),
        }
    }

    /// The annotations of a container this hook acts on.
    fn annotations(&self) -> [(&'static str, &'static str); 1] {
        match self {
            Hook::Ours { .. } => [("wg.enable", "true")],
            Hook::Reference(_) => [(reference::ANNOTATION, "true")],
        }
    }
}

/// One hook's medians on the hook-alone part.
struct HookStats {
    create: Duration,
    poststop: Duration,
    /// The largest (wait4 ru_maxrss, the hook process's own VmHWM) of the RSS runs, KiB.
    rss: Option<(u64, u64)>,
}

/// The hook-alone table and its notes.
fn print_hook_alone(
    rounds: usize,
    rss_rounds: usize,
    hooks: &[HookVariant],
    rss_floor: u64,
    stats: &[HookStats],
    kernel: &Result<(PathBuf, lab::Policy), String>,
) {
    println!(
        "rounds: {rounds} (one run; medians; every round runs each hook in turn, the first another each round)"
    );
    println!(
        "static profile, hook alone (state on stdin, a process in a netns of its own, no engine):"
    );
    println!(
        "  {:<36} {:>14} {:>10}   peak RSS at create-runtime: tree, own",
        "", "create-runtime", "poststop"
    );
    for (hook, s) in hooks.iter().zip(stats) {
        let rss = match s.rss {
            Some((max, own)) => format!("{:>9} {:>9}", mib(max), mib(own)),
            None => "-".to_owned(),
        };
        println!(
            "  {:<36} {:>14} {:>10}   {rss}",
            format!("{}:", hook.label),
            ms(s.create),
            ms(s.poststop)
        );
    }
    let reference = hooks
        .iter()
        .position(|h| matches!(h.hook, Hook::Reference(_)));
    for (n, hook) in hooks.iter().enumerate() {
        if let (Hook::Ours { .. }, Some(r)) = (&hook.hook, reference) {
            println!(
                "  {:<36} {:>14.2} {:>10.2}",
                format!(
                    "ours / reference ({}):",
                    hook.label.trim_start_matches("wg-oci-hook, ")
                ),
                stats[n].create.as_secs_f64() / stats[r].create.as_secs_f64(),
                stats[n].poststop.as_secs_f64() / stats[r].poststop.as_secs_f64()
            );
        }
    }
    if let Some(b) = hooks.iter().position(|h| h.label.starts_with("baseline")) {
        println!(
            "  {:<36} {:>14.2} {:>10.2}",
            "this build / baseline:",
            stats[0].create.as_secs_f64() / stats[b].create.as_secs_f64(),
            stats[0].poststop.as_secs_f64() / stats[b].poststop.as_secs_f64()
        );
    }
    if let Err(why) = kernel {
        println!("  wg-oci-hook, kernel backend: {why}");
    }
    println!(
        "  peak RSS, the largest of {rss_rounds} create-runtime runs: tree = wait4's ru_maxrss, the largest of the \
         hook and of what it waited for (ours: nft; the reference: ip, wg, nft ...); own = the hook process's \
         VmHWM at its exit (the reference's: bash's), exact where ru_maxrss may read a few hundred KiB low (the \
         kernel's per-CPU RSS counters); the runner sees nothing below {} (/bin/true)",
        mib(rss_floor)
    );
    println!(
        "  the reference writes no resolv.conf (ours does); both poststops stop the daemon and, the netns still \
         being there, delete their table and rules from it"
    );
}

/// Runs the hooks the way runc does (state on stdin, only the hook's environment) against a process that has
/// a netns of its own, from a thread that entered the lab's host netns (so no nsenter is timed). Every round
/// runs each hook in turn; then `rss_rounds` create-runtime runs of each for its peak RSS (not timed).
fn hook_alone(
    lab: &Lab,
    rounds: usize,
    rss_rounds: usize,
    hooks: &[HookVariant],
) -> Vec<HookStats> {
    let host_ns =
        std::fs::File::open(format!("/var/run/netns/{}", lab.host_ns)).expect("lab host netns");
    let after_exit = std::env::var_os("WG_BENCH_POSTSTOP_AFTER_EXIT").is_some();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&host_ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the lab");
            let mut create = vec![Vec::new(); hooks.len()];
            let mut poststop = vec![Vec::new(); hooks.len()];
            let mut rss: Vec<Option<(u64, u64)>> = vec![None; hooks.len()];
            let run = |label: &str, n: usize, rss_out: Option<&Path>| {
                let hook = &hooks[n].hook;
                let container = lab.spawn_netns_sleeper();
                let id = format!("bench{label}-{n}-{}", lab.id);
                lab.track_container_id(&id);
                let state = lab.fake_state(&id, container, &hook.annotations());
                std::fs::create_dir_all(lab.dir.join(format!("bundle-{id}/rootfs/run"))).unwrap();
                let c = run_hook(hook, "create-runtime", &state, rss_out);
                if after_exit {
                    // As at a container's end: its init is gone (and with it, unless pinned, its netns).
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(container as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    while std::fs::read_link(format!("/proc/{container}/ns/net")).is_ok() {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                }
                let p = run_hook(hook, "poststop", &state, None);
                (c, p)
            };
            for round in 0..rounds {
                // Each round another hook goes first: the second of two runs in a row is quicker (caches, the
                // first one's leftovers being reaped), which was a 14% bias on poststop in an A/A run.
                for i in 0..hooks.len() {
                    let n = (round + i) % hooks.len();
                    let (c, p) = run(&round.to_string(), n, None);
                    create[n].push(c);
                    poststop[n].push(p);
                }
            }
            let rss_file = lab.dir.join("rss-runner.out");
            for round in 0..rss_rounds {
                for (n, peak) in rss.iter_mut().enumerate() {
                    let _ = std::fs::remove_file(&rss_file);
                    run(&format!("rss{round}"), n, Some(&rss_file));
                    let (max_rss, hwm) = read_rss(&rss_file);
                    let (m, h) = peak.unwrap_or_default();
                    *peak = Some((m.max(max_rss), h.max(hwm)));
                }
            }
            (0..hooks.len())
                .map(|n| HookStats {
                    create: median(&mut create[n]),
                    poststop: median(&mut poststop[n]),
                    rss: rss[n],
                })
                .collect()
        })
        .join()
        .expect("bench thread")
    })
}

/// Runs `hook` at `stage` with `state` on stdin and returns its wall time; with `rss`, through the RSS runner,
/// which writes the hook's peak RSS there (see `rss_runner`).
fn run_hook(hook: &Hook, stage: &str, state: &str, rss: Option<&Path>) -> Duration {
    let (mut argv, env) = hook.argv_env(stage);
    if let Some(out) = rss {
        let runner = std::env::current_exe().expect("this bench's binary");
        argv.splice(
            0..0,
            [
                runner.to_string_lossy().into_owned(),
                RSS_RUNNER.to_owned(),
                out.to_string_lossy().into_owned(),
            ],
        );
    }
    let start = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(env)
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
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        out.status.success(),
        "{} {stage}: {}\n{}",
        argv.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The high-water mark of `pid`'s resident set (VmHWM), KiB.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What the RSS runner reports for /bin/true, KiB: the least its ru_maxrss can say (a child's maxrss starts
/// from its parent's memory at the fork, here the runner's).
fn rss_floor() -> u64 {
    let out = std::env::temp_dir().join(format!("wg-bench-rss-floor-{}", std::process::id()));
    let status = Command::new(std::env::current_exe().expect("this bench's binary"))
        .args([RSS_RUNNER.as_ref(), out.as_os_str(), "/bin/true".as_ref()])
        .status()
        .expect("the RSS runner");
    assert!(status.success(), "the RSS runner on /bin/true: {status}");
    let (max_rss, _) = read_rss(&out);
    let _ = std::fs::remove_file(&out);
    max_rss
}

/// What the RSS runner wrote: (ru_maxrss, the program's own VmHWM at its exit), KiB.
fn read_rss(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).expect("the RSS runner's output");
    let mut f = text.split_whitespace().map(|v| v.parse().unwrap());
    (f.next().unwrap(), f.next().unwrap())
}

/// `--rss-runner OUT PROGRAM ARGS...`: runs PROGRAM (with this process's stdio and environment), writes
/// `MAXRSS HWM` in KiB to OUT and exits as it did. MAXRSS: wait4's ru_maxrss (getrusage of the one child
/// waited for), the largest of PROGRAM and of the children it waited for. HWM: PROGRAM's own VmHWM, read from
/// /proc when it stops at its exit (PTRACE_O_TRACEEXIT), its memory still there. A fresh process, small, so
/// that the maxrss PROGRAM starts from (its parent's, from the fork) is not the bench's.
fn rss_runner(args: &[String]) -> ! {
    use nix::sys::ptrace;
    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitpid, WaitStatus};
    use std::os::unix::process::CommandExt;
    let [out, program, rest @ ..] = args else {
        panic!("{RSS_RUNNER} OUT PROGRAM ARGS...");
    };
    let mut cmd = Command::new(program);
    cmd.args(rest);
    // SAFETY: ptrace(PTRACE_TRACEME) is a system call that touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| ptrace::traceme().map_err(std::io::Error::from));
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{program}: {e}"));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Stopped at its exec; from there on, stopped once more when it exits.
    match waitpid(pid, None) {
        Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => {}
        other => panic!("{program} did not stop at its exec: {other:?}"),
    }
    ptrace::setoptions(
        pid,
        // TRACEEXEC: a later exec (env running bash for a script) stops as an event, not as a SIGTRAP to deliver.
        ptrace::Options::PTRACE_O_TRACEEXIT
            | ptrace::Options::PTRACE_O_TRACEEXEC
            | ptrace::Options::PTRACE_O_EXITKILL,
    )
    .expect("PTRACE_SETOPTIONS");
    ptrace::cont(pid, None).expect("PTRACE_CONT");
    let mut hwm = 0;
    let code = loop {
        match waitpid(pid, None).expect("waitpid") {
            WaitStatus::PtraceEvent(_, _, event)
                if event == ptrace::Event::PTRACE_EVENT_EXIT as i32 =>
            {
                hwm = vm_hwm(child.id()).unwrap_or(0);
                let _ = ptrace::cont(pid, None);
            }
            // A signal on its way to it: delivered.
            WaitStatus::Stopped(_, signal) => {
                let _ = ptrace::cont(pid, signal);
            }
            WaitStatus::Exited(_, code) => break code,
            WaitStatus::Signaled(_, signal, _) => break 128 + signal as i32,
            _ => {
                let _ = ptrace::cont(pid, None);
            }
        }
    };
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    std::fs::write(out, format!("{} {hwm}", usage.max_rss())).expect("writing the RSS");
    std::process::exit(code)
}

/// One kind of container start.
struct PodmanVariant {
    label: String,
    opts: RunOpts,
    /// Written to the lab's policy file before each of its runs (the backends share the hooks.d entry).
    policy: Option<lab::Policy>,
}

impl PodmanVariant {
    fn new(label: &str, opts: RunOpts) -> PodmanVariant {
        PodmanVariant {
            label: label.to_owned(),
            opts,
            policy: None,
        }
    }
}

/// `podman run --rm` of each variant in turn, every round another first, after one uncounted round (podman's
/// first run in a fresh root initialises its storage); the medians, in the order of `variants`.
fn podman_runs(lab: &Lab, rounds: usize, variants: &[PodmanVariant]) -> Vec<Duration> {
    let mut samples = vec![Vec::new(); variants.len()];
    for round in 0..=rounds {
        for i in 0..variants.len() {
            let n = (round + i) % variants.len();
            let variant = &variants[n];
            if let Some(policy) = &variant.policy {
                lab.write_policy(policy);
            }
            let start = Instant::now();
            let out = lab.podman_run(&variant.opts);
            let took = start.elapsed();
            out.assert_success(&format!("podman run ({})", variant.label));
            if round > 0 {
                samples[n].push(took);
            }
        }
    }
    samples.iter_mut().map(|s| median(s)).collect()
}

fn print_podman(variants: &[PodmanVariant], medians: &[Duration]) {
    println!("podman run --rm --network none ... true (medians; the ratio to no hook, and what the hook adds):");
    let plain = medians[0];
    for (variant, took) in variants.iter().zip(medians) {
        if variant.opts.annotations.is_empty() {
            println!("  {:<36} {:>10}", format!("{}:", variant.label), ms(*took));
        } else {
            println!(
                "  {:<36} {:>10}   {:.2} (+{})",
                format!("{}:", variant.label),
                ms(*took),
                took.as_secs_f64() / plain.as_secs_f64(),
                ms(took.saturating_sub(plain))
            );
        }
    }
    let reference = variants
        .iter()
        .position(|v| v.label.starts_with("reference"))
        .map(|r| medians[r].saturating_sub(plain));
    if let Some(reference) = reference {
        for (variant, took) in variants.iter().zip(medians) {
            if variant.label.starts_with("wg-oci-hook") {
                println!(
                    "  what ours adds / what the reference adds ({}): {:.2}",
                    variant.label.trim_start_matches("wg-oci-hook, "),
                    took.saturating_sub(plain).as_secs_f64() / reference.as_secs_f64()
                );
            }
        }
    }
}
