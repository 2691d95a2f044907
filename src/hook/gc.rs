//! The sweep: tunnels whose containers are all gone without a poststop (a runtime killed, a hook killed by the
//! engine's timeout, a host crash with a persistent state dir), taken down with all they hold: link, daemon,
//! helper, lease, record. `wg-oci-hook gc` runs it; every createRuntime runs it too, cheaply (a tunnel with a
//! member that still runs costs a record read and a stat, and a busy one is passed over).

use super::lease::Leases;
use super::record::StateDir;
use super::teardown;
use crate::sys::deadline::Deadline;
use log::{info, warn};
use std::time::Duration;

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    /// The tunnels taken down, as `KEY (containers)`.
    pub tunnels: Vec<String>,
    /// Memberships, leases and lock files that named nothing any more.
    pub orphans: usize,
    /// Failures, a line each (the sweep goes on past them).
    pub failures: Vec<String>,
}

/// Takes down every tunnel none of whose members runs, unless `except` (the caller's own, which it holds).
pub fn sweep_dead(state_dir: &StateDir, except: Option<&str>) -> Swept {
    let mut swept = Swept::default();
    let keys = match state_dir.keys() {
        Ok(keys) => keys,
        Err(e) => {
            swept.failures.push(format!("listing the tunnels: {e}"));
            return swept;
        }
    };
    for key in keys.iter().filter(|k| Some(k.as_str()) != except) {
        // Read without the lock first: most tunnels are alive, and their locks are not ours to take.
        match state_dir.load(key) {
            Ok(Some(record)) if record.any_member_alive() && record.complete => continue,
            Ok(None) => continue,
            _ => {}
        }
        let Ok(Some(lock)) = state_dir.try_lock(key) else {
            // A start, a poststop or another sweep is at work on it.
            continue;
        };
        let record = match state_dir.load(key) {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(e) => {
                swept.failures.push(format!("tunnel {key}: {e}"));
                continue;
            }
        };
        // Under the lock, a record without `complete` is a start that died: its container never ran.
        if record.complete && record.any_member_alive() {
            continue;
        }
        let mut failures = teardown::tear_down(state_dir, &record, None, None);
        if let Err(e) = state_dir.remove_lock(key, lock) {
            failures.push(format!("removing the lock file: {e}"));
        }
        let what = format!("{key} (containers {})", record.member_ids());
        info!("gc: tunnel {what}: no member runs any more; taken down");
        swept
            .failures
            .extend(failures.into_iter().map(|f| format!("tunnel {what}: {f}")));
        swept.tunnels.push(what);
    }
    swept
}

/// `wg-oci-hook gc`: the sweep, then whatever names nothing any more (memberships of gone tunnels, leases no
/// tunnel holds, lock files of gone tunnels).
pub fn collect(state_dir: &StateDir) -> Swept {
    let mut swept = sweep_dead(state_dir, None);
    let deadline = Deadline::after(Duration::from_secs(10), "gc");
    match state_dir.memberships() {
        Ok(ids) => {
            for id in ids {
                let Ok(Some(key)) = state_dir.membership(&id) else {
                    continue;
                };
                // Written before the record by a start that holds the lock: only an unlocked tunnel's counts.
                let Ok(Some(_lock)) = state_dir.try_lock(&key) else {
                    continue;
                };
                let named = state_dir
                    .load(&key)
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.member(&id).is_some());
                if !named && state_dir.remove_membership(&id).is_ok() {
                    swept.orphans += 1;
                }
            }
        }
        Err(e) => swept.failures.push(format!("listing the memberships: {e}")),
    }
    match Leases::open(state_dir).map(|l| l.sweep(state_dir, deadline)) {
        Ok(Ok(freed)) => swept.orphans += freed,
        Ok(Err(e)) => swept.failures.push(format!("sweeping the leases: {e}")),
        Err(e) => swept.failures.push(format!("sweeping the leases: {e}")),
    }
    match state_dir.orphan_locks() {
        Ok(n) => swept.orphans += n,
        Err(e) => swept.failures.push(format!("sweeping the lock files: {e}")),
    }
    for failure in &swept.failures {
        warn!("gc: {failure}");
    }
    swept
}
