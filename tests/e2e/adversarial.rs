//! The adversarial table (issue 12): hostile or careless annotations, OCI state JSON, bundles, policy and
//! wg-quick files, each a row that is either a real `podman run` or the hook run directly (as runc runs it, in the
//! lab's host netns) with a crafted state on stdin. Every row must end in a non-zero exit whose stderr is ONE
//! `wg-oci-hook:` line naming what is at fault, and leave nothing behind: no `wgo*` link, no daemon, no record or
//! temp file in the state dir, no new file anywhere in the lab dir.
//!
//! All rows run (one lab per test function) and every failing row is reported at once.

use crate::lab::*;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a row feeds the hook.
enum Input {
    /// `podman run` of a container with `wg.enable=true` (its script echoes `workload-ran`).
    Podman(RunOpts),
    /// `wg-oci-hook create-runtime --policy POLICY` with `state` on stdin; `id` is the container id it names.
    Direct {
        id: String,
        policy: PathBuf,
        state: String,
    },
}

struct Row {
    name: &'static str,
    input: Input,
    /// Fragments the hook's one error line must contain.
    expect: Vec<String>,
}

fn row(name: &'static str, input: Input, expect: &[&str]) -> Row {
    Row {
        name,
        input,
        expect: expect.iter().map(|s| s.to_string()).collect(),
    }
}

/// A container with `wg.enable=true` and these further annotations.
fn podman(annotations: &[(&str, &str)]) -> Input {
    let mut opts = RunOpts::wg("echo workload-ran");
    for (k, v) in annotations {
        opts = opts.annotation(k, v);
    }
    Input::Podman(opts)
}

/// The policy the rows run under: the lab's, with `log_level` left at its default (warn) so that stderr holds
/// what a user sees, and profiles whose wg-quick file others may write (`loose`), belongs to nobody (`foreign`) or
/// is a symlink to the lab's good one (`linked`).
fn write_policy(lab: &Lab) {
    let loose = lab.write_file("loose.conf", &lab.client_config().render(), 0o646);
    let foreign = lab.write_file("foreign.conf", &lab.client_config().render(), 0o600);
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let linked = lab.dir.join("linked.conf");
    std::os::unix::fs::symlink(&lab.config_path, &linked).unwrap();
    let mut policy = lab.policy();
    policy.log_level = "warn".into();
    policy.profiles.push(LabProfile::new("loose", loose));
    policy.profiles.push(LabProfile::new("foreign", foreign));
    policy.profiles.push(LabProfile::new("linked", linked));
    lab.write_policy(&policy);
}

#[test]
fn hostile_annotations_are_refused_by_podman() {
    let lab = Lab::new("adversarial_podman");
    write_policy(&lab);
    // One argument may hold at most 128 KiB (MAX_ARG_STRLEN): the 1 MB values are direct rows. Podman 4.3 cuts a
    // value at its first newline (`lab\nx` arrives as `lab`): newlines are direct rows too.
    let long = "p".repeat(100_000);
    // Control: the lab's container gets its tunnel, so each row's refusal is its annotation's.
    let control = lab.podman_run(&RunOpts::wg("ip -o link"));
    control.assert_success("the control container");
    assert!(control.out.stdout.contains("wg0"), "{control}");
    lab.assert_nothing_left(control.cid());
    let rows = vec![
        row(
            "profile with path traversal",
            podman(&[("wg.profile", "../../etc/x")]),
            &["annotation wg.profile", "../../etc/x"],
        ),
        row(
            "profile that is an absolute path",
            podman(&[("wg.profile", "/etc/passwd")]),
            &["annotation wg.profile", "/etc/passwd"],
        ),
        row(
            "profile of 100 kB",
            podman(&[("wg.profile", &long)]),
            &["annotation wg.profile", "ppp"],
        ),
        row(
            "unknown wg.* key",
            podman(&[("wg.profle", "lab")]),
            &["wg.profle", "unknown wg.* annotation"],
        ),
        row(
            "profile the policy does not list",
            podman(&[("wg.profile", "nosuch")]),
            &["wg.profile=\"nosuch\"", "no such profile"],
        ),
        row(
            "container on the host's network",
            Input::Podman(RunOpts::wg("echo workload-ran").network("host")),
            &["pid ", "shares the runtime's network namespace"],
        ),
        row(
            "wg-quick file writable by others",
            podman(&[("wg.profile", "loose")]),
            &["loose.conf", "group or others"],
        ),
        row(
            "wg-quick file not owned by root",
            podman(&[("wg.profile", "foreign")]),
            &["foreign.conf", "not owned by root"],
        ),
        row(
            "wg-quick file that is a symlink",
            podman(&[("wg.profile", "linked")]),
            &["linked.conf", "is a symlink"],
        ),
    ];
    run_table(&lab, rows);
}

