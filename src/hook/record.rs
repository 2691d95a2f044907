//! The state directory: what the hook made, kept where poststop, `gc` and `status` find it.
//!
//! One tunnel per network namespace, shared by the containers in it:
//! - `tunnels/DEV-INO.json`: a tunnel's record, named by its netns identity (`NetnsId`), listing its members;
//! - `tunnels/DEV-INO.lock`: held by whoever builds, joins, leaves or sweeps that tunnel;
//! - `members/ID`: which tunnel container `ID` belongs to (poststop knows only the container);
//! - `leases/`: the profiles' leases (`lease.rs`);
//! - `ID.json`: a record of hooks before 0.2 (one per container), still read so that their poststop works.
//!
//! Files are mode 0600, written to a temporary file and renamed, so a reader finds the old file or the new one,
//! never half. Records hold names and process identities, never keys. The directory must be ours alone
//! (`PrivateDir`).

use crate::hook::resolv_conf::ResolvConfChange;
use crate::hook::tunnel::NamedEndpoint;
use crate::provider::pia::PiaRecord;
use crate::sys::deadline::Deadline;
use crate::sys::lock::Lock;
use crate::sys::netns::NetnsId;
use crate::sys::private_dir::PrivateDir;
use crate::sys::process::{self, Started};
use crate::wg::BackendKind;
use serde::{Deserialize, Serialize};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// 3: one record per network namespace, with its members. 2: per container, `host_link` random and `daemon`
/// whole. 1: per container, `daemon_pid` alone. 1 and 2 are still read, at poststop and by `gc`.
pub const RECORD_VERSION: u32 = 3;

/// A tunnel: what was made in and for one network namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// The netns the tunnel is in (absent in records before version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsId>,
    /// The engine's path to that netns when it has one (a pod's `/run/netns/...`, `/proc/PID/ns/net` of the
    /// container whose netns this is): how a poststop with no live member still reaches it. Used only while it
    /// leads to `netns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<PathBuf>,
    /// The containers using it, the builder first.
    #[serde(default)]
    pub members: Vec<Member>,
    /// A record before version 3: the one container it was made for.
    #[serde(default, rename = "container_id", skip_serializing)]
    pub legacy_container_id: Option<String>,
    pub profile: String,
    /// The link's name inside the container.
    pub interface: String,
    /// The temporary name the link has in the runtime netns (and the userspace daemon's interface argument):
    /// picked at random, checked free and recorded before the link or the daemon is made.
    pub host_link: String,
    pub backend: BackendKind,
    /// The userspace daemon: recorded before it is started (its command, with no pid yet) and again once it
    /// runs, so that poststop signals that process and no other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<Started>,
    /// A version-1 record's daemon pid (checked only against the link name in its argv).
    #[serde(default, rename = "daemon_pid", skip_serializing)]
    pub legacy_daemon_pid: Option<u32>,
    /// The profile's config this tunnel holds (a pool's file, or a static profile's only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseName>,
    /// What a member that joins must have asked for: the port maps the firewall was built with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_maps: Vec<String>,
    /// The tunnel's DNS, for the resolv.conf of members that join.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// Each resolv.conf written, with the members that read it (containers of a pod mount one file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolv_confs: Vec<SharedResolvConf>,
    /// A record before version 3: its container's resolv.conf change.
    #[serde(default, rename = "resolv_conf", skip_serializing)]
    pub legacy_resolv_conf: Option<ResolvConfChange>,
    /// Peers whose Endpoint is a host name, looked up again by the supervisor when the handshake goes stale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named_endpoints: Vec<NamedEndpoint>,
    /// The tunnel's supervisor (`hook::supervisor`): recorded before it is started, and again once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<Started>,
    /// A PIA profile's registration and port-forwarding helper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pia: Option<PiaRecord>,
    /// Set by the builder's last step: a record without it belongs to a start that is still running (under the
    /// tunnel's lock) or that died.
    #[serde(default)]
    pub complete: bool,
}

/// A container of the tunnel, by the process the runtime named at its createRuntime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub container_id: String,
    pub pid: u32,
    /// When `pid` started (clock ticks since boot), so a reused pid is not taken for it.
    pub start_time: u64,
    /// The pod's sandbox (infra, pause) container, where the engine says which one that is: the tunnel is
    /// built with it and goes with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sandbox: bool,
}

