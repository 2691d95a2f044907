//! A PIA account's credentials as the provider uses them (`config::pia_credentials` reads the file), and the
//! `Secret` that holds passwords and tokens: never shown, wiped when dropped.

/// A secret string: no Debug or Display of its value, wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // SAFETY: zero bytes are valid UTF-8, and the String is not used again.
        for b in unsafe { self.0.as_bytes_mut() } {
            // SAFETY: a valid, aligned &mut u8. Volatile so the wipe is not optimised away.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

#[derive(Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
    /// A dedicated IP: the hook registers on that server instead of a region's.
    pub dedicated_ip_token: Option<Secret>,
}
