//! Leak-test infrastructure, in the manner of Mullvad's leak tests: real podman bridge networks in the lab's host
//! netns, packet captures on their bridge, and probe scripts a container runs.
//!
//! - `Lab::bridge_network` creates a dual-stack podman bridge network (netavark, aardvark-dns answering on the
//!   gateways' port 53) and pre-creates its bridge with a fixed MAC, so a [`Capture`] can start before any
//!   container exists. The lab's host netns carries [`PUBLIC_V4`] and [`PUBLIC_V6`] on `lo`: a container routed
//!   through the bridge gateway reaches them in the host netns, so a probe to them really leaves the container
//!   by its bridge interface and shows on the bridge.
//! - [`Capture`] runs tcpdump in a netns; [`Capture::stop`] parses the pcap file itself (Ethernet, IPv4/IPv6,
//!   ICMP/TCP/UDP) into [`Packets`], each with tcpdump's own one-line description for assertion messages.
//! - [`leak_probe_script`] sends ICMP echo, TCP/80, TCP/53 and UDP/53 (DNS) to each target and prints
//!   `PROBE <kind> <addr> rc=<rc>` lines; [`probe_results`] reads them back.
//!
//! Every address used is lab-only: the gateways' prefixes exist only in the lab's host netns, and the
//! public-looking pair comes from the documentation prefixes 203.0.113.0/24 and 2001:db8::/32.

use super::command::kill;
use super::netns::nsenter;
use super::{
    alive, find_podman_helper, lab_path, netns_path, ns_id, processes_mentioning, resolve_tool,
    run_cmd, Lab, PODMAN_HELPER_DIRS,
};
use std::fmt;
use std::fs::{self, File};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A public-looking IPv4 address that is local to the lab's host netns (on its `lo`).
pub const PUBLIC_V4: &str = "203.0.113.77";
/// A public-looking IPv6 address that is local to the lab's host netns (on its `lo`).
pub const PUBLIC_V6: &str = "2001:db8::77";
/// The probe kinds [`leak_probe_script`] sends to every target, as [`Packet::probe_kind`] names them.
pub const PROBE_KINDS: [&str; 4] = ["icmp", "tcp80", "tcp53", "udp53"];
/// The name every UDP/53 probe asks for.
pub const PROBE_QUERY_NAME: &str = "leak-probe.lab.example";
/// How long [`Capture::start`] waits for tcpdump to say it is listening.
const CAPTURE_START_TIMEOUT: Duration = Duration::from_secs(10);

static CAPTURE_COUNTER: AtomicUsize = AtomicUsize::new(0);

// ----- bridge networks ---------------------------------------------------------------------------------------------

/// A dual-stack podman bridge network of one lab (see `Lab::bridge_network`).
#[derive(Clone, Debug)]
pub struct BridgeNet {
    /// The podman network name (`<name>-<lab id>`), for `RunOpts::network`.
    pub name: String,
    /// The bridge interface in the lab's host netns (podman's choice, e.g. `podman1`).
    pub bridge: String,
    /// The bridge's fixed MAC address, lowercase (`02:00:00:00:NN:01`).
    pub bridge_mac: String,
    /// The IPv4 gateway on the bridge (`10.89.N.1`); aardvark-dns answers on its port 53.
    pub gateway4: String,
    /// The IPv6 gateway on the bridge (`fd89:N::1`); aardvark-dns answers on its port 53.
    pub gateway6: String,
    /// The IPv4 subnet (`10.89.N.0/24`).
    pub subnet4: String,
}

