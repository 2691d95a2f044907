//! podman, CRI-O and Buildah: two files in hooks.d (`/usr/share/containers/oci/hooks.d`), ours whole: written
//! without a backup, removed only when they run wg-oci-hook.

use super::file::{self, Edit};
use serde_json::{json, Value};
use std::path::Path;

/// The two files, by stage.
pub const FILES: [(&str, &str); 2] = [
    ("createRuntime", "wg-oci-hook-create-runtime.json"),
    ("poststop", "wg-oci-hook-poststop.json"),
];

/// The hooks.d registration for one stage (`createRuntime` or `poststop`).
pub fn entry(hook: &Path, policy: Option<&Path>, stage: &str) -> Value {
    let mut args = vec!["wg-oci-hook".to_owned()];
    if let Some(p) = policy {
        args.push("--policy".into());
        args.push(p.to_string_lossy().into_owned());
    }
    args.push(
        if stage == "createRuntime" {
            "create-runtime"
        } else {
            "poststop"
        }
        .to_owned(),
    );
    json!({
        "version": "1.0.0",
        "hook": {
            "path": hook.to_string_lossy(),
            "args": args,
            "env": [format!("PATH={}", crate::sys::command::DEFAULT_PATH)],
            "timeout": crate::sys::deadline::HOOK_TIMEOUT.as_secs()
        },
        // Any value: the hook itself tells on from off and refuses the rest. A filter on the value would let
        // `True` or `yes` start the container without the hook, that is without the tunnel.
        "when": { "annotations": { "(?i)^wg\\.enable$": ".*" } },
        "stages": [stage]
    })
}

/// The two files `hook` (with `policy`) needs in `dir`.
pub fn install(dir: &Path, hook: &Path, policy: Option<&Path>) -> Result<Vec<Edit>, String> {
    FILES
        .iter()
        .map(|(stage, name)| {
            let path = dir.join(name);
            let text = serde_json::to_string_pretty(&entry(hook, policy, stage))
                .expect("serializable")
                + "\n";
            Ok(Edit {
                old: file::read(&path)?,
                new: Some(text.into_bytes()),
                path,
                backup: false,
            })
        })
        .collect()
}

/// The two files gone, if they are there; refused for a file of that name that does not run wg-oci-hook.
pub fn uninstall(dir: &Path) -> Result<Vec<Edit>, String> {
    let mut edits = Vec::new();
    for (_, name) in FILES {
        let path = dir.join(name);
        let Some(old) = file::read(&path)? else {
            continue;
        };
        let runs = serde_json::from_slice::<Value>(&old)
            .ok()
            .and_then(|v| v["hook"]["path"].as_str().map(str::to_owned));
        let ours = runs
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            .is_some_and(|n| n == "wg-oci-hook");
        if !ours {
            return Err(format!(
                "{}: not wg-oci-hook's (its hook runs {}): left alone, nothing removed",
                path.display(),
                runs.as_deref().unwrap_or("nothing this can read")
            ));
        }
        edits.push(Edit {
            path,
            old: Some(old),
            new: None,
            backup: false,
        });
    }
    Ok(edits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_shipped_hooks_d_files_are_what_install_writes() {
        for (stage, file) in FILES {
            let shipped: Value = serde_json::from_str(
                &fs::read_to_string(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("hooks.d")
                        .join(file),
                )
                .unwrap(),
            )
            .unwrap();
            assert_eq!(
                shipped,
                entry(Path::new("/usr/local/bin/wg-oci-hook"), None, stage),
                "{file}"
            );
            // Every value reaches the hook, which decides (see annotations::enable_value).
            assert_eq!(
                shipped["when"]["annotations"]["(?i)^wg\\.enable$"], ".*",
                "{file}"
            );
        }
    }

    #[test]
    fn install_then_uninstall_and_a_stranger_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("wgoh-hooksd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let hook = Path::new("/usr/local/bin/wg-oci-hook");
        let edits = install(&dir, hook, Some(Path::new("/p.toml"))).unwrap();
        assert_eq!(edits.len(), 2);
        for edit in &edits {
            assert!(edit.old.is_none() && edit.changes());
            edit.apply().unwrap();
        }
        let again = install(&dir, hook, Some(Path::new("/p.toml"))).unwrap();
        assert!(again.iter().all(|e| !e.changes()), "{again:?}");
        let text = fs::read_to_string(dir.join(FILES[0].1)).unwrap();
        assert!(text.contains("\"--policy\",\n      \"/p.toml\""), "{text}");
        // Another policy: the files change.
        assert!(install(&dir, hook, None).unwrap().iter().all(Edit::changes));

        let gone = uninstall(&dir).unwrap();
        assert_eq!(gone.len(), 2);
        for edit in &gone {
            assert!(edit.new.is_none());
            edit.apply().unwrap();
        }
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        assert!(uninstall(&dir).unwrap().is_empty());

        fs::write(
            dir.join(FILES[1].1),
            r#"{"hook": {"path": "/usr/bin/other"}}"#,
        )
        .unwrap();
        let e = uninstall(&dir).unwrap_err();
        assert!(e.contains("its hook runs /usr/bin/other"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
