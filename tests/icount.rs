//! The instruction-count budget of createRuntime (and poststop): `make icount`, a CI step.
//!
//! Runs the RELEASE hook binary (`cargo build --release`, `<target dir>/release/wg-oci-hook`; `make icount`
//! builds it first) under `valgrind --tool=callgrind` against a lab (`tests/lab`): a process in network and mount
//! namespaces of its own as the container, the lab's static wg-quick profile, the userspace backend, a fixed
//! state JSON on stdin and an empty environment, as runc runs it. Callgrind counts the instructions of the hook's
//! own process, every thread, from the dynamic loader on; not its children's (no `--trace-children`): the
//! userspace daemon (the built-in one, the hook's own executable run again) and nft run natively and uncounted.
//! Poststop is counted the same way; then the lab checks that nothing of the tunnel is left.
//!
//! The median of a few runs is held against `benches/instruction-budget.toml`: above `budget * (1 + tolerance)`
//! fails (a regression), and so does below `budget * (1 - 2 * tolerance)` (an improvement: lower the budget so
//! that it stays). A count depends on the binary, its inputs and the kernel's answers, not on the machine's load;
//! the tolerance covers what still varies between runs (the budget file says what).
//!
//! `UPDATE=1 make icount` (`WG_ICOUNT_UPDATE=1`) writes the budget file's measured part from this measurement
//! instead, keeping the hand-written part above its marker line (the tolerances), for a change that moves the
//! count on purpose. Either way the file it would write is left in `<target dir>/icount/`, beside callgrind's
//! output files (`callgrind_annotate FILE`; a build with `CARGO_PROFILE_RELEASE_STRIP=false`, the same code,
//! names the hook's functions). `WG_ICOUNT_RUNS=N` sets the number of counted runs (default 3, 9 for an update);
//! `WG_ICOUNT_HOOK=PATH` counts another build of the hook.
//!
//! Not part of `make test`: `test = false` in Cargo.toml keeps it out of a bare `cargo test` (and out of
//! `cargo clippy --all-targets`, so `make lint` names it). It fails, never skips, without valgrind or the
//! release binary.

#[path = "lab/mod.rs"]
mod lab;

use lab::{Lab, HOOK_BIN};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The budget, in the repository.
const BUDGET_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/instruction-budget.toml"
);
/// The line above which the budget file is written by hand; an update rewrites what is below it.
const MARKER: &str =
    "# ---- Below this line: written by `UPDATE=1 make icount` (tests/icount.rs); edit above it only. ----";
/// The hand-written part of a budget file that has none yet.
const DEFAULT_HEAD: &str = "tolerance_percent = 2.0\npoststop_tolerance_percent = 5.0\n";
/// Counted runs per stage, of which the median is held against the budget (or becomes it, for an update).
const DEFAULT_RUNS: usize = 3;
const DEFAULT_UPDATE_RUNS: usize = 9;
/// Bound on one hook run under valgrind (callgrind slows the hook about fiftyfold: a run takes about a second).
const RUN_TIMEOUT_SECS: u32 = 120;
/// The engine's resolv.conf, which the hook overwrites at createRuntime and gives back at poststop.
const ENGINE_RESOLV_CONF: &str = "nameserver 192.0.2.53\n";

/// A stage counted.
struct Stage {
    /// Its budget's key in the budget file.
    key: &'static str,
    /// The hook's subcommand.
    subcommand: &'static str,
    /// Its tolerance's key; `poststop_tolerance_percent` falls back to `tolerance_percent`.
    tolerance_key: &'static str,
}

const STAGES: [Stage; 2] = [
    Stage {
        key: "create_runtime",
        subcommand: "create-runtime",
        tolerance_key: "tolerance_percent",
    },
    Stage {
        key: "poststop",
        subcommand: "poststop",
        tolerance_key: "poststop_tolerance_percent",
    },
];

