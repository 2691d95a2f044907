//! iperf3 through a container's tunnel, for each userspace daemon (issue 16). Included by `container_start.rs`:
//!
//! `WG_BENCH_THROUGHPUT=1 cargo bench --bench container_start`
//!
//! For each daemon (built-in, wireguard-go), WG_BENCH_THROUGHPUT_ROUNDS times (default 1; the daemons in turn,
//! the first another each round): the hook run directly (as `hook_alone` does) makes the tunnel of a stand-in
//! container (a `sleep` in a netns of its own) on a profile of the daemon's own (its own key, a peer of the
//! lab's WireGuard server at 10.77.0.3, .4); `iperf3 -s` listens in the lab's server netns on the server's
//! tunnel address; iperf3's client, in the container's netns, sends TCP through wg0 for
//! WG_BENCH_THROUGHPUT_SECONDS (default 10), then receives (`-R`) as long. For each direction: Gbit/s (what the receiver got), the CPU time (utime + stime, all its
//! threads) the hook's daemon spent per Gbit moved, the same for the lab server's wireguard-go, and at the end
//! the daemon's RSS and PSS. Then poststop, and the lab's leftover checks.
//!
//! Everything runs on this machine: the server end is wireguard-go (the lab's), the same for both daemons,
//! and both iperf3 processes, both WireGuard ends and the kernel's work share its CPUs, so either end can be
//! what limits the rate. Writes `throughput.csv` under `target/bench/` (WG_BENCH_OUT to change it).

use crate::daemons::{self, Daemon, Sleepers};
use crate::lab::{self, Lab, LabProfile};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IPERF_PORT: &str = "5201";
/// The profile of each daemon's tunnel: `throughput-<daemon>`.
const PROFILE: &str = "throughput";

/// One iperf3 run through one daemon's tunnel.
struct Sample {
    daemon: Daemon,
    round: usize,
    /// "upload" (container to server) or "download" (server to container, `-R`).
    direction: &'static str,
    seconds: f64,
    /// What the receiver got, bits / 1e9.
    gbits: f64,
    daemon_cpu: Duration,
    server_cpu: Duration,
    retransmits: u64,
    /// The daemon's memory when both directions are done, KiB.
    end_mem: daemons::Mem,
    mtu: String,
    load1: f64,
}

impl Sample {
    fn gbit_s(&self) -> f64 {
        self.gbits / self.seconds
    }
    fn per_gbit(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() / self.gbits
    }
}

/// The iperf3 server, killed at drop.
struct IperfServer(Child);

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run() {
    let secs: u32 = std::env::var("WG_BENCH_THROUGHPUT_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rounds: usize = std::env::var("WG_BENCH_THROUGHPUT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let start = Instant::now();
    println!(
        "throughput: iperf3 TCP, {secs} s each way, {rounds} round(s), load average at start {}",
        daemons::loadavg()
    );
    let lab = Lab::new("bench-throughput");
    let compared = daemons::compared();
    // Each daemon on a client key of its own (a peer of the lab's server of its own): a server that saw a
    // handshake of gotatun's refuses, for 27 s, one of wireguard-go's with the same key as a replay (gotatun's
    // TAI64N timestamps are 27 s ahead of wireguard-go's and the kernel's: it adds the 37 s of TAI - UTC, they
    // add 10), which would fail a wireguard-go run after a built-in one.
    let policies: Vec<_> = compared
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let config = lab.add_client_peer(3 + i as u8);
            let path = lab.write_file(
                &format!("{PROFILE}-{}.conf", d.name()),
                &config.render(),
                0o600,
            );
            d.write_policy(
                &lab,
                &[LabProfile::new(&format!("{PROFILE}-{}", d.name()), path)],
            )
        })
        .collect();
    let server_wg = server_wireguard_go(&lab);
    let _server = iperf_server(&lab);
    let mut samples = Vec::new();
    for round in 0..rounds {
        for i in 0..compared.len() {
            let d = (round + i) % compared.len();
            samples.extend(daemons::in_host_ns(&lab, || {
                one_tunnel(&lab, compared[d], &policies[d], round, secs, server_wg)
            }));
        }
    }
    samples.sort_by_key(|s| {
        (
            compared.iter().position(|d| *d == s.daemon),
            s.direction == "download",
            s.round,
        )
    });
    print_table(&samples);
    let header = [
        "daemon",
        "direction",
        "round",
        "seconds",
        "gbit_s",
        "gbits",
        "daemon_cpu_s",
        "daemon_cpu_s_per_gbit",
        "server_cpu_s_per_gbit",
        "retransmits",
        "daemon_rss_kib_end",
        "daemon_pss_kib_end",
        "mtu",
        "load1",
    ];
    let rows: Vec<Vec<String>> = samples
        .iter()
        .map(|s| {
            vec![
                s.daemon.name().to_owned(),
                s.direction.to_owned(),
                s.round.to_string(),
                format!("{:.2}", s.seconds),
                format!("{:.3}", s.gbit_s()),
                format!("{:.3}", s.gbits),
                format!("{:.2}", s.daemon_cpu.as_secs_f64()),
                format!("{:.3}", s.per_gbit(s.daemon_cpu)),
                format!("{:.3}", s.per_gbit(s.server_cpu)),
                s.retransmits.to_string(),
                s.end_mem.rss.to_string(),
                s.end_mem.pss.to_string(),
                s.mtu.clone(),
                format!("{:.2}", s.load1),
            ]
        })
        .collect();
    let csv = daemons::write_csv("throughput.csv", &header, &rows);
    println!(
        "wrote {}; load average at the end {}; took {:.0} s",
        csv.display(),
        daemons::loadavg(),
        start.elapsed().as_secs_f64()
    );
}

