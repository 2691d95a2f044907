//! A Private Internet Access compatible HTTPS server for the lab (the protocol: ARCHITECTURE.md, "Private
//! Internet Access").
//!
//! [`PiaLab::start`] puts the PIA addresses on `lo` of the lab's server netns, routes 198.18.1.0/24 from the
//! host netns to it, and listens there (sockets created by a thread that entered the server netns, served
//! from ordinary threads):
//! - 198.18.1.1:443, "www": `POST /api/client/v2/token`, `POST /api/client/v2/dedicated_ip`,
//!   `GET /vpninfo/servers/v6` (one line of JSON, a blank line, the base64 RSA-SHA256 signature of that line);
//! - every wg server's ip:1337: `GET /addKey` (registers the key on the lab's WireGuard server for real, with
//!   `wg set`, so the client then reaches the lab's responder through the tunnel);
//! - every meta server's ip:443: `POST /api/client/v2/token`;
//! - [`PIA_VIP`]:19999, reachable only through the tunnel: `GET /getSignature`, `GET /bindPort`, with the
//!   certificate chosen by SNI (the region's wg cn).
//!
//! Certificates come from rcgen at start: a lab CA signs every certificate presented; the wg, meta and DIP
//! servers' carry only the legacy subject CN (no subjectAltName), like PIA's; www's carries the IP SAN
//! 198.18.1.1. [`PiaBehaviour`] makes the server misbehave on request, [`PiaStats`] counts what it was asked.
//!
//! HTTP is a minimal HTTP/1.1: one request per connection (`Connection: close`), Content-Length bodies.

use super::command::run_argv;
use super::netns::in_netns;
use super::{
    bind_in_netns, netns_path, run_cmd, toml_str, write_file, Lab, LabProfile, Policy, DNS_SERVER,
    SERVER_PORT,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, ServerConnection};
use rustls::sign::CertifiedKey;
use rustls::StreamOwned;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

pub const PIA_USERNAME: &str = "p1234567";
/// Distinctive, so tests can grep logs and files for it.
pub const PIA_PASSWORD: &str = "lab-secret-Pa55word";
pub const PIA_DIP_TOKEN: &str = "DIPlabtoken0123456789abcdef";
/// The token, dedicated_ip and server list endpoints (port 443).
pub const PIA_WWW_IP: &str = "198.18.1.1";
/// The port getSignature hands out unless [`PiaBehaviour::pf_port`] says otherwise.
pub const PIA_PF_PORT: u16 = 47001;
/// `server_vip` of every addKey answer: the lab's `SERVER_TUNNEL_V4`, where the port-forwarding API listens.
pub const PIA_VIP: &str = "10.77.0.1";
/// The addKey port of every wg server.
pub const PIA_WG_API_PORT: u16 = 1337;
/// The port-forwarding API's port on [`PIA_VIP`].
pub const PIA_PF_API_PORT: u16 = 19999;

/// Where the dedicated IP's server lives, and its region.
const DIP_IP: &str = "198.18.1.13";
const DIP_CN: &str = "labdip403";
const DIP_REGION: &str = "lab_a";
/// The lab CA's subject CN.
const CA_NAME: &str = "Lab Private Internet Access CA";
/// Default lifetime of a port-forwarding signature (PIA's are about two months).
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(60 * 24 * 3600);
/// How long one socket read may block before the connection thread looks at the stop flag again.
const POLL: Duration = Duration::from_millis(100);
/// How long a client may take to send its whole request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long `stop` waits for connection threads to end.
const STOP_WAIT: Duration = Duration::from_secs(3);
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;

/// What one request asked for (the keys of [`PiaBehaviour::hang`] and [`PiaBehaviour::malformed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PiaEndpoint {
    /// `POST /api/client/v2/token` on www.
    Token,
    /// `POST /api/client/v2/token` on a meta server.
    MetaToken,
    /// `GET /vpninfo/servers/v6` on www.
    ServerList,
    /// `POST /api/client/v2/dedicated_ip` on www.
    DedicatedIp,
    /// `GET /addKey` on a wg server (the DIP server included).
    AddKey,
    /// `GET /getSignature` on the VIP.
    GetSignature,
    /// `GET /bindPort` on the VIP.
    BindPort,
}

/// One region of the server list.
#[derive(Clone, Debug)]
pub struct PiaRegion {
    pub id: String,
    pub wg_ip: String,
    pub wg_cn: String,
    pub meta_ip: String,
    pub meta_cn: String,
    pub port_forward: bool,
    /// Listed as offline; nothing listens on its addresses (they are local, so connections are refused).
    pub offline: bool,
}

