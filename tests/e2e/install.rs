//! Issue 15, item 4, end to end: `wg-oci-hook install` and `uninstall` for each engine, the built binary run as
//! an operator runs it, into a directory of the test's own (never /etc: every run names its file), each twice to
//! prove a second run changes nothing. `--dry-run` prints the change as `diff -u` (which `patch` applies to give
//! what install writes) and writes nothing. Uninstall gives the file back as it was before the install, byte for
//! byte (daemon.json: when it was in serde_json's layout; else the same JSON), the previous files kept as
//! timestamped backups with their mode. containerd 1.6 (`containerd config dump`) reads every config.toml
//! written. Needs root, containerd and patch.

use crate::lab::{HOOK_BIN, WRAPPER_BIN};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of the test's own, removed at the end.
struct Root(PathBuf);

impl Root {
    fn new(test: &str) -> Root {
        let dir = std::env::temp_dir().join(format!("wgoh-install-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Root(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The file names in `dir` (under the root), sorted.
    fn names(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.0.join(dir))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn backups(&self, dir: &str) -> Vec<PathBuf> {
        self.names(dir)
            .into_iter()
            .filter(|n| n.contains(".wg-oci-hook-") && n.ends_with(".bak"))
            .map(|n| self.0.join(dir).join(n))
            .collect()
    }

    /// wg-oci-hook and wg-oci-runtime side by side in `<root>/bin`, as in /usr/local/bin: a profile's link is made
    /// there, not beside the build's binaries that other tests run.
    fn bin(&self) -> PathBuf {
        let bin = self.path("bin");
        fs::create_dir_all(&bin).unwrap();
        for (from, name) in [(HOOK_BIN, "wg-oci-hook"), (WRAPPER_BIN, "wg-oci-runtime")] {
            if !bin.join(name).exists() {
                fs::hard_link(from, bin.join(name))
                    .or_else(|_| fs::copy(from, bin.join(name)).map(drop))
                    .unwrap();
            }
        }
        bin.join("wg-oci-hook")
    }

    /// A policy with the profiles `vpn` and `work` (what `--profile` is checked against).
    fn policy(&self) -> PathBuf {
        let path = self.path("policy.toml");
        fs::write(
            &path,
            "default_profile = \"vpn\"\n[profiles.vpn]\nconfig = \"/etc/wg-oci-hook/vpn.conf\"\n\
             [profiles.work]\nconfig = \"/etc/wg-oci-hook/work.conf\"\n",
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run_with(bin: &Path, args: &[&str], policy: Option<&Path>) -> Out {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_remove("WG_OCI_HOOK_POLICY");
    if let Some(p) = policy {
        cmd.env("WG_OCI_HOOK_POLICY", p);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Out {
    run_with(Path::new(HOOK_BIN), args, None)
}

#[track_caller]
fn ok(out: Out) -> Out {
    assert_eq!(out.code, Some(0), "{out}");
    out
}

/// A refusal: exit 1, one line on stderr holding `needle`, nothing on stdout.
#[track_caller]
fn refused(out: Out, needle: &str) {
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains(needle), "{needle:?}\n{out}");
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
    assert!(out.stdout.is_empty(), "{out}");
}

/// `diff` applied by `patch` to `old` (None: no file) gives `new`: the dry run's diff is a real one.
fn assert_patch_gives(diff: &str, old: Option<&[u8]>, new: &[u8]) {
    let root = Root::new(&format!("patch-{}", diff.len()));
    let file = root.path("file");
    fs::write(&file, old.unwrap_or_default()).unwrap();
    let diff_path = root.path("diff");
    fs::write(&diff_path, diff).unwrap();
    let out = Command::new("patch")
        .arg("--quiet")
        .arg(&file)
        .arg(&diff_path)
        .output()
        .expect("patch (Debian: patch)");
    assert!(out.status.success(), "patch: {out:?}\n{diff}");
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        String::from_utf8_lossy(new),
        "the dry run's diff does not give what install writes\n{diff}"
    );
}

/// containerd 1.6 reads the file: `containerd config dump` (no daemon) decodes it with the CRI plugin's config.
fn containerd_reads(config: &Path) -> String {
    let out = Command::new("containerd")
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .expect("containerd (Debian: containerd)");
    let dump = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "containerd does not read {}: {}\n{}",
        config.display(),
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(config).unwrap_or_default()
    );
    dump
}

// ----- hooks.d (podman, CRI-O) ---------------------------------------------------------------------------------

#[test]
fn hooks_install_and_uninstall_twice_each_and_a_dry_run_writes_nothing() {
    let root = Root::new("hooks");
    let dir = root.path("hooks.d");
    let d = dir.to_string_lossy().into_owned();
    let dry = ok(run(&["install", "hooks", "--dir", &d, "--dry-run"]));
    assert!(root.names("hooks.d").is_empty(), "the dry run wrote");
    assert_eq!(dry.stdout.matches("--- /dev/null\n").count(), 2, "{dry}");
    assert!(dry.stderr.contains("dry run: nothing written"), "{dry}");

    let first = ok(run(&["install", "hooks", "--dir", &d]));
    assert!(first.stdout.contains("wrote"), "{first}");
    let files = root.names("hooks.d");
    assert_eq!(
        files,
        [
            "wg-oci-hook-create-runtime.json",
            "wg-oci-hook-poststop.json"
        ]
    );
    for name in &files {
        assert_patch_gives(
            &dry.stdout
                .split("--- /dev/null\n")
                .find(|part| part.contains(name.as_str()))
                .map(|part| format!("--- /dev/null\n{part}"))
                .unwrap(),
            None,
            &fs::read(dir.join(name)).unwrap(),
        );
    }
    let written: Vec<Vec<u8>> = files
        .iter()
        .map(|n| fs::read(dir.join(n)).unwrap())
        .collect();
    let again = ok(run(&["install", "podman", "--dir", &d]));
    assert!(again.stdout.contains("nothing to change"), "{again}");
    let dry = ok(run(&["install", "hooks", "--dir", &d, "--dry-run"]));
    assert!(dry.stdout.is_empty(), "{dry}");
    assert_eq!(
        files
            .iter()
            .map(|n| fs::read(dir.join(n)).unwrap())
            .collect::<Vec<_>>(),
        written
    );

    let dry = ok(run(&["uninstall", "hooks", "--dir", &d, "--dry-run"]));
    assert_eq!(dry.stdout.matches("+++ /dev/null\n").count(), 2, "{dry}");
    assert_eq!(root.names("hooks.d"), files, "the dry run removed");
    let gone = ok(run(&["uninstall", "hooks", "--dir", &d]));
    assert!(gone.stdout.contains("removed"), "{gone}");
    assert!(
        root.names("hooks.d").is_empty(),
        "{:?}",
        root.names("hooks.d")
    );
    let again = ok(run(&["uninstall", "hooks", "--dir", &d]));
    assert!(again.stdout.contains("nothing to remove"), "{again}");

    // A file of that name that runs something else is not ours to remove.
    fs::write(
        dir.join("wg-oci-hook-poststop.json"),
        r#"{"version": "1.0.0", "hook": {"path": "/usr/bin/other"}, "stages": ["poststop"]}"#,
    )
    .unwrap();
    refused(
        run(&["uninstall", "hooks", "--dir", &d]),
        "wg-oci-hook-poststop.json: not wg-oci-hook's (its hook runs /usr/bin/other)",
    );
    assert_eq!(root.names("hooks.d"), ["wg-oci-hook-poststop.json"]);
    refused(
        run(&["install", "hooks", "--dir", &d, "--profile", "vpn"]),
        "--profile: hooks.d enables containers by their annotations",
    );
}

// ----- Docker --------------------------------------------------------------------------------------------------

#[test]
fn docker_install_and_uninstall_keep_daemon_json_its_mode_owner_and_bytes() {
    let root = Root::new("docker");
    fs::create_dir(root.path("docker")).unwrap();
    let daemon_json = root.path("docker/daemon.json");
    let j = daemon_json.to_string_lossy().into_owned();
    // In serde_json's layout: uninstall gives back the same bytes.
    let original =
        "{\n  \"log-level\": \"warn\",\n  \"runtimes\": {\n    \"nvidia\": {\n      \"path\": \
                    \"nvidia-container-runtime\"\n    }\n  },\n  \"registry-mirrors\": [\n    \
                    \"https://mirror.invalid\"\n  ]\n}\n";
    fs::write(&daemon_json, original).unwrap();
    fs::set_permissions(&daemon_json, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&daemon_json, Some(0), Some(4242)).unwrap();
    let mode_and_owner = || {
        let meta = fs::metadata(&daemon_json).unwrap();
        (meta.mode() & 0o7777, meta.uid(), meta.gid())
    };

    let policy = root.policy();
    let p = policy.to_string_lossy().into_owned();
    let install = |dry: bool| {
        let mut args = vec!["install", "docker", "--daemon-json", &j, "--profile", "vpn"];
        args.extend(["--policy", &p]);
        if dry {
            args.push("--dry-run");
        }
        ok(run(&args))
    };
    let dry = install(true);
    assert_eq!(fs::read_to_string(&daemon_json).unwrap(), original);
    assert!(root.backups("docker").is_empty(), "a dry run made a backup");
    assert!(
        dry.stdout.starts_with(&format!("--- {j}\n+++ {j}\n@@ ")),
        "{dry}"
    );

    let first = install(false);
    assert!(first.stdout.contains("added runtime \"wg-vpn\""), "{first}");
    assert!(first.stdout.contains("restart dockerd"), "{first}");
    let installed = fs::read(&daemon_json).unwrap();
    assert_patch_gives(&dry.stdout, Some(original.as_bytes()), &installed);
    assert_eq!(mode_and_owner(), (0o640, 0, 4242));
    let merged: serde_json::Value = serde_json::from_slice(&installed).unwrap();
    assert_eq!(merged["log-level"], "warn");
    assert_eq!(
        merged["runtimes"]["nvidia"]["path"],
        "nvidia-container-runtime"
    );
    assert_eq!(
        merged["runtimes"]["wg-vpn"],
        serde_json::json!({
            "path": WRAPPER_BIN,
            "runtimeArgs": ["--wg-profile=vpn", format!("--wg-policy={p}")]
        })
    );
    let backups = root.backups("docker");
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(fs::read_to_string(&backups[0]).unwrap(), original);
    assert_eq!(fs::metadata(&backups[0]).unwrap().mode() & 0o7777, 0o640);
    assert!(
        first.stdout.contains(&*backups[0].to_string_lossy()),
        "{first}"
    );

    let again = install(false);
    assert!(again.stdout.contains("nothing to change"), "{again}");
    assert_eq!(fs::read(&daemon_json).unwrap(), installed);
    assert_eq!(
        root.backups("docker").len(),
        1,
        "a second backup for no change"
    );

    let uninstall = |dry: bool| {
        let mut args = vec![
            "uninstall",
            "docker",
            "--daemon-json",
            &j,
            "--profile",
            "vpn",
        ];
        if dry {
            args.push("--dry-run");
        }
        ok(run(&args))
    };
    let dry = uninstall(true);
    assert_eq!(fs::read(&daemon_json).unwrap(), installed);
    assert_patch_gives(&dry.stdout, Some(&installed), original.as_bytes());
    let gone = uninstall(false);
    assert!(gone.stdout.contains("removed runtime \"wg-vpn\""), "{gone}");
    assert_eq!(fs::read_to_string(&daemon_json).unwrap(), original);
    assert_eq!(mode_and_owner(), (0o640, 0, 4242));
    assert_eq!(root.backups("docker").len(), 2);
    let again = uninstall(false);
    assert!(again.stdout.contains("nothing to remove"), "{again}");
    assert_eq!(fs::read_to_string(&daemon_json).unwrap(), original);
    assert_eq!(root.backups("docker").len(), 2);

    // Someone else's runtime of that name is left alone, both ways.
    for verb in ["install", "uninstall"] {
        refused(
            run(&[verb, "docker", "--daemon-json", &j, "--name", "nvidia"]),
            "runs nvidia-container-runtime, not wg-oci-runtime",
        );
    }
    assert_eq!(fs::read_to_string(&daemon_json).unwrap(), original);
}

#[test]
fn docker_a_missing_daemon_json_is_made_and_left_as_an_empty_object() {
    let root = Root::new("docker-new");
    let daemon_json = root.path("etc/docker/daemon.json");
    let j = daemon_json.to_string_lossy().into_owned();
    let dry = ok(run(&[
        "install",
        "docker",
        "--daemon-json",
        &j,
        "--dry-run",
    ]));
    assert!(dry.stdout.starts_with("--- /dev/null\n"), "{dry}");
    assert!(!root.path("etc").exists(), "the dry run made a directory");
    for _ in 0..2 {
        ok(run(&["install", "docker", "--daemon-json", &j]));
    }
    assert_eq!(fs::metadata(&daemon_json).unwrap().mode() & 0o7777, 0o644);
    let made: serde_json::Value = serde_json::from_slice(&fs::read(&daemon_json).unwrap()).unwrap();
    assert_eq!(
        made,
        serde_json::json!({"runtimes": {"wg": {"path": WRAPPER_BIN}}})
    );
    assert!(
        root.backups("etc/docker").is_empty(),
        "nothing was there to back up"
    );
    for _ in 0..2 {
        ok(run(&["uninstall", "docker", "--daemon-json", &j]));
    }
    assert_eq!(fs::read_to_string(&daemon_json).unwrap(), "{}\n");
    // A file that is not JSON: one line naming it, nothing written.
    fs::write(&daemon_json, "{\"runtimes\": \n").unwrap();
    refused(
        run(&["install", "docker", "--daemon-json", &j]),
        &format!("{j}: EOF while parsing"),
    );
    assert_eq!(
        fs::read_to_string(&daemon_json).unwrap(),
        "{\"runtimes\": \n"
    );
}

// ----- containerd ----------------------------------------------------------------------------------------------

fn fixture(name: &str) -> String {
    fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// Install twice, uninstall twice into `<root>/containerd/config.toml` holding `original` (None: no file), with
/// a dry run before each; returns what install wrote.
fn containerd_round_trip(test: &str, original: Option<&str>, dump: bool) -> String {
    let root = Root::new(test);
    fs::create_dir(root.path("containerd")).unwrap();
    let config = root.path("containerd/config.toml");
    let c = config.to_string_lossy().into_owned();
    if let Some(text) = original {
        fs::write(&config, text).unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let read = || fs::read(&config).ok();

    let dry = ok(run(&["install", "containerd", "--config", &c, "--dry-run"]));
    assert_eq!(
        read().as_deref(),
        original.map(str::as_bytes),
        "{test}: the dry run wrote"
    );
    assert!(
        root.backups("containerd").is_empty(),
        "{test}: the dry run made a backup"
    );
    assert!(
        dry.stderr.contains("would add runtime handler \"wg\""),
        "{test}: {dry}"
    );

    let first = ok(run(&["install", "containerd", "--config", &c]));
    assert!(
        first.stdout.contains("added runtime handler \"wg\""),
        "{test}: {first}"
    );
    assert!(
        first.stdout.contains("restart containerd"),
        "{test}: {first}"
    );
    let installed = read().unwrap();
    assert_patch_gives(&dry.stdout, original.map(str::as_bytes), &installed);
    if original.is_some() {
        assert_eq!(
            fs::metadata(&config).unwrap().mode() & 0o7777,
            0o600,
            "{test}"
        );
        assert_eq!(root.backups("containerd").len(), 1, "{test}");
    }
    let text = String::from_utf8(installed.clone()).unwrap();
    if dump {
        let dump = containerd_reads(&config);
        assert!(
            dump.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wg.options]"),
            "{test}: containerd does not see the handler\n{dump}"
        );
    }

    let again = ok(run(&["install", "containerd", "--config", &c]));
    assert!(
        again
            .stdout
            .contains("is already installed: nothing to change"),
        "{test}: {again}"
    );
    assert_eq!(
        read().unwrap(),
        installed,
        "{test}: the second install changed it"
    );
    let dry = ok(run(&["install", "containerd", "--config", &c, "--dry-run"]));
    assert!(dry.stdout.is_empty(), "{test}: {dry}");

    let dry = ok(run(&[
        "uninstall",
        "containerd",
        "--config",
        &c,
        "--dry-run",
    ]));
    assert_eq!(read().unwrap(), installed, "{test}: the dry run wrote");
    let gone = ok(run(&["uninstall", "containerd", "--config", &c]));
    assert!(
        gone.stdout.contains("removed runtime handler \"wg\""),
        "{test}: {gone}"
    );
    let left = read().unwrap();
    assert_patch_gives(&dry.stdout, Some(&installed), &left);
    match original {
        Some(original) => assert_eq!(String::from_utf8(left).unwrap(), original, "{test}"),
        None => assert_eq!(left, b"version = 2\n", "{test}"),
    }
    if dump {
        containerd_reads(&config);
    }
    let again = ok(run(&["uninstall", "containerd", "--config", &c]));
    assert!(
        again.stdout.contains("nothing to remove"),
        "{test}: {again}"
    );
    text
}

#[test]
fn containerd_config_default_of_1_6_is_edited_in_place_and_given_back() {
    let text = containerd_round_trip(
        "cd-default",
        Some(&fixture("containerd-1.6-config-default.toml")),
        true,
    );
    assert_eq!(
        text.matches(".containerd.runtimes.wg]").count(),
        1,
        "{text}"
    );
}

#[test]
fn containerd_debians_shipped_config_and_a_missing_one() {
    containerd_round_trip(
        "cd-debian",
        Some(&fixture("containerd-1.6-debian-config.toml")),
        true,
    );
    let made = containerd_round_trip("cd-missing", None, true);
    assert!(made.starts_with("version = 2\n"), "{made}");
}

#[test]
fn containerd_2_version_3_config_is_edited_in_place_and_given_back() {
    // containerd 1.6 does not know version 3's plugin names: read by toml here, not by containerd.
    let text = containerd_round_trip(
        "cd-v3",
        Some(&fixture("containerd-2.x-config-v3.toml")),
        false,
    );
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let handler = &doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["wg"];
    assert_eq!(
        handler["options"]["SystemdCgroup"].as_bool(),
        Some(true),
        "{text}"
    );
    assert_eq!(
        handler["pod_annotations"][0].as_str(),
        Some("wg.*"),
        "{text}"
    );
}

#[test]
fn containerd_profile_gets_its_link_and_uninstall_takes_both_away() {
    let root = Root::new("cd-profile");
    let hook = root.bin();
    let policy = root.policy();
    let config = root.path("config.toml");
    let c = config.to_string_lossy().into_owned();
    let original = fixture("containerd-1.6-config-default.toml");
    fs::write(&config, &original).unwrap();
    let link = root.path("bin/wg-oci-runtime@vpn");

    let install = |profile: &str, dry: bool| {
        let mut args = vec![
            "install",
            "containerd",
            "--config",
            &c,
            "--profile",
            profile,
        ];
        if dry {
            args.push("--dry-run");
        }
        run_with(&hook, &args, Some(&policy))
    };
    let dry = ok(install("vpn", true));
    assert!(dry.stderr.contains("would link"), "{dry}");
    assert!(
        fs::symlink_metadata(&link).is_err(),
        "the dry run made the link"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), original);

    let first = ok(install("vpn", false));
    assert!(
        first.stdout.contains("added runtime handler \"wg-vpn\""),
        "{first}"
    );
    assert!(
        first.stdout.contains(&format!("linked {}", link.display())),
        "{first}"
    );
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("wg-oci-runtime"));
    let installed = fs::read_to_string(&config).unwrap();
    assert!(
        installed.contains(&format!("BinaryName = \"{}\"", link.display())),
        "{installed}"
    );
    let dump = containerd_reads(&config);
    assert!(dump.contains(".containerd.runtimes.wg-vpn]"), "{dump}");
    let again = ok(install("vpn", false));
    assert!(again.stdout.contains("nothing to change"), "{again}");
    assert_eq!(fs::read_to_string(&config).unwrap(), installed);

    // A profile the policy does not have: one line naming the policy and what it has; nothing written.
    refused(
        install("nope", false),
        &format!(
            "install containerd: --profile nope: {} has no profile \"nope\" (it has \"vpn\", \"work\")",
            policy.display()
        ),
    );
    let missing = root.path("missing.toml");
    refused(
        run_with(
            &hook,
            &["install", "containerd", "--config", &c, "--profile", "vpn"],
            Some(&missing),
        ),
        &format!(
            "--profile vpn: the policy does not load: {}: No such file",
            missing.display()
        ),
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), installed);
    assert!(!root.path("bin/wg-oci-runtime@nope").exists());

    let uninstall = |dry: bool| {
        let mut args = vec![
            "uninstall",
            "containerd",
            "--config",
            &c,
            "--profile",
            "vpn",
        ];
        if dry {
            args.push("--dry-run");
        }
        run_with(&hook, &args, None)
    };
    let dry = ok(uninstall(true));
    assert!(
        dry.stderr
            .contains(&format!("would remove the link {}", link.display())),
        "{dry}"
    );
    assert!(fs::symlink_metadata(&link).is_ok());
    let gone = ok(uninstall(false));
    assert!(
        gone.stdout
            .contains(&format!("removed the link {}", link.display())),
        "{gone}"
    );
    assert!(
        fs::symlink_metadata(&link).is_err(),
        "the link is still there"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), original);
    let again = ok(uninstall(false));
    assert!(again.stdout.contains("nothing to remove"), "{again}");
    // Left: the binaries, the policy, the config and its two backups (install's, uninstall's).
    assert_eq!(root.names("bin"), ["wg-oci-hook", "wg-oci-runtime"]);
    assert_eq!(root.backups("").len(), 2, "{:?}", root.names(""));
    assert_eq!(root.names("").len(), 5, "{:?}", root.names(""));
}

#[test]
fn containerd_refusals_are_one_line_and_write_nothing() {
    let root = Root::new("cd-refused");
    let config = root.path("config.toml");
    let c = config.to_string_lossy().into_owned();
    let v1 = "[plugins.cri.containerd]\n  snapshotter = \"overlayfs\"\n";
    fs::write(&config, v1).unwrap();
    refused(
        run(&["install", "containerd", "--config", &c]),
        &format!("{c}: no `version` key, so containerd reads it as config version 1"),
    );
    fs::write(
        &config,
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\nx = 1\n",
    )
    .unwrap();
    refused(
        run(&["install", "containerd", "--config", &c]),
        &format!("{c}:2:"),
    );
    fs::write(&config, v1).unwrap();
    refused(
        run(&[
            "install",
            "containerd",
            "--config",
            &c,
            "--policy",
            "/p.toml",
        ]),
        "--policy cannot reach wg-oci-runtime",
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), v1);
    assert_eq!(root.names(""), ["config.toml"]);
    // An empty name is a usage error (exit 2), for every engine.
    for engine in ["docker", "containerd"] {
        let out = run(&["install", engine, "--name", ""]);
        assert_eq!(out.code, Some(2), "{out}");
        assert!(out.stderr.contains("a runtime needs a name"), "{out}");
    }
}
