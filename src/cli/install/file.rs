//! The files install and uninstall change, changed as their operator would: what is there and what would be (an
//! `Edit`), read through a link to the real file, written with the file's mode and owner kept, after a timestamped
//! backup beside it.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One file, as it is and as it would be: `None` is no file (created, or removed).
#[derive(Debug)]
pub struct Edit {
    /// The file as the operator named it (what the messages and the diff show).
    pub path: PathBuf,
    pub old: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
    /// Whether a replaced or removed file is kept as a timestamped backup (the operator's files: daemon.json,
    /// config.toml; not our own hooks.d files).
    pub backup: bool,
}

impl Edit {
    pub fn changes(&self) -> bool {
        self.old != self.new
    }

    /// Writes `new` (or removes the file); the backup made, if any.
    pub fn apply(&self) -> Result<Option<PathBuf>, String> {
        let shown = self.path.display();
        let path = real_path(&self.path).map_err(|e| format!("{shown}: {e}"))?;
        match &self.new {
            Some(bytes) => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                write_keeping_owner_and_mode(&path, bytes, self.backup)
                    .map_err(|e| format!("{shown}: {e}"))
                    .map(Option::flatten)
            }
            None => {
                let backup = match &self.old {
                    Some(old) if self.backup => {
                        let mode = fs::metadata(&path)
                            .map_err(|e| format!("{shown}: {e}"))?
                            .mode();
                        Some(
                            backup(&path, old, mode & 0o7777)
                                .map_err(|e| format!("{shown}: {e}"))?,
                        )
                    }
                    _ => None,
                };
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(format!("{shown}: {e}")),
                    _ => Ok(backup),
                }
            }
        }
    }
}

/// A file's bytes, or None when there is none.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The file a path leads to: an engine's config is often a link into a config-management tree, and it is that
/// file which changes (replacing the link by a file would part the two).
fn real_path(path: &Path) -> io::Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => match fs::canonicalize(path) {
            Ok(real) => Ok(real),
            // A dangling link: the file it names is made.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let target = fs::read_link(path)?;
                Ok(path.parent().unwrap_or(Path::new("/")).join(target))
            }
            Err(e) => Err(e),
        },
        _ => Ok(path.to_owned()),
    }
}

/// Copies `old` to `NAME.wg-oci-hook-<UTC time>.bak` beside `path`, with mode `mode`.
fn backup(path: &Path, old: &[u8], mode: u32) -> io::Result<PathBuf> {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace([':', '-'], "");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("config");
    let mut backup = path.with_file_name(format!("{name}.wg-oci-hook-{stamp}.bak"));
    // Two runs within a second: a second backup beside the first, never over it.
    let mut n = 1;
    let mut file = loop {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&backup)
        {
            Ok(file) => break file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => {
                n += 1;
                backup = path.with_file_name(format!("{name}.wg-oci-hook-{stamp}-{n}.bak"));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("backup {}: {e}", backup.display()),
                ))
            }
        }
    };
    io::Write::write_all(&mut file, old)?;
    // The umask may have taken bits away.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()?;
    Ok(backup)
}

/// Replaces an engine's config file with `bytes`, keeping its mode and owner, after copying it (with `backup`)
/// to a timestamped backup beside it (same mode): the operator's file is theirs, and its mode may guard secrets
/// (registry credentials, TLS keys). A new file is made 0644. None when the file already holds `bytes` (nothing
/// written, no backup); else the backup made, if any.
pub fn write_keeping_owner_and_mode(
    path: &Path,
    bytes: &[u8],
    keep_backup: bool,
) -> io::Result<Option<Option<PathBuf>>> {
    let (old, meta) = match (fs::read(path), fs::metadata(path)) {
        (Ok(old), Ok(meta)) => (Some(old), Some(meta)),
        (Err(e), _) | (_, Err(e)) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => (None, None),
    };
    if old.as_deref() == Some(bytes) {
        return Ok(None);
    }
    let mode = meta.as_ref().map_or(0o644, |m| m.mode() & 0o7777);
    let backup = match &old {
        Some(old) if keep_backup => Some(backup(path, old, mode)?),
        _ => None,
    };
    crate::sys::atomic_file::write(path, bytes, mode)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    if let Some(meta) = meta {
        std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(Some(backup))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wgoh-file-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_write_keeps_the_mode_backs_up_once_and_skips_an_unchanged_file() {
        let dir = temp_dir("write");
        let path = dir.join("c.toml");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let backup = write_keeping_owner_and_mode(&path, b"new\n", true)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(fs::read_to_string(&backup).unwrap(), "old\n");
        assert_eq!(fs::metadata(&backup).unwrap().mode() & 0o7777, 0o600);
        assert!(write_keeping_owner_and_mode(&path, b"new\n", true)
            .unwrap()
            .is_none());
        // Again within the same second: a second backup, the first kept.
        let second = write_keeping_owner_and_mode(&path, b"newer\n", true)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_ne!(second, backup);
        assert_eq!(fs::read_to_string(&backup).unwrap(), "old\n");
        assert_eq!(names(&dir).len(), 3, "{:?}", names(&dir));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_edit_goes_through_a_link_and_a_removal_is_backed_up() {
        let dir = temp_dir("link");
        fs::create_dir(dir.join("real")).unwrap();
        fs::write(dir.join("real/c.toml"), "old\n").unwrap();
        std::os::unix::fs::symlink("real/c.toml", dir.join("c.toml")).unwrap();
        let edit = Edit {
            path: dir.join("c.toml"),
            old: read(&dir.join("c.toml")).unwrap(),
            new: Some(b"new\n".to_vec()),
            backup: true,
        };
        assert!(edit.changes());
        let backup = edit.apply().unwrap().unwrap();
        assert!(fs::symlink_metadata(dir.join("c.toml"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_to_string(dir.join("real/c.toml")).unwrap(),
            "new\n"
        );
        assert_eq!(backup.parent(), Some(dir.join("real").as_path()));
        let gone = Edit {
            path: dir.join("real/c.toml"),
            old: Some(b"new\n".to_vec()),
            new: None,
            backup: false,
        };
        assert_eq!(gone.apply().unwrap(), None);
        assert_eq!(names(&dir.join("real")).len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
