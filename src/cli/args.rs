//! The command line of `wg-oci-hook`, as clap reads it. Its definition is also what the man pages and shell
//! completions are made from (`cargo run --example gen-docs`), so help, man page and parser cannot disagree.

use crate::config::annotations;
use crate::oci::cdi;
use crate::oci::state::validate_container_id;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "wg-oci-hook",
    version,
    about = "A WireGuard tunnel as a container's only network, set up by the OCI runtime before the workload \
             starts",
    long_about = "A WireGuard tunnel as a container's only network, set up by the OCI runtime before the \
                  workload starts.\n\nrunc and crun run `wg-oci-hook create-runtime` and `wg-oci-hook poststop` \
                  with the container state on stdin: podman and CRI-O find them through hooks.d (`install \
                  hooks`), Docker and containerd through the wg-oci-runtime wrapper (`install docker`, `install \
                  containerd`). A container asks for a tunnel with the annotation wg.enable=true; the policy \
                  says what it may have.",
    after_help = "Documentation: /usr/share/doc/wg-oci-hook/README.md, man wg-oci-hook"
)]
pub struct Cli {
    /// The policy file [default: $WG_OCI_HOOK_POLICY, else /etc/wg-oci-hook/policy.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub policy: Option<PathBuf>,

    /// The profile: for create-runtime and poststop, the one of containers that name none (wg-oci-runtime
    /// sets it); for check, the only one checked; for install and uninstall, the one the runtime binds
    #[arg(long, global = true, value_name = "NAME", value_parser = profile_name)]
    pub profile: Option<String>,

    /// For create-runtime and poststop: run by the CDI device wg-oci-hook.dev/tunnel=NAME (see `install cdi`),
    /// which enables the container and binds profile NAME as --profile does
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        value_parser = device_name,
        conflicts_with = "profile"
    )]
    pub cdi_device: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// The createRuntime hook: builds the tunnel of the container whose state is on stdin (run by runc)
    #[command(name = "create-runtime", alias = "createRuntime")]
    CreateRuntime,

    /// The poststop hook: takes down the tunnel of the container whose state is on stdin (run by runc)
    Poststop,

    /// Shows the live tunnels: containers, profile, endpoint, latest handshake, bytes, daemon, port
    #[command(
        long_about = "Shows the live tunnels of the policy's state dir: their containers, profile, backend, \
                      interface, addresses, endpoint, latest handshake, bytes received and sent, whether the \
                      userspace daemon runs, and the forwarded port (PIA). It asks each device (the kernel \
                      over netlink inside the container's network namespace, wireguard-go over its socket) \
                      and changes nothing. A tunnel none of whose containers runs is not listed (gc takes it \
                      down). Exit 0 when every tunnel shown is healthy; 1 when one is not (its daemon dead or \
                      not answering, its interface gone or down, its port-forwarding helper gone: a line on \
                      stderr each), when ID names no live tunnel, or when the state dir cannot be read."
    )]
    Status(StatusArgs),

    /// Takes down the tunnels whose containers are all gone without a poststop
    #[command(
        long_about = "Takes down the tunnels none of whose containers runs (a container killed with its \
                      runtime, a host that crashed), with their daemons, helpers and leases, and removes \
                      orphaned state files. Every create-runtime does this too. A line per tunnel taken \
                      down; exit 1 if anything could not be removed."
    )]
    Gc,

    /// Checks the policy and every file it names, without a container (like nginx -t)
    #[command(
        long_about = "Checks the policy and every file it names (wg-quick files, pools, PIA credentials, CA \
                      and regions key), the backend on this host, and endpoint names, without a \
                      container: a line per problem (FILE:LINE: message), then a summary. Exit 0 when there \
                      is no error, else 1. With --profile, that profile alone."
    )]
    Check(CheckArgs),

    /// Registers the hook with a container engine
    #[command(subcommand)]
    Install(Engine),

    /// Removes what install added
    #[command(subcommand)]
    Uninstall(Engine),

    /// A tunnel's supervisor (health, recovery, PIA port forwarding), started by create-runtime
    #[command(name = "supervise", hide = true)]
    Supervise(SuperviseArgs),

    /// The built-in userspace WireGuard daemon of a tunnel, started by create-runtime with its descriptors
    #[command(name = "tunnel-daemon", hide = true)]
    TunnelDaemon(TunnelDaemonArgs),
}

#[derive(Debug, PartialEq, Eq, Args)]
pub struct TunnelDaemonArgs {
    /// The tunnel's host-unique name, which names its UAPI socket
    #[arg(value_parser = interface_name)]
    pub name: String,
    /// The MTU the hook gave the TUN device
    #[arg(long, value_parser = clap::value_parser!(u16).range(576..))]
    pub mtu: u16,
    /// The container's init: the first process of its netns to watch (the daemon ends when none is left)
    #[arg(long)]
    pub container_pid: Option<u32>,
}

