//! gotatun's packet source and sink over the TUN descriptor the hook handed over (fd 3).

use gotatun::packet::{Ip, Packet, PacketBufPool};
use gotatun::tun::{IpRecv, IpSend, MtuWatcher};
use nix::libc;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;

/// A non-blocking TUN descriptor (IFF_NO_PI: each read or write is one whole IP packet). Both halves of the
/// device share it.
#[derive(Clone)]
pub struct Tun {
    fd: Arc<AsyncFd<OwnedFd>>,
    /// The link's MTU, which the hook set and nothing else changes.
    mtu: u16,
}

impl Tun {
    /// Must run inside the tokio runtime (the descriptor joins its reactor).
    pub fn new(fd: OwnedFd, mtu: u16) -> io::Result<Tun> {
        // SAFETY: an OwnedFd's descriptor stays open, and the same, for as long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Tun {
            fd: Arc::new(fd),
            mtu,
        })
    }
}

/// How often a TUN is looked at for whether its device still exists (see `until_detached`).
const DETACH_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

impl Tun {
    /// Whether the device is gone (deleted, or its netns with it): TUNGETIFF on a detached TUN file answers
    /// EBADFD.
    pub fn is_detached(&self) -> bool {
        let mut ifr = [0u8; 40];
        // SAFETY: TUNGETIFF writes at most a struct ifreq (40 bytes on Linux) into the buffer given.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), TUNGETIFF, ifr.as_mut_ptr()) };
        r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EBADFD)
    }

    /// Returns once the device is gone, looking every `DETACH_CHECK`.
    pub async fn until_detached(&self) {
        loop {
            tokio::time::sleep(DETACH_CHECK).await;
            if self.is_detached() {
                return;
            }
        }
    }
}

/// _IOR('T', 210, unsigned int).
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;

fn check(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl IpSend for Tun {
    async fn send(&mut self, packet: Packet<Ip>) -> io::Result<()> {
        let bytes = packet.into_bytes();
        loop {
            let mut ready = self.fd.writable().await?;
            // SAFETY: writes from a live buffer of the length given.
            match ready.try_io(|fd| {
                check(unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) })
            }) {
                Ok(written) => return written.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}

impl IpRecv for Tun {
    async fn recv<'a>(
        &'a mut self,
        pool: &mut PacketBufPool,
    ) -> io::Result<impl Iterator<Item = Packet<Ip>> + Send + 'a> {
        let mut packet = pool.get();
        loop {
            let mut ready = self.fd.readable().await?;
            // SAFETY: reads into a live buffer of the length given.
            let read = ready.try_io(|fd| {
                check(unsafe {
                    libc::read(fd.as_raw_fd(), packet.as_mut_ptr().cast(), packet.len())
                })
            });
            match read {
                // The device is gone (its netns with it): EBADFD, an error the daemon ends on.
                Ok(Err(e)) => return Err(e),
                Ok(Ok(n)) => {
                    packet.truncate(n);
                    // What the container's stack hands the device is IP; anything else (a raw socket's
                    // garbage) is dropped rather than ending the tunnel.
                    return Ok(packet.try_into_ip().ok().into_iter());
                }
                Err(_would_block) => continue,
            }
        }
    }

    fn mtu(&self) -> MtuWatcher {
        MtuWatcher::new(self.mtu)
    }
}
