//! Opening a file that someone else names (the operator's policy, the engine's bundle) without being led elsewhere
//! or stalled: the last component must not be a symlink (O_NOFOLLOW), and a FIFO or device must not block the
//! hook until the runtime's timeout kills it (O_NONBLOCK, then fstat on what was actually opened: no race between
//! a check and the open).

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::Path;

/// The refusal of a symlink, for callers that add advice to it.
pub const SYMLINK: &str = "is a symlink";

const FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_CLOEXEC);

/// `path`, opened for reading if it is a regular file and not a symlink; else one line saying what it is (without
/// the path: callers put it in front).
pub fn open(path: &Path) -> Result<(File, Metadata), String> {
    checked(nix::fcntl::open(path, FLAGS, Mode::empty()))
}

/// `name` in the directory `dir`, as `open` does.
pub fn open_in(dir: impl AsFd, name: &str) -> Result<(File, Metadata), String> {
    checked(nix::fcntl::openat(dir, name, FLAGS, Mode::empty()))
}

/// A directory that is not a symlink, as an O_PATH handle for `open_in`.
pub fn open_dir(path: &Path) -> Result<File, String> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| std::io::Error::from(e).to_string())?;
    let dir = File::from(fd);
    let meta = dir.metadata().map_err(|e| e.to_string())?;
    if meta.is_symlink() {
        Err(SYMLINK.into())
    } else if !meta.is_dir() {
        Err("not a directory".into())
    } else {
        Ok(dir)
    }
}

/// Why a capped read gave no text.
#[derive(Debug, thiserror::Error)]
pub enum CappedReadError {
    /// More than the limit (in bytes) was there.
    #[error("larger than {}", size(*.0))]
    TooLarge(u64),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// All that `reader` gives, refused past `limit` bytes: no one can make us hold more than that of a file or
/// a pipe someone else fills. The error says only what is wrong (callers put the name in front).
pub fn read_capped(reader: impl Read, limit: u64) -> Result<Vec<u8>, CappedReadError> {
    let mut bytes = Vec::new();
    reader.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(CappedReadError::TooLarge(limit));
    }
    Ok(bytes)
}

/// `read_capped`, as UTF-8 text.
pub fn read_capped_text(reader: impl Read, limit: u64) -> Result<String, CappedReadError> {
    String::from_utf8(read_capped(reader, limit)?).map_err(|_| {
        CappedReadError::Io(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
    })
}

/// A limit as people write it: 1 MiB, 64 KiB, 300 bytes.
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

fn checked(opened: nix::Result<std::os::fd::OwnedFd>) -> Result<(File, Metadata), String> {
    let file = match opened {
        Ok(fd) => File::from(fd),
        // O_NOFOLLOW's answer for a last component that is a symlink.
        Err(Errno::ELOOP) => return Err(SYMLINK.into()),
        Err(e) => return Err(std::io::Error::from(e).to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    Ok((file, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_symlinks_fifos_and_directories_and_opens_files() {
        let dir = std::env::temp_dir().join(format!("wgoh-regular-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("file"), "text").unwrap();
        std::os::unix::fs::symlink(dir.join("file"), dir.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.join("sub"), dir.join("dirlink")).unwrap();
        nix::unistd::mkfifo(&dir.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();

        let (file, meta) = open(&dir.join("file")).unwrap();
        assert_eq!(meta.len(), 4);
        drop(file);
        assert_eq!(open(&dir.join("link")).unwrap_err(), "is a symlink");
        assert_eq!(open(&dir.join("fifo")).unwrap_err(), "not a regular file");
        assert_eq!(open(&dir.join("sub")).unwrap_err(), "not a regular file");
        assert!(open(&dir.join("missing"))
            .unwrap_err()
            .contains("No such file"));

        let d = open_dir(&dir).unwrap();
        assert!(open_in(&d, "file").is_ok());
        assert_eq!(open_in(&d, "link").unwrap_err(), "is a symlink");
        assert_eq!(open_in(&d, "fifo").unwrap_err(), "not a regular file");
        assert_eq!(open_dir(&dir.join("dirlink")).unwrap_err(), "is a symlink");
        assert_eq!(open_dir(&dir.join("file")).unwrap_err(), "not a directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn capped_reads_take_the_limit_and_refuse_one_byte_more() {
        assert_eq!(read_capped(&[7u8; 1024][..], 1024).unwrap().len(), 1024);
        let e = read_capped(&[7u8; 1025][..], 1024).unwrap_err();
        assert_eq!(e.to_string(), "larger than 1 KiB");
        assert!(matches!(e, CappedReadError::TooLarge(1024)), "{e:?}");
        let e = read_capped(std::io::repeat(0), 16 << 20).unwrap_err();
        assert_eq!(e.to_string(), "larger than 16 MiB");
        assert_eq!(
            read_capped(&b"0123456789"[..], 9).unwrap_err().to_string(),
            "larger than 9 bytes"
        );
        assert_eq!(read_capped_text(&b"ok"[..], 2).unwrap(), "ok");
        assert!(read_capped_text(&[0xffu8][..], 2).is_err());
    }
}