#[test]
fn instruction_budget() {
    let valgrind = valgrind();
    let hook = release_hook();
    let update = std::env::var_os("WG_ICOUNT_UPDATE").is_some_and(|v| !v.is_empty() && v != "0");
    let runs: usize =
        match std::env::var("WG_ICOUNT_RUNS") {
            Ok(v) => v.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| {
                panic!("icount: WG_ICOUNT_RUNS={v}: a number of runs, 1 or more")
            }),
            Err(_) if update => DEFAULT_UPDATE_RUNS,
            Err(_) => DEFAULT_RUNS,
        };
    // An update keeps the file's hand-written part; a check needs the whole file, read before the lab is built.
    let existing = fs::read_to_string(BUDGET_FILE);
    let budget = (!update).then(|| match &existing {
        Ok(text) => Budget::parse(text).unwrap_or_else(|e| {
            panic!("icount: {BUDGET_FILE}: {e}: write one from a measurement with `UPDATE=1 make icount`")
        }),
        Err(e) => panic!(
            "icount: reading {BUDGET_FILE}: {e}: write one from a measurement with `UPDATE=1 make icount`"
        ),
    });
    let head = match &existing {
        Ok(text) => match text.split_once(MARKER) {
            Some((head, _)) => head.to_owned(),
            None => panic!(
                "icount: {BUDGET_FILE} lacks the line that ends its hand-written part; put it back:\n{MARKER}"
            ),
        },
        Err(_) => DEFAULT_HEAD.to_owned() + "\n",
    };

    // Callgrind's files, kept after the run.
    let out_dir = target_dir().join("icount");
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir)
        .unwrap_or_else(|e| panic!("icount: creating {}: {e}", out_dir.display()));

    let lab = Lab::new("icount");
    // The lab's default policy (its static profile, the userspace backend and its built-in daemon), at the hook's
    // default log level
    // (info, where the lab's debug would add formatting work) and on stderr, not in the machine's log.
    let mut policy = lab.policy();
    policy.log_level = String::new();
    lab.write_policy(&policy);
    // The same id every round (each round's tunnel is gone before the next): the state JSON differs between
    // rounds only in the stand-in init's pid.
    let id = format!("icount-{}", lab.id);
    lab.track_container_id(&id);
    let resolv_conf = lab.dir.join(format!("resolv-{id}.conf"));

    // Round 0 is not counted and not under valgrind: it makes the state dir's subdirectories, as on any machine
    // past its first container, so that every counted run finds the same state dir.
    let mut counts: Vec<Vec<u64>> = vec![Vec::new(); STAGES.len()];
    for round in 0..=runs {
        let pid = lab.spawn_netns_sleeper();
        let state = lab.fake_state(&id, pid, &[("wg.enable", "true")]);
        engine_resolv_conf(&lab, &id, &resolv_conf);
        for (n, stage) in STAGES.iter().enumerate() {
            let under = (round > 0).then(|| (valgrind.as_path(), &*out_dir));
            if let Some(count) = run_hook(&lab, &hook, under, stage.subcommand, &state, round) {
                counts[n].push(count);
            }
        }
        lab.assert_nothing_left(&id);
        assert_eq!(
            fs::read_to_string(&resolv_conf).unwrap(),
            ENGINE_RESOLV_CONF,
            "icount: poststop should have given the engine's resolv.conf back"
        );
    }

    for (stage, c) in STAGES.iter().zip(&counts) {
        println!(
            "icount: {}: {} runs: {}",
            stage.key,
            c.len(),
            c.iter().map(|n| group(*n)).collect::<Vec<_>>().join(", ")
        );
    }
    let medians: Vec<u64> = counts.iter().map(|c| median(c)).collect();
    let build = BuildInfo::of(&hook, &valgrind);
    let measured = head + &render_measured(&medians, &counts, &build);
    let measured_file = out_dir.join("instruction-budget.toml");
    fs::write(&measured_file, &measured).unwrap();
    println!(
        "icount: callgrind's files (callgrind_annotate FILE): {}; this measurement as a budget file: {}",
        out_dir.display(),
        measured_file.display()
    );

    if update {
        Budget::parse(&measured).unwrap_or_else(|e| panic!("icount: the file written: {e}"));
        fs::write(BUDGET_FILE, &measured)
            .unwrap_or_else(|e| panic!("icount: writing {BUDGET_FILE}: {e}"));
        println!("icount: wrote {BUDGET_FILE}:\n{measured}");
        return;
    }
    let budget = budget.unwrap();
    if budget.rustc != build.rustc {
        println!(
            "icount: note: the budget was measured on a binary built by {}, this one by {}: a compiler change \
             moves the count by itself",
            budget.rustc, build.rustc
        );
    }
    let mut failures = Vec::new();
    for ((stage, limit), count) in STAGES.iter().zip(&budget.stages).zip(&medians) {
        let Some((limit, tolerance)) = limit else {
            println!(
                "icount: {}: {} instructions, no budget",
                stage.key,
                group(*count)
            );
            continue;
        };
        let (line, ok) = verdict(stage.key, *count, *limit, *tolerance);
        println!("{line}");
        if !ok {
            failures.push(line);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The one line for a stage: its count, the budget, the ratio, and whether it is within the tolerance.
fn verdict(key: &str, count: u64, budget: u64, tolerance_percent: f64) -> (String, bool) {
    let ratio = count as f64 / budget as f64;
    let tol = tolerance_percent / 100.0;
    let head = format!(
        "icount: {key}: {} instructions, budget {} ± {tolerance_percent}%, ratio {ratio:.4}",
        group(count),
        group(budget)
    );
    if ratio > 1.0 + tol {
        let line = format!(
            "{head}: OVER the budget by {:.2}%, more than its tolerance: a regression; if the change is meant to \
             cost this, `UPDATE=1 make icount` and commit benches/instruction-budget.toml",
            (ratio - 1.0) * 100.0
        );
        (line, false)
    } else if ratio < 1.0 - 2.0 * tol {
        let line = format!(
            "{head}: UNDER the budget by {:.2}%, more than twice its tolerance: lower the budget to lock the \
             improvement in: `UPDATE=1 make icount` and commit benches/instruction-budget.toml",
            (1.0 - ratio) * 100.0
        );
        (line, false)
    } else {
        (format!("{head}: ok"), true)
    }
}

/// Makes the bundle of `id` (which `fake_state` wrote) bind-mount the engine's resolv.conf `source`, as podman,
/// Docker and containerd all do: the hook writes the DNS servers into that file in place. (The other way, into
/// the rootfs, needs openat2, which valgrind 3.19 does not know: ENOSYS there, and the hook refuses the start.)
fn engine_resolv_conf(lab: &Lab, id: &str, source: &Path) {
    fs::write(source, ENGINE_RESOLV_CONF).unwrap();
    let config_path = lab.dir.join(format!("bundle-{id}")).join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&config_path).unwrap()).unwrap();
    config["mounts"] = serde_json::json!([{
        "destination": "/etc/resolv.conf",
        "type": "bind",
        "source": source,
        "options": ["rbind", "rprivate"]
    }]);
    fs::write(&config_path, config.to_string()).unwrap();
}

