//! `wg-oci-runtime`'s change to a bundle's config.json (`add_hooks`), on any JSON the engine could write.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wg_oci_hook::config::annotations;
use wg_oci_hook::runtime::{add_hooks, HookCall};

const HOOK: &str = "/usr/local/bin/wg-oci-hook";

fn call(profile: Option<&str>) -> HookCall {
    HookCall {
        hook: HOOK.into(),
        policy: Some("/etc/wg-oci-hook/policy.toml".into()),
        profile: profile.map(str::to_owned),
    }
}

/// How many of the hooks at `stage` are ours for `arg`.
fn ours(config: &Value, stage: &str, arg: &str) -> usize {
    config["hooks"][stage]
        .as_array()
        .expect("a hooks stage that add_hooks accepted is an array")
        .iter()
        .filter(|h| {
            h["path"] == HOOK
                && h["args"]
                    .as_array()
                    .and_then(|a| a.last())
                    .and_then(Value::as_str)
                    == Some(arg)
        })
        .count()
}

fuzz_target!(|data: &[u8]| {
    let Ok(original) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for profile in [None, Some("pia")] {
        let mut config = original.clone();
        match add_hooks(&mut config, &call(profile)) {
            Ok(true) => {
                // The hook decides on any value of wg.enable (in any case of its name); a bound profile
                // supplies one when there is none.
                let names = config["annotations"].as_object().map(|a| a.keys().collect::<Vec<_>>());
                assert!(
                    names.is_some_and(annotations::mentions_enable),
                    "hooks added without wg.enable"
                );
                for (stage, arg) in [
                    ("createRuntime", "create-runtime"),
                    ("poststop", "poststop"),
                ] {
                    let before = original["hooks"][stage]
                        .as_array()
                        .map_or(0, |_| ours(&original, stage, arg));
                    let after = ours(&config, stage, arg);
                    assert!(after >= 1, "no {stage} hook of ours");
                    assert_eq!(after, before.max(1), "{stage}: ours added to ours");
                }
                // Every other top-level field stays as it was.
                for (key, value) in original.as_object().unwrap() {
                    if key != "hooks" && key != "annotations" {
                        assert_eq!(&config[key], value, "{key} changed");
                    }
                }
                // A second pass changes nothing (the wrapper may run after podman read hooks.d).
                let once = config.clone();
                assert_eq!(add_hooks(&mut config, &call(profile)), Ok(true));
                assert_eq!(config, once, "adding the hooks twice is not once");
            }
            Ok(false) => {
                assert!(profile.is_none(), "a runtime-bound profile always enables");
                let named = original["annotations"].as_object().is_some_and(|a| annotations::mentions_enable(a.keys()));
                assert!(!named, "a container that names wg.enable got no hooks");
                assert_eq!(config, original, "a config that is not enabled was changed");
            }
            Err(e) => {
                common::assert_clean_line(&e);
                common::assert_bounded(&e, 1024);
            }
        }
    }
});
