//! Port maps (`OUTER:INNER/PROTO`) and the inbound filter (`inbound = ...`): parsed from the policy and from the
//! `wg.ports` annotation, which a container's user writes, so every form is checked and nothing else is taken.

use std::fmt::{self, Display};
use std::str::FromStr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
