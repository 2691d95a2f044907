//! The container's nftables table: the kill switch, the inbound filter, the anti-spoofing rule and port maps,
//! rendered as one nft script (`sys::nft` loads it).
//!
//! The table lives in the container's netns, so it dies with it. Its filter chains match the tunnel and
//! loopback by interface index (`iif`/`oif`, resolved when the table is loaded), not by name: an interface
//! that appears later, even one renamed to the tunnel's name, matches nothing and is dropped.

use crate::config::ports::{Inbound, PortMap, PortRange, Protocol};
use crate::sys::nft::{FORWARDED_SET, TABLE};
use ipnetwork::IpNetwork;
use std::fmt::Write as _;
use std::net::IpAddr;

/// What the container's table must do.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    /// The tunnel's name inside the container (wg0).
    pub interface: &'a str,
    pub kill_switch: bool,
    /// CIDRs the kill switch lets through outside the tunnel (both ways).
    pub allow_local: &'a [IpNetwork],
    /// The tunnel's own addresses, which must never answer a packet that did not come through the tunnel.
    pub tunnel_addresses: &'a [IpNetwork],
    pub port_maps: &'a [PortMap],
    /// What the tunnel's side may open, besides replies, port maps and the forwarded port.
    pub inbound: &'a Inbound,
    /// A PIA forwarded port is let in: the table gets the set [`FORWARDED_SET`], filled by the worker.
    pub port_forwarding: bool,
}

impl Rules<'_> {
    /// The nft script for this table. `interface` must be a valid interface name (the policy checks it);
    /// everything else is typed, so nothing here can inject nft syntax.
    pub fn render(&self) -> String {
        let wg = self.interface;
        let (v4, v6) = split_families(self.allow_local.iter().copied());
        let mut s = String::with_capacity(1024);
        let _ = writeln!(s, "table inet {TABLE} {{");
        if self.port_forwarding {
            let _ = writeln!(s, "\tset {FORWARDED_SET} {{\n\t\ttype inet_service\n\t}}");
        }
        // CVE-2019-14899: a neighbour on another link must not be able to probe the tunnel's addresses.
        let (t4, t6) = split_families(self.tunnel_addresses.iter().map(|a| {
            IpNetwork::new(a.ip(), if a.is_ipv4() { 32 } else { 128 }).expect("host prefix")
        }));
        s += "\tchain anti-spoof {\n\t\ttype filter hook prerouting priority raw; policy accept;\n";
        if !t4.is_empty() {
            let _ = writeln!(
                s,
                "\t\tiif != \"{wg}\" ip daddr {} fib saddr type != local drop",
                set(&t4)
            );
        }
        if !t6.is_empty() {
            let _ = writeln!(
                s,
                "\t\tiif != \"{wg}\" ip6 daddr {} fib saddr type != local drop",
                set(&t6)
            );
        }
        s += "\t}\n";
        if self.kill_switch {
            // IPv6 to allowed neighbours needs neighbour discovery (hop limit 255: never forwarded).
            let nd =
                "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept";
            s += "\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n";
            s += "\t\tiif \"lo\" accept\n";
            self.render_inbound(&mut s);
            if !v4.is_empty() {
                let _ = writeln!(s, "\t\tip saddr {} accept", set(&v4));
                let _ = writeln!(
                    s,
                    "\t\tct original ip daddr {} ct state established,related accept",
                    set(&v4)
                );
            }
            if !v6.is_empty() {
                let _ = writeln!(s, "\t\tip6 saddr {} accept", set(&v6));
                let _ = writeln!(
                    s,
                    "\t\tct original ip6 daddr {} ct state established,related accept",
                    set(&v6)
                );
                let _ = writeln!(s, "\t\t{nd}");
            }
            s += "\t}\n";
            s += "\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n";
            let _ = writeln!(
                s,
                "\t\toif \"{wg}\" accept\n\t\tiif \"{wg}\" ct state established,related accept"
            );
            s += "\t}\n";
            s += "\tchain output {\n\t\ttype filter hook output priority filter; policy drop;\n";
            let _ = writeln!(s, "\t\toif \"lo\" accept\n\t\toif \"{wg}\" accept");
            if !v4.is_empty() {
                let _ = writeln!(s, "\t\tip daddr {} accept", set(&v4));
            }
            if !v6.is_empty() {
                let _ = writeln!(s, "\t\tip6 daddr {} accept", set(&v6));
                let _ = writeln!(s, "\t\t{nd}");
            }
            s += "\t}\n";
        }
        if !self.kill_switch && *self.inbound != Inbound::All {
            // The same filter on the tunnel alone; every other interface is left as it is.
            s += "\tchain inbound {\n\t\ttype filter hook input priority filter; policy accept;\n";
            self.render_inbound(&mut s);
            let _ = writeln!(s, "\t\tiif \"{wg}\" drop");
            s += "\t}\n";
        }
        if !self.port_maps.is_empty() {
            s += "\tchain port-maps {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n";
            for m in self.port_maps {
                let _ = writeln!(
                    s,
                    "\t\tiif \"{wg}\" {} dport {} redirect to :{}",
                    m.protocol, m.outer, m.inner
                );
            }
            s += "\t}\n";
        }
        s += "}\n";
        s
    }
}

