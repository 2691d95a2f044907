//! An nftables table as a value: chains with their hook, priority and policy, rules as typed matches and a
//! verdict, and named sets. It is written two ways from this one value: as nft's text (`Display`, what the
//! README shows and `nft -f` would load) and as nf_tables netlink messages (`compile`), so the two cannot say
//! different things. The vocabulary is what our table uses and nothing more; each match is one nft phrase.
//! Everything is typed (addresses, ports, protocols); only interface names are text, and the policy allows no
//! quote in them.

use ipnetwork::{Ipv4Network, Ipv6Network};
use std::fmt::{self, Display, Formatter};

/// `table inet NAME { ... }`: an inet table (IPv4 and IPv6 alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    pub sets: Vec<NamedSet>,
    pub chains: Vec<Chain>,
}

/// `set NAME { type inet_service }`: a named set of ports that rules look up and a later transaction fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSet {
    pub name: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    pub kind: ChainKind,
    pub hook: Hook,
    pub priority: Priority,
    pub policy: ChainPolicy,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
}

/// The standard priorities, by nft's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// -300
    Raw,
    /// -100
    DstNat,
    /// 0
    Filter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainPolicy {
    Accept,
    Drop,
}

/// Matches, all of which must hold, then the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum L4 {
    Tcp,
    Udp,
}

/// `FIRST-LAST`, or `PORT` when they are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

impl Ports {
    pub fn one(port: u16) -> Ports {
        Ports {
            first: port,
            last: port,
        }
    }
}

/// Networks of one family, written as a set: `{ 10.88.0.0/16, 192.168.1.7 }` (host routes as bare addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nets {
    V4(Vec<Ipv4Network>),
    V6(Vec<Ipv6Network>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrField {
    Saddr,
    Daddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv6Type {
    NeighborSolicit,
    NeighborAdvert,
}

/// A port match's right-hand side: written bare (`tcp dport 8080`) or as a set (`tcp dport { 8080 }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMatch {
    One(Ports),
    Set(Vec<Ports>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `iif "lo"`, `iif != "wg0"`: the input interface, by the index its name has when the table is loaded.
    Iif { name: String, negate: bool },
    /// `oif "wg0"`
    Oif { name: String },
    /// `ip saddr { ... }`, `ip6 daddr { ... }`
    Addr { field: AddrField, nets: Nets },
    /// `ct original ip daddr { ... }`: where the connection was first sent.
    CtOriginalDaddr(Nets),
    /// `ct state established,related`
    CtStateEstablishedRelated,
    /// `fib saddr type != local`
    FibSaddrNotLocal,
    /// `meta l4proto tcp`
    L4Proto(L4),
    /// `meta l4proto { tcp, udp }`
    L4ProtoIn(Vec<L4>),
    /// `ct original proto-dst { 8080, 9090 }`: the port the connection was first sent to (before a redirect).
    CtOriginalProtoDst(Vec<u16>),
    /// `tcp dport 8080`, `udp dport { 53, 6000-6010 }`
    Dport { protocol: L4, ports: PortMatch },
    /// `th dport @forwarded`: the transport header's destination port, in a named set.
    ThDportIn(&'static str),
    /// `icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert }`
    Icmpv6TypeIn(Vec<Icmpv6Type>),
    /// `ip6 hoplimit 255`
    Ip6HopLimit(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    /// `redirect to :PORT` (a nat chain's): to this host, this port.
    Redirect(u16),
}

impl Table {
    /// An empty table of this name.
    pub fn new(name: &'static str) -> Table {
        Table {
            name,
            sets: Vec::new(),
            chains: Vec::new(),
        }
    }
}

/// The script `nft -f` loads: `table inet NAME { ... }`, one tab per level.
impl Display for Table {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "table inet {} {{", self.name)?;
        for set in &self.sets {
            writeln!(f, "\tset {} {{\n\t\ttype inet_service\n\t}}", set.name)?;
        }
        for chain in &self.chains {
            writeln!(f, "\tchain {} {{", chain.name)?;
            writeln!(f, "\t\t{}", chain.header())?;
            for rule in &chain.rules {
                writeln!(f, "\t\t{rule}")?;
            }
            writeln!(f, "\t}}")?;
        }
        writeln!(f, "}}")
    }
}

impl Chain {
    /// `type filter hook input priority filter; policy drop;`
    pub fn header(&self) -> String {
        let kind = match self.kind {
            ChainKind::Filter => "filter",
            ChainKind::Nat => "nat",
        };
        let hook = match self.hook {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
        };
        let priority = match self.priority {
            Priority::Raw => "raw",
            Priority::DstNat => "dstnat",
            Priority::Filter => "filter",
        };
        let policy = match self.policy {
            ChainPolicy::Accept => "accept",
            ChainPolicy::Drop => "drop",
        };
        format!("type {kind} hook {hook} priority {priority}; policy {policy};")
    }
}

impl Display for Rule {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        match self.verdict {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Redirect(port) => write!(f, "redirect to :{port}"),
        }
    }
}

impl Display for L4 {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        })
    }
}

