//! The WireGuard cross-platform userspace API (wireguard.com/xplatform): a text protocol over a unix socket.
//! Spoken directly rather than through wireguard-control, whose userspace backend sleeps a fixed 100 ms.

use super::DeviceConfig;
use crate::sys::deadline::Deadline;
use log::debug;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// A daemon answers in microseconds; this bounds one that does not.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

pub fn socket_path(interface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{interface}.sock"))
}

/// The `set=1` request for a whole device. Holds private keys: the caller wipes it.
fn set_request(config: &DeviceConfig) -> String {
    let mut req = String::with_capacity(256 + 256 * config.peers.len());
    // Writing to a String cannot fail.
    let _ = writeln!(req, "set=1\nprivate_key={}", config.private_key.to_hex());
    if let Some(port) = config.listen_port {
        let _ = writeln!(req, "listen_port={port}");
    }
    if let Some(mark) = config.fwmark {
        let _ = writeln!(req, "fwmark={mark}");
    }
    req.push_str("replace_peers=true\n");
    for peer in &config.peers {
        let _ = writeln!(req, "public_key={}", peer.public_key.to_hex());
        if let Some(psk) = &peer.preshared_key {
            let _ = writeln!(req, "preshared_key={}", psk.to_hex());
        }
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(req, "endpoint={endpoint}");
        }
        if let Some(interval) = peer.persistent_keepalive {
            let _ = writeln!(req, "persistent_keepalive_interval={interval}");
        }
        req.push_str("replace_allowed_ips=true\n");
        for net in &peer.allowed_ips {
            let _ = writeln!(req, "allowed_ip={}/{}", net.network(), net.prefix());
        }
    }
    req.push('\n');
    req
}

/// Sends the whole configuration and checks the daemon's `errno=0`, waiting no longer than `ANSWER_WAIT` nor
/// past `deadline`.
pub fn configure(socket: &Path, config: &DeviceConfig, deadline: Deadline) -> io::Result<()> {
    let wait = ANSWER_WAIT
        .min(deadline.left())
        .max(Duration::from_millis(1));
    let timed_out = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            let cut = if wait < ANSWER_WAIT {
                format!(" ({})", deadline.name())
            } else {
                String::new()
            };
            let secs = wait.as_secs_f64();
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the daemon did not answer within {secs:.1} s{cut}"),
            )
        }
        _ => e,
    };
    let started = std::time::Instant::now();
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(wait))?;
    stream.set_write_timeout(Some(wait))?;
    let mut request = set_request(config);
    let sent = stream.write_all(request.as_bytes());
    wipe(&mut request);
    sent.map_err(timed_out)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(timed_out)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the UAPI socket",
            ));
        }
        match line.trim_end().strip_prefix("errno=") {
            Some("0") => {
                debug!(
                    "{}: configuration accepted in {:.1} ms",
                    socket.display(),
                    started.elapsed().as_secs_f64() * 1e3
                );
                return Ok(());
            }
            Some(errno) => {
                let code: i32 = errno.parse().unwrap_or(libc_eio());
                return Err(io::Error::other(format!(
                    "the daemon refused the configuration: {}",
                    io::Error::from_raw_os_error(code)
                )));
            }
            None => continue,
        }
    }
}

fn wipe(s: &mut str) {
    // SAFETY: zero bytes are valid UTF-8.
    unsafe { s.as_bytes_mut() }
        .iter_mut()
        .for_each(|b| unsafe { std::ptr::write_volatile(b, 0) });
}

const fn libc_eio() -> i32 {
    5
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::key::Key;
    use crate::wg::PeerConfig;

    #[test]
    fn set_request_follows_the_uapi_format() {
        let config = DeviceConfig {
            private_key: Key::from_bytes([1; 32]),
            listen_port: Some(51820),
            fwmark: Some(0x1234),
            peers: vec![PeerConfig {
                public_key: Key::from_bytes([2; 32]),
                preshared_key: Some(Key::from_bytes([3; 32])),
                endpoint: Some("[2001:db8::1]:51820".parse().unwrap()),
                allowed_ips: vec!["0.0.0.0/0".parse().unwrap(), "fd00::/8".parse().unwrap()],
                persistent_keepalive: Some(25),
            }],
        };
        let req = set_request(&config);
        let expected = format!(
            "set=1\nprivate_key={}\nlisten_port=51820\nfwmark=4660\nreplace_peers=true\npublic_key={}\n\
             preshared_key={}\nendpoint=[2001:db8::1]:51820\npersistent_keepalive_interval=25\n\
             replace_allowed_ips=true\nallowed_ip=0.0.0.0/0\nallowed_ip=fd00::/8\n\n",
            "01".repeat(32),
            "02".repeat(32),
            "03".repeat(32)
        );
        assert_eq!(req, expected);
    }

    #[test]
    fn a_daemon_that_never_answers_is_given_up_at_the_deadline() {
        let dir = std::env::temp_dir().join(format!("wgoh-uapi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("mute.sock");
        let _ = std::fs::remove_file(&socket);
        // Accepts (the kernel queues the connection) and never reads or answers.
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let config = DeviceConfig {
            private_key: Key::from_bytes([1; 32]),
            listen_port: None,
            fwmark: None,
            peers: Vec::new(),
        };
        let deadline = Deadline::after(Duration::from_millis(200), "create_timeout");
        let started = std::time::Instant::now();
        let e = configure(&socket, &config, deadline).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the daemon did not answer within 0.2 s (create_timeout)"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
