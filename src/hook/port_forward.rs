//! Stopping a PIA port-forwarding helper of an earlier version of the hook (`wg-oci-hook pia-port-forward ID`, a
//! supervisor and its `--worker` child), which a record of a tunnel started then still names. Port forwarding
//! is now the tunnel supervisor's (`hook::supervisor`).

use super::record::StateDir;
use crate::provider::pia::port_forward;
use crate::provider::pia::PortForwardRecord;
use crate::sys::process;

/// The old helper's subcommand and its worker's flag.
const SUBCOMMAND: &str = "pia-port-forward";
const WORKER_FLAG: &str = "--worker";

/// Stops the old helper: its supervisor and worker as recorded, and no other process, whatever its argv.
/// Removes its host-side files.
pub(super) fn stop(state_dir: &StateDir, id: &str, forward: &PortForwardRecord) {
    if let Some(helper) = &forward.helper {
        // The worker dies with its supervisor (PR_SET_PDEATHSIG); found first, in case it has not yet.
        let mut worker_argv = helper.argv.clone();
        worker_argv.push(WORKER_FLAG.into());
        let worker = helper.child(worker_argv);
        helper.stop();
        if let Some(worker) = worker {
            worker.stop();
        }
    }
    if let Some(pid) = forward.legacy_helper_pid {
        process::stop_legacy(pid, &[SUBCOMMAND, id]);
    }
    port_forward::remove_files(state_dir.dir(), id);
}
