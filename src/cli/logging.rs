//! Where the hook's log lines go. A createRuntime or poststop logs to the policy's `log` destination (syslog by
//! default) at `log_level` (info by default), and ends with one line naming the container, profile,
//! backend, duration and outcome (info; error for a failure); warnings and errors go to stderr as well, which
//! runc shows when the hook fails. `gc` logs to stderr alone; a tunnel's supervisor as a hook stage does.

use crate::config::annotations;
use crate::config::policy::{BackendChoice, LogDestination, Policy};
use crate::hook::record::Record;
use crate::hook::HookError;
use crate::oci::state::ContainerState;
use crate::sys::log_sink::{self, Severity, JOURNAL_SOCKET, SYSLOG_SOCKET};
use log::{Level, LevelFilter, Log, Metadata};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

/// The name lines carry (syslog's tag, journald's `SYSLOG_IDENTIFIER`): `journalctl -t wg-oci-hook`.
pub const IDENT: &str = "wg-oci-hook";

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Log lines at the policy's level (warn by default) to stderr: `gc`.
pub fn init(policy_level: Option<LevelFilter>) {
    let level = policy_level.unwrap_or(LevelFilter::Warn);
    let rust_log = std::env::var("RUST_LOG").ok();
    install(Logger::new(
        Sink::Stderr,
        filter(level, rust_log.as_deref()),
    ));
}

/// A hook stage's logging: lines at the policy's `log_level` to its `log` destination, and warnings and
/// errors (as far as `log_level` lets them through) to stderr as well. The default level is info, so that each
/// stage's outcome line is written, except for `log = "stderr"`, which keeps warn: there a start's stderr is
/// seen only in the engine's error, which should hold the error and little else.
pub fn init_hook(policy: &Policy) {
    install(Logger::for_policy(
        policy,
        std::env::var("RUST_LOG").ok().as_deref(),
    ));
}

fn install(logger: Logger) {
    let logger = LOGGER.get_or_init(|| logger);
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.filter.filter());
    }
}

/// The policy's level for our own lines; the HTTP and TLS crates' at warn at most: their debug and trace output
/// is theirs to word, and could carry a URL with a token in it. RUST_LOG can still ask for it.
fn filter(level: LevelFilter, rust_log: Option<&str>) -> env_filter::Filter {
    let mut builder = env_filter::Builder::new();
    builder
        .filter_level(level.min(LevelFilter::Warn))
        .filter_module("wg_oci_hook", level);
    if let Some(spec) = rust_log {
        builder.parse(spec);
    }
    builder.build()
}

/// Which stage a hook run was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    CreateRuntime,
    Poststop,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::CreateRuntime => "create-runtime",
            Stage::Poststop => "poststop",
        }
    }
}

/// The one line a createRuntime or poststop ends with, to the policy's destination, at info (error when the
/// stage failed):
/// `create-runtime container=ID profile=NAME backend=userspace duration_ms=41.7 outcome=ok`, or
/// `outcome=error: STEP: CAUSE` (the error line, without the container that the line names already). What is
/// not known is `-`: a poststop of a container with no tunnel, a start refused before its profile was chosen
/// (the profile of a failed start is the one the policy picks for it; its backend the policy's, unless auto).
/// A failure's line is never written to stderr: the error line is there already, and is what the engine shows.
pub fn outcome(
    stage: Stage,
    state: &ContainerState,
    policy: &Policy,
    runtime_profile: Option<&str>,
    started: Instant,
    result: &Result<Option<Record>, HookError>,
) {
    let Some(logger) = LOGGER.get() else {
        return;
    };
    let line = OutcomeLine::new(stage, state, policy, runtime_profile, started, result);
    logger.outcome(&line);
}

/// What the outcome line says, field by field.
#[derive(Debug)]
struct OutcomeLine {
    stage: Stage,
    container: String,
    profile: Option<String>,
    backend: Option<String>,
    duration_ms: f64,
    /// None for ok, else the error (without its container).
    error: Option<String>,
}

