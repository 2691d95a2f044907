//! The wrapper's log lines, in runc's format, to the `--log` file runc was given.

use crate::oci::runc_args::RuncCommand;
use serde_json::json;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Docker shows them in `docker logs`), so info and notes go only to the `--log` file runc was given, in runc's
/// format, where the shim reads it; an error that fails the command goes to stderr too, where the engine shows it.
pub struct Logger {
    path: Option<PathBuf>,
    file: Option<File>,
    json: bool,
}

impl Logger {
    pub fn new(cmd: &RuncCommand) -> Logger {
        Logger {
            path: cmd.log.as_ref().map(PathBuf::from),
            file: None,
            json: cmd.log_format.as_deref() == Some("json"),
        }
    }

    pub fn info(&mut self, msg: &str) {
        self.write("info", msg);
    }

    pub fn warn(&mut self, msg: &str) {
        self.write("warning", msg);
    }

    pub fn error(&mut self, msg: &str) {
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
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(time).to_string()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_396_443), "2026-11-23T01:14:03Z");
    }
}
