//! A `provider = "pia"` profile's settings, as the policy gives them (checked there, with line numbers).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_TOKEN_URL: &str = "https://www.privateinternetaccess.com/api/client/v2/token";
pub const DEFAULT_SERVER_LIST_URL: &str = "https://serverlist.piaservers.net/vpninfo/servers/v6";
pub const DEFAULT_DEDICATED_IP_URL: &str =
    "https://www.privateinternetaccess.com/api/client/v2/dedicated_ip";
pub const DEFAULT_PORT_FILE: &str = "/run/pia-port";
/// PIA wants bindPort at least every 15 minutes.
pub const DEFAULT_BIND_INTERVAL: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_SERVER_LIST_TTL: Duration = Duration::from_secs(6 * 3600);
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(5);
/// Inside the 30 s the shipped hooks.d entries give the hook, with room for the rest of the start.
pub const DEFAULT_API_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct PiaSettings {
    /// TOML with username, password and optionally dedicated_ip_token; mode 0600.
    pub credentials: PathBuf,
    /// Region ids, tried in order.
    pub regions: Vec<String>,
    /// PIA's CA (ca.rsa.4096.crt): the only root for meta, WireGuard API and port-forwarding servers.
    pub ca: PathBuf,
    /// PIA's regions-list public key (PEM SPKI); needed unless `server` is fixed.
    pub regions_key: Option<PathBuf>,
    /// A fixed WireGuard server instead of the list's regions.
    pub server: Option<PiaHost>,
    /// Get the token from the region's meta server (by IP, PIA's CA) instead of the web API.
    pub token_via_meta: bool,
    pub port_forwarding: bool,
    /// Where the forwarded port is written inside the container.
    pub port_file: String,
    /// Keep the forwarded port across restarts: reuse a still-valid signature of this profile's, on its server.
    pub port_persist: bool,
    /// When the tunnel goes unhealthy, register a fresh key (same region first, then the profile's regions)
    /// and apply it in place.
    pub reconnect: bool,
    pub bind_interval: Duration,
    pub server_list_ttl: Duration,
    /// Bound on each HTTP call.
    pub api_timeout: Duration,
    /// Bound on all of a start's HTTP calls together.
    pub api_deadline: Duration,
    /// Roots for the web API instead of the system's (a private mirror, or the test lab).
    pub api_ca: Option<PathBuf>,
    pub token_url: String,
    pub server_list_url: String,
    pub dedicated_ip_url: String,
}

/// One of PIA's own servers: reached at `ip`, its certificate checked for `cn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiaHost {
    pub ip: IpAddr,
    pub cn: String,
}

impl std::fmt::Display for PiaHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.cn, self.ip)
    }
}

/// PIA's server names go into URLs and SNI: host-name characters only.
pub fn check_cn(cn: &str) -> Result<(), String> {
    let ok = !cn.is_empty()
        && cn.len() <= 253
        && cn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !cn.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "server name {:?} is not a host name",
            cn.chars().take(64).collect::<String>()
        ))
    }
}

impl PiaSettings {
    /// A profile with `credentials` and `ca` and every other setting at its default (no regions yet).
    pub fn new(credentials: PathBuf, ca: PathBuf) -> PiaSettings {
        PiaSettings {
            credentials,
            regions: Vec::new(),
            ca,
            regions_key: None,
            server: None,
            token_via_meta: false,
            port_forwarding: false,
            port_file: DEFAULT_PORT_FILE.to_owned(),
            port_persist: false,
            reconnect: true,
            bind_interval: DEFAULT_BIND_INTERVAL,
            server_list_ttl: DEFAULT_SERVER_LIST_TTL,
            api_timeout: DEFAULT_API_TIMEOUT,
            api_deadline: DEFAULT_API_DEADLINE,
            api_ca: None,
            token_url: DEFAULT_TOKEN_URL.to_owned(),
            server_list_url: DEFAULT_SERVER_LIST_URL.to_owned(),
            dedicated_ip_url: DEFAULT_DEDICATED_IP_URL.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_must_be_host_names() {
        assert!(check_cn("vancouver402").is_ok());
        assert!(check_cn("a.b-c").is_ok());
        for bad in ["", "a/b", "a b", "-a", "x:1", "a@b"] {
            assert!(check_cn(bad).is_err(), "{bad:?}");
        }
    }
}
