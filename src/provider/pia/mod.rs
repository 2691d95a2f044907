//! Private Internet Access (`provider = "pia"`): at createRuntime a fresh key pair per container, registered
//! with addKey on the first region server that accepts it (ARCHITECTURE.md, "Private Internet Access"). What a start obtains is kept for the
//! next (token, signed server list: `cache`); what a container holds is in its record (`PiaRecord`) and, with
//! port forwarding, in a helper process (`port_forward`).

pub mod api;
pub mod cache;
pub mod credentials;
pub mod port_forward;
pub mod serverlist;
pub mod settings;
pub mod tls;

use crate::sys::deadline::Deadline;
use crate::sys::private_dir::PrivateDir;
use crate::wg::key::Key;
use api::{AddKeyAuth, Api, ApiError, Registration};
use cache::Cache;
use credentials::{Credentials, Secret};
use log::{info, warn};
use serde::{Deserialize, Serialize};
use serverlist::ServerList;
use settings::{PiaHost, PiaSettings};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// What a container's record keeps of its registration (no token, no key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PiaRecord {
    pub region: String,
    pub server_cn: String,
    pub server_ip: IpAddr,
    pub server_vip: IpAddr,
    pub peer_ip: IpAddr,
    /// The container's `wg.region`, when it chose one: a renewal stays there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_region: Option<String>,
    /// The region's meta servers, for renewing the token with token_via_meta.
    #[serde(default)]
    pub meta: Vec<HostRecord>,
    /// The container's init and its rootfs (the port-forwarding helper writes the port there).
    pub container_pid: u32,
    pub rootfs: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_forward: Option<PortForwardRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRecord {
    pub ip: IpAddr,
    pub cn: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortForwardRecord {
    /// The helper's supervisor, recorded when started (its worker is its child).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper: Option<crate::sys::process::Started>,
    /// A version-1 record's helper pid (checked only against its argv).
    #[serde(default, rename = "helper_pid", skip_serializing)]
    pub legacy_helper_pid: Option<u32>,
    /// The first port bound; 0 while the helper has bound none.
    #[serde(default)]
    pub port: u16,
    /// Where the port is written inside the container.
    pub port_file: String,
}

impl PiaRecord {
    pub fn meta_hosts(&self) -> Vec<PiaHost> {
        self.meta
            .iter()
            .map(|h| PiaHost {
                ip: h.ip,
                cn: h.cn.clone(),
            })
            .collect()
    }
}

/// A registered key: the tunnel's private key and the server's answer.
pub struct Registered {
    pub private_key: Key,
    pub registration: Registration,
    pub region: String,
    pub server: PiaHost,
    pub meta: Vec<PiaHost>,
}

impl Registered {
    /// What the container's record keeps of it.
    pub fn record(
        &self,
        requested_region: Option<&str>,
        container_pid: u32,
        rootfs: &Path,
    ) -> PiaRecord {
        PiaRecord {
            requested_region: requested_region.map(str::to_owned),
            region: self.region.clone(),
            server_cn: self.server.cn.clone(),
            server_ip: self.server.ip,
            server_vip: self.registration.server_vip,
            peer_ip: self.registration.peer_ip,
            meta: self
                .meta
                .iter()
                .map(|h| HostRecord {
                    ip: h.ip,
                    cn: h.cn.clone(),
                })
                .collect(),
            container_pid,
            rootfs: rootfs.to_owned(),
            port_forward: None,
        }
    }
}

/// One WireGuard server to try.
#[derive(Debug)]
struct Target {
    region: String,
    host: PiaHost,
    /// Its WireGuard API (addKey) port: the list's, for the group the server was listed in.
    port: u16,
    meta: Vec<PiaHost>,
    dedicated_ip: bool,
}

/// A current-thread runtime for the HTTP calls (never a multi-thread one: see CRATES.md).
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the HTTP runtime: {e}"))
}

/// The account's token: cached, or obtained (and cached) from the web API or a meta server.
pub struct Tokens<'a> {
    pub api: &'a Api<'a>,
    pub cache: &'a Cache,
    pub credentials: &'a Credentials,
    pub via_meta: bool,
}