#[test]
fn hostile_states_bundles_and_policies_are_refused() {
    let lab = Lab::new("adversarial_direct");
    write_policy(&lab);
    let policy = lab.policy_path.clone();
    let container = lab.spawn_netns_sleeper();
    let not_a_container = lab.spawn_netns_only_sleeper();
    let dead = dead_pid();

    // A valid state for `id` (its bundle made by the lab), as JSON to be spoiled.
    let state = |id: &str, pid: u32, annotations: &[(&str, &str)]| -> serde_json::Value {
        let mut ann = vec![("wg.enable", "true")];
        ann.extend_from_slice(annotations);
        serde_json::from_str(&lab.fake_state(id, pid, &ann)).unwrap()
    };
    let direct = |id: &str, state: String| Input::Direct {
        id: id.into(),
        policy: policy.clone(),
        state,
    };
    let with_policy = |id: &str, policy: PathBuf| Input::Direct {
        id: id.into(),
        policy,
        state: state(id, container, &[]).to_string(),
    };

    let huge_value = "x".repeat(1_000_000);
    let huge_state = {
        let mut s = state("adv-huge", container, &[]);
        s["annotations"]["org.example.padding"] = "y".repeat(1 << 20).into();
        s.to_string()
    };
    let array_state = {
        let s = state("adv-array", container, &[]);
        serde_json::json!([s["id"], s["pid"], s["bundle"], s["annotations"]]).to_string()
    };
    let without_bundle = {
        let mut s = state("adv-nobundle", container, &[]);
        s.as_object_mut().unwrap().remove("bundle");
        s.to_string()
    };
    let relative_bundle = {
        let mut s = state("adv-relbundle", container, &[]);
        s["bundle"] = "bundle-adv-relbundle".into();
        s.to_string()
    };
    let without_pid = {
        let mut s = state("adv-nopid", container, &[]);
        s.as_object_mut().unwrap().remove("pid");
        s.to_string()
    };
    // A bundle that is a symlink to another (valid) bundle.
    let symlinked_bundle = {
        let mut s = state("adv-bundlelink", container, &[]);
        let real = PathBuf::from(s["bundle"].as_str().unwrap());
        let link = lab.dir.join("bundle-link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        s["bundle"] = link.to_string_lossy().into_owned().into();
        s.to_string()
    };
    // config.json a symlink to a valid config elsewhere; config.json a FIFO.
    let config_symlink = state("adv-configlink", container, &[]);
    {
        let config = bundle_of(&config_symlink).join("config.json");
        let elsewhere = lab.dir.join("elsewhere-config.json");
        fs::rename(&config, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &config).unwrap();
    }
    let config_fifo = state("adv-configfifo", container, &[]);
    {
        let config = bundle_of(&config_fifo).join("config.json");
        fs::remove_file(&config).unwrap();
        mkfifo(&config);
    }
    // Policies: a symlink to the good one, a FIFO, writable by group, by others, owned by someone else.
    let policy_text = fs::read_to_string(&policy).unwrap();
    let policy_link = lab.dir.join("policy-link.toml");
    std::os::unix::fs::symlink(&policy, &policy_link).unwrap();
    let policy_fifo = lab.dir.join("policy-fifo.toml");
    mkfifo(&policy_fifo);
    let policy_group = lab.write_file("policy-group.toml", &policy_text, 0o620);
    let policy_others = lab.write_file("policy-others.toml", &policy_text, 0o602);
    let policy_nobody = lab.write_file("policy-nobody.toml", &policy_text, 0o600);
    std::os::unix::fs::chown(&policy_nobody, Some(65534), Some(65534)).unwrap();

    // Control: unspoiled, the same state and policy bring a tunnel up, so each row's refusal is its spoiled part's.
    let control = state("adv-control", container, &[("wg.profile", "lab")]).to_string();
    let policy_arg = policy.to_string_lossy().into_owned();
    lab.run_hook_direct(&["create-runtime", "--policy", &policy_arg], &control)
        .assert_success("the control create-runtime");
    lab.run_hook_direct(&["poststop", "--policy", &policy_arg], &control)
        .assert_success("the control poststop");
    lab.assert_nothing_left("adv-control");

    let s = |id: &str, ann: &[(&str, &str)]| state(id, container, ann).to_string();
    let pid_of = |id: &str, pid: u32| state(id, pid, &[]).to_string();
    let dead_s = format!("pid {dead}");
    let nac_s = format!("pid {not_a_container}");
    let rows = vec![
        // Annotations the CLI of an engine cannot pass.
        row(
            "profile with a NUL byte",
            direct("adv-nul", s("adv-nul", &[("wg.profile", "lab\0x")])),
            &["annotation wg.profile", "lab\\0x"],
        ),
        row(
            "wg.* key with a NUL byte",
            direct("adv-nulkey", s("adv-nulkey", &[("wg.\0", "x")])),
            &["wg.\\0", "unknown wg.* annotation"],
        ),
        row(
            "profile with a newline",
            direct(
                "adv-newline",
                s(
                    "adv-newline",
                    &[("wg.profile", "lab\nPostUp = touch /tmp/x")],
                ),
            ),
            &["annotation wg.profile", "lab\\nPostUp"],
        ),
        row(
            "wg.* key with a newline",
            direct(
                "adv-newlinekey",
                s("adv-newlinekey", &[("wg.profile\nx", "lab")]),
            ),
            &["wg.profile\\nx", "unknown wg.* annotation"],
        ),
        row(
            "profile of 1 MB",
            direct("adv-1mb", s("adv-1mb", &[("wg.profile", &huge_value)])),
            &["annotation wg.profile", "xxx"],
        ),
        row(
            "ports of 1 MB",
            direct(
                "adv-1mbports",
                s("adv-1mbports", &[("wg.ports", &huge_value)]),
            ),
            &["annotation wg.ports"],
        ),
        // The state JSON.
        row(
            "state truncated",
            direct("adv-trunc", {
                let full = s("adv-trunc", &[]);
                full[..full.len() / 2].to_owned()
            }),
            &["OCI state", "not valid"],
        ),
        row(
            "state larger than 1 MiB",
            direct("adv-huge", huge_state),
            &["OCI state", "larger than 1 MiB"],
        ),
        row(
            "state that is a JSON array",
            direct("adv-array", array_state),
            &["OCI state", "not a JSON object"],
        ),
        row(
            "state without bundle",
            direct("adv-nobundle", without_bundle),
            &["OCI state", "no bundle"],
        ),
        row(
            "state with a relative bundle",
            direct("adv-relbundle", relative_bundle),
            &["bundle-adv-relbundle", "not an absolute path"],
        ),
        row(
            "state without pid",
            direct("adv-nopid", without_pid),
            &["container adv-nopid", "no container pid"],
        ),
        row(
            "state with a dead pid",
            direct("adv-dead", pid_of("adv-dead", dead)),
            &[&dead_s, "not running"],
        ),
        row(
            "state with a pid that is not a container",
            direct("adv-nac", pid_of("adv-nac", not_a_container)),
            &[&nac_s, "mount namespace"],
        ),
        row(
            "state with the host's pid 1",
            direct("adv-pid1", pid_of("adv-pid1", 1)),
            &["pid 1", "not a container"],
        ),
        // The bundle.
        row(
            "bundle that is a symlink",
            direct("adv-bundlelink", symlinked_bundle),
            &["bundle-link", "symlink"],
        ),
        row(
            "config.json that is a symlink",
            direct("adv-configlink", config_symlink.to_string()),
            &["bundle-adv-configlink/config.json", "symlink"],
        ),
        row(
            "config.json that is a FIFO",
            direct("adv-configfifo", config_fifo.to_string()),
            &["bundle-adv-configfifo/config.json", "not a regular file"],
        ),
        // The policy.
        row(
            "policy that is a symlink",
            with_policy("adv-policylink", policy_link),
            &["policy-link.toml", "symlink"],
        ),
        row(
            "policy that is a FIFO",
            with_policy("adv-policyfifo", policy_fifo),
            &["policy-fifo.toml", "not a regular file"],
        ),
        row(
            "policy writable by group",
            with_policy("adv-policygroup", policy_group),
            &["policy-group.toml", "writable by group or others"],
        ),
        row(
            "policy writable by others",
            with_policy("adv-policyothers", policy_others),
            &["policy-others.toml", "writable by group or others"],
        ),
        row(
            "policy not owned by root",
            with_policy("adv-policynobody", policy_nobody),
            &["policy-nobody.toml", "not owned by root"],
        ),
    ];
    run_table(&lab, rows);
    // The sleepers' netns were never touched.
    for pid in [container, not_a_container] {
        let out = lab.run(&[
            "nsenter",
            &format!("--net=/proc/{pid}/ns/net"),
            "ip",
            "-o",
            "link",
        ]);
        out.assert_success("listing the sleeper's links");
        assert_eq!(parse_link_names(&out.stdout), ["lo"], "pid {pid}'s netns");
    }
}

/// Runs every row and panics once, listing each row that failed and why.
fn run_table(lab: &Lab, rows: Vec<Row>) {
    let mut failures = Vec::new();
    for row in &rows {
        let started = Instant::now();
        match run_row(lab, row) {
            Ok(line) => println!(
                "ok   {} ({:.1} s): {line}",
                row.name,
                started.elapsed().as_secs_f64()
            ),
            Err(why) => {
                println!("FAIL {}: {}", row.name, why.lines().next().unwrap_or(""));
                failures.push(format!("--- {} ---\n{why}", row.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// The hook's one line, or why the row failed.
fn run_row(lab: &Lab, row: &Row) -> Result<String, String> {
    let before = lab_files(lab);
    let (id, line, shown) = match &row.input {
        Input::Podman(opts) => {
            let run = lab.podman_run(opts);
            let shown = truncate(&run.to_string());
            let cid = run.cid.clone().ok_or(format!("no container id\n{shown}"))?;
            if run.success() {
                return Err(format!("podman run succeeded\n{shown}"));
            }
            if run.out.stdout.contains("workload-ran") {
                return Err(format!("the workload ran\n{shown}"));
            }
            // Podman writes one of its own for some networks (host); ours names the hook.
            let resolv_conf = fs::read_to_string(run.rootfs.join("etc/resolv.conf"));
            if resolv_conf.is_ok_and(|text| text.contains("wg-oci-hook")) {
                return Err(format!("the hook wrote resolv.conf\n{shown}"));
            }
            // Podman quotes the hook's stderr; every line of it must be the one error line.
            let hook_lines = run.out.stderr.matches("wg-oci-hook: ").count();
            let line = run
                .hook_error_line()
                .ok_or(format!("no `wg-oci-hook: container {cid}:` line\n{shown}"))?
                .to_owned();
            if hook_lines != 1 {
                return Err(format!("{hook_lines} hook lines, not one\n{shown}"));
            }
            (cid, line, shown)
        }
        Input::Direct { id, policy, state } => {
            lab.track_container_id(id);
            let policy = policy.to_string_lossy();
            let out = lab.run_hook_direct(&["create-runtime", "--policy", &policy], state);
            let shown = truncate(&out.to_string());
            if out.success() {
                // Undo what it made, so that the next rows start clean.
                lab.run_hook_direct(
                    &["poststop", "--policy", &lab.policy_path.to_string_lossy()],
                    state,
                );
                return Err(format!("the hook exited 0\n{shown}"));
            }
            let lines: Vec<&str> = out.stderr.lines().collect();
            if lines.len() != 1 || !lines[0].starts_with("wg-oci-hook: ") || !out.stdout.is_empty()
            {
                return Err(format!("stderr is not one `wg-oci-hook:` line\n{shown}"));
            }
            (id.clone(), lines[0].to_owned(), shown)
        }
    };
    for fragment in &row.expect {
        if !line.contains(fragment.as_str()) {
            return Err(format!(
                "the line does not name `{fragment}`: {line}\n{shown}"
            ));
        }
    }
    // Whatever a refused create made is gone by the time it exits; podman's teardown may lag a little.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = lab.leftovers(&id);
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("left behind: {}\n{shown}", left.join("; ")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = lab_files(lab);
    let new: Vec<&String> = after.difference(&before).collect();
    if !new.is_empty() {
        return Err(format!("new files in the lab dir: {new:?}\n{shown}"));
    }
    Ok(line)
}

/// Every path under the lab dir but podman's own (storage, per-run rootfs and cidfiles).
fn lab_files(lab: &Lab) -> BTreeSet<String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == "podman" || rel.starts_with("rootfs-") || rel.starts_with("run-") {
                continue;
            }
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            out.insert(rel);
            if is_dir {
                walk(&path, base, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&lab.dir, &lab.dir, &mut out);
    out
}

fn bundle_of(state: &serde_json::Value) -> PathBuf {
    PathBuf::from(state["bundle"].as_str().unwrap())
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
    assert!(fs::metadata(path).unwrap().permissions().mode() & 0o777 == 0o600);
}

/// The pid of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    pid
}

/// Outputs can hold 1 MB annotations: keep failure reports readable.
fn truncate(s: &str) -> String {
    if s.len() <= 4000 {
        return s.to_owned();
    }
    let mut end = 4000;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}
