//! Bounds on the hook's time. runc kills a createRuntime hook that outlives its hooks.d `timeout` (30 s) and the
//! user reads only "hook ran past specified timeout". The hook's own deadlines end first: the step in progress
//! fails with an error that says which limit passed, and the undo still has time to run.

use std::fmt;
use std::time::{Duration, Instant};

/// The `timeout` the shipped hooks.d entries and `wg-oci-runtime` give each hook run.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// The whole createRuntime, by default: below `HOOK_TIMEOUT`, with room for the undo.
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(25);
/// Resolving one Endpoint host name, by default.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A point in time, with the setting that put it there (for errors).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    limit: Duration,
    /// The policy key (or the fixed bound) that set it: `create_timeout`.
    name: &'static str,
}

impl Deadline {
    pub fn after(limit: Duration, name: &'static str) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
            name,
        }
    }

    /// Whichever of the two comes first.
    pub fn earlier(self, other: Deadline) -> Deadline {
        if other.at < self.at {
            other
        } else {
            self
        }
    }

    pub fn at(&self) -> Instant {
        self.at
    }

    /// Time left; zero once passed.
    pub fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The setting that set it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `Err("the create_timeout of 25 s passed")` once passed.
    pub fn check(&self) -> Result<(), String> {
        if self.passed() {
            Err(format!("the {self} passed"))
        } else {
            Ok(())
        }
    }
}

/// `create_timeout of 25 s`.
impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} s", self.name, seconds(self.limit))
    }
}

/// Whole seconds as `25`, others as `2.5`.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_deadline_wins_and_names_itself() {
        let create = Deadline::after(Duration::from_secs(25), "create_timeout");
        let api = Deadline::after(Duration::from_secs(20), "api_deadline");
        assert_eq!(create.earlier(api).name(), "api_deadline");
        assert_eq!(api.earlier(create).name(), "api_deadline");
        assert!(create.check().is_ok());
        assert!(create.left() > Duration::from_secs(24));
        let gone = Deadline::after(Duration::ZERO, "create_timeout");
        assert!(gone.passed());
        assert_eq!(gone.left(), Duration::ZERO);
        assert_eq!(
            gone.check().unwrap_err(),
            "the create_timeout of 0 s passed"
        );
        assert_eq!(
            Deadline::after(Duration::from_millis(2500), "x").to_string(),
            "x of 2.5 s"
        );
    }
}
