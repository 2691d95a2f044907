//! Network namespaces: opening a container's netns and running work inside it.
//!
//! A netlink socket belongs to the netns of the thread that created it, for its whole life. So we enter the
//! container's netns on a short-lived scoped thread, open what we need there, and let the thread end: the main
//! thread never changes namespace, and nothing has to find its way back (netavark's approach, without setns-back).

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A network namespace's identity: the device and inode of its nsfs file, the same through every path to it
/// (`/proc/PID/ns/net` of each process in it, a bind mount under /run/netns) while it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl NetnsId {
    /// As a file name: `DEV-INO`.
    pub fn key(&self) -> String {
        format!("{}-{}", self.dev, self.ino)
    }
}

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

    fn open(path: &str) -> io::Result<Self> {
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

    /// The network namespace of the container whose init the OCI state names. The state is input, not truth: the pid
    /// must be a live process in mount and network namespaces other than the runtime's (every runc or crun container
    /// has both), so that no state can make us build a tunnel in, or clean up, a host process's namespace.
    pub fn of_container(pid: u32) -> Result<NetNs, String> {
        // Checked by number: in a sandbox /proc/1/ns/* may be unreadable, and a runtime never runs a container as 1.
        if pid == 1 {
            return Err("pid 1 is the host's init, not a container".into());
        }
        // The namespaces are opened through one handle on /proc/PID: if the process dies and its pid is reused
        // between the two, the second open fails instead of reaching the new process.
        let proc_dir = nix::fcntl::open(
            format!("/proc/{pid}").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ENOENT => format!("pid {pid} is not running"),
            e => format!("pid {pid}: /proc/{pid}: {e}"),
        })?;
        let ns = |kind: &str| {
            nix::fcntl::openat(
                &proc_dir,
                format!("ns/{kind}").as_str(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map(std::fs::File::from)
            .map_err(|e| match e {
                Errno::ENOENT | Errno::ESRCH => format!("pid {pid} is not running"),
                e => format!("pid {pid}: opening its {kind} namespace: {e}"),
            })
        };
        let same = |a: &std::fs::File, b: &str| -> Result<bool, String> {
            let (a, b) = (a.metadata(), std::fs::metadata(b));
            match (a, b) {
                (Ok(a), Ok(b)) => Ok(a.dev() == b.dev() && a.ino() == b.ino()),
                (Err(e), _) | (_, Err(e)) => Err(format!("pid {pid}: comparing namespaces: {e}")),
            }
        };
        if same(&ns("mnt")?, "/proc/thread-self/ns/mnt")? {
            return Err(format!(
                "pid {pid} shares the runtime's mount namespace: not a container; refusing to touch its network"
            ));
        }
        let net = ns("net")?;
        if same(&net, "/proc/thread-self/ns/net")? {
            return Err(format!(
                "pid {pid}: the container shares the runtime's network namespace (--network host); refusing to move \
                 a tunnel there"
            ));
        }
        Ok(NetNs::from_file(net, format!("/proc/{pid}/ns/net")))
    }

    pub fn id(&self) -> io::Result<NetnsId> {
        let meta = self.file.metadata()?;
        Ok(NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The netns at `path` (a pod's bind mount, `/proc/PID/ns/net`) if it is `id`, and never another: a name
    /// outlives what it named, and a pid is reused.
    pub fn open_if(path: &Path, id: NetnsId) -> Option<NetNs> {
        let ns = Self::open(path.to_str()?).ok()?;
        (ns.id().ok()? == id).then_some(ns)
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `work` on a fresh thread in a network namespace of its own, made for it and gone with the thread
    /// (with whatever links `work` made there): a test that leaves nothing behind on the host.
    pub fn run_in_throwaway<T: Send>(work: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                    work()
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("netns worker thread panicked")))
        })
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
