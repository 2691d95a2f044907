//! The lab's WireGuard server: a wireguard-go interface `wgs<id>` in the server netns that accepts one client
//! peer, the client's wg-quick config that matches it, a hand-made client to prove it without the hook, and the
//! TCP responder on the server's tunnel addresses that writes [`MARKER`] and records who connected.

use super::command::{lab_path, output_with_stdin, run_cmd};
use super::netns::{netns_path, nsenter};
use super::{
    write_file, Lab, CLIENT_TUNNEL_V4, CLIENT_TUNNEL_V6, DNS_SEARCH, DNS_SERVER, MARKER,
    RESPONDER_PORT, SERVER_PORT, SERVER_TUNNEL_V4, SERVER_TUNNEL_V6, SERVER_UNDERLAY,
};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The client's wg-quick config; `Lab::client_config()` gives the one matching the lab's server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub private_key: String,
    pub addresses: Vec<String>,
    /// `DNS =` entries: addresses become nameservers, names become search domains.
    pub dns: Vec<String>,
    pub mtu: Option<u32>,
    /// Extra lines appended to `[Interface]`, verbatim.
    pub extra_interface_lines: Vec<String>,
    pub peer_public_key: String,
    pub endpoint: String,
    pub allowed_ips: Vec<String>,
}

impl ClientConfig {
    pub fn render(&self) -> String {
        let mut s = String::from("[Interface]\n");
        s += &format!("PrivateKey = {}\n", self.private_key);
        s += &format!("Address = {}\n", self.addresses.join(", "));
        if !self.dns.is_empty() {
            s += &format!("DNS = {}\n", self.dns.join(", "));
        }
        if let Some(mtu) = self.mtu {
            s += &format!("MTU = {mtu}\n");
        }
        for line in &self.extra_interface_lines {
            s += line;
            s += "\n";
        }
        s += "\n[Peer]\n";
        s += &format!("PublicKey = {}\n", self.peer_public_key);
        s += &format!("Endpoint = {}\n", self.endpoint);
        s += &format!("AllowedIPs = {}\n", self.allowed_ips.join(", "));
        s
    }
}

impl Lab {
    /// Keys for both ends, the server's wireguard-go in the server netns with the client as its one peer, its
    /// tunnel addresses, and the TCP responder on them.
    pub(super) fn start_server(&mut self) {
        let s = self.server_ns.clone();
        // Keys.
        let server_key = self.genkey();
        self.server_public_key = self.pubkey(&server_key);
        self.client_private_key = self.genkey();
        self.client_public_key = self.pubkey(&self.client_private_key);
        let server_key_file = self.dir.join("server.key");
        write_file(&server_key_file, &server_key, 0o600);

        // WireGuard server.
        let wgs = self.server_if.clone();
        self.start_wireguard_go(&s, &wgs);
        let allowed = format!("{CLIENT_TUNNEL_V4}/32,{CLIENT_TUNNEL_V6}/128");
        let key_file = server_key_file.to_string_lossy().into_owned();
        let port = SERVER_PORT.to_string();
        let client_pub = self.client_public_key.clone();
        self.must_in(
            &s,
            &[
                "wg",
                "set",
                &wgs,
                "private-key",
                &key_file,
                "listen-port",
                &port,
                "peer",
                &client_pub,
                "allowed-ips",
                &allowed,
            ],
        );
        self.must_ip(
            &s,
            &[
                "addr",
                "add",
                &format!("{SERVER_TUNNEL_V4}/24"),
                "dev",
                &wgs,
            ],
        );
        self.must_ip(
            &s,
            &[
                "addr",
                "add",
                &format!("{SERVER_TUNNEL_V6}/64"),
                "dev",
                &wgs,
                "nodad",
            ],
        );
        self.must_ip(&s, &["link", "set", &wgs, "up"]);

        // Responder on the tunnel addresses.
        let addrs: Vec<SocketAddr> = vec![
            format!("{SERVER_TUNNEL_V4}:{RESPONDER_PORT}")
                .parse()
                .unwrap(),
            format!("[{SERVER_TUNNEL_V6}]:{RESPONDER_PORT}")
                .parse()
                .unwrap(),
        ];
        self.responder = Some(Responder::start(&netns_path(&s), addrs));
    }

