//! The state directory: one record per container, `<state_dir>/<container-id>.json`, mode 0600, written to a
//! temporary file and renamed, so poststop finds either the old record or the new one, never half.
//! Records hold names and process identities, never keys. The directory must be ours alone (`PrivateDir`).

use crate::hook::resolv_conf::ResolvConfChange;
use crate::provider::pia::PiaRecord;
use crate::sys::private_dir::PrivateDir;
use crate::sys::process::Started;
use crate::wg::BackendKind;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;

/// 2: `host_link` is a random name chosen before anything was made, `daemon` the daemon's whole identity.
/// 1 (still read): `host_link` derived from the container id, `daemon_pid` alone.
pub const RECORD_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub container_id: String,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<ResolvConfChange>,
    /// A PIA profile's registration and port-forwarding helper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pia: Option<PiaRecord>,
}

/// The state directory, opened and checked once per run (see `PrivateDir`).
pub struct StateDir {
    dir: PrivateDir,
}

impl StateDir {
    /// Opens `path`, creating it (0700) when missing; one line naming it when it is refused.
    pub fn open(path: &Path) -> Result<StateDir, String> {
        PrivateDir::open(path).map(|dir| StateDir { dir })
    }

    /// Files of the state dir other than records (the port-forwarding helper's).
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

    fn record_name(container_id: &str) -> String {
        format!("{container_id}.json")
    }

    pub fn save(&self, record: &Record) -> io::Result<()> {
        let body = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        self.dir
            .write(&Self::record_name(&record.container_id), &body, 0o600)
    }

    pub fn load(&self, container_id: &str) -> io::Result<Option<Record>> {
        match self.dir.read(&Self::record_name(container_id))? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            None => Ok(None),
        }
    }

    /// Every record in the directory, by container id (for `status`); unreadable ones are skipped.
    pub fn list(&self) -> io::Result<Vec<Record>> {
        let mut records: Vec<Record> = self
            .dir
            .names()?
            .into_iter()
            .filter_map(|name| {
                let id = name
                    .strip_suffix(".json")
                    .filter(|id| !id.starts_with('.'))?;
                self.load(id).ok().flatten()
            })
            .collect();
        records.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        Ok(records)
    }

    pub fn remove(&self, container_id: &str) -> io::Result<()> {
        self.dir.remove(&Self::record_name(container_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn save_load_remove_round_trip_with_private_mode() {
        let dir = std::env::temp_dir().join(format!("wgoh-record-{}", std::process::id()));
        let state = StateDir::open(&dir).unwrap();
        let record = Record {
            version: RECORD_VERSION,
            container_id: "c1".into(),
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
            resolv_conf: None,
            pia: None,
        };
        state.save(&record).unwrap();
        let mode = fs::metadata(dir.join("c1.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = state.load("c1").unwrap().unwrap();
        assert_eq!(back.daemon, record.daemon);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temp file left");
        state.remove("c1").unwrap();
        state.remove("c1").unwrap();
        assert!(state.load("c1").unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_1_record_is_still_read() {
        let v1 = r#"{"version":1,"container_id":"c1","profile":"vpn","interface":"wg0",
            "host_link":"wgo0123456789ab","backend":"userspace","daemon_pid":42}"#;
        let record: Record = serde_json::from_str(v1).unwrap();
        assert_eq!(record.legacy_daemon_pid, Some(42));
        assert!(record.daemon.is_none());
        let again = serde_json::to_string(&record).unwrap();
        assert!(!again.contains("daemon_pid"), "{again}");
    }

    #[test]
    fn a_record_that_is_a_symlink_is_not_read() {
        let dir = std::env::temp_dir().join(format!("wgoh-record-link-{}", std::process::id()));
        let state = StateDir::open(&dir).unwrap();
        let elsewhere = dir.join("elsewhere.txt");
        fs::write(&elsewhere, "{}").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("c2.json")).unwrap();
        let e = state.load("c2").unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