impl Member {
    pub fn alive(&self) -> bool {
        self.pid != 0 && process::runs_since(self.pid, self.start_time)
    }
}

/// A resolv.conf we changed, and who reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedResolvConf {
    pub change: ResolvConfChange,
    pub users: Vec<String>,
}

/// A lease: profile `profile`'s config `config` (a pool's file name; `-` for a static profile's only config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseName {
    pub profile: String,
    pub config: String,
}

impl Record {
    /// The tunnel's key in the state dir: its netns identity, or for a record before version 3 its container.
    pub fn key(&self) -> Option<String> {
        self.netns.map(|ns| ns.key())
    }

    pub fn member(&self, container_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.container_id == container_id)
    }

    /// Whether any member still runs. A tunnel none of whose members runs is garbage: its containers are gone
    /// (or will be when their poststop runs, which then finds nothing to do).
    pub fn any_member_alive(&self) -> bool {
        self.member_runs_besides(None)
    }

    /// Whether a member other than `besides` (a container leaving, or starting again) still runs.
    pub fn member_runs_besides(&self, besides: Option<&str>) -> bool {
        self.members
            .iter()
            .any(|m| Some(m.container_id.as_str()) != besides && m.alive())
    }

    /// The ids of its members, for messages.
    pub fn member_ids(&self) -> String {
        let ids: Vec<&str> = self
            .members
            .iter()
            .map(|m| short(&m.container_id))
            .collect();
        ids.join(",")
    }

    /// The first member's id (the builder), for messages.
    pub fn builder(&self) -> &str {
        self.members
            .first()
            .map(|m| short(&m.container_id))
            .or(self.legacy_container_id.as_deref())
            .unwrap_or("?")
    }
}

/// A container id as engines print it: 12 characters of a 64-digit id, the whole of a shorter one.
pub fn short(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..12]
    } else {
        id
    }
}

/// The state directory, opened and checked once per run (see `PrivateDir`).
pub struct StateDir {
    dir: PrivateDir,
    tunnels: PrivateDir,
    members: PrivateDir,
}

impl StateDir {
    /// Opens `path` and its subdirectories, creating them (0700) when missing; one line naming the one refused.
    pub fn open(path: &Path) -> Result<StateDir, String> {
        let dir = PrivateDir::open(path)?;
        let tunnels = dir.subdir("tunnels")?;
        let members = dir.subdir("members")?;
        Ok(StateDir {
            dir,
            tunnels,
            members,
        })
    }

