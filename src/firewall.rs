//! The container's nftables table: the kill switch, the inbound filter, the anti-spoofing rule and port maps.
//!
//! We feed `nft -f -` the ruleset as text, in one transaction, from a thread inside the container's netns.
//! Why nft rather than our own nf_tables netlink: the kernel team's parser turns this text into bytecode that
//! nft itself can list back, the README can show the exact rules we load, and the whole table lands atomically
//! or not at all. Hand-encoded nf_tables expressions would be hundreds of lines no reviewer can check against
//! anything, and the one Rust crate that does it is GPL-3.0 and needs libclang. The price is one exec (about
//! 3 ms, measured against `nsenter true`).
//!
//! The table lives in the container's netns, so it dies with it. Its filter chains match the tunnel and
//! loopback by interface index (`iif`/`oif`, resolved when the table is loaded), not by name: an interface
//! that appears later, even one renamed to the tunnel's name, matches nothing and is dropped.

use crate::sys::command::{output_until, resolve_program};
use crate::sys::deadline::Deadline;
use crate::sys::netns::NetNs;
use ipnetwork::IpNetwork;
use std::fmt::{self, Display, Write as _};
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

pub const TABLE: &str = "wg-oci-hook";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// `OUTER:INNER/PROTO`: connections arriving through the tunnel at `outer` reach the container's `inner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortMap {
    pub outer: u16,
    pub inner: u16,
    pub protocol: Protocol,
}

impl Display for PortMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.outer, self.inner, self.protocol)
    }
}

impl FromStr for PortMap {
    type Err = String;

    /// `8080:80/tcp`, `53:53/udp`; `8080:80` means tcp (as `docker run -p` does); `80/tcp` means `80:80/tcp`.
    fn from_str(s: &str) -> Result<Self, String> {
        let expected =
            "expected OUTER:INNER/tcp or OUTER:INNER/udp with ports 1-65535, such as 8080:80/tcp";
        let (ports, protocol) = match s.split_once('/') {
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some(_) => return Err(expected.to_owned()),
            None => (s, Protocol::Tcp),
        };
        let port = |p: &str| -> Result<u16, String> {
            // Digits only: u16's parser would take a leading '+'.
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(expected.to_owned());
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(expected.to_owned()),
                Ok(n) => Ok(n),
            }
        };
        let (outer, inner) = match ports.split_once(':') {
            Some((outer, inner)) => (port(outer)?, port(inner)?),
            None => {
                let p = port(ports)?;
                (p, p)
            }
        };
        Ok(PortMap {
            outer,
            inner,
            protocol,
        })
    }
}

/// Parses a list of port maps and refuses two that claim the same outer port.
pub fn parse_port_maps<'a>(
    items: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<PortMap>, String> {
    let mut maps: Vec<PortMap> = Vec::new();
    for item in items {
        let map: PortMap = item.trim().parse().map_err(|e| {
            // Untrusted text (an annotation): quote only the start of it.
            let shown: String = item.chars().take(32).collect();
            format!("{shown:?}: {e}")
        })?;
        add_port_map(&mut maps, map)?;
    }
    Ok(maps)
}

/// Adds `map` unless its outer port and protocol are already taken (by a different inner port).
pub fn add_port_map(maps: &mut Vec<PortMap>, map: PortMap) -> Result<(), String> {
    match maps
        .iter()
        .find(|m| m.outer == map.outer && m.protocol == map.protocol)
    {
        Some(m) if *m == map => Ok(()),
        Some(m) => Err(format!(
            "{map} and {m} both claim {}/{}",
            m.outer, m.protocol
        )),
        None => {
            maps.push(map);
            Ok(())
        }
    }
}

/// `PORT/PROTO` or `FIRST-LAST/PROTO`: ports the tunnel's side may connect to (`inbound = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
    pub protocol: Protocol,
}

impl Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// `8080/tcp`, `53/udp`, `6000-6010/tcp`; a bare `8080` means tcp, as in a port map.
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected PORT/tcp, PORT/udp or FIRST-LAST/tcp with ports 1-65535, such as 8080/tcp or 6000-6010/udp";
        let (ports, protocol) = match s.split_once('/') {
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some(_) => return Err(expected.to_owned()),
            None => (s, Protocol::Tcp),
        };
        let port = |p: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(expected.to_owned()),
        };
        let (first, last) = match ports.split_once('-') {
            Some((first, last)) => (port(first)?, port(last)?),
            None => (port(ports)?, port(ports)?),
        };
        if first > last {
            return Err(format!("{first}-{last}: the range ends before it starts"));
        }
        Ok(PortRange {
            first,
            last,
            protocol,
        })
    }
}

