//! wg-oci-runtime as containerd-shim and podman call it, against a stand-in runtime that records what it was
//! given: the argv it was exec'd with, the config.json it found, and that exit codes, stdio and the process
//! itself (exec, not fork: signals reach the runtime) pass through. Fixtures are config.json files captured from
//! real engines on this machine (tests/fixtures/).

use crate::lab::{HOOK_BIN, WRAPPER_BIN};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("wgrt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bundle")).unwrap();
        // The stand-in runtime: records its pid, argv and the bundle's config.json, echoes stdin, and exits
        // with the status named by $FAKE_EXIT for `kill`.
        let fake = dir.join("fake-runc");
        fs::write(
            &fake,
            format!(
                "#!/bin/sh
echo \"pid $$\" >> {d}/calls
echo \"program $0\" >> {d}/calls
for a in \"$@\"; do echo \"arg $a\" >> {d}/calls; done
echo end >> {d}/calls
case \" $* \" in *\" create \"*) cp {d}/bundle/config.json {d}/seen-config.json ;; esac
case \" $* \" in *\" kill \"*) exit 7 ;; esac
case \" $* \" in *\" exec \"*) echo \"runtime-stdout\"; cat; echo runtime-stderr >&2 ;; esac
exit 0
",
                d = dir.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        Scratch { dir }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    fn config_path(&self) -> PathBuf {
        self.bundle().join("config.json")
    }

    fn write_config(&self, text: &str) {
        fs::write(self.config_path(), text).unwrap();
        fs::set_permissions(self.config_path(), fs::Permissions::from_mode(0o640)).unwrap();
    }

    fn wrapper(&self, ours: &[&str], runtime_args: &[&str], stdin: &str) -> Output {
        let fake = format!("--wg-runtime={}", self.dir.join("fake-runc").display());
        let mut args = vec![fake.as_str()];
        args.extend_from_slice(ours);
        args.extend_from_slice(runtime_args);
        self.wrapper_with_path(&args, stdin, None)
    }

    /// The wrapper with exactly `args` (no `--wg-runtime` added), and `PATH` when given.
    fn wrapper_with_path(&self, args: &[&str], stdin: &str, path: Option<&Path>) -> Output {
        use std::io::Write;
        let mut command = Command::new(WRAPPER_BIN);
        if let Some(path) = path {
            command.env("PATH", path);
        }
        let mut child = command
            .args(args)
            .env_remove("WG_OCI_HOOK_POLICY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        fs::write(self.dir.join("wrapper-pid"), pid.to_string()).unwrap();
        out
    }

    /// The program each recorded call ran as (`$0` of the stand-in runtime).
    fn programs(&self) -> Vec<String> {
        let text = fs::read_to_string(self.dir.join("calls")).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("program "))
            .map(str::to_owned)
            .collect()
    }

    /// Each recorded call: (pid, argv).
    fn calls(&self) -> Vec<(u32, Vec<String>)> {
        let text = fs::read_to_string(self.dir.join("calls")).unwrap_or_default();
        let mut calls = Vec::new();
        let (mut pid, mut argv) = (0, Vec::new());
        for line in text.lines() {
            if let Some(p) = line.strip_prefix("pid ") {
                pid = p.parse().unwrap();
            } else if let Some(a) = line.strip_prefix("arg ") {
                argv.push(a.to_owned());
            } else if line == "end" {
                calls.push((pid, std::mem::take(&mut argv)));
            }
        }
        calls
    }

    fn seen_config(&self) -> Value {
        serde_json::from_str(&fs::read_to_string(self.dir.join("seen-config.json")).unwrap())
            .unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The argv containerd-shim-runc-v2 gives runc for create (tests/fixtures/docker-20.10-runtime-calls.txt,
/// where Docker's runtimeArgs, here `--debug`, come first).
fn shim_create(s: &Scratch) -> Vec<String> {
    let bundle = s.bundle().display().to_string();
    let log = s.dir.join("log.json").display().to_string();
    let pid_file = s.dir.join("init.pid").display().to_string();
    strings(&[
        "--debug",
        "--root",
        "/run/docker/runtime-runc/moby",
        "--log",
        &log,
        "--log-format",
        "json",
        "create",
        "--bundle",
        &bundle,
        "--pid-file",
        &pid_file,
        "c0ffee",
    ])
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The config with our changes taken out again: what must equal the original.
fn without_our_changes(mut config: Value, added_annotation: bool) -> Value {
    let hooks = config["hooks"].as_object_mut().unwrap();
    for stage in ["createRuntime", "poststop"] {
        let list = hooks[stage].as_array_mut().unwrap();
        let ours = list.pop().unwrap();
        assert!(
            ours["path"].as_str().unwrap().ends_with("/wg-oci-hook"),
            "the last {stage} hook is not ours: {ours}"
        );
        if list.is_empty() {
            hooks.remove(stage);
        }
    }
    if hooks.is_empty() {
        config.as_object_mut().unwrap().remove("hooks");
    }
    if added_annotation {
        let annotations = config["annotations"].as_object_mut().unwrap();
        annotations.remove("wg.enable");
        if annotations.is_empty() {
            config.as_object_mut().unwrap().remove("annotations");
        }
    }
    config
}

#[track_caller]
fn assert_rewritten_keeping_everything(
    s: &Scratch,
    original: &str,
    added_annotation: bool,
    profile: Option<&str>,
) {
    let seen = s.seen_config();
    let hook = seen["hooks"]["createRuntime"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(hook["path"], HOOK_BIN, "{hook}");
    let args: Vec<&str> = hook["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mut want = vec!["wg-oci-hook"];
    if let Some(p) = profile {
        want.extend(["--profile", p]);
    }
    want.push("create-runtime");
    assert_eq!(args, want);
    assert_eq!(seen["annotations"]["wg.enable"], "true");
    let original: Value = serde_json::from_str(original).unwrap();
    assert_eq!(
        without_our_changes(seen.clone(), added_annotation),
        original
    );
    // Key order is kept too, so a diff of the two files shows only our hooks.
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let mut original_keys = keys(&original);
    for k in ["annotations", "hooks"] {
        if !original_keys.iter().any(|o| o == k) {
            original_keys.push(k.to_owned());
        }
    }
    let mut seen_keys = keys(&seen);
    seen_keys.sort();
    original_keys.sort();
    assert_eq!(seen_keys, original_keys);
    let mode = fs::metadata(s.config_path()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "config.json's mode changed");
}

#[test]
fn docker_shim_create_with_a_runtime_bound_profile() {
    let s = Scratch::new("docker");
    let original = fixture("docker-20.10-config.json");
    s.write_config(&original);
    let argv = shim_create(&s);
    let out = s.wrapper(
        &["--wg-profile=lab", &format!("--wg-hook={HOOK_BIN}")],
        &refs(&argv),
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let calls = s.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, argv, "the runtime got exactly the shim's argv");
    let wrapper_pid: u32 = fs::read_to_string(s.dir.join("wrapper-pid"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        calls[0].0, wrapper_pid,
        "the runtime replaced the wrapper (exec), so signals reach it"
    );
    assert_rewritten_keeping_everything(&s, &original, true, Some("lab"));
    // The create's stdio are the container's: nothing of ours may appear there.
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    // Docker's own prestart hook (libnetwork) is still there.
    let seen = s.seen_config();
    assert!(
        seen["hooks"]["prestart"]
            .to_string()
            .contains("libnetwork-setkey"),
        "{}",
        seen["hooks"]
    );
    // The shim reads runc's log: our line is there, in runc's JSON format.
    let log = fs::read_to_string(s.dir.join("log.json")).unwrap();
    let line: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(line["level"], "info");
    assert!(
        line["msg"]
            .as_str()
            .unwrap()
            .contains("container c0ffee: added"),
        "{log}"
    );
    assert!(line["time"].as_str().unwrap().ends_with('Z'));

    // start, state, delete: plain exec; config.json not touched again.
    let before = fs::read(s.config_path()).unwrap();
    for cmd in [
        ["start", "c0ffee"],
        ["state", "c0ffee"],
        ["delete", "c0ffee"],
    ] {
        let out = s.wrapper(
            &["--wg-profile=lab"],
            &["--root", "/run/x", cmd[0], cmd[1]],
            "",
        );
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            s.calls().last().unwrap().1,
            strings(&["--root", "/run/x", cmd[0], cmd[1]])
        );
    }
    assert_eq!(fs::read(s.config_path()).unwrap(), before);
}

#[test]
fn podman_create_with_the_annotation() {
    let s = Scratch::new("podman");
    let original = fixture("podman-4.3-config.json");
    let config: Value = serde_json::from_str(&original).unwrap();
    assert_eq!(
        config["annotations"]["wg.enable"], "true",
        "the podman fixture carries the annotation"
    );
    s.write_config(&original);
    let bundle = s.bundle().display().to_string();
    // As podman 4.3 (conmon) called runc on this machine (tests/fixtures/podman-4.3-runtime-calls-runc.txt).
    let log = s.dir.join("oci-log").display().to_string();
    let argv = strings(&[
        "--log-format=json",
        "--log",
        &log,
        "create",
        "--bundle",
        &bundle,
        "--pid-file",
        "/run/p",
        "--console-socket",
        "/tmp/conmon-term.x",
        "id1",
    ]);
    let out = s.wrapper(&[&format!("--wg-hook={HOOK_BIN}")], &refs(&argv), "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.calls()[0].1, argv);
    assert_rewritten_keeping_everything(&s, &original, false, None);
}

#[test]
fn containerd_create_with_a_pod_annotation() {
    let s = Scratch::new("containerd");
    let mut config: Value = serde_json::from_str(&fixture("containerd-config.json")).unwrap();
    // What containerd does with a pod annotation listed in pod_annotations.
    config["annotations"]["wg.enable"] = "true".into();
    let original = serde_json::to_string_pretty(&config).unwrap();
    s.write_config(&original);
    let argv = shim_create(&s);
    let out = s.wrapper(&[&format!("--wg-hook={HOOK_BIN}")], &refs(&argv), "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.calls()[0].1, argv);
    assert_rewritten_keeping_everything(&s, &original, false, None);
}

#[test]
fn a_container_that_is_not_enabled_keeps_its_config_byte_for_byte() {
    let s = Scratch::new("plain");
    let original = fixture("docker-20.10-config.json");
    s.write_config(&original);
    let argv = shim_create(&s);
    let out = s.wrapper(&[], &refs(&argv), "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read_to_string(s.config_path()).unwrap(), original);
    assert_eq!(s.calls()[0].1, argv);
}

#[test]
fn exit_codes_and_stdio_pass_through() {
    let s = Scratch::new("stdio");
    let out = s.wrapper(&[], &["kill", "id", "KILL"], "");
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = s.wrapper(&[], &["exec", "id", "sh"], "stdin-to-runtime\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "runtime-stdout\nstdin-to-runtime\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "runtime-stderr\n");
}

#[test]
fn a_bad_config_fails_create_with_one_line_and_never_runs_the_runtime() {
    let s = Scratch::new("bad");
    s.write_config("{\"annotations\": {\"wg.enable\": \"true\"}, \"hooks\": []}");
    let argv = shim_create(&s);
    let out = s.wrapper(&[], &refs(&argv), "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("hooks is not an object"), "{stderr}");
    assert!(s.calls().is_empty(), "the runtime ran");
    let log = fs::read_to_string(s.dir.join("log.json")).unwrap();
    assert!(log.contains("\"level\":\"error\""), "{log}");
}

/// A typo in the policy (or a policy that is not even TOML) must not keep `state`, `kill` and `delete` of
/// containers already running from reaching the runtime that created them: those read only the policy's
/// `runtime`, and without one fall back to runc, noting why in runc's log file.
#[test]
fn a_broken_policy_does_not_block_state_kill_or_delete() {
    let s = Scratch::new("typo");
    let fake = s.dir.join("fake-runc");
    let policy = s.dir.join("policy.toml");
    let policy_arg = format!("--wg-policy={}", policy.display());
    let good = format!(
        "runtime = {:?}\n[profiles.vpn]\nconfig = \"vpn.conf\"\n",
        fake.display().to_string()
    );
    // Created while the policy was fine: the runtime is the policy's.
    fs::write(&policy, &good).unwrap();
    s.write_config(&fixture("docker-20.10-config.json"));
    let argv = shim_create(&s);
    let mut args = vec![policy_arg.as_str()];
    args.extend(refs(&argv));
    let out = s.wrapper_with_path(&args, "", None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.programs(), [fake.display().to_string()]);

    // A typo: every other command still goes to the policy's runtime.
    fs::write(&policy, format!("{good}kill_swich = true\n")).unwrap();
    for (cmd, code) in [("state", 0), ("kill", 7), ("delete", 0)] {
        let out = s.wrapper_with_path(&[&policy_arg, "--root", "/run/x", cmd, "c0ffee"], "", None);
        assert_eq!(out.status.code(), Some(code), "{cmd}: {out:?}");
        assert!(out.stderr.is_empty(), "{cmd}: {out:?}");
        assert_eq!(
            s.calls().last().unwrap().1,
            strings(&["--root", "/run/x", cmd, "c0ffee"])
        );
        assert_eq!(s.programs().last().unwrap(), &fake.display().to_string());
    }
    // But a create reads the whole policy, and refuses it.
    let calls = s.calls().len();
    let out = s.wrapper_with_path(&args, "", None);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kill_swich"),
        "{out:?}"
    );
    assert_eq!(s.calls().len(), calls, "the runtime ran");

    // Not TOML at all: runc, found on PATH (here the stand-in again, named runc), and a note in runc's log.
    let bin = s.dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(&fake, bin.join("runc")).unwrap();
    fs::write(&policy, "runtime = [oops\n").unwrap();
    let log = s.dir.join("delete-log.json");
    let log_arg = log.display().to_string();
    let out = s.wrapper_with_path(
        &[
            &policy_arg,
            "--log",
            &log_arg,
            "--log-format",
            "json",
            "delete",
            "c0ffee",
        ],
        "",
        Some(&bin),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(
        s.programs().last().unwrap(),
        &bin.join("runc").display().to_string()
    );
    let note = fs::read_to_string(&log).unwrap();
    assert_eq!(note.lines().count(), 1, "{note}");
    let line: Value = serde_json::from_str(note.trim_end()).unwrap();
    let msg = line["msg"].as_str().unwrap();
    assert!(
        msg.contains(&policy.display().to_string()) && msg.contains("runc"),
        "{note}"
    );
}