/// Runs `wg-oci-hook SUBCOMMAND --policy P` in the lab's host netns with `state` on stdin and an empty
/// environment; under callgrind (`under`: valgrind and the output dir), returns the hook's instruction count.
fn run_hook(
    lab: &Lab,
    hook: &Path,
    under: Option<(&Path, &Path)>,
    subcommand: &str,
    state: &str,
    round: usize,
) -> Option<u64> {
    let mut argv: Vec<String> = vec![
        tool("timeout"),
        "-k".into(),
        "5".into(),
        RUN_TIMEOUT_SECS.to_string(),
        tool("nsenter"),
        format!("--net=/var/run/netns/{}", lab.host_ns),
    ];
    let files = under.map(|(valgrind, dir)| {
        let out = dir.join(format!("{subcommand}.{round}.callgrind"));
        let log = dir.join(format!("{subcommand}.{round}.valgrind"));
        argv.extend([
            valgrind.to_string_lossy().into_owned(),
            "--tool=callgrind".into(),
            // The hook's own process only: the programs it starts are not counted.
            "--trace-children=no".into(),
            format!("--callgrind-out-file={}", out.display()),
            format!("--log-file={}", log.display()),
        ]);
        (out, log)
    });
    argv.push(hook.to_string_lossy().into_owned());
    argv.extend([subcommand.into(), "--policy".into()]);
    argv.push(lab.policy_path.to_string_lossy().into_owned());

    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("icount: spawning {}: {e}", argv.join(" ")));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(state.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let valgrind_log = files
        .as_ref()
        .map(|(_, log)| fs::read_to_string(log).unwrap_or_default())
        .unwrap_or_default();
    assert!(
        out.status.success(),
        "icount: {subcommand} failed ({}): $ {}\n--- stderr ---\n{}\n--- valgrind ---\n{valgrind_log}\n\
         === lab transcript ===\n{}",
        out.status,
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr),
        lab.transcript()
    );
    let (out_file, _) = files?;
    // A syscall valgrind does not know fails with ENOSYS under it alone: the path counted is then not the real
    // one, which the numbers must not hide.
    for line in valgrind_log.lines().filter(|l| l.contains("unhandled")) {
        println!(
            "icount: {subcommand}: note: valgrind: {}",
            line.trim_start_matches('-')
        );
    }
    let text = fs::read_to_string(&out_file).unwrap_or_else(|e| {
        panic!(
            "icount: reading {}: {e}\n{valgrind_log}",
            out_file.display()
        )
    });
    let total = callgrind_total(&text)
        .unwrap_or_else(|e| panic!("icount: {}: {e}\n{valgrind_log}", out_file.display()));
    Some(total)
}

