//! The WireGuard cross-platform userspace API (wireguard.com/xplatform): a text protocol over a unix socket.
//! Spoken directly rather than through wireguard-control, whose userspace backend sleeps a fixed 100 ms.

use super::{DeviceConfig, DeviceState, PeerState};
use crate::sys::deadline::Deadline;
use crate::wg::key::Key;
use log::debug;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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

/// Sends the whole configuration to the daemon behind `socket` and checks its `errno=0`, waiting no longer than
/// `ANSWER_WAIT` nor past `deadline`.
pub fn configure(socket: &Path, config: &DeviceConfig, deadline: Deadline) -> io::Result<()> {
    let stream = UnixStream::connect(socket)?;
    configure_over(stream, config, deadline, &socket.display())
}

/// The same over a connected stream (the built-in daemon's end of a socketpair): the answer is also the sign
/// that the daemon runs, with its device and sockets made. `what` names the daemon in messages.
pub fn configure_over(
    stream: UnixStream,
    config: &DeviceConfig,
    deadline: Deadline,
    what: &dyn std::fmt::Display,
) -> io::Result<()> {
    send(stream, config, deadline)?.wait(deadline, what)
}

/// Writes the whole configuration to `stream` and returns at once: a daemon still starting reads it when it is
/// ready, and its answer can be awaited after other work (`Answer::wait`).
pub fn send(stream: UnixStream, config: &DeviceConfig, deadline: Deadline) -> io::Result<Answer> {
    let mut stream = stream;
    let wait = answer_wait(deadline);
    stream.set_write_timeout(Some(wait))?;
    let mut request = set_request(config);
    let sent = stream.write_all(request.as_bytes());
    wipe(&mut request);
    sent.map_err(|e| timed_out(e, wait, deadline))?;
    Ok(Answer {
        reader: BufReader::new(stream),
        sent: std::time::Instant::now(),
    })
}

/// The answer to a configuration `send` wrote.
pub struct Answer {
    reader: BufReader<UnixStream>,
    sent: std::time::Instant,
}

impl Answer {
    /// Reads the daemon's `errno=`, waiting no longer than `ANSWER_WAIT` nor past `deadline`.
    pub fn wait(mut self, deadline: Deadline, what: &dyn std::fmt::Display) -> io::Result<()> {
        let wait = answer_wait(deadline);
        self.reader.get_ref().set_read_timeout(Some(wait))?;
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.reader.read_line(&mut line);
            if read.map_err(|e| timed_out(e, wait, deadline))? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed its UAPI socket without an answer",
                ));
            }
            match line.trim_end().strip_prefix("errno=") {
                Some("0") => {
                    debug!(
                        "{what}: configuration accepted {:.1} ms after it was sent",
                        self.sent.elapsed().as_secs_f64() * 1e3
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
}

fn answer_wait(deadline: Deadline) -> Duration {
    ANSWER_WAIT
        .min(deadline.left())
        .max(Duration::from_millis(1))
}

fn timed_out(e: io::Error, wait: Duration, deadline: Deadline) -> io::Error {
    match e.kind() {
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
    }
}

/// Points the existing peer `public_key` at `endpoint`, and changes nothing else (no key in the request).
pub fn set_peer_endpoint(
    socket: &Path,
    public_key: &Key,
    endpoint: std::net::SocketAddr,
    deadline: Deadline,
) -> io::Result<()> {
    let mut stream = UnixStream::connect(socket)?;
    let wait = answer_wait(deadline);
    stream.set_write_timeout(Some(wait))?;
    let request = format!(
        "set=1\npublic_key={}\nupdate_only=true\nendpoint={endpoint}\n\n",
        public_key.to_hex()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| timed_out(e, wait, deadline))?;
    Answer {
        reader: BufReader::new(stream),
        sent: std::time::Instant::now(),
    }
    .wait(deadline, &socket.display())
}

/// Asks the daemon behind `socket` for its device (`get=1`) and changes nothing. Gives up after `wait` without
/// an answer. The answer's private and preshared keys are skipped as it is parsed, and every buffer that held
/// them is wiped before this returns.
pub fn get(socket: &Path, wait: Duration) -> io::Result<DeviceState> {
    let timed_out = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the daemon did not answer within {:.1} s",
                wait.as_secs_f64()
            ),
        ),
        _ => e,
    };
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(wait))?;
    stream.set_write_timeout(Some(wait))?;
    stream.write_all(b"get=1\n\n").map_err(timed_out)?;
    // Read in place, a line at a time, so that no copy of a key is left in a buffer that grew.
    let mut chunk = [0u8; 4096];
    let mut parser = GetParser::default();
    let result = loop {
        match stream.read(&mut chunk) {
            Ok(0) => {
                break Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed the UAPI socket before the end of its answer",
                ))
            }
            Ok(n) => match parser.feed(&chunk[..n]) {
                Ok(Some(device)) => break Ok(device),
                Ok(None) => {}
                Err(e) => break Err(e),
            },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(timed_out(e)),
        }
    };
    wipe_bytes(&mut chunk);
    result
}

