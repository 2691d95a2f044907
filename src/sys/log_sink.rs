//! Log lines where operators read them: the syslog socket (`/dev/log`), journald's native socket, or a file
//! appended to. Each line is one datagram or one write(2), so the lines of hooks that run at once never
//! interleave. What a line says is the caller's; this module only frames and delivers it.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where syslog(3) writes: journald listens there on a systemd host, rsyslog or syslogd elsewhere.
pub const SYSLOG_SOCKET: &str = "/dev/log";
/// journald's native protocol.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// How long one send may wait for a receiver whose queue is full: a busy logger must not hold up a start.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest message sent or written, in bytes; the rest is cut (a refused start's error may quote a long
/// annotation value).
pub const MAX_MESSAGE: usize = 8192;
/// syslog's facility `daemon`.
const FACILITY_DAEMON: u8 = 3;

/// syslog's severities, as journald's `PRIORITY` takes them too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error = 3,
    Warning = 4,
    Info = 6,
    Debug = 7,
}

/// One line as syslog(3) sends it to the local socket (RFC 3164): `<PRI>Mmm dd hh:mm:ss IDENT[PID]: MESSAGE`,
/// facility daemon, the time local, the message on one line and cut to [`MAX_MESSAGE`].
pub fn syslog_datagram(
    severity: Severity,
    ident: &str,
    pid: u32,
    time: SystemTime,
    message: &str,
) -> Vec<u8> {
    let pri = FACILITY_DAEMON * 8 + severity as u8;
    format!(
        "<{pri}>{} {ident}[{pid}]: {}",
        syslog_timestamp(time),
        one_line(&cut(message))
    )
    .into_bytes()
}

/// A datagram of journald's native protocol: `KEY=value\n` for each field, or, for a value that holds a
/// newline, `KEY\n`, the value's length as a 64-bit little-endian number, the value and `\n`. Keys must be
/// journald's (A-Z, 0-9 and `_`, not starting with `_`); values are cut to [`MAX_MESSAGE`].
pub fn journal_datagram(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in fields {
        debug_assert!(is_journal_key(key), "{key}");
        let value = cut(value);
        out.extend_from_slice(key.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// A field name journald accepts from a client.
pub fn is_journal_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && !key.starts_with('_')
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Sends `datagram` to the socket at `path`, waiting at most [`SEND_TIMEOUT`] for room in its queue. A syslog
/// daemon that listens on a stream socket instead gets the line NUL-terminated on a connection, as syslog(3)
/// sends it (with `stream`).
pub fn send(path: &Path, datagram: &[u8], stream: bool) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    match socket.send_to(datagram, path) {
        Ok(n) if n == datagram.len() => Ok(()),
        Ok(n) => Err(io::Error::other(format!(
            "sent {n} of {} bytes",
            datagram.len()
        ))),
        Err(e) if stream && e.raw_os_error() == Some(nix::libc::EPROTOTYPE) => {
            let mut conn = UnixStream::connect(path)?;
            conn.set_write_timeout(Some(SEND_TIMEOUT))?;
            let mut framed = datagram.to_vec();
            framed.push(0);
            conn.write_all(&framed)
        }
        Err(e) => Err(e),
    }
}

/// Opens a log file for appending: `O_APPEND | O_CLOEXEC | O_NOFOLLOW`, created with mode 0640 (less what the
/// umask takes). A last component that is a symlink is refused, and so is anything but a regular file (opened
/// without blocking, so a FIFO cannot hold up the hook).
pub fn open_append(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => io::Error::other("is a symlink; name the real file"),
            _ => e,
        })?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(io::Error::other(format!("is {what}, not a regular file")));
    }
    Ok(file)
}

/// Appends `line` with one write(2): with `O_APPEND`, the lines of processes writing at once never interleave.
/// A short write (a full disk) is an error, not retried: the rest would land after another process's line.
pub fn append(mut file: &File, line: &[u8]) -> io::Result<()> {
    let n = file.write(line)?;
    if n == line.len() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "wrote {n} of {} bytes",
            line.len()
        )))
    }
}

/// `message` cut to at most [`MAX_MESSAGE`] bytes, on a character boundary, saying how much was cut.
pub fn cut(message: &str) -> Cow<'_, str> {
    if message.len() <= MAX_MESSAGE {
        return Cow::Borrowed(message);
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}... ({} more bytes cut)",
        &message[..end],
        message.len() - end
    ))
}