/// How the server misbehaves; change it any time with [`PiaLab::set_behaviour`].
#[derive(Default, Clone, Debug)]
pub struct PiaBehaviour {
    /// Accept and read the request, then never answer (until the server stops).
    pub hang: HashSet<PiaEndpoint>,
    /// Answer 200 with truncated JSON (the server list: a truncated first line, correctly signed).
    pub malformed: HashSet<PiaEndpoint>,
    /// addKey on these CNs answers `{"status":"ERROR","message":...}`.
    pub fail_add_key_cns: HashSet<String>,
    /// The server with this CN presents a CN-only certificate from the lab CA for `evil-<cn>`; [`PIA_WWW_IP`]
    /// here makes www present a certificate for the IP 198.18.1.2 instead.
    pub wrong_cert_cn: HashSet<String>,
    /// addKey answers a `peer_pubkey` that is not the one sent (the sent key is registered all the same).
    pub wrong_peer_pubkey: bool,
    /// The server list's signature does not verify (it signs something else).
    pub bad_list_signature: bool,
    /// The port getSignature returns (default [`PIA_PF_PORT`]).
    pub pf_port: Option<u16>,
    /// `expires_at` = now + this (default 60 days).
    pub signature_lifetime_secs: Option<u64>,
    /// addKey's `dns_servers` (default [`DNS_SERVER`]).
    pub dns_server: Option<String>,
}

/// What the server was asked. The counters count every request (also the hung ones); `add_key` holds every
/// addKey that got an answer, `registered` every key added to the lab's WireGuard server.
#[derive(Default, Clone, Debug)]
pub struct PiaStats {
    pub token_requests: usize,
    pub meta_token_requests: usize,
    pub list_requests: usize,
    pub dedicated_ip_requests: usize,
    /// (cn, answered OK).
    pub add_key: Vec<(String, bool)>,
    /// (pubkey base64, peer_ip).
    pub registered: Vec<(String, String)>,
    pub get_signature: usize,
    /// The port of every successful bindPort (from the decoded payload).
    pub bind_port: Vec<u16>,
    /// addKey/getSignature refused with "Login failed!" (unknown or expired token, wrong DIP credentials).
    pub login_failed: usize,
}

/// The running PIA server of one lab; stopped by [`PiaLab::stop`] or on drop.
pub struct PiaLab {
    shared: Arc<Shared>,
    regions: Vec<PiaRegion>,
    ca_path: PathBuf,
    other_ca_path: PathBuf,
    regions_key_path: PathBuf,
    other_regions_key_path: PathBuf,
    acceptor: Option<JoinHandle<()>>,
}

impl PiaLab {
    /// Starts everything for `lab`; panics with a clear message if setup fails.
    pub fn start(lab: &Lab) -> PiaLab {
        let regions = lab_regions();

        // Addresses: every PIA address on the server netns's lo, routed to from the host netns.
        let mut addrs: Vec<&str> = vec![PIA_WWW_IP, DIP_IP];
        for r in &regions {
            addrs.push(&r.wg_ip);
            addrs.push(&r.meta_ip);
        }
        for a in &addrs {
            lab.must_ip(
                &lab.server_ns,
                &["addr", "add", &format!("{a}/32"), "dev", "lo"],
            );
        }
        lab.must_ip(
            &lab.host_ns,
            &[
                "route",
                "add",
                "198.18.1.0/24",
                "via",
                super::SERVER_UNDERLAY,
            ],
        );

        // Keys and certificates.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (lab_ca, certs) = make_certs(&regions, &provider)
            .unwrap_or_else(|e| panic!("PIA lab: making certificates: {e}"));
        let other_ca = make_other_ca().unwrap_or_else(|e| panic!("PIA lab: other CA: {e}"));
        let ca_path = lab.dir.join("pia-ca.pem");
        let other_ca_path = lab.dir.join("pia-other-ca.pem");
        write_file(&ca_path, &lab_ca, 0o644);
        write_file(&other_ca_path, &other_ca, 0o644);
        let (list_key, regions_key_path) = rsa_key(lab, "pia-regions");
        let (_, other_regions_key_path) = rsa_key(lab, "pia-other-regions");

        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            behaviour: Mutex::new(PiaBehaviour::default()),
            state: Mutex::new(State::default()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            certs,
            list_key,
            rng: SystemRandom::new(),
            server_ns: lab.server_ns.clone(),
            server_if: lab.server_if.clone(),
            server_public_key: lab.server_public_key.clone(),
            regions: regions.clone(),
        });

        // Listeners, created in the server netns by a thread of their own.
        let mut roles: Vec<(SocketAddr, Role)> = vec![(sock(PIA_WWW_IP, 443), Role::Www)];
        for r in regions.iter().filter(|r| !r.offline) {
            roles.push((
                sock(&r.wg_ip, PIA_WG_API_PORT),
                Role::Wg {
                    cn: r.wg_cn.clone(),
                    ip: r.wg_ip.clone(),
                    dip: false,
                },
            ));
            roles.push((
                sock(&r.meta_ip, 443),
                Role::Meta {
                    cn: r.meta_cn.clone(),
                },
            ));
        }
        roles.push((
            sock(DIP_IP, PIA_WG_API_PORT),
            Role::Wg {
                cn: DIP_CN.to_owned(),
                ip: DIP_IP.to_owned(),
                dip: true,
            },
        ));
        roles.push((sock(PIA_VIP, PIA_PF_API_PORT), Role::PortForward));
        let addrs: Vec<SocketAddr> = roles.iter().map(|(a, _)| *a).collect();
        let ns = netns_path(&lab.server_ns);
        let listeners = thread::spawn(move || bind_in_netns(&ns, &addrs))
            .join()
            .expect("PIA lab: the binding thread panicked")
            .unwrap_or_else(|e| panic!("PIA lab: listening in {}: {e}", lab.server_ns));