impl Rules<'_> {
    /// The input rules that accept from the tunnel; what they do not accept, the caller drops.
    fn render_inbound(&self, s: &mut String) {
        let wg = self.interface;
        if *self.inbound == Inbound::All {
            let _ = writeln!(s, "\t\tiif \"{wg}\" accept");
            return;
        }
        let _ = writeln!(s, "\t\tiif \"{wg}\" ct state established,related accept");
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            // A port map is open on its outer port: the port the connection was sent to, before the redirect.
            let outer: Vec<String> = self
                .port_maps
                .iter()
                .filter(|m| m.protocol == protocol)
                .map(|m| m.outer.to_string())
                .collect();
            if !outer.is_empty() {
                let _ = writeln!(
                    s,
                    "\t\tiif \"{wg}\" meta l4proto {protocol} ct original proto-dst {{ {} }} accept",
                    outer.join(", ")
                );
            }
        }
        if let Inbound::Ports(ports) = self.inbound {
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                let listed: Vec<String> = ports
                    .iter()
                    .filter(|p| p.protocol == protocol)
                    .map(PortRange::to_string)
                    .collect();
                if !listed.is_empty() {
                    let _ = writeln!(
                        s,
                        "\t\tiif \"{wg}\" {protocol} dport {{ {} }} accept",
                        listed.join(", ")
                    );
                }
            }
        }
        if self.port_forwarding {
            let _ = writeln!(
                s,
                "\t\tiif \"{wg}\" meta l4proto {{ tcp, udp }} th dport @{FORWARDED_SET} accept"
            );
        }
    }
}

fn split_families(nets: impl Iterator<Item = IpNetwork>) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for net in nets {
        // Host bits cleared: nft refuses a prefix such as 10.1.2.3/16.
        let net = IpNetwork::new(net.network(), net.prefix()).expect("valid prefix");
        let list = if net.is_ipv4() { &mut v4 } else { &mut v6 };
        if !list.contains(&net) {
            list.push(net);
        }
    }
    (v4, v6)
}

