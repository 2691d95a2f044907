//! PIA port forwarding, run by the tunnel's supervisor (`hook::supervisor`): a round gets a signature from the
//! tunnel's server when there is none or it expires soon, and binds its port; the port is then published
//! (opened in the container's table, written to `port_file` inside the container and to
//! `<state_dir>/<key>.port`). Every call goes through the tunnel, from a thread inside the container's netns.
//!
//! `port_persist`: a signature this profile got is kept in `<state_dir>/pia/port-<hash>.json` (0600: its payload
//! carries the token), with the server it belongs to and the tunnel that holds it. A later tunnel of the
//! profile on that server reuses it while it is valid and no live tunnel holds it, so the port stays the same
//! across restarts for as long as PIA honours the signature (about two months).

use super::api::{Api, ApiError, Signature};
use super::cache::Cache;
use super::credentials::Credentials;
use super::settings::{PiaHost, PiaSettings};
use super::{runtime, PiaRecord, Tokens};
use crate::sys::container_file;
use crate::sys::deadline::Deadline;
use crate::sys::names::fnv1a64;
use crate::sys::netns::NetNs;
use crate::sys::private_dir::PrivateDir;
use log::info;
use serde::{Deserialize, Serialize};
use std::io;
use std::time::{Duration, SystemTime};

fn port_file(key: &str) -> String {
    format!("{key}.port")
}

/// The forwarded port as the supervisor last bound it, from the host-side file.
pub fn current_port(state: &PrivateDir, key: &str) -> Option<u16> {
    let bytes = state.read(&port_file(key)).ok()??;
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
}

/// Removes the host-side port file.
pub fn remove_files(state: &PrivateDir, key: &str) {
    let _ = state.remove(&port_file(key));
    // The port-forwarding helper of an earlier version logged beside it.
    let _ = state.remove(&format!("{key}.pf.log"));
}

/// A persisted signature: the port, the server that gave it, until when, and which tunnel holds it.
#[derive(Serialize, Deserialize)]
struct Persisted {
    server_cn: String,
    server_ip: std::net::IpAddr,
    region: String,
    payload: String,
    signature: String,
    port: u16,
    /// Seconds since the epoch.
    expires_at: u64,
    holder: String,
}

fn persist_name(profile: &str) -> String {
    format!("port-{:016x}.json", fnv1a64(profile.as_bytes()))
}

/// The server a persisted port of `profile` is on, and its region, if one is valid for an hour yet and held by
/// no live tunnel (`held` says whether the named tunnel still exists): registration tries it first.
pub fn persisted_server(
    state: &PrivateDir,
    profile: &str,
    held: impl Fn(&str) -> bool,
) -> Option<(String, PiaHost)> {
    let p = load_persisted(state, profile)?;
    let usable =
        p.expires_at > epoch(SystemTime::now() + Duration::from_secs(3600)) && !held(&p.holder);
    usable.then_some((
        p.region,
        PiaHost {
            ip: p.server_ip,
            cn: p.server_cn,
        },
    ))
}

fn load_persisted(state: &PrivateDir, profile: &str) -> Option<Persisted> {
    let cache = state.subdir("pia").ok()?;
    let bytes = cache.read(&persist_name(profile)).ok()??;
    serde_json::from_slice(&bytes).ok()
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One tunnel's port forwarding: its signature, and whether the bound port is published.
pub struct Forwarder<'a> {
    pub settings: &'a PiaSettings,
    credentials: Credentials,
    state: &'a PrivateDir,
    cache: Cache,
    profile: &'a str,
    /// The tunnel's key (its record's name): the host-side port file's name, a persisted signature's holder.
    key: &'a str,
    signature: Option<Signature>,
    /// The port published (opened, written) last; None after a renewal replaced the table.
    published: Option<u16>,
}