        let mut served = Vec::new();
        for ((_, role), listener) in roles.into_iter().zip(listeners) {
            let config = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("PIA lab: TLS versions")
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(CertPick {
                    role: role.clone(),
                    shared: shared.clone(),
                }));
            served.push((listener, role, Arc::new(config)));
        }
        let s = shared.clone();
        let (tx, rx) = mpsc::channel::<()>();
        let acceptor = thread::Builder::new()
            .name("pia-accept".into())
            .spawn(move || {
                let _ = tx.send(());
                accept_loop(s, served)
            })
            .expect("PIA lab: spawning the acceptor");
        rx.recv_timeout(Duration::from_secs(5))
            .expect("PIA lab: the acceptor did not start");

        PiaLab {
            shared,
            regions,
            ca_path,
            other_ca_path,
            regions_key_path,
            other_regions_key_path,
            acceptor: Some(acceptor),
        }
    }

    pub fn regions(&self) -> &[PiaRegion] {
        &self.regions
    }

    /// PEM of the lab CA that signs every certificate the server presents.
    pub fn ca_path(&self) -> PathBuf {
        self.ca_path.clone()
    }

    /// PEM of another CA that signed nothing the server presents.
    pub fn other_ca_path(&self) -> PathBuf {
        self.other_ca_path.clone()
    }

    /// PEM (`BEGIN PUBLIC KEY`, SPKI) of the RSA key that verifies the server list.
    pub fn regions_key_path(&self) -> PathBuf {
        self.regions_key_path.clone()
    }

    /// PEM (SPKI) of an unrelated RSA public key.
    pub fn other_regions_key_path(&self) -> PathBuf {
        self.other_regions_key_path.clone()
    }

    pub fn token_url(&self) -> String {
        format!("https://{PIA_WWW_IP}/api/client/v2/token")
    }

    pub fn server_list_url(&self) -> String {
        format!("https://{PIA_WWW_IP}/vpninfo/servers/v6")
    }

    pub fn dedicated_ip_url(&self) -> String {
        format!("https://{PIA_WWW_IP}/api/client/v2/dedicated_ip")
    }

    /// `lab`'s policy with a default profile `pia` pointed at this server, `extra` (key, raw TOML value text)
    /// added to it: credentials `<lab>/pia.cred` (mode 0600, [`PIA_USERNAME`] and [`PIA_PASSWORD`], written
    /// now), `ca` and `api_ca` the lab CA, `regions_key`, the three URLs, and `regions = ["lab_a", "lab_b"]`
    /// unless `extra` names `regions`; `wg.profile` and `wg.region` allowed as annotations.
    /// A start's registration on its first try: one token, one list, one addKey (on `cn`, answered OK), one
    /// key added to the lab's server; `output` (the container's) shows wg0 with that address, and the
    /// responder saw it. Returns the address.
    #[track_caller]
    pub fn assert_registered_on_first_try(&self, lab: &Lab, cn: &str, output: &str) -> String {
        let stats = self.stats();
        assert_eq!(
            stats.add_key,
            [(cn.to_owned(), true)],
            "one addKey, on {cn}\n{stats:?}\n{output}"
        );
        assert_eq!(
            (stats.token_requests, stats.list_requests),
            (1, 1),
            "{stats:?}"
        );
        assert_eq!(stats.registered.len(), 1, "one registered key\n{stats:?}");
        let peer_ip = stats.registered[0].1.clone();
        assert!(
            output.contains(&format!("inet {peer_ip}/32")),
            "wg0 carries the registered peer_ip {peer_ip}\n{output}"
        );
        let peers = lab.responder_peer_ips();
        assert_eq!(
            peers,
            std::slice::from_ref(&peer_ip),
            "the server saw the registered address"
        );
        peer_ip
    }

    pub fn policy(&self, lab: &Lab, extra: &[(&str, &str)]) -> Policy {
        let credentials = lab.write_file(
            "pia.cred",
            &format!(
                "username = {}\npassword = {}\n",
                toml_str(PIA_USERNAME),
                toml_str(PIA_PASSWORD)
            ),
            0o600,
        );
        let path = |p: &std::path::Path| toml_str(&p.to_string_lossy());
        let mut profile = LabProfile::provider("pia", "pia")
            .with("credentials", &path(&credentials))
            .with("ca", &path(&self.ca_path()))
            .with("api_ca", &path(&self.ca_path()))
            .with("regions_key", &path(&self.regions_key_path()))
            .with("token_url", &toml_str(&self.token_url()))
            .with("server_list_url", &toml_str(&self.server_list_url()))
            .with("dedicated_ip_url", &toml_str(&self.dedicated_ip_url()));
        let mut has_regions = false;
        for (key, value) in extra {
            has_regions |= *key == "regions";
            profile = profile.with(key, value);
        }
        if !has_regions {
            profile = profile.with("regions", "[\"lab_a\", \"lab_b\"]");
        }
        let mut policy = lab.policy();
        policy.default_profile = "pia".into();
        policy.allowed_annotations = vec!["wg.profile".into(), "wg.region".into()];
        policy.profiles.push(profile);
        policy
    }

    /// (ip, cn) of the dedicated IP's server (region `lab_a`).
    pub fn dip_server(&self) -> (String, String) {
        (DIP_IP.to_owned(), DIP_CN.to_owned())
    }

    pub fn set_behaviour(&self, f: impl FnOnce(&mut PiaBehaviour)) {
        f(&mut self.shared.behaviour.lock().unwrap());
    }

    /// Every token issued so far becomes invalid (addKey and getSignature then answer "Login failed!").
    pub fn expire_tokens(&self) {
        let mut st = self.shared.state.lock().unwrap();
        let valid: Vec<String> = st.valid_tokens.drain().collect();
        st.expired_tokens.extend(valid);
    }

    /// Every token issued so far, valid or expired, in issue order (to look for them where they must not be).
    pub fn tokens_issued(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().issued.clone()
    }

    pub fn stats(&self) -> PiaStats {
        self.shared.state.lock().unwrap().stats.clone()
    }

    /// Stops listening and ends every connection (hung ones included); returns within a few seconds.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for s in self.shared.conns.lock().unwrap().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let deadline = Instant::now() + STOP_WAIT;
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let left = self.shared.active.load(Ordering::SeqCst);
        if left > 0 {
            eprintln!("PIA lab: {left} connection thread(s) still running after stop");
        }
    }

    /// A fresh WireGuard key pair (private, public), base64, for a hand-made client.
    pub fn keypair(lab: &Lab) -> (String, String) {
        let private = lab.genkey();
        let public = lab.pubkey(&private);
        (private, public)
    }

    /// A hand-made client for an addKey answer (to prove the lab without the hook): wireguard-go `wgp<id>` in
    /// the lab's host netns with `private_key`, address `peer_ip`/32, peer `server_key` at
    /// `server_ip:server_port`, a route to 10.77.0.0/24 only. Returns its name; it goes with the lab.
    pub fn start_manual_client(&self, lab: &Lab, private_key: &str, answer: &Value) -> String {
        let field = |k: &str| {
            answer[k]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("addKey answer without {k}: {answer}"))
        };
        let port = answer["server_port"]
            .as_u64()
            .unwrap_or_else(|| panic!("addKey answer without server_port: {answer}"));
        let h = lab.host_ns.clone();
        let name = format!("wgp{}", lab.id);
        lab.start_wireguard_go(&h, &name);
        let key_file = lab.write_file(&format!("{name}.key"), private_key, 0o600);
        let endpoint = format!("{}:{port}", field("server_ip"));
        lab.must_in(
            &h,
            &[
                "wg",
                "set",
                &name,
                "private-key",
                &key_file.to_string_lossy(),
                "peer",
                &field("server_key"),
                "endpoint",
                &endpoint,
                "allowed-ips",
                "10.77.0.0/24",
            ],
        );
        let addr = format!("{}/32", field("peer_ip"));
        lab.must_ip(&h, &["addr", "add", &addr, "dev", &name]);
        lab.must_ip(&h, &["link", "set", &name, "up"]);
        lab.must_ip(&h, &["route", "add", "10.77.0.0/24", "dev", &name]);
        name
    }
}