/// The longest line a `get=1` answer has: `allowed_ip=` and an IPv6 prefix, or a key's 64 hex digits.
const MAX_LINE: usize = 128;

/// The `get=1` answer, fed in pieces: `key=value` lines, peers each opened by `public_key=`, `errno=` last, then
/// an empty line.
struct GetParser {
    line: [u8; MAX_LINE],
    len: usize,
    device: DeviceState,
    /// `last_handshake_time_sec` and `_nsec` of the peer being read.
    handshake: (u64, u32),
    errno: Option<i32>,
}

impl Default for GetParser {
    fn default() -> Self {
        GetParser {
            line: [0; MAX_LINE],
            len: 0,
            device: DeviceState::default(),
            handshake: (0, 0),
            errno: None,
        }
    }
}

impl Drop for GetParser {
    fn drop(&mut self) {
        wipe_bytes(&mut self.line);
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl GetParser {
    /// Takes the next bytes of the answer; the device once its empty last line came.
    fn feed(&mut self, bytes: &[u8]) -> io::Result<Option<DeviceState>> {
        for &b in bytes {
            if b != b'\n' {
                if self.len == MAX_LINE {
                    return Err(invalid(format!(
                        "a line of the daemon's answer is longer than {MAX_LINE} bytes"
                    )));
                }
                self.line[self.len] = b;
                self.len += 1;
                continue;
            }
            let len = std::mem::take(&mut self.len);
            if len == 0 {
                return self.finish().map(Some);
            }
            let line = std::str::from_utf8(&self.line[..len])
                .map_err(|_| invalid("the daemon's answer is not text".into()))?;
            let parsed = Self::take(&mut self.device, &mut self.handshake, &mut self.errno, line);
            wipe_bytes(&mut self.line[..len]);
            parsed?;
        }
        Ok(None)
    }

    /// One `key=value` line. Keys it does not know are passed over (a later protocol may add some).
    fn take(
        device: &mut DeviceState,
        handshake: &mut (u64, u32),
        errno: &mut Option<i32>,
        line: &str,
    ) -> io::Result<()> {
        let (key, value) = line.split_once('=').ok_or_else(|| {
            invalid(format!(
                "a line of the daemon's answer without '=': {line:?}"
            ))
        })?;
        let number = |what: &str| -> io::Result<u64> {
            value
                .parse()
                .map_err(|_| invalid(format!("{what}={value:?} is not a number")))
        };
        match key {
            // Secrets: never kept, never quoted.
            "private_key" | "preshared_key" => {}
            "listen_port" => {
                device.listen_port = Some(
                    value
                        .parse()
                        .map_err(|_| invalid(format!("listen_port={value:?} is not a port")))?,
                )
            }
            "public_key" => {
                Self::close_peer(device, handshake);
                let public_key = Key::from_hex(value)
                    .ok_or_else(|| invalid(format!("public_key={value:?} is not a key")))?;
                device.peers.push(PeerState {
                    public_key,
                    endpoint: None,
                    allowed_ips: Vec::new(),
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    persistent_keepalive: None,
                });
            }
            "errno" => {
                Self::close_peer(device, handshake);
                *errno = Some(
                    value
                        .parse()
                        .map_err(|_| invalid(format!("errno={value:?} is not a number")))?,
                );
            }
            "endpoint"
            | "allowed_ip"
            | "last_handshake_time_sec"
            | "last_handshake_time_nsec"
            | "rx_bytes"
            | "tx_bytes"
            | "persistent_keepalive_interval" => {
                let peer = device
                    .peers
                    .last_mut()
                    .ok_or_else(|| invalid(format!("{key}= before any peer's public_key")))?;
                match key {
                    "endpoint" => {
                        peer.endpoint = Some(value.parse().map_err(|_| {
                            invalid(format!("endpoint={value:?} is not an address and port"))
                        })?)
                    }
                    "allowed_ip" => {
                        peer.allowed_ips.push(value.parse().map_err(|_| {
                            invalid(format!("allowed_ip={value:?} is not a network"))
                        })?)
                    }
                    "last_handshake_time_sec" => handshake.0 = number(key)?,
                    "last_handshake_time_nsec" => {
                        handshake.1 = number(key)?.min(999_999_999) as u32
                    }
                    "rx_bytes" => peer.rx_bytes = number(key)?,
                    "tx_bytes" => peer.tx_bytes = number(key)?,
                    _ => {
                        let seconds: u16 = value.parse().map_err(|_| {
                            invalid(format!("{key}={value:?} is not a number of seconds"))
                        })?;
                        peer.persistent_keepalive = Some(seconds).filter(|&s| s > 0)
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The handshake time of the peer read last, now that its lines are over (0 s: none yet).
    fn close_peer(device: &mut DeviceState, handshake: &mut (u64, u32)) {
        let (secs, nanos) = std::mem::take(handshake);
        if let Some(peer) = device.peers.last_mut().filter(|_| secs > 0) {
            peer.last_handshake = SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos));
        }
    }

    fn finish(&mut self) -> io::Result<DeviceState> {
        match self.errno {
            Some(0) => Ok(std::mem::take(&mut self.device)),
            Some(code) => Err(io::Error::other(format!(
                "the daemon answered get with an error: {}",
                io::Error::from_raw_os_error(code)
            ))),
            None => Err(invalid("the daemon's answer ended without errno=".into())),
        }
    }
}

fn wipe_bytes(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: a valid, aligned &mut u8. Volatile so the wipe is not optimised away.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
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

    /// What wireguard-go 0.0.2023 answers to get=1 for a device with two peers, one never reached.
    fn get_answer() -> String {
        format!(
            "private_key={}\nlisten_port=41641\nfwmark=66\npublic_key={}\npreshared_key={}\n\
             protocol_version=1\nendpoint=198.18.0.2:51820\nlast_handshake_time_sec=1700000000\n\
             last_handshake_time_nsec=250000000\ntx_bytes=1540\nrx_bytes=1224\n\
             persistent_keepalive_interval=25\nallowed_ip=0.0.0.0/0\nallowed_ip=::/0\n\
             public_key={}\nprotocol_version=1\nendpoint=[2001:db8::1]:51820\n\
             last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n\
             persistent_keepalive_interval=0\nallowed_ip=10.20.0.0/16\nerrno=0\n\n",
            "11".repeat(32),
            "02".repeat(32),
            "33".repeat(32),
            "04".repeat(32)
        )
    }

    fn parse_in_pieces(answer: &str, piece: usize) -> io::Result<Option<DeviceState>> {
        let mut parser = GetParser::default();
        for bytes in answer.as_bytes().chunks(piece) {
            if let Some(device) = parser.feed(bytes)? {
                return Ok(Some(device));
            }
        }
        Ok(None)
    }

    #[test]
    fn a_get_answer_is_read_whole_without_its_secrets_in_any_pieces() {
        let answer = get_answer();
        for piece in [1, 7, 64, answer.len()] {
            let device = parse_in_pieces(&answer, piece).unwrap().expect("complete");
            assert_eq!(device.listen_port, Some(41641));
            let [first, second] = &device.peers[..] else {
                panic!("{device:?}")
            };
            assert_eq!(first.public_key, Key::from_bytes([2; 32]));
            assert_eq!(first.endpoint, Some("198.18.0.2:51820".parse().unwrap()));
            assert_eq!(
                first.last_handshake,
                Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 250_000_000))
            );
            assert_eq!((first.rx_bytes, first.tx_bytes), (1224, 1540));
            assert_eq!(first.persistent_keepalive, Some(25));
            assert_eq!(
                first.allowed_ips,
                ["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]
            );
            assert_eq!(second.public_key, Key::from_bytes([4; 32]));
            assert_eq!(
                second.endpoint,
                Some("[2001:db8::1]:51820".parse().unwrap())
            );
            assert_eq!(second.last_handshake, None, "0 s is never");
            assert_eq!(second.persistent_keepalive, None);
            assert_eq!(second.allowed_ips, ["10.20.0.0/16".parse().unwrap()]);
        }
        // Bytes after the empty line are not read: the answer ends there.
        assert!(parse_in_pieces(&answer[..answer.len() - 1], 5)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_get_answer_that_is_an_error_or_malformed_is_refused_without_quoting_a_secret() {
        let secret = "11".repeat(32);
        let cases = [
            ("errno=19\n\n", "No such device"),
            (
                &format!("private_key={secret}\nlisten_port=1\n\n") as &str,
                "ended without errno=",
            ),
            (
                "rx_bytes=1\nerrno=0\n\n",
                "rx_bytes= before any peer's public_key",
            ),
            (
                "public_key=xyz\nerrno=0\n\n",
                "public_key=\"xyz\" is not a key",
            ),
            (
                &format!(
                    "public_key={}\nendpoint=nowhere\nerrno=0\n\n",
                    "02".repeat(32)
                ),
                "endpoint=\"nowhere\" is not an address and port",
            ),
            ("listen_port=70000\nerrno=0\n\n", "is not a port"),
            ("no equals sign\n\n", "without '='"),
            (
                &format!("private_key={secret}{secret}\n\n"),
                "longer than 128 bytes",
            ),
        ];
        for (answer, expected) in cases {
            let e = parse_in_pieces(answer, 3).unwrap_err().to_string();
            assert!(e.contains(expected), "{answer:?}: {e}");
            assert!(!e.contains(&secret[..16]), "{e}");
        }
    }

    #[test]
    fn get_asks_a_daemon_over_its_socket_and_gives_up_on_a_mute_one() {
        let dir = std::env::temp_dir().join(format!("wgoh-uapi-get-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("get.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let answer = get_answer();
        let daemon = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 7];
            conn.read_exact(&mut request).unwrap();
            assert_eq!(&request, b"get=1\n\n");
            conn.write_all(answer.as_bytes()).unwrap();
            // wireguard-go keeps the connection open for a next request.
            let _ = conn.read(&mut request);
            listener
        });
        let device = get(&socket, Duration::from_secs(5)).unwrap();
        assert_eq!(device.peers.len(), 2);
        let listener = daemon.join().unwrap();
        // Connected (the kernel queues it) and never answered.
        let started = std::time::Instant::now();
        let e = get(&socket, Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "the daemon did not answer within 0.2 s");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(listener);
        // No daemon behind the socket any more. Refused; or reset, when another test's fork still held a copy
        // of the listening socket at our connect (until its exec closed it, and with it the queued connection).
        let e = get(&socket, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
            ),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let e = get(&socket, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
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
