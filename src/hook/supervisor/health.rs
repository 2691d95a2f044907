//! A tunnel's health as its supervisor judges it, from what it saw: the newest handshake and, with a `probe`,
//! whether a TCP connect through the tunnel got an answer. Pure: the supervisor feeds it observations and
//! reads the verdict; `status` reads the verdict back from `<state_dir>/<key>.health`.

use crate::config::health::{HealthSettings, PROBE_FAILURES};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// What the supervisor last concluded, kept beside the record (`<key>.health`, 0644: nothing secret) for
/// `status`, and written in short into the container's `health_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub healthy: bool,
    /// Why not, or what it rests on, in a few words.
    pub reason: String,
    /// Seconds since the epoch: when this was concluded, and since when the verdict has held.
    pub checked_at: u64,
    pub since: u64,
    /// Seconds since the newest handshake; None: none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_age: Option<u64>,
    /// Recoveries done (PIA keys registered again, endpoints followed), and the last one's outcome.
    #[serde(default)]
    pub recoveries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recovery: Option<String>,
}

impl Report {
    /// The container's `health_file`: `healthy` or `unhealthy`, then why; a HEALTHCHECK can test the first word.
    pub fn file_text(&self) -> String {
        let word = if self.healthy { "healthy" } else { "unhealthy" };
        format!("{word} {}\n", self.reason)
    }
}

/// The judge: the settings, and what it has seen so far.
pub struct Judge<'a> {
    settings: &'a HealthSettings,
    /// Handshake ages count from here at most: the supervisor's start, or the last recovery (a new key has had
    /// no chance to shake hands before it).
    grace_from: SystemTime,
    probe_failures: u32,
    /// Reads of the device that failed in a row (a daemon busy for a moment is not a dead one).
    read_failures: u32,
    healthy: Option<(bool, SystemTime)>,
}

/// One look at the tunnel.
pub struct Observation {
    pub now: SystemTime,
    /// The newest handshake of any peer; None: none yet. Err: the device could not be read.
    pub handshake: Result<Option<SystemTime>, String>,
    /// With a probe: whether this round's connect was answered (a refusal is an answer).
    pub probe: Option<Result<(), String>>,
}