impl Drop for PiaLab {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lab_regions() -> Vec<PiaRegion> {
    let region = |id: &str, wg: (&str, &str), meta: (&str, &str), pf: bool, off: bool| PiaRegion {
        id: id.to_owned(),
        wg_ip: wg.0.to_owned(),
        wg_cn: wg.1.to_owned(),
        meta_ip: meta.0.to_owned(),
        meta_cn: meta.1.to_owned(),
        port_forward: pf,
        offline: off,
    };
    vec![
        region(
            "lab_a",
            ("198.18.1.11", "laba401"),
            ("198.18.1.21", "labameta"),
            true,
            false,
        ),
        region(
            "lab_b",
            ("198.18.1.12", "labb402"),
            ("198.18.1.22", "labbmeta"),
            true,
            false,
        ),
        region(
            "lab_off",
            ("198.18.1.14", "laboff9"),
            ("198.18.1.24", "laboffmeta"),
            false,
            true,
        ),
    ]
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

// ----- shared state --------------------------------------------------------------------------------------------

struct Shared {
    stop: AtomicBool,
    behaviour: Mutex<PiaBehaviour>,
    state: Mutex<State>,
    /// A clone of every open connection's socket, to shut them down at stop.
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    /// Connection threads running.
    active: AtomicUsize,
    certs: Certs,
    list_key: RsaKeyPair,
    rng: SystemRandom,
    server_ns: String,
    server_if: String,
    server_public_key: String,
    regions: Vec<PiaRegion>,
}

#[derive(Default)]
struct State {
    valid_tokens: HashSet<String>,
    expired_tokens: HashSet<String>,
    issued: Vec<String>,
    /// payload -> (signature, port, expires_at) of every getSignature answer.
    signatures: HashMap<String, (String, u16, SystemTime)>,
    /// Keys registered so far (peer addresses are never reused).
    registrations: u32,
    stats: PiaStats,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn random_bytes(&self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.rng.fill(&mut v).expect("system RNG");
        v
    }

