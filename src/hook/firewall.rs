//! The container's nftables table: the kill switch, the inbound filter, the anti-spoofing rule and port maps, as
//! a `sys::nft::Table`, which renders as nft's text (the README shows it) and loads over netlink (`sys::nft`).
//!
//! The table lives in the container's netns, so it dies with it. Its filter chains match the tunnel and
//! loopback by interface index (`iif`/`oif`, resolved when the table is loaded), not by name: an interface
//! that appears later, even one renamed to the tunnel's name, matches nothing and is dropped.

use crate::config::ports::{Inbound, PortMap, Protocol};
use crate::sys::nft::{
    AddrField, Chain, ChainKind, ChainPolicy, Hook, Icmpv6Type, Match, NamedSet, Nets, PortMatch,
    Ports, Priority, Rule, Table, Verdict, FORWARDED_SET, L4, TABLE,
};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

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
        self.table().to_string()
    }

    /// The table, which `sys::nft` loads.
    pub fn table(&self) -> Table {
        let (v4, v6) = split_families(self.allow_local.iter().copied());
        let mut table = Table::new(TABLE);
        if self.port_forwarding {
            table.sets.push(NamedSet {
                name: FORWARDED_SET,
            });
        }
        // CVE-2019-14899: a neighbour on another link must not be able to probe the tunnel's addresses.
        let (t4, t6) = split_families(self.tunnel_addresses.iter().map(|a| {
            IpNetwork::new(a.ip(), if a.is_ipv4() { 32 } else { 128 }).expect("host prefix")
        }));
        let mut anti_spoof = chain(
            "anti-spoof",
            Hook::Prerouting,
            Priority::Raw,
            ChainPolicy::Accept,
        );
        let mut spoofable = Vec::new();
        if !t4.is_empty() {
            spoofable.push(Nets::V4(t4));
        }
        if !t6.is_empty() {
            spoofable.push(Nets::V6(t6));
        }
        for nets in spoofable {
            anti_spoof.rules.push(Rule {
                matches: vec![
                    self.iif_not(),
                    Match::Addr {
                        field: AddrField::Daddr,
                        nets,
                    },
                    Match::FibSaddrNotLocal,
                ],
                verdict: Verdict::Drop,
            });
        }
        table.chains.push(anti_spoof);
        if self.kill_switch {
            // IPv6 to allowed neighbours needs neighbour discovery (hop limit 255: never forwarded).
            let nd = || Rule {
                matches: vec![
                    Match::Icmpv6TypeIn(vec![
                        Icmpv6Type::NeighborSolicit,
                        Icmpv6Type::NeighborAdvert,
                    ]),
                    Match::Ip6HopLimit(255),
                ],
                verdict: Verdict::Accept,
            };
            let mut input = chain("input", Hook::Input, Priority::Filter, ChainPolicy::Drop);
            input.rules.push(accept(vec![iif("lo")]));
            self.inbound_rules(&mut input.rules);
            // From the allowed networks, and the replies to what the container opened towards them.
            let mut allow_from = |nets: Nets| {
                input.rules.push(accept(vec![Match::Addr {
                    field: AddrField::Saddr,
                    nets: nets.clone(),
                }]));
                input.rules.push(accept(vec![
                    Match::CtOriginalDaddr(nets),
                    Match::CtStateEstablishedRelated,
                ]));
            };
            if !v4.is_empty() {
                allow_from(Nets::V4(v4.clone()));
            }
            if !v6.is_empty() {
                allow_from(Nets::V6(v6.clone()));
                input.rules.push(nd());
            }
            let mut forward = chain(
                "forward",
                Hook::Forward,
                Priority::Filter,
                ChainPolicy::Drop,
            );
            forward.rules.push(accept(vec![oif(self.interface)]));
            forward.rules.push(accept(vec![
                iif(self.interface),
                Match::CtStateEstablishedRelated,
            ]));
            let mut output = chain("output", Hook::Output, Priority::Filter, ChainPolicy::Drop);
            output.rules.push(accept(vec![oif("lo")]));
            output.rules.push(accept(vec![oif(self.interface)]));
            if !v4.is_empty() {
                output.rules.push(accept(vec![Match::Addr {
                    field: AddrField::Daddr,
                    nets: Nets::V4(v4),
                }]));
            }
            if !v6.is_empty() {
                output.rules.push(accept(vec![Match::Addr {
                    field: AddrField::Daddr,
                    nets: Nets::V6(v6),
                }]));
                output.rules.push(nd());
            }
            table.chains.extend([input, forward, output]);
        }
        if !self.kill_switch && *self.inbound != Inbound::All {
            // The same filter on the tunnel alone; every other interface is left as it is.
            let mut inbound = chain(
                "inbound",
                Hook::Input,
                Priority::Filter,
                ChainPolicy::Accept,
            );
            self.inbound_rules(&mut inbound.rules);
            inbound.rules.push(Rule {
                matches: vec![iif(self.interface)],
                verdict: Verdict::Drop,
            });
            table.chains.push(inbound);
        }
        if !self.port_maps.is_empty() {
            let mut maps = chain(
                "port-maps",
                Hook::Prerouting,
                Priority::DstNat,
                ChainPolicy::Accept,
            );
            maps.kind = ChainKind::Nat;
            for m in self.port_maps {
                maps.rules.push(Rule {
                    matches: vec![
                        iif(self.interface),
                        Match::Dport {
                            protocol: l4(m.protocol),
                            ports: PortMatch::One(Ports::one(m.outer)),
                        },
                    ],
                    verdict: Verdict::Redirect(m.inner),
                });
            }
            table.chains.push(maps);
        }
        table
    }

    /// The input rules that accept from the tunnel; what they do not accept, the caller drops.
    fn inbound_rules(&self, rules: &mut Vec<Rule>) {
        if *self.inbound == Inbound::All {
            rules.push(accept(vec![iif(self.interface)]));
            return;
        }
        rules.push(accept(vec![
            iif(self.interface),
            Match::CtStateEstablishedRelated,
        ]));
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            // A port map is open on its outer port: the port the connection was sent to, before the redirect.
            let outer: Vec<u16> = self
                .port_maps
                .iter()
                .filter(|m| m.protocol == protocol)
                .map(|m| m.outer)
                .collect();
            if !outer.is_empty() {
                rules.push(accept(vec![
                    iif(self.interface),
                    Match::L4Proto(l4(protocol)),
                    Match::CtOriginalProtoDst(outer),
                ]));
            }
        }
        if let Inbound::Ports(ports) = self.inbound {
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                let listed: Vec<Ports> = ports
                    .iter()
                    .filter(|p| p.protocol == protocol)
                    .map(|p| Ports {
                        first: p.first,
                        last: p.last,
                    })
                    .collect();
                if !listed.is_empty() {
                    rules.push(accept(vec![
                        iif(self.interface),
                        Match::Dport {
                            protocol: l4(protocol),
                            ports: PortMatch::Set(listed),
                        },
                    ]));
                }
            }
        }
        if self.port_forwarding {
            rules.push(accept(vec![
                iif(self.interface),
                Match::L4ProtoIn(vec![L4::Tcp, L4::Udp]),
                Match::ThDportIn(FORWARDED_SET),
            ]));
        }
    }

    fn iif_not(&self) -> Match {
        Match::Iif {
            name: self.interface.to_owned(),
            negate: true,
        }
    }
}

