//! resolv.conf: written where the container will read it, and put back at poststop.
//!
//! Where: the source of the bundle's /etc/resolv.conf bind mount when the engine made one (runc has already
//! bind-mounted that inode by createRuntime, so we write it in place), else `<rootfs>/etc/resolv.conf`
//! (replaced by rename, so a symlink in an image can never make us write outside the rootfs).

use crate::state::Bundle;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const MAX_PREVIOUS_BYTES: u64 = 64 * 1024;
/// The architecture's own value (it differs between x86_64 and aarch64).
const O_NOFOLLOW: i32 = nix::fcntl::OFlag::O_NOFOLLOW.bits();

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Previous {
    Absent,
    File { content: String },
    Symlink { target: PathBuf },
}

/// What we changed, so poststop can put it back: only if the file still holds what we wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvConfChange {
    pub path: PathBuf,
    pub in_place: bool,
    pub written: String,
    pub previous: Previous,
}

pub fn render(servers: &[IpAddr], search: &[String], container_id: &str) -> String {
    let mut out = format!("# written by wg-oci-hook for container {container_id}\n");
    if !search.is_empty() {
        let _ = writeln!(out, "search {}", search.join(" "));
    }
    for server in servers {
        let _ = writeln!(out, "nameserver {server}");
    }
    out
}

pub fn write(bundle: &Bundle, content: &str) -> io::Result<ResolvConfChange> {
    match &bundle.resolv_conf_mount_source {
        Some(source) => write_in_place(source, content),
        None => write_into_rootfs(&bundle.rootfs, content),
    }
}

fn write_in_place(path: &Path, content: &str) -> io::Result<ResolvConfChange> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(O_NOFOLLOW)
        .open(path)?;
    let mut previous = String::new();
    (&mut file)
        .take(MAX_PREVIOUS_BYTES)
        .read_to_string(&mut previous)?;
    file.set_len(0)?;
    std::os::unix::fs::FileExt::write_all_at(&file, content.as_bytes(), 0)?;
    Ok(ResolvConfChange {
        path: path.to_owned(),
        in_place: true,
        written: content.to_owned(),
        previous: Previous::File { content: previous },
    })
}

fn write_into_rootfs(rootfs: &Path, content: &str) -> io::Result<ResolvConfChange> {
    let etc = rootfs.join("etc");
    match fs::symlink_metadata(&etc) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} is not a directory (a symlink?)",
                etc.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&etc)?,
        Err(e) => return Err(e),
    }
    let path = etc.join("resolv.conf");
    let previous = read_previous(&path)?;
    replace_by_rename(&path, content)?;
    Ok(ResolvConfChange {
        path,
        in_place: false,
        written: content.to_owned(),
        previous,
    })
}

fn read_previous(path: &Path) -> io::Result<Previous> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Previous::Absent),
        Err(e) => Err(e),
        Ok(meta) if meta.file_type().is_symlink() => Ok(Previous::Symlink {
            target: fs::read_link(path)?,
        }),
        Ok(meta) if meta.is_file() => {
            let mut content = String::new();
            OpenOptions::new()
                .read(true)
                .custom_flags(O_NOFOLLOW)
                .open(path)?
                .take(MAX_PREVIOUS_BYTES)
                .read_to_string(&mut content)?;
            Ok(Previous::File { content })
        }
        Ok(_) => Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        ))),
    }
}

fn replace_by_rename(path: &Path, content: &str) -> io::Result<()> {
    let tmp = path.with_file_name(".resolv.conf.wg-oci-hook");
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(content.as_bytes())?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Puts back what was there before, if the file still holds exactly what we wrote. Nothing to do when the
/// file or its directory is gone (the engine removed the container's files, or unmounted its rootfs).
pub fn restore(change: &ResolvConfChange) -> io::Result<()> {
    match read_previous(&change.path) {
        Ok(Previous::File { content }) if content == change.written => {}
        _ => return Ok(()),
    }
    match (&change.previous, change.in_place) {
        (Previous::File { content }, true) => {
            let file = OpenOptions::new()
                .write(true)
                .custom_flags(O_NOFOLLOW)
                .open(&change.path)?;
            file.set_len(0)?;
            std::os::unix::fs::FileExt::write_all_at(&file, content.as_bytes(), 0)
        }
        (Previous::File { content }, false) => replace_by_rename(&change.path, content),
        (Previous::Absent, _) => fs::remove_file(&change.path),
        (Previous::Symlink { target }, _) => {
            fs::remove_file(&change.path)?;
            std::os::unix::fs::symlink(target, &change.path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wgoh-dns-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn renders_search_then_nameservers() {
        let text = render(
            &["10.0.0.53".parse().unwrap(), "fd00::53".parse().unwrap()],
            &["a.example".into(), "b".into()],
            "c1",
        );
        assert_eq!(
            text,
            "# written by wg-oci-hook for container c1\nsearch a.example b\nnameserver 10.0.0.53\nnameserver fd00::53\n"
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
