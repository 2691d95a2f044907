//! Docker: a `runtimes` entry in /etc/docker/daemon.json that runs `wg-oci-runtime`, merged into what is there
//! (every other key and runtime kept, in their order). The file is written back in serde_json's layout (two-space
//! indents): an uninstall gives back the same JSON, and the same bytes when the file was in that layout.

use super::file::{self, Edit};
use serde_json::{json, Map, Value};
use std::path::Path;

/// What an install or uninstall would do to daemon.json.
pub struct Change {
    pub edit: Edit,
    /// Install: whether an entry of that name was replaced. Uninstall: whether there was one to remove.
    pub existed: bool,
}

/// Whether a runtime entry runs wg-oci-runtime (or a link named for a profile).
fn is_ours(entry: &Value) -> bool {
    entry["path"]
        .as_str()
        .and_then(|p| Path::new(p).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "wg-oci-runtime" || n.starts_with(crate::runtime::BOUND_NAME_PREFIX))
}

fn describe(entry: &Value) -> String {
    match entry["path"].as_str() {
        Some(path) => format!("runs {path}"),
        None => format!("is {entry}"),
    }
}

fn read(path: &Path) -> Result<(Option<Vec<u8>>, Value), String> {
    let shown = path.display();
    let old = file::read(path)?;
    let daemon = match &old {
        Some(bytes) if !bytes.iter().all(u8::is_ascii_whitespace) => {
            serde_json::from_slice(bytes).map_err(|e| format!("{shown}: {e}"))?
        }
        _ => json!({}),
    };
    if !daemon.is_object() {
        return Err(format!("{shown}: not a JSON object"));
    }
    Ok((old, daemon))
}

fn text(daemon: &Value) -> Vec<u8> {
    (serde_json::to_string_pretty(daemon).expect("serializable") + "\n").into_bytes()
}

/// Merges `runtimes.NAME` into a daemon.json document; returns whether an entry of that name was replaced. An
/// entry of that name that runs something else is refused.
pub fn merge_runtime(
    daemon: &mut Value,
    name: &str,
    path: &Path,
    runtime_args: &[String],
) -> Result<bool, String> {
    let root = daemon
        .as_object_mut()
        .ok_or("daemon.json is not a JSON object")?;
    let runtimes = root
        .entry("runtimes")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or("runtimes is not an object")?;
    if let Some(old) = runtimes.get(name).filter(|old| !is_ours(old)) {
        return Err(format!(
            "runtime {name:?} {}, not wg-oci-runtime: left alone; choose another --name",
            describe(old)
        ));
    }
    let mut entry = json!({ "path": path.to_string_lossy() });
    if !runtime_args.is_empty() {
        entry["runtimeArgs"] = json!(runtime_args);
    }
    Ok(runtimes.insert(name.to_owned(), entry).is_some())
}

/// Removes `runtimes.NAME` (and `runtimes`, left empty); whether there was one. Refused for an entry that is not
/// ours, and for the runtime daemon.json makes the default (dockerd would not start).
pub fn remove_runtime(daemon: &mut Value, name: &str) -> Result<bool, String> {
    let Some(root) = daemon.as_object_mut() else {
        return Err("daemon.json is not a JSON object".into());
    };
    let Some(runtimes) = root.get_mut("runtimes") else {
        return Ok(false);
    };
    let runtimes = runtimes
        .as_object_mut()
        .ok_or("runtimes is not an object")?;
    let Some(old) = runtimes.get(name) else {
        return Ok(false);
    };
    if !is_ours(old) {
        return Err(format!(
            "runtime {name:?} {}, not wg-oci-runtime: left alone",
            describe(old)
        ));
    }
    if root.get("default-runtime").and_then(Value::as_str) == Some(name) {
        return Err(format!(
            "runtime {name:?} is the default-runtime: set another default first (dockerd would not start)"
        ));
    }
    let runtimes = root["runtimes"].as_object_mut().expect("checked above");
    runtimes.shift_remove(name);
    if runtimes.is_empty() {
        root.shift_remove("runtimes");
    }
    Ok(true)
}

