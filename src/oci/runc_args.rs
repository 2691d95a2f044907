//! runc's command line as the wrapper reads it: the subcommand, the container id, `--bundle` and `--log`, in
//! every spelling runc takes (containerd's shim and Docker use different ones).

/// What we need to know of a runc command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RuncCommand {
    pub subcommand: Option<String>,
    pub bundle: Option<String>,
    pub log: Option<String>,
    pub log_format: Option<String>,
    pub container_id: Option<String>,
}

/// runc's global options that take a value (runc 1.1, `runc --help`); the others are booleans.
const GLOBAL_VALUE_FLAGS: &[&str] = &["log", "log-format", "root", "criu", "rootless"];
/// `create` and `run` options that take a value.
const CREATE_VALUE_FLAGS: &[&str] = &[
    "bundle",
    "b",
    "console-socket",
    "pid-file",
    "preserve-fds",
    "pidfd-socket",
];

/// Reads a runc command line the way runc (urfave/cli over Go's flag package) does: `-flag` and `--flag`,
/// values after a space or `=`, global options before the subcommand, the subcommand's options before its
/// first positional argument, `--` ending the options. So a bundle directory named `create` is a value, not a
/// subcommand.
pub fn parse_runc_args(args: &[String]) -> RuncCommand {
    let mut cmd = RuncCommand::default();
    let mut rest = args.iter();
    // Global options, up to the subcommand.
    while let Some(arg) = rest.next() {
        match flag(arg) {
            Some((_, _, true)) => break,
            Some((name, inline, false)) => {
                let value = if GLOBAL_VALUE_FLAGS.contains(&name) {
                    inline.or_else(|| rest.next().cloned())
                } else {
                    None
                };
                match name {
                    "log" => cmd.log = value,
                    "log-format" => cmd.log_format = value,
                    _ => {}
                }
            }
            None => {
                cmd.subcommand = Some(arg.clone());
                break;
            }
        }
    }
    if !matches!(cmd.subcommand.as_deref(), Some("create" | "run")) {
        return cmd;
    }
    while let Some(arg) = rest.next() {
        match flag(arg) {
            Some((_, _, true)) => {
                cmd.container_id = rest.next().cloned();
                break;
            }
            Some((name, inline, false)) => {
                if CREATE_VALUE_FLAGS.contains(&name) {
                    let value = inline.or_else(|| rest.next().cloned());
                    if name == "bundle" || name == "b" {
                        cmd.bundle = value;
                    }
                }
            }
            None => {
                cmd.container_id = Some(arg.clone());
                break;
            }
        }
    }
    cmd
}

/// `-name`, `--name`, `-name=value`, `--name=value` → (name, inline value, is the `--` terminator).
fn flag(arg: &str) -> Option<(&str, Option<String>, bool)> {
    if arg == "--" {
        return Some(("", None, true));
    }
    let body = arg
        .strip_prefix("--")
        .or_else(|| arg.strip_prefix('-'))
        .filter(|b| !b.is_empty())?;
    Some(match body.split_once('=') {
        Some((name, value)) => (name, Some(value.to_owned()), false),
        None => (body, None, false),
    })
}

/// Where the hook is and how it is to be called.
#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn containerd_shim_create_is_read_like_runc_reads_it() {
        let cmd = parse_runc_args(&strings(&[
            "--root",
            "/run/containerd/runc/moby",
            "--log",
            "/run/x/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/run/x/b",
            "--pid-file",
            "/run/x/init.pid",
            "--console-socket",
            "/tmp/s.sock",
            "abc123",
        ]));
        assert_eq!(cmd.subcommand.as_deref(), Some("create"));
        assert_eq!(cmd.bundle.as_deref(), Some("/run/x/b"));
        assert_eq!(cmd.log.as_deref(), Some("/run/x/log.json"));
        assert_eq!(cmd.log_format.as_deref(), Some("json"));
        assert_eq!(cmd.container_id.as_deref(), Some("abc123"));
    }

    #[test]
    fn every_spelling_of_bundle_works() {
        for args in [
            &["create", "--bundle", "/b", "id"][..],
            &["create", "--bundle=/b", "id"],
            &["create", "-bundle", "/b", "id"],
            &["create", "-bundle=/b", "id"],
            &["create", "-b", "/b", "id"],
            &["create", "-b=/b", "id"],
            &["run", "-d", "--pid-file", "/p", "-b", "/b", "id"],
            &[
                "--debug",
                "create",
                "--no-pivot",
                "--bundle",
                "/b",
                "--",
                "id",
            ],
        ] {
            let cmd = parse_runc_args(&strings(args));
            assert_eq!(cmd.bundle.as_deref(), Some("/b"), "{args:?}");
            assert_eq!(cmd.container_id.as_deref(), Some("id"), "{args:?}");
        }
    }

    #[test]
    fn a_value_named_create_is_not_the_subcommand() {
        let cmd = parse_runc_args(&strings(&["--root", "create", "start", "id"]));
        assert_eq!(cmd.subcommand.as_deref(), Some("start"));
        assert_eq!(cmd.bundle, None);
        let cmd = parse_runc_args(&strings(&["create", "--bundle", "create", "create"]));
        assert_eq!(cmd.bundle.as_deref(), Some("create"));
        assert_eq!(cmd.container_id.as_deref(), Some("create"));
        let cmd = parse_runc_args(&strings(&["--log", "run", "delete", "--force", "id"]));
        assert_eq!(cmd.subcommand.as_deref(), Some("delete"));
        // No --bundle: the working directory, as runc does.
        let cmd = parse_runc_args(&strings(&["create", "id"]));
        assert_eq!(
            (cmd.bundle, cmd.container_id.as_deref()),
            (None, Some("id"))
        );
    }
}