/// The pid of the lab server's wireguard-go (`wireguard-go -f wgs<id>`, in the server netns).
fn server_wireguard_go(lab: &Lab) -> u32 {
    let found: Vec<u32> = lab::processes_mentioning(&lab.server_if)
        .into_iter()
        .filter(|(_, argv)| argv.starts_with("wireguard-go "))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "the lab server's wireguard-go {}: {found:?}",
        lab.server_if
    );
    found[0]
}

/// `iperf3 -s` in the lab's server netns on the server's tunnel address; returns once it listens.
fn iperf_server(lab: &Lab) -> IperfServer {
    let ns = format!("--net=/var/run/netns/{}", lab.server_ns);
    let child = Command::new("nsenter")
        .args([
            &ns,
            "iperf3",
            "-s",
            "-B",
            lab::SERVER_TUNNEL_V4,
            "-p",
            IPERF_PORT,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 -s (apt-get install iperf3; tests/install-deps.sh)");
    let server = IperfServer(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("nsenter")
            .args([&ns, "ss", "-Hltn", &format!("sport = :{IPERF_PORT}")])
            .output()
            .expect("ss");
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return server;
        }
        assert!(Instant::now() < deadline, "iperf3 -s never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One tunnel of `daemon`: up, iperf3 each way, down.
fn one_tunnel(
    lab: &Lab,
    daemon: Daemon,
    policy: &std::path::Path,
    round: usize,
    secs: u32,
    server_wg: u32,
) -> Vec<Sample> {
    let mut sleepers = Sleepers::new(lab);
    let pid = sleepers.spawn();
    let id = format!("tput{round}-{}-{}", daemon.name(), lab.id);
    lab.track_container_id(&id);
    let profile = format!("{PROFILE}-{}", daemon.name());
    let state = lab.fake_state(&id, pid, &[("wg.enable", "true"), ("wg.profile", &profile)]);
    std::fs::create_dir_all(lab.dir.join(format!("bundle-{id}/rootfs/etc"))).unwrap();
    let run = daemons::run_hook(policy, "create-runtime", &state);
    let daemon_pid = run
        .daemon_pid()
        .unwrap_or_else(|| panic!("no daemon pid in the hook's log:\n{}", run.log));
    let netns = format!("--net=/proc/{pid}/ns/net");
    // The link's MTU as `ip -o link` in its netns shows it (/sys would show the bench's own netns).
    let mtu = Command::new("nsenter")
        .args([&netns, "ip", "-o", "link", "show", "dev", "wg0"])
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let rest = text.split(" mtu ").nth(1)?;
            Some(rest.split(' ').next()?.to_owned())
        })
        .unwrap_or_default();
    // The handshake first, so that neither run times it (a lost initiation is retried only after 5 s).
    let mut pings = 0;
    while !Command::new("nsenter")
        .args([
            &netns,
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            lab::SERVER_TUNNEL_V4,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        pings += 1;
        if pings == 15 {
            let name = daemon_name(lab, daemon_pid);
            panic!(
                "{id}: no answer through the tunnel to 15 pings\n{}",
                diagnose(lab, &netns, &name)
            );
        }
    }
    let mut samples = Vec::new();
    for (direction, reverse) in [("upload", false), ("download", true)] {
        let load1 = daemons::load1();
        let (d0, s0) = (cpu(daemon_pid), cpu(server_wg));
        let result = iperf_client(&netns, secs, reverse).unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                diagnose(lab, &netns, &daemon_name(lab, daemon_pid))
            )
        });
        let (d1, s1) = (cpu(daemon_pid), cpu(server_wg));
        let received = &result["end"]["sum_received"];
        let bytes = received["bytes"]
            .as_f64()
            .expect("iperf3: end.sum_received.bytes");
        let seconds = received["seconds"].as_f64().expect("iperf3: seconds");
        let sample = Sample {
            daemon,
            round,
            direction,
            seconds,
            gbits: bytes * 8.0 / 1e9,
            daemon_cpu: d1.saturating_sub(d0),
            server_cpu: s1.saturating_sub(s0),
            retransmits: result["end"]["sum_sent"]["retransmits"]
                .as_u64()
                .unwrap_or(0),
            end_mem: daemons::Mem::default(),
            mtu: mtu.clone(),
            load1,
        };
        eprintln!(
            "throughput: {} {direction}: {:.2} Gbit/s, daemon {:.2} CPU s/Gbit",
            daemon.name(),
            sample.gbit_s(),
            sample.per_gbit(sample.daemon_cpu)
        );
        samples.push(sample);
    }
    let end_mem = daemons::mem(daemon_pid).expect("the daemon is gone");
    for s in &mut samples {
        s.end_mem = end_mem;
    }
    daemons::run_hook(policy, "poststop", &state);
    sleepers.stop(pid);
    lab.assert_nothing_left(&id);
    samples
}

