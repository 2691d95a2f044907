//! The wrapper's own options (`--wg-*`, ahead of the runtime's arguments), the profile its name binds, and
//! where it finds the hook, the policy and the real runtime.

use crate::config::annotations;
use crate::config::policy::{self, Policy, MAX_POLICY_BYTES};
use crate::sys::regular_file;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

pub const HOOK_NAME: &str = "wg-oci-hook";
/// The runtime when neither `--wg-runtime` nor the policy names one.
pub const DEFAULT_RUNTIME: &str = "runc";
/// What `wg-oci-runtime` is called under when its name binds a profile: `wg-oci-runtime@PROFILE`.
pub const BOUND_NAME_PREFIX: &str = "wg-oci-runtime@";

/// Our own options, which come before the runtime's arguments (where Docker puts `runtimeArgs`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--wg-profile=NAME`: the runtime name enables every container with this profile (see [`bound_profile`]).
    pub profile: Option<String>,
    /// `--wg-runtime=NAME|PATH`: the real runtime (else the policy's `runtime`, else runc).
    pub runtime: Option<String>,
    /// `--wg-policy=PATH`, handed to the hook.
    pub policy: Option<PathBuf>,
    /// `--wg-hook=PATH`: the hook (else `wg-oci-hook` beside this program).
    pub hook: Option<PathBuf>,
    /// `--wg-help` or `--wg-version`: answered by us; the runtime's own `--help` and `--version` are its.
    pub ask: Option<Ask>,
}

/// What `--wg-help` and `--wg-version` ask of the wrapper itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Help,
    Version,
}

/// Takes our leading `--wg-*` options off `args`; the rest is the runtime's, untouched.
pub fn split_options(args: &[String]) -> Result<(Options, &[String]), String> {
    let mut opts = Options::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let Some(flag) = arg.strip_prefix("--wg-") else {
            break;
        };
        let ask = match flag {
            "help" => Some(Ask::Help),
            "version" => Some(Ask::Version),
            _ => None,
        };
        if ask.is_some() {
            opts.ask = ask;
            i += 1;
            continue;
        }
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (flag, None),
        };
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("{} needs a value", shown_option(name)))?
            }
        };
        if value.is_empty() {
            return Err(format!("{} needs a value", shown_option(name)));
        }
        match name {
            "profile" => {
                if !annotations::is_valid_name(&value) {
                    let shown: String = value.chars().take(64).collect();
                    return Err(format!("--wg-profile {shown:?}: not a profile name"));
                }
                opts.profile = Some(value);
            }
            "runtime" => opts.runtime = Some(value),
            "policy" => opts.policy = Some(value.into()),
            "hook" => opts.hook = Some(value.into()),
            other => return Err(format!("unknown option {}", shown_option(other))),
        }
        i += 1;
    }
    Ok((opts, &args[i..]))
}

/// `--wg-NAME` for an error: as is when NAME is a plain word, else quoted and bounded (it may hold anything).
fn shown_option(name: &str) -> String {
    if name.len() <= 32 && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        format!("--wg-{name}")
    } else {
        let cut: String = name.chars().take(32).collect();
        format!("{:?}", format!("--wg-{cut}"))
    }
}

/// The hook: `--wg-hook`, else `wg-oci-hook` in this program's directory.
pub fn hook_path(opts: &Options) -> io::Result<PathBuf> {
    match &opts.hook {
        Some(p) if p.is_absolute() => Ok(p.clone()),
        Some(p) => Ok(std::env::current_dir()?.join(p)),
        None => {
            let me = std::env::current_exe()?;
            Ok(me.with_file_name(HOOK_NAME))
        }
    }
}

/// `--wg-policy`, else `$WG_OCI_HOOK_POLICY`: a policy named to this program, which the hook is then told too
/// (runc starts hooks with only PATH in their environment).
pub fn named_policy(opts: &Options) -> Option<PathBuf> {
    policy::named_path(opts.policy.as_deref())
}

fn policy_path(opts: &Options) -> PathBuf {
    policy::path(opts.policy.as_deref())
}