    /// The client config that matches the lab's server.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            private_key: self.client_private_key.clone(),
            addresses: vec![
                format!("{CLIENT_TUNNEL_V4}/32"),
                format!("{CLIENT_TUNNEL_V6}/128"),
            ],
            dns: vec![DNS_SERVER.to_owned(), DNS_SEARCH.to_owned()],
            mtu: None,
            extra_interface_lines: Vec::new(),
            peer_public_key: self.server_public_key.clone(),
            endpoint: format!("{SERVER_UNDERLAY}:{SERVER_PORT}"),
            allowed_ips: vec!["0.0.0.0/0".to_owned(), "::/0".to_owned()],
        }
    }

    /// A further client of the lab's server, with a key of its own: the server gets it as a peer at
    /// `10.77.0.<host>/32`, and the wg-quick config returned uses that key and address (IPv4 only), for profiles
    /// whose tunnels must not share the lab's one client key (a pool's files).
    pub fn add_client_peer(&self, host: u8) -> ClientConfig {
        assert!(
            (3..=52).contains(&host),
            "10.77.0.{host} is the server's, the lab client's or the DNS address"
        );
        let private_key = self.genkey();
        let public_key = self.pubkey(&private_key);
        let address = format!("10.77.0.{host}/32");
        self.must_in(
            &self.server_ns,
            &[
                "wg",
                "set",
                &self.server_if,
                "peer",
                &public_key,
                "allowed-ips",
                &address,
            ],
        );
        ClientConfig {
            private_key,
            addresses: vec![address],
            allowed_ips: vec!["0.0.0.0/0".to_owned()],
            ..self.client_config()
        }
    }

    /// Starts a wireguard-go client `wgm<id>` in the host netns configured by hand with `wg set` and `ip`
    /// (10.77.0.2/32, fd77::2/128, routes to the tunnel prefixes only).
    pub fn start_manual_client(&self) -> String {
        let h = self.host_ns.clone();
        let name = format!("wgm{}", self.id);
        self.start_wireguard_go(&h, &name);
        let key_file = self.write_file("client.key", &self.client_private_key, 0o600);
        let endpoint = format!("{SERVER_UNDERLAY}:{SERVER_PORT}");
        self.must_in(
            &h,
            &[
                "wg",
                "set",
                &name,
                "private-key",
                &key_file.to_string_lossy(),
                "peer",
                &self.server_public_key,
                "endpoint",
                &endpoint,
                "allowed-ips",
                "10.77.0.0/24,fd77::/64",
            ],
        );
        self.must_ip(
            &h,
            &[
                "addr",
                "add",
                &format!("{CLIENT_TUNNEL_V4}/32"),
                "dev",
                &name,
            ],
        );
        self.must_ip(
            &h,
            &[
                "addr",
                "add",
                &format!("{CLIENT_TUNNEL_V6}/128"),
                "dev",
                &name,
                "nodad",
            ],
        );
        self.must_ip(&h, &["link", "set", &name, "up"]);
        self.must_ip(&h, &["route", "add", "10.77.0.0/24", "dev", &name]);
        self.must_ip(&h, &["-6", "route", "add", "fd77::/64", "dev", &name]);
        name
    }

    /// The addresses of the peers the TCP responder accepted, in order.
    pub fn responder_peer_ips(&self) -> Vec<String> {
        self.responder_peers()
            .iter()
            .map(|p| p.ip().to_string())
            .collect()
    }

    /// Peers the TCP responder accepted, in order.
    pub fn responder_peers(&self) -> Vec<SocketAddr> {
        self.responder
            .as_ref()
            .map(|r| r.hits.lock().unwrap().clone())
            .unwrap_or_default()
    }

    pub(super) fn start_wireguard_go(&self, ns: &str, ifname: &str) {
        let log = File::create(self.dir.join(format!("{ifname}.log"))).unwrap();
        let child = nsenter(ns)
            .args(["wireguard-go", "-f", ifname])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning wireguard-go");
        self.lab_wg_ifs.lock().unwrap().push(ifname.to_owned());
        self.children
            .lock()
            .unwrap()
            .push((format!("wireguard-go {ifname}"), child));
        let sock = Path::new("/var/run/wireguard").join(format!("{ifname}.sock"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            let exited = {
                let mut children = self.children.lock().unwrap();
                let (_, child) = children.last_mut().unwrap();
                child.try_wait().ok().flatten()
            };
            if exited.is_some() || Instant::now() > deadline {
                let log =
                    fs::read_to_string(self.dir.join(format!("{ifname}.log"))).unwrap_or_default();
                panic!("wireguard-go {ifname} in {ns} did not come up ({exited:?}):\n{log}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Not logged: the transcript must never hold a private key.
    pub(super) fn genkey(&self) -> String {
        let out = run_cmd(&["wg", "genkey"]);
        assert!(out.success(), "wg genkey failed: {}", out.stderr);
        out.stdout.trim().to_owned()
    }

    pub(super) fn pubkey(&self, private: &str) -> String {
        let mut cmd = Command::new("wg");
        cmd.env("PATH", lab_path()).arg("pubkey");
        let out = output_with_stdin(cmd, format!("{private}\n").as_bytes(), "wg pubkey");
        out.assert_success("wg pubkey");
        out.stdout.trim().to_owned()
    }
}

pub(super) struct Responder {
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    /// A thread that enters `netns`, listens on `addrs` and answers every connection with [`MARKER`].
    pub(super) fn start(netns: &str, addrs: Vec<SocketAddr>) -> Responder {
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let netns_owned = netns.to_owned();
        let (stop2, hits2) = (stop.clone(), hits.clone());
        let thread = thread::spawn(move || {
            let listeners = match bind_in_netns(&netns_owned, &addrs) {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !stop2.load(Ordering::SeqCst) {
                let mut idle = true;
                for l in &listeners {
                    match l.accept() {
                        Ok((mut stream, peer)) => {
                            idle = false;
                            hits2.lock().unwrap().push(peer);
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                            let _ = stream.write_all(MARKER.as_bytes());
                            let _ = stream.shutdown(std::net::Shutdown::Write);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => {}
                    }
                }
                if idle {
                    thread::sleep(Duration::from_millis(5));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Responder {
                stop,
                hits,
                thread: Some(thread),
            },
            other => {
                stop.store(true, Ordering::SeqCst);
                panic!("TCP responder in {netns} did not start: {other:?}");
            }
        }
    }

    pub(super) fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(super) fn bind_in_netns(netns: &str, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, String> {
    let f = File::open(netns).map_err(|e| format!("open {netns}: {e}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns: {e}"))?;
    addrs
        .iter()
        .map(|a| {
            let l = TcpListener::bind(a).map_err(|e| format!("bind {a}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(l)
        })
        .collect()
}
