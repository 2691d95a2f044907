//! PIA's server list (`/vpninfo/servers/v6`): one line of JSON, a blank line, and a base64 RSA-SHA256
//! signature of that line, checked against PIA's regions-list public key before anything in it is used.

use super::tls::der;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::Path;

/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// The WireGuard API's port when the list does not say (it always has: groups.wg[0].ports[0]).
pub const DEFAULT_API_PORT: u16 = 1337;

#[derive(Debug, Deserialize)]
pub struct ServerList {
    #[serde(default)]
    groups: Groups,
    pub regions: Vec<Region>,
}

#[derive(Debug, Default, Deserialize)]
struct Groups {
    #[serde(default)]
    wg: Vec<Group>,
}

#[derive(Debug, Deserialize)]
struct Group {
    #[serde(default)]
    ports: Vec<u16>,
}

#[derive(Debug, Deserialize)]
pub struct Region {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub port_forward: bool,
    #[serde(default)]
    pub offline: bool,
    #[serde(default)]
    pub servers: Servers,
}

#[derive(Debug, Default, Deserialize)]
pub struct Servers {
    #[serde(default)]
    pub meta: Vec<Server>,
    #[serde(default)]
    pub wg: Vec<Server>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Server {
    pub ip: IpAddr,
    pub cn: String,
}

impl ServerList {
    /// The port of the WireGuard API (addKey) on every wg server.
    pub fn api_port(&self) -> u16 {
        self.groups
            .wg
            .first()
            .and_then(|g| g.ports.first().copied())
            .unwrap_or(DEFAULT_API_PORT)
    }

    pub fn region(&self, id: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.id == id)
    }

    /// The signed JSON line, once `verify_and_parse` has checked its signature.
    pub fn parse(signed: &[u8]) -> Result<ServerList, String> {
        serde_json::from_slice(signed).map_err(|e| format!("signed, but not a server list: {e}"))
    }
}

/// The regions-list public key: a PEM "PUBLIC KEY" (SubjectPublicKeyInfo) holding an RSA key, returned as
/// the PKCS#1 RSAPublicKey that ring verifies with.
pub fn load_public_key(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("regions_key {}: {e}", path.display()))?;
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "regions_key {}: expected a PEM \"BEGIN PUBLIC KEY\" block",
            path.display()
        )
    })?;
    rsa_public_key(spki.as_ref())
        .ok_or_else(|| format!("regions_key {}: not an RSA public key", path.display()))
}

/// SubjectPublicKeyInfo ::= SEQUENCE { SEQUENCE { OID rsaEncryption, NULL }, BIT STRING { RSAPublicKey } }.
fn rsa_public_key(spki: &[u8]) -> Option<Vec<u8>> {
    let (_, body) = der::expect(&mut der::Reader(spki), der::SEQUENCE)?;
    let mut body = der::Reader(body);
    let (_, algorithm) = der::expect(&mut body, der::SEQUENCE)?;
    let (_, oid) = der::expect(&mut der::Reader(algorithm), der::OID)?;
    if oid != OID_RSA_ENCRYPTION {
        return None;
    }
    let (_, bits) = der::expect(&mut body, der::BIT_STRING)?;
    match bits.split_first() {
        Some((0, key)) => Some(key.to_vec()),
        _ => None,
    }
}

/// Checks the signature, then parses the signed line. Nothing unsigned is ever read.
pub fn verify_and_parse(body: &[u8], rsa_public_key: &[u8]) -> Result<ServerList, String> {
    let split = body
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no signature after the JSON line")?;
    let (signed, rest) = body.split_at(split);
    let signature_b64: Vec<u8> = rest
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let signature = STANDARD
        .decode(&signature_b64)
        .map_err(|_| "the signature is not base64")?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        rsa_public_key,
    )
    .verify(signed, &signature)
    .map_err(|_| "the signature does not verify with regions_key (not PIA's list, or altered)")?;
    ServerList::parse(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{"groups":{"wg":[{"name":"wg","ports":[1337]}]},"regions":[{"id":"swiss","name":"Switzerland","port_forward":true,"offline":false,"servers":{"meta":[{"ip":"192.0.2.1","cn":"zurich401"}],"wg":[{"ip":"192.0.2.2","cn":"zurich402"}]}}]}"#;

    /// A 2048-bit key made with openssl for these tests, and a signature of LIST made with it.
    fn key_and_signature() -> (Vec<u8>, String) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs1 = include_bytes!("testdata/list-key.der");
        let key = ring::signature::RsaKeyPair::from_der(pkcs1).unwrap();
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &rng,
            LIST.as_bytes(),
            &mut sig,
        )
        .unwrap();
        (key.public().as_ref().to_vec(), STANDARD.encode(sig))
    }

    #[test]
    fn a_signed_list_parses_and_an_altered_one_is_refused() {
        let (public, sig) = key_and_signature();
        let body = format!("{LIST}\n\n{sig}\n");
        let list = verify_and_parse(body.as_bytes(), &public).unwrap();
        assert_eq!(list.api_port(), 1337);
        let swiss = list.region("swiss").unwrap();
        assert!(swiss.port_forward && !swiss.offline);
        assert_eq!(swiss.servers.wg[0].cn, "zurich402");

        let altered = body.replace("192.0.2.2", "192.0.2.9");
        let e = verify_and_parse(altered.as_bytes(), &public).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        assert!(verify_and_parse(LIST.as_bytes(), &public).is_err());
        let e = verify_and_parse(format!("{LIST}\n\n!!\n").as_bytes(), &public).unwrap_err();
        assert!(e.contains("base64"), "{e}");
    }

    #[test]
    fn the_public_key_is_read_from_spki_pem() {
        let (public, _) = key_and_signature();
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/provider/pia/testdata/list-key.pub.pem"
        ));
        assert_eq!(load_public_key(path).unwrap(), public);
        let e = load_public_key(Path::new("/nonexistent/key.pem")).unwrap_err();
        assert!(e.starts_with("regions_key /nonexistent/key.pem: "), "{e}");
    }
}