impl Tokens<'_> {
    pub async fn get(&self, meta: &[PiaHost]) -> Result<Secret, String> {
        if let Some(token) = self.cache.token(&self.credentials.username) {
            return Ok(token);
        }
        self.renew(meta).await
    }

    /// A new token, replacing the cached one.
    pub async fn renew(&self, meta: &[PiaHost]) -> Result<Secret, String> {
        self.cache.discard_token(&self.credentials.username);
        let token = if self.via_meta {
            let mut errors = Vec::new();
            let mut found = None;
            for host in meta {
                match self.api.token(self.credentials, Some(host)).await {
                    Ok(t) => {
                        found = Some(t);
                        break;
                    }
                    Err(e) => errors.push(e),
                }
            }
            match found {
                Some(t) => t,
                None if errors.is_empty() => {
                    return Err("token_via_meta: the region lists no meta server".into())
                }
                None => return Err(errors.join("; ")),
            }
        } else {
            self.api.token(self.credentials, None).await?
        };
        if let Err(e) = self.cache.store_token(&self.credentials.username, &token) {
            warn!("caching the PIA token: {e}");
        }
        Ok(token)
    }
}

/// Where a registration may go, in the order to try.
pub struct Wanted {
    /// The container's `wg.region`: that region alone (a dedicated IP refuses it).
    pub requested: Option<String>,
    /// The regions to try, in order.
    pub regions: Vec<String>,
    /// A server to try before the others when a wanted region lists it (a persisted port's).
    pub prefer: Option<PiaHost>,
}

impl Wanted {
    /// A start's: the requested region alone, else the profile's regions.
    pub fn new(settings: &PiaSettings, requested: Option<&str>) -> Wanted {
        Wanted {
            requested: requested.map(str::to_owned),
            regions: match requested {
                Some(r) => vec![r.to_owned()],
                None => settings.regions.clone(),
            },
            prefer: None,
        }
    }

    /// `region` first, then the others in their order.
    pub fn first(mut self, region: &str) -> Wanted {
        self.regions.retain(|r| r != region);
        self.regions.insert(0, region.to_owned());
        self
    }
}

/// Registers a fresh key for `container` (a tunnel's name in logs) on the first server that takes it.
pub fn register(
    settings: &PiaSettings,
    credentials: &Credentials,
    state_dir: &PrivateDir,
    wanted: &Wanted,
    container: &str,
    deadline: Deadline,
) -> Result<Registered, String> {
    if let (Some(region), Some(_)) = (&wanted.requested, &credentials.dedicated_ip_token) {
        return Err(format!(
            "wg.region={region:?}: {} holds a dedicated IP, whose server is fixed",
            settings.credentials.display()
        ));
    }
    let api = Api::new(settings, deadline)?;
    let cache = Cache::open(state_dir)?;
    let tokens = Tokens {
        api: &api,
        cache: &cache,
        credentials,
        via_meta: settings.token_via_meta,
    };
    let (private_key, public_key) = key_pair()?;
    runtime()?.block_on(async {
        let targets = if let Some(dip) = &credentials.dedicated_ip_token {
            let token = tokens.get(&[]).await?;
            let dip = api.dedicated_ip(&token, dip).await?;
            vec![Target {
                region: dip.region,
                host: dip.host,
                port: serverlist::DEFAULT_API_PORT,
                meta: Vec::new(),
                dedicated_ip: true,
            }]
        } else if let Some(server) = &settings.server {
            vec![Target {
                region: "fixed server".into(),
                host: server.clone(),
                port: serverlist::DEFAULT_API_PORT,
                meta: Vec::new(),
                dedicated_ip: false,
            }]
        } else {
            let list = server_list(settings, &api, &cache).await?;
            let mut targets = candidates(&list, &wanted.regions, settings.port_forwarding)?;
            if let Some(at) = wanted
                .prefer
                .as_ref()
                .and_then(|p| targets.iter().position(|t| t.host == *p))
            {
                let preferred = targets.remove(at);
                targets.insert(0, preferred);
            }
            targets
        };
        let mut failures = Vec::new();
        for target in targets {
            match add_key(&tokens, credentials, &target, &public_key).await {
                Ok(registration) => {
                    info!(
                        "container {container}: registered with PIA region {} on {}",
                        target.region, target.host
                    );
                    return Ok(Registered {
                        private_key,
                        registration,
                        region: target.region,
                        server: target.host,
                        meta: target.meta,
                    });
                }
                Err(e) => {
                    warn!("container {container}: region {}: {e}", target.region);
                    failures.push(format!("region {}: {e}", target.region));
                }
            }
        }
        Err(format!(
            "no PIA server registered the key: {}",
            failures.join("; ")
        ))
    })
}

