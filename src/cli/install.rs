//! `wg-oci-hook install hooks|docker|containerd`: registering the hook with each engine.
//!
//! - podman, CRI-O, Buildah: two files in hooks.d (`/usr/share/containers/oci/hooks.d`).
//! - Docker: a `runtimes` entry in /etc/docker/daemon.json pointing at `wg-oci-runtime`, merged into what is
//!   there (every other key and runtime is kept).
//! - containerd (and Kubernetes through it): a runtime entry whose `BinaryName` is `wg-oci-runtime` and whose
//!   `pod_annotations` pass `wg.*` through; printed as TOML to add to config.toml, since containerd's config
//!   is the operator's to edit. runc.v2 options pass the binary no arguments, so a profile is bound by a link
//!   `wg-oci-runtime@PROFILE` (which this creates) whose name the wrapper reads.

use super::args::Engine;
use crate::runtime::BOUND_NAME_PREFIX;
use serde_json::{json, Map, Value};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The hooks.d registration for one stage (`createRuntime` or `poststop`).
pub fn hooks_d_entry(hook: &Path, policy: Option<&Path>, stage: &str) -> Value {
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

/// The runtime's name and its `runtimeArgs`.
fn runtime_name_and_args(
    name: Option<&str>,
    profile: Option<&str>,
    policy: Option<&Path>,
) -> (String, Vec<String>) {
    let name = match (name, profile) {
        (Some(n), _) => n.to_owned(),
        (None, Some(p)) => format!("wg-{p}"),
        (None, None) => "wg".to_owned(),
    };
    let mut args = Vec::new();
    if let Some(p) = profile {
        args.push(format!("--wg-profile={p}"));
    }
    if let Some(p) = policy {
        args.push(format!("--wg-policy={}", p.display()));
    }
    (name, args)
}

/// Replaces an engine's config file with `bytes`, keeping its mode and owner, after copying it to a timestamped
/// backup beside it (same mode): the operator's file is theirs, and its mode may guard secrets (registry
/// credentials, TLS keys). None when the file already holds `bytes` (nothing written, no backup); else the backup
/// made, if there was a file.
fn write_keeping_owner_and_mode(path: &Path, bytes: &[u8]) -> io::Result<Option<Option<PathBuf>>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let (old, meta) = match (fs::read(path), fs::metadata(path)) {
        (Ok(old), Ok(meta)) => (Some(old), Some(meta)),
        (Err(e), _) | (_, Err(e)) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => (None, None),
    };
    if old.as_deref() == Some(bytes) {
        return Ok(None);
    }
    let mode = meta.as_ref().map_or(0o644, |m| m.mode() & 0o7777);
    let backup = match &old {
        Some(old) => {
            let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string()
                .replace([':', '-'], "");
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("config");
            let backup = path.with_file_name(format!("{name}.wg-oci-hook-{stamp}.bak"));
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&backup)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("backup {}: {e}", backup.display()))
                })?;
            io::Write::write_all(&mut file, old)?;
            // The umask may have taken bits away.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            file.sync_all()?;
            Some(backup)
        }
        None => None,
    };
    crate::sys::atomic_file::write(path, bytes, mode)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    if let Some(meta) = meta {
        std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(Some(backup))
}

/// Merges `runtimes.NAME` into a daemon.json document; returns whether an entry of that name was replaced.
pub fn merge_docker_runtime(
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
        .ok_or("daemon.json: runtimes is not an object")?;
    let mut entry = json!({ "path": path.to_string_lossy() });
    if !runtime_args.is_empty() {
        entry["runtimeArgs"] = json!(runtime_args);
    }
    Ok(runtimes.insert(name.to_owned(), entry).is_some())
}