/// The total instruction count (`Ir`) of a callgrind output file: its `summary:` line, else its `totals:`.
fn callgrind_total(text: &str) -> Result<u64, String> {
    let events = text
        .lines()
        .find_map(|l| l.strip_prefix("events:"))
        .ok_or("no `events:` line")?;
    if events.split_whitespace().next() != Some("Ir") {
        return Err(format!("the first event is not Ir: `events:{events}`"));
    }
    let line = ["summary:", "totals:"]
        .iter()
        .find_map(|key| text.lines().find_map(|l| l.strip_prefix(key)))
        .ok_or("neither a `summary:` nor a `totals:` line")?;
    let first = line.split_whitespace().next().unwrap_or("");
    first.parse().map_err(|e| format!("`{}`: {e}", line.trim()))
}

/// The budget file, as a check reads it.
struct Budget {
    /// (budget, tolerance in percent) per `STAGES` entry; None where the file has no budget for it.
    stages: Vec<Option<(u64, f64)>>,
    /// The compiler of the binary measured.
    rustc: String,
}

impl Budget {
    fn parse(text: &str) -> Result<Budget, String> {
        let table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
        let percent = |key: &str| -> Result<Option<f64>, String> {
            let value = match table.get(key) {
                None => return Ok(None),
                Some(toml::Value::Float(f)) => *f,
                Some(toml::Value::Integer(i)) => *i as f64,
                Some(v) => return Err(format!("`{key} = {v}`: a percentage")),
            };
            if value > 0.0 && value < 50.0 {
                Ok(Some(value))
            } else {
                Err(format!("`{key} = {value}`: must be above 0 and below 50"))
            }
        };
        let default_tolerance =
            percent("tolerance_percent")?.ok_or("no `tolerance_percent` (percent)")?;
        let mut stages = Vec::new();
        for stage in &STAGES {
            let tolerance = percent(stage.tolerance_key)?.unwrap_or(default_tolerance);
            stages.push(match table.get(stage.key) {
                None => None,
                Some(toml::Value::Integer(n)) if *n > 0 => Some((*n as u64, tolerance)),
                Some(v) => return Err(format!("`{} = {v}`: a number of instructions", stage.key)),
            });
        }
        if stages[0].is_none() {
            return Err(format!("no `{}` budget", STAGES[0].key));
        }
        let rustc = table
            .get("rustc")
            .and_then(|v| v.as_str())
            .unwrap_or("an unknown rustc")
            .to_owned();
        Ok(Budget { stages, rustc })
    }
}