    fn token_valid(&self, token: &str) -> bool {
        self.state.lock().unwrap().valid_tokens.contains(token)
    }
}

/// What a listener serves.
#[derive(Clone, Debug)]
enum Role {
    Www,
    Meta { cn: String },
    Wg { cn: String, ip: String, dip: bool },
    PortForward,
}

// ----- certificates --------------------------------------------------------------------------------------------

/// (right, wrong) certified key per CN, and www's pair.
struct Certs {
    by_cn: HashMap<String, (Arc<CertifiedKey>, Arc<CertifiedKey>)>,
    www: (Arc<CertifiedKey>, Arc<CertifiedKey>),
    /// The PF listener's choice when the SNI names no server we know.
    default_cn: String,
}

/// Picks the certificate at handshake time, so [`PiaBehaviour::wrong_cert_cn`] takes effect at once.
struct CertPick {
    role: Role,
    shared: Arc<Shared>,
}

impl fmt::Debug for CertPick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertPick({:?})", self.role)
    }
}

impl ResolvesServerCert for CertPick {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = &self.shared.certs;
        let behaviour = self.shared.behaviour.lock().unwrap();
        let pick = |cn: &str| {
            let (right, wrong) = certs.by_cn.get(cn)?;
            Some(if behaviour.wrong_cert_cn.contains(cn) {
                wrong.clone()
            } else {
                right.clone()
            })
        };
        match &self.role {
            Role::Www => Some(if behaviour.wrong_cert_cn.contains(PIA_WWW_IP) {
                certs.www.1.clone()
            } else {
                certs.www.0.clone()
            }),
            Role::Meta { cn } | Role::Wg { cn, .. } => pick(cn),
            Role::PortForward => hello
                .server_name()
                .and_then(&pick)
                .or_else(|| pick(&certs.default_cn)),
        }
    }
}

fn dn(cn: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    dn
}

fn ca_params(cn: &str) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "Private Internet Access");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn make_other_ca() -> Result<String, rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    Ok(ca_params("Lab Other CA").self_signed(&key)?.pem())
}

/// The lab CA's PEM and every server's certificates, signed by it.
fn make_certs(regions: &[PiaRegion], provider: &CryptoProvider) -> Result<(String, Certs), String> {
    let e = |e: rcgen::Error| e.to_string();
    let ca = rcgen::CertifiedIssuer::self_signed(
        ca_params(CA_NAME),
        rcgen::KeyPair::generate().map_err(e)?,
    )
    .map_err(e)?;
    // A leaf: subject CN `cn` and nothing else, or (with `ip`) an IP SAN.
    let leaf = |cn: &str, ip: Option<&str>| -> Result<Arc<CertifiedKey>, String> {
        let mut p =
            rcgen::CertificateParams::new(ip.map(str::to_owned).into_iter().collect::<Vec<_>>())
                .map_err(e)?;
        p.distinguished_name = dn(cn);
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().map_err(e)?;
        let cert = p.signed_by(&key, &ca).map_err(e)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        CertifiedKey::from_der(
            vec![CertificateDer::from(cert.der().to_vec())],
            der,
            provider,
        )
        .map(Arc::new)
        .map_err(|e| e.to_string())
    };
    let mut cns: Vec<&str> = vec![DIP_CN];
    for r in regions {
        cns.push(&r.wg_cn);
        cns.push(&r.meta_cn);
    }
    let mut by_cn = HashMap::new();
    for cn in cns {
        by_cn.insert(
            cn.to_owned(),
            (leaf(cn, None)?, leaf(&format!("evil-{cn}"), None)?),
        );
    }
    let www = (
        leaf(PIA_WWW_IP, Some(PIA_WWW_IP))?,
        leaf("198.18.1.2", Some("198.18.1.2"))?,
    );
    Ok((
        ca.pem(),
        Certs {
            by_cn,
            www,
            default_cn: regions[0].wg_cn.clone(),
        },
    ))
}

/// A 2048-bit RSA key from openssl: the key pair, and the path of its public half (PEM SPKI) in the lab dir.
fn rsa_key(lab: &Lab, name: &str) -> (RsaKeyPair, PathBuf) {
    let private = lab.dir.join(format!("{name}.key"));
    let public = lab.dir.join(format!("{name}.pub.pem"));
    let (privs, pubs) = (
        private.to_string_lossy().into_owned(),
        public.to_string_lossy().into_owned(),
    );
    run_cmd(&[
        "openssl",
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &privs,
    ])
    .assert_success("PIA lab: openssl genpkey");
    run_cmd(&["openssl", "pkey", "-in", &privs, "-pubout", "-out", &pubs])
        .assert_success("PIA lab: openssl pkey -pubout");
    let pem = fs::read_to_string(&private).unwrap_or_else(|e| panic!("reading {privs}: {e}"));
    let der =
        pem_body(&pem, "PRIVATE KEY").unwrap_or_else(|| panic!("{privs}: no PKCS#8 PEM block"));
    let key = RsaKeyPair::from_pkcs8(&der).unwrap_or_else(|e| panic!("{privs}: {e}"));
    (key, public)
}

