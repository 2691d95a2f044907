//! The state directory: one record per container, `<state_dir>/<container-id>.json`, mode 0600, written to a
//! temporary file, fsynced and renamed, so poststop finds either the old record or the new one, never half.
//! Records hold names and pids, never keys.

use crate::dns::ResolvConfChange;
use crate::provider::pia::PiaRecord;
use crate::wg::BackendKind;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub container_id: String,
    pub profile: String,
    /// The link's name inside the container.
    pub interface: String,
    /// The temporary name the link had in the runtime netns (and the userspace daemon's interface argument).
    pub host_link: String,
    pub backend: BackendKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<ResolvConfChange>,
    /// A PIA profile's registration and port-forwarding helper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pia: Option<PiaRecord>,
}

pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: &Path) -> Self {
        StateDir {
            dir: dir.to_owned(),
        }
    }

    pub fn record_path(&self, container_id: &str) -> PathBuf {
        self.dir.join(format!("{container_id}.json"))
    }

    pub fn save(&self, record: &Record) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let path = self.record_path(&record.container_id);
        let tmp = self.dir.join(format!(".{}.json.tmp", record.container_id));
        let body = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&body)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    pub fn load(&self, container_id: &str) -> io::Result<Option<Record>> {
        match fs::read(self.record_path(container_id)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every record in the directory, by container id (for `status`); unreadable ones are skipped.
    pub fn list(&self) -> io::Result<Vec<Record>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut records: Vec<Record> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
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
        match fs::remove_file(self.record_path(container_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn save_load_remove_round_trip_with_private_mode() {
        let dir = std::env::temp_dir().join(format!("wgoh-record-{}", std::process::id()));
        let state = StateDir::new(&dir);
        let record = Record {
            version: RECORD_VERSION,
            container_id: "c1".into(),
            profile: "vpn".into(),
            interface: "wg0".into(),
            host_link: "wgo0123456789ab".into(),
            backend: BackendKind::Userspace,
            daemon_pid: Some(42),
            resolv_conf: None,
            pia: None,
        };
        state.save(&record).unwrap();
        let mode = fs::metadata(state.record_path("c1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = state.load("c1").unwrap().unwrap();
        assert_eq!(back.daemon_pid, Some(42));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temp file left");
        state.remove("c1").unwrap();
        state.remove("c1").unwrap();
        assert!(state.load("c1").unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
