//! `wg-oci-hook status [ID]`: the live tunnels of the policy's state dir, one `key=value` line each. A tunnel
//! none of whose containers runs is not live (the next start, or `gc`, takes it down) and is not listed.

use super::fail;
use crate::config::policy::Policy;
use crate::hook::lease;
use crate::hook::record::StateDir;
use crate::provider::pia::port_forward;
use std::process::ExitCode;

/// One line per live tunnel, `key=value` words after the container id, so scripts can read it.
pub fn run(policy: &Policy, only: Option<&str>, _json: bool) -> ExitCode {
    let state = match StateDir::open(&policy.state_dir) {
        Ok(state) => state,
        Err(e) => return fail(&format!("the state dir {e}")),
    };
    let keys = match state.keys() {
        Ok(keys) => keys,
        Err(e) => return fail(&format!("{}: {e}", policy.state_dir.display())),
    };
    let mut out = String::new();
    let mut found = false;
    let records = keys
        .iter()
        .filter_map(|key| Some((key, state.load(key).ok()??)))
        .filter(|(_, r)| r.complete && r.any_member_alive());
    for (key, r) in records.filter(|(_, r)| only.map_or(true, |id| r.member(id).is_some())) {
        found = true;
        let ids: Vec<&str> = r.members.iter().map(|m| m.container_id.as_str()).collect();
        out += &format!(
            "{} profile={} interface={} backend={}",
            ids.join(","),
            r.profile,
            r.interface,
            r.backend
        );
        if let Some(lease) = r.lease.as_ref().filter(|l| l.config != lease::ONLY_CONFIG) {
            out += &format!(" lease={}", lease.config);
        }
        if let Some(pia) = &r.pia {
            out += &format!(
                " region={} server={} server_ip={} address={}",
                pia.region, pia.server_cn, pia.server_ip, pia.peer_ip
            );
            if let Some(pf) = &pia.port_forward {
                let port = port_forward::current_port(state.dir(), key).unwrap_or(pf.port);
                let helper = match pf.helper.as_ref().map(|h| (h.find(), h.pid)) {
                    Some((Some(pid), _)) => format!("{pid}:running"),
                    Some((None, Some(pid))) => format!("{pid}:gone"),
                    _ => "gone".to_owned(),
                };
                out += &format!(" port={port} port_file={} helper={helper}", pf.port_file);
            }
        }
        out.push('\n');
    }
    print!("{out}");
    if let (Some(id), false) = (only, found) {
        return fail(&format!(
            "no live tunnel for container {id} in {}",
            policy.state_dir.display()
        ));
    }
    ExitCode::SUCCESS
}
