//! wg-quick config files (`wgquick::parse`): what `load` hands it after reading at most 64 KiB of text.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use wg_oci_hook::config::wgquick;

const FILE: &str = "/etc/wg-oci-hook/fuzz.conf";

fuzz_target!(|data: &[u8]| {
    // `load` reads the file into a String: text that is not UTF-8 never reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match wgquick::parse(text, Path::new(FILE)) {
        Ok(config) => {
            let i = &config.interface;
            assert!(!i.private_key.is_zero(), "an all-zero PrivateKey accepted");
            assert_ne!(i.fwmark, Some(0), "FwMark 0 is `off`, not a mark");
            if let Some(mtu) = i.mtu {
                assert!((576..=65535).contains(&mtu), "MTU {mtu}");
                if i.addresses.iter().any(|a| a.is_ipv6()) {
                    assert!(mtu >= 1280, "MTU {mtu} with an IPv6 address");
                }
            }
            for name in &i.dns_search {
                assert!(
                    !name.is_empty()
                        && name.len() <= 254
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                    "DNS search domain {name:?}"
                );
            }
            for server in &i.dns_servers {
                if let std::net::IpAddr::V6(v6) = server {
                    // Only with the tunnel's zone (`%fuzz`, after the file's name); resolv.conf adds it.
                    if wgquick::is_link_local(v6) {
                        assert!(
                            text.contains("%fuzz"),
                            "link-local DNS {v6} without the zone"
                        );
                    }
                }
            }
            for peer in &config.peers {
                assert_ne!(peer.persistent_keepalive, Some(0), "keepalive 0 is off");
                if let Some(endpoint) = &peer.endpoint {
                    assert_ne!(endpoint.port, 0, "endpoint port 0");
                    assert!(!endpoint.host.is_empty(), "an endpoint without a host");
                    assert!(
                        !endpoint.host.contains([' ', '[', ']', '/', ',', '#']),
                        "endpoint host {:?}",
                        endpoint.host
                    );
                }
                for net in &peer.allowed_ips {
                    assert_eq!(net.ip(), net.network(), "AllowedIPs {net} not masked");
                }
            }
        }
        Err(e) => {
            let message = e.to_string();
            common::assert_clean_line(&message);
            common::assert_bounded(&message, 1024);
            assert!(
                message.starts_with(FILE),
                "{message:?} does not name the file"
            );
            assert!(
                !wgquick::looks_like_key(&message),
                "an error quotes what looks like a key: {message:?}"
            );
        }
    }
});
