//! What `wg-oci-runtime --wg-help` prints, and its man page: a clap definition used for documentation only. The
//! wrapper's command line is runc's, passed through untouched, so it is not parsed by clap (see `options`).

use clap::{Arg, ArgAction, Command};

/// The wrapper's own options, as `--wg-help` and the man page show them.
pub fn command() -> Command {
    let value = |name: &'static str, value_name: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .value_name(value_name)
            .action(ArgAction::Set)
            .help(help)
    };
    Command::new("wg-oci-runtime")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A runc wrapper that gives wg-oci-hook's tunnel to the containers of Docker and containerd")
        .long_about(
            "A runc wrapper that gives wg-oci-hook's tunnel to the containers of Docker and containerd, which do \
             not read hooks.d.\n\nFor `create` and `run` of a container that carries the annotation wg.enable, \
             or of any container when the wrapper binds a profile, it adds wg-oci-hook's createRuntime and \
             poststop hooks to the bundle's config.json, then execs the real runtime (runc) with its arguments \
             untouched. Every other command is a plain exec. Register it with `wg-oci-hook install docker` or \
             `wg-oci-hook install containerd`.\n\nIts own options start with --wg- and come before the \
             runtime's arguments; everything else, --help and --version included, is the real runtime's.",
        )
        .override_usage("wg-oci-runtime [--wg-OPTION=VALUE]... RUNC-ARGUMENTS...")
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(value(
            "wg-profile",
            "NAME",
            "Enables every container this runtime runs, with profile NAME (a runtime named \
             wg-oci-runtime@NAME does the same, for containerd, which passes no arguments)",
        ))
        .arg(value(
            "wg-policy",
            "PATH",
            "The policy the hook reads [default: $WG_OCI_HOOK_POLICY, else /etc/wg-oci-hook/policy.toml]",
        ))
        .arg(value(
            "wg-runtime",
            "NAME|PATH",
            "The real runtime [default: the policy's `runtime`, else runc]",
        ))
        .arg(value(
            "wg-hook",
            "PATH",
            "The hook the bundle gets [default: wg-oci-hook beside this program]",
        ))
        .arg(
            Arg::new("wg-help")
                .long("wg-help")
                .action(ArgAction::Help)
                .help("Prints this help (--help is the real runtime's)"),
        )
        .arg(
            Arg::new("wg-version")
                .long("wg-version")
                .action(ArgAction::Version)
                .help("Prints this program's version (--version is the real runtime's)"),
        )
        .after_help(
            "Examples:\n  docker run --runtime wg --annotation wg.enable=true IMAGE   (Docker 24+)\n  docker run \
             --runtime wg-vpn IMAGE   (a runtime installed with --profile vpn)",
        )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_definition_is_consistent() {
        super::command().debug_assert();
    }
}