    /// The directory itself: the PIA cache and the port-forwarding helpers' files, and `lease.rs`'s subdir.
    pub fn dir(&self) -> &PrivateDir {
        &self.dir
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory alone, for a helper that outlives this run.
    pub fn into_dir(self) -> PrivateDir {
        self.dir
    }

    /// The lock of tunnel `key`, waited for until `deadline`.
    pub fn lock(&self, key: &str, deadline: Deadline) -> io::Result<Lock> {
        self.tunnels.lock(&format!("{key}.lock"), deadline)
    }

    /// The lock of tunnel `key` if nobody holds it (a sweep passes over a tunnel that is busy).
    pub fn try_lock(&self, key: &str) -> io::Result<Option<Lock>> {
        self.tunnels.try_lock(&format!("{key}.lock"))
    }

    /// Saves a version-3 record under its key. Hold its lock.
    pub fn save(&self, record: &Record) -> io::Result<()> {
        let key = record
            .key()
            .ok_or_else(|| io::Error::other("a record without its netns"))?;
        let body = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        self.tunnels.write(&format!("{key}.json"), &body, 0o600)
    }

    pub fn load(&self, key: &str) -> io::Result<Option<Record>> {
        parse(self.tunnels.read(&format!("{key}.json"))?)
    }

    /// Removes tunnel `key`'s record. Hold its lock.
    /// Whether tunnel `key` has a record with a member that runs.
    pub fn tunnel_runs(&self, key: &str) -> bool {
        matches!(self.load(key), Ok(Some(r)) if r.any_member_alive())
    }

    pub fn remove(&self, key: &str) -> io::Result<()> {
        self.tunnels.remove(&format!("{key}.json"))
    }

    /// Removes tunnel `key`'s lock file, then lets go of `lock`, its holder's: a waiter finds the name gone and
    /// tries again (`PrivateDir::try_lock`). Only once the tunnel has no record.
    pub fn remove_lock(&self, key: &str, lock: Lock) -> io::Result<()> {
        self.tunnels.remove_lock(&format!("{key}.lock"), lock)
    }

    /// Every tunnel's key (for `gc` and `status`).
    pub fn keys(&self) -> io::Result<Vec<String>> {
        let mut keys: Vec<String> = self
            .tunnels
            .names()?
            .into_iter()
            .filter_map(|name| {
                let key = name.strip_suffix(".json")?;
                is_key(key).then(|| key.to_owned())
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Removes the lock files of tunnels that have no record (and nobody working on them); returns how many.
    pub fn orphan_locks(&self) -> io::Result<usize> {
        let mut removed = 0;
        for name in self.tunnels.names()? {
            let Some(key) = name.strip_suffix(".lock").filter(|k| is_key(k)) else {
                continue;
            };
            if let Some(lock) = self.try_lock(key)? {
                if self.load(key)?.is_none() {
                    self.remove_lock(key, lock)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// The tunnel container `container_id` belongs to.
    pub fn membership(&self, container_id: &str) -> io::Result<Option<String>> {
        let Some(bytes) = self.members.read(container_id)? else {
            return Ok(None);
        };
        let key = String::from_utf8(bytes).unwrap_or_default();
        if !is_key(&key) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("members/{container_id}: not a tunnel key"),
            ));
        }
        Ok(Some(key))
    }

    /// Notes that `container_id` belongs to tunnel `key`: written before the tunnel's record names it.
    pub fn set_membership(&self, container_id: &str, key: &str) -> io::Result<()> {
        self.members.write(container_id, key.as_bytes(), 0o600)
    }

    pub fn remove_membership(&self, container_id: &str) -> io::Result<()> {
        self.members.remove(container_id)
    }

    /// Container ids with a membership file (for `gc`).
    pub fn memberships(&self) -> io::Result<Vec<String>> {
        Ok(self
            .members
            .names()?
            .into_iter()
            .filter(|name| !name.starts_with('.'))
            .collect())
    }

    /// A record of a hook before version 3, kept per container as `ID.json`.
    pub fn load_legacy(&self, container_id: &str) -> io::Result<Option<Record>> {
        let mut record = parse(self.dir.read(&legacy_name(container_id))?)?;
        if let Some(r) = record.as_mut() {
            r.legacy_container_id
                .get_or_insert_with(|| container_id.to_owned());
        }
        Ok(record)
    }

    pub fn remove_legacy(&self, container_id: &str) -> io::Result<()> {
        self.dir.remove(&legacy_name(container_id))
    }

    /// Container ids with a record before version 3.
    pub fn legacy_ids(&self) -> io::Result<Vec<String>> {
        Ok(self
            .dir
            .names()?
            .into_iter()
            .filter_map(|name| {
                let id = name.strip_suffix(".json")?;
                (!id.starts_with('.')).then(|| id.to_owned())
            })
            .collect())
    }
}

fn legacy_name(container_id: &str) -> String {
    format!("{container_id}.json")
}

fn parse(bytes: Option<Vec<u8>>) -> io::Result<Option<Record>> {
    match bytes {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        None => Ok(None),
    }
}

/// `DEV-INO`, both decimal.
fn is_key(key: &str) -> bool {
    key.split_once('-').is_some_and(|(dev, ino)| {
        [dev, ino]
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn record(netns: NetnsId) -> Record {
        Record {
            version: RECORD_VERSION,
            netns: Some(netns),
            netns_path: None,
            members: vec![Member {
                container_id: "c1".into(),
                pid: 42,
                start_time: 7,
                sandbox: false,
            }],
            legacy_container_id: None,
            profile: "vpn".into(),
            interface: "wg0".into(),
            host_link: "wgo0123456789ab".into(),
            backend: BackendKind::Userspace,
            daemon: Some(Started {
                pid: Some(42),
                start_time: 7,
                exe: Some("/usr/bin/wireguard-go".into()),
                argv: vec!["/usr/bin/wireguard-go".into(), "wgo0123456789ab".into()],
            }),
            legacy_daemon_pid: None,
            named_endpoints: Vec::new(),
            supervisor: None,
            lease: None,
            port_maps: Vec::new(),
            dns_servers: Vec::new(),
            dns_search: Vec::new(),
            resolv_confs: Vec::new(),
            legacy_resolv_conf: None,
            pia: None,
            complete: true,
        }
    }

    #[test]
    fn save_load_remove_round_trip_with_private_mode() {
        let dir = std::env::temp_dir().join(format!("wgoh-record-{}", std::process::id()));
        let state = StateDir::open(&dir).unwrap();
        let r = record(NetnsId {
            dev: 4,
            ino: 4026532,
        });
        let key = r.key().unwrap();
        assert_eq!(key, "4-4026532");
        let lock = state
            .lock(
                &key,
                Deadline::after(std::time::Duration::from_secs(1), "t"),
            )
            .unwrap();
        state.save(&r).unwrap();
        state.set_membership("c1", &key).unwrap();
        let mode = fs::metadata(dir.join("tunnels/4-4026532.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = state.load(&key).unwrap().unwrap();
        assert_eq!(back.daemon, r.daemon);
        assert_eq!(back.members, r.members);
        assert_eq!(state.keys().unwrap(), vec![key.clone()]);
        assert_eq!(
            state.membership("c1").unwrap().as_deref(),
            Some(key.as_str())
        );
        state.remove(&key).unwrap();
        state.remove_lock(&key, lock).unwrap();
        state.remove_membership("c1").unwrap();
        assert!(state.load(&key).unwrap().is_none());
        assert!(state.membership("c1").unwrap().is_none());
        let left: Vec<_> = fs::read_dir(dir.join("tunnels")).unwrap().collect();
        assert!(left.is_empty(), "nothing left: {left:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lock_is_held_until_dropped_and_survives_its_removal_by_the_holder() {
        let dir = std::env::temp_dir().join(format!("wgoh-record-lock-{}", std::process::id()));
        let state = StateDir::open(&dir).unwrap();
        let held = state.try_lock("1-2").unwrap().expect("free");
        assert!(state.try_lock("1-2").unwrap().is_none(), "held twice");
        state.remove_lock("1-2", held).unwrap();
        // The name is free again, for a new lock file: never the removed one.
        let again = state.try_lock("1-2").unwrap().expect("free once removed");
        assert!(
            state.try_lock("1-2").unwrap().is_none(),
            "the new lock is held"
        );
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn version_1_and_2_records_are_still_read_as_their_containers() {
        let dir = std::env::temp_dir().join(format!("wgoh-record-v1-{}", std::process::id()));
        let state = StateDir::open(&dir).unwrap();
        let v1 = r#"{"version":1,"container_id":"c1","profile":"vpn","interface":"wg0",
            "host_link":"wgo0123456789ab","backend":"userspace","daemon_pid":42}"#;
        fs::write(dir.join("c1.json"), v1).unwrap();
        let record = state.load_legacy("c1").unwrap().unwrap();
        assert_eq!(record.legacy_daemon_pid, Some(42));
        assert_eq!(record.legacy_container_id.as_deref(), Some("c1"));
        assert!(record.daemon.is_none() && record.netns.is_none());
        assert_eq!(state.legacy_ids().unwrap(), vec!["c1".to_owned()]);
        let again = serde_json::to_string(&record).unwrap();
        assert!(!again.contains("daemon_pid"), "{again}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_that_is_a_symlink_is_not_read() {
        let dir = std::env::temp_dir().join(format!("wgoh-record-link-{}", std::process::id()));
        let state = StateDir::open(&dir).unwrap();
        let elsewhere = dir.join("elsewhere.txt");
        fs::write(&elsewhere, "{}").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("tunnels/1-2.json")).unwrap();
        let e = state.load("1-2").unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_membership_must_name_a_tunnel_key() {
        let dir = std::env::temp_dir().join(format!("wgoh-record-mem-{}", std::process::id()));
        let state = StateDir::open(&dir).unwrap();
        fs::write(dir.join("members/c1"), "../../etc/passwd").unwrap();
        assert!(state.membership("c1").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_ids_are_engines_twelve_digits() {
        assert_eq!(short(&"ab".repeat(32)), "abababababab");
        assert_eq!(short("my-container"), "my-container");
    }
}
