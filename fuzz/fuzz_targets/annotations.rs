//! A container's `wg.*` annotations (`annotations::parse`). The input is `key=value` records separated by NUL
//! bytes (a value may hold any other byte, newlines too); a later record with the same key replaces an earlier.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use wg_oci_hook::config::annotations;
use wg_oci_hook::config::policy::KNOWN_CHOOSABLE;

/// `annotations.rs`'s MAX_PORT_MAPS.
const MAX_PORT_MAPS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let map: HashMap<String, String> = text
        .split('\0')
        .map(|record| match record.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (record.to_owned(), String::new()),
        })
        .collect();
    match annotations::parse(&map) {
        Ok(request) => {
            if let Some(profile) = &request.profile {
                assert!(annotations::is_valid_name(profile), "profile {profile:?}");
            }
            if let Some(region) = &request.region {
                assert!(annotations::is_valid_name(region), "region {region:?}");
            }
            if let Some(ports) = &request.ports {
                assert!(ports.len() <= MAX_PORT_MAPS, "{} port maps", ports.len());
                for (i, m) in ports.iter().enumerate() {
                    assert!(m.outer != 0 && m.inner != 0, "port map {m}");
                    // Two maps never claim the same outer port and protocol.
                    assert!(
                        !ports[..i]
                            .iter()
                            .any(|o| o.outer == m.outer && o.protocol == m.protocol),
                        "{m} claimed twice"
                    );
                    // What goes into nft rules reads back as itself.
                    assert_eq!(
                        m.to_string().parse::<wg_oci_hook::config::ports::PortMap>(),
                        Ok(*m)
                    );
                }
            }
            // Only wg.* keys matter: an accepted request means every wg.* key is a known one.
            for key in map.keys().filter(|k| k.starts_with("wg.")) {
                assert!(
                    key == annotations::ENABLE || KNOWN_CHOOSABLE.contains(&key.as_str()),
                    "unknown annotation {key:?} accepted"
                );
            }
        }
        Err(e) => {
            let message = e.to_string();
            common::assert_clean_line(&message);
            // At most 64 characters of a key or value are quoted, each escaped to at most 10 bytes (`\u{10ffff}`).
            common::assert_bounded(&message, 1024);
            assert!(message.starts_with("annotation "), "{message:?}");
        }
    }
});
