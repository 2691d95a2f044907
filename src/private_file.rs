//! Reading a file that holds secrets (a wg-quick config, provider credentials): refused unless it is a regular
//! file that neither group nor others can access, and bounded in size.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The file's text, or one line saying what is wrong with it (without the path: callers put it in front).
pub fn read(path: &Path, max_bytes: u64) -> Result<String, String> {
    // Checked before opening: opening a FIFO would block the hook until runc's timeout kills it.
    let kind = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !kind.is_file() {
        return Err("not a regular file".into());
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "is accessible by group or others (mode {mode:04o}); run chmod 600 {}",
            path.display()
        ));
    }
    if meta.size() > max_bytes {
        return Err(format!("larger than {} KiB", max_bytes / 1024));
    }
    let mut text = String::new();
    file.take(max_bytes)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}
