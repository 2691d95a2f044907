//! Reading a file that holds secrets (a wg-quick config, provider credentials): refused unless it is a regular
//! file owned by root that neither group nor others can access, and bounded in size.

use crate::sys::regular_file;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The file's text, or one line saying what is wrong with it (without the path: callers put it in front).
/// Not a symlink, not a FIFO (which would block the hook until runc's timeout), owned by root: whoever else
/// could write it could choose the tunnel's key or peer.
pub fn read(path: &Path, max_bytes: u64) -> Result<String, String> {
    let (file, meta) = regular_file::open(path).map_err(|e| {
        if e == regular_file::SYMLINK {
            format!("{e}; name the real file")
        } else {
            e
        }
    })?;
    if meta.uid() != 0 {
        return Err(format!("not owned by root (owner uid {})", meta.uid()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "is accessible by group or others (mode {mode:04o}); run chmod 600 {}",
            path.display()
        ));
    }
    regular_file::read_capped_text(file, max_bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_root_owned_0600_regular_file_that_is_not_a_symlink_is_read() {
        let dir = std::env::temp_dir().join(format!("wgoh-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vpn.conf");
        std::fs::write(&file, "[Interface]\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&file, 1024).unwrap(), "[Interface]\n");

        std::os::unix::fs::symlink(&file, dir.join("link.conf")).unwrap();
        let e = read(&dir.join("link.conf"), 1024).unwrap_err();
        assert!(e.contains("symlink"), "{e}");

        nix::unistd::mkfifo(
            &dir.join("fifo.conf"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert_eq!(
            read(&dir.join("fifo.conf"), 1024).unwrap_err(),
            "not a regular file"
        );

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read(&file, 1024).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

        // Someone other than root could put a key (or a peer) of their choosing there.
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
            let e = read(&file, 1024).unwrap_err();
            assert!(e.contains("not owned by root"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