fn chain(name: &'static str, hook: Hook, priority: Priority, policy: ChainPolicy) -> Chain {
    Chain {
        name,
        kind: ChainKind::Filter,
        hook,
        priority,
        policy,
        rules: Vec::new(),
    }
}

fn accept(matches: Vec<Match>) -> Rule {
    Rule {
        matches,
        verdict: Verdict::Accept,
    }
}

fn iif(name: &str) -> Match {
    Match::Iif {
        name: name.to_owned(),
        negate: false,
    }
}

fn oif(name: &str) -> Match {
    Match::Oif {
        name: name.to_owned(),
    }
}

fn l4(protocol: Protocol) -> L4 {
    match protocol {
        Protocol::Tcp => L4::Tcp,
        Protocol::Udp => L4::Udp,
    }
}

fn split_families(nets: impl Iterator<Item = IpNetwork>) -> (Vec<Ipv4Network>, Vec<Ipv6Network>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for net in nets {
        // Host bits cleared: nft refuses a prefix such as 10.1.2.3/16.
        match net {
            IpNetwork::V4(n) => {
                let n = Ipv4Network::new(n.network(), n.prefix()).expect("valid prefix");
                if !v4.contains(&n) {
                    v4.push(n);
                }
            }
            IpNetwork::V6(n) => {
                let n = Ipv6Network::new(n.network(), n.prefix()).expect("valid prefix");
                if !v6.contains(&n) {
                    v6.push(n);
                }
            }
        }
    }
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// A `Rules` with owned parts.
    struct Case {
        interface: &'static str,
        kill_switch: bool,
        allow_local: Vec<IpNetwork>,
        tunnel_addresses: Vec<IpNetwork>,
        port_maps: Vec<PortMap>,
        inbound: Inbound,
        port_forwarding: bool,
    }

    impl Case {
        fn rules(&self) -> Rules<'_> {
            Rules {
                interface: self.interface,
                kill_switch: self.kill_switch,
                allow_local: &self.allow_local,
                tunnel_addresses: &self.tunnel_addresses,
                port_maps: &self.port_maps,
                inbound: &self.inbound,
                port_forwarding: self.port_forwarding,
            }
        }
    }

    /// Tables of every shape `Rules` makes: each value of each part at least once, and the parts' values
    /// combined with different strides so that the pairs vary too.
    fn matrix() -> Vec<Case> {
        let allow_local = [
            vec![],
            nets(&["10.88.0.0/16"]),
            nets(&[
                "10.89.7.0/24",
                "192.168.1.7/32",
                "fd89:7::/64",
                "fd99::1/128",
            ]),
            nets(&["10.80.0.0/12", "fd88::/61", "172.16.5.4/32"]),
            nets(&[
                "10.0.0.0/25",
                "10.0.0.128/25",
                "10.0.0.0/8",
                "fd00::/8",
                "fd00::/16",
            ]),
            nets(&["0.0.0.0/0", "::/0"]),
            nets(&[
                "255.255.255.255/32",
                "10.1.2.3/8",
                "::/1",
                "8000::/1",
                "fd77::5/128",
            ]),
        ];
        let tunnel_addresses = [
            nets(&["10.77.0.2/32"]),
            nets(&["10.77.0.2/32", "fd77::2/128"]),
            nets(&["10.77.0.2/24", "10.77.1.9/32", "fd77::2/64", "fd77::3/128"]),
            nets(&["fd77::2/128"]),
            vec![],
        ];
        let port_maps = [
            vec![],
            crate::config::ports::parse_port_maps(["8080:80/tcp"]).unwrap(),
            crate::config::ports::parse_port_maps([
                "9081:81/tcp",
                "9080:80",
                "5353:53/udp",
                "65535:1/udp",
            ])
            .unwrap(),
        ];
        let inbound = [
            Inbound::Replies,
            Inbound::All,
            Inbound::ports(["8080/tcp"]).unwrap(),
            Inbound::ports(["6000-6010/udp"]).unwrap(),
            Inbound::ports([
                "8080/tcp",
                "53/udp",
                "6000-6010/tcp",
                "60000-65535/tcp",
                "1/udp",
                "3/udp",
            ])
            .unwrap(),
        ];
        (0..70)
            .map(|i| Case {
                interface: ["wg0", "tun7"][i % 2],
                kill_switch: i % 4 < 2,
                allow_local: allow_local[i % 7].clone(),
                tunnel_addresses: tunnel_addresses[i % 5].clone(),
                port_maps: port_maps[(i / 2) % 3].clone(),
                inbound: inbound[(i / 3) % 5].clone(),
                port_forwarding: (i / 4) % 2 == 0,
            })
            .collect()
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

    /// The tie between the two renderings: for each table of the matrix, the text loaded by the real
    /// `nft -f -` into one fresh netns and the netlink batch loaded into another (its tunnel at another index)
    /// list the same (root, and nft, as CI installs them).
    #[test]
    fn nft_lists_the_same_table_whether_it_loaded_the_text_or_we_sent_the_batch() {
        use crate::sys::nft::tests::{listed_after_netlink, listed_after_nft};
        let mut differ = Vec::new();
        for (i, case) in matrix().iter().enumerate() {
            let rules = case.rules();
            let text = rules.render();
            let by_nft = listed_after_nft(&text, case.interface);
            let by_netlink = listed_after_netlink(&rules.table(), case.interface);
            assert!(by_nft.starts_with("table inet wg-oci-hook {"), "{by_nft}");
            if by_nft != by_netlink {
                differ.push(format!(
                    "case {i}:\n{text}\nnft loaded:\n{by_nft}\nnetlink loaded:\n{by_netlink}"
                ));
            }
        }
        assert!(differ.is_empty(), "{}", differ.join("\n"));
    }
}
