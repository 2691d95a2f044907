//! poststop: the container leaves its tunnel; the tunnel goes with its last member, or with the pod's sandbox.

use super::record::{Record, StateDir};
use super::teardown;
use super::{HookError, Step};
use crate::config::policy::Policy;
use crate::oci::state::ContainerState;
use crate::sys::deadline::Deadline;
use crate::sys::netns::NetNs;
use log::{debug, info};

/// The container leaves its tunnel, which is taken down when no other member runs (or when the leaver is the
/// pod's sandbox). Idempotent: a container that is no member (poststop twice, or with no createRuntime, or
/// after a failed one) has nothing to do. Works when the container's netns is already gone (podman runs poststop
/// after removing it) and when it lives on (a pod's). The record is removed even when a step fails, and the
/// failure is reported. Returns the record of the tunnel it left, if it was on one (for the outcome line).
pub fn poststop(state: &ContainerState, policy: &Policy) -> Result<Option<Record>, HookError> {
    let id = state.id.as_str();
    leave(state, policy).map_err(|e| e.of(id))
}

fn leave(state: &ContainerState, policy: &Policy) -> Result<Option<Record>, super::StepError> {
    let id = state.id.as_str();
    let dir = StateDir::open(&policy.state_dir).step("opening the state directory")?;
    // The container's netns, when runc still names a live init (a shared netns, a poststop run by hand).
    let ns = || {
        state
            .live_pid()
            .and_then(|pid| NetNs::of_container(pid).ok())
    };
    let Some(key) = dir.membership(id).step("reading the state record")? else {
        // A hook before version 3 kept one record per container.
        let Some(record) = dir.load_legacy(id).step("reading the state record")? else {
            debug!("container {id}: poststop: no tunnel of ours");
            return Ok(None);
        };
        let failures = teardown::tear_down(&dir, &record, ns().as_ref(), Some(id));
        return report(id, failures).map(|()| Some(record));
    };
    let deadline = Deadline::after(policy.create_timeout, "create_timeout");
    let lock = dir
        .lock(&key, deadline)
        .step("waiting for the tunnel's lock")?;
    let record = dir.load(&key).step("reading the state record")?;
    let Some(mut record) = record.filter(|r| r.member(id).is_some()) else {
        // Its tunnel went already (with the sandbox, or swept); only the membership was left.
        dir.remove_membership(id).step("removing the membership")?;
        if dir.load(&key).ok().flatten().is_none() {
            let _ = dir.remove_lock(&key, lock);
        }
        return Ok(None);
    };
    let others_run = record.member_runs_besides(Some(id));
    let is_sandbox = record.member(id).is_some_and(|m| m.sandbox);
    if others_run && !is_sandbox {
        record.members.retain(|m| m.container_id != id);
        let mut failures =
            teardown::leave_resolv_confs(&dir, Some(&key), &mut record.resolv_confs, id);
        if let Err(e) = dir.save(&record) {
            failures.push(format!("saving the state record: {e}"));
        }
        if let Err(e) = dir.remove_membership(id) {
            failures.push(format!("removing the membership: {e}"));
        }
        if failures.is_empty() {
            info!(
                "container {id}: left the tunnel of {} ({} still on it)",
                record.interface,
                record.member_ids()
            );
        }
        return report_leave(failures).map(|()| Some(record));
    }
    let mut failures = teardown::tear_down(&dir, &record, ns().as_ref(), Some(id));
    if let Err(e) = dir.remove_lock(&key, lock) {
        failures.push(format!("removing the lock file: {e}"));
    }
    report(id, failures).map(|()| Some(record))
}

fn report(id: &str, failures: Vec<String>) -> Result<(), super::StepError> {
    if failures.is_empty() {
        info!("container {id}: tunnel torn down");
    }
    report_leave(failures)
}

fn report_leave(failures: Vec<String>) -> Result<(), super::StepError> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; ")).step("tearing down")
    }
}