/// The TOML to add to containerd's config.toml (version 2) for a runtime running `binary` (wg-oci-runtime, or a
/// link to it named for the profile it binds).
pub fn containerd_snippet(name: &str, binary: &Path, profile: Option<&str>) -> String {
    let plugin = "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes";
    let bound = match profile {
        Some(p) => format!(
            "# BinaryName is a link to wg-oci-runtime whose name enables every container with profile {p:?}\n"
        ),
        None => "# containers annotated wg.enable get a tunnel\n".to_owned(),
    };
    format!(
        "# wg-oci-hook: containers of RuntimeClass handler {name:?} run through wg-oci-runtime\n{bound}\
         [{plugin}.{name}]\n  runtime_type = \"io.containerd.runc.v2\"\n  \
         # pass the pods' wg.* annotations on to the OCI spec\n  pod_annotations = [\"wg.*\"]\n  \
         container_annotations = [\"wg.*\"]\n[{plugin}.{name}.options]\n  BinaryName = \"{}\"\n",
        binary.display()
    )
}

/// Creates (or replaces, atomically) `wg-oci-runtime@PROFILE` beside `runtime`: a link to it, relative so the two
/// move together. wg-oci-runtime reads the profile from the name it was run under.
pub fn bind_profile_link(runtime: &Path, profile: &str) -> io::Result<PathBuf> {
    let dir = runtime.parent().unwrap_or(Path::new("."));
    let target = runtime
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let name = format!("{BOUND_NAME_PREFIX}{profile}");
    let link = dir.join(&name);
    if fs::read_link(&link).is_ok_and(|t| t == Path::new(target)) {
        return Ok(link);
    }
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, &link).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(link)
}

fn beside_me(name: &str) -> io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(name))
}

/// What `install ENGINE` does: a message for the operator.
fn install(
    engine: &Engine,
    policy: Option<&Path>,
    profile: Option<&str>,
) -> Result<String, String> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: io::Error| format!("{what}: {e}")
    };
    match engine {
        Engine::Hooks(args) => {
            if profile.is_some() {
                return Err(
                    "--profile: hooks.d enables containers by their annotations; bind a profile \
                            with wg.profile or the policy's default instead"
                        .into(),
                );
            }
            let dir = &args.dir;
            let hook = beside_me("wg-oci-hook").map_err(io("finding wg-oci-hook"))?;
            fs::create_dir_all(dir).map_err(io(&dir.display().to_string()))?;
            let mut written = Vec::new();
            for (stage, file) in [
                ("createRuntime", "wg-oci-hook-create-runtime.json"),
                ("poststop", "wg-oci-hook-poststop.json"),
            ] {
                let path = dir.join(file);
                let text = serde_json::to_string_pretty(&hooks_d_entry(&hook, policy, stage))
                    .expect("serializable")
                    + "\n";
                crate::sys::atomic_file::write(&path, text.as_bytes(), 0o644)
                    .map_err(io(&path.display().to_string()))?;
                written.push(path.display().to_string());
            }
            Ok(format!("wrote {}", written.join(" and ")))
        }
        Engine::Docker(args) => {
            let path = &args.daemon_json;
            let shown = path.display().to_string();
            let mut daemon = match fs::read(path) {
                Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => json!({}),
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{shown}: {e}"))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => json!({}),
                Err(e) => return Err(format!("{shown}: {e}")),
            };
            let runtime = beside_me("wg-oci-runtime").map_err(io("finding wg-oci-runtime"))?;
            let (name, runtime_args) = runtime_name_and_args(args.name.as_deref(), profile, policy);
            let replaced = merge_docker_runtime(&mut daemon, &name, &runtime, &runtime_args)
                .map_err(|e| format!("{shown}: {e}"))?;
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io(&dir.display().to_string()))?;
            }
            let text = serde_json::to_string_pretty(&daemon).expect("serializable") + "\n";
            let Some(backup) = write_keeping_owner_and_mode(path, text.as_bytes())
                .map_err(|e| format!("{shown}: {e}"))?
            else {
                return Ok(format!(
                    "runtime {name:?} in {shown} is already as it would be written: nothing changed"
                ));
            };
            let backup = match backup {
                Some(backup) => format!(" (the previous file is {})", backup.display()),
                None => String::new(),
            };
            Ok(format!(
                "{} runtime {name:?} in {shown}{backup}; restart dockerd, then: docker run --runtime {name} ...",
                if replaced { "replaced" } else { "added" }
            ))
        }
        Engine::Containerd(args) => {
            if policy.is_some() {
                return Err("--policy cannot reach wg-oci-runtime (containerd passes it no arguments): set \
                            WG_OCI_HOOK_POLICY in containerd's environment instead"
                    .into());
            }
            let runtime = beside_me("wg-oci-runtime").map_err(io("finding wg-oci-runtime"))?;
            let (name, _) = runtime_name_and_args(args.name.as_deref(), profile, None);
            let binary = match profile {
                Some(profile) => bind_profile_link(&runtime, profile)
                    .map_err(io(&format!("linking {BOUND_NAME_PREFIX}{profile}")))?,
                None => runtime,
            };
            Ok(containerd_snippet(&name, &binary, profile))
        }
    }
}

