//! Per-netns sysctls under /proc/sys/net, which answers for the netns of the thread that opens it.

use crate::sys::netns::NetNs;
use std::io;

/// Turns IPv6 on for `interface` in `ns` (`net.ipv6.conf.<interface>.disable_ipv6 = 0`). Returns whether it was
/// off. The caller has checked `interface` (a policy-checked name, never one a container chose).
pub fn enable_ipv6(ns: &NetNs, interface: &str) -> io::Result<bool> {
    let path = format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6");
    let with_path =
        |e: io::Error, hint: &str| io::Error::new(e.kind(), format!("{path}: {e}{hint}"));
    ns.run(|| {
        let current = std::fs::read_to_string(&path)
            .map_err(|e| with_path(e, " (is IPv6 disabled in this kernel?)"))?;
        if current.trim() == "0" {
            return Ok(false);
        }
        std::fs::write(&path, "0").map_err(|e| with_path(e, ""))?;
        Ok(true)
    })
}