pub fn install(
    daemon_json: &Path,
    name: &str,
    runtime: &Path,
    runtime_args: &[String],
) -> Result<Change, String> {
    let (old, mut daemon) = read(daemon_json)?;
    let existed = merge_runtime(&mut daemon, name, runtime, runtime_args)
        .map_err(|e| format!("{}: {e}", daemon_json.display()))?;
    Ok(Change {
        edit: Edit {
            path: daemon_json.to_owned(),
            old,
            new: Some(text(&daemon)),
            backup: true,
        },
        existed,
    })
}

pub fn uninstall(daemon_json: &Path, name: &str) -> Result<Change, String> {
    let (old, mut daemon) = read(daemon_json)?;
    let existed =
        remove_runtime(&mut daemon, name).map_err(|e| format!("{}: {e}", daemon_json.display()))?;
    let new = if existed {
        Some(text(&daemon))
    } else {
        old.clone()
    };
    Ok(Change {
        edit: Edit {
            path: daemon_json.to_owned(),
            old,
            new,
            backup: true,
        },
        existed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_runtimes_merge_into_what_is_there() {
        let mut daemon = json!({
            "log-driver": "journald",
            "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}},
            "default-runtime": "runc"
        });
        let args = ["--wg-profile=pia".to_owned()];
        let replaced = merge_runtime(
            &mut daemon,
            "wg-pia",
            Path::new("/usr/local/bin/wg-oci-runtime"),
            &args,
        )
        .unwrap();
        assert!(!replaced);
        assert_eq!(daemon["log-driver"], "journald");
        assert_eq!(daemon["default-runtime"], "runc");
        assert_eq!(
            daemon["runtimes"]["nvidia"]["path"],
            "nvidia-container-runtime"
        );
        assert_eq!(
            daemon["runtimes"]["wg-pia"],
            json!({"path": "/usr/local/bin/wg-oci-runtime", "runtimeArgs": ["--wg-profile=pia"]})
        );
        let keys: Vec<&String> = daemon.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["log-driver", "runtimes", "default-runtime"],
            "order kept"
        );
        let moved = Path::new("/opt/bin/wg-oci-runtime");
        assert!(merge_runtime(&mut daemon, "wg-pia", moved, &[]).unwrap());
        assert_eq!(
            daemon["runtimes"]["wg-pia"],
            json!({"path": "/opt/bin/wg-oci-runtime"})
        );
        // Someone else's runtime of that name is not taken over.
        let e = merge_runtime(&mut daemon, "nvidia", moved, &[]).unwrap_err();
        assert!(e.contains("runs nvidia-container-runtime"), "{e}");
        assert!(merge_runtime(&mut json!([]), "wg", moved, &[]).is_err());
    }

    #[test]
    fn removing_gives_back_what_was_there() {
        let original = json!({"log-level": "warn", "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}});
        let mut daemon = original.clone();
        let runtime = Path::new("/usr/local/bin/wg-oci-runtime");
        merge_runtime(&mut daemon, "wg", runtime, &[]).unwrap();
        assert!(remove_runtime(&mut daemon, "wg").unwrap());
        assert_eq!(daemon, original);
        assert!(!remove_runtime(&mut daemon, "wg").unwrap());
        let e = remove_runtime(&mut daemon, "nvidia").unwrap_err();
        assert!(e.contains("left alone"), "{e}");

        // `runtimes` goes when it was ours alone.
        let mut daemon = json!({"log-level": "warn"});
        merge_runtime(&mut daemon, "wg", runtime, &[]).unwrap();
        assert!(remove_runtime(&mut daemon, "wg").unwrap());
        assert_eq!(daemon, json!({"log-level": "warn"}));

        // Not the default runtime: dockerd would not start.
        let mut daemon = json!({"default-runtime": "wg"});
        merge_runtime(&mut daemon, "wg", runtime, &[]).unwrap();
        let e = remove_runtime(&mut daemon, "wg").unwrap_err();
        assert!(e.contains("default-runtime"), "{e}");
    }
}
