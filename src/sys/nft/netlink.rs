//! nfnetlink, as much of it as an nf_tables transaction needs: attributes (netlink TLVs, nested ones flagged
//! `NLA_F_NESTED`), messages with their `nfgenmsg`, the batch that makes them one transaction
//! (`NFNL_MSG_BATCH_BEGIN`, the messages, `NFNL_MSG_BATCH_END`, the begin's `res_id` naming nf_tables), and
//! the answers. Every message asks for an acknowledgement (`NLM_F_ACK`): the kernel answers each one, with 0 or
//! its errno, once the whole batch has been committed or aborted, so a refusal names the message the kernel
//! refused. The numbers are the kernel's uapi headers' (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`).
//!
//! The kernel processes a batch inside our `sendmsg` (a kernel netlink socket's input runs in the sender's
//! context), so its answers are queued on our socket by the time the send returns; the read timeout only
//! bounds a wait for answers that would never come.

use nix::libc;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

// linux/netlink.h
const NETLINK_NETFILTER: libc::c_int = 12;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSG_ERROR: u16 = 2;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_HDRLEN: usize = 16;
// linux/netfilter/nfnetlink.h
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNETLINK_V0: u8 = 0;
// linux/netfilter.h
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_INET: u8 = 1;

/// How long to wait for an answer the kernel owes: it has normally answered before `send` returns.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Netlink attributes being written: each a 4-byte header (length, type) and its value, padded to 4 bytes.
/// Integers are big-endian, as nf_tables reads them; `bytes` go as they are.
#[derive(Debug, Default, Clone)]
pub(super) struct Attrs(Vec<u8>);

impl Attrs {
    pub fn new() -> Attrs {
        Attrs(Vec::with_capacity(256))
    }

    pub fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Attrs {
        let len = u16::try_from(4 + value.len()).expect("attribute below 64 KiB");
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.pad();
        self
    }

    pub fn u32(&mut self, kind: u16, value: u32) -> &mut Attrs {
        self.bytes(kind, &value.to_be_bytes())
    }

    pub fn u8(&mut self, kind: u16, value: u8) -> &mut Attrs {
        self.bytes(kind, &[value])
    }

    /// A NUL-terminated string, as nf_tables takes names.
    pub fn str(&mut self, kind: u16, value: &str) -> &mut Attrs {
        let mut v = Vec::with_capacity(value.len() + 1);
        v.extend_from_slice(value.as_bytes());
        v.push(0);
        self.bytes(kind, &v)
    }