/// addKey, renewing the token once if the server says it expired.
async fn add_key(
    tokens: &Tokens<'_>,
    credentials: &Credentials,
    target: &Target,
    public_key: &Key,
) -> Result<Registration, String> {
    let api = tokens.api;
    let port = target.port;
    if target.dedicated_ip {
        let token = credentials
            .dedicated_ip_token
            .as_ref()
            .expect("a dedicated IP target comes from a DIP token");
        let auth = AddKeyAuth::DedicatedIp {
            token,
            ip: target.host.ip,
        };
        return api
            .add_key(&target.host, port, auth, public_key)
            .await
            .map_err(|e| e.to_string());
    }
    let token = tokens.get(&target.meta).await?;
    match api
        .add_key(&target.host, port, AddKeyAuth::Token(&token), public_key)
        .await
    {
        Err(ApiError::LoginFailed) => {
            info!("the cached PIA token was refused; getting a new one");
            let token = tokens.renew(&target.meta).await?;
            api.add_key(&target.host, port, AddKeyAuth::Token(&token), public_key)
                .await
                .map_err(|e| match e {
                    ApiError::LoginFailed => format!(
                        "addKey on {}: a new token was refused too (Login failed!)",
                        target.host
                    ),
                    e => e.to_string(),
                })
        }
        other => other.map_err(|e| e.to_string()),
    }
}

/// The signed server list: the cached copy while younger than the TTL, else a fresh one (falling back to an
/// older cached copy, still verified, when the API cannot be reached).
async fn server_list(
    settings: &PiaSettings,
    api: &Api<'_>,
    cache: &Cache,
) -> Result<ServerList, String> {
    let key_path = settings
        .regions_key
        .as_deref()
        .ok_or("regions_key is needed to check the server list")?;
    let key = serverlist::load_public_key(key_path)?;
    let url = &settings.server_list_url;
    if let Some(body) = cache.server_list(url, settings.server_list_ttl, false) {
        match serverlist::verify_and_parse(&body, &key) {
            Ok(list) => return Ok(list),
            Err(e) => warn!("the cached PIA server list is unusable ({e}); fetching it again"),
        }
    }
    match api.server_list().await {
        Ok(body) => {
            let list = serverlist::verify_and_parse(&body, &key)
                .map_err(|e| format!("the server list from {url}: {e}"))?;
            if let Err(e) = cache.store_server_list(url, &body) {
                warn!("caching the PIA server list: {e}");
            }
            Ok(list)
        }
        Err(e) => {
            let stale = cache
                .server_list(url, settings.server_list_ttl, true)
                .and_then(|body| serverlist::verify_and_parse(&body, &key).ok());
            match stale {
                Some(list) => {
                    warn!("{e}; using the older cached server list");
                    Ok(list)
                }
                None => Err(e),
            }
        }
    }
}

