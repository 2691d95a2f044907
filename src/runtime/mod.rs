//! `wg-oci-runtime`: a runc-compatible wrapper for engines that do not read hooks.d (Docker, containerd).
//!
//! For `create` and `run` of a container that asks for a tunnel it adds our createRuntime and poststop hooks to
//! the bundle's config.json, then execs the real runtime with the arguments it was given (less our own leading
//! `--wg-*` options); every other command is a plain exec, which no state of the policy can fail. This is
//! nvidia-container-runtime's approach: the engine keeps talking to "runc", and exit codes, stdio and signals
//! pass through because the real runtime replaces this process.
//!
//! A container gets the hooks when it carries the annotation `wg.enable` with any value (Docker 24+
//! `--annotation`, containerd pod annotations; the hook tells on from off and refuses the rest), or when its
//! runtime binds a profile: `runtimeArgs: ["--wg-profile=pia"]` in Docker's config, so that `docker run
//! --runtime wg-pia` is enough, or for containerd (whose runc options take no arguments) a `BinaryName` that is
//! a link named `wg-oci-runtime@pia`.

mod help;
mod hooks;
mod log;
mod options;

pub use help::command;
pub use hooks::{add_hooks, HookCall};
pub use options::{bound_profile, runtime_key, split_options, Options, BOUND_NAME_PREFIX};

use crate::oci::config::ConfigFile;
use crate::oci::runc_args::{parse_runc_args, RuncCommand};
use crate::sys::command::resolve_program;
use log::Logger;
use options::{hook_path, named_policy, runtime_for_create, runtime_for_others, HOOK_NAME};
use serde_json::Value;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Reads, changes and atomically rewrites `<bundle>/config.json` when the container is enabled.
pub fn rewrite_bundle_config(bundle: &Path, call: &HookCall) -> Result<bool, String> {
    let file = ConfigFile::read(bundle)?;
    let shown = file.path.display();
    let mut config: Value =
        serde_json::from_slice(&file.bytes).map_err(|e| format!("{shown}: {e}"))?;
    if !add_hooks(&mut config, call).map_err(|e| format!("{shown}: {e}"))? {
        return Ok(false);
    }
    let out = serde_json::to_vec(&config).map_err(|e| format!("{shown}: {e}"))?;
    file.rewrite(&out)?;
    Ok(true)
}

/// Everything a `create` or `run` needs before the real runtime starts: that runtime, and our hooks in the
/// bundle's config.json when the container is to have them.
fn prepare_create(
    opts: &Options,
    argv0: &str,
    cmd: &RuncCommand,
    logger: &mut Logger,
) -> Result<String, String> {
    let runtime = runtime_for_create(opts)?;
    let call = HookCall {
        hook: hook_path(opts).map_err(|e| format!("finding {HOOK_NAME}: {e}"))?,
        policy: named_policy(opts),
        profile: bound_profile(opts, argv0)?,
    };
    let bundle = PathBuf::from(cmd.bundle.clone().unwrap_or_else(|| ".".into()));
    if rewrite_bundle_config(&bundle, &call)? {
        logger.info(&format!(
            "container {}: added {} hooks to {}/config.json",
            cmd.container_id.as_deref().unwrap_or("?"),
            call.hook.display(),
            bundle.display()
        ));
    }
    Ok(runtime)
}

/// The whole program (`argv` with argv[0]). Returns only on failure: on success the real runtime has replaced
/// this process. Only `create` and `run` read the policy and the bundle; every other command is a plain exec.
pub fn run(argv: Vec<String>) -> ExitCode {
    let (argv0, args) = argv
        .split_first()
        .map_or(("", &[][..]), |(a, r)| (a.as_str(), r));
    let (opts, runtime_args) = match split_options(args) {
        Ok(split) => split,
        Err(e) => {
            eprintln!("wg-oci-runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match opts.ask {
        Some(options::Ask::Help) => {
            println!("{}", command().render_long_help());
            return ExitCode::SUCCESS;
        }
        Some(options::Ask::Version) => {
            println!("wg-oci-runtime {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        None => {}
    }
    // `--help` is the real runtime's; on stderr, so that its help on stdout stays as it is, where ours is.
    if matches!(runtime_args, [a] if a == "--help" || a == "-h" || a == "help") {
        eprintln!("wg-oci-runtime: a runc wrapper; its own options: wg-oci-runtime --wg-help\n");
    }
    let cmd = parse_runc_args(runtime_args);
    let mut logger = Logger::new(&cmd);
    let runtime = if matches!(cmd.subcommand.as_deref(), Some("create" | "run")) {
        match prepare_create(&opts, argv0, &cmd, &mut logger) {
            Ok(runtime) => runtime,
            Err(e) => {
                logger.error(&format!(
                    "container {}: {e}",
                    cmd.container_id.as_deref().unwrap_or("?")
                ));
                return ExitCode::FAILURE;
            }
        }
    } else {
        let (runtime, note) = runtime_for_others(&opts);
        if let Some(note) = note {
            logger.warn(&note);
        }
        runtime
    };
    let program = match resolve_program(&runtime) {
        Ok(p) => p,
        Err(e) => {
            logger.error(&format!("the real runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let err = Command::new(&program)
        .arg0(OsString::from(&runtime))
        .args(runtime_args)
        .exec();
    logger.error(&format!("exec {}: {err}", program.display()));
    ExitCode::FAILURE
}
