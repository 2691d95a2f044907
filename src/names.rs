//! Names we give to things outside the process: the temporary host-side link and the state record.

/// Prefix of every link this hook creates in the runtime (host) network namespace.
pub const HOST_LINK_PREFIX: &str = "wgo";

/// The temporary name of a container's link in the host netns before it moves into the container:
/// `wgo` + 12 hex digits of a stable 64-bit FNV-1a hash of the container id (15 bytes, IFNAMSIZ-1).
/// Stable across builds, unlike std's hasher, so a poststop from a newer binary finds it.
pub fn host_link_name(container_id: &str) -> String {
    format!(
        "{HOST_LINK_PREFIX}{:012x}",
        fnv1a64(container_id.as_bytes()) >> 16
    )
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
    fn host_link_name_fits_ifnamsiz_and_is_stable() {
        let name = host_link_name("0123456789abcdef");
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("wgo"));
        assert_eq!(name, host_link_name("0123456789abcdef"));
        assert_ne!(name, host_link_name("0123456789abcdee"));
    }
}
