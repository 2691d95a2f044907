//! What PIA hands out that outlives one container start, kept in `<state_dir>/pia/` (mode 0700, files 0600,
//! checked and written like the state dir itself: see `PrivateDir`):
//! the account's token (reusable for about a day) and the signed server list (re-verified on every read).

use crate::sys::names::fnv1a64;
use crate::sys::private_dir::PrivateDir;
use serde::{Deserialize, Serialize};
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::credentials::Secret;

/// PIA's tokens last 24 hours; renew a little before.
pub const TOKEN_MAX_AGE: Duration = Duration::from_secs(23 * 3600);

pub struct Cache {
    dir: PrivateDir,
}

#[derive(Serialize, Deserialize)]
struct CachedToken {
    obtained: u64,
    token: String,
}

impl Cache {
    /// `<state_dir>/pia`, created 0700 when missing, refused (one line) unless ours alone like the state dir.
    pub fn open(state_dir: &PrivateDir) -> Result<Cache, String> {
        state_dir.subdir("pia").map(|dir| Cache { dir })
    }

    /// One token file per account, named by a hash of the username (the name itself stays out of paths).
    fn token_name(username: &str) -> String {
        format!("token-{:016x}.json", fnv1a64(username.as_bytes()))
    }

    pub fn token(&self, username: &str) -> Option<Secret> {
        let bytes = self.dir.read(&Self::token_name(username)).ok()??;
        let cached: CachedToken = serde_json::from_slice(&bytes).ok()?;
        let age = now_secs().saturating_sub(cached.obtained);
        (age < TOKEN_MAX_AGE.as_secs() && !cached.token.is_empty())
            .then(|| Secret::new(cached.token))
    }

    pub fn store_token(&self, username: &str, token: &Secret) -> io::Result<()> {
        let body = serde_json::to_vec(&serde_json::json!({
            "obtained": now_secs(),
            "token": token.expose(),
        }))
        .map_err(io::Error::other)?;
        self.dir.write(&Self::token_name(username), &body, 0o600)
    }

    pub fn discard_token(&self, username: &str) {
        let _ = self.dir.remove(&Self::token_name(username));
    }

    fn list_name(url: &str) -> String {
        format!("servers-{:016x}.v6", fnv1a64(url.as_bytes()))
    }

    /// The cached list body if younger than `ttl` (`stale` ignores the age, for when the API is down).
    pub fn server_list(&self, url: &str, ttl: Duration, stale: bool) -> Option<Vec<u8>> {
        let name = Self::list_name(url);
        let modified = self.dir.modified(&name)?;
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        if !stale && age >= ttl {
            return None;
        }
        self.dir.read(&name).ok()?
    }

    pub fn store_server_list(&self, url: &str, body: &[u8]) -> io::Result<()> {
        self.dir.write(&Self::list_name(url), body, 0o600)
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
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens_and_lists_round_trip_privately() {
        let dir = std::env::temp_dir().join(format!("wgoh-pia-cache-{}", std::process::id()));
        let cache = Cache::open(&PrivateDir::open(&dir).unwrap()).unwrap();
        assert!(cache.token("p1").is_none());
        cache.store_token("p1", &Secret::new("tok".into())).unwrap();
        assert_eq!(cache.token("p1").unwrap().expose(), "tok");
        assert!(cache.token("p2").is_none());
        let path = dir.join("pia").join(Cache::token_name("p1"));
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
