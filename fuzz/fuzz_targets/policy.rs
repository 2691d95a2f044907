//! The TOML policy (`Policy::parse`): what `load` hands it after reading at most 1 MiB of text.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::time::Duration;
use wg_oci_hook::config::annotations;
use wg_oci_hook::config::policy::{LogDestination, Policy, KNOWN_CHOOSABLE};
use wg_oci_hook::provider::pia::settings::check_cn;
use wg_oci_hook::provider::pia::settings;

const FILE: &str = "/etc/wg-oci-hook/policy.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text, Path::new(FILE)) {
        Ok(policy) => {
            let ifname = &policy.interface;
            assert!(
                (1..=15).contains(&ifname.len())
                    && ifname
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
                "interface {ifname:?}"
            );
            assert!(
                policy.state_dir.is_absolute(),
                "state_dir {:?}",
                policy.state_dir
            );
            // Unset means the built-in daemon; set, a command of non-empty words.
            if let Some(command) = &policy.userspace_command {
                assert!(!command.is_empty());
                assert!(command.iter().all(|a| !a.is_empty()));
            }
            assert!(!policy.runtime.is_empty());
            for a in &policy.allowed_annotations {
                assert!(
                    KNOWN_CHOOSABLE.contains(&a.as_str()),
                    "allowed annotation {a:?}"
                );
            }
            if let LogDestination::File(file) = &policy.log {
                assert!(
                    file.is_absolute() && !file.as_os_str().as_encoded_bytes().contains(&0),
                    "log file {file:?}"
                );
            }
            assert!(!policy.profiles.is_empty(), "a policy without profiles");
            if let Some(default) = &policy.default_profile {
                assert!(policy.profiles.contains_key(default), "default {default:?}");
            }
            for (name, profile) in &policy.profiles {
                assert_eq!(name, &profile.name);
                assert!(annotations::is_valid_name(name), "profile name {name:?}");
                let health = &profile.health;
                assert!(
                    health.interval >= Duration::from_secs(1) && health.stale_after >= health.interval,
                    "health {health:?}"
                );
                if let Some(file) = &health.file {
                    assert!(
                        file.starts_with('/') && !file.split('/').any(|c| c == ".."),
                        "health_file {file:?}"
                    );
                }
                if let Some(pia) = profile.pia() {
                    assert!(!pia.port_persist || pia.port_forwarding, "port_persist alone");
                }
                if let Some(config) = profile.wg_quick() {
                    assert!(config.is_absolute(), "config {config:?}");
                }
                if let Some(pia) = profile.pia() {
                    let within = |d: Duration, lo: u64, hi: u64| {
                        (lo..=hi).contains(&d.as_secs()) && d.subsec_nanos() == 0
                    };
                    assert!(within(pia.bind_interval, 1, 900));
                    assert!(within(pia.server_list_ttl, 0, 7 * 86400));
                    assert!(within(pia.api_timeout, 1, 60));
                    assert!(within(pia.api_deadline, 1, 120));
                    assert!(pia.credentials.is_absolute() && pia.ca.is_absolute());
                    assert!(pia.regions_key.as_deref().is_none_or(Path::is_absolute));
                    assert!(pia.api_ca.as_deref().is_none_or(Path::is_absolute));
                    let file = &pia.port_file;
                    assert!(
                        file.starts_with('/')
                            && file.len() <= 1024
                            && !file.ends_with('/')
                            && !file.split('/').any(|c| c == "..")
                            && !file.contains('\0'),
                        "port_file {file:?}"
                    );
                    assert!(pia.port_forwarding || file == settings::DEFAULT_PORT_FILE);
                    assert!(!pia.regions.is_empty() || pia.server.is_some());
                    assert!(pia.regions_key.is_some() || pia.server.is_some());
                    assert!(!(pia.token_via_meta && pia.server.is_some()));
                    if let Some(server) = &pia.server {
                        assert!(check_cn(&server.cn).is_ok(), "server.cn {:?}", server.cn);
                    }
                    // As the HTTP client will read them (the WHATWG parser also takes `https:/host`).
                    for url in [&pia.token_url, &pia.server_list_url, &pia.dedicated_ip_url] {
                        let parsed = reqwest::Url::parse(url).expect("an accepted URL parses");
                        assert_eq!(parsed.scheme(), "https", "URL {url:?}");
                        assert!(
                            parsed.host_str().is_some_and(|h| !h.is_empty()),
                            "URL {url:?}"
                        );
                    }
                    for region in &pia.regions {
                        assert!(annotations::is_valid_name(region), "region {region:?}");
                    }
                }
            }
        }
        Err(e) => {
            common::assert_one_line(&e.0);
            assert!(e.0.starts_with(FILE), "{:?} does not name the file", e.0);
        }
    }
});