impl OutcomeLine {
    fn new(
        stage: Stage,
        state: &ContainerState,
        policy: &Policy,
        runtime_profile: Option<&str>,
        started: Instant,
        result: &Result<Option<Record>, HookError>,
    ) -> OutcomeLine {
        let (profile, backend, error) = match result {
            Ok(Some(record)) => (
                Some(record.profile.clone()),
                Some(record.backend.to_string()),
                None,
            ),
            Ok(None) => (None, None, None),
            Err(e) => {
                let (profile, backend) = match stage {
                    Stage::CreateRuntime => {
                        let profile = annotations::parse(&state.annotations).ok().and_then(|r| {
                            policy
                                .select_profile_or(r.profile.as_deref(), runtime_profile)
                                .ok()
                                .map(|p| p.name.clone())
                        });
                        let backend = match policy.backend {
                            BackendChoice::Kernel => Some("kernel".to_owned()),
                            BackendChoice::Userspace => Some("userspace".to_owned()),
                            BackendChoice::Auto => None,
                        };
                        (profile, backend)
                    }
                    Stage::Poststop => (None, None),
                };
                (profile, backend, Some(format!("{}: {}", e.step, e.cause)))
            }
        };
        OutcomeLine {
            stage,
            container: state.id.clone(),
            profile,
            backend,
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
            error,
        }
    }

    /// Info for a stage that worked; error for one that failed, so that `journalctl -p err` and a
    /// `log_level = "warn"` or `"error"` still show failed starts.
    fn level(&self) -> Level {
        match self.error {
            None => Level::Info,
            Some(_) => Level::Error,
        }
    }

    fn message(&self) -> String {
        let outcome = match &self.error {
            None => "ok".to_owned(),
            Some(e) => format!("error: {e}"),
        };
        format!(
            "{} container={} profile={} backend={} duration_ms={:.1} outcome={outcome}",
            self.stage.name(),
            self.container,
            self.profile.as_deref().unwrap_or("-"),
            self.backend.as_deref().unwrap_or("-"),
            self.duration_ms,
        )
    }

    /// journald's structured fields besides the message. `CONTAINER_ID` (12 characters) and
    /// `CONTAINER_ID_FULL` as podman's and Docker's journald log drivers write them, so that
    /// `journalctl CONTAINER_ID_FULL=...` shows a container's output and its tunnel's lines together.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let short: String = self.container.chars().take(12).collect();
        let mut fields = vec![
            ("CONTAINER_ID", short),
            ("CONTAINER_ID_FULL", self.container.clone()),
            ("WG_STAGE", self.stage.name().to_owned()),
            ("WG_DURATION_MS", format!("{:.1}", self.duration_ms)),
            (
                "WG_OUTCOME",
                if self.error.is_some() { "error" } else { "ok" }.to_owned(),
            ),
        ];
        if let Some(profile) = &self.profile {
            fields.push(("WG_PROFILE", profile.clone()));
        }
        if let Some(backend) = &self.backend {
            fields.push(("WG_BACKEND", backend.clone()));
        }
        if let Some(error) = &self.error {
            fields.push(("WG_ERROR", error.clone()));
        }
        fields
    }
}

/// Where lines go.
enum Sink {
    Stderr,
    Syslog,
    Journald,
    /// A file, opened at its first line and kept open (an error opening it is kept too).
    File {
        path: PathBuf,
        file: OnceLock<Result<File, String>>,
    },
}

struct Logger {
    filter: env_filter::Filter,
    sink: Sink,
    /// Lines at this level and above go to stderr as well as to the sink (off when the sink is stderr).
    also_stderr: LevelFilter,
    /// A send that timed out: later lines go to stderr at once instead of waiting again.
    stuck: AtomicBool,
    /// Whether stderr was told that the destination failed.
    told: AtomicBool,
}

impl Logger {
    fn new(sink: Sink, filter: env_filter::Filter) -> Logger {
        let also_stderr = match sink {
            Sink::Stderr => LevelFilter::Off,
            _ => LevelFilter::Warn,
        };
        Logger {
            filter,
            sink,
            also_stderr,
            stuck: AtomicBool::new(false),
            told: AtomicBool::new(false),
        }
    }

