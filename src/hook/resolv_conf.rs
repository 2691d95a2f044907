//! resolv.conf: written where the container will read it, and put back at poststop.
//!
//! Where: the source of the bundle's /etc/resolv.conf bind mount when the engine made one (runc has already
//! bind-mounted that inode by createRuntime, so we write it in place; the workload can write that file but not
//! replace it), else `/etc/resolv.conf` inside the rootfs, replaced by rename. A workload may run before
//! createRuntime ends (podman exec, a shared volume) and surely has before poststop, so inside the rootfs every
//! path is resolved in the container's root (`container_file`) each time: a symlink it planted (`/etc ->
//! /host/dir`) leads somewhere inside the container, never to a host file.

use crate::oci::config::Bundle;
use crate::sys::container_file;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};
use nix::unistd::{symlinkat, unlinkat, UnlinkatFlags};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MAX_PREVIOUS_BYTES: u64 = 64 * 1024;
/// The first line of every resolv.conf we write, before the container's id.
const HEADER: &str = "# written by wg-oci-hook for container ";
/// Where the container reads it.
const RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Previous {
    Absent,
    File { content: String },
    Symlink { target: PathBuf },
}

/// The file we wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// The engine's bind-mount source, a host file outside the rootfs: written in place.
    MountSource { path: PathBuf },
    /// `path` as the container sees it, resolved in the root file system `rootfs` every time.
    Rootfs { rootfs: PathBuf, path: String },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::MountSource { path } => write!(f, "{}", path.display()),
            Location::Rootfs { rootfs, path } => {
                write!(f, "{path} in the rootfs {}", rootfs.display())
            }
        }
    }
}

/// What we changed, so poststop can put it back: only if the file still holds what we wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredChange")]
pub struct ResolvConfChange {
    pub location: Location,
    pub written: String,
    pub previous: Previous,
}

/// A change as records hold it: those written before `location` existed hold a host path and `in_place`.
#[derive(Deserialize)]
struct StoredChange {
    #[serde(default)]
    location: Option<Location>,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    in_place: bool,
    written: String,
    previous: Previous,
}

impl TryFrom<StoredChange> for ResolvConfChange {
    type Error = String;

    fn try_from(stored: StoredChange) -> Result<Self, String> {
        let location = match (stored.location, stored.path) {
            (Some(location), _) => location,
            (None, Some(path)) if stored.in_place => Location::MountSource { path },
            // `<rootfs>/etc/resolv.conf`: from now on resolved in that rootfs, never by this path.
            (None, Some(path)) => match path.parent().and_then(Path::parent) {
                Some(rootfs) if path.ends_with("etc/resolv.conf") => Location::Rootfs {
                    rootfs: rootfs.to_owned(),
                    path: RESOLV_CONF.to_owned(),
                },
                _ => return Err(format!("{}: not a rootfs resolv.conf", path.display())),
            },
            (None, None) => return Err("a resolv.conf change without its location".to_owned()),
        };
        Ok(ResolvConfChange {
            location,
            written: stored.written,
            previous: stored.previous,
        })
    }
}

/// A link-local server (the config's `fe80::1%wg0`, whose zone can only be the tunnel) gets the zone of the
/// container's tunnel, `interface`: without one the resolver cannot reach it.
pub fn render(
    servers: &[IpAddr],
    search: &[String],
    interface: &str,
    container_id: &str,
) -> String {
    let mut out = format!("{HEADER}{container_id}\n");
    if !search.is_empty() {
        let _ = writeln!(out, "search {}", search.join(" "));
    }
    for server in servers {
        match server {
            IpAddr::V6(v6) if crate::config::wgquick::is_link_local(v6) => {
                let _ = writeln!(out, "nameserver {v6}%{interface}");
            }
            _ => {
                let _ = writeln!(out, "nameserver {server}");
            }
        }
    }
    out
}

/// Where the container reads its resolv.conf: the engine's bind-mount source, else the rootfs's file.
/// Containers of a pod mount one file, which is written once for all of them.
pub fn location(bundle: &Bundle) -> Location {
    match &bundle.resolv_conf_mount_source {
        Some(source) => Location::MountSource {
            path: source.clone(),
        },
        None => Location::Rootfs {
            rootfs: bundle.rootfs.clone(),
            path: RESOLV_CONF.to_owned(),
        },
    }
}

