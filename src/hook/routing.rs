//! The tunnel's side of the container's routing: lo and the tunnel up with their addresses, a route per
//! AllowedIPs prefix, and for a tunnel that takes the default route wg-quick's two policy rules.

use super::tunnel::TunnelSpec;
use super::{Step, StepError};
use crate::sys::netlink::Netlink;
use nix::errno::Errno;
use std::io;

/// wg-quick's routing for a tunnel that takes the default route: the /0 goes into its own table, and two
/// rules ahead of main make every lookup use it while main's more specific routes (the networks the container
/// is attached to) still win. Main's own default routes are left alone, so an engine that adds one later
/// (Docker 28 attaches networks after our hook) neither fails nor wins.
const TUNNEL_TABLE: u32 = 51820;
const MAIN_TABLE: u32 = 254;
const RULE_MAIN_WITHOUT_DEFAULTS: u32 = 32764;
const RULE_TUNNEL_TABLE: u32 = 32765;

/// lo up, the tunnel's addresses, the tunnel (link `index` of the container) up.
pub(super) fn bring_up(nl: &Netlink, index: u32, spec: &TunnelSpec) -> Result<(), StepError> {
    if let Some(lo) = nl.index_of("lo").step("bringing lo up")? {
        nl.set_up(lo).step("bringing lo up")?;
    }
    for addr in &spec.addresses {
        nl.add_address(index, *addr)
            .map_err(|e| format!("{addr}: {e}"))
            .step("adding address")?;
    }
    nl.set_up(index).step("bringing the interface up")
}

/// A route per AllowedIPs prefix: a /0 into `TUNNEL_TABLE` behind two policy rules (see there), every other
/// prefix into main, where it beats the attached networks' default routes by being more specific. Each rule
/// added is pushed onto `rules_added` as (ipv6, priority), for the undo.
pub(super) fn add_routes(
    nl: &Netlink,
    index: u32,
    spec: &TunnelSpec,
    rules_added: &mut Vec<(bool, u32)>,
) -> Result<(), StepError> {
    for net in &spec.routes {
        let table = if net.prefix() == 0 {
            TUNNEL_TABLE
        } else {
            MAIN_TABLE
        };
        match nl.add_device_route(index, *net, table) {
            Err(e) if e.raw_os_error() != Some(Errno::EEXIST as i32) => {
                return Err(format!("{net}: {e}")).step("adding route");
            }
            _ => {}
        }
    }
    for ipv6 in [false, true] {
        if !spec
            .routes
            .iter()
            .any(|r| r.prefix() == 0 && r.is_ipv6() == ipv6)
        {
            continue;
        }
        for (priority, table, suppress) in [
            (RULE_MAIN_WITHOUT_DEFAULTS, MAIN_TABLE, Some(0)),
            (RULE_TUNNEL_TABLE, TUNNEL_TABLE, None),
        ] {
            nl.add_rule(ipv6, priority, table, suppress)
                .step("adding a routing rule")?;
            rules_added.push((ipv6, priority));
        }
    }
    Ok(())
}

/// Deletes our policy rules, both families, from a netns that outlives its container (a shared netns).
pub(super) fn delete_rules(nl: &Netlink) -> io::Result<()> {
    for ipv6 in [false, true] {
        for priority in [RULE_MAIN_WITHOUT_DEFAULTS, RULE_TUNNEL_TABLE] {
            nl.delete_rules_at(ipv6, priority)?;
        }
    }
    Ok(())
}
