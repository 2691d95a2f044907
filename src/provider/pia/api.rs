//! The PIA HTTP calls (ARCHITECTURE.md, "Private Internet Access"), each bounded by the profile's per-call timeout and by the start's
//! overall deadline. TLS: the web API (token, dedicated IP, server list) trusts the system roots or the
//! profile's `api_ca`; PIA's own servers (meta, WireGuard API, port forwarding) are reached by IP while the
//! certificate is checked for their `cn` against PIA's CA (see `tls`). Errors name the call and the host,
//! never a URL: queries carry the token.

use super::credentials::{Credentials, Secret};
use super::settings::{check_cn, PiaHost, PiaSettings};
use super::tls;
use crate::sys::deadline::Deadline;
use crate::wg::key::Key;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Once;
use std::time::Duration;

/// A server list is some hundreds of KiB; every other answer a few hundred bytes.
const MAX_LIST_BYTES: usize = 8 << 20;
const MAX_ANSWER_BYTES: usize = 64 << 10;
const LOGIN_FAILED: &str = "Login failed!";
const META_PORT: u16 = 443;
pub const PORT_FORWARD_API_PORT: u16 = 19999;

#[derive(Debug)]
pub enum ApiError {
    /// The token was refused ("Login failed!"): get a new one and try again, once.
    LoginFailed,
    Other(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::LoginFailed => f.write_str("the token was refused (Login failed!)"),
            ApiError::Other(s) => f.write_str(s),
        }
    }
}

impl From<String> for ApiError {
    fn from(s: String) -> Self {
        ApiError::Other(s)
    }
}

pub enum AddKeyAuth<'a> {
    Token(&'a Secret),
    /// A dedicated IP authenticates with its own token and address instead.
    DedicatedIp {
        token: &'a Secret,
        ip: IpAddr,
    },
}

/// addKey's answer, checked.
pub struct Registration {
    pub server_key: Key,
    pub endpoint: SocketAddr,
    pub server_vip: IpAddr,
    pub peer_ip: IpAddr,
    pub dns_servers: Vec<IpAddr>,
}

pub struct DedicatedIp {
    pub host: PiaHost,
    pub region: String,
}

pub struct Signature {
    pub payload: String,
    pub signature: String,
    pub port: u16,
    pub expires_at: std::time::SystemTime,
}

/// The calls of one container start (or one port-forwarding round), sharing one deadline.
pub struct Api<'a> {
    settings: &'a PiaSettings,
    /// api_deadline, or the start's create_timeout when that comes first.
    deadline: Deadline,
    pia_roots: rustls::RootCertStore,
}

/// One HTTPS call: what it is (for errors), its bound, its client and URL.
struct Call {
    what: String,
    timeout: Duration,
    /// The deadline that made `timeout` shorter than api_timeout, named when the call times out.
    cut_by: Option<&'static str>,
    client: reqwest::Client,
    url: reqwest::Url,
}