/// The real runtime for `create` and `run`: `--wg-runtime`, else the policy's `runtime` (no policy means runc).
/// A broken policy fails the create: a guess could send one container's create and delete to different runtimes.
pub fn runtime_for_create(opts: &Options) -> Result<String, String> {
    if let Some(r) = &opts.runtime {
        return Ok(r.clone());
    }
    let path = policy_path(opts);
    match Policy::load(&path) {
        Ok(policy) => Ok(policy.runtime),
        Err(_) if !path.exists() => Ok(DEFAULT_RUNTIME.to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// The real runtime for every other command (`state`, `kill`, `delete`, ...), which must reach the runtime of
/// containers already created whatever has since become of the policy: `--wg-runtime`, else the policy's
/// top-level `runtime` read on its own (nothing else of the policy is checked), else runc. Also returns a note
/// when a policy is there but gives no runtime.
pub fn runtime_for_others(opts: &Options) -> (String, Option<String>) {
    if let Some(r) = &opts.runtime {
        return (r.clone(), None);
    }
    let path = policy_path(opts);
    let found = match fs::metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // Not a FIFO or a device: opening one could block every runc call.
        Ok(meta) if !meta.is_file() => Err("not a regular file".to_owned()),
        _ => File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|file| {
                regular_file::read_capped_text(file, MAX_POLICY_BYTES).map_err(|e| e.to_string())
            })
            .and_then(|text| runtime_key(&text)),
    };
    match found {
        Ok(runtime) => (runtime.unwrap_or_else(|| DEFAULT_RUNTIME.to_owned()), None),
        Err(e) => (
            DEFAULT_RUNTIME.to_owned(),
            Some(format!(
                "{}: {e}; running {DEFAULT_RUNTIME}",
                path.display()
            )),
        ),
    }
}

/// The top-level `runtime` of a policy's text, parsed as a plain TOML table: Ok(None) when it has none.
pub fn runtime_key(text: &str) -> Result<Option<String>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        // toml's messages span several lines (a snippet of the file); the first says what is wrong.
        let msg = e.message().lines().next().unwrap_or("").to_owned();
        format!("not TOML: {msg}")
    })?;
    match table.get("runtime") {
        None => Ok(None),
        Some(toml::Value::String(r)) if !r.is_empty() => Ok(Some(r.clone())),
        Some(_) => Err("runtime: not a runtime name or path".to_owned()),
    }
}