    fn for_policy(policy: &Policy, rust_log: Option<&str>) -> Logger {
        let (sink, default) = match &policy.log {
            LogDestination::Stderr => (Sink::Stderr, LevelFilter::Warn),
            LogDestination::Syslog => (Sink::Syslog, LevelFilter::Info),
            LogDestination::Journald => (Sink::Journald, LevelFilter::Info),
            LogDestination::File(path) => (
                Sink::File {
                    path: path.clone(),
                    file: OnceLock::new(),
                },
                LevelFilter::Info,
            ),
        };
        Logger::new(sink, filter(policy.log_level.unwrap_or(default), rust_log))
    }

    fn outcome(&self, line: &OutcomeLine) {
        let level = line.level();
        let metadata = Metadata::builder()
            .level(level)
            .target("wg_oci_hook::cli")
            .build();
        if !self.filter.enabled(&metadata) {
            return;
        }
        let failed = line.error.is_some();
        if failed && matches!(self.sink, Sink::Stderr) {
            return;
        }
        let fields = line.fields();
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.write(level, &line.message(), &fields, !failed);
    }

    /// Writes a line to the sink; if that fails, to stderr instead (with `fallback`), after a note saying why.
    fn write(&self, level: Level, message: &str, fields: &[(&str, &str)], fallback: bool) {
        let Err(why) = self.deliver(level, message, fields) else {
            return;
        };
        if !fallback {
            return;
        }
        if !self.told.swap(true, Ordering::Relaxed) {
            stderr_line(
                Level::Warn,
                &format!(
                    "cannot log to {} ({why}); writing to stderr instead",
                    self.destination()
                ),
            );
        }
        stderr_line(level, message);
    }

    /// The destination as the policy names it.
    fn destination(&self) -> String {
        match &self.sink {
            Sink::Stderr => "stderr".to_owned(),
            Sink::Syslog => "syslog".to_owned(),
            Sink::Journald => "journald".to_owned(),
            Sink::File { path, .. } => format!("file:{}", path.display()),
        }
    }

    fn deliver(&self, level: Level, message: &str, fields: &[(&str, &str)]) -> Result<(), String> {
        let severity = severity(level);
        match &self.sink {
            Sink::Stderr => {
                stderr_line(level, message);
                Ok(())
            }
            Sink::Syslog => {
                let datagram = log_sink::syslog_datagram(
                    severity,
                    IDENT,
                    std::process::id(),
                    SystemTime::now(),
                    message,
                );
                self.send(SYSLOG_SOCKET, &datagram, true)
            }
            Sink::Journald => {
                let priority = (severity as u8).to_string();
                let pid = std::process::id().to_string();
                let mut all = vec![
                    ("MESSAGE", message),
                    ("PRIORITY", priority.as_str()),
                    ("SYSLOG_IDENTIFIER", IDENT),
                    ("SYSLOG_FACILITY", "3"),
                    ("SYSLOG_PID", pid.as_str()),
                ];
                all.extend_from_slice(fields);
                self.send(JOURNAL_SOCKET, &log_sink::journal_datagram(&all), false)
            }
            Sink::File { path, file } => {
                let file = file
                    .get_or_init(|| log_sink::open_append(path).map_err(|e| e.to_string()))
                    .as_ref()
                    .map_err(Clone::clone)?;
                let line = file_line(SystemTime::now(), std::process::id(), level, message);
                log_sink::append(file, line.as_bytes()).map_err(|e| e.to_string())
            }
        }
    }

    fn send(&self, socket: &str, datagram: &[u8], stream: bool) -> Result<(), String> {
        if self.stuck.load(Ordering::Relaxed) {
            return Err(format!("{socket}: an earlier line timed out"));
        }
        log_sink::send(Path::new(socket), datagram, stream).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                self.stuck.store(true, Ordering::Relaxed);
            }
            format!("{socket}: {e}")
        })
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.filter.matches(record) {
            return;
        }
        let message = record.args().to_string();
        let stderr_too = record.level() <= self.also_stderr;
        // A line that goes to stderr anyway needs no fallback there.
        self.write(record.level(), &message, &[], !stderr_too);
        if stderr_too {
            stderr_line(record.level(), &message);
        }
    }

    fn flush(&self) {}
}