/// What a count depends on besides the code, for the budget file's comments.
struct BuildInfo {
    /// From the binary's `.comment` section: "rustc 1.88.0 (6b00bc388 2025-06-23)".
    rustc: String,
    sha256: String,
    commit: String,
    valgrind: String,
    kernel: String,
    libc: String,
    cpu: String,
}

impl BuildInfo {
    fn of(hook: &Path, valgrind: &Path) -> BuildInfo {
        let stdout = |argv: &[&str]| -> Option<String> {
            Command::new(argv[0])
                .args(&argv[1..])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let first_line = |argv: &[&str]| -> String {
            stdout(argv)
                .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
                .unwrap_or_else(|| "unknown".to_owned())
        };
        let bytes = fs::read(hook).unwrap_or_default();
        // "rustc version 1.88.0 (6b00bc388 2025-06-23)", NUL-terminated, in the .comment section.
        let tag = b"rustc version ";
        let rustc = bytes
            .windows(tag.len())
            .position(|w| w == tag)
            .map(|at| {
                let rest = &bytes[at + tag.len()..];
                let end = rest.iter().take(80).position(|b| *b == 0).unwrap_or(0);
                format!("rustc {}", String::from_utf8_lossy(&rest[..end]))
            })
            .unwrap_or_else(|| "an unknown rustc".to_owned());
        let sha256 = first_line(&["sha256sum", &hook.to_string_lossy()])
            .split_whitespace()
            .next()
            .unwrap_or("unknown")
            .to_owned();
        let mut commit = first_line(&["git", "rev-parse", "--short=12", "HEAD"]);
        // Changes to anything but the budget file itself (which an update is about to write).
        let changed = stdout(&[
            "git",
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":!benches/instruction-budget.toml",
        ]);
        if changed.is_some_and(|s| !s.trim().is_empty()) {
            commit.push_str(" with uncommitted changes");
        }
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        BuildInfo {
            rustc,
            sha256,
            commit,
            valgrind: first_line(&[&valgrind.to_string_lossy(), "--version"]),
            kernel: first_line(&["uname", "-sr"]),
            libc: first_line(&["ldd", "--version"]),
            cpu,
        }
    }
}

/// The budget file's measured part: the marker line, how it was measured, the medians as the budgets.
fn render_measured(medians: &[u64], counts: &[Vec<u64>], build: &BuildInfo) -> String {
    let mut s = String::new();
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let _ = writeln!(
        s,
        "{MARKER}\n\
         # Measured {now} on commit {}: the median of {} runs (after one run not counted) of the\n\
         # release build, stripped as `cargo build --release` makes it:\n\
         #   binary:   sha256 {}, {}\n\
         #   valgrind: {}\n\
         #   kernel:   {}\n\
         #   libc:     {}\n\
         #   CPU:      {} (valgrind's CPUID decides which of glibc's string functions run)",
        build.commit,
        counts[0].len(),
        build.sha256,
        build.rustc,
        build.valgrind,
        build.kernel,
        build.libc,
        build.cpu
    );
    for (stage, c) in STAGES.iter().zip(counts) {
        let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
        let _ = writeln!(
            s,
            "# {} runs: {} (lowest to highest: {:.2}%)",
            stage.key,
            c.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            (hi - lo) as f64 * 100.0 / *lo as f64
        );
    }
    for (stage, m) in STAGES.iter().zip(medians) {
        let _ = writeln!(s, "{} = {m}", stage.key);
    }
    let _ = writeln!(s, "rustc = \"{}\"", build.rustc);
    s
}

/// valgrind, which the check cannot do without: a missing one fails it.
fn valgrind() -> PathBuf {
    let path = which("valgrind").unwrap_or_else(|| {
        panic!(
            "icount: valgrind is missing: apt-get install valgrind (tests/install-deps.sh, `make deps`); the \
             instruction-count check fails rather than skip"
        )
    });
    let version = Command::new(&path)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("icount: {}: {e}", path.display()));
    assert!(
        version.status.success(),
        "icount: {} --version failed",
        path.display()
    );
    path
}