/// The DER inside the first `-----BEGIN <label>-----` block of `pem`.
pub fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    B64.decode(b64).ok()
}

// ----- connections ---------------------------------------------------------------------------------------------

fn accept_loop(shared: Arc<Shared>, served: Vec<(TcpListener, Role, Arc<ServerConfig>)>) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopping() {
        let mut idle = true;
        for (listener, role, config) in &served {
            match listener.accept() {
                Ok((stream, _peer)) => {
                    idle = false;
                    let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
                    let Ok(clone) = stream.try_clone() else {
                        continue;
                    };
                    shared.conns.lock().unwrap().insert(id, clone);
                    shared.active.fetch_add(1, Ordering::SeqCst);
                    let (s, role, config) = (shared.clone(), role.clone(), config.clone());
                    let spawned = thread::Builder::new()
                        .name("pia-conn".into())
                        .spawn(move || {
                            let _guard = ConnGuard {
                                shared: s.clone(),
                                id,
                            };
                            serve_connection(&s, &role, config, stream);
                        });
                    match spawned {
                        Ok(t) => threads.push(t),
                        Err(e) => {
                            eprintln!("PIA lab: spawning a connection thread: {e}");
                            shared.conns.lock().unwrap().remove(&id);
                            shared.active.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {}
            }
        }
        threads.retain(|t| !t.is_finished());
        if idle {
            thread::sleep(Duration::from_millis(5));
        }
    }
    // The listeners close here; connection threads end on their own (see `PiaLab::stop`).
}

/// Unregisters a connection when its thread ends, however it ends.
struct ConnGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.conns.lock().unwrap().remove(&self.id);
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

fn serve_connection(shared: &Shared, role: &Role, config: Arc<ServerConfig>, tcp: TcpStream) {
    if shared.stopping() {
        return;
    }
    let _ = tcp.set_nonblocking(false);
    let _ = tcp.set_read_timeout(Some(POLL));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, tcp);
    let Some(req) = read_request(shared, &mut tls) else {
        return;
    };
    let endpoint = endpoint_of(role, &req);
    if let Some(ep) = endpoint {
        count_request(shared, ep);
        if shared.behaviour.lock().unwrap().hang.contains(&ep) {
            while !shared.stopping() {
                thread::sleep(Duration::from_millis(20));
            }
            return;
        }
    }
    let (code, mut body, content_type) = match (endpoint, role) {
        (Some(PiaEndpoint::Token), _) | (Some(PiaEndpoint::MetaToken), _) => {
            with_json(token(shared, &req))
        }
        (Some(PiaEndpoint::ServerList), _) => (200, server_list(shared), "text/plain"),
        (Some(PiaEndpoint::DedicatedIp), _) => with_json(dedicated_ip(shared, &req)),
        (Some(PiaEndpoint::AddKey), Role::Wg { cn, ip, dip }) => {
            with_json(add_key(shared, &req, cn, ip, *dip))
        }
        (Some(PiaEndpoint::GetSignature), _) => with_json(get_signature(shared, &req)),
        (Some(PiaEndpoint::BindPort), _) => with_json(bind_port(shared, &req)),
        _ => with_json((404, json!({"message": "not found"}))),
    };
    if let Some(ep) = endpoint {
        if ep != PiaEndpoint::ServerList && shared.behaviour.lock().unwrap().malformed.contains(&ep)
        {
            body.truncate(body.len() / 2);
        }
    }
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(code),
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    if tls.write_all(&out).is_ok() && tls.flush().is_ok() {
        tls.conn.send_close_notify();
        let _ = tls.flush();
    }
    let _ = tls.sock.shutdown(Shutdown::Write);
}

fn with_json((code, v): (u16, Value)) -> (u16, String, &'static str) {
    (code, v.to_string(), "application/json")
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

fn endpoint_of(role: &Role, req: &Request) -> Option<PiaEndpoint> {
    let m = req.method.as_str();
    match (role, m, req.path.as_str()) {
        (Role::Www, "POST", "/api/client/v2/token") => Some(PiaEndpoint::Token),
        (Role::Www, "POST", "/api/client/v2/dedicated_ip") => Some(PiaEndpoint::DedicatedIp),
        (Role::Www, "GET", "/vpninfo/servers/v6") => Some(PiaEndpoint::ServerList),
        (Role::Meta { .. }, "POST", "/api/client/v2/token") => Some(PiaEndpoint::MetaToken),
        (Role::Wg { .. }, "GET", "/addKey") => Some(PiaEndpoint::AddKey),
        (Role::PortForward, "GET", "/getSignature") => Some(PiaEndpoint::GetSignature),
        (Role::PortForward, "GET", "/bindPort") => Some(PiaEndpoint::BindPort),
        _ => None,
    }
}

fn count_request(shared: &Shared, ep: PiaEndpoint) {
    let mut st = shared.state.lock().unwrap();
    let s = &mut st.stats;
    match ep {
        PiaEndpoint::Token => s.token_requests += 1,
        PiaEndpoint::MetaToken => s.meta_token_requests += 1,
        PiaEndpoint::ServerList => s.list_requests += 1,
        PiaEndpoint::DedicatedIp => s.dedicated_ip_requests += 1,
        PiaEndpoint::GetSignature => s.get_signature += 1,
        PiaEndpoint::AddKey | PiaEndpoint::BindPort => {}
    }
}

// ----- HTTP ----------------------------------------------------------------------------------------------------

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn query(&self, name: &str) -> Option<&str> {
        param(&self.query, name)
    }

    /// The body as `application/x-www-form-urlencoded`.
    fn form(&self) -> Vec<(String, String)> {
        parse_urlencoded(&String::from_utf8_lossy(&self.body))
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Reads one request (TLS handshake included), giving up at stop, after [`REQUEST_DEADLINE`], on EOF, on
/// garbage or on a TLS error.
fn read_request(shared: &Shared, tls: &mut Tls) -> Option<Request> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut read_more = |buf: &mut Vec<u8>| -> Option<()> {
        loop {
            if shared.stopping() || Instant::now() > deadline {
                return None;
            }
            match tls.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return Some(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return None,
            }
        }
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        read_more(&mut buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = match param(&headers, "content-length") {
        Some(v) => v.parse().ok()?,
        None => 0,
    };
    if len > MAX_BODY {
        return None;
    }
    let body_start = head_end + 4;
    while buf.len() < body_start + len {
        read_more(&mut buf)?;
    }
    let body = buf[body_start..body_start + len].to_vec();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), parse_urlencoded(q)),
        None => (target, Vec::new()),
    };
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

/// `a=b&c=d`, percent-decoded, `+` as space (as Go's `url.ParseQuery` and PHP do).
fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hexval = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hexval(b[i + 1]), hexval(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ----- the endpoints -------------------------------------------------------------------------------------------

fn token(shared: &Shared, req: &Request) -> (u16, Value) {
    let form = req.form();
    if param(&form, "username") != Some(PIA_USERNAME)
        || param(&form, "password") != Some(PIA_PASSWORD)
    {
        return (401, json!({"message": "authentication failed"}));
    }
    let token = hex(&shared.random_bytes(32));
    let mut st = shared.state.lock().unwrap();
    st.valid_tokens.insert(token.clone());
    st.issued.push(token.clone());
    (200, json!({ "token": token }))
}

fn server_list(shared: &Shared) -> String {
    let regions: Vec<Value> = shared
        .regions
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": format!("Lab {}", r.id),
                "country": "ZZ",
                "auto_region": false,
                "dns": format!("{}.pia.lab.example", r.id.replace('_', "-")),
                "port_forward": r.port_forward,
                "geo": false,
                "offline": r.offline,
                "servers": {
                    "meta": [{"ip": r.meta_ip, "cn": r.meta_cn}],
                    "wg": [{"ip": r.wg_ip, "cn": r.wg_cn}],
                },
            })
        })
        .collect();
    // PIA's shape: a group (named `wg`, `meta`, or anything) lists the services its servers offer, by the
    // service's name (`wireguard`, `meta`); clients find servers by the service, not the group's name.
    let list = json!({
        "groups": {
            "wg": [{"name": "wireguard", "ports": [PIA_WG_API_PORT]}],
            "meta": [{"name": "meta", "ports": [443, 8080]}],
        },
        "regions": regions,
    });
    let mut line = list.to_string();
    let b = shared.behaviour.lock().unwrap().clone();
    if b.malformed.contains(&PiaEndpoint::ServerList) {
        line.truncate(line.len() / 2);
    }
    let signed = if b.bad_list_signature {
        format!("{line} ")
    } else {
        line.clone()
    };
    let mut sig = vec![0u8; shared.list_key.public().modulus_len()];
    shared
        .list_key
        .sign(&RSA_PKCS1_SHA256, &shared.rng, signed.as_bytes(), &mut sig)
        .expect("signing the server list");
    format!("{line}\n\n{}", B64.encode(sig))
}