fn severity(level: Level) -> Severity {
    match level {
        Level::Error => Severity::Error,
        Level::Warn => Severity::Warning,
        Level::Info => Severity::Info,
        Level::Debug | Level::Trace => Severity::Debug,
    }
}

/// `wg-oci-hook[PID]: LEVEL: message`, as the hook has always written to stderr, in one write.
fn stderr_line(level: Level, message: &str) {
    let line = format!("{IDENT}[{}]: {level}: {message}\n", std::process::id());
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// A log file's line: `2025-06-24T10:00:00.123Z wg-oci-hook[PID]: INFO: message` (UTC), on one line.
fn file_line(time: SystemTime, pid: u32, level: Level, message: &str) -> String {
    format!(
        "{} {IDENT}[{pid}]: {level}: {}\n",
        humantime::format_rfc3339_millis(time),
        log_sink::one_line(&log_sink::cut(message))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(top: &str) -> Policy {
        Policy::parse(
            &format!("{top}\n[profiles.vpn]\nconfig = \"/vpn.conf\"\n[profiles.b]\nconfig = \"/b.conf\"\n"),
            Path::new("/etc/wg-oci-hook/policy.toml"),
        )
        .unwrap()
    }

    fn state(annotations: &[(&str, &str)]) -> ContainerState {
        let ann: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let json = serde_json::json!({
            "ociVersion": "1.0.2", "id": "4f2c9a01b2c3d4e5f6a7", "status": "creating", "pid": 4242,
            "bundle": "/b", "annotations": ann,
        });
        ContainerState::read(json.to_string().as_bytes()).unwrap()
    }

    fn error(step: &'static str, cause: &str) -> HookError {
        HookError {
            container: "4f2c9a01b2c3d4e5f6a7".into(),
            step,
            cause: cause.into(),
        }
    }

    #[test]
    fn a_failed_start_names_what_is_known_and_its_error() {
        let p = policy("default_profile = \"vpn\"\nbackend = \"userspace\"");
        let s = state(&[("wg.enable", "true")]);
        let r = Err(error(
            "reading the profile",
            "/vpn.conf:7: PostUp runs a shell command",
        ));
        let line = OutcomeLine::new(Stage::CreateRuntime, &s, &p, None, Instant::now(), &r);
        let message = line.message();
        assert_eq!(line.level(), Level::Error);
        assert!(
            message.starts_with(
                "create-runtime container=4f2c9a01b2c3d4e5f6a7 profile=vpn backend=userspace duration_ms="
            ),
            "{message}"
        );
        assert!(
            message.ends_with(
                " outcome=error: reading the profile: /vpn.conf:7: PostUp runs a shell command"
            ),
            "{message}"
        );
        // The runtime's --profile when the container names none; an unknown profile and backend auto are "-".
        let p = policy("default_profile = \"vpn\"");
        let line = OutcomeLine::new(Stage::CreateRuntime, &s, &p, Some("b"), Instant::now(), &r);
        assert!(
            line.message().contains(" profile=b backend=- "),
            "{}",
            line.message()
        );
        let asks = state(&[("wg.enable", "true"), ("wg.profile", "nope")]);
        let line = OutcomeLine::new(Stage::CreateRuntime, &asks, &p, None, Instant::now(), &r);
        assert!(
            line.message().contains(" profile=- backend=- "),
            "{}",
            line.message()
        );
        let line = OutcomeLine::new(Stage::Poststop, &s, &p, None, Instant::now(), &r);
        assert!(
            line.message()
                .starts_with("poststop container=4f2c9a01b2c3d4e5f6a7 profile=- backend=- "),
            "{}",
            line.message()
        );
    }

    #[test]
    fn journald_gets_the_fields_podman_uses_and_ours() {
        let line = OutcomeLine {
            stage: Stage::CreateRuntime,
            container: "4f2c9a01b2c3d4e5f6a7".into(),
            profile: Some("vpn".into()),
            backend: Some("kernel".into()),
            duration_ms: 41.66,
            error: None,
        };
        assert_eq!(
            line.message(),
            "create-runtime container=4f2c9a01b2c3d4e5f6a7 profile=vpn backend=kernel duration_ms=41.7 outcome=ok"
        );
        assert_eq!(line.level(), Level::Info);
        let fields = line.fields();
        for (key, value) in [
            ("CONTAINER_ID", "4f2c9a01b2c3"),
            ("CONTAINER_ID_FULL", "4f2c9a01b2c3d4e5f6a7"),
            ("WG_STAGE", "create-runtime"),
            ("WG_PROFILE", "vpn"),
            ("WG_BACKEND", "kernel"),
            ("WG_DURATION_MS", "41.7"),
            ("WG_OUTCOME", "ok"),
        ] {
            assert!(
                fields.contains(&(key, value.to_owned())),
                "{key}: {fields:?}"
            );
        }
        assert!(fields.iter().all(|(k, _)| log_sink::is_journal_key(k)));
        assert!(!fields.iter().any(|(k, _)| *k == "WG_ERROR"));
    }

    #[test]
    fn the_default_level_is_info_except_on_stderr() {
        let info = Metadata::builder()
            .level(Level::Info)
            .target("wg_oci_hook::cli")
            .build();
        for (top, enabled) in [
            ("", true),
            ("log = \"journald\"", true),
            ("log = \"file:/var/log/x.log\"", true),
            ("log = \"stderr\"", false),
            ("log = \"stderr\"\nlog_level = \"info\"", true),
            ("log_level = \"warn\"", false),
        ] {
            let logger = Logger::for_policy(&policy(top), None);
            assert_eq!(logger.enabled(&info), enabled, "{top:?}");
        }
        // Another crate's chatter stays at warn whatever the level.
        let logger = Logger::for_policy(&policy("log_level = \"trace\""), None);
        let chatter = Metadata::builder()
            .level(Level::Debug)
            .target("rustls::client")
            .build();
        assert!(!logger.enabled(&chatter));
        // RUST_LOG can still ask for it.
        let logger = Logger::for_policy(&policy("log_level = \"trace\""), Some("rustls=debug"));
        assert!(logger.enabled(&chatter));
    }

    #[test]
    fn a_file_line_is_stamped_and_one_line() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_750_759_200_123);
        assert_eq!(
            file_line(t, 7, Level::Info, "a\nb"),
            "2025-06-24T10:00:00.123Z wg-oci-hook[7]: INFO: a\\nb\n"
        );
    }

    #[test]
    fn lines_at_the_level_go_to_the_file_and_warnings_to_stderr_too() {
        let dir = std::env::temp_dir().join(format!("wgoh-logging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hook.log");
        let p = policy(&format!("log = \"file:{}\"", path.display()));
        let logger = Logger::for_policy(&p, None);
        let record = |level, text: &str| {
            logger.log(
                &log::Record::builder()
                    .level(level)
                    .target("wg_oci_hook::hook")
                    .args(format_args!("{text}"))
                    .build(),
            )
        };
        record(Level::Info, "an info line");
        record(Level::Debug, "a debug line");
        record(Level::Warn, "a warning");
        let s = state(&[("wg.enable", "true")]);
        logger.outcome(&OutcomeLine::new(
            Stage::Poststop,
            &s,
            &p,
            None,
            Instant::now(),
            &Ok(None),
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with("]: INFO: an info line"), "{text}");
        assert!(lines[1].ends_with("]: WARN: a warning"), "{text}");
        assert!(
            lines[2].contains(
                ": INFO: poststop container=4f2c9a01b2c3d4e5f6a7 profile=- backend=- duration_ms="
            ),
            "{text}"
        );
        assert!(lines[2].ends_with(" outcome=ok"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