impl<'a> Forwarder<'a> {
    pub fn new(
        settings: &'a PiaSettings,
        credentials: Credentials,
        state: &'a PrivateDir,
        profile: &'a str,
        key: &'a str,
    ) -> Result<Forwarder<'a>, String> {
        Ok(Forwarder {
            settings,
            credentials,
            cache: Cache::open(state)?,
            state,
            profile,
            key,
            signature: None,
            published: None,
        })
    }

    /// The tunnel is on another server now (or its table was replaced): a new signature (unless a persisted
    /// one is for that server) and the port published again.
    pub fn server_changed(&mut self) {
        self.signature = None;
        self.published = None;
    }

    /// One bindPort on the tunnel's server (with a signature first when there is none or it expires within two
    /// bind intervals), then the port published if it is new. `ns` is the container's netns.
    pub fn round(
        &mut self,
        pia: &PiaRecord,
        ns: &NetNs,
        held: &dyn Fn(&str) -> bool,
    ) -> Result<u16, String> {
        let deadline = Deadline::after(self.settings.api_deadline, "api_deadline");
        let api = Api::new(self.settings, deadline)?;
        // The port-forwarding API answers on the server's tunnel address, under the server's name.
        let host = PiaHost {
            ip: pia.server_vip,
            cn: pia.server_cn.clone(),
        };
        let renew_before =
            SystemTime::now() + (2 * self.settings.bind_interval).max(Duration::from_secs(60));
        if self.signature.is_none() && self.settings.port_persist {
            self.signature = self.take_persisted(pia, renew_before, held);
        }
        if self
            .signature
            .as_ref()
            .is_none_or(|s| s.expires_at < renew_before)
        {
            let signature = self.new_signature(&api, &host, pia, ns)?;
            info!(
                "tunnel {}: signature for port {} until {}",
                self.key,
                signature.port,
                humantime::format_rfc3339_seconds(signature.expires_at)
            );
            self.signature = Some(signature);
            self.persist(pia);
        }
        let signature = self.signature.as_ref().expect("set above");
        let bound = in_netns(ns, |rt| rt.block_on(api.bind_port(&host, signature)))?;
        if let Err(e) = bound {
            // A refused signature is not worth keeping: get a new one next round.
            self.signature = None;
            return Err(e);
        }
        let port = signature.port;
        if self.published != Some(port) {
            self.publish(port, pia, ns)?;
            self.published = Some(port);
        }
        Ok(port)
    }

    fn new_signature(
        &self,
        api: &Api,
        host: &PiaHost,
        pia: &PiaRecord,
        ns: &NetNs,
    ) -> Result<Signature, String> {
        let tokens = Tokens {
            api,
            cache: &self.cache,
            credentials: &self.credentials,
            via_meta: self.settings.token_via_meta,
        };
        let meta = pia.meta_hosts();
        let rt = runtime()?;
        let token = rt.block_on(tokens.get(&meta))?;
        match in_netns(ns, |rt| rt.block_on(api.get_signature(host, &token)))? {
            Err(ApiError::LoginFailed) => {
                let token = rt.block_on(tokens.renew(&meta))?;
                in_netns(ns, |rt| rt.block_on(api.get_signature(host, &token)))?
            }
            other => other,
        }
        .map_err(|e| e.to_string())
    }

    /// A persisted signature of this profile for this very server, valid past `renew_before`, that no live
    /// tunnel holds: claimed for this tunnel.
    fn take_persisted(
        &self,
        pia: &PiaRecord,
        renew_before: SystemTime,
        held: &dyn Fn(&str) -> bool,
    ) -> Option<Signature> {
        let mut p = load_persisted(self.state, self.profile)?;
        let ours = p.holder == self.key;
        if p.server_cn != pia.server_cn
            || p.server_ip != pia.server_ip
            || p.expires_at <= epoch(renew_before)
            || (!ours && held(&p.holder))
        {
            return None;
        }
        info!(
            "tunnel {}: reusing the persisted signature for port {} (port_persist)",
            self.key, p.port
        );
        p.holder = self.key.to_owned();
        self.write_persisted(&p);
        Some(Signature {
            payload: std::mem::take(&mut p.payload),
            signature: std::mem::take(&mut p.signature),
            port: p.port,
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(p.expires_at),
        })
    }

    fn persist(&self, pia: &PiaRecord) {
        if !self.settings.port_persist {
            return;
        }
        let Some(s) = &self.signature else { return };
        self.write_persisted(&Persisted {
            server_cn: pia.server_cn.clone(),
            server_ip: pia.server_ip,
            region: pia.region.clone(),
            payload: s.payload.clone(),
            signature: s.signature.clone(),
            port: s.port,
            expires_at: epoch(s.expires_at),
            holder: self.key.to_owned(),
        });
    }

    fn write_persisted(&self, p: &Persisted) {
        let written = serde_json::to_vec(p)
            .map_err(io::Error::other)
            .and_then(|body| {
                self.state.subdir("pia").map_err(io::Error::other)?.write(
                    &persist_name(self.profile),
                    &body,
                    0o600,
                )
            });
        if let Err(e) = written {
            log::warn!(
                "tunnel {}: keeping the port for port_persist: {e}",
                self.key
            );
        }
    }

    fn publish(&self, port: u16, pia: &PiaRecord, ns: &NetNs) -> Result<(), String> {
        // The port opens in the container's table (the old one shuts in the same transaction) before the
        // workload can read it.
        crate::sys::nft::set_forwarded_port(ns, port)
            .map_err(|e| format!("letting port {port} in through the tunnel (nftables): {e}"))?;
        let text = format!("{port}\n");
        container_file::write(
            pia.container_pid,
            &pia.rootfs,
            &self.settings.port_file,
            text.as_bytes(),
        )
        .map_err(|e| format!("writing the port inside the container: {e}"))?;
        let host = port_file(self.key);
        self.state
            .write(&host, text.as_bytes(), 0o644)
            .map_err(|e| format!("{}/{host}: {e}", self.state.path().display()))
    }
}

/// Runs `work` on a thread inside the container's netns, with a runtime of its own there.
fn in_netns<T: Send>(
    ns: &NetNs,
    work: impl FnOnce(&tokio::runtime::Runtime) -> T + Send,
) -> Result<T, String> {
    ns.run(|| {
        let rt = runtime().map_err(io::Error::other)?;
        Ok(work(&rt))
    })
    .map_err(|e| format!("entering the container's netns: {e}"))
}