/// The profile a runtime name binds: `--wg-profile`, or the name this program was run under,
/// `wg-oci-runtime@PROFILE` (a link to it: containerd's runc options take no arguments, only a `BinaryName`).
pub fn bound_profile(opts: &Options, argv0: &str) -> Result<Option<String>, String> {
    let name = Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let by_name = match name.strip_prefix(BOUND_NAME_PREFIX) {
        None => None,
        Some(p) if annotations::is_valid_name(p) => Some(p),
        Some(p) => return Err(format!("run as {name:?}: {p:?} is not a profile name")),
    };
    match (&opts.profile, by_name) {
        (Some(flag), Some(named)) if flag != named => Err(format!(
            "--wg-profile={flag} contradicts the name {name:?}, which binds profile {named:?}"
        )),
        (Some(flag), _) => Ok(Some(flag.clone())),
        (None, named) => Ok(named.map(str::to_owned)),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn our_options_come_off_the_front_only() {
        let args = strings(&[
            "--wg-profile=pia",
            "--wg-runtime",
            "crun",
            "--root",
            "/r",
            "create",
            "--wg-x",
        ]);
        let (opts, rest) = split_options(&args).unwrap();
        assert_eq!(opts.profile.as_deref(), Some("pia"));
        assert_eq!(opts.runtime.as_deref(), Some("crun"));
        assert_eq!(rest, &args[3..]);
        assert!(split_options(&strings(&["--wg-profile"])).is_err());
        assert!(split_options(&strings(&["--wg-profile=../x"])).is_err());
        assert!(split_options(&strings(&["--wg-colour=red"])).is_err());
        let plain = strings(&["state", "x"]);
        let (opts, rest) = split_options(&plain).unwrap();
        assert_eq!((opts, rest.len()), (Options::default(), 2));
    }

    /// Found by fuzzing (fuzz/corpus/runc_args/crash-4a529fad…): an unknown `--wg-` option, or one without a
    /// value, put its whole name into the error, control characters and newlines too.
    #[test]
    fn help_and_version_of_our_own_take_no_value() {
        let args = strings(&["--wg-help", "--wg-profile=x", "--help"]);
        let (opts, rest) = split_options(&args).unwrap();
        assert_eq!(
            (opts.ask, opts.profile.as_deref()),
            (Some(Ask::Help), Some("x"))
        );
        assert_eq!(rest, ["--help"], "runc's own --help is runc's");
        let args = strings(&["--wg-version", "--version"]);
        let (opts, rest) = split_options(&args).unwrap();
        assert_eq!((opts.ask, rest), (Some(Ask::Version), &args[1..]));
    }

    #[test]
    fn bad_option_names_are_quoted_bounded_on_one_line() {
        let long = format!("--wg-{}", "x".repeat(5000));
        let long_profile = format!("--wg-profile={}", "x".repeat(5000));
        for args in [
            &[long_profile.as_str()][..],
            &["--wg-runtime\u{1}\u{18}HHHH", "crun"],
            &["--wg-a\nb=1"],
            &["--wg-\u{1b}[2J"],
            &["--wg-\u{1b}[2J="],
            &[long.as_str()],
        ] {
            let e = split_options(&strings(args)).unwrap_err();
            assert!(!e.chars().any(char::is_control), "{e:?}");
            assert!(e.len() < 200, "{e}");
        }
        assert_eq!(
            split_options(&strings(&["--wg-colour=red"])).unwrap_err(),
            "unknown option --wg-colour"
        );
        assert_eq!(
            split_options(&strings(&["--wg-a\nb=1"])).unwrap_err(),
            "unknown option \"--wg-a\\nb\""
        );
        assert_eq!(
            split_options(&strings(&["--wg-profile"])).unwrap_err(),
            "--wg-profile needs a value"
        );
    }

    #[test]
    fn a_profile_is_bound_by_the_flag_or_by_the_name_run_under() {
        let none = Options::default();
        let flag = Options {
            profile: Some("vpn".into()),
            ..Options::default()
        };
        assert_eq!(
            bound_profile(&none, "/usr/local/bin/wg-oci-runtime"),
            Ok(None)
        );
        assert_eq!(bound_profile(&none, ""), Ok(None));
        assert_eq!(
            bound_profile(&none, "/usr/local/bin/wg-oci-runtime@vpn"),
            Ok(Some("vpn".to_owned()))
        );
        assert_eq!(
            bound_profile(&none, "wg-oci-runtime@pia"),
            Ok(Some("pia".to_owned()))
        );
        assert_eq!(
            bound_profile(&flag, "wg-oci-runtime"),
            Ok(Some("vpn".to_owned()))
        );
        assert_eq!(
            bound_profile(&flag, "/x/wg-oci-runtime@vpn"),
            Ok(Some("vpn".to_owned()))
        );
        assert!(bound_profile(&flag, "/x/wg-oci-runtime@pia")
            .unwrap_err()
            .contains("contradicts"));
        for bad in [
            "/x/wg-oci-runtime@",
            "wg-oci-runtime@.x",
            "wg-oci-runtime@a b",
        ] {
            assert!(bound_profile(&none, bad).is_err(), "{bad}");
        }
        // Only the file name counts.
        assert_eq!(bound_profile(&none, "/x/wg-oci-runtime@vpn/runc"), Ok(None));
    }

    #[test]
    fn the_runtime_key_is_read_on_its_own() {
        assert_eq!(
            runtime_key("runtime = \"crun\"\n").unwrap().as_deref(),
            Some("crun")
        );
        // Whatever else is wrong with the policy.
        let typo = "runtime = \"/usr/bin/crun\"\nkill_swich = 1\n[profiles.x]\nconfg = 2\n";
        assert_eq!(runtime_key(typo).unwrap().as_deref(), Some("/usr/bin/crun"));
        assert_eq!(
            runtime_key("[profiles.vpn]\nconfig = \"a\"\n").unwrap(),
            None
        );
        assert_eq!(runtime_key("").unwrap(), None);
        // A `runtime` inside a table is not the policy's.
        assert_eq!(runtime_key("[x]\nruntime = \"crun\"\n").unwrap(), None);
        for bad in [
            "runtime = [oops",
            "runtime = 3",
            "runtime = \"\"",
            "runtime = \"a\"\nruntime = \"b\"",
        ] {
            let e = runtime_key(bad).unwrap_err();
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
    }
}
