//! Network namespaces: opening a container's netns and running work inside it.
//!
//! A netlink socket belongs to the netns of the thread that created it, for its whole life. So we enter the
//! container's netns on a short-lived scoped thread, open what we need there, and let the thread end: the main
//! thread never changes namespace, and nothing has to find its way back (netavark's approach, without setns-back).

use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// An open handle on a network namespace (keeps it alive while we hold it).
pub struct NetNs {
    file: File,
    pub path: String,
}

impl NetNs {
    /// The netns of a running process: `/proc/PID/ns/net`.
    pub fn of_pid(pid: u32) -> io::Result<Self> {
        Self::open(&format!("/proc/{pid}/ns/net"))
    }

    pub fn open(path: &str) -> io::Result<Self> {
        let file = File::open(Path::new(path))?;
        Ok(NetNs {
            file,
            path: path.to_owned(),
        })
    }

    /// A netns file opened elsewhere (through a handle on `/proc/PID`); `path` names it in messages.
    pub fn from_file(file: File, path: String) -> Self {
        NetNs { file, path }
    }

    /// The netns this process runs in (the runtime's, that is the host side).
    pub fn current() -> io::Result<Self> {
        Self::open("/proc/thread-self/ns/net")
    }

    pub fn same_as(&self, other: &NetNs) -> io::Result<bool> {
        let (a, b) = (self.file.metadata()?, other.file.metadata()?);
        Ok(a.dev() == b.dev() && a.ino() == b.ino())
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `work` on a fresh thread that has entered this netns. Sockets it opens stay in this netns.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                    work()
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("netns worker thread panicked")))
        })
    }
}
