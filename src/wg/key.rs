//! WireGuard keys: 32 bytes, written as base64 in configs and as hex on the UAPI socket.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// A WireGuard key (private, public or preshared). Its Debug never shows the bytes, it has no Display (so it
/// cannot be formatted into a message by accident), and it is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    /// Exactly 44 characters of standard padded base64 that decode to 32 bytes, as `wg` writes them.
    pub fn from_base64(s: &str) -> Option<Key> {
        if s.len() != 44 || !s.ends_with('=') {
            return None;
        }
        let mut bytes = [0u8; 32];
        match STANDARD.decode_slice(s, &mut bytes) {
            Ok(32) => Some(Key(bytes)),
            _ => None,
        }
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Exactly 64 hex digits (either case), as the UAPI writes keys.
    pub fn from_hex(s: &str) -> Option<Key> {
        let digits = s.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(Key(bytes))
    }

    /// Lowercase hex, the UAPI format.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
        out
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: a valid, aligned &mut u8. Volatile so the wipe is not optimised away.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_base64_and_hex() {
        let b64 = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let key = Key::from_base64(b64).unwrap();
        assert_eq!(key.to_base64(), b64);
        assert_eq!(
            key.to_hex(),
            "c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab6142202418 01ddf0669".replace(' ', "")
        );
        assert!(!key.is_zero());
        assert_eq!(Key::from_hex(&key.to_hex()).unwrap(), key);
        assert_eq!(Key::from_hex(&key.to_hex().to_uppercase()).unwrap(), key);
    }

    #[test]
    fn refuses_wrong_lengths_and_alphabets() {
        for s in [
            "",
            "abc",
            "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk",
            "yAnz5TF-lXXJte14tji3zlMNq_hd2rYUIgJBgB3fBmk=",
            "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk==",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
        ] {
            assert!(Key::from_base64(s).is_none(), "{s:?}");
        }
        for s in [
            "",
            "0",
            &"0".repeat(63),
            &"0".repeat(65),
            &format!("{}g", "0".repeat(63)),
        ] {
            assert!(Key::from_hex(s).is_none(), "{s:?}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let key = Key::from_base64("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap();
        assert_eq!(format!("{key:?}"), "Key(<redacted>)");
    }
}