/// The wg servers of the wanted regions, in order; regions that cannot serve are named in the error if none can.
fn candidates(
    list: &ServerList,
    wanted: &[String],
    need_port_forward: bool,
) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    for id in wanted {
        let region = match list.region(id) {
            None => {
                skipped.push(format!("{id}: not in the server list"));
                continue;
            }
            Some(r) if r.offline => {
                skipped.push(format!("{id}: offline"));
                continue;
            }
            Some(r) if need_port_forward && !r.port_forward => {
                skipped.push(format!("{id}: no port forwarding there"));
                continue;
            }
            Some(r) => r,
        };
        let meta: Vec<PiaHost> = region
            .servers
            .meta
            .iter()
            .filter(|s| settings::check_cn(&s.cn).is_ok())
            .map(|s| PiaHost {
                ip: s.ip,
                cn: s.cn.clone(),
            })
            .collect();
        let before = targets.len();
        for server in &region.servers.wg {
            if settings::check_cn(&server.cn).is_ok() {
                targets.push(Target {
                    region: id.clone(),
                    host: PiaHost {
                        ip: server.ip,
                        cn: server.cn.clone(),
                    },
                    port: server.port,
                    meta: meta.clone(),
                    dedicated_ip: false,
                });
            }
        }
        if targets.len() == before {
            skipped.push(format!("{id}: no WireGuard server listed"));
        }
    }
    if !skipped.is_empty() && !targets.is_empty() {
        info!("PIA regions skipped: {}", skipped.join("; "));
    }
    if targets.is_empty() {
        return Err(format!("no usable PIA region ({})", skipped.join("; ")));
    }
    Ok(targets)
}

/// A fresh Curve25519 key pair, clamped as `wg genkey` does.
fn key_pair() -> Result<(Key, Key), String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system has no randomness to make a key")?;
    bytes[0] &= 248;
    bytes[31] = (bytes[31] & 127) | 64;
    let secret = x25519_dalek::StaticSecret::from(bytes);
    bytes.fill(0);
    let public = x25519_dalek::PublicKey::from(&secret);
    Ok((
        Key::from_bytes(secret.to_bytes()),
        Key::from_bytes(public.to_bytes()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(json: &str) -> ServerList {
        ServerList::parse(json.as_bytes()).unwrap()
    }

    /// PIA's shape: groups named as PIA names them, servers found by service; `b`'s WireGuard servers are in a
    /// group whose API port differs.
    const LIST: &str = r#"{"groups":{"wg":[{"name":"wireguard","ports":[1337]}],"meta":[{"name":"meta","ports":[443,8080]}],
        "wg_alt":[{"name":"wireguard","ports":[2337,1337]}]},"regions":[
        {"id":"a","port_forward":false,"servers":{"meta":[{"ip":"192.0.2.1","cn":"ameta"}],"wg":[{"ip":"192.0.2.2","cn":"a1"},{"ip":"192.0.2.3","cn":"a2"}]}},
        {"id":"b","port_forward":true,"servers":{"wg_alt":[{"ip":"192.0.2.4","cn":"b1"}]}},
        {"id":"off","offline":true,"servers":{"wg":[{"ip":"192.0.2.5","cn":"o1"}]}},
        {"id":"bad","servers":{"wg":[{"ip":"192.0.2.6","cn":"x/y"}]}}]}"#;

    #[test]
    fn candidates_follow_the_profile_order_and_skip_what_cannot_serve() {
        let l = list(LIST);
        let wanted: Vec<String> = ["off", "b", "a", "nope"].map(String::from).to_vec();
        let t = candidates(&l, &wanted, false).unwrap();
        let names: Vec<(&str, u16)> = t.iter().map(|t| (t.host.cn.as_str(), t.port)).collect();
        assert_eq!(names, [("b1", 2337), ("a1", 1337), ("a2", 1337)]);
        assert_eq!(t[1].meta[0].cn, "ameta");
        let t = candidates(&l, &wanted, true).unwrap();
        assert_eq!(t.len(), 1, "only b forwards ports");
        let e = candidates(&l, &["off".into(), "bad".into(), "zz".into()], false).unwrap_err();
        assert_eq!(
            e,
            "no usable PIA region (off: offline; bad: no WireGuard server listed; zz: not in the server list)"
        );
    }

    #[test]
    fn key_pairs_are_fresh_and_match() {
        let (private, public) = key_pair().unwrap();
        let (private2, _) = key_pair().unwrap();
        assert_ne!(private, private2);
        let derived =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*private.as_bytes()));
        assert_eq!(derived.as_bytes(), public.as_bytes());
        assert_eq!(private.as_bytes()[0] & 7, 0);
    }
}
