//! TLS for PIA's own servers (meta, WireGuard API, port forwarding): the chain pinned to PIA's CA, the name
//! checked against the server list's `cn`.
//!
//! PIA's server certificates carry the name only in the legacy subject CN, with no subjectAltName (Go clients
//! fail on them with "certificate relies on legacy Common Name field"), and rustls never falls back to the CN.
//! So the chain is verified by rustls/webpki against PIA's CA alone, and the name by webpki when the
//! certificate has a SAN, else by the CN here, matched exactly (no wildcards).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The provider every TLS config of ours uses (ring: smaller than aws-lc-rs, and enough).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Root store from a PEM file of one or more certificates. An unreadable file, or one without a single
/// certificate, is an error naming it (reqwest's own PEM loader would silently trust nothing).
pub fn load_roots(path: &Path, what: &str) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{what} {}: not PEM: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(roots)
}

/// A client config trusting exactly `roots`, with the usual webpki name checks (SANs).
pub fn client_config_with_roots(roots: RootCertStore) -> Result<rustls::ClientConfig, String> {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// A client config for PIA's servers: chain to `roots` (PIA's CA), name by SAN or else by subject CN.
pub fn pia_client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let verifier = Arc::new(PiaServerVerifier {
        roots,
        algorithms: provider.signature_verification_algorithms,
    });
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        })
}

#[derive(Debug)]
struct PiaServerVerifier {
    roots: RootCertStore,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PiaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let names = subject_names(end_entity.as_ref())
            .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if names.has_subject_alt_name {
            verify_server_name(&cert, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        match server_name {
            ServerName::DnsName(name) if names.common_name.as_deref() == Some(name.as_ref()) => {
                Ok(ServerCertVerified::assertion())
            }
            _ => Err(Error::InvalidCertificate(CertificateError::NotValidForName)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What a certificate says of its names.
#[derive(Debug, PartialEq, Eq)]
struct SubjectNames {
    common_name: Option<String>,
    has_subject_alt_name: bool,
}

/// Reads the subject CN and whether a subjectAltName extension exists, from a DER certificate that webpki
/// has already parsed and verified (so only the few fields we walk need checking here).
fn subject_names(cert: &[u8]) -> Option<SubjectNames> {
    let (_, certificate) = der::expect(&mut der::Reader(cert), der::SEQUENCE)?;
    let (_, tbs) = der::expect(&mut der::Reader(certificate), der::SEQUENCE)?;
    let mut tbs = der::Reader(tbs);
    let (first, _) = tbs.next()?;
    if first == der::VERSION {
        let _serial_number = tbs.next()?;
    }
    let _signature = tbs.next()?;
    let _issuer = tbs.next()?;
    let _validity = tbs.next()?;
    let (tag, subject) = tbs.next()?;
    if tag != der::SEQUENCE {
        return None;
    }
    let mut common_name = None;
    let mut rdns = der::Reader(subject);
    while !rdns.0.is_empty() {
        let (_, set) = der::expect(&mut rdns, der::SET)?;
        let mut attrs = der::Reader(set);
        while !attrs.0.is_empty() {
            let (_, attr) = der::expect(&mut attrs, der::SEQUENCE)?;
            let mut attr = der::Reader(attr);
            let (_, oid) = der::expect(&mut attr, der::OID)?;
            let (_, value) = attr.next()?;
            if oid == OID_COMMON_NAME {
                common_name = Some(std::str::from_utf8(value).ok()?.to_owned());
            }
        }
    }
    let mut has_subject_alt_name = false;
    while let Some((tag, content)) = tbs.next() {
        if tag != der::EXTENSIONS {
            continue;
        }
        let (_, list) = der::expect(&mut der::Reader(content), der::SEQUENCE)?;
        let mut list = der::Reader(list);
        while !list.0.is_empty() {
            let (_, ext) = der::expect(&mut list, der::SEQUENCE)?;
            let (_, oid) = der::expect(&mut der::Reader(ext), der::OID)?;
            has_subject_alt_name |= oid == OID_SUBJECT_ALT_NAME;
        }
    }
    Some(SubjectNames {
        common_name,
        has_subject_alt_name,
    })
}

/// Just enough DER for the fields above and for unwrapping an RSA SubjectPublicKeyInfo.
pub(super) mod der {
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const OID: u8 = 0x06;
    pub const BIT_STRING: u8 = 0x03;
    pub const VERSION: u8 = 0xa0;
    pub const EXTENSIONS: u8 = 0xa3;

    pub struct Reader<'a>(pub &'a [u8]);

    impl<'a> Reader<'a> {
        /// The next (tag, content), or None at the end or on malformed input. Single-byte tags only, and
        /// definite lengths of up to 4 bytes, which is all X.509 and SPKI need.
        pub fn next(&mut self) -> Option<(u8, &'a [u8])> {
            let (&tag, rest) = self.0.split_first()?;
            let (&first, mut rest) = rest.split_first()?;
            let len = if first < 0x80 {
                usize::from(first)
            } else {
                let n = usize::from(first & 0x7f);
                if n == 0 || n > 4 || rest.len() < n {
                    return None;
                }
                let len = rest[..n]
                    .iter()
                    .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
                rest = &rest[n..];
                len
            };
            if rest.len() < len {
                return None;
            }
            let (content, rest) = rest.split_at(len);
            self.0 = rest;
            Some((tag, content))
        }
    }

    pub fn expect<'a>(reader: &mut Reader<'a>, tag: u8) -> Option<(u8, &'a [u8])> {
        reader.next().filter(|(t, _)| *t == tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cn_and_san_presence() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vancouver402");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Lab");
        let cn_only = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_names(cn_only.der()),
            Some(SubjectNames {
                common_name: Some("vancouver402".into()),
                has_subject_alt_name: false
            })
        );
        let with_san = rcgen::CertificateParams::new(vec!["www.example.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let names = subject_names(with_san.der()).unwrap();
        assert!(names.has_subject_alt_name);
        assert!(subject_names(&cn_only.der()[..40]).is_none());
    }

    #[test]
    fn roots_file_without_a_certificate_is_an_error() {
        let dir = std::env::temp_dir().join(format!("wgoh-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.crt");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = load_roots(&path, "ca").unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