/// Whether `content` is a resolv.conf we wrote (for this tunnel or another).
pub fn is_ours(content: &str) -> bool {
    content.starts_with(HEADER)
}

pub fn write(bundle: &Bundle, content: &str) -> io::Result<ResolvConfChange> {
    let location = location(bundle);
    let written = match &location {
        Location::MountSource { path } => write_in_place(path, content),
        Location::Rootfs { rootfs, path } => write_into_rootfs(rootfs, path, content),
    };
    let previous = written.map_err(|e| io::Error::new(e.kind(), format!("{location}: {e}")))?;
    Ok(ResolvConfChange {
        location,
        written: content.to_owned(),
        previous,
    })
}

/// Opens the engine's file, never a symlink there, nor a FIFO or device.
fn open_mount_source(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

fn read_up_to_max(file: &File) -> io::Result<String> {
    let mut content = String::new();
    file.take(MAX_PREVIOUS_BYTES).read_to_string(&mut content)?;
    Ok(content)
}

fn overwrite(file: &File, content: &str) -> io::Result<()> {
    file.set_len(0)?;
    file.write_all_at(content.as_bytes(), 0)
}

fn write_in_place(path: &Path, content: &str) -> io::Result<Previous> {
    let file = open_mount_source(path)?;
    let previous = read_up_to_max(&file)?;
    overwrite(&file, content)?;
    Ok(Previous::File { content: previous })
}

fn write_into_rootfs(rootfs: &Path, path: &str, content: &str) -> io::Result<Previous> {
    let root = container_file::open_root(rootfs)?;
    let (dir, name) = container_file::split(path)?;
    let dir = match container_file::open_dir_in_root(&root, dir) {
        // An image without /etc: make it (a dangling symlink there fails with EEXIST).
        Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.contains('/') => {
            mkdirat(&root, dir, Mode::from_bits_truncate(0o755)).map_err(|e| {
                io::Error::other(format!(
                    "/{dir} leads nowhere inside the container (a dangling symlink?): {e}"
                ))
            })?;
            container_file::open_dir_in_root(&root, dir)?
        }
        opened => opened?,
    };
    let previous = read_previous(&dir, name)?;
    container_file::replace_at(&dir, OsStr::new(name), content.as_bytes())?;
    Ok(previous)
}

/// What the entry `name` of `dir` is, never following it. It is opened with O_PATH, which neither follows a
/// symlink nor opens a device or FIFO; only a regular file is then opened for reading (through the O_PATH fd, so
/// the entry cannot be swapped in between).
fn read_previous(dir: &OwnedFd, name: &str) -> io::Result<Previous> {
    let entry = match openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Err(Errno::ENOENT) => return Ok(Previous::Absent),
        opened => opened?,
    };
    let kind = SFlag::from_bits_truncate(fstat(&entry)?.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFLNK {
        let target = readlinkat(&entry, "")?;
        Ok(Previous::Symlink {
            target: target.into(),
        })
    } else if kind == SFlag::S_IFREG {
        let file = File::open(format!("/proc/self/fd/{}", entry.as_raw_fd()))?;
        Ok(Previous::File {
            content: read_up_to_max(&file)?,
        })
    } else {
        Err(io::Error::other(format!("{name} is not a regular file")))
    }
}

/// Puts back what was there before, if the file still holds exactly what we wrote. Nothing to do when the
/// file or its directory is gone (the engine removed the container's files, or unmounted its rootfs), or when the
/// workload changed it.
pub fn restore(change: &ResolvConfChange) -> io::Result<()> {
    match &change.location {
        Location::MountSource { path } => restore_in_place(path, change),
        Location::Rootfs { rootfs, path } => restore_in_rootfs(rootfs, path, change),
    }
}

/// Replaces what we wrote with `content` (a tunnel whose DNS changed), if the file still holds exactly what we
/// wrote; false when it does not (the workload changed it, or it is gone), which leaves it alone.
pub fn rewrite(change: &mut ResolvConfChange, content: &str) -> io::Result<bool> {
    let replaced = match &change.location {
        Location::MountSource { path } => {
            let Ok(file) = open_mount_source(path) else {
                return Ok(false);
            };
            match read_up_to_max(&file) {
                Ok(now) if now == change.written => overwrite(&file, content).map(|()| true),
                _ => Ok(false),
            }
        }
        Location::Rootfs { rootfs, path } => {
            let root = container_file::open_root(rootfs)?;
            let (dir, name) = container_file::split(path)?;
            let dir = container_file::open_dir_in_root(&root, dir)?;
            match read_previous(&dir, name) {
                Ok(Previous::File { content: now }) if now == change.written => {
                    container_file::replace_at(&dir, OsStr::new(name), content.as_bytes())
                        .map(|()| true)
                }
                _ => Ok(false),
            }
        }
    }?;
    if replaced {
        change.written = content.to_owned();
    }
    Ok(replaced)
}

fn restore_in_place(path: &Path, change: &ResolvConfChange) -> io::Result<()> {
    let Ok(file) = open_mount_source(path) else {
        return Ok(());
    };
    match read_up_to_max(&file) {
        Ok(content) if content == change.written => {}
        _ => return Ok(()),
    }
    match &change.previous {
        Previous::File { content } => overwrite(&file, content),
        // We only ever write a bind-mount source that was a file.
        Previous::Absent | Previous::Symlink { .. } => Ok(()),
    }
}

fn restore_in_rootfs(rootfs: &Path, path: &str, change: &ResolvConfChange) -> io::Result<()> {
    let gone = |e: &io::Error| {
        e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(Errno::ENOTDIR as i32)
    };
    let root = match container_file::open_root(rootfs) {
        Err(e) if gone(&e) => return Ok(()),
        opened => opened?,
    };
    let (dir, name) = container_file::split(path)?;
    let dir = match container_file::open_dir_in_root(&root, dir) {
        Err(e) if gone(&e) => return Ok(()),
        opened => opened?,
    };
    match read_previous(&dir, name) {
        Ok(Previous::File { content }) if content == change.written => {}
        _ => return Ok(()),
    }
    match &change.previous {
        Previous::File { content } => {
            container_file::replace_at(&dir, OsStr::new(name), content.as_bytes())
        }
        Previous::Absent => Ok(unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir)?),
        Previous::Symlink { target } => {
            unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir)?;
            Ok(symlinkat(target.as_path(), &dir, name)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tmpdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wgoh-dns-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn renders_search_then_nameservers() {
        let text = render(
            &[
                "10.0.0.53".parse().unwrap(),
                "fd00::53".parse().unwrap(),
                "fe80::53".parse().unwrap(),
            ],
            &["a.example".into(), "b".into()],
            "tun0",
            "c1",
        );
        assert_eq!(
            text,
            "# written by wg-oci-hook for container c1\nsearch a.example b\nnameserver 10.0.0.53\n\
             nameserver fd00::53\nnameserver fe80::53%tun0\n"
        );
    }

    #[test]
    fn rootfs_file_is_replaced_and_restored() {
        let rootfs = tmpdir("rootfs");
        fs::create_dir(rootfs.join("etc")).unwrap();
        fs::write(rootfs.join("etc/resolv.conf"), "nameserver 1.1.1.1\n").unwrap();
        let bundle = Bundle {
            rootfs: rootfs.clone(),
            resolv_conf_mount_source: None,
            netns_path: None,
            devices: Vec::new(),
        };
        let change = write(&bundle, "nameserver 10.0.0.53\n").unwrap();
        assert_eq!(
            fs::read_to_string(rootfs.join("etc/resolv.conf")).unwrap(),
            "nameserver 10.0.0.53\n"
        );
        restore(&change).unwrap();
        assert_eq!(
            fs::read_to_string(rootfs.join("etc/resolv.conf")).unwrap(),
            "nameserver 1.1.1.1\n"
        );
        fs::remove_dir_all(&rootfs).unwrap();
    }

    #[test]
    fn symlink_in_rootfs_is_replaced_not_followed_and_restored() {
        let rootfs = tmpdir("symlink");
        let outside = rootfs.join("outside-the-rootfs");
        fs::write(&outside, "host file\n").unwrap();
        fs::create_dir(rootfs.join("etc")).unwrap();
        std::os::unix::fs::symlink(&outside, rootfs.join("etc/resolv.conf")).unwrap();
        let bundle = Bundle {
            rootfs: rootfs.clone(),
            resolv_conf_mount_source: None,
            netns_path: None,
            devices: Vec::new(),
        };
        let change = write(&bundle, "nameserver 10.0.0.53\n").unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "host file\n");
        restore(&change).unwrap();
        assert_eq!(
            fs::read_link(rootfs.join("etc/resolv.conf")).unwrap(),
            outside
        );
        fs::remove_dir_all(&rootfs).unwrap();
    }

    #[test]
    fn absent_file_is_created_then_removed_and_edits_by_the_workload_are_kept() {
        let rootfs = tmpdir("absent");
        let bundle = Bundle {
            rootfs: rootfs.clone(),
            resolv_conf_mount_source: None,
            netns_path: None,
            devices: Vec::new(),
        };
        let change = write(&bundle, "nameserver 10.0.0.53\n").unwrap();
        restore(&change).unwrap();
        assert!(!rootfs.join("etc/resolv.conf").exists());
        let change = write(&bundle, "nameserver 10.0.0.53\n").unwrap();
        fs::write(rootfs.join("etc/resolv.conf"), "edited\n").unwrap();
        restore(&change).unwrap();
        assert_eq!(
            fs::read_to_string(rootfs.join("etc/resolv.conf")).unwrap(),
            "edited\n"
        );
        fs::remove_dir_all(&rootfs).unwrap();
    }

    /// What a directory holds: each entry's name, and its content or symlink target.
    fn snapshot(dir: &Path) -> Vec<(String, String)> {
        let mut entries: Vec<(String, String)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let what = match fs::read_link(&path) {
                    Ok(target) => format!("symlink to {}", target.display()),
                    Err(_) => format!("file {:?}", fs::read_to_string(&path).unwrap()),
                };
                (name, what)
            })
            .collect();
        entries.sort();
        entries
    }

    /// The workload, between createRuntime and poststop, replaces its /etc with an absolute symlink to a host
    /// directory (it can read its rootfs's host path in /proc/self/mountinfo). That directory holds a
    /// resolv.conf with exactly what the hook wrote (as when a flip of the symlink wins the race between the
    /// check and the write). Restoring must not touch the host directory.
    fn restore_leaves_a_host_dir_alone_when_etc_became_a_symlink_to_it(
        tag: &str,
        image: impl Fn(&Path),
    ) {
        let base = tmpdir(tag);
        let rootfs = base.join("rootfs");
        let host = base.join("host-etc");
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::create_dir(&host).unwrap();
        image(&rootfs.join("etc"));
        let bundle = Bundle {
            rootfs: rootfs.clone(),
            resolv_conf_mount_source: None,
            netns_path: None,
            devices: Vec::new(),
        };
        let change = write(&bundle, "nameserver 10.0.0.53\n").unwrap();

        fs::rename(rootfs.join("etc"), rootfs.join("etc.moved")).unwrap();
        std::os::unix::fs::symlink(&host, rootfs.join("etc")).unwrap();
        fs::write(host.join("resolv.conf"), "nameserver 10.0.0.53\n").unwrap();
        fs::write(host.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let before = snapshot(&host);
        let restored = restore(&change);
        assert_eq!(
            snapshot(&host),
            before,
            "restore changed the host directory"
        );
        restored.unwrap();
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn restore_never_writes_a_previous_file_through_a_planted_etc_symlink() {
        restore_leaves_a_host_dir_alone_when_etc_became_a_symlink_to_it("hostile-file", |etc| {
            fs::write(etc.join("resolv.conf"), "nameserver 1.1.1.1\n").unwrap()
        });
    }

    #[test]
    fn restore_never_deletes_through_a_planted_etc_symlink() {
        restore_leaves_a_host_dir_alone_when_etc_became_a_symlink_to_it("hostile-absent", |_| {});
    }

    #[test]
    fn restore_never_plants_a_symlink_through_a_planted_etc_symlink() {
        restore_leaves_a_host_dir_alone_when_etc_became_a_symlink_to_it("hostile-link", |etc| {
            std::os::unix::fs::symlink("/run/resolv.conf", etc.join("resolv.conf")).unwrap()
        });
    }

    /// At createRuntime (a workload started early by `podman exec`, or an image made so) an absolute /etc
    /// symlink resolves inside the rootfs: to a directory of the container, or to nothing.
    #[test]
    fn write_resolves_an_etc_symlink_inside_the_rootfs() {
        let base = tmpdir("etc-link");
        let rootfs = base.join("rootfs");
        let host = base.join("host-etc");
        fs::create_dir_all(rootfs.join("usr/etc")).unwrap();
        fs::create_dir(&host).unwrap();
        fs::write(host.join("resolv.conf"), "host\n").unwrap();
        let bundle = Bundle {
            rootfs: rootfs.clone(),
            resolv_conf_mount_source: None,
            netns_path: None,
            devices: Vec::new(),
        };

        std::os::unix::fs::symlink(&host, rootfs.join("etc")).unwrap();
        let before = snapshot(&host);
        let e = write(&bundle, "nameserver 10.0.0.53\n").unwrap_err();
        assert!(
            e.to_string().starts_with("/etc/resolv.conf in the rootfs "),
            "{e}"
        );
        assert!(e.to_string().contains("/etc leads nowhere"), "{e}");
        assert_eq!(snapshot(&host), before);
        assert_eq!(snapshot(&rootfs.join("usr/etc")), []);

        fs::remove_file(rootfs.join("etc")).unwrap();
        std::os::unix::fs::symlink("/usr/etc", rootfs.join("etc")).unwrap();
        let change = write(&bundle, "nameserver 10.0.0.53\n").unwrap();
        assert_eq!(
            fs::read_to_string(rootfs.join("usr/etc/resolv.conf")).unwrap(),
            "nameserver 10.0.0.53\n"
        );
        restore(&change).unwrap();
        assert_eq!(snapshot(&rootfs.join("usr/etc")), []);
        assert_eq!(snapshot(&host), before);
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_rootfs_that_is_a_symlink_is_refused() {
        let base = tmpdir("rootfs-link");
        fs::create_dir_all(base.join("real/etc")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("rootfs")).unwrap();
        let bundle = Bundle {
            rootfs: base.join("rootfs"),
            resolv_conf_mount_source: None,
            netns_path: None,
            devices: Vec::new(),
        };
        assert!(write(&bundle, "nameserver 10.0.0.53\n").is_err());
        assert_eq!(snapshot(&base.join("real/etc")), []);
        fs::remove_dir_all(&base).unwrap();
    }

    /// Records keep the rootfs and the path inside it; those of earlier versions (a host path) still load, as
    /// the same rootfs location.
    #[test]
    fn records_keep_the_rootfs_and_old_records_still_load() {
        let change = ResolvConfChange {
            location: Location::Rootfs {
                rootfs: "/var/lib/c/rootfs".into(),
                path: RESOLV_CONF.into(),
            },
            written: "nameserver 10.0.0.53\n".into(),
            previous: Previous::Absent,
        };
        let json = serde_json::to_string(&change).unwrap();
        assert_eq!(
            json,
            r#"{"location":{"kind":"rootfs","rootfs":"/var/lib/c/rootfs","path":"/etc/resolv.conf"},"written":"nameserver 10.0.0.53\n","previous":{"kind":"absent"}}"#
        );
        assert_eq!(
            serde_json::from_str::<ResolvConfChange>(&json).unwrap(),
            change
        );
        let old = r#"{"path":"/var/lib/c/rootfs/etc/resolv.conf","in_place":false,
            "written":"nameserver 10.0.0.53\n","previous":{"kind":"absent"}}"#;
        assert_eq!(
            serde_json::from_str::<ResolvConfChange>(old).unwrap(),
            change
        );
        let old = r#"{"path":"/run/c/resolv.conf","in_place":true,
            "written":"x","previous":{"kind":"file","content":"y"}}"#;
        assert_eq!(
            serde_json::from_str::<ResolvConfChange>(old)
                .unwrap()
                .location,
            Location::MountSource {
                path: "/run/c/resolv.conf".into()
            }
        );
        let odd =
            r#"{"path":"/etc/passwd","in_place":false,"written":"x","previous":{"kind":"absent"}}"#;
        assert!(serde_json::from_str::<ResolvConfChange>(odd).is_err());
    }

    #[test]
    fn bind_mount_source_is_written_in_place_keeping_the_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tmpdir("bind");
        let source = dir.join("resolv.conf");
        fs::write(&source, "nameserver 10.88.0.1\n").unwrap();
        let inode = fs::metadata(&source).unwrap().ino();
        let bundle = Bundle {
            rootfs: dir.join("rootfs"),
            resolv_conf_mount_source: Some(source.clone()),
            netns_path: None,
            devices: Vec::new(),
        };
        let change = write(&bundle, "nameserver 10.0.0.53\n").unwrap();
        assert_eq!(fs::metadata(&source).unwrap().ino(), inode);
        assert_eq!(
            fs::read_to_string(&source).unwrap(),
            "nameserver 10.0.0.53\n"
        );
        restore(&change).unwrap();
        assert_eq!(
            fs::read_to_string(&source).unwrap(),
            "nameserver 10.88.0.1\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
