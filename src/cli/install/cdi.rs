//! Engines with the Container Device Interface: one spec file, `<dir>/wg-oci-hook.json`, with a device
//! `wg-oci-hook.dev/tunnel=PROFILE` per profile of the policy, each carrying our createRuntime and poststop hooks
//! with that profile bound (`oci::cdi`). The file is ours whole: written without a backup, rewritten to match the
//! policy, removed only when its kind is ours.

use super::file::{self, Edit};
use crate::config::policy::Policy;
use crate::oci::cdi::{self, DEVICE_FLAG, KIND, VERSION};
use crate::sys::command::is_executable;
use crate::sys::command::DEFAULT_PATH;
use crate::sys::deadline::HOOK_TIMEOUT;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The spec's file name in its directory.
pub const FILE: &str = "wg-oci-hook.json";

/// The spec for `policy`'s profiles, the hooks running `hook` (with `--policy policy_arg` when given), and the
/// profiles whose names cannot be CDI device names (left out).
pub fn spec(policy: &Policy, hook: &Path, policy_arg: Option<&Path>) -> (Value, Vec<String>) {
    let (named, unnamed): (Vec<&String>, Vec<&String>) = policy
        .profiles
        .keys()
        .partition(|name| cdi::is_device_name(name));
    let devices: Vec<Value> = named
        .into_iter()
        .map(|profile| device(profile, hook, policy_arg))
        .collect();
    let spec = json!({
        "cdiVersion": VERSION,
        "kind": KIND,
        "devices": devices,
    });
    (spec, unnamed.into_iter().cloned().collect())
}

/// One device: the two hooks, the profile bound.
fn device(profile: &str, hook: &Path, policy_arg: Option<&Path>) -> Value {
    let hook_entry = |name: &str, stage: &str| {
        let mut args = vec!["wg-oci-hook".to_owned()];
        if let Some(p) = policy_arg {
            args.push("--policy".into());
            args.push(p.to_string_lossy().into_owned());
        }
        args.extend([DEVICE_FLAG.to_owned(), profile.to_owned(), stage.to_owned()]);
        json!({
            "hookName": name,
            "path": hook.to_string_lossy(),
            "args": args,
            "env": [format!("PATH={DEFAULT_PATH}")],
            "timeout": HOOK_TIMEOUT.as_secs(),
        })
    };
    json!({
        "name": profile,
        "containerEdits": {
            "hooks": [hook_entry("createRuntime", "create-runtime"), hook_entry("poststop", "poststop")]
        }
    })
}

/// The file's text: what `install cdi` writes and `check` compares with.
pub fn text(spec: &Value) -> Vec<u8> {
    (serde_json::to_string_pretty(spec).expect("a spec serializes") + "\n").into_bytes()
}

/// What `install` would write: the file's edit, the qualified names of its devices, and the profiles left out.
pub struct Install {
    pub edit: Edit,
    pub devices: Vec<String>,
    pub unnamed: Vec<String>,
}

