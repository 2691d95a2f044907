//! Names we give to things outside the process: the temporary host-side link, and stable hashes for cache files.

/// Prefix of every link this hook creates in the runtime (host) network namespace.
pub const HOST_LINK_PREFIX: &str = "wgo";

/// A fresh temporary name for a container's link in the host netns before it moves into the container:
/// `wgo` + 12 hex digits of 48 random bits (15 bytes, IFNAMSIZ-1). Random, not derived from the container id,
/// which whoever calls the runtime chooses: nobody can make two containers share a name. The caller checks
/// that it is free and records it before making anything under it.
pub fn random_host_link_name() -> Result<String, String> {
    use ring::rand::SecureRandom as _;
    use std::fmt::Write as _;
    let mut bytes = [0u8; 6];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system has no randomness to pick a link name")?;
    let mut name = String::with_capacity(15);
    name.push_str(HOST_LINK_PREFIX);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(name, "{b:02x}");
    }
    Ok(name)
}

/// 64-bit FNV-1a: stable across builds and platforms, for names that a later binary must find again.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_link_names_fit_ifnamsiz_and_differ() {
        let a = random_host_link_name().unwrap();
        let b = random_host_link_name().unwrap();
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("wgo"));
        assert!(a[3..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