    /// A nested attribute whose value `inner` writes.
    pub fn nest(&mut self, kind: u16, inner: impl FnOnce(&mut Attrs)) -> &mut Attrs {
        let start = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        inner(self);
        let len = u16::try_from(self.0.len() - start).expect("attribute below 64 KiB");
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.0[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Attributes written elsewhere, as they are.
    pub fn append(&mut self, other: &Attrs) -> &mut Attrs {
        self.0.extend_from_slice(&other.0);
        self
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }

    #[cfg(test)]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// One nf_tables message of a batch (family inet), and what it is in nft's words, for errors.
#[derive(Debug, Clone)]
pub(super) struct Message {
    /// `NFT_MSG_NEWTABLE` and the rest (linux/netfilter/nf_tables.h).
    pub kind: u16,
    /// `NLM_F_CREATE`, `NLM_F_APPEND`: besides `NLM_F_REQUEST` and `NLM_F_ACK`, which every message has.
    pub flags: u16,
    pub attrs: Attrs,
    /// `add chain inet wg-oci-hook input { ... }`
    pub what: String,
}

/// A message the kernel refused, with its errno: the error a batch's failure carries (`io::Error::get_ref`).
#[derive(Debug)]
pub struct Refusal {
    pub errno: i32,
    /// The refused message, in nft's words.
    pub what: String,
    /// The kernel's extended acknowledgement text, if it gave one.
    pub detail: Option<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nf_tables refused '{}': {}",
            self.what,
            io::Error::from_raw_os_error(self.errno)
        )?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// The refusal an `exchange` error carries, if the kernel refused a message (not a socket failure).
    pub fn of(e: &io::Error) -> Option<&Refusal> {
        e.get_ref().and_then(|e| e.downcast_ref::<Refusal>())
    }
}

/// The batch as bytes: begin (sequence number 0), the messages (1, 2, ...), end.
pub(super) fn encode(messages: &[Message]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(64 + messages.iter().map(|m| 20 + m.attrs.0.len()).sum::<usize>());
    let mut put = |kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]| {
        let len = u32::try_from(NLMSG_HDRLEN + 4 + attrs.len()).expect("message below 4 GiB");
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&[family, NFNETLINK_V0]);
        out.extend_from_slice(&res_id.to_be_bytes());
        out.extend_from_slice(attrs);
    };
    put(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        0,
        NFPROTO_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    for (i, m) in messages.iter().enumerate() {
        put(
            (NFNL_SUBSYS_NFTABLES << 8) | m.kind,
            NLM_F_REQUEST | NLM_F_ACK | m.flags,
            seq_of(i),
            NFPROTO_INET,
            0,
            &m.attrs.0,
        );
    }
    put(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq_of(messages.len()),
        NFPROTO_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    out
}

fn seq_of(index: usize) -> u32 {
    u32::try_from(index + 1).expect("fewer than 4 billion messages")
}

/// Sends `messages` as one batch on a new NETLINK_NETFILTER socket of the calling thread's netns and reads
/// an answer for each. Nothing is applied unless every message is accepted; the first refused one is the
/// error (a [`Refusal`]).
pub(super) fn exchange(messages: &[Message]) -> io::Result<()> {
    let socket = ClosedLater(Some(open()?));
    let socket = socket.0.as_ref().expect("open until dropped");
    let batch = encode(messages);
    let address = nix::sys::socket::NetlinkAddr::new(0, 0);
    let sent = nix::sys::socket::sendto(
        socket.as_raw_fd(),
        &batch,
        &address,
        nix::sys::socket::MsgFlags::empty(),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("sending to nf_tables: {e}"),
        )
    })?;
    if sent != batch.len() {
        return Err(io::Error::other(format!(
            "nf_tables took {sent} of {} bytes",
            batch.len()
        )));
    }
    let mut answers: Vec<Option<(i32, Option<String>)>> = vec![None; messages.len()];
    let mut left = messages.len();
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = nix::sys::socket::recv(
            socket.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        )
        .map_err(|e| match e {
            nix::errno::Errno::EAGAIN => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "nf_tables answered {} of {} messages",
                    messages.len() - left,
                    messages.len()
                ),
            ),
            e => io::Error::new(
                io::Error::from(e).kind(),
                format!("reading nf_tables' answers: {e}"),
            ),
        })?;
        for (seq, errno, detail) in errors(&buf[..n]) {
            if seq == 0 {
                // The batch as a whole (its begin): refused before or after its messages were looked at.
                return Err(refused(errno, "the batch".into(), detail));
            }
            let slot = usize::try_from(seq - 1)
                .ok()
                .and_then(|i| answers.get_mut(i));
            if let Some(slot @ None) = slot {
                *slot = Some((errno, detail));
                left -= 1;
            }
        }
    }
    match answers
        .into_iter()
        .zip(messages)
        .find_map(|(answer, m)| answer.filter(|(errno, _)| *errno != 0).map(|a| (a, m)))
    {
        None => Ok(()),
        Some(((errno, detail), m)) => Err(refused(errno, m.what.clone(), detail)),
    }
}

fn refused(errno: i32, what: String, detail: Option<String>) -> io::Error {
    let kind = io::Error::from_raw_os_error(errno).kind();
    io::Error::new(
        kind,
        Refusal {
            errno,
            what,
            detail,
        },
    )
}

/// The `NLMSG_ERROR` answers in `buf`: sequence number, errno (0: accepted), extended-ack message.
fn errors(buf: &[u8]) -> Vec<(u32, i32, Option<String>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let u32_at = |i: usize| u32::from_ne_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
        let u16_at = |i: usize| u16::from_ne_bytes(buf[i..i + 2].try_into().expect("2 bytes"));
        let len = u32_at(at) as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        let (kind, flags, seq) = (u16_at(at + 4), u16_at(at + 6), u32_at(at + 8));
        // nlmsgerr: the errno (negative), then the header of the message it answers.
        if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 + NLMSG_HDRLEN {
            let error = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
            let detail = if flags & NLM_F_ACK_TLVS != 0 {
                let answered_len = u32_at(at + 20) as usize;
                let tlvs = at
                    + 20
                    + if flags & NLM_F_CAPPED != 0 {
                        NLMSG_HDRLEN
                    } else {
                        answered_len.next_multiple_of(4)
                    };
                ext_ack_message(buf.get(tlvs..at + len).unwrap_or(&[]))
            } else {
                None
            };
            out.push((seq, error.saturating_neg(), detail));
        }
        at += len.next_multiple_of(4);
    }
    out
}

