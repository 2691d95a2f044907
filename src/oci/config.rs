//! The bundle's config.json: read once, the same way for the hook and the wrapper (not through a symlink, not
//! from a FIFO, at most 16 MiB), the few fields the hook needs, and the wrapper's atomic rewrite.
//!
//! Parsed leniently into minimal structs rather than oci-spec's types: oci-spec refuses config.json files with
//! capability names it does not know (youki#3723).

use super::cdi;
use crate::sys::{atomic_file, regular_file};
use serde::Deserialize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// `<bundle>/config.json` as read, with what a rewrite keeps of it.
pub struct ConfigFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    mode: u32,
}

impl ConfigFile {
    /// Neither the bundle directory nor its config.json may be a symlink: the engine makes both, so a link can
    /// only lead somewhere else. Components above the bundle may be links (a moved storage dir).
    pub fn read(bundle_dir: &Path) -> Result<ConfigFile, String> {
        let dir = regular_file::open_dir(bundle_dir)
            .map_err(|e| format!("bundle {}: {e}", bundle_dir.display()))?;
        let path = bundle_dir.join("config.json");
        let in_path = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let (file, meta) = regular_file::open_in(&dir, "config.json").map_err(|e| in_path(&e))?;
        let bytes = regular_file::read_capped(file, MAX_CONFIG_BYTES).map_err(|e| in_path(&e))?;
        Ok(ConfigFile {
            mode: meta.permissions().mode() & 0o7777,
            path,
            bytes,
        })
    }

    /// Replaces the file with `bytes` in one rename, keeping its mode.
    pub fn rewrite(&self, bytes: &[u8]) -> Result<(), String> {
        atomic_file::write(&self.path, bytes, self.mode)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawBundleConfig {
    #[serde(default)]
    root: Option<RawRoot>,
    #[serde(default)]
    mounts: Vec<RawMount>,
    #[serde(default)]
    linux: Option<RawLinux>,
    #[serde(default)]
    hooks: Option<RawHooks>,
}

#[derive(Debug, Default, Deserialize)]
struct RawHooks {
    #[serde(default, rename = "createRuntime")]
    create_runtime: Vec<RawHook>,
}

/// A hook entry: only what tells ours (`oci::cdi`); `env` and `timeout` are skipped.
#[derive(Debug, Default, Deserialize)]
struct RawHook {
    #[serde(default)]
    path: String,
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawLinux {
    #[serde(default)]
    namespaces: Vec<RawNamespace>,
}

#[derive(Debug, Deserialize)]
struct RawNamespace {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct RawRoot {
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
struct RawMount {
    destination: PathBuf,
    #[serde(default)]
    source: Option<PathBuf>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

/// What we need from the bundle: where the container's root file system is, and whether the engine
/// bind-mounts a resolv.conf of its own over the rootfs one.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub rootfs: PathBuf,
    pub resolv_conf_mount_source: Option<PathBuf>,
    /// The network namespace the engine had the container join (a pod's `/run/netns/...`, another
    /// container's `/proc/PID/ns/net`): a name for it that may outlive the container. Input, not truth: used
    /// only where it leads to the netns the container was seen in.
    pub netns_path: Option<PathBuf>,
    /// The devices of ours the container asked for (CDI, `oci::cdi`), read from its createRuntime hooks.
    pub devices: Vec<String>,
}

impl Bundle {
    /// Neither the bundle directory the state names nor its config.json may be a symlink: the engine makes both,
    /// so a link can only lead somewhere else. Components above the bundle may be links (a moved storage dir).
    pub fn load(bundle_dir: &Path) -> Result<Self, String> {
        let config = ConfigFile::read(bundle_dir)?;
        let path = config.path.display();
        let raw: RawBundleConfig =
            serde_json::from_slice(&config.bytes).map_err(|e| format!("{path}: {e}"))?;
        let root = raw.root.ok_or_else(|| format!("{path}: no root.path"))?;
        let rootfs = if root.path.is_absolute() {
            root.path
        } else {
            bundle_dir.join(root.path)
        };
        let resolv_conf_mount_source = raw
            .mounts
            .into_iter()
            .filter(|m| m.destination == Path::new("/etc/resolv.conf"))
            .filter(|m| {
                m.kind.as_deref() == Some("bind")
                    || m.options.iter().any(|o| o == "bind" || o == "rbind")
            })
            .filter_map(|m| m.source)
            .next_back();
        let netns_path = raw
            .linux
            .unwrap_or_default()
            .namespaces
            .into_iter()
            .find(|ns| ns.kind == "network")
            .and_then(|ns| ns.path)
            .filter(|path| path.is_absolute());
        let hooks = raw.hooks.unwrap_or_default().create_runtime;
        let devices = cdi::devices_in(hooks.iter().map(|h| (h.path.as_str(), h.args.as_slice())));
        Ok(Bundle {
            rootfs,
            resolv_conf_mount_source,
            netns_path,
            devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_finds_rootfs_and_resolv_conf_bind_source() {
        let dir = std::env::temp_dir().join(format!("wgoh-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"root":{"path":"rootfs"},"process":{"capabilities":{"bounding":["CAP_FUTURE"]}},
               "linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/run/netns/pod1"}]},
               "hooks":{"createRuntime":[{"path":"/usr/bin/wg-oci-hook","args":["wg-oci-hook","--cdi-device","vpn","create-runtime"]}],
                        "poststop":[{"path":"/usr/bin/wg-oci-hook","args":["wg-oci-hook","--cdi-device","other","poststop"]}]},
               "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                         {"destination":"/etc/resolv.conf","type":"bind","source":"/run/c/resolv.conf","options":["bind","rprivate"]}]}"#,
        )
        .unwrap();
        let b = Bundle::load(&dir).unwrap();
        assert_eq!(b.rootfs, dir.join("rootfs"));
        assert_eq!(
            b.resolv_conf_mount_source.as_deref(),
            Some(Path::new("/run/c/resolv.conf"))
        );
        assert_eq!(b.netns_path.as_deref(), Some(Path::new("/run/netns/pod1")));
        assert_eq!(b.devices, ["vpn"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bundle_refuses_a_symlinked_bundle_or_config_and_a_fifo() {
        let dir = std::env::temp_dir().join(format!("wgoh-bundle-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::fs::create_dir_all(dir.join("config-link")).unwrap();
        std::fs::create_dir_all(dir.join("fifo")).unwrap();
        std::fs::write(
            dir.join("real/config.json"),
            r#"{"root":{"path":"rootfs"}}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("bundle-link")).unwrap();
        std::os::unix::fs::symlink(
            dir.join("real/config.json"),
            dir.join("config-link/config.json"),
        )
        .unwrap();
        nix::unistd::mkfifo(
            &dir.join("fifo/config.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(Bundle::load(&dir.join("real")).is_ok());
        let err = |name: &str| Bundle::load(&dir.join(name)).unwrap_err();
        assert!(err("bundle-link").ends_with("bundle-link: is a symlink"));
        assert!(err("config-link").ends_with("config-link/config.json: is a symlink"));
        assert!(err("fifo").ends_with("fifo/config.json: not a regular file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
