//! The lab's PIA-compatible server (`tests/lab/pia.rs`) proves itself without the hook: a raw rustls client, on a
//! thread inside the lab's host netns, gets tokens, fetches and verifies the signed server list, registers
//! keys, brings a hand-made wireguard-go tunnel up with an addKey answer and does port forwarding through it;
//! the server misbehaves on request, and stops promptly with hung connections.
//!
//! Needs root, wireguard-go, wireguard-tools, openssl and what the lab needs; fails (never skips) without them.

use crate::lab::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use serde_json::Value;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

const TIMEOUT: Duration = Duration::from_secs(10);

// ----- a tiny PIA client ---------------------------------------------------------------------------------------

/// Runs `f` on a thread that entered the lab's host netns (sockets it opens stay there).
fn in_host_ns<T: Send + 'static>(lab: &Lab, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", lab.host_ns);
    thread::spawn(move || {
        let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {self:?}"))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Chain checked against the roots, then the subject CN against the name (PIA's certificates have no SAN).
#[derive(Debug)]
struct CnVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CnVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if has_san(end_entity.as_ref()) {
            return Err(rustls::Error::General(
                "a PIA server certificate with a subjectAltName".into(),
            ));
        }
        let cn = subject_cn(end_entity.as_ref());
        let expected = server_name.to_str();
        if cn.as_deref() != Some(expected.as_ref()) {
            return Err(rustls::Error::General(format!(
                "certificate CN {cn:?}, expected {expected:?}"
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One HTTPS exchange with `addr` ("ip:port"), verifying the certificate for `name` against the CA in `ca`:
/// an IP address the usual way (SAN), a host name by its subject CN.
fn https(
    ca: &Path,
    addr: &str,
    name: &str,
    request: &str,
    timeout: Duration,
) -> Result<Reply, String> {
    let pem = fs::read_to_string(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let der = pem_body(&pem, "CERTIFICATE").ok_or("no certificate in the CA file")?;
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(der))
        .map_err(|e| e.to_string())?;
    let roots = Arc::new(roots);
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if name.parse::<IpAddr>().is_ok() {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CnVerifier { roots, provider }))
            .with_no_client_auth()
    };
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(Arc::new(config), server_name).map_err(|e| e.to_string())?;
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(timeout)).unwrap();
    tcp.set_write_timeout(Some(timeout)).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(request.as_bytes())
        .and_then(|()| tls.flush())
        .map_err(|e| format!("TLS/write: {e}"))?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw)
        .map_err(|e| format!("TLS/read: {e:?}"))?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head in {raw:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    if len != body.len() {
        return Err(format!("Content-Length {len}, body {} bytes", body.len()));
    }
    Ok(Reply {
        status,
        body: body.to_owned(),
    })
}

fn get(host: &str, target: &str, extra_headers: &[String]) -> String {
    let mut s = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for h in extra_headers {
        s += h;
        s += "\r\n";
    }
    s + "\r\n"
}

fn post(host: &str, target: &str, content_type: &str, headers: &[String], body: &str) -> String {
    let mut s = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        s += h;
        s += "\r\n";
    }
    s + "\r\n" + body
}

fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn token_request(user: &str, password: &str) -> String {
    post(
        PIA_WWW_IP,
        "/api/client/v2/token",
        "application/x-www-form-urlencoded",
        &[],
        &format!("username={}&password={}", urlenc(user), urlenc(password)),
    )
}

fn add_key_request(cn: &str, token: &str, pubkey: &str) -> String {
    get(
        cn,
        &format!("/addKey?pt={}&pubkey={}", urlenc(token), urlenc(pubkey)),
        &[],
    )
}

/// The server list's JSON, if its signature verifies with the RSA key (PEM SPKI) in `key`.
fn verify_list(body: &str, key: &Path) -> Result<Value, String> {
    let (line, sig) = body.split_once("\n\n").ok_or("no blank line in the list")?;
    let pem = fs::read_to_string(key).map_err(|e| e.to_string())?;
    let spki = pem_body(&pem, "PUBLIC KEY").ok_or("no public key PEM")?;
    let rsa = spki_key(&spki).ok_or("not an SPKI")?;
    let sig = B64.decode(sig.trim()).map_err(|e| e.to_string())?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, rsa)
        .verify(line.as_bytes(), &sig)
        .map_err(|_| "the signature does not verify".to_owned())?;
    serde_json::from_str(line).map_err(|e| format!("list JSON: {e}"))
}

// ----- DER, just enough ----------------------------------------------------------------------------------------

/// (tag, content, rest) of the first TLV in `d`.
fn tlv(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *d.first()?;
    let b = *d.get(1)? as usize;
    let (len, hdr) = if b < 0x80 {
        (b, 2)
    } else {
        let n = b & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = len << 8 | *d.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let content = d.get(hdr..hdr + len)?;
    Some((tag, content, &d[hdr + len..]))
}

/// The subject CN of a DER certificate.
fn subject_cn(cert: &[u8]) -> Option<String> {
    let (_, cert, _) = tlv(cert)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    if let (0xa0, _, after_version) = tlv(rest)? {
        rest = after_version;
    }
    for _ in 0..4 {
        rest = tlv(rest)?.2; // serial, signature algorithm, issuer, validity
    }
    let (_, mut rdns, _) = tlv(rest)?;
    while !rdns.is_empty() {
        let (_, mut set, next) = tlv(rdns)?;
        rdns = next;
        while !set.is_empty() {
            let (_, atv, next) = tlv(set)?;
            set = next;
            let (_, oid, value) = tlv(atv)?;
            if oid == [0x55, 0x04, 0x03] {
                return String::from_utf8(tlv(value)?.1.to_vec()).ok();
            }
        }
    }
    None
}

/// The RSAPublicKey inside an RSA SubjectPublicKeyInfo.
fn spki_key(spki: &[u8]) -> Option<&[u8]> {
    let (_, seq, _) = tlv(spki)?;
    let (_, _, rest) = tlv(seq)?;
    let (tag, bits, _) = tlv(rest)?;
    (tag == 0x03 && bits.first() == Some(&0)).then(|| &bits[1..])
}

/// Whether the subject alternative name extension (2.5.29.17) appears in a certificate.
fn has_san(cert: &[u8]) -> bool {
    cert.windows(5).any(|w| w == [0x06, 0x03, 0x55, 0x1d, 0x11])
}

// ----- the tests -----------------------------------------------------------------------------------------------

#[test]
fn pia_server_hands_out_tokens_list_keys_and_a_working_tunnel_with_port_forwarding() {
    let lab = Lab::new("pia_server_flow");
    let pia = PiaLab::start(&lab);
    let ca = pia.ca_path();
    let other_ca = pia.other_ca_path();
    let key = pia.regions_key_path();
    let other_key = pia.other_regions_key_path();
    let (dip_ip, dip_cn) = pia.dip_server();
    assert_eq!(pia.token_url(), "https://198.18.1.1/api/client/v2/token");
    assert_eq!(
        pia.server_list_url(),
        "https://198.18.1.1/vpninfo/servers/v6"
    );
    assert_eq!(
        pia.dedicated_ip_url(),
        "https://198.18.1.1/api/client/v2/dedicated_ip"
    );
    assert_eq!(pia.regions().len(), 3);
    let lab_a = pia.regions()[0].clone();
    assert_eq!(
        (lab_a.id.as_str(), lab_a.wg_cn.as_str()),
        ("lab_a", "laba401")
    );
    let (private, public) = PiaLab::keypair(&lab);
    let (_, dip_public) = PiaLab::keypair(&lab);

    // Outside the tunnel: tokens, the list, the dedicated IP, two keys.
    let (token, list, answer, dip_answer) = {
        let (ca, other_ca, key, other_key) = (ca.clone(), other_ca, key.clone(), other_key);
        let (public, dip_public, dip_ip, dip_cn) = (
            public.clone(),
            dip_public.clone(),
            dip_ip.clone(),
            dip_cn.clone(),
        );
        let www = format!("{PIA_WWW_IP}:443");
        in_host_ns(&lab, move || {
            let wrong = https(
                &ca,
                &www,
                PIA_WWW_IP,
                &token_request(PIA_USERNAME, "nope"),
                TIMEOUT,
            )
            .unwrap();
            assert_eq!(wrong.status, 401, "{wrong:?}");
            let r = https(
                &ca,
                &www,
                PIA_WWW_IP,
                &token_request(PIA_USERNAME, PIA_PASSWORD),
                TIMEOUT,
            )
            .unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            let token = r.json()["token"].as_str().unwrap().to_owned();
            assert!(
                token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
                "{token}"
            );
            let e = https(
                &other_ca,
                &www,
                PIA_WWW_IP,
                &token_request(PIA_USERNAME, PIA_PASSWORD),
                TIMEOUT,
            )
            .unwrap_err();
            assert!(
                e.contains("UnknownIssuer"),
                "another CA must not verify www: {e}"
            );

            // The meta route, verified by CN (the certificate has no SAN).
            let meta = https(
                &ca,
                "198.18.1.21:443",
                "labameta",
                &token_request(PIA_USERNAME, PIA_PASSWORD),
                TIMEOUT,
            )
            .unwrap();
            assert_eq!(meta.status, 200, "{meta:?}");
            let e = https(
                &ca,
                "198.18.1.21:443",
                "labbmeta",
                &token_request(PIA_USERNAME, PIA_PASSWORD),
                TIMEOUT,
            )
            .unwrap_err();
            assert!(e.contains("\"labameta\""), "{e}");

            let r = https(
                &ca,
                &www,
                PIA_WWW_IP,
                &get(PIA_WWW_IP, "/vpninfo/servers/v6", &[]),
                TIMEOUT,
            )
            .unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            let list = verify_list(&r.body, &key).unwrap();
            let e = verify_list(&r.body, &other_key).unwrap_err();
            assert!(e.contains("does not verify"), "{e}");

            let auth = format!("Authorization: Token {token}");
            let dip = |auth: &[String], dip_token: &str| {
                https(
                    &ca,
                    &www,
                    PIA_WWW_IP,
                    &post(
                        PIA_WWW_IP,
                        "/api/client/v2/dedicated_ip",
                        "application/json",
                        auth,
                        &serde_json::json!({ "tokens": [dip_token] }).to_string(),
                    ),
                    TIMEOUT,
                )
                .unwrap()
            };
            let r = dip(std::slice::from_ref(&auth), PIA_DIP_TOKEN);
            assert_eq!(r.status, 200, "{r:?}");
            let d = &r.json()[0];
            assert_eq!(d["status"], "active", "{r:?}");
            assert_eq!(
                (d["ip"].as_str(), d["cn"].as_str(), d["id"].as_str()),
                (Some(dip_ip.as_str()), Some(dip_cn.as_str()), Some("lab_a"))
            );
            assert_eq!(
                dip(std::slice::from_ref(&auth), "DIPbogus").json()[0]["status"],
                "invalid"
            );
            assert_eq!(dip(&[], PIA_DIP_TOKEN).status, 401);

            let r = https(
                &ca,
                "198.18.1.11:1337",
                "laba401",
                &add_key_request("laba401", &token, &public),
                TIMEOUT,
            )
            .unwrap();
            let answer = r.json();
            assert_eq!(answer["status"], "OK", "{r:?}");

            // The dedicated IP's server takes basic auth instead of a token.
            let basic = |pass: &str| {
                format!(
                    "Authorization: Basic {}",
                    B64.encode(format!("dedicated_ip_{PIA_DIP_TOKEN}:{pass}"))
                )
            };
            let dip_addr = format!("{dip_ip}:1337");
            let target = format!("/addKey?pubkey={}", urlenc(&dip_public));
            let bad = https(
                &ca,
                &dip_addr,
                &dip_cn,
                &get(&dip_cn, &target, &[basic("10.9.9.9")]),
                TIMEOUT,
            )
            .unwrap();
            assert_eq!(bad.json()["message"], "Login failed!", "{bad:?}");
            let r = https(
                &ca,
                &dip_addr,
                &dip_cn,
                &get(&dip_cn, &target, &[basic(&dip_ip)]),
                TIMEOUT,
            )
            .unwrap();
            let dip_answer = r.json();
            assert_eq!(dip_answer["status"], "OK", "{r:?}");

            // The offline region: nothing listens.
            let e = https(
                &ca,
                "198.18.1.14:1337",
                "laboff9",
                &add_key_request("laboff9", &token, &public),
                TIMEOUT,
            )
            .unwrap_err();
            assert!(e.contains("refused"), "{e}");
            (token, list, answer, dip_answer)
        })
    };

    // The list.
    assert_eq!(list["groups"]["wg"][0]["ports"][0], 1337, "{list}");
    let ids: Vec<&str> = list["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["lab_a", "lab_b", "lab_off"]);
    let r0 = &list["regions"][0];
    assert_eq!(r0["servers"]["wg"][0]["ip"], "198.18.1.11");
    assert_eq!(r0["servers"]["wg"][0]["cn"], "laba401");
    assert_eq!(r0["servers"]["meta"][0]["cn"], "labameta");
    assert_eq!(r0["port_forward"], true);
    assert_eq!(list["regions"][2]["offline"], true);

    // The addKey answers, and the keys on the lab's WireGuard server.
    assert_eq!(answer["server_key"], lab.server_public_key.as_str());
    assert_eq!(answer["server_port"], SERVER_PORT);
    assert_eq!(answer["server_ip"], "198.18.1.11");
    assert_eq!(answer["server_vip"], PIA_VIP);
    assert_eq!(answer["peer_ip"], "10.77.0.10");
    assert_eq!(answer["peer_pubkey"], public.as_str());
    assert_eq!(answer["dns_servers"][0], DNS_SERVER);
    assert_eq!(dip_answer["server_ip"], dip_ip.as_str());
    assert_eq!(dip_answer["peer_ip"], "10.77.0.11");
    let peers = lab.run_in(
        &lab.server_ns,
        &["wg", "show", &lab.server_if, "allowed-ips"],
    );
    peers.assert_success("wg show");
    assert!(
        peers.stdout.contains(&format!("{public}\t10.77.0.10/32"))
            && peers
                .stdout
                .contains(&format!("{dip_public}\t10.77.0.11/32")),
        "{peers}"
    );

    // Through a tunnel built from the answer: the responder, from the peer address.
    let capture = Capture::start(&lab, &lab.host_ns, &lab.host_veth);
    let client = pia.start_manual_client(&lab, &private, &answer);
    let marker = in_host_ns(&lab, || {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let attempt = TcpStream::connect_timeout(
                &format!("{PIA_VIP}:{RESPONDER_PORT}").parse().unwrap(),
                Duration::from_secs(2),
            )
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut text = String::new();
                s.read_to_string(&mut text).map(|_| text)
            });
            match attempt {
                Ok(text) => return text,
                Err(e) if Instant::now() > deadline => panic!("no answer through the tunnel: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    assert_eq!(marker, MARKER);
    let packets = capture.stop();
    let from_server: Vec<&Packet> = packets
        .iter()
        .filter(|p| p.proto == "UDP" && p.src_port == Some(SERVER_PORT))
        .collect();
    assert!(
        !from_server.is_empty()
            && from_server
                .iter()
                .all(|p| p.src_ip == Some("198.18.1.11".parse().unwrap())),
        "WireGuard's answers must come from the server_ip the client sent to:\n{}",
        packets.summary()
    );
    assert!(
        lab.responder_peers()
            .iter()
            .any(|p| p.ip().to_string() == "10.77.0.10"),
        "{:?}",
        lab.responder_peers()
    );
    // wireguard-go answered from the address the handshake went to: a reply from another source (the veth's
    // 198.18.0.2) would have made the client roam its endpoint there.
    let endpoints = lab.run_in(&lab.host_ns, &["wg", "show", &client, "endpoints"]);
    endpoints.assert_success("wg show endpoints");
    assert!(
        endpoints.stdout.contains("\t198.18.1.11:51820"),
        "the client's endpoint moved: {endpoints}"
    );

    // Port forwarding on the VIP, through the tunnel, certificate by SNI.
    let (sig1, bind1, sig2, bind2, tampered) = {
        let (ca, token) = (ca.clone(), token.clone());
        let pia_behaviour = |lifetime: Option<u64>, port: Option<u16>| {
            pia.set_behaviour(|b| {
                b.signature_lifetime_secs = lifetime;
                b.pf_port = port;
            })
        };
        let pf = format!("{PIA_VIP}:19999");
        let get_sig = {
            let (ca, pf, token) = (ca.clone(), pf.clone(), token.clone());
            move || {
                let r = https(
                    &ca,
                    &pf,
                    "laba401",
                    &get(
                        "laba401",
                        &format!("/getSignature?token={}", urlenc(&token)),
                        &[],
                    ),
                    TIMEOUT,
                )
                .unwrap();
                r.json()
            }
        };
        let bind = {
            let (ca, pf) = (ca.clone(), pf.clone());
            move |payload: &str, signature: &str| {
                let target = format!(
                    "/bindPort?payload={}&signature={}",
                    urlenc(payload),
                    urlenc(signature)
                );
                https(&ca, &pf, "laba401", &get("laba401", &target, &[]), TIMEOUT)
                    .unwrap()
                    .json()
            }
        };
        let sig1 = in_host_ns(&lab, get_sig.clone());
        let (p, s) = (
            sig1["payload"].as_str().unwrap_or_default().to_owned(),
            sig1["signature"].as_str().unwrap_or_default().to_owned(),
        );
        let b1 = bind.clone();
        let bind1 = in_host_ns(&lab, move || b1(&p, &s));
        let (p, s) = (
            sig1["payload"].as_str().unwrap_or_default().to_owned(),
            sig1["signature"].as_str().unwrap_or_default().to_owned(),
        );
        let b1 = bind.clone();
        let tampered = in_host_ns(&lab, move || b1(&p, &format!("x{s}")));
        pia_behaviour(Some(1), Some(40123));
        let sig2 = in_host_ns(&lab, get_sig);
        thread::sleep(Duration::from_millis(1500));
        let (p, s) = (
            sig2["payload"].as_str().unwrap_or_default().to_owned(),
            sig2["signature"].as_str().unwrap_or_default().to_owned(),
        );
        let bind2 = in_host_ns(&lab, move || bind(&p, &s));
        pia_behaviour(None, None);
        (sig1, bind1, sig2, bind2, tampered)
    };
    assert_eq!(sig1["status"], "OK", "{sig1}");
    let payload: Value =
        serde_json::from_slice(&B64.decode(sig1["payload"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(payload["port"], PIA_PF_PORT, "{payload}");
    assert_eq!(payload["token"], token.as_str(), "{payload}");
    let expires = humantime::parse_rfc3339(payload["expires_at"].as_str().unwrap()).unwrap();
    let days = expires.duration_since(SystemTime::now()).unwrap().as_secs() / 86400;
    assert!((59..=60).contains(&days), "{payload}");
    assert_eq!(bind1["status"], "OK", "{bind1}");
    assert_eq!(bind1["message"], "port scheduled for add");
    assert_eq!(tampered["status"], "ERROR", "{tampered}");
    let payload2: Value =
        serde_json::from_slice(&B64.decode(sig2["payload"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(payload2["port"], 40123, "{payload2}");
    assert_eq!(
        bind2["status"], "ERROR",
        "an expired signature must not bind: {bind2}"
    );

    // Expired tokens: addKey and getSignature say "Login failed!".
    pia.expire_tokens();
    let (add, sig) = {
        let (ca, token, public) = (ca.clone(), token.clone(), public.clone());
        in_host_ns(&lab, move || {
            let add = https(
                &ca,
                "198.18.1.12:1337",
                "labb402",
                &add_key_request("labb402", &token, &public),
                TIMEOUT,
            )
            .unwrap()
            .json();
            let sig = https(
                &ca,
                &format!("{PIA_VIP}:19999"),
                "labb402",
                &get("labb402", &format!("/getSignature?token={token}"), &[]),
                TIMEOUT,
            )
            .unwrap()
            .json();
            (add, sig)
        })
    };
    assert_eq!(add["status"], "ERROR", "{add}");
    assert_eq!(add["message"], "Login failed!", "{add}");
    assert_eq!(sig["message"], "Login failed!", "{sig}");

    let stats = pia.stats();
    assert_eq!(stats.token_requests, 2, "{stats:?}");
    assert_eq!(stats.meta_token_requests, 1, "{stats:?}");
    assert_eq!(stats.list_requests, 1, "{stats:?}");
    assert_eq!(stats.dedicated_ip_requests, 3, "{stats:?}");
    assert_eq!(
        stats.add_key,
        [
            ("laba401".to_owned(), true),
            (dip_cn.clone(), false),
            (dip_cn.clone(), true),
            ("labb402".to_owned(), false),
        ],
        "{stats:?}"
    );
    assert_eq!(
        stats.registered,
        [
            (public.clone(), "10.77.0.10".to_owned()),
            (dip_public.clone(), "10.77.0.11".to_owned())
        ]
    );
    assert_eq!(stats.get_signature, 3, "{stats:?}");
    assert_eq!(stats.bind_port, [PIA_PF_PORT], "{stats:?}");
    assert_eq!(stats.login_failed, 3, "{stats:?}");
    assert_eq!(pia.tokens_issued().len(), 2);
    assert!(pia.tokens_issued().contains(&token));
}

#[test]
fn pia_server_misbehaves_on_request() {
    let lab = Lab::new("pia_server_misbehaves");
    let pia = PiaLab::start(&lab);
    let ca = pia.ca_path();
    let key = pia.regions_key_path();
    let (_, public) = PiaLab::keypair(&lab);
    let www = format!("{PIA_WWW_IP}:443");
    let call = {
        let ca = ca.clone();
        move |lab: &Lab, addr: &str, name: &str, request: String| {
            let (ca, addr, name) = (ca.clone(), addr.to_owned(), name.to_owned());
            in_host_ns(lab, move || https(&ca, &addr, &name, &request, TIMEOUT))
        }
    };
    let token = call(
        &lab,
        &www,
        PIA_WWW_IP,
        token_request(PIA_USERNAME, PIA_PASSWORD),
    )
    .unwrap()
    .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Certificates: every CN server's carries no SAN; wrong_cert_cn swaps in one for "evil-<cn>".
    let certs = fs::read_to_string(&ca).unwrap();
    assert!(certs.contains("BEGIN CERTIFICATE"));
    pia.set_behaviour(|b| {
        b.wrong_cert_cn.insert("laba401".into());
    });
    let e = call(
        &lab,
        "198.18.1.11:1337",
        "laba401",
        add_key_request("laba401", &token, &public),
    )
    .unwrap_err();
    assert!(
        e.contains("certificate CN Some(\"evil-laba401\"), expected \"laba401\""),
        "{e}"
    );
    let ok = call(
        &lab,
        "198.18.1.12:1337",
        "labb402",
        add_key_request("labb402", &token, &public),
    )
    .unwrap()
    .json();
    assert_eq!(ok["status"], "OK", "the other server is unaffected: {ok}");
    pia.set_behaviour(|b| {
        b.wrong_cert_cn.clear();
        b.wrong_cert_cn.insert(PIA_WWW_IP.into());
    });
    let e = call(
        &lab,
        &www,
        PIA_WWW_IP,
        token_request(PIA_USERNAME, PIA_PASSWORD),
    )
    .unwrap_err();
    assert!(e.contains("not valid for name"), "{e}");
    pia.set_behaviour(|b| b.wrong_cert_cn.clear());

    // addKey failures.
    pia.set_behaviour(|b| {
        b.fail_add_key_cns.insert("laba401".into());
    });
    let r = call(
        &lab,
        "198.18.1.11:1337",
        "laba401",
        add_key_request("laba401", &token, &public),
    )
    .unwrap()
    .json();
    assert_eq!(r["status"], "ERROR", "{r}");
    assert_ne!(r["message"], "Login failed!", "{r}");
    pia.set_behaviour(|b| {
        b.fail_add_key_cns.clear();
        b.wrong_peer_pubkey = true;
    });
    let r = call(
        &lab,
        "198.18.1.11:1337",
        "laba401",
        add_key_request("laba401", &token, &public),
    )
    .unwrap()
    .json();
    assert_eq!(r["status"], "OK", "{r}");
    assert!(
        r["peer_pubkey"]
            .as_str()
            .is_some_and(|k| k != public && k.len() == 44),
        "{r}"
    );
    pia.set_behaviour(|b| b.wrong_peer_pubkey = false);
    let r = call(
        &lab,
        "198.18.1.11:1337",
        "laba401",
        add_key_request("laba401", &token, "not-a-key"),
    )
    .unwrap()
    .json();
    assert_eq!(r["status"], "ERROR", "{r}");
    // A key sent with a raw `+` arrives with a space (query strings decode `+` as space): refused.
    let raw_plus = get(
        "laba401",
        &format!("/addKey?pt={token}&pubkey={}", "+".repeat(43) + "="),
        &[],
    );
    let r = call(&lab, "198.18.1.11:1337", "laba401", raw_plus)
        .unwrap()
        .json();
    assert_eq!(r["status"], "ERROR", "{r}");

    // The list: a bad signature, then a truncated (but signed) line.
    pia.set_behaviour(|b| b.bad_list_signature = true);
    let list = || {
        call(
            &lab,
            &www,
            PIA_WWW_IP,
            get(PIA_WWW_IP, "/vpninfo/servers/v6", &[]),
        )
        .unwrap()
    };
    let e = verify_list(&list().body, &key).unwrap_err();
    assert!(e.contains("does not verify"), "{e}");
    pia.set_behaviour(|b| {
        b.bad_list_signature = false;
        b.malformed.insert(PiaEndpoint::ServerList);
        b.malformed.insert(PiaEndpoint::Token);
    });
    let e = verify_list(&list().body, &key).unwrap_err();
    assert!(e.contains("list JSON"), "{e}");
    let r = call(
        &lab,
        &www,
        PIA_WWW_IP,
        token_request(PIA_USERNAME, PIA_PASSWORD),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<Value>(&r.body).is_err(), "{r:?}");

    let stats = pia.stats();
    assert_eq!(
        stats.add_key,
        [
            ("labb402".to_owned(), true),
            ("laba401".to_owned(), false),
            ("laba401".to_owned(), true),
            ("laba401".to_owned(), false),
            ("laba401".to_owned(), false),
        ],
        "{stats:?}"
    );
    assert_eq!(stats.registered.len(), 2, "{stats:?}");
    assert_eq!(stats.login_failed, 0, "{stats:?}");
}

#[test]
fn pia_server_stops_promptly_with_hung_and_idle_connections() {
    let lab = Lab::new("pia_server_stops");
    let mut pia = PiaLab::start(&lab);
    let ca = pia.ca_path();
    pia.set_behaviour(|b| {
        b.hang.insert(PiaEndpoint::Token);
    });
    // A client whose token request is never answered, and one that connects and says nothing.
    let host_ns = format!("/var/run/netns/{}", lab.host_ns);
    let hung = {
        let (ca, host_ns) = (ca.clone(), host_ns.clone());
        thread::spawn(move || {
            let ns = File::open(&host_ns).unwrap();
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let start = Instant::now();
            let r = https(
                &ca,
                &format!("{PIA_WWW_IP}:443"),
                PIA_WWW_IP,
                &token_request(PIA_USERNAME, PIA_PASSWORD),
                Duration::from_secs(30),
            );
            (r, start.elapsed())
        })
    };
    let idle = in_host_ns(&lab, || {
        TcpStream::connect_timeout(
            &format!("{PIA_WWW_IP}:443").parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap()
    });
    let deadline = Instant::now() + TIMEOUT;
    while pia.stats().token_requests == 0 {
        assert!(Instant::now() < deadline, "the hung request never arrived");
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_secs(1));
    assert!(!hung.is_finished(), "a hung request was answered");

    let start = Instant::now();
    pia.stop();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    let (r, waited) = hung.join().unwrap();
    assert!(r.is_err(), "the hung request got an answer: {r:?}");
    assert!(
        waited < Duration::from_secs(10),
        "the hung client waited {waited:?}"
    );
    // The idle connection was closed too.
    let mut idle = idle;
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    match idle.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the idle connection is still open after stop: {other:?}"),
    }
    // Nothing listens any more.
    let e = in_host_ns(&lab, || {
        TcpStream::connect_timeout(
            &format!("{PIA_WWW_IP}:443").parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap_err()
    });
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert_eq!(pia.stats().token_requests, 1);
}