fn interface_name(s: &str) -> Result<String, String> {
    let fine = !s.is_empty()
        && s.len() < 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fine {
        Ok(s.to_owned())
    } else {
        Err("an interface name: 1 to 15 letters, digits, - or _".to_owned())
    }
}

#[derive(Debug, PartialEq, Eq, Args)]
pub struct StatusArgs {
    /// Only the tunnel of this container (its full id, or the start of it: the short id engines print)
    #[arg(value_name = "CONTAINER-ID", value_parser = container_id)]
    pub id: Option<String>,

    /// One JSON object on stdout instead of the table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, PartialEq, Eq, Args)]
pub struct CheckArgs {
    /// One JSON object on stdout instead of lines
    #[arg(long)]
    pub json: bool,

    /// Where to look for the CDI spec `install cdi` wrote (wg-oci-hook.json), checked against the policy
    #[arg(long = "cdi-dir", value_name = "DIR", default_values = ["/etc/cdi", "/var/run/cdi"])]
    pub cdi_dirs: Vec<PathBuf>,
}

#[derive(Debug, PartialEq, Eq, Args)]
pub struct SuperviseArgs {
    /// The tunnel's key (its record's name, DEV-INO of its netns)
    #[arg(value_parser = container_id)]
    pub key: String,
}

/// The engines install and uninstall know.
#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Engine {
    /// podman, CRI-O and Buildah: the createRuntime and poststop files in hooks.d
    #[command(visible_alias = "podman", alias = "cri-o", alias = "crio")]
    Hooks(HooksArgs),
    /// Docker: a runtime in daemon.json that runs wg-oci-runtime
    Docker(DockerArgs),
    /// containerd and Kubernetes: a runtime handler in containerd's config.toml that runs wg-oci-runtime
    Containerd(ContainerdArgs),
    /// Engines with CDI (podman, CRI-O, containerd 1.7+, Docker 25+): a spec with a device per profile
    #[command(
        long_about = "Engines with the Container Device Interface (podman, CRI-O, containerd 1.7+ with \
                      enable_cdi, Docker 25+ with the cdi feature): one spec file, DIR/wg-oci-hook.json, with a \
                      device wg-oci-hook.dev/tunnel=PROFILE for each profile of the policy, carrying the \
                      createRuntime and poststop hooks. A container asks for a tunnel with `--device \
                      wg-oci-hook.dev/tunnel=PROFILE`, no annotation. Run it again after the policy changes."
    )]
    Cdi(CdiArgs),
}

#[derive(Debug, PartialEq, Eq, Args)]
pub struct CdiArgs {
    /// The CDI spec directory (/var/run/cdi is read too, and wins over /etc/cdi)
    #[arg(long, value_name = "DIR", default_value = "/etc/cdi")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, PartialEq, Eq, Args)]
pub struct HooksArgs {
    /// The hooks.d directory
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/usr/share/containers/oci/hooks.d"
    )]
    pub dir: PathBuf,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, PartialEq, Eq, Args)]
pub struct DockerArgs {
    /// Docker's daemon configuration
    #[arg(long, value_name = "PATH", default_value = "/etc/docker/daemon.json")]
    pub daemon_json: PathBuf,

    /// The runtime's name, as in `docker run --runtime NAME` [default: wg, or wg-PROFILE]
    #[arg(long, value_name = "NAME", value_parser = runtime_name)]
    pub name: Option<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, PartialEq, Eq, Args)]
pub struct ContainerdArgs {
    /// containerd's configuration (versions 2 and 3 are edited in place)
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/containerd/config.toml"
    )]
    pub config: PathBuf,

    /// The runtime handler's name, as in a RuntimeClass's `handler` [default: wg, or wg-PROFILE]
    #[arg(long, value_name = "NAME", value_parser = runtime_name)]
    pub name: Option<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, PartialEq, Eq, Args)]
pub struct CommonArgs {
    /// Print the change as a diff and write nothing
    #[arg(long)]
    pub dry_run: bool,
}

fn profile_name(s: &str) -> Result<String, String> {
    if annotations::is_valid_name(s) {
        Ok(s.to_owned())
    } else {
        Err("not a profile name (letters, digits, '-', '_' and '.', not starting with '.')".into())
    }
}

fn device_name(s: &str) -> Result<String, String> {
    if annotations::is_valid_name(s) && cdi::is_device_name(s) {
        Ok(s.to_owned())
    } else {
        Err("not a CDI device name of a profile (letters, digits, '-', '_' and '.', a letter or digit first and \
             last)"
            .into())
    }
}