impl Display for Ports {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Nets {
    /// `ip` or `ip6`.
    fn family(&self) -> &'static str {
        match self {
            Nets::V4(_) => "ip",
            Nets::V6(_) => "ip6",
        }
    }
}

impl Display for Nets {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = match self {
            Nets::V4(nets) => nets
                .iter()
                .map(|n| match n.prefix() {
                    32 => n.ip().to_string(),
                    _ => n.to_string(),
                })
                .collect(),
            Nets::V6(nets) => nets
                .iter()
                .map(|n| match n.prefix() {
                    128 => n.ip().to_string(),
                    _ => n.to_string(),
                })
                .collect(),
        };
        write!(f, "{{ {} }}", items.join(", "))
    }
}

/// `{ a, b }`
fn set<T: Display>(f: &mut Formatter<'_>, items: &[T]) -> fmt::Result {
    f.write_str("{ ")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    f.write_str(" }")
}

impl Display for Match {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Match::Iif {
                name,
                negate: false,
            } => write!(f, "iif \"{name}\""),
            Match::Iif { name, negate: true } => write!(f, "iif != \"{name}\""),
            Match::Oif { name } => write!(f, "oif \"{name}\""),
            Match::Addr { field, nets } => {
                let field = match field {
                    AddrField::Saddr => "saddr",
                    AddrField::Daddr => "daddr",
                };
                write!(f, "{} {field} {nets}", nets.family())
            }
            Match::CtOriginalDaddr(nets) => {
                write!(f, "ct original {} daddr {nets}", nets.family())
            }
            Match::CtStateEstablishedRelated => f.write_str("ct state established,related"),
            Match::FibSaddrNotLocal => f.write_str("fib saddr type != local"),
            Match::L4Proto(p) => write!(f, "meta l4proto {p}"),
            Match::L4ProtoIn(ps) => {
                f.write_str("meta l4proto ")?;
                set(f, ps)
            }
            Match::CtOriginalProtoDst(ports) => {
                f.write_str("ct original proto-dst ")?;
                set(f, ports)
            }
            Match::Dport {
                protocol,
                ports: PortMatch::One(ports),
            } => write!(f, "{protocol} dport {ports}"),
            Match::Dport {
                protocol,
                ports: PortMatch::Set(ports),
            } => {
                write!(f, "{protocol} dport ")?;
                set(f, ports)
            }
            Match::ThDportIn(name) => write!(f, "th dport @{name}"),
            Match::Icmpv6TypeIn(types) => {
                let names: Vec<&str> = types
                    .iter()
                    .map(|t| match t {
                        Icmpv6Type::NeighborSolicit => "nd-neighbor-solicit",
                        Icmpv6Type::NeighborAdvert => "nd-neighbor-advert",
                    })
                    .collect();
                f.write_str("icmpv6 type ")?;
                set(f, &names)
            }
            Match::Ip6HopLimit(n) => write!(f, "ip6 hoplimit {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_match_is_one_nft_phrase() {
        let rule = Rule {
            matches: vec![
                Match::Iif {
                    name: "wg0".into(),
                    negate: true,
                },
                Match::Addr {
                    field: AddrField::Daddr,
                    nets: Nets::V6(vec![
                        "fd77::2/128".parse().unwrap(),
                        "fd88::/64".parse().unwrap(),
                    ]),
                },
                Match::FibSaddrNotLocal,
            ],
            verdict: Verdict::Drop,
        };
        assert_eq!(
            rule.to_string(),
            "iif != \"wg0\" ip6 daddr { fd77::2, fd88::/64 } fib saddr type != local drop"
        );
        let rule = Rule {
            matches: vec![
                Match::L4ProtoIn(vec![L4::Tcp, L4::Udp]),
                Match::ThDportIn("forwarded"),
                Match::Dport {
                    protocol: L4::Udp,
                    ports: PortMatch::Set(vec![
                        Ports::one(53),
                        Ports {
                            first: 60,
                            last: 70,
                        },
                    ]),
                },
                Match::Dport {
                    protocol: L4::Tcp,
                    ports: PortMatch::One(Ports::one(8080)),
                },
            ],
            verdict: Verdict::Redirect(80),
        };
        assert_eq!(
            rule.to_string(),
            "meta l4proto { tcp, udp } th dport @forwarded udp dport { 53, 60-70 } tcp dport 8080 \
             redirect to :80"
        );
    }
}
