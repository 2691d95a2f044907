//! The PIA port-forwarding helper as the hook sees it: what it works from (the container's record and its
//! profile's settings), and stopping it. The helper itself is `provider::pia::port_forward`.

use super::record::StateDir;
use crate::config::pia_credentials;
use crate::config::policy::Policy;
use crate::provider::pia::port_forward::{self, Helper};
use crate::provider::pia::PortForwardRecord;
use crate::sys::process;

/// `wg-oci-hook pia-port-forward ID [--worker]`: the supervisor, or with `worker` the worker, of `container`,
/// working from its record in the policy's state dir and its profile in the policy.
pub fn run_helper(policy: &Policy, container: &str, worker: bool) -> Result<(), String> {
    let state = StateDir::open(&policy.state_dir).map_err(|e| format!("the state dir {e}"))?;
    let record = state
        .load(container)
        .map_err(|e| format!("reading the record: {e}"))?
        .ok_or("no record for this container")?;
    let pia = record.pia.ok_or("the record has no PIA registration")?;
    let settings = policy
        .profiles
        .get(&record.profile)
        .and_then(|p| p.pia())
        .ok_or_else(|| {
            format!(
                "profile {:?} is not a PIA profile of {}",
                record.profile,
                policy.path.display()
            )
        })?;
    let helper = Helper {
        policy_path: &policy.path,
        state_dir: state.into_dir(),
        pia,
        settings,
    };
    if worker {
        let credentials =
            pia_credentials::load(&settings.credentials).map_err(|e| e.to_string())?;
        port_forward::run(helper, credentials, container)
    } else {
        port_forward::supervise(helper, container)
    }
}

/// Stops the port-forwarding helper: its supervisor and worker as recorded, and no other process, whatever its
/// argv. Removes its host-side files.
pub(super) fn stop(state_dir: &StateDir, id: &str, forward: &PortForwardRecord) {
    if let Some(helper) = &forward.helper {
        // The worker dies with its supervisor (PR_SET_PDEATHSIG); found first, in case it has not yet.
        let worker = helper.child(port_forward::worker_argv(&helper.argv));
        helper.stop();
        if let Some(worker) = worker {
            worker.stop();
        }
    }
    if let Some(pid) = forward.legacy_helper_pid {
        process::stop_legacy(pid, &[port_forward::SUBCOMMAND, id]);
    }
    port_forward::remove_files(state_dir.dir(), id);
}
