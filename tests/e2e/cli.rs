//! End-to-end: the command lines of both binaries as an operator meets them: `--help` on every subcommand,
//! `--version`, usage errors that say what to type, and the wrapper's own `--wg-help`/`--wg-version` beside the
//! real runtime's `--help`, which stays runc's.

use crate::lab::{HOOK_BIN, WRAPPER_BIN};
use std::process::{Command, Output};

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("WG_OCI_HOOK_POLICY")
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_subcommand_has_help_on_stdout_and_exits_0() {
    for words in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["help", "status"],
        &["create-runtime", "--help"],
        &["poststop", "--help"],
        &["status", "--help"],
        &["gc", "--help"],
        &["check", "--help"],
        &["install", "--help"],
        &["install", "hooks", "--help"],
        &["install", "docker", "--help"],
        &["install", "containerd", "--help"],
        &["uninstall", "--help"],
        &["uninstall", "docker", "--help"],
    ] {
        let out = run(HOOK_BIN, words);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{words:?}: {out:?}");
        assert!(stdout.contains("Usage: wg-oci-hook"), "{words:?}: {stdout}");
        assert!(out.stderr.is_empty(), "{words:?}: {out:?}");
    }
    let out = run(HOOK_BIN, &["install", "docker", "--help"]);
    for flag in [
        "--daemon-json",
        "--name",
        "--profile",
        "--policy",
        "--dry-run",
    ] {
        assert!(text(&out.stdout).contains(flag), "{flag}: {out:?}");
    }
}

#[test]
fn version_is_the_package_version() {
    for flag in ["--version", "-V"] {
        let out = run(HOOK_BIN, &[flag]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            text(&out.stdout),
            format!("wg-oci-hook {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
    let out = run(WRAPPER_BIN, &["--wg-version"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        format!("wg-oci-runtime {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2_and_say_what_to_do() {
    for (words, needle) in [
        (&["chek"][..], "a similar subcommand exists: 'check'"),
        (&[], "Usage: wg-oci-hook"),
        (&["status", "a/b"], "CONTAINER-ID"),
        (
            &["install", "docker", "--name", ""],
            "a runtime needs a name",
        ),
        (
            &["install", "kubernetes"],
            "unrecognized subcommand 'kubernetes'",
        ),
        (
            &["--profile", "../x", "create-runtime"],
            "not a profile name",
        ),
        (
            &["gc", "--profile", "vpn"],
            "--profile means nothing to status or gc",
        ),
    ] {
        let out = run(HOOK_BIN, words);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{words:?}: {out:?}");
        assert!(stderr.contains(needle), "{words:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{words:?}: {out:?}");
    }
}

#[test]
fn the_wrapper_keeps_runc_help_and_has_its_own() {
    let out = run(WRAPPER_BIN, &["--wg-help"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for flag in ["--wg-profile", "--wg-policy", "--wg-runtime", "--wg-hook"] {
        assert!(stdout.contains(flag), "{flag}: {stdout}");
    }
    // The real runtime's help, exactly as runc prints it on stdout; a pointer to ours on stderr.
    let ours = run(WRAPPER_BIN, &["--help"]);
    let runc = run("runc", &["--help"]);
    assert_eq!(ours.status.code(), Some(0), "{ours:?}");
    assert_eq!(ours.stdout, runc.stdout);
    assert!(
        text(&ours.stderr).contains("wg-oci-runtime --wg-help"),
        "{ours:?}"
    );
    // `--version` is runc's too: engines parse it (docker info shows the runtime's version).
    let ours = run(WRAPPER_BIN, &["--version"]);
    assert_eq!(ours.stdout, run("runc", &["--version"]).stdout);
    assert!(ours.stderr.is_empty(), "{ours:?}");
}