impl Lab {
    /// Creates the dual-stack podman bridge network `<name>-<lab id>` (netavark; 10.89.N.0/24 and fd89:N::/64,
    /// gateways .1 and ::1, DNS enabled) and pre-creates its bridge, up, with the fixed MAC `02:00:00:00:NN:01`.
    pub fn bridge_network(&self, name: &str) -> BridgeNet {
        for helper in ["netavark", "aardvark-dns"] {
            assert!(
                find_podman_helper(helper).is_some(),
                "`{helper}` not found in {:?}: install the Debian package `{helper}` (podman recommends it)",
                PODMAN_HELPER_DIRS
            );
        }
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "bridge network name {name:?}: use letters, digits, '-' and '_'"
        );
        let full_name = format!("{name}-{}", self.id);
        // Registered before it exists, so that teardown removes it whatever happens next.
        let n = {
            let mut nets = self.networks.lock().unwrap();
            nets.push(full_name.clone());
            nets.len()
        };
        assert!(n <= 255, "a lab has at most 255 bridge networks");
        let (subnet4, gateway4) = (format!("10.89.{n}.0/24"), format!("10.89.{n}.1"));
        let (subnet6, gateway6) = (format!("fd89:{n}::/64"), format!("fd89:{n}::1"));
        self.podman(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--ipv6",
            "--subnet",
            &subnet4,
            "--gateway",
            &gateway4,
            "--subnet",
            &subnet6,
            "--gateway",
            &gateway6,
            &full_name,
        ])
        .assert_success("podman network create");
        let inspect = self.podman(&[
            "network",
            "inspect",
            "--format",
            "{{.NetworkInterface}} {{.DNSEnabled}} {{.IPv6Enabled}}",
            &full_name,
        ]);
        inspect.assert_success("podman network inspect");
        let fields: Vec<&str> = inspect.stdout.split_whitespace().collect();
        assert!(
            fields.len() == 3 && fields[1] == "true" && fields[2] == "true",
            "network {full_name} should be a DNS-enabled dual-stack bridge\n{inspect}"
        );
        let net = BridgeNet {
            name: full_name,
            bridge: fields[0].to_owned(),
            bridge_mac: format!("02:00:00:00:{n:02x}:01"),
            gateway4,
            gateway6,
            subnet4,
        };
        self.ensure_bridge(&net);
        self.bridges.lock().unwrap().push(net.clone());
        net
    }

    /// Creates `net`'s bridge in the host netns if it is missing (netavark deletes it with its last container):
    /// fixed MAC, the gateway addresses (netavark adds them only to a bridge it creates itself), up.
    /// `podman_run` calls it; call it yourself before starting a capture for a second container. (A container
    /// still being torn down when the next one starts may take the bridge with it: run them one after another.)
    pub fn ensure_bridge(&self, net: &BridgeNet) {
        let h = self.host_ns.clone();
        if let Some(mac) = self.link_mac(&h, &net.bridge) {
            assert_eq!(
                mac, net.bridge_mac,
                "bridge {} exists without the lab's MAC",
                net.bridge
            );
            return;
        }
        let (gw4, gw6) = (
            format!("{}/24", net.gateway4),
            format!("{}/64", net.gateway6),
        );
        self.must_ip(
            &h,
            &[
                "link",
                "add",
                &net.bridge,
                "address",
                &net.bridge_mac,
                "type",
                "bridge",
            ],
        );
        self.must_ip(&h, &["addr", "add", &gw4, "dev", &net.bridge]);
        self.must_ip(&h, &["addr", "add", &gw6, "dev", &net.bridge, "nodad"]);
        self.must_ip(&h, &["link", "set", &net.bridge, "up"]);
    }

    /// The MAC address (lowercase) of link `iface` in netns `netns`, or `None` when there is no such link.
    pub fn link_mac(&self, netns: &str, iface: &str) -> Option<String> {
        let out = self.ip(netns, &["-o", "link", "show", "dev", iface]);
        if !out.success() {
            return None;
        }
        let mut words = out.stdout.split_whitespace();
        words.find(|w| *w == "link/ether")?;
        words.next().map(str::to_ascii_lowercase)
    }

    /// Kills (by pid) every aardvark-dns of this lab: started with the lab's netavark run dir, or living in the
    /// lab's host netns.
    pub(super) fn kill_aardvark_dns(&self) {
        let run_dir = self.netavark_run_dir().to_string_lossy().into_owned();
        let host = ns_id(&netns_path(&self.host_ns));
        let mut pids: Vec<u32> = processes_mentioning(&run_dir)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        if host.is_some() {
            for (pid, _) in processes_mentioning("aardvark-dns") {
                if ns_id(&format!("/proc/{pid}/ns/net")) == host && !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
        for sig in [
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGKILL,
        ] {
            pids.retain(|pid| alive(*pid));
            if pids.is_empty() {
                return;
            }
            for pid in &pids {
                kill(*pid, sig);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

// ----- probes ---------------------------------------------------------------------------------------------------

/// Probe targets for [`Lab::attach_late_network`]: its gateway (v4, v6) and the public-looking pair behind it.
pub const LATE_TARGETS: [&str; 4] = ["172.31.9.1", "fd31:9::1", PUBLIC_V4, PUBLIC_V6];

impl Lab {
    /// What Docker 28's libnetwork does after the runtime's create (so after our hook): a veth appears in the
    /// netns of `pid` with 172.31.9.2/24 and fd31:9::2/64 and default routes (in main) via its gateways, whose
    /// end is in the lab's host netns. Returns a capture on that host end, started before the link was moved, so
    /// it sees everything the container ever sends on it.
    pub fn attach_late_network(&self, pid: &str) -> Capture {
        let (outer, inner) = (format!("vlo{}", self.id), format!("vli{}", self.id));
        let h = self.host_ns.clone();
        for argv in [
            vec![
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ],
            vec!["addr", "add", "172.31.9.1/24", "dev", &outer],
            vec!["addr", "add", "fd31:9::1/64", "dev", &outer, "nodad"],
            vec!["link", "set", &outer, "up"],
        ] {
            self.ip(&h, &argv)
                .assert_success("the late network's host side");
        }
        let capture = Capture::start(self, &h, &outer);
        self.ip(&h, &["link", "set", &inner, "netns", pid])
            .assert_success("moving the late link into the container");
        let netns = format!("--net=/proc/{pid}/ns/net");
        // An engine that attaches an IPv6 network enables IPv6 on its link (Docker disables it in the netns
        // otherwise); /proc/sys/net answers for the netns of whoever opens it.
        let enable_v6 = format!("echo 0 > /proc/sys/net/ipv6/conf/{inner}/disable_ipv6");
        for args in [
            vec!["sh", "-c", &enable_v6],
            vec!["ip", "addr", "add", "172.31.9.2/24", "dev", &inner],
            vec!["ip", "addr", "add", "fd31:9::2/64", "dev", &inner, "nodad"],
            vec!["ip", "link", "set", &inner, "up"],
            vec!["ip", "route", "add", "default", "via", "172.31.9.1"],
            vec!["ip", "-6", "route", "add", "default", "via", "fd31:9::1"],
        ] {
            let mut argv = vec!["nsenter", netns.as_str()];
            argv.extend(args);
            self.run(&argv)
                .assert_success("configuring the late link as libnetwork does");
        }
        capture
    }
}

/// The targets of a lab leak test on `net`: the public-looking pair (local to the host netns) and the LAN pair
/// (the bridge gateways, where aardvark-dns listens on port 53).
pub fn lab_probe_targets(net: &BridgeNet) -> Vec<String> {
    vec![
        PUBLIC_V4.to_owned(),
        PUBLIC_V6.to_owned(),
        net.gateway4.clone(),
        net.gateway6.clone(),
    ]
}

/// A busybox sh snippet that sends, all at once, to each target IP literal: ICMP echo (`ping`/`ping6`), TCP to
/// ports 80 and 53 (`nc`), UDP to port 53 (`nslookup`, a DNS query for [`PROBE_QUERY_NAME`]); every probe is
/// bounded (at most about 2 s in all), never fails the script, and prints `PROBE <kind> <addr> rc=<rc>`; the
/// snippet ends with `PROBES DONE`.
pub fn leak_probe_script(targets: &[&str]) -> String {
    let mut s = String::from(
        "# leak probes: every probe in the background, each bounded, each reporting its exit status\n\
         probe() { kind=$1; addr=$2; shift 2; rc=0; \"$@\" </dev/null >/dev/null 2>&1 || rc=$?; \
         echo \"PROBE $kind $addr rc=$rc\"; }\n",
    );
    for target in targets {
        let addr: IpAddr = target
            .parse()
            .unwrap_or_else(|_| panic!("probe target {target:?} is not an IP address literal"));
        let ping = if addr.is_ipv6() { "ping6" } else { "ping" };
        s += &format!("probe icmp {addr} {ping} -c 1 -W 1 {addr} &\n");
        s += &format!("probe tcp80 {addr} timeout 2 nc -w 1 {addr} 80 &\n");
        s += &format!("probe tcp53 {addr} timeout 2 nc -w 1 {addr} 53 &\n");
        s += &format!("probe udp53 {addr} timeout 2 nslookup {PROBE_QUERY_NAME} {addr} &\n");
    }
    s += "wait\necho PROBES DONE\n";
    s
}

/// One `PROBE <kind> <addr> rc=<rc>` line of [`leak_probe_script`]'s output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// One of [`PROBE_KINDS`].
    pub kind: String,
    /// The target, as given to the script.
    pub addr: String,
    /// The probe command's exit status (0: answered; busybox `timeout` gives 143 when it had to stop it).
    pub rc: i32,
}

/// The `PROBE` lines in `output`, in the order printed.
pub fn probe_results(output: &str) -> Vec<ProbeResult> {
    output
        .lines()
        .filter_map(|line| {
            let mut f = line.strip_prefix("PROBE ")?.split_whitespace();
            let (kind, addr, rc) = (f.next()?, f.next()?, f.next()?);
            Some(ProbeResult {
                kind: kind.to_owned(),
                addr: addr.to_owned(),
                rc: rc.strip_prefix("rc=")?.parse().ok()?,
            })
        })
        .collect()
}

// ----- packet capture -------------------------------------------------------------------------------------------

/// A tcpdump writing what `iface` in `netns` sees to a pcap file in the lab dir; killed when dropped.
pub struct Capture {
    child: Option<Child>,
    /// The pcap file.
    pub file: PathBuf,
    /// tcpdump's stderr.
    pub log: PathBuf,
    /// The netns captured in.
    pub netns: String,
    /// The interface captured on.
    pub iface: String,
    /// The captured interface's own MAC when the capture started (lowercase; empty if it had none).
    pub iface_mac: String,
}

impl Capture {
    /// Starts `tcpdump -i IFACE` in `netns` (a netns name under /var/run/netns) and returns once it listens.
    pub fn start(lab: &Lab, netns: &str, iface: &str) -> Capture {
        assert!(
            resolve_tool("tcpdump").is_some(),
            "`tcpdump` not found in {}: install the Debian package `tcpdump`",
            lab_path()
        );
        let n = CAPTURE_COUNTER.fetch_add(1, Ordering::SeqCst);
        let file = lab.dir.join(format!("capture-{n}-{iface}.pcap"));
        let log = lab.dir.join(format!("capture-{n}-{iface}.log"));
        let stderr = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        // --immediate-mode: every packet reaches the file at once (none waits in the kernel's ring when tcpdump
        // is stopped); -U: flushed per packet; -Z root: no privilege drop (the lab dir is root's, 0700).
        let child = nsenter(netns)
            .args(["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode"])
            .args(["-Z", "root", "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning tcpdump: {e}"));
        let mut cap = Capture {
            child: Some(child),
            file,
            log,
            netns: netns.to_owned(),
            iface: iface.to_owned(),
            iface_mac: lab.link_mac(netns, iface).unwrap_or_default(),
        };
        let deadline = Instant::now() + CAPTURE_START_TIMEOUT;
        loop {
            let text = fs::read_to_string(&cap.log).unwrap_or_default();
            if text.contains("listening on") {
                return cap;
            }
            let exited = cap.child.as_mut().unwrap().try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                cap.kill();
                let text = fs::read_to_string(&cap.log).unwrap_or_default();
                panic!(
                    "tcpdump on {iface} in {netns} did not start listening within {} s ({}):\n{text}",
                    CAPTURE_START_TIMEOUT.as_secs(),
                    exited.map_or("still running".to_owned(), |s| s.to_string())
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops tcpdump (SIGINT; it may have exited already, e.g. when netavark deleted the bridge) and returns
    /// every packet it wrote.
    pub fn stop(mut self) -> Packets {
        self.kill();
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let bytes = fs::read(&self.file)
            .unwrap_or_else(|e| panic!("reading {}: {e}\n{log}", self.file.display()));
        let mut packets =
            parse_pcap(&bytes).unwrap_or_else(|e| panic!("{}: {e}\n{log}", self.file.display()));
        // tcpdump's own description of each packet, for messages; matched to the records by timestamp.
        let file = self.file.to_string_lossy().into_owned();
        let text = run_cmd(&["tcpdump", "-r", &file, "-n", "-e", "-tt"]);
        let lines = group_tcpdump_lines(&text.stdout);
        let matches = lines.len() == packets.len()
            && lines
                .iter()
                .zip(&packets)
                .all(|(l, p)| l.starts_with(&format!("{} ", p.timestamp)));
        for (i, p) in packets.iter_mut().enumerate() {
            p.line = if matches {
                lines[i].clone()
            } else {
                p.synthesized_line()
            };
        }
        Packets {
            origin: format!(
                "{} on {} in {}{}",
                file,
                self.iface,
                self.netns,
                if matches {
                    String::new()
                } else {
                    format!(
                        " (tcpdump -r gave {} entries for {} records:\n{text})",
                        lines.len(),
                        packets.len()
                    )
                }
            ),
            packets,
            netns: self.netns.clone(),
            iface: self.iface.clone(),
            iface_mac: self.iface_mac.clone(),
        }
    }

    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        for sig in [
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::Signal::SIGKILL,
        ] {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            kill(child.id(), sig);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill();
    }
}

/// tcpdump text output grouped per packet: a line starting with a `-tt` timestamp begins a packet, any other
/// line continues the previous one (joined with " | ").
fn group_tcpdump_lines(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let starts_packet = line
            .split_once(' ')
            .and_then(|(ts, _)| ts.split_once('.'))
            .is_some_and(|(s, f)| {
                !s.is_empty()
                    && !f.is_empty()
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && f.bytes().all(|b| b.is_ascii_digit())
            });
        match out.last_mut() {
            Some(last) if !starts_packet => {
                last.push_str(" | ");
                last.push_str(line.trim());
            }
            _ if line.trim().is_empty() => {}
            _ => out.push(line.to_owned()),
        }
    }
    out
}

// ----- packets --------------------------------------------------------------------------------------------------

/// One captured Ethernet frame, decoded down to the transport header.
#[derive(Clone, Debug)]
pub struct Packet {
    /// Capture time, seconds since the epoch.
    pub time: f64,
    /// The capture time as tcpdump `-tt` prints it (`SECONDS.MICROSECONDS`).
    pub timestamp: String,
    /// Source MAC, lowercase `aa:bb:cc:dd:ee:ff`.
    pub src_mac: String,
    /// Destination MAC, lowercase.
    pub dst_mac: String,
    /// `IPv4`, `IPv6`, `ARP`, or the hex value (`0x88cc`).
    pub ethertype: String,
    /// The IP source address (IP packets only).
    pub src_ip: Option<IpAddr>,
    /// The IP destination address (IP packets only).
    pub dst_ip: Option<IpAddr>,
    /// `ICMP`, `ICMP6`, `TCP`, `UDP`, `proto N`; empty when not IP or not the first fragment.
    pub proto: String,
    /// TCP/UDP source port.
    pub src_port: Option<u16>,
    /// TCP/UDP destination port.
    pub dst_port: Option<u16>,
    /// ICMP/ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// TCP flags byte (0x02 SYN, 0x10 ACK, 0x04 RST, ...).
    pub tcp_flags: Option<u8>,
    /// tcpdump's one-line description (`-n -e -tt`), or one of our own when tcpdump could not give it.
    pub line: String,
}

impl Packet {
    /// Which [`leak_probe_script`] probe this packet is, when it is one (a request, never a reply):
    /// `icmp` (echo request, v4 or v6), `tcpPORT` (TCP without ACK, i.e. a SYN), `udpPORT`.
    pub fn probe_kind(&self) -> Option<String> {
        match (self.proto.as_str(), self.icmp_type, self.dst_port) {
            ("ICMP", Some(8), _) | ("ICMP6", Some(128), _) => Some("icmp".to_owned()),
            ("TCP", _, Some(port)) if self.tcp_flags.is_some_and(|f| f & 0x10 == 0) => {
                Some(format!("tcp{port}"))
            }
            ("UDP", _, Some(port)) => Some(format!("udp{port}")),
            _ => None,
        }
    }

    /// True for IPv4 and IPv6 frames.
    pub fn is_ip(&self) -> bool {
        self.ethertype == "IPv4" || self.ethertype == "IPv6"
    }

    /// True for the kernel's own link-level control traffic, which an interface sends as soon as it is up and
    /// which carries no workload data: IGMP, and ICMPv6 router/neighbour solicitations, neighbour
    /// advertisements and MLD from a link-local or unspecified source. (A neighbour solicitation from a global
    /// address is not: the kernel sends it because something tried to reach that neighbour.)
    pub fn is_link_control(&self) -> bool {
        let link_scoped_source = match self.src_ip {
            Some(IpAddr::V6(a)) => a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80,
            _ => false,
        };
        match (self.proto.as_str(), self.icmp_type) {
            ("proto 2", _) => self.ethertype == "IPv4",
            ("ICMP6", Some(130..=133 | 135 | 136 | 143)) => link_scoped_source,
            _ => false,
        }
    }

    fn synthesized_line(&self) -> String {
        let ip = match (self.src_ip, self.dst_ip) {
            (Some(s), Some(d)) => format!(
                ": {s}{} > {d}{}: {}{}",
                self.src_port.map(|p| format!(".{p}")).unwrap_or_default(),
                self.dst_port.map(|p| format!(".{p}")).unwrap_or_default(),
                self.proto,
                self.icmp_type
                    .map(|t| format!(" type {t}"))
                    .unwrap_or_default()
            ),
            _ => String::new(),
        };
        format!(
            "{} {} > {}, ethertype {}{ip}",
            self.timestamp, self.src_mac, self.dst_mac, self.ethertype
        )
    }
}

/// Captured packets, in capture order; filters return new sets, `Display` lists every packet.
#[derive(Clone, Debug, Default)]
pub struct Packets {
    /// The packets.
    pub packets: Vec<Packet>,
    /// Where they were captured and how they were filtered since, for messages.
    pub origin: String,
    /// The netns captured in.
    pub netns: String,
    /// The interface captured on.
    pub iface: String,
    /// The captured interface's own MAC when the capture started (see [`Capture::iface_mac`]).
    pub iface_mac: String,
}

impl Packets {
    fn filter(&self, what: &str, keep: impl Fn(&Packet) -> bool) -> Packets {
        Packets {
            packets: self.packets.iter().filter(|p| keep(p)).cloned().collect(),
            origin: format!("{}, {what}", self.origin),
            ..self.clone_empty()
        }
    }

    fn clone_empty(&self) -> Packets {
        Packets {
            packets: Vec::new(),
            origin: self.origin.clone(),
            netns: self.netns.clone(),
            iface: self.iface.clone(),
            iface_mac: self.iface_mac.clone(),
        }
    }

    /// Packets not sent by `mac` (on a lab bridge with one container: the container's).
    pub fn not_from(&self, mac: &str) -> Packets {
        let mac = mac.to_ascii_lowercase();
        self.filter(&format!("not from {mac}"), |p| p.src_mac != mac)
    }

    /// Packets not sent by the captured interface itself (on a bridge or the host end of a veth: what came
    /// from the other side). Uses the MAC recorded when the capture started, so it works after the link is gone.
    pub fn not_from_capture_iface(&self) -> Packets {
        assert!(
            !self.iface_mac.is_empty(),
            "the captured interface {} had no MAC when the capture started",
            self.iface
        );
        self.not_from(&self.iface_mac.clone())
    }

    /// Packets captured at or after `t` (seconds since the epoch, the clock tcpdump stamps with).
    pub fn since(&self, t: f64) -> Packets {
        self.filter(&format!("since {t:.6}"), |p| p.time >= t)
    }

    /// Packets captured before `t`.
    pub fn before(&self, t: f64) -> Packets {
        self.filter(&format!("before {t:.6}"), |p| p.time < t)
    }

    /// IPv4 and IPv6 packets (no ARP or other ethertypes).
    pub fn ip_only(&self) -> Packets {
        self.filter("IP only", Packet::is_ip)
    }

    /// Without the kernel's link-level control traffic (see [`Packet::is_link_control`]).
    pub fn without_link_control(&self) -> Packets {
        self.filter("without link control", |p| !p.is_link_control())
    }

    /// IPv6 packets.
    pub fn ipv6_only(&self) -> Packets {
        self.filter("IPv6 only", |p| p.ethertype == "IPv6")
    }

    /// Packets to the IP address `addr` (any textual form of it).
    pub fn to_addr(&self, addr: &str) -> Packets {
        let want: IpAddr = addr
            .parse()
            .unwrap_or_else(|_| panic!("{addr:?} is not an IP address"));
        self.filter(&format!("to {want}"), |p| p.dst_ip == Some(want))
    }

    /// Packets to any address but `addr`.
    pub fn not_to_addr(&self, addr: &str) -> Packets {
        let not: IpAddr = addr
            .parse()
            .unwrap_or_else(|_| panic!("{addr:?} is not an IP address"));
        self.filter(&format!("not to {not}"), |p| p.dst_ip != Some(not))
    }

    /// Packets that are the probe `kind` (see [`Packet::probe_kind`]; case and spaces are ignored, so
    /// `"ICMP"` and `"tcp 80"` work too).
    pub fn probe_kind(&self, kind: &str) -> Packets {
        let want: String = kind
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        self.filter(kind, |p| p.probe_kind().as_deref() == Some(want.as_str()))
    }

    /// True when some packet is the probe `kind` (as for [`Packets::probe_kind`]).
    pub fn has_kind(&self, kind: &str) -> bool {
        !self.probe_kind(kind).is_empty()
    }

    /// How many packets.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// No packets.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// The packets, in capture order.
    pub fn iter(&self) -> std::slice::Iter<'_, Packet> {
        self.packets.iter()
    }

    /// A header line and every packet's line (what `Display` prints).
    pub fn summary(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Packets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- {} packets ({}) ---", self.len(), self.origin)?;
        for p in &self.packets {
            writeln!(f, "{}", p.line)?;
        }
        write!(f, "--- end of packets ---")
    }
}

// ----- pcap ------------------------------------------------------------------------------------------------------

/// Decodes a classic pcap file (either byte order, micro- or nanosecond stamps) of Ethernet frames. A record cut
/// short at the end (tcpdump stopped mid-write) is dropped.
fn parse_pcap(bytes: &[u8]) -> Result<Vec<Packet>, String> {
    if bytes.len() < 24 {
        return Err(format!("not a pcap file: {} bytes", bytes.len()));
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let (big_endian, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
        [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
        _ => return Err(format!("not a pcap file (magic {magic:02x?}; pcapng?)")),
    };
    let u32_at = |o: usize| {
        let b = [bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]];
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let linktype = u32_at(20) & 0x0fff_ffff;
    if linktype != 1 {
        return Err(format!("link type {linktype}, not Ethernet (1)"));
    }
    let mut packets = Vec::new();
    let mut o = 24;
    while o + 16 <= bytes.len() {
        let (sec, frac, caplen) = (u32_at(o), u32_at(o + 4), u32_at(o + 8) as usize);
        let data_start = o + 16;
        if data_start + caplen > bytes.len() {
            break;
        }
        let micros = if nanos { frac / 1000 } else { frac };
        let data = &bytes[data_start..data_start + caplen];
        if let Some(p) = decode_ethernet(data, sec, micros) {
            packets.push(p);
        }
        o = data_start + caplen;
    }
    Ok(packets)
}

fn mac_str(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn decode_ethernet(data: &[u8], sec: u32, micros: u32) -> Option<Packet> {
    if data.len() < 14 {
        return None;
    }
    let mut ethertype = u16::from_be_bytes([data[12], data[13]]);
    let mut off = 14;
    while (ethertype == 0x8100 || ethertype == 0x88a8) && data.len() >= off + 4 {
        ethertype = u16::from_be_bytes([data[off + 2], data[off + 3]]);
        off += 4;
    }
    let mut p = Packet {
        time: sec as f64 + micros as f64 / 1e6,
        timestamp: format!("{sec}.{micros:06}"),
        dst_mac: mac_str(&data[0..6]),
        src_mac: mac_str(&data[6..12]),
        ethertype: match ethertype {
            0x0800 => "IPv4".to_owned(),
            0x86dd => "IPv6".to_owned(),
            0x0806 => "ARP".to_owned(),
            t => format!("0x{t:04x}"),
        },
        src_ip: None,
        dst_ip: None,
        proto: String::new(),
        src_port: None,
        dst_port: None,
        icmp_type: None,
        tcp_flags: None,
        line: String::new(),
    };
    let ip = &data[off..];
    match ethertype {
        0x0800 if ip.len() >= 20 && ip[0] >> 4 == 4 => {
            let ihl = (ip[0] & 0x0f) as usize * 4;
            p.src_ip = Some(IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap()));
            p.dst_ip = Some(IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()));
            let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
            if first_fragment && ip.len() >= ihl {
                decode_transport(&mut p, ip[9], &ip[ihl..]);
            }
        }
        0x86dd if ip.len() >= 40 && ip[0] >> 4 == 6 => {
            p.src_ip = Some(IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()));
            p.dst_ip = Some(IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap()));
            let (mut next, mut rest) = (ip[6], &ip[40..]);
            // Extension headers: hop-by-hop (MLD reports carry one), routing, destination options, fragment.
            loop {
                match next {
                    0 | 43 | 60 if rest.len() >= 8 => {
                        let len = (rest[1] as usize + 1) * 8;
                        if rest.len() < len {
                            return Some(p);
                        }
                        next = rest[0];
                        rest = &rest[len..];
                    }
                    44 if rest.len() >= 8 => {
                        if u16::from_be_bytes([rest[2], rest[3]]) & 0xfff8 != 0 {
                            return Some(p); // not the first fragment: no transport header
                        }
                        next = rest[0];
                        rest = &rest[8..];
                    }
                    _ => break,
                }
            }
            decode_transport(&mut p, next, rest);
        }
        _ => {}
    }
    Some(p)
}

fn decode_transport(p: &mut Packet, proto: u8, l4: &[u8]) {
    p.proto = match proto {
        1 => "ICMP".to_owned(),
        58 => "ICMP6".to_owned(),
        6 => "TCP".to_owned(),
        17 => "UDP".to_owned(),
        n => format!("proto {n}"),
    };
    match proto {
        1 | 58 if !l4.is_empty() => p.icmp_type = Some(l4[0]),
        6 | 17 if l4.len() >= 4 => {
            p.src_port = Some(u16::from_be_bytes([l4[0], l4[1]]));
            p.dst_port = Some(u16::from_be_bytes([l4[2], l4[3]]));
            if proto == 6 && l4.len() >= 14 {
                p.tcp_flags = Some(l4[13]);
            }
        }
        _ => {}
    }
}