impl Call {
    /// Sends `request` (built from this call's client and URL) and reads at most `limit` bytes of the answer.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
        let fail = |e: reqwest::Error| {
            let cut = match self.cut_by {
                Some(name) if e.is_timeout() => format!(" ({name})"),
                _ => String::new(),
            };
            format!("{}: {}{cut}", self.what, describe(e, self.timeout))
        };
        let mut response = request.timeout(self.timeout).send().await.map_err(fail)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fail)? {
            if body.len() + chunk.len() > limit {
                return Err(format!(
                    "{}: the answer is larger than {} KiB",
                    self.what,
                    limit >> 10
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

impl<'a> Api<'a> {
    pub fn new(settings: &'a PiaSettings, deadline: Deadline) -> Result<Api<'a>, String> {
        Ok(Api {
            settings,
            deadline,
            pia_roots: tls::load_roots(&settings.ca, "ca")?,
        })
    }

    fn timeout(&self, what: &str) -> Result<Duration, String> {
        let left = self.deadline.left();
        if left < Duration::from_millis(50) {
            return Err(format!(
                "{what}: no time left: the {} passed",
                self.deadline
            ));
        }
        Ok(left.min(self.settings.api_timeout))
    }

    fn builder(timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .user_agent(concat!("wg-oci-hook/", env!("CARGO_PKG_VERSION")))
    }

    /// A client for the web API: system roots, or exactly `api_ca`.
    fn web_client(&self, timeout: Duration) -> Result<reqwest::Client, String> {
        let builder = Self::builder(timeout);
        let builder = match &self.settings.api_ca {
            Some(path) => builder.tls_backend_preconfigured(tls::client_config_with_roots(
                tls::load_roots(path, "api_ca")?,
            )?),
            None => {
                static PROVIDER: Once = Once::new();
                PROVIDER.call_once(|| {
                    let _ = rustls::crypto::ring::default_provider().install_default();
                });
                builder
            }
        };
        builder.build().map_err(|e| describe(e, timeout))
    }

    /// A client that reaches `host.cn:port` at `host.ip`, trusting PIA's CA only.
    fn pia_client(
        &self,
        host: &PiaHost,
        port: u16,
        timeout: Duration,
    ) -> Result<reqwest::Client, String> {
        Self::builder(timeout)
            .tls_backend_preconfigured(tls::pia_client_config(self.pia_roots.clone())?)
            .resolve(&host.cn, SocketAddr::new(host.ip, port))
            .build()
            .map_err(|e| describe(e, timeout))
    }

    fn pia_url(host: &PiaHost, port: u16, path: &str) -> Result<reqwest::Url, String> {
        reqwest::Url::parse(&format!("https://{}:{port}{path}", host.cn))
            .map_err(|_| format!("server name {:?} is not a host name", host.cn))
    }

    /// A call to the web API at `url`, bounded by what is left of the deadline.
    fn web_call(&self, what: String, url: &str) -> Result<Call, String> {
        let timeout = self.timeout(&what)?;
        let client = self
            .web_client(timeout)
            .map_err(|e| format!("{what}: {e}"))?;
        let url = reqwest::Url::parse(url).map_err(|e| format!("{what}: {e}"))?;
        Ok(Call {
            what,
            timeout,
            cut_by: (timeout < self.settings.api_timeout).then(|| self.deadline.name()),
            client,
            url,
        })
    }

    /// A call to one of PIA's own servers, `https://CN:PORT/PATH` at its IP.
    fn pia_call(
        &self,
        what: String,
        host: &PiaHost,
        port: u16,
        path: &str,
    ) -> Result<Call, String> {
        let timeout = self.timeout(&what)?;
        let client = self
            .pia_client(host, port, timeout)
            .map_err(|e| format!("{what}: {e}"))?;
        let url = Self::pia_url(host, port, path).map_err(|e| format!("{what}: {e}"))?;
        Ok(Call {
            what,
            timeout,
            cut_by: (timeout < self.settings.api_timeout).then(|| self.deadline.name()),
            client,
            url,
        })
    }

    /// A token for `credentials`: from the web API, or (token_via_meta) from a meta server by IP.
    pub async fn token(
        &self,
        credentials: &Credentials,
        meta: Option<&PiaHost>,
    ) -> Result<Secret, String> {
        let what = match meta {
            Some(host) => format!("getting a token from meta server {host}"),
            None => format!("getting a token from {}", host_of(&self.settings.token_url)),
        };
        let call = match meta {
            Some(host) => self.pia_call(what, host, META_PORT, "/api/client/v2/token")?,
            None => self.web_call(what, &self.settings.token_url)?,
        };
        let form = [
            ("username", credentials.username.as_str()),
            ("password", credentials.password.expose()),
        ];
        let (status, body) = call
            .send(
                call.client.post(call.url.clone()).form(&form),
                MAX_ANSWER_BYTES,
            )
            .await?;
        let what = &call.what;
        #[derive(Deserialize)]
        struct Answer {
            token: Option<String>,
        }
        match serde_json::from_slice::<Answer>(&body) {
            Ok(Answer { token: Some(t) }) if status.is_success() && !t.is_empty() => {
                Ok(Secret::new(t))
            }
            _ if status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN =>
            {
                Err(format!(
                    "{what}: the username or password was refused (HTTP {})",
                    status.as_u16()
                ))
            }
            Ok(_) => Err(format!(
                "{what}: HTTP {}, no token in the answer",
                status.as_u16()
            )),
            Err(_) => Err(format!(
                "{what}: HTTP {}, the answer is not JSON",
                status.as_u16()
            )),
        }
    }

    /// The signed server list, unverified (the caller verifies before reading it).
    pub async fn server_list(&self) -> Result<Vec<u8>, String> {
        let what = format!(
            "fetching the server list from {}",
            host_of(&self.settings.server_list_url)
        );
        let call = self.web_call(what, &self.settings.server_list_url)?;
        let (status, body) = call
            .send(call.client.get(call.url.clone()), MAX_LIST_BYTES)
            .await?;
        let what = &call.what;
        if !status.is_success() {
            return Err(format!("{what}: HTTP {}", status.as_u16()));
        }
        Ok(body)
    }

    /// The server of a dedicated IP token.
    pub async fn dedicated_ip(&self, token: &Secret, dip: &Secret) -> Result<DedicatedIp, String> {
        let what = format!(
            "looking up the dedicated IP at {}",
            host_of(&self.settings.dedicated_ip_url)
        );
        let call = self.web_call(what, &self.settings.dedicated_ip_url)?;
        let body = serde_json::json!({ "tokens": [dip.expose()] }).to_string();
        let request = call
            .client
            .post(call.url.clone())
            .header("Authorization", format!("Token {}", token.expose()))
            .header("Content-Type", "application/json")
            .body(body);
        let (status, body) = call.send(request, MAX_ANSWER_BYTES).await?;
        let what = &call.what;
        #[derive(Deserialize)]
        struct Entry {
            status: Option<String>,
            ip: Option<IpAddr>,
            cn: Option<String>,
            id: Option<String>,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&body).map_err(|_| {
            format!(
                "{what}: HTTP {}, the answer is not the expected JSON",
                status.as_u16()
            )
        })?;
        match entries.into_iter().next() {
            Some(Entry {
                status: Some(s),
                ip: Some(ip),
                cn: Some(cn),
                id,
            }) if s == "active" => {
                check_cn(&cn).map_err(|e| format!("{what}: {e}"))?;
                Ok(DedicatedIp {
                    host: PiaHost { ip, cn },
                    region: id.unwrap_or_default(),
                })
            }
            Some(Entry {
                status: Some(s), ..
            }) => Err(format!(
                "{what}: the dedicated IP token is {:?}, not active",
                short_text(&s)
            )),
            _ => Err(format!("{what}: no dedicated IP in the answer")),
        }
    }

    /// Registers `public_key` on a WireGuard server and checks the answer.
    pub async fn add_key(
        &self,
        host: &PiaHost,
        port: u16,
        auth: AddKeyAuth<'_>,
        public_key: &Key,
    ) -> Result<Registration, ApiError> {
        let what = format!("addKey on {host}");
        let mut call = self.pia_call(what, host, port, "/addKey")?;
        let ours = public_key.to_base64();
        let request = match auth {
            AddKeyAuth::Token(token) => {
                call.url
                    .query_pairs_mut()
                    .append_pair("pt", token.expose())
                    .append_pair("pubkey", &ours);
                call.client.get(call.url.clone())
            }
            AddKeyAuth::DedicatedIp { token, ip } => {
                call.url.query_pairs_mut().append_pair("pubkey", &ours);
                call.client.get(call.url.clone()).basic_auth(
                    format!("dedicated_ip_{}", token.expose()),
                    Some(ip.to_string()),
                )
            }
        };
        let (status, body) = call.send(request, MAX_ANSWER_BYTES).await?;
        parse_add_key_answer(&call.what, status.as_u16(), &body, &ours)
    }

    /// A port-forwarding signature, through the tunnel (the caller runs this inside the container's netns).
    pub async fn get_signature(
        &self,
        host: &PiaHost,
        token: &Secret,
    ) -> Result<Signature, ApiError> {
        let what = format!("getSignature on {host}");
        let mut call = self.pia_call(what, host, PORT_FORWARD_API_PORT, "/getSignature")?;
        call.url
            .query_pairs_mut()
            .append_pair("token", token.expose());
        let (_, body) = call
            .send(call.client.get(call.url.clone()), MAX_ANSWER_BYTES)
            .await?;
        parse_signature_answer(&call.what, &body)
    }

    /// Binds (or keeps) the signature's port, through the tunnel.
    pub async fn bind_port(&self, host: &PiaHost, signature: &Signature) -> Result<(), String> {
        let what = format!("bindPort on {host}");
        let mut call = self.pia_call(what, host, PORT_FORWARD_API_PORT, "/bindPort")?;
        call.url
            .query_pairs_mut()
            .append_pair("payload", &signature.payload)
            .append_pair("signature", &signature.signature);
        let (_, body) = call
            .send(call.client.get(call.url.clone()), MAX_ANSWER_BYTES)
            .await?;
        parse_bind_port_answer(&call.what, &body)
    }
}

/// addKey's answer (HTTP `status`, `body`), checked: "OK", for the key we sent (`ours`, base64), every field
/// valid. `what` names the call in errors.
pub fn parse_add_key_answer(
    what: &str,
    status: u16,
    body: &[u8],
    ours: &str,
) -> Result<Registration, ApiError> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Answer {
        status: String,
        message: String,
        server_key: String,
        server_port: u16,
        server_ip: String,
        server_vip: String,
        peer_ip: String,
        peer_pubkey: String,
        dns_servers: Vec<String>,
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|_| format!("{what}: HTTP {status}, the answer is not the expected JSON"))?;
    check_status(what, &a.status, &a.message)?;
    let bad = |field: &str| ApiError::Other(format!("{what}: the answer has no valid {field}"));
    if a.peer_pubkey != ours {
        return Err(ApiError::Other(format!(
            "{what}: the server answered for another public key (peer_pubkey is not the key we sent)"
        )));
    }
    let server_key = Key::from_base64(&a.server_key).ok_or_else(|| bad("server_key"))?;
    let server_ip: IpAddr = a.server_ip.parse().map_err(|_| bad("server_ip"))?;
    if a.server_port == 0 {
        return Err(bad("server_port"));
    }
    let dns_servers = a
        .dns_servers
        .iter()
        .map(|s| s.parse::<IpAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("dns_servers"))?;
    Ok(Registration {
        server_key,
        endpoint: SocketAddr::new(server_ip, a.server_port),
        server_vip: a.server_vip.parse().map_err(|_| bad("server_vip"))?,
        peer_ip: a.peer_ip.parse().map_err(|_| bad("peer_ip"))?,
        dns_servers,
    })
}

/// getSignature's answer: "OK" and a payload that gives the port and its expiry.
pub fn parse_signature_answer(what: &str, body: &[u8]) -> Result<Signature, ApiError> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Answer {
        status: String,
        message: String,
        payload: String,
        signature: String,
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|_| format!("{what}: the answer is not the expected JSON"))?;
    check_status(what, &a.status, &a.message)?;
    let (port, expires_at) = decode_payload(&a.payload).map_err(|e| format!("{what}: {e}"))?;
    Ok(Signature {
        payload: a.payload,
        signature: a.signature,
        port,
        expires_at,
    })
}

/// bindPort's answer: "OK", or a refusal.
pub fn parse_bind_port_answer(what: &str, body: &[u8]) -> Result<(), String> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Answer {
        status: String,
        message: String,
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|_| format!("{what}: the answer is not the expected JSON"))?;
    check_status(what, &a.status, &a.message).map_err(|e| match e {
        ApiError::LoginFailed => format!("{what}: refused (Login failed!)"),
        ApiError::Other(e) => e,
    })
}

/// The `status` and `message` every answer of PIA's servers carries: "OK", the expired-token refusal, or
/// another refusal in the server's own (bounded) words.
fn check_status(what: &str, status: &str, message: &str) -> Result<(), ApiError> {
    match (status, message) {
        ("OK", _) => Ok(()),
        (_, LOGIN_FAILED) => Err(ApiError::LoginFailed),
        _ => Err(ApiError::Other(format!(
            "{what}: {} {:?}",
            short_text(status),
            short_text(message)
        ))),
    }
}

/// The payload is base64 of JSON with `port` and `expires_at` (RFC 3339).
fn decode_payload(payload: &str) -> Result<(u16, std::time::SystemTime), String> {
    use base64::Engine as _;
    let json = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|_| "the payload is not base64")?;
    #[derive(Deserialize)]
    struct Payload {
        port: u16,
        expires_at: String,
    }
    let p: Payload =
        serde_json::from_slice(&json).map_err(|_| "the payload lacks port or expires_at")?;
    let expires_at = humantime::parse_rfc3339_weak(p.expires_at.trim())
        .map_err(|_| "the payload's expires_at is not an RFC 3339 time")?;
    if p.port == 0 {
        return Err("the payload's port is 0".into());
    }
    Ok((p.port, expires_at))
}

/// The host of a URL, for messages (never the path or query).
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "an invalid URL".into())
}

