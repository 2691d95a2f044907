//! Leases: which tunnel holds which of a profile's configs. A static profile is one WireGuard key, and one key
//! in two network namespaces makes each steal the other's endpoint, so by default its one config is leased to
//! one tunnel at a time; a pool (`pool = "DIR"`) leases each of its files to one tunnel.
//!
//! `<state_dir>/leases/PROFILE/CONFIG` holds the key of the tunnel that has it (`-` names a static profile's only
//! config), claimed and released under `leases/PROFILE.lock`; the last release removes the profile's directory
//! and lock file, so a profile nobody uses leaves no file. A lease whose tunnel has no record naming it, and no start
//! running under that tunnel's lock, is free again: a start killed between its claim and its record leaks
//! nothing. A tunnel that has a record keeps its lease until it is torn down (poststop, `gc`, or the sweep at
//! the next start), so a lease is never handed to two live network namespaces.

use super::record::{short, LeaseName, StateDir};
use crate::sys::deadline::Deadline;
use crate::sys::lock::Lock;
use crate::sys::private_dir::PrivateDir;
use std::io;
use std::path::Path;

/// The config name of a static profile's lease.
pub const ONLY_CONFIG: &str = "-";

/// The `leases` directory of a state dir.
pub struct Leases {
    dir: PrivateDir,
}

impl Leases {
    pub fn open(state: &StateDir) -> Result<Leases, String> {
        state.dir().subdir("leases").map(|dir| Leases { dir })
    }

    /// Claims for tunnel `key` the first of `configs` that no other tunnel holds. `what` names the profile's
    /// configs in the refusal when all are taken.
    pub fn claim(
        &self,
        state: &StateDir,
        profile: &str,
        configs: &[String],
        key: &str,
        deadline: Deadline,
        what: &dyn Fn(&[String]) -> String,
    ) -> Result<LeaseName, String> {
        let lock_name = format!("{profile}.lock");
        let lock = self
            .dir
            .lock(&lock_name, deadline)
            .map_err(|e| e.to_string())?;
        let held = self.dir.subdir(profile)?;
        let mut holders = Vec::new();
        for config in configs {
            match holder(&held, config).map_err(|e| format!("lease {config}: {e}"))? {
                Some(other) if other != key && holds(state, &other, profile, config) => {
                    holders.push(other);
                }
                _ => {
                    held.write(config, key.as_bytes(), 0o600)
                        .map_err(|e| format!("lease {config}: {e}"))?;
                    return Ok(LeaseName {
                        profile: profile.to_owned(),
                        config: config.clone(),
                    });
                }
            }
        }
        drop(held);
        self.tidy(profile, lock);
        let containers: Vec<String> = holders
            .iter()
            .filter_map(|k| state.load(k).ok().flatten())
            .map(|r| r.builder().to_owned())
            .collect();
        Err(what(&containers))
    }

    /// Gives `lease` back, if tunnel `key` still holds it.
    pub fn release(&self, lease: &LeaseName, key: &str) -> io::Result<()> {
        let profile = lease.profile.as_str();
        // A release must not wait long: poststop and the undo have their own deadlines.
        let deadline = Deadline::after(std::time::Duration::from_secs(5), "the lease lock");
        let lock = self.dir.lock(&format!("{profile}.lock"), deadline)?;
        let held = self.dir.subdir(profile).map_err(io::Error::other)?;
        let released = match holder(&held, &lease.config) {
            Ok(Some(h)) if h == key => held.remove(&lease.config),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        drop(held);
        self.tidy(profile, lock);
        released
    }

    /// With the profile's lock held: once no lease of it is left, its directory and lock file go.
    fn tidy(&self, profile: &str, lock: Lock) {
        if self.dir.remove_empty_dir(profile).is_ok()
            && !self
                .dir
                .names()
                .is_ok_and(|n| n.iter().any(|n| n == profile))
        {
            let _ = self.dir.remove_lock(&format!("{profile}.lock"), lock);
        }
    }

    /// Removes the leases of `profile` that no tunnel holds any more (`gc`).
    pub fn sweep(&self, state: &StateDir, deadline: Deadline) -> io::Result<usize> {
        let mut freed = 0;
        for profile in self.dir.names()? {
            if profile.starts_with('.') || profile.ends_with(".lock") {
                continue;
            }
            let lock = self.dir.lock(&format!("{profile}.lock"), deadline)?;
            let Ok(held) = self.dir.subdir(&profile) else {
                continue;
            };
            for config in held.names()? {
                if config.starts_with('.') {
                    continue;
                }
                if let Some(key) = holder(&held, &config)? {
                    if !holds(state, &key, &profile, &config) {
                        held.remove(&config)?;
                        freed += 1;
                    }
                }
            }
            drop(held);
            self.tidy(&profile, lock);
        }
        Ok(freed)
    }
}

/// Gives back tunnel `key`'s `lease` (a teardown, an undo); the failure as one phrase.
pub fn release(state: &StateDir, lease: &LeaseName, key: &str) -> Result<(), String> {
    Leases::open(state)
        .map_err(io::Error::other)
        .and_then(|leases| leases.release(lease, key))
        .map_err(|e| {
            format!(
                "releasing the lease {}/{}: {e}",
                lease.profile, lease.config
            )
        })
}

/// The tunnel key a lease file names.
fn holder(held: &PrivateDir, config: &str) -> io::Result<Option<String>> {
    Ok(held
        .read(config)?
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned()))
}

