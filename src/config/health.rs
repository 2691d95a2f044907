//! A profile's health settings: how the tunnel's supervisor judges it (`health_interval`, `stale_after`, an
//! optional `probe`) and where it tells the container (`health_file`). Checked by the policy parser, which
//! names the line of a bad value.

use std::net::SocketAddr;
use std::time::Duration;

/// Where the container reads its tunnel's health unless the profile says otherwise.
pub const DEFAULT_HEALTH_FILE: &str = "/run/wg-health";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// WireGuard's REJECT_AFTER_TIME: past it, no session key of the last handshake may carry a packet, so a
/// tunnel whose newest handshake is older than this has carried nothing since. A live one rekeys every two
/// minutes (REKEY_AFTER_TIME) while it sends, which a persistent keepalive makes it do.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(180);
/// A probe (or a read of the device) that fails this many times in a row makes the tunnel unhealthy: one lost
/// SYN, or a daemon busy for a moment, is no outage.
pub const PROBE_FAILURES: u32 = 2;
/// A probe's connect waits at most this long (or the interval, if shorter).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub const INTERVAL_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
pub const STALE_AFTER_RANGE: std::ops::RangeInclusive<u64> = 3..=86400;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// The file inside the container (resolved in its root); None: `health_file = ""`, no file.
    pub file: Option<String>,
    /// How often the supervisor looks at the handshake (and probes).
    pub interval: Duration,
    /// A handshake older than this makes the tunnel unhealthy.
    pub stale_after: Duration,
    /// A TCP connect through the tunnel, from inside the container's netns; refused counts as reached.
    pub probe: Option<SocketAddr>,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            file: Some(DEFAULT_HEALTH_FILE.to_owned()),
            interval: DEFAULT_INTERVAL,
            stale_after: DEFAULT_STALE_AFTER,
            probe: None,
        }
    }
}

/// `health_file`: "" for none, else an absolute path of a file inside the container, without `..`.
pub fn parse_file(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let ok = text.starts_with('/')
        && text.len() <= 1024
        && !text.ends_with('/')
        && !text.split('/').any(|c| c == "..")
        && !text.contains('\0');
    if ok {
        Ok(Some(text.to_owned()))
    } else {
        Err("health_file must be \"\" (none) or an absolute path of a file inside the container, without ..".into())
    }
}

/// `probe`: `IP:PORT` (`[IPv6]:PORT`), reached through the tunnel. A name would be looked up by the host's
/// resolver, outside the tunnel, on every check: refused.
pub fn parse_probe(text: &str) -> Result<SocketAddr, String> {
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 && !addr.ip().is_unspecified() => Ok(addr),
        _ => Err(format!(
            "probe {text:?}: expected IP:PORT of something reachable through the tunnel, such as \"10.0.0.1:53\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_file_is_none_an_absolute_path_or_refused() {
        assert_eq!(parse_file(""), Ok(None));
        assert_eq!(parse_file("/run/h"), Ok(Some("/run/h".into())));
        for bad in ["run/h", "/run/", "/run/../etc/passwd", "/a\0b"] {
            assert!(parse_file(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_probe_is_an_address_and_port() {
        assert_eq!(
            parse_probe("10.0.0.1:53"),
            Ok("10.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_probe("[fd00::1]:443"),
            Ok("[fd00::1]:443".parse().unwrap())
        );
        for bad in [
            "example.com:443",
            "10.0.0.1",
            "10.0.0.1:0",
            "0.0.0.0:53",
            "",
        ] {
            assert!(parse_probe(bad).is_err(), "{bad:?}");
        }
    }
}