/// The target dir this test was built in (whatever CARGO_TARGET_DIR is): the test build's own hook binary is
/// `<target dir>/debug/wg-oci-hook`.
fn target_dir() -> PathBuf {
    Path::new(HOOK_BIN)
        .parent()
        .and_then(Path::parent)
        .expect("the test build's hook binary is in <target dir>/<profile>/")
        .to_owned()
}

/// The release build of the hook: `WG_ICOUNT_HOOK`, else `<target dir>/release/wg-oci-hook`.
fn release_hook() -> PathBuf {
    let path = match std::env::var_os("WG_ICOUNT_HOOK") {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("release").join("wg-oci-hook"),
    };
    assert!(
        path.is_file(),
        "icount: no release build at {}: `cargo build --release --locked` first (`make icount` does)",
        path.display()
    );
    path
}

/// `name` in the standard directories, then in PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        .split(':')
        .chain(path.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn tool(name: &str) -> String {
    which(name)
        .unwrap_or_else(|| panic!("icount: `{name}` is missing"))
        .to_string_lossy()
        .into_owned()
}

fn median(counts: &[u64]) -> u64 {
    let mut sorted = counts.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

/// 12345678 as "12,345,678".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The check's own arithmetic and parsing, without a lab.
#[test]
fn totals_budgets_and_verdicts() {
    let file = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\ncmd: hook\npart: 1\n\n\
                positions: line\nevents: Ir\nsummary: 1294255\n\nob=(1) hook\nfn=(1) main\n0 7\n\n\
                totals: 1294255\n";
    assert_eq!(callgrind_total(file), Ok(1_294_255));
    assert_eq!(
        callgrind_total(&file.replace("summary: 1294255\n", "")),
        Ok(1_294_255)
    );
    assert!(callgrind_total("events: Dr Ir\nsummary: 5 6\n").is_err());
    assert!(callgrind_total("events: Ir\n").is_err());
    assert!(callgrind_total("summary: 5\n").is_err());

    let (line, ok) = verdict("create_runtime", 1_019_000, 1_000_000, 2.0);
    assert!(ok && line.ends_with(": ok"), "{line}");
    assert!(line.contains("1,019,000 instructions, budget 1,000,000 ± 2%, ratio 1.0190"));
    let (line, ok) = verdict("create_runtime", 1_021_000, 1_000_000, 2.0);
    assert!(!ok && line.contains("OVER the budget by 2.10%"), "{line}");
    assert!(!line.contains('\n'));
    assert!(verdict("create_runtime", 961_000, 1_000_000, 2.0).1);
    let (line, ok) = verdict("create_runtime", 959_000, 1_000_000, 2.0);
    assert!(!ok && line.contains("UNDER the budget by 4.10%"), "{line}");

    let budget = Budget::parse(&format!(
        "tolerance_percent = 2\n{MARKER}\ncreate_runtime = 100\npoststop = 50\nrustc = \"rustc 1.88.0\"\n"
    ))
    .unwrap();
    assert_eq!(budget.stages, [Some((100, 2.0)), Some((50, 2.0))]);
    assert_eq!(budget.rustc, "rustc 1.88.0");
    let budget = Budget::parse(
        "tolerance_percent = 1.5\npoststop_tolerance_percent = 4.0\ncreate_runtime = 7\n",
    )
    .unwrap();
    assert_eq!(budget.stages, [Some((7, 1.5)), None]);
    for bad in [
        "create_runtime = 7\n",
        "tolerance_percent = 0\ncreate_runtime = 7\n",
        "tolerance_percent = 2\n",
        "tolerance_percent = 2\ncreate_runtime = \"7\"\n",
        "tolerance_percent = 2\ncreate_runtime = -7\n",
    ] {
        assert!(Budget::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(group(1_294_255), "1,294,255");
    assert_eq!(group(999), "999");
    assert_eq!(median(&[3, 1, 2]), 2);
}