/// `message` on one line: control characters written as escapes (`\n`, `\t`, `\x1b`), so that a line is one
/// record and cannot forge another.
pub fn one_line(message: &str) -> Cow<'_, str> {
    if !message.chars().any(char::is_control) {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// RFC 3164's `Mmm dd hh:mm:ss` (the day padded with a space), in local time as syslog(3) writes it; UTC if
/// the local time cannot be had.
pub fn syslog_timestamp(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as nix::libc::time_t);
    let mut tm = std::mem::MaybeUninit::<nix::libc::tm>::zeroed();
    // SAFETY: localtime_r fills the struct it is handed (zeroed, so valid either way) and keeps no pointer.
    let local = unsafe { !nix::libc::localtime_r(&secs, tm.as_mut_ptr()).is_null() };
    // SAFETY: gmtime_r likewise.
    if !local && unsafe { nix::libc::gmtime_r(&secs, tm.as_mut_ptr()).is_null() } {
        return "Jan  1 00:00:00".to_owned();
    }
    // SAFETY: zeroed, then filled by localtime_r or gmtime_r.
    let tm = unsafe { tm.assume_init() };
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wgoh-log-sink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_syslog_line_is_what_syslog3_sends() {
        let line = syslog_datagram(
            Severity::Info,
            "wg-oci-hook",
            42,
            UNIX_EPOCH + Duration::from_secs(86400 * 40),
            "create-runtime container=c1 outcome=ok",
        );
        let line = String::from_utf8(line).unwrap();
        // daemon.info is 3 * 8 + 6.
        assert!(line.starts_with("<30>"), "{line}");
        assert!(
            line.ends_with(" wg-oci-hook[42]: create-runtime container=c1 outcome=ok"),
            "{line}"
        );
        let stamp = &line[4..19];
        assert!(
            ["Feb ", "Mar "].iter().any(|m| stamp.starts_with(m)),
            "{stamp}"
        );
        assert_eq!(stamp.as_bytes()[6], b' ');
        assert_eq!(stamp.as_bytes()[9], b':');
        assert_eq!(
            &syslog_datagram(Severity::Error, "x", 1, UNIX_EPOCH, "m")[..4],
            b"<27>"
        );
        assert_eq!(
            &syslog_datagram(Severity::Debug, "x", 1, UNIX_EPOCH, "m")[..4],
            b"<31>"
        );
        let line = syslog_datagram(Severity::Warning, "x", 1, UNIX_EPOCH, "a\nb\x1b[1m");
        assert!(
            String::from_utf8(line)
                .unwrap()
                .ends_with("x[1]: a\\nb\\x1b[1m"),
            "a line must stay one record"
        );
    }

    #[test]
    fn the_day_is_padded_with_a_space() {
        let stamp = syslog_timestamp(UNIX_EPOCH + Duration::from_secs(86400 * 4 + 43200));
        assert_eq!(stamp.len(), 15, "{stamp}");
        assert!(
            stamp.starts_with("Jan  5 ") || stamp.starts_with("Jan  4 "),
            "{stamp}"
        );
    }

    #[test]
    fn journal_fields_with_a_newline_use_the_binary_form() {
        let d = journal_datagram(&[
            ("MESSAGE", "one line"),
            ("PRIORITY", "6"),
            ("WG_ERROR", "two\nlines"),
        ]);
        let mut expected = b"MESSAGE=one line\nPRIORITY=6\nWG_ERROR\n".to_vec();
        expected.extend_from_slice(&9u64.to_le_bytes());
        expected.extend_from_slice(b"two\nlines\n");
        assert_eq!(d, expected);
    }

    #[test]
    fn journal_keys_are_checked() {
        for good in ["MESSAGE", "CONTAINER_ID_FULL", "WG_DURATION_MS", "A1"] {
            assert!(is_journal_key(good), "{good}");
        }
        for bad in ["", "_PID", "message", "WG-X", "1A", "K=V", &"K".repeat(65)] {
            assert!(!is_journal_key(bad), "{bad}");
        }
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE);
        let cut = cut(&long);
        assert!(cut.len() < MAX_MESSAGE + 40, "{}", cut.len());
        assert!(cut.ends_with(&format!(" ({} more bytes cut)", long.len() - MAX_MESSAGE)));
        assert_eq!(super::cut("short"), "short");
        let d = journal_datagram(&[("MESSAGE", &"x".repeat(MAX_MESSAGE * 2))]);
        assert!(d.len() < MAX_MESSAGE + 64);
    }

    #[test]
    fn datagrams_arrive_whole_and_a_missing_socket_is_an_error() {
        let dir = temp_dir("dgram");
        let path = dir.join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        send(&path, b"<30>hello", true).unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<30>hello");
        let e = send(&dir.join("none"), b"x", true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stream_syslog_socket_gets_the_line_nul_terminated() {
        let dir = temp_dir("stream");
        let path = dir.join("log");
        let listener = UnixListener::bind(&path).unwrap();
        let reader = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            got
        });
        send(&path, b"<30>hello", true).unwrap();
        assert_eq!(reader.join().unwrap(), b"<30>hello\0");
        // journald's socket is a datagram socket only.
        assert!(send(&path, b"x", false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_log_file_is_created_0640_appended_to_and_never_followed() {
        let dir = temp_dir("file");
        let path = dir.join("hook.log");
        let file = open_append(&path).unwrap();
        append(&file, b"one\n").unwrap();
        append(&open_append(&path).unwrap(), b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        // The umask, process-wide, is read rather than set: other tests run beside this one.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|m| u32::from_str_radix(m.trim(), 8).unwrap())
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640 & !umask);

        let target = dir.join("target");
        std::fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("link")).unwrap();
        let e = open_append(&dir.join("link")).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");

        nix::unistd::mkfifo(
            &dir.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        // No reader: refused at once (ENXIO), not waited on.
        assert!(open_append(&dir.join("fifo")).is_err());
        let e = open_append(&dir).unwrap_err();
        assert!(
            e.kind() == io::ErrorKind::IsADirectory || e.to_string().contains("regular"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_line_escapes_control_characters_only() {
        assert_eq!(one_line("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(one_line("a\r\nb\tc\0"), "a\\r\\nb\\tc\\x00");
    }
}