/// Which connections that begin on the tunnel's side may reach the container. Replies to the workload's own
/// connections, the port maps and a PIA forwarded port are let in whatever this says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Nothing else (`inbound = "replies"`).
    Replies,
    /// These ports as well (`inbound = ["8080/tcp", ...]`).
    Ports(Vec<PortRange>),
    /// Everything, as plain wg-quick has it (`inbound = "all"`).
    All,
}

impl FromStr for Inbound {
    type Err = String;

    /// The string forms; a list goes through [`Inbound::ports`].
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "replies" => Ok(Inbound::Replies),
            "all" => Ok(Inbound::All),
            _ => Err(format!(
                "{:?}: expected \"replies\", \"all\" or a list of ports such as [\"8080/tcp\", \"6000-6010/udp\"]",
                s.chars().take(32).collect::<String>()
            )),
        }
    }
}

impl Inbound {
    /// A list of `PortRange`s; the error names the item at fault. An empty list is `Replies`. The ranges
    /// come back sorted by protocol and port, overlapping and adjacent ones merged: older nft refuses
    /// overlapping intervals in a set, and newer nft lists them merged.
    pub fn ports<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Inbound, String> {
        let mut ranges = Vec::new();
        for item in items {
            let range: PortRange = item
                .parse()
                .map_err(|e| format!("{:?}: {e}", item.chars().take(32).collect::<String>()))?;
            ranges.push(range);
        }
        ranges.sort_by_key(|r| (r.protocol, r.first, r.last));
        let mut ports: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match ports.last_mut() {
                Some(prev)
                    if prev.protocol == r.protocol && r.first <= prev.last.saturating_add(1) =>
                {
                    prev.last = prev.last.max(r.last);
                }
                _ => ports.push(r),
            }
        }
        Ok(if ports.is_empty() {
            Inbound::Replies
        } else {
            Inbound::Ports(ports)
        })
    }
}

/// The named set of the PIA forwarded port, which the port-forwarding worker keeps up to date.
pub const FORWARDED_SET: &str = "forwarded";

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

/// The `nft` program, found before anything is made so that a missing one costs nothing to undo.
pub struct Nft {
    program: PathBuf,
}

impl Nft {
    pub fn locate(command: &str) -> io::Result<Nft> {
        Ok(Nft {
            program: resolve_program(command)?,
        })
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Loads `script` in one transaction inside `netns`, killing nft if it runs past `deadline`.
    pub fn load(&self, netns: &NetNs, script: &str, deadline: Deadline) -> io::Result<()> {
        netns.run(|| self.run(&["-f", "-"], script.as_bytes(), Some(deadline)))
    }

    /// Deletes our table from `netns`; no table is not an error.
    pub fn delete_table(&self, netns: &NetNs) -> io::Result<()> {
        // `destroy` (nft 1.0.8+) would not fail on a missing table; `delete` after `add` works on every nft.
        let script = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
        netns.run(|| self.run(&["-f", "-"], script.as_bytes(), None))
    }

    /// Makes `port` the one forwarded port of the table in `netns`, in one transaction (the old one shuts as
    /// the new one opens).
    pub fn set_forwarded_port(&self, netns: &NetNs, port: u16) -> io::Result<()> {
        let script = format!(
            "flush set inet {TABLE} {FORWARDED_SET}\nadd element inet {TABLE} {FORWARDED_SET} {{ {port} }}\n"
        );
        netns.run(|| self.run(&["-f", "-"], script.as_bytes(), None))
    }

    /// Runs nft from the calling thread (whose netns the child inherits), with no environment of ours. nft only
    /// talks to the kernel and ends in milliseconds, but `nft_command` may be anything: given a deadline, a run
    /// past it is killed.
    fn run(&self, args: &[&str], stdin: &[u8], deadline: Option<Deadline>) -> io::Result<()> {
        let mut child = Command::new(&self.program)
            .args(args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.program.display())))?;
        let written = child.stdin.take().expect("piped").write_all(stdin);
        let (status, stderr) = match deadline {
            None => {
                let output = child.wait_with_output()?;
                (output.status, output.stderr)
            }
            Some(deadline) => output_until(child, deadline)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} still ran when the {deadline} passed",
                        self.program.display()
                    ),
                )
            })?,
        };
        if status.success() {
            return written;
        }
        let stderr = String::from_utf8_lossy(&stderr);
        Err(io::Error::other(format!(
            "{} failed ({status}): {}",
            self.program.display(),
            first_error_line(&stderr)
        )))
    }
}

