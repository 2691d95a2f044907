//! poststop: tears down what createRuntime recorded.

use super::record::StateDir;
use super::{port_forward, resolv_conf, routing, HookError, Step};
use crate::config::policy::Policy;
use crate::oci::state::ContainerState;
use crate::sys::netlink::Netlink;
use crate::sys::netns::NetNs;
use crate::sys::nft::Nft;
use crate::sys::process;
use crate::wg;
use log::info;
use std::io;

/// Tears down what createRuntime recorded. Idempotent: no record, nothing of ours left. Works when the container's
/// netns is already gone (podman runs poststop after removing it) and after a failed create. The record is
/// removed even when a step fails, and the failure is reported.
pub fn poststop(state: &ContainerState, policy: &Policy) -> Result<(), HookError> {
    let id = state.id.as_str();
    let dir = StateDir::open(&policy.state_dir)
        .step("opening the state directory")
        .map_err(|e| e.of(id))?;
    // No record: nothing was made (it is saved before anything is), and nothing is derived from the id.
    let Some(record) = dir
        .load(id)
        .step("reading the state record")
        .map_err(|e| e.of(id))?
    else {
        return Ok(());
    };
    let mut failures: Vec<String> = Vec::new();
    if let Some(forward) = record.pia.as_ref().and_then(|p| p.port_forward.as_ref()) {
        port_forward::stop(&dir, id, forward);
    }
    if let Some(change) = &record.resolv_conf {
        if let Err(e) = resolv_conf::restore(change) {
            failures.push(format!("restoring {}: {e}", change.location));
        }
    }
    if let Some(daemon) = &record.daemon {
        if let Err(e) = wg::userspace::stop(daemon, &record.host_link) {
            failures.push(format!("stopping the userspace daemon: {e}"));
        }
    }
    if let Some(pid) = record.legacy_daemon_pid {
        process::stop_legacy(pid, &[&record.host_link]);
        if let Err(e) = wg::userspace::remove_socket(&record.host_link) {
            failures.push(format!("stopping the userspace daemon: {e}"));
        }
    }
    // A link that never left the host netns (a create killed half-way).
    if let Err(e) = Netlink::connect().and_then(|host| host.delete_link_named(&record.host_link)) {
        failures.push(format!("deleting {}: {e}", record.host_link));
    }
    // The container's netns normally died with the container; when it lives on (a shared netns),
    // our link must not.
    if let Some(Ok(ns)) = state.live_pid().map(NetNs::of_container) {
        let nft = Nft::locate(&policy.nft_command).ok();
        if let Err(e) = clean_container_netns(&ns, nft.as_ref(), &record.interface) {
            failures.push(format!(
                "deleting {} in the container: {e}",
                record.interface
            ));
        }
    }
    if let Err(e) = dir.remove(id) {
        failures.push(format!("removing the state record: {e}"));
    }
    if failures.is_empty() {
        info!("container {id}: tunnel torn down");
        Ok(())
    } else {
        Err(failures.join("; "))
            .step("tearing down")
            .map_err(|e| e.of(id))
    }
}

/// Takes our rules and table out of a container netns that outlives the container (a shared netns).
fn clean_container_netns(ns: &NetNs, nft: Option<&Nft>, interface: &str) -> io::Result<()> {
    let nl = ns.run(Netlink::connect)?;
    routing::delete_rules(&nl)?;
    nl.delete_link_named(interface)?;
    if let Some(nft) = nft {
        nft.delete_table(ns)?;
    }
    Ok(())
}