/// Whether tunnel `key` holds `profile`'s `config`: its record names the lease, or a start is running under its
/// lock (and may not have saved its record yet).
fn holds(state: &StateDir, key: &str, profile: &str, config: &str) -> bool {
    let Ok(Some(lock)) = state.try_lock(key) else {
        // Busy (a start or a poststop is running), or unreadable: held, to be safe.
        return true;
    };
    match state.load(key) {
        Ok(Some(record)) => record
            .lease
            .is_some_and(|l| l.profile == profile && l.config == config),
        Ok(None) => {
            // A start that died before its record: the lock file was made by our look, or left by it.
            let _ = state.remove_lock(key, lock);
            false
        }
        Err(_) => true,
    }
}

/// A pool's configs: the `*.conf` files of `dir`, by name.
pub fn pool_configs(dir: &Path) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("pool {}: {e}", dir.display()))?;
    let mut configs: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.ends_with(".conf") && !name.starts_with('.'))
        .collect();
    configs.sort();
    Ok(configs)
}

/// One line for a refused start: who holds a static profile.
pub fn static_profile_taken(profile: &str, holders: &[String]) -> String {
    let holder = holders.first().map_or("another", |h| short(h));
    format!(
        "profile {profile:?} is in use by the tunnel of container {holder}: a static profile is one WireGuard key, \
         which one network namespace at a time can use (set shared = true on the profile to allow more, knowingly)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hook::record::Record;
    use std::time::Duration;

    fn state(tag: &str) -> (std::path::PathBuf, StateDir) {
        let dir = std::env::temp_dir().join(format!("wgoh-lease-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir).unwrap();
        (dir, state)
    }

    fn deadline() -> Deadline {
        Deadline::after(Duration::from_secs(2), "test")
    }

    fn configs(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("p{i}.conf")).collect()
    }

    fn taken(holders: &[String]) -> String {
        format!("all taken by {}", holders.join(","))
    }

    /// A record of tunnel `key` holding `lease`, with its lock free.
    fn record_holding(state: &StateDir, key: &str, lease: &LeaseName) {
        let text = format!(
            r#"{{"version":3,"netns":{{"dev":{},"ino":{}}},"members":[{{"container_id":"c{key}","pid":0,"start_time":0}}],
            "profile":"{}","interface":"wg0","host_link":"wgo1","backend":"userspace",
            "lease":{{"profile":"{}","config":"{}"}}}}"#,
            key.split('-').next().unwrap(),
            key.split('-').nth(1).unwrap(),
            lease.profile,
            lease.profile,
            lease.config
        );
        let record: Record = serde_json::from_str(&text).unwrap();
        state.save(&record).unwrap();
    }

    #[test]
    fn each_tunnel_gets_its_own_config_until_the_pool_is_empty() {
        let (dir, state) = state("pool");
        let leases = Leases::open(&state).unwrap();
        let pool = configs(2);
        let a = leases
            .claim(&state, "p", &pool, "1-1", deadline(), &taken)
            .unwrap();
        record_holding(&state, "1-1", &a);
        let b = leases
            .claim(&state, "p", &pool, "1-2", deadline(), &taken)
            .unwrap();
        record_holding(&state, "1-2", &b);
        assert_ne!(a, b);
        let e = leases
            .claim(&state, "p", &pool, "1-3", deadline(), &taken)
            .unwrap_err();
        assert_eq!(e, "all taken by c1-1,c1-2");
        // The same tunnel asking again gets its own lease back.
        assert_eq!(
            leases
                .claim(&state, "p", &pool, "1-1", deadline(), &taken)
                .unwrap(),
            a
        );
        leases.release(&a, "1-1").unwrap();
        state.remove("1-1").unwrap();
        assert_eq!(
            leases
                .claim(&state, "p", &pool, "1-3", deadline(), &taken)
                .unwrap(),
            a
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lease_whose_tunnel_left_no_record_is_free_but_a_busy_one_is_not() {
        let (dir, state) = state("stale");
        let leases = Leases::open(&state).unwrap();
        let only = vec![ONLY_CONFIG.to_owned()];
        // A start that claimed, then was killed before it saved its record.
        leases
            .claim(&state, "s", &only, "9-9", deadline(), &taken)
            .unwrap();
        // While it runs (holds its tunnel's lock), its lease is held...
        let running = state.try_lock("9-9").unwrap().unwrap();
        assert!(leases
            .claim(&state, "s", &only, "1-1", deadline(), &taken)
            .is_err());
        drop(running);
        // ...and once it is gone, it is not, and looking leaves no lock file of the dead start's.
        leases
            .claim(&state, "s", &only, "1-1", deadline(), &taken)
            .unwrap();
        assert!(!dir.join("tunnels/9-9.lock").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn release_leaves_a_lease_that_another_tunnel_took_over() {
        let (dir, state) = state("release");
        let leases = Leases::open(&state).unwrap();
        let only = vec![ONLY_CONFIG.to_owned()];
        let lease = leases
            .claim(&state, "s", &only, "1-1", deadline(), &taken)
            .unwrap();
        leases
            .claim(&state, "s", &only, "2-2", deadline(), &taken)
            .unwrap();
        leases.release(&lease, "1-1").unwrap();
        let held = std::fs::read_to_string(dir.join("leases/s/-")).unwrap();
        assert_eq!(held, "2-2");
        assert_eq!(
            leases.sweep(&state, deadline()).unwrap(),
            1,
            "no record names it"
        );
        assert!(!dir.join("leases/s/-").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
