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

use crate::config::annotations;
use crate::config::policy::{Policy, DEFAULT_POLICY_PATH, MAX_POLICY_BYTES};
use crate::sys::command::{resolve_program, DEFAULT_PATH};
use serde_json::{json, Map, Value};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const MAX_CONFIG_BYTES: u64 = 16 << 20;
const HOOK_NAME: &str = "wg-oci-hook";
/// The runtime when neither `--wg-runtime` nor the policy names one.
const DEFAULT_RUNTIME: &str = "runc";
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
}

/// Takes our leading `--wg-*` options off `args`; the rest is the runtime's, untouched.
pub fn split_options(args: &[String]) -> Result<(Options, &[String]), String> {
    let mut opts = Options::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let Some(flag) = arg.strip_prefix("--wg-") else {
            break;
        };
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
#[derive(Debug, Clone)]
pub struct HookCall {
    pub hook: PathBuf,
    pub policy: Option<PathBuf>,
    pub profile: Option<String>,
}

impl HookCall {
    fn entry(&self, stage: &str) -> Value {
        let mut args = vec![HOOK_NAME.to_owned()];
        if let Some(policy) = &self.policy {
            args.push("--policy".into());
            args.push(policy.to_string_lossy().into_owned());
        }
        if let Some(profile) = &self.profile {
            args.push("--profile".into());
            args.push(profile.clone());
        }
        args.push(stage.to_owned());
        json!({
            "path": self.hook.to_string_lossy(),
            "args": args,
            "env": [format!("PATH={DEFAULT_PATH}")],
            "timeout": crate::sys::deadline::HOOK_TIMEOUT.as_secs(),
        })
    }
}

/// Adds our hooks to the config of a container that carries `wg.enable` (whatever its value: the hook tells on
/// from off and refuses the rest) or runs under a runtime-bound profile; Ok(false) for any other container (the
/// config is then not to be written). Every field we do not know, and every hook already there, stays as it was.
pub fn add_hooks(config: &mut Value, call: &HookCall) -> Result<bool, String> {
    let root = config
        .as_object_mut()
        .ok_or("config.json is not a JSON object")?;
    let annotation = root
        .get("annotations")
        .and_then(|a| a.get(annotations::ENABLE))
        .cloned();
    match (&annotation, &call.profile) {
        (None, None) => {
            // `wg.Enable` and the like: the hook refuses them, so it must run.
            let mis_cased = root
                .get("annotations")
                .and_then(Value::as_object)
                .is_some_and(|a| annotations::mentions_enable(a.keys()));
            if !mis_cased {
                return Ok(false);
            }
        }
        (Some(_), None) => {}
        (Some(value), Some(profile)) => {
            // An explicit "off" on a runtime whose whole point is "on": say so rather than pick one.
            // Only the off spellings (short, plain words) get here; quoted all the same.
            if let Some(off) = value
                .as_str()
                .filter(|v| matches!(annotations::enable_value(v), Ok(false)))
            {
                return Err(format!(
                    "annotation {}={off:?} contradicts this runtime, which enables profile {profile:?}",
                    annotations::ENABLE,
                ));
            }
        }
        (None, Some(_)) => {
            // The hook acts on the annotation: the runtime name said yes, so say it for the hook.
            let annotations = root
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .ok_or("config.json: annotations is not an object")?;
            annotations.insert(annotations::ENABLE.into(), Value::String("true".into()));
        }
    }
    let hooks = root
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or("config.json: hooks is not an object")?;
    for (stage, arg) in [
        ("createRuntime", "create-runtime"),
        ("poststop", "poststop"),
    ] {
        let list = hooks
            .entry(stage)
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .ok_or_else(|| format!("config.json: hooks.{stage} is not an array"))?;
        let entry = call.entry(arg);
        // Already ours (say podman read hooks.d and the wrapper runs too): do not run it twice.
        let ours = |h: &Value| {
            h.get("path") == entry.get("path")
                && h.get("args")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.last().and_then(Value::as_str) == Some(arg))
        };
        if !list.iter().any(ours) {
            list.push(entry);
        }
    }
    Ok(true)
}