/// The spec file in `dir`, written for `policy`. A policy none of whose profiles can be a device is refused: the
/// engines refuse a spec without devices.
pub fn install(
    dir: &Path,
    policy: &Policy,
    hook: &Path,
    policy_arg: Option<&Path>,
) -> Result<Install, String> {
    let (spec, unnamed) = spec(policy, hook, policy_arg);
    let devices: Vec<String> = spec["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str().map(cdi::qualified))
        .collect();
    if devices.is_empty() {
        return Err(format!(
            "{} has no profile that can be a CDI device (a name with a letter or digit first and last)",
            policy.path.display()
        ));
    }
    let path = dir.join(FILE);
    Ok(Install {
        edit: Edit {
            old: file::read(&path)?,
            new: Some(text(&spec)),
            path,
            backup: false,
        },
        devices,
        unnamed,
    })
}

/// The spec file gone, if it is there; refused for a file of that name whose kind is not ours.
pub fn uninstall(dir: &Path) -> Result<Option<Edit>, String> {
    let path = dir.join(FILE);
    let Some(old) = file::read(&path)? else {
        return Ok(None);
    };
    let kind = serde_json::from_slice::<Value>(&old)
        .ok()
        .and_then(|v| v["kind"].as_str().map(str::to_owned));
    if kind.as_deref() != Some(KIND) {
        return Err(format!(
            "{}: not wg-oci-hook's (its kind is {}): left alone, nothing removed",
            path.display(),
            kind.as_deref().unwrap_or("nothing this can read")
        ));
    }
    Ok(Some(Edit {
        path,
        old: Some(old),
        new: None,
        backup: false,
    }))
}

/// What is wrong with the spec in `dir` against `policy`, a (file, message) each (`default_policy`: the policy
/// a hook run without `--policy` reads); nothing when
/// there is no spec there (CDI not installed) or it is what `install cdi` would write. The spec's own hook path
/// and `--policy` are kept for the comparison, and checked on their own.
pub fn problems(dir: &Path, policy: &Policy, default_policy: &Path) -> Vec<(PathBuf, String)> {
    let path = dir.join(FILE);
    let bytes = match file::read(&path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![(path, e)],
    };
    let found: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return vec![(path, format!("not JSON: {e}"))],
    };
    if found["kind"] != KIND {
        return vec![(path, format!("its kind is {}, not {KIND}", found["kind"]))];
    }
    let again = "run `wg-oci-hook install cdi` again";
    let devices = found["devices"].as_array().cloned().unwrap_or_default();
    let first_hook =
        &devices.first().map_or(Value::Null, Clone::clone)["containerEdits"]["hooks"][0];
    let hook = PathBuf::from(first_hook["path"].as_str().unwrap_or_default());
    let args: Vec<&str> = first_hook["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let policy_arg = args
        .iter()
        .position(|a| *a == "--policy")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let mut out = Vec::new();
    let reads = policy_arg
        .clone()
        .unwrap_or_else(|| default_policy.to_owned());
    if reads != policy.path {
        out.push(format!(
            "its hooks read the policy {}, not {}",
            reads.display(),
            policy.path.display()
        ));
    }
    if !is_executable(&hook) {
        out.push(format!(
            "its hooks run {}, which is not an executable file",
            hook.display()
        ));
    }
    let (wanted_spec, unnamed) = spec(policy, &hook, policy_arg.as_deref());
    let wanted = wanted_spec["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let name = |d: &Value| d["name"].as_str().unwrap_or_default().to_owned();
    for device in &devices {
        let n = name(device);
        match wanted.iter().find(|w| name(w) == n) {
            None => out.push(format!(
                "device {}: the policy has no profile {n:?}; {again}",
                cdi::qualified(&n)
            )),
            Some(w) if w != device => out.push(format!(
                "device {}: not the hooks install cdi writes; {again}",
                cdi::qualified(&n)
            )),
            Some(_) => {}
        }
    }
    for w in &wanted {
        if !devices.iter().any(|d| name(d) == name(w)) {
            out.push(format!("profile {:?} has no device; {again}", name(w)));
        }
    }
    if out.is_empty() && found != wanted_spec {
        out.push(format!(
            "not what install cdi writes for this policy; {again}"
        ));
    }
    let mut out: Vec<(PathBuf, String)> = out.into_iter().map(|m| (path.clone(), m)).collect();
    for profile in unnamed {
        out.push((
            policy.path.clone(),
            format!(
                "profile {profile:?} cannot be a CDI device (a letter or digit first and last): rename it to \
                 use it through CDI"
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("wgoh-cdi-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn policy(&self, profiles: &[&str]) -> Policy {
            let mut text = String::new();
            for p in profiles {
                text += &format!("[profiles.\"{p}\"]\nconfig = \"/etc/wg-oci-hook/{p}.conf\"\n");
            }
            let path = self.0.join("policy.toml");
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            Policy::load(&path).unwrap()
        }

        fn hook(&self) -> PathBuf {
            let hook = self.0.join("wg-oci-hook");
            fs::write(&hook, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
            hook
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_device_per_profile_each_with_both_hooks_and_its_profile_bound() {
        let dir = Dir::new("spec");
        let policy = dir.policy(&["vpn", "pia-ca", "bad_"]);
        let (written, unnamed) = spec(&policy, Path::new("/usr/bin/wg-oci-hook"), None);
        assert_eq!(unnamed, ["bad_"]);
        assert_eq!(written["cdiVersion"], "0.3.0");
        assert_eq!(written["kind"], "wg-oci-hook.dev/tunnel");
        let devices = written["devices"].as_array().unwrap();
        let names: Vec<&str> = devices
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["pia-ca", "vpn"]);
        let hooks = &devices[1]["containerEdits"]["hooks"];
        assert_eq!(hooks[0]["hookName"], "createRuntime");
        assert_eq!(hooks[0]["path"], "/usr/bin/wg-oci-hook");
        assert_eq!(
            hooks[0]["args"],
            json!(["wg-oci-hook", "--cdi-device", "vpn", "create-runtime"])
        );
        assert_eq!(hooks[1]["hookName"], "poststop");
        assert_eq!(
            hooks[1]["args"],
            json!(["wg-oci-hook", "--cdi-device", "vpn", "poststop"])
        );
        assert_eq!(hooks[0]["timeout"], HOOK_TIMEOUT.as_secs());
        // What the hook reads back from a config.json these hooks were copied into.
        let copied: Vec<String> = serde_json::from_value(hooks[0]["args"].clone()).unwrap();
        let path = hooks[0]["path"].as_str().unwrap();
        assert_eq!(cdi::devices_in([(path, copied.as_slice())]), ["vpn"]);
        let (with_policy, _) = spec(
            &policy,
            Path::new("/h/wg-oci-hook"),
            Some(Path::new("/p.toml")),
        );
        assert_eq!(
            with_policy["devices"][0]["containerEdits"]["hooks"][0]["args"],
            json!([
                "wg-oci-hook",
                "--policy",
                "/p.toml",
                "--cdi-device",
                "pia-ca",
                "create-runtime"
            ])
        );
    }

    #[test]
    fn install_is_idempotent_check_follows_the_policy_and_uninstall_leaves_a_stranger() {
        let dir = Dir::new("install");
        let specs = dir.0.join("cdi");
        let hook = dir.hook();
        let policy = dir.policy(&["vpn"]);
        let default_policy = policy.path.clone();
        assert!(
            problems(&specs, &policy, &default_policy).is_empty(),
            "no spec, nothing to say"
        );
        let Install { edit, devices, .. } = install(&specs, &policy, &hook, None).unwrap();
        assert_eq!(devices, ["wg-oci-hook.dev/tunnel=vpn"]);
        assert!(edit.old.is_none() && edit.changes());
        edit.apply().unwrap();
        let path = specs.join(FILE);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        assert!(!install(&specs, &policy, &hook, None)
            .unwrap()
            .edit
            .changes());
        assert!(problems(&specs, &policy, &default_policy).is_empty());

        // The policy gains a profile and loses one: check says so, install puts it right.
        let changed = dir.policy(&["lab", "other"]);
        let messages: Vec<String> = problems(&specs, &changed, &default_policy)
            .into_iter()
            .map(|(file, m)| {
                assert_eq!(file, path);
                m
            })
            .collect();
        let again = "run `wg-oci-hook install cdi` again";
        assert_eq!(
            messages,
            [
                format!(
                    "device wg-oci-hook.dev/tunnel=vpn: the policy has no profile \"vpn\"; {again}"
                ),
                format!("profile \"lab\" has no device; {again}"),
                format!("profile \"other\" has no device; {again}"),
            ]
        );
        // Another policy file than the one the hooks read, and a hook that is gone.
        let elsewhere = problems(&specs, &policy, Path::new("/etc/wg-oci-hook/policy.toml"));
        assert!(
            elsewhere[0]
                .1
                .starts_with("its hooks read the policy /etc/wg-oci-hook/policy.toml, not "),
            "{elsewhere:?}"
        );
        fs::remove_file(&hook).unwrap();
        let gone = problems(&specs, &policy, &default_policy);
        assert!(
            gone[0].1.ends_with("which is not an executable file"),
            "{gone:?}"
        );

        let edit = uninstall(&specs).unwrap().unwrap();
        edit.apply().unwrap();
        assert!(!path.exists());
        assert!(uninstall(&specs).unwrap().is_none());
        fs::write(
            &path,
            r#"{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[]}"#,
        )
        .unwrap();
        let e = uninstall(&specs).unwrap_err();
        assert!(e.contains("its kind is nvidia.com/gpu"), "{e}");
        let e = problems(&specs, &policy, &default_policy);
        assert!(
            e[0].1.starts_with("its kind is \"nvidia.com/gpu\""),
            "{e:?}"
        );
        // A policy none of whose profiles can be a device: no spec.
        let Err(e) = install(&specs, &dir.policy(&["_a", "b-"]), Path::new("/h"), None) else {
            panic!("a spec without devices");
        };
        assert!(e.contains("has no profile that can be a CDI device"), "{e}");
    }

    #[test]
    fn the_readme_shows_the_spec_written_for_the_example_policy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let policy = Policy::load(&root.join("etc/policy.toml")).unwrap();
        let (written, _) = spec(&policy, Path::new("/usr/bin/wg-oci-hook"), None);
        let readme = fs::read_to_string(root.join("README.md")).unwrap();
        let shown = readme
            .split("The spec it writes for the example policy")
            .nth(1)
            .and_then(|rest| rest.split("```json\n").nth(1))
            .and_then(|rest| rest.split("```").next())
            .expect("README.md shows the example policy's spec in a json block");
        assert_eq!(
            shown.as_bytes(),
            text(&written),
            "README.md's spec is not what install cdi writes"
        );
    }
}