/// A server's own words, bounded and on one line.
fn short_text(s: &str) -> String {
    s.chars()
        .take(120)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// reqwest's error without its URL (queries carry tokens), with its causes, on one line.
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {:.1} s", timeout.as_secs_f64());
    }
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    short_text(&out.replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn payload_gives_port_and_expiry() {
        let json = r#"{"token":"t","port":47001,"expires_at":"2027-01-30T12:00:00.123456789Z"}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(json);
        let (port, expires) = decode_payload(&b64).unwrap();
        assert_eq!(port, 47001);
        assert_eq!(
            humantime::format_rfc3339_seconds(expires).to_string(),
            "2027-01-30T12:00:00Z"
        );
        assert!(decode_payload("!!").is_err());
        let no_port = base64::engine::general_purpose::STANDARD
            .encode(r#"{"expires_at":"2027-01-30T12:00:00Z"}"#);
        assert!(decode_payload(&no_port).is_err());
    }

    /// Without `api_ca` the web API trusts the system's roots (what subscribers use): that client must build,
    /// with our ring provider installed as the process default.
    #[test]
    fn the_web_client_builds_with_the_system_roots_and_with_api_ca() {
        let dir = std::env::temp_dir().join(format!("wgoh-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
        let mut settings = PiaSettings::new("/c".into(), ca.clone());
        settings.server = Some(PiaHost {
            ip: "192.0.2.1".parse().unwrap(),
            cn: "x".into(),
        });
        let deadline = Deadline::after(Duration::from_secs(5), "api_deadline");
        let api = Api::new(&settings, deadline).unwrap();
        api.web_client(Duration::from_secs(1)).unwrap();
        api.pia_client(
            &PiaHost {
                ip: "192.0.2.1".parse().unwrap(),
                cn: "x".into(),
            },
            1337,
            Duration::from_secs(1),
        )
        .unwrap();
        settings.api_ca = Some(ca.clone());
        Api::new(&settings, deadline)
            .unwrap()
            .web_client(Duration::from_secs(1))
            .unwrap();
        settings.api_ca = Some(dir.join("missing.pem"));
        let e = Api::new(&settings, deadline)
            .unwrap()
            .web_client(Duration::from_secs(1))
            .unwrap_err();
        assert!(e.starts_with("api_ca "), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hosts_of_urls_drop_paths_and_queries() {
        assert_eq!(
            host_of("https://198.18.1.1/api/client/v2/token?x=secret"),
            "198.18.1.1"
        );
        assert_eq!(host_of("nonsense"), "an invalid URL");
    }
}