fn dedicated_ip(shared: &Shared, req: &Request) -> (u16, Value) {
    let token = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Token "))
        .map(str::trim);
    if !token.is_some_and(|t| shared.token_valid(t)) {
        return (401, json!({"message": "authentication failed"}));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return (400, json!({"message": "invalid JSON body"}));
    };
    let Some(tokens) = body["tokens"].as_array() else {
        return (400, json!({"message": "tokens missing"}));
    };
    let answer: Vec<Value> = tokens
        .iter()
        .map(|t| {
            if t.as_str() == Some(PIA_DIP_TOKEN) {
                json!({
                    "status": "active",
                    "ip": DIP_IP,
                    "cn": DIP_CN,
                    "id": DIP_REGION,
                    "dip_token": PIA_DIP_TOKEN,
                })
            } else {
                json!({"status": "invalid"})
            }
        })
        .collect();
    (200, Value::Array(answer))
}

fn add_key(shared: &Shared, req: &Request, cn: &str, server_ip: &str, dip: bool) -> (u16, Value) {
    let (code, v) = add_key_answer(shared, req, cn, server_ip, dip);
    let ok = v["status"] == "OK";
    shared
        .state
        .lock()
        .unwrap()
        .stats
        .add_key
        .push((cn.to_owned(), ok));
    (code, v)
}

