//! The one change the wrapper makes to a bundle's config.json: our createRuntime and poststop hooks, for a
//! container that asks for a tunnel or whose runtime binds a profile.

use super::options::HOOK_NAME;
use crate::config::annotations;
use crate::oci::cdi;
use crate::sys::command::DEFAULT_PATH;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

pub struct HookCall {
    pub hook: PathBuf,
    pub policy: Option<PathBuf>,
    pub profile: Option<String>,
}

impl HookCall {
    fn entry(&self, stage: &str) -> Value {
        let mut args = vec![HOOK_NAME.to_owned()];
        if let Some(policy) = &self.policy {
            args.push("--policy".into());
            args.push(policy.to_string_lossy().into_owned());
        }
        if let Some(profile) = &self.profile {
            args.push("--profile".into());
            args.push(profile.clone());
        }
        args.push(stage.to_owned());
        json!({
            "path": self.hook.to_string_lossy(),
            "args": args,
            "env": [format!("PATH={DEFAULT_PATH}")],
            "timeout": crate::sys::deadline::HOOK_TIMEOUT.as_secs(),
        })
    }
}

/// Adds our hooks to the config of a container that carries `wg.enable` (whatever its value: the hook tells on
/// from off and refuses the rest) or runs under a runtime-bound profile; Ok(false) for any other container (the
/// config is then not to be written). Every field we do not know, and every hook already there, stays as it was.
pub fn add_hooks(config: &mut Value, call: &HookCall) -> Result<bool, String> {
    let root = config
        .as_object_mut()
        .ok_or("config.json is not a JSON object")?;
    // A CDI device of ours binds a profile too (the engine copied its hooks in already): one that is not this
    // runtime's is refused, as the hook refuses it, rather than left to whichever hook runs.
    if let Some(profile) = &call.profile {
        let hooks: Vec<(&str, Vec<String>)> = root
            .get("hooks")
            .and_then(|h| h.get("createRuntime"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|h| {
                let path = h.get("path")?.as_str()?;
                let args = h.get("args")?.as_array()?;
                Some((
                    path,
                    args.iter()
                        .filter_map(|a| a.as_str().map(str::to_owned))
                        .collect(),
                ))
            })
            .collect();
        let devices = cdi::devices_in(hooks.iter().map(|(p, a)| (*p, a.as_slice())));
        if let Some(other) = devices.iter().find(|d| *d != profile) {
            return Err(format!(
                "the container asks for the device {} and this runtime binds profile {profile:?}: a container \
                 has one tunnel",
                cdi::qualified(other)
            ));
        }
    }
    let annotation = root
        .get("annotations")
        .and_then(|a| a.get(annotations::ENABLE))
        .cloned();
    match (&annotation, &call.profile) {
        (None, None) => {
            // `wg.Enable` and the like: the hook refuses them, so it must run.
            let mis_cased = root
                .get("annotations")
                .and_then(Value::as_object)
                .is_some_and(|a| annotations::mentions_enable(a.keys()));
            if !mis_cased {
                return Ok(false);
            }
        }
        (Some(_), None) => {}
        (Some(value), Some(profile)) => {
            // An explicit "off" on a runtime whose whole point is "on": say so rather than pick one.
            // Only the off spellings (short, plain words) get here; quoted all the same.
            if let Some(off) = value
                .as_str()
                .filter(|v| matches!(annotations::enable_value(v), Ok(false)))
            {
                return Err(format!(
                    "annotation {}={off:?} contradicts this runtime, which enables profile {profile:?}",
                    annotations::ENABLE,
                ));
            }
        }
        (None, Some(_)) => {
            // The hook acts on the annotation: the runtime name said yes, so say it for the hook.
            let annotations = root
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .ok_or("config.json: annotations is not an object")?;
            annotations.insert(annotations::ENABLE.into(), Value::String("true".into()));
        }
    }
    let hooks = root
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or("config.json: hooks is not an object")?;
    for (stage, arg) in [
        ("createRuntime", "create-runtime"),
        ("poststop", "poststop"),
    ] {
        let list = hooks
            .entry(stage)
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .ok_or_else(|| format!("config.json: hooks.{stage} is not an array"))?;
        let entry = call.entry(arg);
        // Already ours (say podman read hooks.d and the wrapper runs too): do not run it twice.
        let ours = |h: &Value| {
            h.get("path") == entry.get("path")
                && h.get("args")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.last().and_then(Value::as_str) == Some(arg))
        };
        if !list.iter().any(ours) {
            list.push(entry);
        }
    }
    Ok(true)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn call(profile: Option<&str>) -> HookCall {
        HookCall {
            hook: "/usr/local/bin/wg-oci-hook".into(),
            policy: Some("/etc/wg-oci-hook/policy.toml".into()),
            profile: profile.map(str::to_owned),
        }
    }

    #[test]
    fn an_enabled_config_gets_both_hooks_after_the_ones_it_had() {
        let mut config = json!({
            "ociVersion": "1.0.2-dev",
            "annotations": {"wg.enable": "true"},
            "hooks": {"prestart": [{"path": "/usr/bin/dockerd", "args": ["libnetwork-setkey", "x"]}],
                      "createRuntime": [{"path": "/other"}]},
            "someFutureField": {"kept": [1, 2, 3]}
        });
        assert!(add_hooks(&mut config, &call(None)).unwrap());
        let hooks = &config["hooks"];
        assert_eq!(hooks["prestart"][0]["args"][0], "libnetwork-setkey");
        assert_eq!(hooks["createRuntime"][0]["path"], "/other");
        assert_eq!(
            hooks["createRuntime"][1]["args"],
            json!([
                "wg-oci-hook",
                "--policy",
                "/etc/wg-oci-hook/policy.toml",
                "create-runtime"
            ])
        );
        assert_eq!(hooks["poststop"][0]["args"][3], "poststop");
        assert_eq!(hooks["poststop"][0]["timeout"], 30);
        assert_eq!(config["someFutureField"]["kept"], json!([1, 2, 3]));
        // Twice is once.
        let before = config.clone();
        assert!(add_hooks(&mut config, &call(None)).unwrap());
        assert_eq!(config, before);
    }

    #[test]
    fn a_cdi_device_of_another_profile_is_refused_and_the_same_one_gets_no_second_hook() {
        let device = |name: &str| {
            json!({"hooks": {"createRuntime": [{"path": "/usr/bin/wg-oci-hook",
                "args": ["wg-oci-hook", "--cdi-device", name, "create-runtime"]}]}})
        };
        let mut config = device("lab");
        let e = add_hooks(&mut config, &call(Some("vpn"))).unwrap_err();
        assert_eq!(
            e,
            "the container asks for the device wg-oci-hook.dev/tunnel=lab and this runtime binds profile \
             \"vpn\": a container has one tunnel"
        );
        assert_eq!(config, device("lab"), "nothing changed");
        // The same profile: the device's hooks stand (the hook finds the device and binds it).
        let mut config = device("vpn");
        let call = HookCall {
            hook: "/usr/bin/wg-oci-hook".into(),
            ..call(Some("vpn"))
        };
        assert!(add_hooks(&mut config, &call).unwrap());
        assert_eq!(
            config["hooks"]["createRuntime"].as_array().unwrap().len(),
            1
        );
        // A runtime with no profile leaves a device container as it is.
        let mut config = device("lab");
        assert!(!add_hooks(&mut config, &super::tests::call(None)).unwrap());
    }

    #[test]
    fn any_value_of_wg_enable_gets_the_hooks_and_keeps_its_value() {
        for value in ["true", "TRUE", "yes", "false", "off", "maybe", "", " true"] {
            let mut config = json!({"annotations": {"wg.enable": value}});
            assert!(add_hooks(&mut config, &call(None)).unwrap(), "{value:?}");
            assert_eq!(config["annotations"]["wg.enable"], value);
            assert_eq!(
                config["hooks"]["createRuntime"][0]["args"][3],
                "create-runtime"
            );
            assert_eq!(config["hooks"]["poststop"][0]["args"][3], "poststop");
        }
    }

    #[test]
    fn a_mis_cased_wg_enable_gets_the_hooks_so_the_hook_can_refuse_it() {
        let mut config = json!({"annotations": {"wg.Enable": "true"}});
        assert!(add_hooks(&mut config, &call(None)).unwrap());
        assert_eq!(
            config["hooks"]["createRuntime"][0]["args"][3],
            "create-runtime"
        );
        assert_eq!(config["annotations"], json!({"wg.Enable": "true"}));
    }

    #[test]
    fn a_config_without_wg_enable_is_left_alone() {
        for annotations in [
            json!({}),
            json!({"wg.profile": "lab", "wg.enable ": "true"}),
        ] {
            let mut config = json!({"annotations": annotations});
            let before = config.clone();
            assert!(!add_hooks(&mut config, &call(None)).unwrap());
            assert_eq!(config, before);
        }
        let mut config = json!({"process": {}});
        assert!(!add_hooks(&mut config, &call(None)).unwrap());
    }

    #[test]
    fn a_runtime_bound_profile_enables_and_names_its_profile() {
        let mut config = json!({"process": {}});
        assert!(add_hooks(&mut config, &call(Some("pia"))).unwrap());
        assert_eq!(config["annotations"]["wg.enable"], "true");
        let args = &config["hooks"]["createRuntime"][0]["args"];
        assert_eq!(args[3], "--profile");
        assert_eq!(args[4], "pia");
        // An explicit off contradicts the runtime; on, or a value the hook will refuse, goes to the hook.
        for value in ["false", "OFF", "0", "no"] {
            let mut config = json!({"annotations": {"wg.enable": value}});
            let e = add_hooks(&mut config, &call(Some("pia"))).unwrap_err();
            assert!(e.contains("contradicts"), "{e}");
        }
        for value in ["yes", "maybe"] {
            let mut config = json!({"annotations": {"wg.enable": value}});
            assert!(add_hooks(&mut config, &call(Some("pia"))).unwrap());
            assert_eq!(config["annotations"]["wg.enable"], value);
        }
    }

    /// Found by fuzzing (fuzz/corpus/add_hooks/crash-e1ead707…): the `wg.enable` value a runtime-bound profile
    /// contradicts went into the error as JSON, which leaves DEL and line separators as they are, unbounded.
    #[test]
    fn a_contradicting_annotation_is_quoted_bounded() {
        // Since any value but an off one now goes to the hook (which quotes it bounded), odd ones are no error here.
        let long = "x".repeat(5000);
        for value in ["tr\u{7f}ue", "a\u{2028}b", long.as_str()] {
            let mut config = json!({"annotations": {"wg.enable": value}});
            assert!(add_hooks(&mut config, &call(Some("pia"))).unwrap());
        }
        let mut config = json!({"annotations": {"wg.enable": "false"}});
        assert_eq!(
            add_hooks(&mut config, &call(Some("pia"))).unwrap_err(),
            "annotation wg.enable=\"false\" contradicts this runtime, which enables profile \"pia\""
        );
    }
}