/// nft reports an error over several lines (the offending input, then carets); the `Error:` line says it.
fn first_error_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains("Error:"))
        .or_else(|| stderr.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("no message");
    line.trim().chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn port_maps_parse_like_docker_and_refuse_everything_else() {
        let m: PortMap = "8080:80/tcp".parse().unwrap();
        assert_eq!((m.outer, m.inner, m.protocol), (8080, 80, Protocol::Tcp));
        let m: PortMap = "53:5353/udp".parse().unwrap();
        assert_eq!((m.outer, m.inner, m.protocol), (53, 5353, Protocol::Udp));
        assert_eq!(
            "8080:80".parse::<PortMap>().unwrap().protocol,
            Protocol::Tcp
        );
        let m: PortMap = "443/tcp".parse().unwrap();
        assert_eq!((m.outer, m.inner), (443, 443));
        for bad in [
            "",
            ":",
            "0:80/tcp",
            "80:0",
            "65536:1",
            "+80:80",
            "80:80/sctp",
            "80:80/TCP",
            "a:b",
            "80:80:80",
            "80:80/tcp/udp",
            " 80:80",
            "80;drop",
            "80:80/tcp\n",
        ] {
            assert!(bad.parse::<PortMap>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn two_maps_for_one_outer_port_are_refused() {
        assert_eq!(
            parse_port_maps(["8080:80/tcp", "8080:80/udp", "8080:80/tcp"])
                .unwrap()
                .len(),
            2
        );
        let e = parse_port_maps(["8080:80/tcp", "8080:81"]).unwrap_err();
        assert!(e.contains("8080:81/tcp and 8080:80/tcp"), "{e}");
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
        let maps = parse_port_maps(["9080:80/tcp", "5353:53/udp", "9081:81"]).unwrap();
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

    #[test]
    fn port_ranges_parse_and_refuse_everything_else() {
        let r: PortRange = "6000-6010/udp".parse().unwrap();
        assert_eq!((r.first, r.last, r.protocol), (6000, 6010, Protocol::Udp));
        assert_eq!(r.to_string(), "6000-6010");
        let r: PortRange = "8080".parse().unwrap();
        assert_eq!((r.first, r.last, r.protocol), (8080, 8080, Protocol::Tcp));
        assert_eq!(r.to_string(), "8080");
        for bad in [
            "",
            "/tcp",
            "0/tcp",
            "65536",
            "-1",
            "1-",
            "-",
            "2-1",
            "+1",
            "1-+2",
            "80/TCP",
            "80/sctp",
            "80 ",
            " 80",
            "80,81",
            "1-2-3",
            "80/tcp/udp",
            "80;drop",
        ] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(Inbound::ports([]).unwrap(), Inbound::Replies);
        let merged = Inbound::ports([
            "53/udp",
            "7000-7010",
            "80",
            "7005/tcp",
            "7011-7020/tcp",
            "81/tcp",
            "53",
            "65535",
            "65534",
        ])
        .unwrap();
        let shown: Vec<String> = match &merged {
            Inbound::Ports(p) => p.iter().map(|r| format!("{r}/{}", r.protocol)).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            shown,
            [
                "53/tcp",
                "80-81/tcp",
                "7000-7020/tcp",
                "65534-65535/tcp",
                "53/udp"
            ]
        );
        assert!(Inbound::ports(["80", "x"])
            .unwrap_err()
            .starts_with("\"x\": expected"));
        assert_eq!("replies".parse::<Inbound>().unwrap(), Inbound::Replies);
        assert_eq!("all".parse::<Inbound>().unwrap(), Inbound::All);
        assert!("ALL".parse::<Inbound>().is_err());
    }

    #[test]
    fn nft_errors_become_one_line() {
        let stderr =
            "/dev/stdin:3:9-12: Error: Could not process rule: No such file or directory\n\
                      iif \"wg0\" accept\n        ^^^^\n";
        assert_eq!(
            first_error_line(stderr),
            "/dev/stdin:3:9-12: Error: Could not process rule: No such file or directory"
        );
        assert_eq!(first_error_line(""), "no message");
    }
}