fn add_key_answer(
    shared: &Shared,
    req: &Request,
    cn: &str,
    server_ip: &str,
    dip: bool,
) -> (u16, Value) {
    let error = |message: &str| (200, json!({"status": "ERROR", "message": message}));
    let behaviour = shared.behaviour.lock().unwrap().clone();
    if behaviour.fail_add_key_cns.contains(cn) {
        return error(&format!("lab: addKey on {cn} fails on purpose"));
    }
    let authorized = match (req.query("pt"), basic_auth(req)) {
        (Some(pt), _) => shared.token_valid(pt),
        (None, Some((user, pass))) => {
            dip && user == format!("dedicated_ip_{PIA_DIP_TOKEN}") && pass == server_ip
        }
        (None, None) => false,
    };
    if !authorized {
        shared.state.lock().unwrap().stats.login_failed += 1;
        return error("Login failed!");
    }
    let Some(pubkey) = req.query("pubkey").filter(|k| valid_wg_key(k)) else {
        return error("Invalid pubkey");
    };
    let peer_ip = {
        let mut st = shared.state.lock().unwrap();
        let n = st.registrations;
        if n + 10 > 254 {
            return error("lab: no peer addresses left");
        }
        st.registrations += 1;
        format!("10.77.0.{}", 10 + n)
    };
    let allowed = format!("{peer_ip}/32");
    let out = run_argv(
        &in_netns(
            &shared.server_ns,
            &[
                "wg",
                "set",
                &shared.server_if,
                "peer",
                pubkey,
                "allowed-ips",
                &allowed,
            ],
        ),
        &[],
    );
    if !out.success() {
        eprintln!("PIA lab: registering a key failed:\n{out}");
        return error("lab: wg set failed");
    }
    shared
        .state
        .lock()
        .unwrap()
        .stats
        .registered
        .push((pubkey.to_owned(), peer_ip.clone()));
    let peer_pubkey = if behaviour.wrong_peer_pubkey {
        B64.encode(shared.random_bytes(32))
    } else {
        pubkey.to_owned()
    };
    (
        200,
        json!({
            "status": "OK",
            "server_key": shared.server_public_key,
            "server_port": SERVER_PORT,
            "server_ip": server_ip,
            "server_vip": PIA_VIP,
            "peer_ip": peer_ip,
            "peer_pubkey": peer_pubkey,
            "dns_servers": [behaviour.dns_server.as_deref().unwrap_or(DNS_SERVER)],
        }),
    )
}

fn basic_auth(req: &Request) -> Option<(String, String)> {
    let v = req.header("authorization")?.strip_prefix("Basic ")?;
    let raw = String::from_utf8(B64.decode(v.trim()).ok()?).ok()?;
    let (user, pass) = raw.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

fn valid_wg_key(k: &str) -> bool {
    k.len() == 44 && B64.decode(k).is_ok_and(|b| b.len() == 32)
}

fn get_signature(shared: &Shared, req: &Request) -> (u16, Value) {
    let token = req.query("token").unwrap_or("");
    if !shared.token_valid(token) {
        shared.state.lock().unwrap().stats.login_failed += 1;
        return (200, json!({"status": "ERROR", "message": "Login failed!"}));
    }
    let b = shared.behaviour.lock().unwrap().clone();
    let port = b.pf_port.unwrap_or(PIA_PF_PORT);
    let lifetime = b
        .signature_lifetime_secs
        .map(Duration::from_secs)
        .unwrap_or(SIGNATURE_LIFETIME);
    let expires = SystemTime::now() + lifetime;
    let inner = json!({
        "token": token,
        "port": port,
        "expires_at": humantime::format_rfc3339_nanos(expires).to_string(),
    });
    let payload = B64.encode(inner.to_string());
    let signature = B64.encode(shared.random_bytes(64));
    shared
        .state
        .lock()
        .unwrap()
        .signatures
        .insert(payload.clone(), (signature.clone(), port, expires));
    (
        200,
        json!({"status": "OK", "payload": payload, "signature": signature}),
    )
}

fn bind_port(shared: &Shared, req: &Request) -> (u16, Value) {
    let error = |message: &str| (200, json!({"status": "ERROR", "message": message}));
    let (Some(payload), Some(signature)) = (req.query("payload"), req.query("signature")) else {
        return error("payload and signature are required");
    };
    let mut st = shared.state.lock().unwrap();
    let Some((sig, port, expires)) = st.signatures.get(payload).cloned() else {
        return error("invalid payload");
    };
    if sig != signature {
        return error("invalid signature");
    }
    if SystemTime::now() > expires {
        return error("signature expired");
    }
    st.stats.bind_port.push(port);
    (
        200,
        json!({"status": "OK", "message": "port scheduled for add"}),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