fn cpu(pid: u32) -> Duration {
    daemons::cpu_time(pid).unwrap_or_else(|| panic!("process {pid} is gone"))
}

/// `iperf3 -c` from the container's netns (`netns`: nsenter's `--net=...`) to the lab's server through the
/// tunnel, its JSON report.
fn iperf_client(netns: &str, secs: u32, reverse: bool) -> Result<serde_json::Value, String> {
    let secs_arg = secs.to_string();
    let bound = (secs + 30).to_string();
    let mut argv = vec![
        "timeout",
        &bound,
        "nsenter",
        netns,
        "iperf3",
        "-c",
        lab::SERVER_TUNNEL_V4,
        "-p",
        IPERF_PORT,
        "-t",
        &secs_arg,
        "--connect-timeout",
        "3000",
        "-J",
    ];
    if reverse {
        argv.push("-R");
    }
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .expect("iperf3 -c");
    let text = String::from_utf8_lossy(&out.stdout);
    let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    match json {
        // iperf3 -J may exit 0 with only an "error" in its report.
        Some(json)
            if out.status.success()
                && json.get("error").is_none()
                && json["end"]["sum_received"]["bytes"].is_u64() =>
        {
            Ok(json)
        }
        _ => Err(format!(
            "{}: {}\n{text}\n{}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// The tunnel name (`wgo...`) of the hook's daemon `pid`.
fn daemon_name(lab: &Lab, pid: u32) -> String {
    lab.hook_daemons()
        .into_iter()
        .find(|(p, _, _)| *p == pid)
        .map(|(_, _, name)| name)
        .unwrap_or_default()
}

/// What the two ends of a tunnel that iperf3 could not use show: both `wg show`, the container's addresses
/// and routes.
fn diagnose(lab: &Lab, netns: &str, daemon_name: &str) -> String {
    let show = |argv: &[&str]| -> String {
        let out = Command::new(argv[0]).args(&argv[1..]).output();
        match out {
            Ok(o) => format!(
                "$ {}\n{}{}",
                argv.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("$ {}: {e}\n", argv.join(" ")),
        }
    };
    let server_ns = format!("--net=/var/run/netns/{}", lab.server_ns);
    [
        show(&["nsenter", &server_ns, "wg", "show", &lab.server_if]),
        show(&["wg", "show", daemon_name]),
        show(&["nsenter", netns, "ip", "addr"]),
        show(&["nsenter", netns, "ip", "rule"]),
        show(&["nsenter", netns, "ip", "route", "show", "table", "all"]),
    ]
    .concat()
}

fn print_table(samples: &[Sample]) {
    println!(
        "iperf3 TCP through the container's wg0 to the lab's server (upload: container to server; download: -R):"
    );
    println!(
        "  {:<13} {:<9} {:>5} {:>11} {:>16} {:>16} {:>8} {:>11} {:>11} {:>6}",
        "daemon",
        "direction",
        "round",
        "Gbit/s",
        "daemon CPU/Gbit",
        "server CPU/Gbit",
        "retrans",
        "daemon RSS",
        "daemon PSS",
        "load1"
    );
    for s in samples {
        println!(
            "  {:<13} {:<9} {:>5} {:>11.2} {:>14.2} s {:>14.2} s {:>8} {:>7.1} MiB {:>7.1} MiB {:>6.2}",
            s.daemon.name(),
            s.direction,
            s.round,
            s.gbit_s(),
            s.per_gbit(s.daemon_cpu),
            s.per_gbit(s.server_cpu),
            s.retransmits,
            daemons::mib(s.end_mem.rss as f64),
            daemons::mib(s.end_mem.pss as f64),
            s.load1
        );
    }
    if let Some(s) = samples.first() {
        println!("  wg0 MTU {}", s.mtu);
    }
    println!(
        "  the server end is the lab's own wireguard-go in its server netns, the same for both daemons; both \
         iperf3 processes and both WireGuard ends share this machine's {} CPUs, so the server end (its CPU per \
         Gbit is beside ours) can be what limits the rate for both",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
}
