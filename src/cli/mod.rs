//! Command line: `wg-oci-hook [--policy PATH] create-runtime|poststop`, the OCI state JSON on stdin.

pub mod args;
mod check;
pub mod install;
mod logging;
mod status;

use crate::config::annotations;
use crate::config::policy::{self, Policy};
use crate::hook;
use crate::oci::state::ContainerState;
use args::{CheckArgs, Cli, Command, StatusArgs, SuperviseArgs, TunnelDaemonArgs};
use clap::Parser;
use std::process::ExitCode;

/// The whole program; `main` only maps this to the process exit. Errors are one line on stderr, which
/// runc copies into the engine's error message.
pub fn run(args: impl IntoIterator<Item = String>) -> ExitCode {
    let started = std::time::Instant::now();
    let args = match Cli::try_parse_from(std::iter::once("wg-oci-hook".to_owned()).chain(args)) {
        Ok(args) => args,
        // Help and version on stdout with 0; a usage error on stderr with 2 and what to type instead.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    if args.profile.is_some() && matches!(args.command, Command::Gc | Command::Status(_)) {
        eprintln!("wg-oci-hook: --profile means nothing to status or gc");
        return ExitCode::from(2);
    }
    let device = args.cdi_device.as_deref();
    if device.is_some() && !matches!(args.command, Command::CreateRuntime | Command::Poststop) {
        eprintln!(
            "wg-oci-hook: --cdi-device is for create-runtime and poststop, which a CDI device runs"
        );
        return ExitCode::from(2);
    }
    // A device binds its profile as a runtime wrapper's --profile does.
    let bound_profile = args.profile.as_deref().or(device);
    let policy_path = policy::path(args.policy.as_deref());
    // A container's hook reads its state first: a container that did not ask for a tunnel costs no policy read.
    let hook_stage = |create: bool| match read_state(create, device) {
        Ok(Some(state)) => Ok(Work::Hook { create, state }),
        Ok(None) => Err(ExitCode::SUCCESS),
        Err(e) => Err(fail(&e)),
    };
    let work = match args.command {
        Command::CreateRuntime => hook_stage(true),
        Command::Poststop => hook_stage(false),
        Command::Status(StatusArgs { id, json }) => Ok(Work::Status { id, json }),
        Command::Gc => Ok(Work::Gc),
        // Loads the policy itself: a policy that does not load is a problem to report like the others.
        Command::Check(CheckArgs { json, cdi_dirs }) => {
            return check::run(&policy_path, args.profile.as_deref(), &cdi_dirs, json);
        }
        // No policy, no logger: the hook configures it, and its stdio is /dev/null.
        Command::TunnelDaemon(TunnelDaemonArgs {
            name,
            mtu,
            container_pid,
        }) => {
            return match crate::wg::daemon::run(&name, mtu, container_pid) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("tunnel-daemon {name}: {e}")),
            };
        }
        Command::Supervise(SuperviseArgs { key }) => Ok(Work::Supervise { key }),
        Command::Install(engine) => {
            return install::run(
                &engine,
                false,
                args.policy.as_deref(),
                args.profile.as_deref(),
            )
        }
        Command::Uninstall(engine) => {
            return install::run(
                &engine,
                true,
                args.policy.as_deref(),
                args.profile.as_deref(),
            )
        }
    };
    let work = match work {
        Ok(work) => work,
        Err(exit) => return exit,
    };
    let policy = match Policy::load(&policy_path) {
        Ok(policy) => policy,
        Err(e) => {
            return match &work {
                Work::Hook { state, .. } => {
                    fail(&format!("container {}: reading the policy: {e}", state.id))
                }
                _ => fail(&e),
            }
        }
    };
    match work {
        Work::Status { id, json } => status::run(&policy, id.as_deref(), json),
        Work::Gc => {
            logging::init(policy.log_level);
            gc(&policy)
        }
        Work::Supervise { key } => {
            logging::init_hook(&policy);
            match hook::supervisor::run(&policy, &key) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("tunnel {key}: supervisor: {e}");
                    fail(&format!("tunnel {key}: supervisor: {e}"))
                }
            }
        }
        Work::Hook { create, state } => {
            logging::init_hook(&policy);
            let (stage, result) = if create {
                let result = hook::create_runtime(&state, &policy, bound_profile);
                (logging::Stage::CreateRuntime, result.map(Some))
            } else {
                (logging::Stage::Poststop, hook::poststop(&state, &policy))
            };
            logging::outcome(stage, &state, &policy, bound_profile, started, &result);
            match result {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

/// What a command line asks for once help and version are answered.
enum Work {
    Status {
        id: Option<String>,
        json: bool,
    },
    Gc,
    Supervise {
        key: String,
    },
    /// createRuntime (`create`) or poststop, for a container that asked for a tunnel.
    Hook {
        create: bool,
        state: ContainerState,
    },
}

/// The container state on stdin, or None when the container did not ask for a tunnel.
fn read_state(create: bool, device: Option<&str>) -> Result<Option<ContainerState>, String> {
    let state = ContainerState::read(std::io::stdin().lock()).map_err(|e| e.to_string())?;
    let id = &state.id;
    match asks_for_a_tunnel(&state.annotations, device) {
        Ok(true) => Ok(Some(state)),
        Ok(false) => Ok(None),
        Err(e) if create => Err(format!("container {id}: {e}")),
        // poststop tears down whatever exists all the same (nothing should, and teardown is idempotent).
        Err(_) => Ok(Some(state)),
    }
}

/// Whether a container asks for a tunnel. hooks.d runs us for any value of wg.enable: a container that did not
/// ask touches nothing, not even the policy. A CDI device of ours asks by itself; `wg.enable=false` beside it is
/// a contradiction, refused rather than settled one way. A value that is neither on nor off is refused.
fn asks_for_a_tunnel(
    annotations: &std::collections::HashMap<String, String>,
    device: Option<&str>,
) -> Result<bool, String> {
    match (annotations::enabled(annotations), device) {
        (Ok(enabled), None) => Ok(enabled),
        (Ok(false), Some(device)) if annotations.contains_key(annotations::ENABLE) => Err(format!(
            "annotation {}={:?} contradicts the device {} it asked for: drop one of them",
            annotations::ENABLE,
            annotations[annotations::ENABLE],
            crate::oci::cdi::qualified(device)
        )),
        (Ok(_), Some(_)) => Ok(true),
        (Err(e), _) => Err(format!("reading annotations: {e}")),
    }
}

/// `gc`: a line per tunnel taken down, then what else was removed; exit 1 if anything failed.
fn gc(policy: &Policy) -> ExitCode {
    let state = match hook::record::StateDir::open(&policy.state_dir) {
        Ok(state) => state,
        Err(e) => return fail(&format!("the state dir {e}")),
    };
    let swept = hook::gc::collect(&state);
    for tunnel in &swept.tunnels {
        println!("taken down: tunnel {tunnel}");
    }
    println!(
        "{} tunnel(s) taken down, {} orphaned file(s) removed",
        swept.tunnels.len(),
        swept.orphans
    );
    if swept.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for failure in &swept.failures {
            eprintln!("wg-oci-hook: gc: {failure}");
        }
        ExitCode::FAILURE
    }
}

pub(crate) fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("wg-oci-hook: {e}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::asks_for_a_tunnel;
    use std::collections::HashMap;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_device_asks_by_itself_and_an_explicit_off_beside_it_is_refused() {
        assert_eq!(asks_for_a_tunnel(&map(&[]), None), Ok(false));
        assert_eq!(
            asks_for_a_tunnel(&map(&[("wg.enable", "true")]), None),
            Ok(true)
        );
        assert_eq!(
            asks_for_a_tunnel(&map(&[("wg.enable", "false")]), None),
            Ok(false)
        );
        assert_eq!(asks_for_a_tunnel(&map(&[]), Some("vpn")), Ok(true));
        assert_eq!(
            asks_for_a_tunnel(&map(&[("wg.enable", "yes")]), Some("vpn")),
            Ok(true)
        );
        assert_eq!(
            asks_for_a_tunnel(&map(&[("wg.enable", "off")]), Some("vpn")).unwrap_err(),
            "annotation wg.enable=\"off\" contradicts the device wg-oci-hook.dev/tunnel=vpn it asked for: drop \
             one of them"
        );
        for device in [None, Some("vpn")] {
            let e = asks_for_a_tunnel(&map(&[("wg.enable", "maybe")]), device).unwrap_err();
            assert!(
                e.starts_with("reading annotations: annotation wg.enable="),
                "{e}"
            );
        }
    }
}
