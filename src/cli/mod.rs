//! Command line: `wg-oci-hook [--policy PATH] create-runtime|poststop`, the OCI state JSON on stdin.

mod check;
pub mod install;
mod logging;
mod status;

use crate::config::annotations;
use crate::config::policy::{self, Policy};
use crate::hook;
use crate::oci::state::ContainerState;
use crate::provider::pia::port_forward;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: wg-oci-hook [--policy PATH] [--profile NAME] <create-runtime|poststop>
       wg-oci-hook [--policy PATH] status [CONTAINER-ID]
       wg-oci-hook [--policy PATH] gc
       wg-oci-hook [--policy PATH] check [--profile NAME] [--json]
       wg-oci-hook install <hooks|docker|containerd> [...]   (see wg-oci-hook install --help)
  Run by an OCI runtime (runc, crun) as a createRuntime or poststop hook, with the container state on stdin.
  --policy PATH   policy file (default: $WG_OCI_HOOK_POLICY, else /etc/wg-oci-hook/policy.toml)
  --profile NAME  the profile for containers that name none (set by wg-oci-runtime --wg-profile)
  status          the live tunnels of the policy's state dir (PIA: region, server, forwarded port)
  gc              takes down the tunnels whose containers are all gone without a poststop, with their
                  daemons, helpers and leases (each createRuntime does this too)
  check           checks the policy and every file it names (wg-quick files, pools, PIA credentials, CA and
                  regions key), the backend and nft on this host, and endpoint names, without a container:
                  a line per problem (FILE:LINE), then a summary; exit 0 when there is none, else 1.
                  --profile NAME checks that profile alone, --json prints one JSON object";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    CreateRuntime,
    Poststop,
    Status(Option<String>),
    Gc,
    Check {
        json: bool,
    },
    /// The PIA port-forwarding helper of a container (started by create-runtime, not by people): its
    /// supervisor, or with --worker the worker.
    PortForward {
        id: String,
        worker: bool,
    },
    Help,
    Version,
}

#[derive(Debug)]
struct Args {
    command: Command,
    policy: Option<PathBuf>,
    profile: Option<String>,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut command = None;
    let mut policy = None;
    let mut profile = None;
    let mut json = false;
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let found = match arg.as_str() {
            "create-runtime" | "createRuntime" => Command::CreateRuntime,
            "poststop" => Command::Poststop,
            "status" => Command::Status(args.next_if(|a| !a.starts_with('-'))),
            "gc" => Command::Gc,
            "check" => Command::Check { json: false },
            "--json" => {
                json = true;
                continue;
            }
            port_forward::SUBCOMMAND => Command::PortForward {
                id: args
                    .next()
                    .ok_or(format!("{} needs a container id", port_forward::SUBCOMMAND))?,
                worker: args.next_if(|a| a == port_forward::WORKER_FLAG).is_some(),
            },
            "-h" | "--help" | "help" => Command::Help,
            "-V" | "--version" => Command::Version,
            "--policy" => {
                policy = Some(args.next().ok_or("--policy needs a path")?.into());
                continue;
            }
            "--profile" => {
                profile = Some(args.next().ok_or("--profile needs a name")?);
                continue;
            }
            other => {
                if let Some(path) = other.strip_prefix("--policy=") {
                    policy = Some(path.into());
                } else if let Some(name) = other.strip_prefix("--profile=") {
                    profile = Some(name.to_owned());
                } else {
                    return Err(format!("unknown argument {other:?}"));
                }
                continue;
            }
        };
        if command.replace(found).is_some() {
            return Err("more than one command given".into());
        }
    }
    let mut command = command.ok_or("no command given")?;
    match &mut command {
        Command::Check { json: j } => *j = json,
        _ if json => return Err("--json is only for check".into()),
        _ => {}
    }
    // Container ids name files in the state dir.
    if let Command::Status(Some(id)) | Command::PortForward { id, .. } = &command {
        crate::oci::state::validate_container_id(id).map_err(|e| e.to_string())?;
    }
    if let Some(name) = &profile {
        if !annotations::is_valid_name(name) {
            return Err(format!("--profile {name:?}: not a profile name"));
        }
    }
    Ok(Args {
        command,
        policy,
        profile,
    })
}

