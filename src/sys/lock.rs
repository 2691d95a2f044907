//! Advisory locks (flock) on files of a private directory: one per tunnel (its network namespace) and one per
//! leased profile, so that starts in unrelated namespaces never wait for each other. A lock file may be removed
//! by whoever holds it; a waiter that then locked the removed file sees that the name now leads elsewhere (or
//! nowhere) and tries again, so two holders can never each believe they hold the lock of one name.

use super::deadline::Deadline;
use super::private_dir::PrivateDir;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io;
use std::time::Duration;

/// Held until dropped.
pub struct Lock {
    _held: Flock<File>,
}

/// How often a waiter looks again: short, since what the locks guard takes milliseconds, except a start
/// in the same netns.
const POLL: Duration = Duration::from_millis(1);

impl PrivateDir {
    /// The lock `name`, waited for until `deadline`.
    pub fn lock(&self, name: &str, deadline: Deadline) -> io::Result<Lock> {
        loop {
            if let Some(lock) = self.try_lock(name)? {
                return Ok(lock);
            }
            deadline.check().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "waiting for the lock {}: {e}",
                        self.path().join(name).display()
                    ),
                )
            })?;
            std::thread::sleep(POLL);
        }
    }

    /// Removes the lock file `name`, then lets go of `lock`, its holder's: a waiter that locked the removed file
    /// sees the name lead elsewhere and tries again.
    pub fn remove_lock(&self, name: &str, lock: Lock) -> io::Result<()> {
        let removed = self.remove(name);
        drop(lock);
        removed
    }

    /// The lock `name` if nobody holds it now.
    pub fn try_lock(&self, name: &str) -> io::Result<Option<Lock>> {
        loop {
            let file = self.open_lock_file(name)?;
            let held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(held) => held,
                Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
                Err((_, e)) => return Err(e.into()),
            };
            // Removed (and maybe made anew) while we waited: not the lock of this name any more.
            if self.is_same_file(name, &*held)? {
                return Ok(Some(Lock { _held: held }));
            }
        }
    }
}
