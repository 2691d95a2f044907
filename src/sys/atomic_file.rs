//! Replacing a file whole: a temporary file beside it, fsynced, renamed over it, so a reader sees the old file
//! or the new one, never half of either.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` with permission bits `mode`, atomically; the temporary file is removed on failure.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.wg-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    // A stale one (a reused pid) would make create_new fail; whatever is there, a symlink included, goes.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