/// A runtime or handler name: it becomes a key in daemon.json or a TOML table name, and a word on command lines.
fn runtime_name(s: &str) -> Result<String, String> {
    if annotations::is_valid_name(s) {
        Ok(s.to_owned())
    } else if s.is_empty() {
        Err("a runtime needs a name".into())
    } else {
        Err("not a runtime name (letters, digits, '-', '_' and '.', not starting with '.')".into())
    }
}

/// Container ids name files in the state dir.
fn container_id(s: &str) -> Result<String, String> {
    validate_container_id(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

/// The clap definition, for help, man pages and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wg-oci-hook").chain(args.iter().copied()))
    }

    #[test]
    fn the_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn policy_and_profile_go_before_or_after_the_command() {
        let a = parse(&["--policy", "/p.toml", "create-runtime"]).unwrap();
        assert_eq!(
            (a.command, a.policy.unwrap()),
            (Command::CreateRuntime, PathBuf::from("/p.toml"))
        );
        let a = parse(&["poststop", "--policy=/q.toml", "--profile=lab"]).unwrap();
        assert_eq!(
            (a.command, a.policy.unwrap(), a.profile.as_deref()),
            (Command::Poststop, PathBuf::from("/q.toml"), Some("lab"))
        );
        let a = parse(&["--profile", "pia", "createRuntime"]).unwrap();
        assert_eq!(
            (a.command, a.profile.as_deref()),
            (Command::CreateRuntime, Some("pia"))
        );
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for bad in [
            &[][..],
            &["create-runtime", "poststop"],
            &["--policy"],
            &["start"],
            &["--profile", "../x", "create-runtime"],
            &["create-runtime", "--profile"],
            &["gc", "--json"],
            &["check", "--profile", "../x"],
            &["status", "a/b"],
            &["supervise"],
            &["supervise", "../../etc/x"],
            &["install"],
            &["install", "kubernetes"],
            &["install", "hooks", "--daemon-json", "/x"],
            &["install", "docker", "--name"],
            &["install", "docker", "--name", ""],
            &["install", "docker", "--name="],
            &["uninstall", "containerd", "--name", "a b"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_check_and_the_supervisor() {
        let a = parse(&["status", "--policy", "/p"]).unwrap();
        assert_eq!(
            (a.command, a.policy.unwrap()),
            (
                Command::Status(StatusArgs {
                    id: None,
                    json: false
                }),
                PathBuf::from("/p")
            )
        );
        assert_eq!(
            parse(&["--policy=/p", "status", "c1", "--json"])
                .unwrap()
                .command,
            Command::Status(StatusArgs {
                id: Some("c1".into()),
                json: true
            })
        );
        let a = parse(&["check", "--json", "--profile", "vpn"]).unwrap();
        assert_eq!(
            (a.command, a.profile.as_deref()),
            (
                Command::Check(CheckArgs {
                    json: true,
                    cdi_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()]
                }),
                Some("vpn")
            )
        );
        let a = parse(&["--cdi-device", "vpn", "create-runtime"]).unwrap();
        assert_eq!(
            (a.command, a.cdi_device.as_deref()),
            (Command::CreateRuntime, Some("vpn"))
        );
        // A device binds its profile: not both, and only a name a CDI device can have.
        assert!(parse(&["--cdi-device", "vpn", "--profile", "x", "poststop"]).is_err());
        assert!(parse(&["--cdi-device", "vpn_", "poststop"]).is_err());
        use crate::hook::supervisor::SUBCOMMAND;
        assert_eq!(
            parse(&[SUBCOMMAND, "64-4026532123"]).unwrap().command,
            Command::Supervise(SuperviseArgs {
                key: "64-4026532123".into(),
            })
        );
    }

    #[test]
    fn install_and_uninstall_take_an_engine_and_its_options() {
        let a = parse(&["install", "docker", "--profile=pia", "--dry-run"]).unwrap();
        assert_eq!(a.profile.as_deref(), Some("pia"));
        let Command::Install(Engine::Docker(d)) = a.command else {
            panic!("{:?}", a.command)
        };
        assert_eq!(d.daemon_json, PathBuf::from("/etc/docker/daemon.json"));
        assert!(d.common.dry_run);
        let a = parse(&[
            "uninstall",
            "containerd",
            "--config",
            "/c.toml",
            "--name",
            "wg-x",
        ])
        .unwrap();
        let Command::Uninstall(Engine::Containerd(c)) = a.command else {
            panic!("{:?}", a.command)
        };
        assert_eq!(
            (c.config, c.name.as_deref()),
            (PathBuf::from("/c.toml"), Some("wg-x"))
        );
    }

    #[test]
    fn every_subcommand_has_help() {
        for words in [
            &["--help"][..],
            &["status", "--help"],
            &["install", "docker", "--help"],
            &["uninstall", "--help"],
            &["check", "-h"],
        ] {
            let e = parse(words).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{words:?}");
        }
        let e = parse(&["--version"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
    }
}
