//! What PIA hands out that outlives one container start, kept in `<state_dir>/pia/` (mode 0700, files 0600):
//! the account's token (reusable for about a day) and the signed server list (re-verified on every read).

use crate::atomic_file;
use crate::names::fnv1a64;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::credentials::Secret;

/// PIA's tokens last 24 hours; renew a little before.
pub const TOKEN_MAX_AGE: Duration = Duration::from_secs(23 * 3600);

pub struct Cache {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct CachedToken {
    obtained: u64,
    token: String,
}

impl Cache {
    pub fn new(state_dir: &Path) -> Cache {
        Cache {
            dir: state_dir.join("pia"),
        }
    }

    fn ensure_dir(&self) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }

    /// One token file per account, named by a hash of the username (the name itself stays out of paths).
    fn token_path(&self, username: &str) -> PathBuf {
        self.dir
            .join(format!("token-{:016x}.json", fnv1a64(username.as_bytes())))
    }

    pub fn token(&self, username: &str) -> Option<Secret> {
        let bytes = fs::read(self.token_path(username)).ok()?;
        let cached: CachedToken = serde_json::from_slice(&bytes).ok()?;
        let age = now_secs().saturating_sub(cached.obtained);
        (age < TOKEN_MAX_AGE.as_secs() && !cached.token.is_empty())
            .then(|| Secret::new(cached.token))
    }

    pub fn store_token(&self, username: &str, token: &Secret) -> io::Result<()> {
        self.ensure_dir()?;
        let body = serde_json::to_vec(&serde_json::json!({
            "obtained": now_secs(),
            "token": token.expose(),
        }))
        .map_err(io::Error::other)?;
        atomic_file::write(&self.token_path(username), &body, 0o600)
    }

    pub fn discard_token(&self, username: &str) {
        let _ = fs::remove_file(self.token_path(username));
    }

    fn list_path(&self, url: &str) -> PathBuf {
        self.dir
            .join(format!("servers-{:016x}.v6", fnv1a64(url.as_bytes())))
    }

    /// The cached list body if younger than `ttl` (`stale` ignores the age, for when the API is down).
    pub fn server_list(&self, url: &str, ttl: Duration, stale: bool) -> Option<Vec<u8>> {
        let path = self.list_path(url);
        let modified = fs::metadata(&path).ok()?.modified().ok()?;
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        if !stale && age >= ttl {
            return None;
        }
        fs::read(path).ok()
    }

    pub fn store_server_list(&self, url: &str, body: &[u8]) -> io::Result<()> {
        self.ensure_dir()?;
        atomic_file::write(&self.list_path(url), body, 0o600)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens_and_lists_round_trip_privately() {
        let dir = std::env::temp_dir().join(format!("wgoh-pia-cache-{}", std::process::id()));
        let cache = Cache::new(&dir);
        assert!(cache.token("p1").is_none());
        cache.store_token("p1", &Secret::new("tok".into())).unwrap();
        assert_eq!(cache.token("p1").unwrap().expose(), "tok");
        assert!(cache.token("p2").is_none());
        let path = cache.token_path("p1");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(dir.join("pia")).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(!path.to_string_lossy().contains("p1"));
        cache.discard_token("p1");
        assert!(cache.token("p1").is_none());

        assert!(cache
            .server_list("https://x/", Duration::from_secs(60), false)
            .is_none());
        cache.store_server_list("https://x/", b"list").unwrap();
        assert_eq!(
            cache
                .server_list("https://x/", Duration::from_secs(60), false)
                .unwrap(),
            b"list"
        );
        assert!(cache
            .server_list("https://x/", Duration::ZERO, false)
            .is_none());
        assert!(cache
            .server_list("https://x/", Duration::ZERO, true)
            .is_some());
        fs::remove_dir_all(&dir).unwrap();
    }
}