/// `NLMSGERR_ATTR_MSG` among the extended-ack attributes, if any.
fn ext_ack_message(mut tlvs: &[u8]) -> Option<String> {
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & !NLA_F_NESTED;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|b| *b == 0).next().unwrap_or(&[]);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = &tlvs[len.next_multiple_of(4).min(tlvs.len())..];
    }
    None
}

/// A netfilter netlink socket that a thread of its own closes. Closing one waits until nf_tables has freed the
/// objects of the transactions before (the kernel's `nft_rcv_nl_event` flushes its destroy work, which waits
/// for an RCU grace period): 3-12 ms here, which `nft` pays as it exits. The hook goes on meanwhile; its
/// exit waits for the close if it has not ended by then.
struct ClosedLater(Option<OwnedFd>);

impl Drop for ClosedLater {
    fn drop(&mut self) {
        if let Some(socket) = self.0.take() {
            // A thread that cannot be started drops the socket here, as any.
            let _ = std::thread::Builder::new()
                .name("nft-close".into())
                .spawn(move || drop(socket));
        }
    }
}

/// A NETLINK_NETFILTER socket in the calling thread's netns, answering with capped acknowledgements (no copy
/// of the message back) that carry the kernel's extended-ack text, and a bounded read.
fn open() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("opening a netfilter netlink socket: {e}"),
        ));
    }
    // SAFETY: fd is a descriptor we just opened and own.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    for option in [NETLINK_CAP_ACK, NETLINK_EXT_ACK] {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads an int from a valid pointer. Kernels before 4.3 (cap) or 4.12 (ext) lack
        // these options; the answers are read either way.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                SOL_NETLINK,
                option,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    let timeout = nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0);
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
        .map_err(io::Error::from)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_flagged() {
        let mut a = Attrs::new();
        a.str(1, "input").nest(4, |a| {
            a.u32(1, 1).u8(3, 0);
        });
        assert_eq!(
            a.as_bytes(),
            [
                10, 0, 1, 0, b'i', b'n', b'p', b'u', b't', 0, 0, 0, // "input\0" padded
                20, 0, 4, 0x80, // nested, 4 + 8 + 8
                8, 0, 1, 0, 0, 0, 0, 1, // big-endian u32
                5, 0, 3, 0, 0, 0, 0, 0, // a byte, padded
            ]
        );
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end_naming_nf_tables() {
        let mut attrs = Attrs::new();
        attrs.str(1, "t");
        let batch = encode(&[Message {
            kind: 2,
            flags: 0,
            attrs,
            what: "delete table inet t".into(),
        }]);
        assert_eq!(batch.len(), 20 + 28 + 20);
        // begin: type 0x10, request, seq 0, AF_UNSPEC, res_id 10 big-endian
        assert_eq!(&batch[4..8], &[0x10, 0, 1, 0]);
        assert_eq!(&batch[16..20], &[0, 0, 0, 10]);
        // the message: (10 << 8) | 2, request | ack, seq 1, NFPROTO_INET
        assert_eq!(&batch[24..28], &[2, 10, 5, 0]);
        assert_eq!(&batch[28..32], &[1, 0, 0, 0]);
        assert_eq!(&batch[36..40], &[1, 0, 0, 0]);
        // end: type 0x11, seq 2
        assert_eq!(&batch[52..56], &[0x11, 0, 1, 0]);
        assert_eq!(&batch[56..60], &[2, 0, 0, 0]);
    }

    #[test]
    fn answers_are_read_with_their_extended_ack_text() {
        let mut buf = Vec::new();
        // An acknowledgement of message 1 (capped).
        buf.extend_from_slice(&36u32.to_ne_bytes());
        buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        buf.extend_from_slice(&NLM_F_CAPPED.to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&0i32.to_ne_bytes());
        buf.extend_from_slice(&[0; 16]);
        // A refusal of message 2 with a text.
        buf.extend_from_slice(&48u32.to_ne_bytes());
        buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
        buf.extend_from_slice(&2u32.to_ne_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&(-95i32).to_ne_bytes());
        buf.extend_from_slice(&[0; 16]);
        buf.extend_from_slice(&[12, 0, 1, 0, b'n', b'o', b'p', b'e', b'!', 0, 0, 0]);
        assert_eq!(
            errors(&buf),
            [(1, 0, None), (2, 95, Some("nope!".to_owned()))]
        );
    }
}