/// The whole program; `main` only maps this to the process exit. Errors are one line on stderr, which
/// runc copies into the engine's error message.
pub fn run(args: impl IntoIterator<Item = String>) -> ExitCode {
    let started = std::time::Instant::now();
    let args: Vec<String> = args.into_iter().collect();
    if args.first().is_some_and(|a| a == "install") {
        return crate::cli::install::run(&args[1..]);
    }
    let args = match parse_args(args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("wg-oci-hook: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let policy_path = policy::path(args.policy.as_deref());
    // A container's hook reads its state first: a container that did not ask for a tunnel costs no policy read.
    let hook_stage = |create: bool| match read_state(create) {
        Ok(Some(state)) => Ok(Work::Hook { create, state }),
        Ok(None) => Err(ExitCode::SUCCESS),
        Err(e) => Err(fail(&e)),
    };
    let work = match args.command {
        Command::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("wg-oci-hook {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::CreateRuntime => hook_stage(true),
        Command::Poststop => hook_stage(false),
        Command::Status(id) => Ok(Work::Status(id)),
        Command::Gc => Ok(Work::Gc),
        // Loads the policy itself: a policy that does not load is a problem to report like the others.
        Command::Check { json } => {
            return check::run(&policy_path, args.profile.as_deref(), json);
        }
        Command::PortForward { id, worker } => Ok(Work::PortForward { id, worker }),
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
        Work::Status(id) => status::run(&policy, id.as_deref()),
        Work::Gc => {
            logging::init(policy.log_level);
            gc(&policy)
        }
        Work::PortForward { id, worker } => {
            logging::init(Some(policy.log_level.unwrap_or(log::LevelFilter::Info)));
            match hook::port_forward::run_helper(&policy, &id, worker) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("container {id}: port forwarding: {e}")),
            }
        }
        Work::Hook { create, state } => {
            logging::init(policy.log_level);
            let (stage, result) = if create {
                let result = hook::create_runtime(&state, &policy, args.profile.as_deref());
                ("create-runtime", result.map(drop))
            } else {
                ("poststop", hook::poststop(&state, &policy))
            };
            match result {
                Ok(()) => {
                    let ms = started.elapsed().as_secs_f64() * 1e3;
                    log::info!("container {}: {stage} done in {ms:.3} ms", state.id);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

/// What a command line asks for once help and version are answered.
enum Work {
    Status(Option<String>),
    Gc,
    PortForward {
        id: String,
        worker: bool,
    },
    /// createRuntime (`create`) or poststop, for a container that asked for a tunnel.
    Hook {
        create: bool,
        state: ContainerState,
    },
}

/// The container state on stdin, or None when the container did not ask for a tunnel.
fn read_state(create: bool) -> Result<Option<ContainerState>, String> {
    let state = ContainerState::read(std::io::stdin().lock()).map_err(|e| e.to_string())?;
    // hooks.d runs us for any value of wg.enable. A container that did not ask for a tunnel: touch nothing, not
    // even the policy. A value that is neither on nor off is refused at create; poststop tears down whatever
    // exists all the same (nothing should, and teardown is idempotent).
    match annotations::enabled(&state.annotations) {
        Ok(true) => Ok(Some(state)),
        Ok(false) => Ok(None),
        Err(e) if create => Err(format!("container {}: reading annotations: {e}", state.id)),
        Err(_) => Ok(Some(state)),
    }
}

/// `gc`: a line per tunnel taken down, then what else was removed; exit 1 if anything failed.
fn gc(policy: &Policy) -> ExitCode {
    let state = match hook::record::StateDir::open(&policy.state_dir) {
        Ok(state) => state,
        Err(e) => return fail(&format!("the state dir {e}")),
    };
    let swept = hook::gc::collect(&state, policy);
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
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn policy_flag_goes_before_or_after_the_command() {
        let a = parse(&["--policy", "/p.toml", "create-runtime"]).unwrap();
        assert_eq!(
            (a.command, a.policy.unwrap()),
            (Command::CreateRuntime, PathBuf::from("/p.toml"))
        );
        let a = parse(&["poststop", "--policy=/q.toml"]).unwrap();
        assert_eq!(
            (a.command, a.policy.unwrap()),
            (Command::Poststop, PathBuf::from("/q.toml"))
        );
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["create-runtime", "poststop"]).is_err());
        assert!(parse(&["--policy"]).is_err());
        assert!(parse(&["start"]).is_err());
        assert!(parse(&["--profile", "../x", "create-runtime"]).is_err());
        assert!(parse(&["create-runtime", "--profile"]).is_err());
    }

    #[test]
    fn status_and_the_port_forwarding_helper_take_a_container_id() {
        assert_eq!(parse(&["status"]).unwrap().command, Command::Status(None));
        let a = parse(&["status", "--policy", "/p"]).unwrap();
        assert_eq!(
            (a.command, a.policy.unwrap()),
            (Command::Status(None), PathBuf::from("/p"))
        );
        assert_eq!(
            parse(&["--policy=/p", "status", "c1"]).unwrap().command,
            Command::Status(Some("c1".into()))
        );
        assert_eq!(
            parse(&["pia-port-forward", "c1", "--worker"])
                .unwrap()
                .command,
            Command::PortForward {
                id: "c1".into(),
                worker: true
            }
        );
        assert_eq!(
            parse(&["--policy", "/p", "pia-port-forward", "c1"])
                .unwrap()
                .command,
            Command::PortForward {
                id: "c1".into(),
                worker: false
            }
        );
        assert!(parse(&["pia-port-forward"]).is_err());
        assert!(parse(&["pia-port-forward", "../../etc/x"]).is_err());
        assert!(parse(&["status", "a/b"]).is_err());
    }

    #[test]
    fn profile_flag_names_the_runtime_bound_profile() {
        let a = parse(&["--policy", "/p", "--profile", "pia", "create-runtime"]).unwrap();
        assert_eq!(a.profile.as_deref(), Some("pia"));
        let a = parse(&["poststop", "--profile=lab"]).unwrap();
        assert_eq!(a.profile.as_deref(), Some("lab"));
    }

    #[test]
    fn check_takes_a_profile_and_json() {
        let a = parse(&["--policy", "/p", "check"]).unwrap();
        assert_eq!(a.command, Command::Check { json: false });
        let a = parse(&["check", "--json", "--profile", "vpn"]).unwrap();
        assert_eq!(
            (a.command, a.profile.as_deref()),
            (Command::Check { json: true }, Some("vpn"))
        );
        assert!(parse(&["gc", "--json"]).is_err());
        assert!(parse(&["check", "--profile", "../x"]).is_err());
    }
}
