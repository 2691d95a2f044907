//! The TOML policy: which tunnels exist and what a container may choose. Strict: unknown keys, wrong types
//! and bad values are errors naming `FILE:LINE:COLUMN`, on one line.

use crate::config::annotations;
use crate::config::health::{self, HealthSettings};
use crate::config::ports::{self, Inbound, PortMap};
use crate::provider::pia::settings::{self as pia, check_cn, PiaHost, PiaSettings};
use crate::sys::deadline::{DEFAULT_CREATE_TIMEOUT, DEFAULT_RESOLVE_TIMEOUT, HOOK_TIMEOUT};
use crate::sys::regular_file;
use ipnetwork::IpNetwork;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

pub const DEFAULT_POLICY_PATH: &str = "/etc/wg-oci-hook/policy.toml";
/// The annotations a policy may let containers set (besides wg.enable, which every container may set).
pub const KNOWN_CHOOSABLE: &[&str] = &[
    annotations::PROFILE,
    annotations::PORTS,
    annotations::REGION,
];
pub const MAX_POLICY_BYTES: u64 = 1 << 20;
/// Names the policy for the hook and the wrapper when no flag does.
pub const POLICY_ENV: &str = "WG_OCI_HOOK_POLICY";

/// The policy someone named: `flag` (`--policy`, `--wg-policy`), else `$WG_OCI_HOOK_POLICY`.
pub fn named_path(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(POLICY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// The policy to read: the one named, else the default path.
pub fn path(flag: Option<&Path>) -> PathBuf {
    named_path(flag).unwrap_or_else(|| PathBuf::from(DEFAULT_POLICY_PATH))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Kernel,
    Userspace,
    Auto,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub path: PathBuf,
    pub default_profile: Option<String>,
    pub interface: String,
    pub state_dir: PathBuf,
    pub backend: BackendChoice,
    /// The userspace daemon to run instead of the built-in one (wireguard-go); None: the built-in one.
    pub userspace_command: Option<Vec<String>>,
    /// The real OCI runtime `wg-oci-runtime` execs (a name on PATH or a path).
    pub runtime: String,
    pub allowed_annotations: Vec<String>,
    pub log_level: Option<log::LevelFilter>,
    /// Where the hook's log lines go (`log`).
    pub log: LogDestination,
    /// Bound on resolving each Endpoint host name of a wg-quick profile.
    pub resolve_timeout: Duration,
    /// Bound on the whole createRuntime; below the engine's hook timeout (`deadline::HOOK_TIMEOUT`).
    pub create_timeout: Duration,
    pub profiles: BTreeMap<String, Profile>,
    /// The line of each of `backend`, `userspace_command` and `log` the policy sets, for `check`.
    pub lines: BTreeMap<&'static str, usize>,
}

/// Where the hook's log lines go: the policy's `log`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogDestination {
    /// systemd-journald's native protocol, with structured fields.
    Journald,
    /// `/dev/log`, RFC 3164 as syslog(3) writes it: journald listens there on a systemd host, rsyslog elsewhere.
    #[default]
    Syslog,
    /// A file of our own, appended to: an absolute path.
    File(PathBuf),
    /// The hook's stderr, which the engine shows only when the hook fails.
    Stderr,
}

impl LogDestination {
    fn parse(text: &str) -> Result<LogDestination, String> {
        match text {
            "journald" => Ok(LogDestination::Journald),
            "syslog" => Ok(LogDestination::Syslog),
            "stderr" => Ok(LogDestination::Stderr),
            _ => match text.strip_prefix("file:") {
                Some(path) if path.starts_with('/') && !path.ends_with('/') && !path.contains('\0') => {
                    Ok(LogDestination::File(PathBuf::from(path)))
                }
                Some(_) => Err(format!(
                    "log: {text:?}: the file must be an absolute path, such as \"file:/var/log/wg-oci-hook.log\""
                )),
                None => Err(format!(
                    "log: {text:?}: expected \"journald\", \"syslog\", \"stderr\" or \"file:/absolute/path\""
                )),
            },
        }
    }
}

impl std::fmt::Display for LogDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogDestination::Journald => f.write_str("journald"),
            LogDestination::Syslog => f.write_str("syslog"),
            LogDestination::File(path) => write!(f, "file:{}", path.display()),
            LogDestination::Stderr => f.write_str("stderr"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// Where the tunnel comes from.
    pub source: ProfileSource,
    /// Drop everything that does not go through the tunnel, to lo, or to `allow_local` (default on).
    pub kill_switch: bool,
    /// CIDRs allowed outside the tunnel; None when the policy does not say (which means none).
    pub allow_local: Option<Vec<IpNetwork>>,
    /// Inbound connections on the tunnel, redirected to the container's ports.
    pub port_maps: Vec<PortMap>,
    /// What the tunnel's side may open; None when the policy does not say (the default depends on the
    /// tunnel: see `profile::inbound_or_default`).
    pub inbound: Option<Inbound>,
    /// A static profile that many network namespaces may use at once (`shared = true`). One WireGuard key
    /// in two places steals its own endpoint: the server answers whichever spoke last, so only a server that
    /// expects it (one that pins nothing to the endpoint, with roaming tolerated) works this way.
    pub shared: bool,
    /// How the tunnel's supervisor judges it, and where the container reads the verdict.
    pub health: HealthSettings,
    /// Where the profile stands in the policy, for `check` to name the line that points at a file: `profile`
    /// (its `[profiles.NAME]` header) and each of `config`, `pool`, `credentials`, `ca`, `regions_key` and
    /// `api_ca` it sets.
    pub lines: BTreeMap<&'static str, usize>,
}

#[derive(Debug, Clone)]
pub enum ProfileSource {
    /// A wg-quick file, absolute.
    WgQuick(PathBuf),
    /// A directory of wg-quick files (`*.conf`), absolute: each network namespace leases one of its own.
    Pool(PathBuf),
    /// A Private Internet Access registration per container.
    Pia(Box<PiaSettings>),
}

impl Profile {
    /// The wg-quick file of a static profile.
    pub fn wg_quick(&self) -> Option<&Path> {
        match &self.source {
            ProfileSource::WgQuick(path) => Some(path),
            ProfileSource::Pool(_) | ProfileSource::Pia(_) => None,
        }
    }

    pub fn pia(&self) -> Option<&PiaSettings> {
        match &self.source {
            ProfileSource::Pia(settings) => Some(settings),
            ProfileSource::WgQuick(_) | ProfileSource::Pool(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default_profile: Option<Spanned<String>>,
    interface: Option<Spanned<String>>,
    state_dir: Option<Spanned<PathBuf>>,
    backend: Option<Spanned<BackendChoice>>,
    userspace_command: Option<Spanned<Vec<String>>>,
    /// Accepted, and ignored: policies written for versions that ran the nft program to load the kill switch
    /// (the table now goes over netlink) still load.
    #[serde(rename = "nft_command")]
    _nft_command: Option<String>,
    runtime: Option<Spanned<String>>,
    #[serde(default)]
    allowed_annotations: Vec<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    log: Option<Spanned<String>>,
    resolve_timeout: Option<Spanned<u64>>,
    create_timeout: Option<Spanned<u64>>,
    #[serde(default)]
    profiles: BTreeMap<Spanned<String>, RawProfile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    config: Option<Spanned<PathBuf>>,
    pool: Option<Spanned<PathBuf>>,
    shared: Option<Spanned<bool>>,
    kill_switch: Option<bool>,
    allow_local: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    port_maps: Vec<Spanned<String>>,
    /// `"replies"`, `"all"` or a list of ports: read by `inbound`.
    inbound: Option<Spanned<toml::Value>>,
    health_file: Option<Spanned<String>>,
    health_interval: Option<Spanned<u64>>,
    stale_after: Option<Spanned<u64>>,
    probe: Option<Spanned<String>>,
    provider: Option<Spanned<String>>,
    // The keys of a `provider = "pia"` profile (refused on other profiles).
    credentials: Option<Spanned<PathBuf>>,
    regions: Option<Spanned<Vec<Spanned<String>>>>,
    ca: Option<Spanned<PathBuf>>,
    regions_key: Option<Spanned<PathBuf>>,
    server: Option<Spanned<RawServer>>,
    token_via_meta: Option<Spanned<bool>>,
    port_forwarding: Option<Spanned<bool>>,
    port_file: Option<Spanned<String>>,
    port_persist: Option<Spanned<bool>>,
    reconnect: Option<Spanned<bool>>,
    bind_interval: Option<Spanned<u64>>,
    server_list_ttl: Option<Spanned<u64>>,
    api_timeout: Option<Spanned<u64>>,
    api_deadline: Option<Spanned<u64>>,
    api_ca: Option<Spanned<PathBuf>>,
    token_url: Option<Spanned<String>>,
    server_list_url: Option<Spanned<String>>,
    dedicated_ip_url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    ip: String,
    cn: String,
}

impl Policy {
    /// The policy decides what runs as root for every container: only root may have written it. Its path is fixed
    /// by the operator, who can name the real file, so a symlink is refused rather than followed.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let refuse = |why: String| PolicyError(format!("{}: {why}", path.display()));
        let (file, meta) = regular_file::open(path).map_err(|e| match e.as_str() {
            regular_file::SYMLINK => refuse(format!("{e}; name the real file")),
            _ => refuse(e),
        })?;
        if meta.uid() != 0 {
            return Err(refuse(format!(
                "not owned by root (owner uid {})",
                meta.uid()
            )));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(refuse(format!(
                "writable by group or others (mode {mode:04o}); run chmod go-w {}",
                path.display()
            )));
        }
        let text = regular_file::read_capped_text(file, MAX_POLICY_BYTES)
            .map_err(|e| PolicyError(format!("{}: {e}", path.display())))?;
        Policy::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let at = |span: Range<usize>, message: &str| {
            let (line, column) = line_column(text, span.start);
            PolicyError(format!(
                "{}:{line}:{column}: {}",
                path.display(),
                one_line(message)
            ))
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => at(span, e.message()),
            None => PolicyError(format!("{}: {}", path.display(), one_line(e.message()))),
        })?;
        let line_of = |span: Range<usize>| line_column(text, span.start).0;
        let mut lines = BTreeMap::new();
        for (key, span) in [
            ("backend", raw.backend.as_ref().map(Spanned::span)),
            (
                "userspace_command",
                raw.userspace_command.as_ref().map(Spanned::span),
            ),
            ("log", raw.log.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span {
                lines.insert(key, line_of(span));
            }
        }

        let interface = match raw.interface {
            Some(name) if !is_valid_ifname(name.get_ref()) => {
                return Err(at(
                    name.span(),
                    "interface: expected 1-15 characters of A-Z a-z 0-9 _ . -",
                ));
            }
            Some(name) => name.into_inner(),
            None => "wg0".to_owned(),
        };
        let state_dir = match raw.state_dir {
            Some(dir) if !dir.get_ref().is_absolute() => {
                return Err(at(dir.span(), "state_dir: must be an absolute path"))
            }
            Some(dir) => dir.into_inner(),
            None => PathBuf::from("/run/wg-oci-hook"),
        };
        let userspace_command = match raw.userspace_command {
            Some(cmd) if cmd.get_ref().is_empty() || cmd.get_ref().iter().any(|a| a.is_empty()) => {
                return Err(at(
                    cmd.span(),
                    "userspace_command: must be a non-empty list of non-empty strings",
                ));
            }
            Some(cmd) => Some(cmd.into_inner()),
            None => None,
        };
        let runtime = match raw.runtime {
            Some(r) if r.get_ref().is_empty() => {
                return Err(at(r.span(), "runtime: must not be empty"));
            }
            Some(r) => r.into_inner(),
            None => "runc".to_owned(),
        };
        let mut allowed_annotations = Vec::new();
        for a in raw.allowed_annotations {
            if !KNOWN_CHOOSABLE.contains(&a.get_ref().as_str()) {
                let msg = format!(
                    "allowed_annotations: unknown annotation {:?} (known: {})",
                    a.get_ref(),
                    KNOWN_CHOOSABLE.join(", ")
                );
                return Err(at(a.span(), &msg));
            }
            allowed_annotations.push(a.into_inner());
        }
        let log_level = match raw.log_level {
            Some(level) => match level.get_ref().parse::<log::LevelFilter>() {
                Ok(l) => Some(l),
                Err(_) => {
                    return Err(at(
                        level.span(),
                        "log_level: expected off, error, warn, info, debug or trace",
                    ))
                }
            },
            None => None,
        };
        let log = match raw.log {
            Some(log) => LogDestination::parse(log.get_ref()).map_err(|e| at(log.span(), &e))?,
            None => LogDestination::default(),
        };
        let (resolve_timeout, create_timeout) =
            timeouts(raw.resolve_timeout, raw.create_timeout, &at)?;
        let base = path.parent().unwrap_or(Path::new("/"));
        let mut profiles = BTreeMap::new();
        for (name, mut profile) in raw.profiles {
            let span = name.span();
            let name = name.into_inner();
            if !annotations::is_valid_name(&name) {
                let msg = format!("profile name {name:?}: expected 1-64 characters of A-Z a-z 0-9 _ . -, not starting with . or -");
                return Err(at(span, &msg));
            }
            let allow_local = match profile.allow_local.take() {
                Some(list) => {
                    let mut nets = Vec::with_capacity(list.len());
                    for item in list {
                        let net = item.get_ref().parse::<IpNetwork>().map_err(|_| {
                            at(
                                item.span(),
                                &format!(
                                    "profile {name:?}: allow_local: {:?} is not a CIDR such as 10.88.0.0/16 or fd00::/64",
                                    item.get_ref()
                                ),
                            )
                        })?;
                        nets.push(net);
                    }
                    Some(nets)
                }
                None => None,
            };
            let mut port_maps = Vec::with_capacity(profile.port_maps.len());
            for item in std::mem::take(&mut profile.port_maps) {
                let map = item
                    .get_ref()
                    .parse::<PortMap>()
                    .and_then(|m| ports::add_port_map(&mut port_maps, m));
                if let Err(e) = map {
                    return Err(at(
                        item.span(),
                        &format!("profile {name:?}: port_maps: {:?}: {e}", item.get_ref()),
                    ));
                }
            }
            let inbound =
                match profile.inbound.take() {
                    Some(value) => Some(inbound(value.get_ref()).map_err(|e| {
                        at(value.span(), &format!("profile {name:?}: inbound: {e}"))
                    })?),
                    None => None,
                };
            let kill_switch = profile.kill_switch.unwrap_or(true);
            let health = health_settings(&name, &mut profile, &at)?;
            let shared = profile.shared.clone();
            let mut lines = BTreeMap::from([("profile", line_of(span.clone()))]);
            for (key, span) in profile.file_spans() {
                lines.insert(key, line_of(span));
            }
            let source = profile_source(&name, span, profile, base, &at)?;
            let shared = match (shared, &source) {
                (None, _) => false,
                (Some(v), ProfileSource::WgQuick(_)) => v.into_inner(),
                (Some(v), ProfileSource::Pool(_)) => {
                    let msg = format!("profile {name:?}: shared: a pool leases each of its files to one network namespace; it cannot be shared");
                    return Err(at(v.span(), &msg));
                }
                (Some(v), ProfileSource::Pia(_)) => {
                    let msg = format!("profile {name:?}: shared: a provider profile registers a key per tunnel and is always shared");
                    return Err(at(v.span(), &msg));
                }
            };
            profiles.insert(
                name.clone(),
                Profile {
                    name,
                    source,
                    kill_switch,
                    allow_local,
                    port_maps,
                    inbound,
                    shared,
                    health,
                    lines,
                },
            );
        }
        if profiles.is_empty() {
            return Err(PolicyError(format!(
                "{}: no [profiles.NAME] defined",
                path.display()
            )));
        }
        let default_profile = match raw.default_profile {
            Some(d) if !profiles.contains_key(d.get_ref()) => {
                return Err(at(
                    d.span(),
                    &format!("default_profile: no profile named {:?}", d.get_ref()),
                ));
            }
            d => d.map(Spanned::into_inner),
        };
        Ok(Policy {
            path: path.to_owned(),
            default_profile,
            interface,
            state_dir,
            backend: raw.backend.map_or(BackendChoice::Auto, Spanned::into_inner),
            userspace_command,
            runtime,
            allowed_annotations,
            log_level,
            log,
            resolve_timeout,
            create_timeout,
            profiles,
            lines,
        })
    }

    /// Whether containers may set annotation `key`.
    pub fn allows(&self, key: &str) -> bool {
        self.allowed_annotations.iter().any(|a| a == key)
    }

    /// The profile for a container: the one it asked for (if the policy lets it choose), else `default` (a
    /// profile the runtime was bound to, which must exist), else the policy's default.
    pub fn select_profile_or(
        &self,
        requested: Option<&str>,
        default: Option<&str>,
    ) -> Result<&Profile, PolicyError> {
        match (requested, default) {
            (None, Some(name)) => self.profiles.get(name).ok_or_else(|| {
                PolicyError(format!(
                    "--profile {name:?}: no such profile in {}",
                    self.path.display()
                ))
            }),
            _ => self.select_profile(requested),
        }
    }

    /// The profile for a container: the one it asked for (if the policy lets it choose), else the default.
    pub fn select_profile(&self, requested: Option<&str>) -> Result<&Profile, PolicyError> {
        let path = self.path.display();
        match requested {
            Some(name) => {
                if !self.allows(annotations::PROFILE) {
                    return Err(PolicyError(format!(
                        "annotation {}={name:?}: the policy {path} does not let containers choose a profile \
                         (allowed_annotations)",
                        annotations::PROFILE
                    )));
                }
                self.profiles.get(name).ok_or_else(|| {
                    PolicyError(format!(
                        "annotation {}={name:?}: no such profile in {path}",
                        annotations::PROFILE
                    ))
                })
            }
            None => {
                let name = self.default_profile.as_deref().ok_or_else(|| {
                    PolicyError(format!(
                        "{path}: no default_profile and the container did not choose one ({})",
                        annotations::PROFILE
                    ))
                })?;
                Ok(&self.profiles[name])
            }
        }
    }
}

type At<'a> = dyn Fn(Range<usize>, &str) -> PolicyError + 'a;

/// A profile's key in whole seconds, within `range`; None when the policy does not set it.
fn seconds_in(
    name: &str,
    value: Option<Spanned<u64>>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
    at: &At,
) -> Result<Option<Duration>, PolicyError> {
    match value {
        Some(v) if !range.contains(v.get_ref()) => Err(at(
            v.span(),
            &format!(
                "profile {name:?}: {key} must be {} to {} seconds",
                range.start(),
                range.end()
            ),
        )),
        Some(v) => Ok(Some(Duration::from_secs(v.into_inner()))),
        None => Ok(None),
    }
}

/// A profile's `health_file`, `health_interval`, `stale_after` and `probe` (`config::health`).
fn health_settings(
    name: &str,
    raw: &mut RawProfile,
    at: &At,
) -> Result<HealthSettings, PolicyError> {
    let mut settings = HealthSettings::default();
    if let Some(file) = raw.health_file.take() {
        settings.file = health::parse_file(file.get_ref())
            .map_err(|e| at(file.span(), &format!("profile {name:?}: {e}")))?;
    }
    let seconds = |value, key: &str, range| seconds_in(name, value, key, range, at);
    if let Some(d) = seconds(
        raw.health_interval.take(),
        "health_interval",
        health::INTERVAL_RANGE,
    )? {
        settings.interval = d;
    }
    let stale_span = raw.stale_after.as_ref().map(Spanned::span);
    if let Some(d) = seconds(
        raw.stale_after.take(),
        "stale_after",
        health::STALE_AFTER_RANGE,
    )? {
        settings.stale_after = d;
    }
    if settings.stale_after < settings.interval {
        let span = stale_span.unwrap_or(0..0);
        return Err(at(
            span,
            &format!("profile {name:?}: stale_after must not be shorter than health_interval"),
        ));
    }
    if let Some(probe) = raw.probe.take() {
        settings.probe = Some(
            health::parse_probe(probe.get_ref())
                .map_err(|e| at(probe.span(), &format!("profile {name:?}: {e}")))?,
        );
    }
    Ok(settings)
}

/// `resolve_timeout` and `create_timeout`, in whole seconds. The engine kills a hook at its hooks.d `timeout`
/// (30 s) with no word of why, so the hook's own deadline must end first; a name lookup must end before that.
fn timeouts(
    resolve: Option<Spanned<u64>>,
    create: Option<Spanned<u64>>,
    at: &At,
) -> Result<(Duration, Duration), PolicyError> {
    let hook = HOOK_TIMEOUT.as_secs();
    let create_timeout = match create {
        Some(v) if !(1..hook).contains(v.get_ref()) => {
            let msg = format!(
                "create_timeout: must be 1 to {} seconds: the engine kills the hook at the {hook} s timeout of \
                 its hooks.d entry (and of wg-oci-runtime's), and the hook must fail with its own error first",
                hook - 1
            );
            return Err(at(v.span(), &msg));
        }
        Some(v) => Duration::from_secs(v.into_inner()),
        None => DEFAULT_CREATE_TIMEOUT,
    };
    let resolve_timeout = match resolve {
        Some(v) if *v.get_ref() == 0 || Duration::from_secs(*v.get_ref()) >= create_timeout => {
            let msg = format!(
                "resolve_timeout: must be 1 second or more and below create_timeout ({} s), which bounds \
                 the whole start",
                create_timeout.as_secs()
            );
            return Err(at(v.span(), &msg));
        }
        Some(v) => Duration::from_secs(v.into_inner()),
        // A shorter create_timeout still bounds it: a resolution waits for the earlier of the two.
        None => DEFAULT_RESOLVE_TIMEOUT,
    };
    Ok((resolve_timeout, create_timeout))
}

/// A static profile's wg-quick file, or a provider's settings; keys of the one kind are refused on the other.
fn profile_source(
    name: &str,
    span: Range<usize>,
    mut raw: RawProfile,
    base: &Path,
    at: &At,
) -> Result<ProfileSource, PolicyError> {
    let absolute = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let Some(provider) = raw.provider.take() else {
        if let Some(span) = raw.first_pia_span() {
            return Err(at(
                span,
                &format!("profile {name:?}: this key is only for provider = \"pia\" profiles"),
            ));
        }
        return match (raw.config, raw.pool) {
            (Some(config), None) => Ok(ProfileSource::WgQuick(absolute(config.into_inner()))),
            (None, Some(pool)) => Ok(ProfileSource::Pool(absolute(pool.into_inner()))),
            (Some(_), Some(pool)) => Err(at(
                pool.span(),
                &format!("profile {name:?}: config (one wg-quick file) and pool (a directory of them) exclude each other"),
            )),
            (None, None) => Err(at(
                span.clone(),
                &format!("profile {name:?}: missing config (the wg-quick file), pool (a directory of them) or provider"),
            )),
        };
    };
    if provider.get_ref() != "pia" {
        let msg = format!(
            "profile {name:?}: unknown provider {:?} (known: pia)",
            provider.get_ref()
        );
        return Err(at(provider.span(), &msg));
    }
    if let Some(span) = [
        raw.config.as_ref().map(Spanned::span),
        raw.pool.as_ref().map(Spanned::span),
    ]
    .into_iter()
    .flatten()
    .min_by_key(|r| r.start)
    {
        let msg = format!("profile {name:?}: a provider profile has no config file or pool (its tunnel comes from the provider)");
        return Err(at(span, &msg));
    }
    let need = |key: &str| {
        at(
            span.clone(),
            &format!("profile {name:?}: provider = \"pia\" needs {key}"),
        )
    };
    let credentials = absolute(
        raw.credentials
            .ok_or_else(|| need("credentials (the file with username and password)"))?
            .into_inner(),
    );
    let ca = absolute(
        raw.ca
            .ok_or_else(|| need("ca (PIA's CA certificate, ca.rsa.4096.crt)"))?
            .into_inner(),
    );
    let server = match raw.server {
        Some(server) => {
            let span = server.span();
            let RawServer { ip, cn } = server.into_inner();
            let ip = ip.parse().map_err(|_| {
                at(
                    span.clone(),
                    &format!("profile {name:?}: server.ip {ip:?} is not an IP address"),
                )
            })?;
            check_cn(&cn)
                .map_err(|e| at(span.clone(), &format!("profile {name:?}: server.cn: {e}")))?;
            Some(PiaHost { ip, cn })
        }
        None => None,
    };
    let mut regions = Vec::new();
    if let Some(list) = raw.regions {
        let list_span = list.span();
        for region in list.into_inner() {
            if !annotations::is_valid_name(region.get_ref()) {
                let msg = format!(
                    "profile {name:?}: regions: {:?} is not a region id such as \"ca_vancouver\"",
                    region.get_ref()
                );
                return Err(at(region.span(), &msg));
            }
            regions.push(region.into_inner());
        }
        if regions.is_empty() && server.is_none() {
            return Err(at(
                list_span,
                &format!("profile {name:?}: regions is empty"),
            ));
        }
    } else if server.is_none() {
        return Err(need("regions (PIA region ids, tried in order) or server"));
    }
    let regions_key = match raw.regions_key {
        Some(key) => Some(absolute(key.into_inner())),
        None if server.is_none() => {
            return Err(need("regions_key (PIA's regions-list public key)"))
        }
        None => None,
    };
    let token_via_meta = raw.token_via_meta.map(Spanned::into_inner).unwrap_or(false);
    if token_via_meta && server.is_some() {
        return Err(at(span.clone(), &format!("profile {name:?}: token_via_meta needs the regions' meta servers, which a fixed server has not")));
    }
    let port_forwarding = raw
        .port_forwarding
        .map(Spanned::into_inner)
        .unwrap_or(false);
    let port_file = match raw.port_file {
        Some(file) if !port_forwarding => {
            return Err(at(
                file.span(),
                &format!("profile {name:?}: port_file without port_forwarding = true"),
            ));
        }
        Some(file) => {
            let ok = file.get_ref().starts_with('/')
                && file.get_ref().len() <= 1024
                && !file.get_ref().ends_with('/')
                && !file.get_ref().split('/').any(|c| c == "..")
                && !file.get_ref().contains('\0');
            if !ok {
                return Err(at(file.span(), &format!("profile {name:?}: port_file must be an absolute path of a file inside the container, without ..")));
            }
            file.into_inner()
        }
        None => pia::DEFAULT_PORT_FILE.to_owned(),
    };
    let port_persist = match raw.port_persist {
        Some(v) if *v.get_ref() && !port_forwarding => {
            return Err(at(
                v.span(),
                &format!("profile {name:?}: port_persist without port_forwarding = true"),
            ));
        }
        Some(v) => v.into_inner(),
        None => false,
    };
    let reconnect = raw.reconnect.map(Spanned::into_inner).unwrap_or(true);
    let seconds = |value, key: &str, range, default| {
        seconds_in(name, value, key, range, at).map(|d| d.unwrap_or(default))
    };
    let bind_interval = seconds(
        raw.bind_interval,
        "bind_interval",
        1..=900,
        pia::DEFAULT_BIND_INTERVAL,
    )?;
    let server_list_ttl = seconds(
        raw.server_list_ttl,
        "server_list_ttl",
        0..=7 * 86400,
        pia::DEFAULT_SERVER_LIST_TTL,
    )?;
    let api_timeout = seconds(
        raw.api_timeout,
        "api_timeout",
        1..=60,
        pia::DEFAULT_API_TIMEOUT,
    )?;
    let api_deadline = seconds(
        raw.api_deadline,
        "api_deadline",
        1..=120,
        pia::DEFAULT_API_DEADLINE,
    )?;
    let url = |value: Option<Spanned<String>>, key: &str, default: &str| match value {
        Some(u) => match reqwest::Url::parse(u.get_ref()) {
            Ok(parsed) if parsed.scheme() == "https" && parsed.host_str().is_some() => {
                Ok(u.into_inner())
            }
            _ => Err(at(
                u.span(),
                &format!("profile {name:?}: {key} must be an https:// URL"),
            )),
        },
        None => Ok(default.to_owned()),
    };
    Ok(ProfileSource::Pia(Box::new(PiaSettings {
        credentials,
        regions,
        ca,
        regions_key,
        server,
        token_via_meta,
        port_forwarding,
        port_file,
        port_persist,
        reconnect,
        bind_interval,
        server_list_ttl,
        api_timeout,
        api_deadline,
        api_ca: raw.api_ca.map(|p| absolute(p.into_inner())),
        token_url: url(raw.token_url, "token_url", pia::DEFAULT_TOKEN_URL)?,
        server_list_url: url(
            raw.server_list_url,
            "server_list_url",
            pia::DEFAULT_SERVER_LIST_URL,
        )?,
        dedicated_ip_url: url(
            raw.dedicated_ip_url,
            "dedicated_ip_url",
            pia::DEFAULT_DEDICATED_IP_URL,
        )?,
    })))
}

impl RawProfile {
    /// Where each key that names a file stands.
    fn file_spans(&self) -> Vec<(&'static str, Range<usize>)> {
        fn s<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
            v.as_ref().map(Spanned::span)
        }
        [
            ("config", s(&self.config)),
            ("pool", s(&self.pool)),
            ("credentials", s(&self.credentials)),
            ("ca", s(&self.ca)),
            ("regions_key", s(&self.regions_key)),
            ("api_ca", s(&self.api_ca)),
        ]
        .into_iter()
        .filter_map(|(key, span)| Some((key, span?)))
        .collect()
    }

    /// Where the first PIA key of a non-PIA profile stands.
    fn first_pia_span(&self) -> Option<Range<usize>> {
        fn s<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
            v.as_ref().map(Spanned::span)
        }
        [
            s(&self.credentials),
            s(&self.regions),
            s(&self.ca),
            s(&self.regions_key),
            s(&self.server),
            s(&self.token_via_meta),
            s(&self.port_forwarding),
            s(&self.port_file),
            s(&self.port_persist),
            s(&self.reconnect),
            s(&self.bind_interval),
            s(&self.server_list_ttl),
            s(&self.api_timeout),
            s(&self.api_deadline),
            s(&self.api_ca),
            s(&self.token_url),
            s(&self.server_list_url),
            s(&self.dedicated_ip_url),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|r| r.start)
    }
}

/// Stricter than the kernel (which takes any byte but / : and whitespace): the name is also written into
/// nft rules, where a quote must never appear.
/// A profile's `inbound`: `"replies"`, `"all"`, or a list of `PORT/PROTO` and `FIRST-LAST/PROTO`.
fn inbound(value: &toml::Value) -> Result<Inbound, String> {
    match value {
        toml::Value::String(word) => word.parse(),
        toml::Value::Array(items) => {
            let mut ports = Vec::with_capacity(items.len());
            for item in items {
                ports.push(item.as_str().ok_or_else(|| {
                    "expected a list of strings such as [\"8080/tcp\", \"6000-6010/udp\"]".to_owned()
                })?);
            }
            Inbound::ports(ports)
        }
        _ => Err(
            "expected \"replies\", \"all\" or a list of ports such as [\"8080/tcp\", \"6000-6010/udp\"]"
                .to_owned(),
        ),
    }
}

fn is_valid_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Path::new("/etc/wg-oci-hook/policy.toml"))
    }

    fn err(text: &str) -> String {
        let e = parse(text).unwrap_err().0;
        assert!(!e.contains('\n'), "multi-line error: {e}");
        e
    }

    const MINIMAL: &str = "[profiles.vpn]\nconfig = \"vpn.conf\"\n";

    #[test]
    fn minimal_policy_gets_defaults_and_resolves_relative_config() {
        let p = parse(MINIMAL).unwrap();
        assert_eq!(p.interface, "wg0");
        assert_eq!(p.state_dir, PathBuf::from("/run/wg-oci-hook"));
        assert_eq!(p.backend, BackendChoice::Auto);
        assert_eq!(p.userspace_command, None);
        assert!(p.allowed_annotations.is_empty());
        assert_eq!(
            p.profiles["vpn"].wg_quick(),
            Some(Path::new("/etc/wg-oci-hook/vpn.conf"))
        );
    }

    #[test]
    fn full_policy_with_comments() {
        let p = parse(
            r#"
# the admin's policy
default_profile = "vpn"   # used when none is chosen
interface = "tun7"
state_dir = "/var/run/wgoh"
backend = "userspace"
userspace_command = ["/usr/bin/wireguard-go", "--verbose"]
allowed_annotations = ["wg.profile"]
log_level = "DEBUG"

[profiles.vpn]
config = "/etc/wg/vpn.conf"

[profiles."work-eu.2"]
config = "work.conf"
"#,
        )
        .unwrap();
        assert_eq!(p.default_profile.as_deref(), Some("vpn"));
        assert_eq!(p.interface, "tun7");
        assert_eq!(p.backend, BackendChoice::Userspace);
        assert_eq!(p.log_level, Some(log::LevelFilter::Debug));
        assert_eq!(
            p.profiles["work-eu.2"].wg_quick(),
            Some(Path::new("/etc/wg-oci-hook/work.conf"))
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_column() {
        let e = err("backend = \"auto\"\nbakend = \"kernel\"\n[profiles.vpn]\nconfig = \"a\"\n");
        assert!(e.starts_with("/etc/wg-oci-hook/policy.toml:2:1: "), "{e}");
        assert!(e.contains("bakend"), "{e}");
        let e = err("[profiles.vpn]\nconfig = \"a\"\nkill_swtich = true\n");
        assert!(e.starts_with("/etc/wg-oci-hook/policy.toml:3:1: "), "{e}");
    }

    #[test]
    fn wrong_types_and_values_are_errors() {
        assert!(err(&format!("backend = 1\n{MINIMAL}")).contains(":1:11: "));
        assert!(err(&format!("backend = \"wireguard\"\n{MINIMAL}")).contains(":1:11: "));
        assert!(err(&format!("log_level = \"loud\"\n{MINIMAL}")).contains("log_level"));
        assert!(err("[profiles.vpn]\nconfig = 3\n").contains(":2:10: "));
        assert!(err("default_profile = [\n").contains("policy.toml:"));
    }

    #[test]
    fn health_settings_have_defaults_and_bad_ones_name_their_line() {
        let p = parse(MINIMAL).unwrap();
        let health = &p.profiles["vpn"].health;
        assert_eq!(health, &HealthSettings::default());
        assert_eq!(health.file.as_deref(), Some("/run/wg-health"));
        let p = parse(
            "[profiles.vpn]\nconfig = \"a\"\nhealth_file = \"\"\nhealth_interval = 5\nstale_after = 60\nprobe = \"10.0.0.1:53\"\n",
        )
        .unwrap();
        let health = &p.profiles["vpn"].health;
        assert_eq!(health.file, None);
        assert_eq!(health.interval, Duration::from_secs(5));
        assert_eq!(health.stale_after, Duration::from_secs(60));
        assert_eq!(health.probe, Some("10.0.0.1:53".parse().unwrap()));
        let e = err("[profiles.vpn]\nconfig = \"a\"\nprobe = \"vpn.example:53\"\n");
        assert!(e.contains(":3:9: ") && e.contains("IP:PORT"), "{e}");
        let e = err("[profiles.vpn]\nconfig = \"a\"\nhealth_interval = 60\nstale_after = 30\n");
        assert!(
            e.contains(":4:") && e.contains("not be shorter than health_interval"),
            "{e}"
        );
        let e = err("[profiles.vpn]\nconfig = \"a\"\nhealth_interval = 0\n");
        assert!(e.contains(":3:") && e.contains("1 to 3600 seconds"), "{e}");
        let e = err("[profiles.vpn]\nconfig = \"a\"\nhealth_file = \"run/h\"\n");
        assert!(e.contains(":3:") && e.contains("health_file"), "{e}");
        let e = err("[profiles.vpn]\nconfig = \"a\"\nport_persist = true\n");
        assert!(e.contains("only for provider = \"pia\""), "{e}");
    }

    #[test]
    fn semantic_errors_name_their_place() {
        let e = err(&format!("default_profile = \"nope\"\n{MINIMAL}"));
        assert!(
            e.contains(":1:19: default_profile: no profile named \"nope\""),
            "{e}"
        );
        for bad in [
            "\"\"",
            "\"sixteen-chars-xx\"",
            "\"a/b\"",
            "\"wg 0\"",
            "\".\"",
            "\"w\\\"g\"",
        ] {
            let e = err(&format!("interface = {bad}\n{MINIMAL}"));
            assert!(e.contains(":1:13: interface"), "{bad}: {e}");
        }
        assert!(err(&format!("state_dir = \"run/x\"\n{MINIMAL}")).contains("absolute"));
        assert!(err(&format!("userspace_command = []\n{MINIMAL}")).contains("userspace_command"));
        assert!(
            err(&format!("userspace_command = [\"\"]\n{MINIMAL}")).contains("userspace_command")
        );
        let e = err(&format!(
            "allowed_annotations = [\"wg.profile\", \"wg.keys\"]\n{MINIMAL}"
        ));
        assert!(
            e.contains(":1:38: allowed_annotations: unknown annotation \"wg.keys\""),
            "{e}"
        );
        assert!(err("[profiles.vpn]\n").contains("missing config"));
        assert!(err("[profiles.\"../x\"]\nconfig = \"a\"\n").contains("profile name"));
        assert!(err("backend = \"auto\"\n").contains("no [profiles.NAME]"));
    }

    #[test]
    fn log_names_a_destination_syslog_by_default() {
        assert_eq!(parse(MINIMAL).unwrap().log, LogDestination::Syslog);
        for (value, expected) in [
            ("journald", LogDestination::Journald),
            ("syslog", LogDestination::Syslog),
            ("stderr", LogDestination::Stderr),
            (
                "file:/var/log/wg-oci-hook.log",
                LogDestination::File(PathBuf::from("/var/log/wg-oci-hook.log")),
            ),
        ] {
            let p = parse(&format!("log = \"{value}\"\n{MINIMAL}")).unwrap();
            assert_eq!(p.log, expected);
            assert_eq!(p.log.to_string(), value);
            assert_eq!(p.lines["log"], 1);
        }
        for (value, needle) in [
            (
                "\"journal\"",
                ":2:7: log: \"journal\": expected \"journald\", \"syslog\", \"stderr\" or \"file:/absolute/path\"",
            ),
            ("\"Syslog\"", ":2:7: log: \"Syslog\": expected"),
            ("\"\"", ":2:7: log: \"\": expected"),
            (
                "\"file:var/log/hook.log\"",
                ":2:7: log: \"file:var/log/hook.log\": the file must be an absolute path",
            ),
            ("\"file:\"", ":2:7: log: \"file:\": the file must be an absolute path"),
            ("\"file:/var/log/\"", "the file must be an absolute path"),
            ("\"file:/a\\u0000b\"", "the file must be an absolute path"),
            ("\"/var/log/hook.log\"", "expected \"journald\""),
            ("1", ":2:7: "),
            ("[\"syslog\"]", ":2:7: "),
        ] {
            let e = err(&format!("log_level = \"info\"\nlog = {value}\n{MINIMAL}"));
            assert!(e.contains(needle), "{value}: {e}");
            assert!(e.starts_with("/etc/wg-oci-hook/policy.toml:2:"), "{e}");
        }
        // Top level only.
        let e = err("[profiles.vpn]\nconfig = \"a\"\nlog = \"syslog\"\n");
        assert!(e.contains(":3:1: unknown field `log`"), "{e}");
    }

    #[test]
    fn pools_and_shared_profiles() {
        let p = parse(
            "[profiles.pool]\npool = \"pools/eu\"\n[profiles.one]\nconfig = \"/a\"\n\
             [profiles.many]\nconfig = \"/b\"\nshared = true\n",
        )
        .unwrap();
        assert!(
            matches!(&p.profiles["pool"].source, ProfileSource::Pool(d) if d == Path::new("/etc/wg-oci-hook/pools/eu"))
        );
        assert!(!p.profiles["pool"].shared && !p.profiles["one"].shared);
        assert!(p.profiles["many"].shared);
        let e = err("[profiles.x]\nconfig = \"/a\"\npool = \"/d\"\n");
        assert!(
            e.contains(":3:8: ") && e.contains("exclude each other"),
            "{e}"
        );
        let e = err("[profiles.x]\npool = \"/d\"\nshared = true\n");
        assert!(
            e.contains(":3:10: ") && e.contains("cannot be shared"),
            "{e}"
        );
        let e = err(&format!("{PIA}shared = false\n"));
        assert!(e.contains("always shared"), "{e}");
        let e = err(&format!("{PIA}pool = \"/d\"\n"));
        assert!(e.contains("has no config file or pool"), "{e}");
        assert!(err("[profiles.vpn]\n").contains("missing config (the wg-quick file), pool"));
    }

    #[test]
    fn deadlines_have_defaults_and_stay_below_the_hook_timeout() {
        let p = parse(MINIMAL).unwrap();
        assert_eq!(p.resolve_timeout, Duration::from_secs(5));
        assert_eq!(p.create_timeout, Duration::from_secs(25));
        let p = parse(&format!(
            "resolve_timeout = 2\ncreate_timeout = 29\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(p.resolve_timeout, Duration::from_secs(2));
        assert_eq!(p.create_timeout, Duration::from_secs(29));
        // A create_timeout below the default resolve_timeout still bounds every lookup (the earlier wins).
        assert_eq!(
            parse(&format!("create_timeout = 3\n{MINIMAL}"))
                .unwrap()
                .create_timeout,
            Duration::from_secs(3)
        );

        for bad in ["30", "120", "0"] {
            let e = err(&format!("create_timeout = {bad}\n{MINIMAL}"));
            assert!(
                e.contains(":1:18: create_timeout: must be 1 to 29 seconds: the engine kills the hook at the 30 s"),
                "{bad}: {e}"
            );
        }
        let e = err(&format!("resolve_timeout = 0\n{MINIMAL}"));
        assert!(
            e.contains(":1:19: resolve_timeout: must be 1 second"),
            "{e}"
        );
        let e = err(&format!(
            "create_timeout = 10\nresolve_timeout = 10\n{MINIMAL}"
        ));
        assert!(
            e.contains(
                ":2:19: resolve_timeout: must be 1 second or more and below create_timeout (10 s)"
            ),
            "{e}"
        );
        assert!(err(&format!("resolve_timeout = 25\n{MINIMAL}")).contains("create_timeout (25 s)"));
        assert!(err(&format!("resolve_timeout = -1\n{MINIMAL}")).contains(":1:19: "));
        assert!(err(&format!("create_timeout = 2.5\n{MINIMAL}")).contains(":1:18: "));
        assert!(err(&format!("resolve_timeout = \"5s\"\n{MINIMAL}")).contains(":1:19: "));
        // Top level only: not a profile's key.
        let e = err("[profiles.vpn]\nconfig = \"a\"\nresolve_timeout = 3\n");
        assert!(e.contains(":3:1: unknown field `resolve_timeout`"), "{e}");
    }

    #[test]
    fn the_shipped_example_policy_parses() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/policy.toml"));
        // Parsed, not loaded: `load` wants a root-owned file, and a checkout need not be.
        let p = Policy::parse(&std::fs::read_to_string(path).unwrap(), path)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(p.profiles["vpn"].kill_switch);
    }

    #[test]
    fn profile_firewall_keys_are_read_and_checked() {
        let p = parse(MINIMAL).unwrap();
        let vpn = &p.profiles["vpn"];
        assert!(
            vpn.kill_switch,
            "the kill switch is on unless the policy says otherwise"
        );
        assert_eq!(vpn.allow_local, None);
        assert!(vpn.port_maps.is_empty());

        let p = parse(
            "nft_command = \"/usr/sbin/nft\"\n[profiles.vpn]\nconfig = \"a\"\nkill_switch = false\n\
             allow_local = [\"10.88.0.0/16\", \"fd00::/64\"]\nport_maps = [\"8080:80/tcp\", \"53/udp\"]\n",
        )
        .unwrap();
        let vpn = &p.profiles["vpn"];
        assert!(!vpn.kill_switch);
        assert_eq!(vpn.allow_local.as_ref().unwrap().len(), 2);
        assert_eq!(vpn.port_maps.len(), 2);
        assert_eq!(
            parse("[profiles.vpn]\nconfig = \"a\"\nallow_local = []\n")
                .unwrap()
                .profiles["vpn"]
                .allow_local,
            Some(vec![])
        );

        let e = err("[profiles.vpn]\nconfig = \"a\"\nallow_local = [\"10.0.0.0/8\", \"lan\"]\n");
        assert!(
            e.contains(":3:30: profile \"vpn\": allow_local: \"lan\" is not a CIDR"),
            "{e}"
        );
        let e = err("[profiles.vpn]\nconfig = \"a\"\nport_maps = [\"80:80/tcp\", \"80:81\"]\n");
        assert!(
            e.contains(":3:27: profile \"vpn\": port_maps: \"80:81\""),
            "{e}"
        );
        let e = err("[profiles.vpn]\nconfig = \"a\"\nkill_switch = \"yes\"\n");
        assert!(e.contains(":3:15: "), "{e}");
        // nft_command is no longer used, and still accepted.
        assert!(parse(&format!("nft_command = \"\"\n{MINIMAL}")).is_ok());
    }

    const PIA: &str = "[profiles.pia]\nprovider = \"pia\"\ncredentials = \"pia/credentials\"\n\
                       ca = \"pia/ca.rsa.4096.crt\"\nregions_key = \"pia/regions.pem\"\n\
                       regions = [\"ca_vancouver\", \"swiss\"]\n";

    #[test]
    fn inbound_is_replies_all_or_a_list_of_ports() {
        use crate::config::ports::{PortRange, Protocol};
        let inbound = |value: &str| {
            parse(&format!(
                "[profiles.vpn]\nconfig = \"a\"\ninbound = {value}\n"
            ))
            .map(|p| p.profiles["vpn"].inbound.clone())
        };
        assert_eq!(inbound("\"replies\"").unwrap(), Some(Inbound::Replies));
        assert_eq!(inbound("\"all\"").unwrap(), Some(Inbound::All));
        assert_eq!(inbound("[]").unwrap(), Some(Inbound::Replies));
        assert_eq!(
            inbound("[\"8080/tcp\", \"53/udp\", \"6000-6010/tcp\", \"9000\"]").unwrap(),
            Some(Inbound::Ports(
                [
                    (6000, 6010, Protocol::Tcp),
                    (8080, 8080, Protocol::Tcp),
                    (9000, 9000, Protocol::Tcp),
                    (53, 53, Protocol::Udp)
                ]
                .map(|(first, last, protocol)| PortRange {
                    first,
                    last,
                    protocol
                })
                .to_vec()
            ))
        );
        assert_eq!(parse(MINIMAL).unwrap().profiles["vpn"].inbound, None);
        for (value, needle) in [
            (
                "\"none\"",
                ":3:11: profile \"vpn\": inbound: \"none\": expected \"replies\", \"all\"",
            ),
            ("\"All\"", "inbound: \"All\": expected"),
            (
                "true",
                ":3:11: profile \"vpn\": inbound: expected \"replies\"",
            ),
            ("[8080]", "inbound: expected a list of strings"),
            (
                "[\"80/tcp\", \"80/sctp\"]",
                "inbound: \"80/sctp\": expected PORT/tcp",
            ),
            ("[\"0/tcp\"]", "inbound: \"0/tcp\": expected"),
            ("[\"65536\"]", "inbound: \"65536\": expected"),
            ("[\"+80\"]", "inbound: \"+80\": expected"),
            (
                "[\"90-80/udp\"]",
                "inbound: \"90-80/udp\": 90-80: the range ends before it starts",
            ),
            ("[\"1-2-3\"]", "inbound: \"1-2-3\": expected"),
            ("[\"80 ; drop\"]", "inbound: \"80 ; drop\": expected"),
        ] {
            let e = inbound(value).unwrap_err().0;
            assert!(e.contains(needle), "{value}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_pia_profile_gets_defaults_and_absolute_paths() {
        let p = parse(PIA).unwrap();
        let pia = p.profiles["pia"].pia().unwrap();
        assert_eq!(
            pia.credentials,
            PathBuf::from("/etc/wg-oci-hook/pia/credentials")
        );
        assert_eq!(
            pia.ca,
            PathBuf::from("/etc/wg-oci-hook/pia/ca.rsa.4096.crt")
        );
        assert_eq!(pia.regions, ["ca_vancouver", "swiss"]);
        assert_eq!(pia.token_url, pia::DEFAULT_TOKEN_URL);
        assert_eq!(pia.server_list_url, pia::DEFAULT_SERVER_LIST_URL);
        assert_eq!(pia.bind_interval, std::time::Duration::from_secs(900));
        assert_eq!(pia.api_timeout, std::time::Duration::from_secs(5));
        assert_eq!(pia.port_file, "/run/pia-port");
        assert!(!pia.port_forwarding && !pia.token_via_meta && pia.server.is_none());
        assert!(p.profiles["pia"].kill_switch);
        assert!(p.profiles["pia"].wg_quick().is_none());

        let p = parse(&format!(
            "{PIA}port_forwarding = true\nport_file = \"/tmp/port\"\nbind_interval = 2\napi_timeout = 1\n\
             token_url = \"https://198.18.1.1/api/client/v2/token\"\nserver = {{ ip = \"198.18.1.11\", cn = \"laba401\" }}\n"
        ))
        .unwrap();
        let pia = p.profiles["pia"].pia().unwrap();
        assert!(pia.port_forwarding);
        assert_eq!(pia.port_file, "/tmp/port");
        assert_eq!(pia.bind_interval, std::time::Duration::from_secs(2));
        assert_eq!(pia.server.as_ref().unwrap().cn, "laba401");
        assert_eq!(pia.token_url, "https://198.18.1.1/api/client/v2/token");
    }

    #[test]
    fn pia_profiles_are_checked_with_line_numbers() {
        let e = err("[profiles.pia]\nprovider = \"nordvpn\"\n");
        assert!(
            e.contains(":2:12: profile \"pia\": unknown provider \"nordvpn\""),
            "{e}"
        );
        let e = err("[profiles.pia]\nprovider = \"pia\"\nca = \"/ca\"\n");
        assert!(e.contains("needs credentials"), "{e}");
        let e = err("[profiles.pia]\nprovider = \"pia\"\ncredentials = \"/c\"\nca = \"/ca\"\nregions_key = \"/k\"\n");
        assert!(e.contains("needs regions"), "{e}");
        let e = err(&format!("{PIA}config = \"/etc/x.conf\"\n"));
        assert!(
            e.contains(":7:10: ") && e.contains("has no config file"),
            "{e}"
        );
        let e = err(&format!("{PIA}port_file = \"/run/p\"\n"));
        assert!(
            e.contains(":7:13: ") && e.contains("without port_forwarding"),
            "{e}"
        );
        let e = err(&format!(
            "{PIA}port_forwarding = true\nport_file = \"../etc/shadow\"\n"
        ));
        assert!(e.contains(":8:13: ") && e.contains("absolute path"), "{e}");
        let e = err(&format!("{PIA}bind_interval = 3600\n"));
        assert!(
            e.contains(":7:17: ") && e.contains("bind_interval must be 1 to 900 seconds"),
            "{e}"
        );
        let e = err(&format!("{PIA}token_url = \"http://198.18.1.1/token\"\n"));
        assert!(e.contains("token_url must be an https:// URL"), "{e}");
        let e = err(&format!("{PIA}server = {{ ip = \"nope\", cn = \"x\" }}\n"));
        assert!(e.contains("server.ip \"nope\""), "{e}");
        let e = err(&format!("{PIA}regions_typo = []\n"));
        assert!(e.contains(":7:1: "), "{e}");
        let e = err(&format!("{PIA}regions = [\"../x\"]\n").replacen(
            "regions = [\"ca_vancouver\", \"swiss\"]\n",
            "",
            1,
        ));
        assert!(e.contains("is not a region id"), "{e}");
        let e = err("[profiles.vpn]\nconfig = \"a\"\nregions = [\"swiss\"]\n");
        assert!(
            e.contains(":3:11: ") && e.contains("only for provider = \"pia\""),
            "{e}"
        );
        let e = err(&format!(
            "{PIA}server = {{ ip = \"192.0.2.1\", cn = \"x\" }}\ntoken_via_meta = true\n"
        ));
        assert!(e.contains("token_via_meta"), "{e}");
    }

    #[test]
    fn select_profile_honours_allowed_annotations() {
        let text = "default_profile = \"a\"\nallowed_annotations = [\"wg.profile\"]\n\
                    [profiles.a]\nconfig = \"/a\"\n[profiles.b]\nconfig = \"/b\"\n";
        let p = parse(text).unwrap();
        assert_eq!(p.select_profile(None).unwrap().name, "a");
        assert_eq!(p.select_profile(Some("b")).unwrap().name, "b");
        let e = p.select_profile(Some("c")).unwrap_err().0;
        assert!(
            e.contains("annotation wg.profile=\"c\": no such profile"),
            "{e}"
        );

        let p = parse("[profiles.a]\nconfig = \"/a\"\n").unwrap();
        let e = p.select_profile(Some("a")).unwrap_err().0;
        assert!(e.contains("does not let containers choose"), "{e}");
        let e = p.select_profile(None).unwrap_err().0;
        assert!(e.contains("no default_profile"), "{e}");
    }
}