/// `{ a, b }`, with host routes written as plain addresses.
fn set(nets: &[IpNetwork]) -> String {
    let items: Vec<String> = nets
        .iter()
        .map(|n| match (n.ip(), n.prefix()) {
            (IpAddr::V4(ip), 32) => ip.to_string(),
            (IpAddr::V6(ip), 128) => ip.to_string(),
            _ => n.to_string(),
        })
        .collect();
    format!("{{ {} }}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }
    #[test]
    fn kill_switch_ruleset_is_exactly_this() {
        let rules = Rules {
            interface: "wg0",
            kill_switch: true,
            allow_local: &nets(&["10.89.7.0/24", "192.168.1.7/32", "fd89:7::/64"]),
            tunnel_addresses: &nets(&["10.77.0.2/32", "fd77::2/128"]),
            port_maps: &["8080:80/tcp".parse().unwrap()],
            inbound: &Inbound::Replies,
            port_forwarding: false,
        };
        assert_eq!(
            rules.render(),
            "table inet wg-oci-hook {
\tchain anti-spoof {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tiif != \"wg0\" ip daddr { 10.77.0.2 } fib saddr type != local drop
\t\tiif != \"wg0\" ip6 daddr { fd77::2 } fib saddr type != local drop
\t}
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t\tiif \"lo\" accept
\t\tiif \"wg0\" ct state established,related accept
\t\tiif \"wg0\" meta l4proto tcp ct original proto-dst { 8080 } accept
\t\tip saddr { 10.89.7.0/24, 192.168.1.7 } accept
\t\tct original ip daddr { 10.89.7.0/24, 192.168.1.7 } ct state established,related accept
\t\tip6 saddr { fd89:7::/64 } accept
\t\tct original ip6 daddr { fd89:7::/64 } ct state established,related accept
\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy drop;
\t\toif \"wg0\" accept
\t\tiif \"wg0\" ct state established,related accept
\t}
\tchain output {
\t\ttype filter hook output priority filter; policy drop;
\t\toif \"lo\" accept
\t\toif \"wg0\" accept
\t\tip daddr { 10.89.7.0/24, 192.168.1.7 } accept
\t\tip6 daddr { fd89:7::/64 } accept
\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
\t}
\tchain port-maps {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tiif \"wg0\" tcp dport 8080 redirect to :80
\t}
}
"
        );
    }

    #[test]
    fn the_readme_shows_the_rules_we_load() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let shown = readme
            .split("```nft\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("README.md has an ```nft block");
        let rules = Rules {
            interface: "wg0",
            kill_switch: true,
            allow_local: &nets(&["10.88.0.0/16", "fd88::/64"]),
            tunnel_addresses: &nets(&["10.77.0.2/32", "fd77::2/128"]),
            port_maps: &["8080:80/tcp".parse().unwrap()],
            inbound: &Inbound::Replies,
            port_forwarding: false,
        };
        assert_eq!(shown, rules.render());
    }

    #[test]
    fn default_kill_switch_lets_nothing_but_the_tunnel_and_lo_through() {
        let rules = Rules {
            interface: "wg0",
            kill_switch: true,
            allow_local: &[],
            tunnel_addresses: &nets(&["10.77.0.2/32"]),
            port_maps: &[],
            inbound: &Inbound::All,
            port_forwarding: false,
        };
        let text = rules.render();
        assert!(!text.contains("saddr {"), "{text}");
        assert!(
            !text.contains("daddr {") || text.contains("ip daddr { 10.77.0.2 } fib"),
            "{text}"
        );
        assert!(!text.contains("icmpv6"), "{text}");
        assert!(!text.contains("ip6 daddr"), "{text}");
        assert_eq!(text.matches("policy drop").count(), 3, "{text}");
        assert!(!text.contains("port-maps"), "{text}");
    }

    #[test]
    fn without_kill_switch_only_anti_spoofing_and_port_maps_remain() {
        let rules = Rules {
            interface: "tun7",
            kill_switch: false,
            allow_local: &nets(&["10.0.0.0/8"]),
            tunnel_addresses: &nets(&["10.77.0.2/24"]),
            port_maps: &["53/udp".parse().unwrap()],
            inbound: &Inbound::All,
            port_forwarding: false,
        };
        let text = rules.render();
        assert!(!text.contains("policy drop"), "{text}");
        assert!(!text.contains("chain inbound"), "{text}");
        assert!(
            text.contains("iif != \"tun7\" ip daddr { 10.77.0.2 } fib"),
            "{text}"
        );
        assert!(
            text.contains("iif \"tun7\" udp dport 53 redirect to :53"),
            "{text}"
        );
    }

    #[test]
    fn allow_local_host_bits_are_cleared_and_duplicates_dropped() {
        let rules = Rules {
            interface: "wg0",
            kill_switch: true,
            allow_local: &nets(&["10.89.7.9/24", "10.89.7.0/24"]),
            tunnel_addresses: &[],
            port_maps: &[],
            inbound: &Inbound::All,
            port_forwarding: false,
        };
        assert!(rules
            .render()
            .contains("\t\tip daddr { 10.89.7.0/24 } accept\n"));
    }

    #[test]
    fn listed_ports_maps_and_the_forwarded_set_open_only_the_tunnel() {
        let ports = Inbound::ports(["8080/tcp", "53/udp", "6000-6010/tcp", "8080/tcp"]).unwrap();
        let maps = crate::config::ports::parse_port_maps(["9080:80/tcp", "5353:53/udp", "9081:81"])
            .unwrap();
        let rules = Rules {
            interface: "wg0",
            kill_switch: true,
            allow_local: &[],
            tunnel_addresses: &[],
            port_maps: &maps,
            inbound: &ports,
            port_forwarding: true,
        };
        let text = rules.render();
        assert!(
            text.starts_with(
                "table inet wg-oci-hook {\n\tset forwarded {\n\t\ttype inet_service\n\t}\n"
            ),
            "{text}"
        );
        let input = text
            .split("\tchain input {\n")
            .nth(1)
            .and_then(|rest| rest.split("\t}\n").next())
            .unwrap();
        assert_eq!(
            input,
            "\t\ttype filter hook input priority filter; policy drop;
\t\tiif \"lo\" accept
\t\tiif \"wg0\" ct state established,related accept
\t\tiif \"wg0\" meta l4proto tcp ct original proto-dst { 9080, 9081 } accept
\t\tiif \"wg0\" meta l4proto udp ct original proto-dst { 5353 } accept
\t\tiif \"wg0\" tcp dport { 6000-6010, 8080 } accept
\t\tiif \"wg0\" udp dport { 53 } accept
\t\tiif \"wg0\" meta l4proto { tcp, udp } th dport @forwarded accept
"
        );
        assert!(!text.contains("chain inbound"), "{text}");
    }

    #[test]
    fn without_kill_switch_the_inbound_filter_holds_on_the_tunnel_alone() {
        let rules = Rules {
            interface: "wg0",
            kill_switch: false,
            allow_local: &[],
            tunnel_addresses: &nets(&["10.77.0.2/32"]),
            port_maps: &["9080:80/tcp".parse().unwrap()],
            inbound: &Inbound::Replies,
            port_forwarding: true,
        };
        let text = rules.render();
        assert!(
            text.contains(
                "\tchain inbound {
\t\ttype filter hook input priority filter; policy accept;
\t\tiif \"wg0\" ct state established,related accept
\t\tiif \"wg0\" meta l4proto tcp ct original proto-dst { 9080 } accept
\t\tiif \"wg0\" meta l4proto { tcp, udp } th dport @forwarded accept
\t\tiif \"wg0\" drop
\t}
"
            ),
            "{text}"
        );
        assert!(!text.contains("policy drop"), "{text}");
        assert!(!text.contains("chain input"), "{text}");
        // "all" without a kill switch: no filter at all, but the forwarded set the worker fills is there.
        let all = Rules {
            inbound: &Inbound::All,
            ..rules
        }
        .render();
        assert!(!all.contains("chain inbound"), "{all}");
        assert!(all.contains("\tset forwarded {"), "{all}");
    }
}