/// `wg-oci-hook install ENGINE` or, with `uninstall`, `wg-oci-hook uninstall ENGINE`.
pub fn run(
    engine: &Engine,
    uninstall: bool,
    policy: Option<&Path>,
    profile: Option<&str>,
) -> std::process::ExitCode {
    let verb = if uninstall { "uninstall" } else { "install" };
    let what = match engine {
        Engine::Hooks(_) => "hooks",
        Engine::Docker(_) => "docker",
        Engine::Containerd(_) => "containerd",
    };
    let result = if uninstall {
        Err("not yet".to_owned())
    } else {
        install(engine, policy, profile)
    };
    match result {
        Ok(message) => {
            println!("{}", message.trim_end());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wg-oci-hook: {verb} {what}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_hooks_d_files_are_what_install_writes() {
        for (stage, file) in [
            ("createRuntime", "wg-oci-hook-create-runtime.json"),
            ("poststop", "wg-oci-hook-poststop.json"),
        ] {
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
                hooks_d_entry(Path::new("/usr/local/bin/wg-oci-hook"), None, stage),
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
    fn docker_runtimes_merge_into_what_is_there() {
        let mut daemon = json!({
            "log-driver": "journald",
            "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}},
            "default-runtime": "runc"
        });
        let (name, args) = runtime_name_and_args(None, Some("pia"), None);
        assert_eq!(name, "wg-pia");
        let replaced = merge_docker_runtime(
            &mut daemon,
            &name,
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
        assert!(merge_docker_runtime(&mut daemon, "wg-pia", Path::new("/x"), &[]).unwrap());
        assert_eq!(daemon["runtimes"]["wg-pia"], json!({"path": "/x"}));
        assert!(merge_docker_runtime(&mut json!([]), "wg", Path::new("/x"), &[]).is_err());
    }

    #[test]
    fn containerd_snippet_names_the_binary_and_passes_annotations() {
        let s = containerd_snippet("wg", Path::new("/usr/local/bin/wg-oci-runtime"), None);
        assert!(
            s.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wg]"),
            "{s}"
        );
        assert!(
            s.contains("BinaryName = \"/usr/local/bin/wg-oci-runtime\""),
            "{s}"
        );
        assert!(s.contains("pod_annotations = [\"wg.*\"]"), "{s}");
        let parsed: toml::Table = toml::from_str(&s).unwrap();
        assert!(parsed.contains_key("plugins"));
        let s = containerd_snippet(
            "wg-vpn",
            Path::new("/usr/local/bin/wg-oci-runtime@vpn"),
            Some("vpn"),
        );
        let parsed: toml::Table = toml::from_str(&s).unwrap();
        assert_eq!(
            parsed["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["wg-vpn"]
                ["options"]["BinaryName"]
                .as_str(),
            Some("/usr/local/bin/wg-oci-runtime@vpn")
        );
    }

    #[test]
    fn a_containerd_profile_is_bound_by_a_link_named_for_it() {
        let dir = std::env::temp_dir().join(format!("wgoh-link-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let runtime = dir.join("wg-oci-runtime");
        fs::write(&runtime, "").unwrap();
        let link = bind_profile_link(&runtime, "vpn").unwrap();
        assert_eq!(link, dir.join("wg-oci-runtime@vpn"));
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("wg-oci-runtime"));
        // Again, and over a stale link: the same link, nothing else left in the dir.
        assert_eq!(bind_profile_link(&runtime, "vpn").unwrap(), link);
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/elsewhere", &link).unwrap();
        bind_profile_link(&runtime, "vpn").unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("wg-oci-runtime"));
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["wg-oci-runtime", "wg-oci-runtime@vpn"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