/// Reads, changes and atomically rewrites `<bundle>/config.json` when the container is enabled.
pub fn rewrite_bundle_config(bundle: &Path, call: &HookCall) -> Result<bool, String> {
    let path = bundle.join("config.json");
    let shown = path.display();
    let file = File::open(&path).map_err(|e| format!("{shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    let mut text = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("{shown}: {e}"))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!("{shown}: larger than 16 MiB"));
    }
    let mut config: Value = serde_json::from_slice(&text).map_err(|e| format!("{shown}: {e}"))?;
    if !add_hooks(&mut config, call).map_err(|e| format!("{shown}: {e}"))? {
        return Ok(false);
    }
    let out = serde_json::to_vec(&config).map_err(|e| format!("{shown}: {e}"))?;
    crate::sys::atomic_file::write(&path, &out, meta.permissions().mode() & 0o7777)
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok(true)
}

/// Where our lines go. The stdio of `create` and `run` are the container's own (runc hands them to its init, and
/// Docker shows them in `docker logs`), so info and notes go only to the `--log` file runc was given, in runc's
/// format, where the shim reads it; an error that fails the command goes to stderr too, where the engine shows it.
struct Logger {
    path: Option<PathBuf>,
    file: Option<File>,
    json: bool,
}

impl Logger {
    fn new(cmd: &RuncCommand) -> Logger {
        Logger {
            path: cmd.log.as_ref().map(PathBuf::from),
            file: None,
            json: cmd.log_format.as_deref() == Some("json"),
        }
    }

    fn info(&mut self, msg: &str) {
        self.write("info", msg);
    }

    fn warn(&mut self, msg: &str) {
        self.write("warning", msg);
    }

    fn error(&mut self, msg: &str) {
        eprintln!("wg-oci-runtime: {msg}");
        self.write("error", msg);
    }

    fn write(&mut self, level: &str, msg: &str) {
        if self.file.is_none() {
            // Opened only when there is something to say: most calls have nothing.
            self.file = self.path.as_ref().and_then(|p| {
                fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(p)
                    .ok()
            });
        }
        let Some(f) = &mut self.file else {
            return;
        };
        let time = rfc3339_now();
        let line = if self.json {
            json!({"level": level, "msg": format!("wg-oci-runtime: {msg}"), "time": time})
                .to_string()
        } else {
            format!(
                "time={time:?} level={level} msg={:?}",
                format!("wg-oci-runtime: {msg}")
            )
        };
        let _ = writeln!(f, "{line}");
    }
}

/// UTC now as `2006-01-02T15:04:05Z` (what runc's logrus writes), without a date crate.
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The hook: `--wg-hook`, else `wg-oci-hook` in this program's directory.
fn hook_path(opts: &Options) -> io::Result<PathBuf> {
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
fn named_policy(opts: &Options) -> Option<PathBuf> {
    opts.policy.clone().or_else(|| {
        std::env::var_os(crate::cli::POLICY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

fn policy_path(opts: &Options) -> PathBuf {
    named_policy(opts).unwrap_or_else(|| PathBuf::from(DEFAULT_POLICY_PATH))
}

/// The real runtime for `create` and `run`: `--wg-runtime`, else the policy's `runtime` (no policy means runc).
/// A broken policy fails the create: a guess could send one container's create and delete to different runtimes.
fn runtime_for_create(opts: &Options) -> Result<String, String> {
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
fn runtime_for_others(opts: &Options) -> (String, Option<String>) {
    if let Some(r) = &opts.runtime {
        return (r.clone(), None);
    }
    let path = policy_path(opts);
    let found = match fs::metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // Not a FIFO or a device: opening one could block every runc call.
        Ok(meta) if !meta.is_file() => Err("not a regular file".to_owned()),
        _ => read_capped(&path, MAX_POLICY_BYTES).and_then(|text| runtime_key(&text)),
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

/// A file's text, refused past `limit` bytes.
fn read_capped(path: &Path, limit: u64) -> Result<String, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(text)
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

    fn call(profile: Option<&str>) -> HookCall {
        HookCall {
            hook: "/usr/local/bin/wg-oci-hook".into(),
            policy: Some("/etc/wg-oci-hook/policy.toml".into()),
            profile: profile.map(str::to_owned),
        }
    }

    #[test]
    fn an_enabled_config_gets_both_hooks_after_the_ones_it_had() {
        let mut config = json!({
            "ociVersion": "1.0.2-dev",
            "annotations": {"wg.enable": "true"},
            "hooks": {"prestart": [{"path": "/usr/bin/dockerd", "args": ["libnetwork-setkey", "x"]}],
                      "createRuntime": [{"path": "/other"}]},
            "someFutureField": {"kept": [1, 2, 3]}
        });
        assert!(add_hooks(&mut config, &call(None)).unwrap());
        let hooks = &config["hooks"];
        assert_eq!(hooks["prestart"][0]["args"][0], "libnetwork-setkey");
        assert_eq!(hooks["createRuntime"][0]["path"], "/other");
        assert_eq!(
            hooks["createRuntime"][1]["args"],
            json!([
                "wg-oci-hook",
                "--policy",
                "/etc/wg-oci-hook/policy.toml",
                "create-runtime"
            ])
        );
        assert_eq!(hooks["poststop"][0]["args"][3], "poststop");
        assert_eq!(hooks["poststop"][0]["timeout"], 30);
        assert_eq!(config["someFutureField"]["kept"], json!([1, 2, 3]));
        // Twice is once.
        let before = config.clone();
        assert!(add_hooks(&mut config, &call(None)).unwrap());
        assert_eq!(config, before);
    }

    #[test]
    fn any_value_of_wg_enable_gets_the_hooks_and_keeps_its_value() {
        for value in ["true", "TRUE", "yes", "false", "off", "maybe", "", " true"] {
            let mut config = json!({"annotations": {"wg.enable": value}});
            assert!(add_hooks(&mut config, &call(None)).unwrap(), "{value:?}");
            assert_eq!(config["annotations"]["wg.enable"], value);
            assert_eq!(
                config["hooks"]["createRuntime"][0]["args"][3],
                "create-runtime"
            );
            assert_eq!(config["hooks"]["poststop"][0]["args"][3], "poststop");
        }
    }

    #[test]
    fn a_mis_cased_wg_enable_gets_the_hooks_so_the_hook_can_refuse_it() {
        let mut config = json!({"annotations": {"wg.Enable": "true"}});
        assert!(add_hooks(&mut config, &call(None)).unwrap());
        assert_eq!(
            config["hooks"]["createRuntime"][0]["args"][3],
            "create-runtime"
        );
        assert_eq!(config["annotations"], json!({"wg.Enable": "true"}));
    }

    #[test]
    fn a_config_without_wg_enable_is_left_alone() {
        for annotations in [
            json!({}),
            json!({"wg.profile": "lab", "wg.enable ": "true"}),
        ] {
            let mut config = json!({"annotations": annotations});
            let before = config.clone();
            assert!(!add_hooks(&mut config, &call(None)).unwrap());
            assert_eq!(config, before);
        }
        let mut config = json!({"process": {}});
        assert!(!add_hooks(&mut config, &call(None)).unwrap());
    }

    #[test]
    fn a_runtime_bound_profile_enables_and_names_its_profile() {
        let mut config = json!({"process": {}});
        assert!(add_hooks(&mut config, &call(Some("pia"))).unwrap());
        assert_eq!(config["annotations"]["wg.enable"], "true");
        let args = &config["hooks"]["createRuntime"][0]["args"];
        assert_eq!(args[3], "--profile");
        assert_eq!(args[4], "pia");
        // An explicit off contradicts the runtime; on, or a value the hook will refuse, goes to the hook.
        for value in ["false", "OFF", "0", "no"] {
            let mut config = json!({"annotations": {"wg.enable": value}});
            let e = add_hooks(&mut config, &call(Some("pia"))).unwrap_err();
            assert!(e.contains("contradicts"), "{e}");
        }
        for value in ["yes", "maybe"] {
            let mut config = json!({"annotations": {"wg.enable": value}});
            assert!(add_hooks(&mut config, &call(Some("pia"))).unwrap());
            assert_eq!(config["annotations"]["wg.enable"], value);
        }
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

    /// Found by fuzzing (fuzz/corpus/add_hooks/crash-e1ead707…): the `wg.enable` value a runtime-bound profile
    /// contradicts went into the error as JSON, which leaves DEL and line separators as they are, unbounded.
    #[test]
    fn a_contradicting_annotation_is_quoted_bounded() {
        // Since any value but an off one now goes to the hook (which quotes it bounded), odd ones are no error here.
        let long = "x".repeat(5000);
        for value in ["tr\u{7f}ue", "a\u{2028}b", long.as_str()] {
            let mut config = json!({"annotations": {"wg.enable": value}});
            assert!(add_hooks(&mut config, &call(Some("pia"))).unwrap());
        }
        let mut config = json!({"annotations": {"wg.enable": "false"}});
        assert_eq!(
            add_hooks(&mut config, &call(Some("pia"))).unwrap_err(),
            "annotation wg.enable=\"false\" contradicts this runtime, which enables profile \"pia\""
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_396_443), "2026-11-23T01:14:03Z");
    }
}