impl<'a> Judge<'a> {
    pub fn new(settings: &'a HealthSettings, now: SystemTime) -> Judge<'a> {
        Judge {
            settings,
            grace_from: now,
            probe_failures: 0,
            read_failures: 0,
            healthy: None,
        }
    }

    /// A recovery just changed the tunnel: its handshake and probes start afresh.
    pub fn restart(&mut self, now: SystemTime) {
        self.grace_from = now;
        self.probe_failures = 0;
    }

    /// Whether the last look found anything wrong (a failed probe or read, or the tunnel unhealthy): what goes
    /// through the tunnel (a port-forwarding round) waits until it has passed, rather than wait out its timeouts
    /// and hold up the next look.
    pub fn suspect(&self) -> bool {
        self.probe_failures > 0
            || self.read_failures > 0
            || matches!(self.healthy, Some((false, _)))
    }

    pub fn judge(&mut self, seen: Observation) -> Report {
        let age_of = |t: SystemTime| seen.now.duration_since(t).unwrap_or(Duration::ZERO);
        let (handshake_age, stale) = match &seen.handshake {
            Err(e) => {
                self.read_failures += 1;
                let failed = self.read_failures >= PROBE_FAILURES;
                (
                    None,
                    failed.then(|| format!("the device cannot be read: {e}")),
                )
            }
            Ok(handshake) => {
                self.read_failures = 0;
                let age = handshake.map(age_of);
                // Judged from the later of the handshake and the grace start.
                let judged = age.unwrap_or(Duration::MAX).min(age_of(self.grace_from));
                let stale = (judged > self.settings.stale_after).then(|| match age {
                    Some(a) => format!("no handshake for {} s", a.as_secs()),
                    None => format!("no handshake in {} s", age_of(self.grace_from).as_secs()),
                });
                (age, stale)
            }
        };
        let probe = match &seen.probe {
            None => None,
            Some(Ok(())) => {
                self.probe_failures = 0;
                None
            }
            Some(Err(e)) => {
                self.probe_failures += 1;
                (self.probe_failures >= PROBE_FAILURES).then(|| {
                    format!(
                        "the probe failed {} times in a row ({e})",
                        self.probe_failures
                    )
                })
            }
        };
        let reason = stale.or(probe);
        let healthy = reason.is_none();
        let since = match self.healthy {
            Some((was, since)) if was == healthy => since,
            _ => seen.now,
        };
        self.healthy = Some((healthy, since));
        let reason = reason.unwrap_or_else(|| match handshake_age {
            Some(a) => format!("handshake {} s ago", a.as_secs()),
            None => "no handshake yet".to_owned(),
        });
        Report {
            healthy,
            reason,
            checked_at: epoch(seen.now),
            since: epoch(since),
            handshake_age: handshake_age.map(|a| a.as_secs()),
            recoveries: 0,
            last_recovery: None,
        }
    }
}

pub fn epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(stale: u64) -> HealthSettings {
        HealthSettings {
            stale_after: Duration::from_secs(stale),
            ..HealthSettings::default()
        }
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn seen(now: u64, handshake: Option<u64>, probe: Option<bool>) -> Observation {
        Observation {
            now: at(now),
            handshake: Ok(handshake.map(at)),
            probe: probe.map(|ok| if ok { Ok(()) } else { Err("timed out".into()) }),
        }
    }

    #[test]
    fn a_handshake_older_than_stale_after_is_unhealthy_and_a_new_one_heals() {
        let s = settings(180);
        let mut j = Judge::new(&s, at(0));
        let r = j.judge(seen(10, Some(5), None));
        assert!(r.healthy, "{r:?}");
        assert_eq!(r.reason, "handshake 5 s ago");
        assert_eq!(r.file_text(), "healthy handshake 5 s ago\n");
        let r = j.judge(seen(250, Some(100), None));
        assert!(r.healthy, "150 s is within 180: {r:?}");
        let r = j.judge(seen(290, Some(100), None));
        assert!(!r.healthy, "190 s is stale");
        assert_eq!(r.reason, "no handshake for 190 s");
        assert!(r.file_text().starts_with("unhealthy "));
        assert_eq!(r.since, epoch(at(290)));
        let r = j.judge(seen(300, Some(295), None));
        assert!(r.healthy);
        assert_eq!(r.since, epoch(at(300)), "the verdict changed");
        let r = j.judge(seen(310, Some(295), None));
        assert_eq!(r.since, epoch(at(300)), "and holds since then");
    }

    #[test]
    fn no_handshake_is_judged_from_the_start_or_the_last_recovery() {
        let s = settings(30);
        let mut j = Judge::new(&s, at(0));
        assert!(j.judge(seen(20, None, None)).healthy, "within the grace");
        let r = j.judge(seen(40, None, None));
        assert!(!r.healthy);
        assert_eq!(r.reason, "no handshake in 40 s");
        // A recovery: an old handshake does not condemn the new key before it has had its chance.
        j.restart(at(100));
        assert!(j.judge(seen(110, Some(10), None)).healthy);
        assert!(!j.judge(seen(140, Some(10), None)).healthy);
    }

    #[test]
    fn probes_fail_the_tunnel_after_consecutive_failures_only() {
        let s = settings(180);
        let mut j = Judge::new(&s, at(0));
        assert!(!j.suspect());
        assert!(j.judge(seen(1, Some(1), Some(false))).healthy, "one loss");
        assert!(j.suspect(), "a loss is a suspicion");
        assert!(j.judge(seen(2, Some(1), Some(true))).healthy);
        assert!(!j.suspect());
        assert!(j.judge(seen(3, Some(1), Some(false))).healthy);
        let r = j.judge(seen(4, Some(1), Some(false)));
        assert!(!r.healthy);
        assert_eq!(r.reason, "the probe failed 2 times in a row (timed out)");
        j.restart(at(5));
        assert!(j.judge(seen(6, Some(1), Some(false))).healthy);
    }

    #[test]
    fn a_device_that_cannot_be_read_twice_in_a_row_is_unhealthy() {
        let s = settings(180);
        let mut j = Judge::new(&s, at(0));
        let unreadable = |now| Observation {
            now: at(now),
            handshake: Err("no such device".into()),
            probe: None,
        };
        assert!(j.judge(unreadable(1)).healthy, "once may be a busy daemon");
        let r = j.judge(unreadable(2));
        assert!(!r.healthy);
        assert_eq!(r.reason, "the device cannot be read: no such device");
    }
}
