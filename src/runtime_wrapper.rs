//! `wg-oci-runtime`: a runc-compatible wrapper for engines that do not read hooks.d (Docker, containerd).
//!
//! For `create` and `run` of an enabled container it adds our createRuntime and poststop hooks to the
//! bundle's config.json, then execs the real runtime with the arguments it was given (less our own leading
//! `--wg-*` options); every other command is a plain exec. This is nvidia-container-runtime's approach: the
//! engine keeps talking to "runc", and exit codes, stdio and signals pass through because the real runtime
//! replaces this process.
//!
//! A container is enabled by its annotation `wg.enable=true` (Docker 24+ `--annotation`, containerd pod
//! annotations), or by a profile bound to the runtime name in the engine's config (`runtimeArgs:
//! ["--wg-profile=pia"]`), so that `docker run --runtime wg-pia` is enough.

use crate::annotations;
use crate::command::{resolve_program, DEFAULT_PATH};
use crate::policy::{Policy, DEFAULT_POLICY_PATH};
use serde_json::{json, Map, Value};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const MAX_CONFIG_BYTES: u64 = 16 << 20;
const HOOK_TIMEOUT_SECS: u64 = 30;
const HOOK_NAME: &str = "wg-oci-hook";

/// Our own options, which come before the runtime's arguments (where Docker puts `runtimeArgs`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--wg-profile=NAME`: the runtime name enables every container with this profile.
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
            "timeout": HOOK_TIMEOUT_SECS,
        })
    }
}

/// Adds our hooks to an enabled container's config; Ok(false) when the container is not enabled (the config is
/// then not to be written). Every field we do not know, and every hook already there, stays as it was.
pub fn add_hooks(config: &mut Value, call: &HookCall) -> Result<bool, String> {
    let root = config
        .as_object_mut()
        .ok_or("config.json is not a JSON object")?;
    let annotation = root
        .get("annotations")
        .and_then(|a| a.get(annotations::ENABLE))
        .cloned();
    let enabled_by_annotation = annotation.as_ref().and_then(Value::as_str) == Some("true");
    if !enabled_by_annotation && call.profile.is_none() {
        return Ok(false);
    }
    if call.profile.is_some() && !enabled_by_annotation {
        if let Some(value) = &annotation {
            // The container's own text: quoted and bounded (JSON would keep DEL and line separators).
            let shown = match value {
                Value::String(s) => format!("{:?}", s.chars().take(64).collect::<String>()),
                _ => "(not a string)".to_owned(),
            };
            return Err(format!(
                "annotation {}={shown} contradicts this runtime, which enables profile {:?}",
                annotations::ENABLE,
                call.profile.as_deref().unwrap_or_default()
            ));
        }
        // The hook acts on the annotation: the runtime name said yes, so say it for the hook.
        let annotations = root
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .ok_or("config.json: annotations is not an object")?;
        annotations.insert(annotations::ENABLE.into(), Value::String("true".into()));
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
    crate::atomic_file::write(&path, &out, meta.permissions().mode() & 0o7777)
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok(true)
}

/// Log lines go to stderr and, since shims swallow stderr, to the `--log` file runc was given, in its format.
struct Logger {
    file: Option<File>,
    json: bool,
}

impl Logger {
    fn new(cmd: &RuncCommand) -> Logger {
        let file = cmd.log.as_ref().and_then(|p| {
            fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(p)
                .ok()
        });
        Logger {
            file,
            json: cmd.log_format.as_deref() == Some("json"),
        }
    }

    fn log(&mut self, level: &str, msg: &str) {
        eprintln!("wg-oci-runtime: {msg}");
        if let Some(f) = &mut self.file {
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

fn policy_path(opts: &Options) -> PathBuf {
    opts.policy
        .clone()
        .or_else(|| {
            std::env::var_os(crate::cli::POLICY_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_POLICY_PATH))
}

/// The real runtime: `--wg-runtime`, else the policy's `runtime` (a missing policy means runc; a broken one is an
/// error, since guessing could send one container's create and delete to different runtimes).
fn real_runtime(opts: &Options) -> Result<String, String> {
    if let Some(r) = &opts.runtime {
        return Ok(r.clone());
    }
    let path = policy_path(opts);
    match Policy::load(&path) {
        Ok(policy) => Ok(policy.runtime),
        Err(_) if !path.exists() => Ok("runc".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// The whole program. Returns only on failure: on success the real runtime has replaced this process.
pub fn run(args: Vec<String>) -> ExitCode {
    let (opts, runtime_args) = match split_options(&args) {
        Ok(split) => split,
        Err(e) => {
            eprintln!("wg-oci-runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let cmd = parse_runc_args(runtime_args);
    let mut logger = Logger::new(&cmd);
    let runtime = match real_runtime(&opts) {
        Ok(r) => r,
        Err(e) => {
            logger.log("error", &e);
            return ExitCode::FAILURE;
        }
    };
    if matches!(cmd.subcommand.as_deref(), Some("create" | "run")) {
        let bundle = PathBuf::from(cmd.bundle.clone().unwrap_or_else(|| ".".into()));
        let call = match hook_path(&opts) {
            Ok(hook) => HookCall {
                hook,
                policy: opts.policy.clone(),
                profile: opts.profile.clone(),
            },
            Err(e) => {
                logger.log("error", &format!("finding {HOOK_NAME}: {e}"));
                return ExitCode::FAILURE;
            }
        };
        match rewrite_bundle_config(&bundle, &call) {
            Ok(true) => logger.log(
                "info",
                &format!(
                    "container {}: added {} hooks to {}/config.json",
                    cmd.container_id.as_deref().unwrap_or("?"),
                    call.hook.display(),
                    bundle.display()
                ),
            ),
            Ok(false) => {}
            Err(e) => {
                logger.log(
                    "error",
                    &format!(
                        "container {}: {e}",
                        cmd.container_id.as_deref().unwrap_or("?")
                    ),
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let program = match resolve_program(&runtime) {
        Ok(p) => p,
        Err(e) => {
            logger.log("error", &format!("the real runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let err = Command::new(&program)
        .arg0(OsString::from(&runtime))
        .args(runtime_args)
        .exec();
    logger.log("error", &format!("exec {}: {err}", program.display()));
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
    fn a_config_that_is_not_enabled_is_left_alone() {
        for annotations in [
            json!({}),
            json!({"wg.enable": "false"}),
            json!({"wg.enable": "TRUE"}),
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
        let mut config = json!({"annotations": {"wg.enable": "false"}});
        let e = add_hooks(&mut config, &call(Some("pia"))).unwrap_err();
        assert!(e.contains("contradicts"), "{e}");
    }

    /// Found by fuzzing (fuzz/corpus/add_hooks/crash-e1ead707…): the `wg.enable` value a runtime-bound profile
    /// contradicts went into the error as JSON, which leaves DEL and line separators as they are, unbounded.
    #[test]
    fn a_contradicting_annotation_is_quoted_bounded() {
        let long = "x".repeat(5000);
        for value in ["tr\u{7f}ue", "a\u{2028}b", long.as_str()] {
            let mut config = json!({"annotations": {"wg.enable": value}});
            let e = add_hooks(&mut config, &call(Some("pia"))).unwrap_err();
            assert!(
                !e.chars().any(|c| c.is_control() || c == '\u{2028}'),
                "{e:?}"
            );
            assert!(e.len() < 300, "{e}");
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
