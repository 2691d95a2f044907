//! The hook under test, as the lab configures and watches it: the policy it writes (profiles, TOML), the shipped
//! `hooks.d` registrations pointed at the built binary, the hook run directly with a crafted OCI state, and what
//! a container's tunnel leaves behind (records, links, daemons, sockets, helpers).

use super::command::{
    output_with_stdin, processes_mentioning, resolve_tool, CmdOutput, COMMAND_TIMEOUT_SECS,
};
use super::netns::{netns_path, ns_id};
use super::podman::{RunOpts, RunOutput};
use super::{write_file, Lab, HOOK_BIN, HOST_LINK_PREFIX, SETTLE};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// The policy TOML the lab writes; `Lab::policy()` gives the default, `Lab::write_policy` writes a variant.
#[derive(Clone, Debug)]
pub struct Policy {
    /// `default_profile`.
    pub default_profile: String,
    /// `interface`: the tunnel's name inside the container.
    pub interface: String,
    /// `state_dir`.
    pub state_dir: PathBuf,
    /// `backend`: kernel, userspace or auto.
    pub backend: String,
    /// `userspace_command`; empty for none (the built-in daemon).
    pub userspace_command: Vec<String>,
    /// `allowed_annotations`.
    pub allowed_annotations: Vec<String>,
    /// `log_level`; empty for none (the hook's default).
    pub log_level: String,
    /// `log`: where the hook's lines go; None for none (the hook's default, syslog).
    pub log: Option<String>,
    /// Further top-level `key = value` lines (raw TOML value text), written before the first profile table.
    pub extra_top: Vec<(String, String)>,
    /// The `[profiles.NAME]` tables, in order.
    pub profiles: Profiles,
}

/// The policy's profiles: a `Vec<LabProfile>` (through `Deref`) whose `push` also takes the older
/// `(name, config path)` tuple.
#[derive(Clone, Debug, Default)]
pub struct Profiles(pub Vec<LabProfile>);

impl Profiles {
    /// Appends a profile (a [`LabProfile`], or a `(String, PathBuf)` name and config path).
    pub fn push(&mut self, profile: impl Into<LabProfile>) {
        self.0.push(profile.into());
    }
}

impl std::ops::Deref for Profiles {
    type Target = Vec<LabProfile>;
    fn deref(&self) -> &Vec<LabProfile> {
        &self.0
    }
}

impl std::ops::DerefMut for Profiles {
    fn deref_mut(&mut self) -> &mut Vec<LabProfile> {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a Profiles {
    type Item = &'a LabProfile;
    type IntoIter = std::slice::Iter<'a, LabProfile>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<Vec<LabProfile>> for Profiles {
    fn from(v: Vec<LabProfile>) -> Self {
        Profiles(v)
    }
}

/// One `[profiles.NAME]` table: `config = "PATH"`, then every `extra` as `key = value` (raw TOML value text).
#[derive(Clone, Debug)]
pub struct LabProfile {
    /// The profile's name (`[profiles.NAME]`).
    pub name: String,
    /// The wg-quick config file (`config = "PATH"`).
    pub config: PathBuf,
    /// Further keys of this profile: (key, raw TOML value text such as `true` or `["10.0.0.0/8"]`).
    pub extra: Vec<(String, String)>,
}

impl From<(String, PathBuf)> for LabProfile {
    fn from((name, config): (String, PathBuf)) -> Self {
        LabProfile::new(&name, config)
    }
}

impl LabProfile {
    /// A profile `name` using the wg-quick file `config`, without further keys.
    pub fn new(name: &str, config: impl Into<PathBuf>) -> Self {
        LabProfile {
            name: name.to_owned(),
            config: config.into(),
            extra: Vec::new(),
        }
    }

    /// A profile `name` without a config file, whose tunnel comes from `provider` (`provider = "pia"`).
    pub fn provider(name: &str, provider: &str) -> Self {
        LabProfile::new(name, PathBuf::new()).with("provider", &toml_str(provider))
    }

    /// Adds `key = raw_value` to this profile (`raw_value` is TOML value text, written verbatim).
    pub fn with(mut self, key: &str, raw_value: &str) -> Self {
        self.extra.push((key.to_owned(), raw_value.to_owned()));
        self
    }
}

impl Policy {
    /// The policy as TOML text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s += &format!("default_profile = {}\n", toml_str(&self.default_profile));
        s += &format!("interface = {}\n", toml_str(&self.interface));
        s += &format!(
            "state_dir = {}\n",
            toml_str(&self.state_dir.to_string_lossy())
        );
        s += &format!("backend = {}\n", toml_str(&self.backend));
        if !self.userspace_command.is_empty() {
            s += &format!(
                "userspace_command = {}\n",
                toml_list(&self.userspace_command)
            );
        }
        s += &format!(
            "allowed_annotations = {}\n",
            toml_list(&self.allowed_annotations)
        );
        if !self.log_level.is_empty() {
            s += &format!("log_level = {}\n", toml_str(&self.log_level));
        }
        if let Some(log) = &self.log {
            s += &format!("log = {}\n", toml_str(log));
        }
        for (key, value) in &self.extra_top {
            s += &format!("{key} = {value}\n");
        }
        for profile in &self.profiles {
            s += &format!("\n[profiles.{}]\n", profile.name);
            // A provider profile has no config file (see `LabProfile::provider`).
            if !profile.config.as_os_str().is_empty() {
                s += &format!("config = {}\n", toml_str(&profile.config.to_string_lossy()));
            }
            for (key, value) in &profile.extra {
                s += &format!("{key} = {value}\n");
            }
        }
        s
    }
}

impl Lab {
    /// Replaces the default profile's config (`lab.conf`, mode 0600).
    pub fn write_config(&self, text: &str) {
        write_file(&self.config_path, text, 0o600);
    }

    /// The default policy: one profile `lab` using `lab.conf`, userspace backend, `wg.profile` allowed, the
    /// hook's lines (debug and up) on its stderr, where the tests read them (and never in the machine's log).
    pub fn policy(&self) -> Policy {
        Policy {
            default_profile: "lab".to_owned(),
            interface: "wg0".to_owned(),
            state_dir: self.state_dir.clone(),
            backend: "userspace".to_owned(),
            userspace_command: Vec::new(),
            allowed_annotations: vec!["wg.profile".to_owned()],
            log_level: "debug".to_owned(),
            log: Some("stderr".to_owned()),
            extra_top: Vec::new(),
            profiles: vec![LabProfile::new("lab", &self.config_path)].into(),
        }
    }

    pub fn write_policy(&self, policy: &Policy) {
        write_file(&self.policy_path, &policy.render(), 0o600);
    }

    /// The shipped `hooks.d/*.json`, with `hook.path` set to the built binary and `--policy <lab policy>`
    /// appended to `hook.args`; everything else as shipped.
    pub(super) fn write_hooks(&self) {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.hooks_dir)
            .unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks.d");
        let mut n = 0;
        for name in [
            "wg-oci-hook-create-runtime.json",
            "wg-oci-hook-poststop.json",
        ] {
            let path = shipped.join(name);
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let mut v: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let hook = v
                .get_mut("hook")
                .and_then(|h| h.as_object_mut())
                .expect("hook object");
            hook.insert("path".into(), HOOK_BIN.into());
            let args = hook
                .entry("args")
                .or_insert_with(|| serde_json::json!([HOOK_BIN]));
            let args = args.as_array_mut().expect("hook.args is an array");
            args.push("--policy".into());
            args.push(self.policy_path.to_string_lossy().into_owned().into());
            write_file(
                &self.hooks_dir.join(name),
                &serde_json::to_string_pretty(&v).unwrap(),
                0o600,
            );
            n += 1;
        }
        assert_eq!(n, 2);
    }

    /// Polls for the state record of `cid` (up to 5 s) and returns its text.
    pub fn wait_for_record(&self, cid: &str) -> Option<String> {
        let path = self.record_path(cid);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = fs::read_to_string(&path) {
                return Some(text);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The record of `cid`'s tunnel (`tunnels/KEY.json`, through its membership file, or the key seen
    /// before once the membership is gone); `members/CID`, which does not exist, for a container never seen
    /// on a tunnel.
    pub fn record_path(&self, cid: &str) -> PathBuf {
        match self.tunnel_key_of(cid) {
            Some(key) => self.state_dir.join(format!("tunnels/{key}.json")),
            None => self.state_dir.join("members").join(cid),
        }
    }

    /// The key (netns identity) of `cid`'s tunnel, from its membership file, remembered once seen.
    pub fn tunnel_key_of(&self, cid: &str) -> Option<String> {
        let mut known = self.known_keys.lock().unwrap();
        if let Some((_, key)) = known.iter().find(|(id, _)| id == cid) {
            return Some(key.clone());
        }
        let key = fs::read_to_string(self.state_dir.join("members").join(cid)).ok()?;
        known.push((cid.to_owned(), key.clone()));
        Some(key)
    }

    /// Remembers `key` as the tunnel key of `cid`, as `tunnel_key_of` does once it saw it: for the harness's own
    /// test of a netns identity the kernel gave to another lab's container after this lab's was gone.
    pub fn remember_tunnel_key(&self, cid: &str, key: &str) {
        self.known_keys
            .lock()
            .unwrap()
            .push((cid.to_owned(), key.to_owned()));
    }

    /// A bundle dir with a config.json carrying `annotations`, and the OCI state JSON runc would send at
    /// createRuntime for a container whose init is `pid`.
    pub fn fake_state(&self, id: &str, pid: u32, annotations: &[(&str, &str)]) -> String {
        let bundle = self.dir.join(format!("bundle-{id}"));
        fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let ann: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": { "path": "rootfs" },
            "process": { "args": ["/bin/sh"], "cwd": "/" },
            "annotations": ann,
            "linux": { "namespaces": [ { "type": "network" }, { "type": "mount" } ] }
        });
        write_file(&bundle.join("config.json"), &config.to_string(), 0o600);
        serde_json::json!({
            "ociVersion": "1.0.2",
            "id": id,
            "status": "creating",
            "pid": pid,
            "bundle": bundle.to_string_lossy(),
            "annotations": ann,
        })
        .to_string()
    }

    /// Runs the hook binary itself in the lab's host netns with `args`, `stdin`, and an EMPTY environment
    /// (as runc may start it), bounded by a timeout.
    pub fn run_hook_direct(&self, args: &[&str], stdin: &str) -> CmdOutput {
        self.run_hook_direct_env(args, stdin, &[])
    }

    /// `run_hook_direct` with `env` as the hook's whole environment.
    pub fn run_hook_direct_env(
        &self,
        args: &[&str],
        stdin: &str,
        env: &[(&str, &str)],
    ) -> CmdOutput {
        let mut argv: Vec<String> = vec![
            "/usr/bin/timeout".into(),
            COMMAND_TIMEOUT_SECS.to_string(),
            resolve_tool("nsenter").unwrap_or_else(|| "/usr/bin/nsenter".into()),
            format!("--net={}", netns_path(&self.host_ns)),
            HOOK_BIN.into(),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(env.iter().copied())
            .current_dir("/");
        let out = output_with_stdin(cmd, stdin.as_bytes(), &argv.join(" "));
        self.log(&out);
        out
    }

    /// `run_hook_direct` in a mount namespace of its own (private: nothing mounted there reaches the machine's),
    /// where the shell script `setup` runs first as root (PATH set, `set -e`): mounts that only this hook, and
    /// the daemon it starts, see. They go with the last process in the namespace.
    pub fn run_hook_in_mount_ns(&self, setup: &str, args: &[&str], stdin: &str) -> CmdOutput {
        let tool = |name: &str| resolve_tool(name).unwrap_or_else(|| panic!("{name} is missing"));
        let script = format!(
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n{setup}\nexec \"$@\""
        );
        let mut argv: Vec<String> = vec![
            "/usr/bin/timeout".into(),
            COMMAND_TIMEOUT_SECS.to_string(),
            tool("unshare"),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            tool("sh"),
            "-ec".into(),
            script,
            "sh".into(),
            tool("nsenter"),
            format!("--net={}", netns_path(&self.host_ns)),
            HOOK_BIN.into(),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        // The script's PATH is a shell variable, not exported: the hook gets an empty environment, as from runc.
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env_clear().current_dir("/");
        let out = output_with_stdin(cmd, stdin.as_bytes(), &argv.join(" "));
        self.log(&out);
        out
    }

    /// Makes teardown treat `id` like a container this lab ran: whatever is left under its names is killed
    /// when the lab is dropped (for tests that run the hook directly).
    pub fn track_container_id(&self, id: &str) {
        self.seen_cids.lock().unwrap().push(id.to_owned());
    }

    /// The host link name of `cid`'s tunnel, from its record (the hook picks it at random), remembered once seen
    /// so that it is still known after poststop removed the record.
    pub fn host_link_of(&self, cid: &str) -> Option<String> {
        let mut known = self.known_links.lock().unwrap();
        if let Some((_, name)) = known.iter().find(|(id, _)| id == cid) {
            return Some(name.clone());
        }
        let name = record_host_link(&self.record_path(cid))?;
        known.push((cid.to_owned(), name.clone()));
        Some(name)
    }

    /// The hook's userspace daemons in this lab's host netns: (pid, argv, the `wgo*` name in their argv).
    pub fn hook_daemons(&self) -> Vec<(u32, String, String)> {
        let Some(host) = ns_id(&netns_path(&self.host_ns)) else {
            return Vec::new();
        };
        processes_mentioning(HOST_LINK_PREFIX)
            .into_iter()
            .filter(|(pid, _)| ns_id(&format!("/proc/{pid}/ns/net")) == Some(host))
            .filter_map(|(pid, argv)| {
                let name = argv
                    .split(' ')
                    .find(|a| a.starts_with(HOST_LINK_PREFIX))?
                    .to_owned();
                Some((pid, argv, name))
            })
            .collect()
    }

    /// What of container `cid`'s tunnel still exists; empty when nothing does. Its link name comes from its
    /// record (see `host_link_of`); besides, any `wgo*` link in the lab's host netns, and any hook daemon there
    /// that no other container's live record names, counts.
    pub fn leftovers(&self, cid: &str) -> Vec<String> {
        let name = self.host_link_of(cid);
        let mut found = Vec::new();
        for link in self.host_links() {
            if link.starts_with(HOST_LINK_PREFIX) {
                found.push(format!("link {link} in the host netns {}", self.host_ns));
            }
        }
        let key = self.tunnel_key_of(cid);
        let own_record = key.as_ref().map(|k| format!("{k}.json"));
        let others: Vec<String> = fs::read_dir(self.state_dir.join("tunnels"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| Some(e.file_name().to_string_lossy().into_owned()) != own_record)
            .filter_map(|e| record_host_link(&e.path()))
            .collect();
        let mut sockets: Vec<String> = name.iter().cloned().collect();
        for (pid, argv, daemon_name) in self.hook_daemons() {
            if !others.contains(&daemon_name) {
                found.push(format!("process {pid}: {argv}"));
                sockets.push(daemon_name);
            }
        }
        for (pid, argv) in key.iter().flat_map(|k| supervisors(k)) {
            found.push(format!("supervisor {pid}: {argv}"));
        }
        for name in sockets {
            let sock = Path::new("/var/run/wireguard").join(format!("{name}.sock"));
            if sock.exists() {
                found.push(format!("UAPI socket {}", sock.display()));
            }
        }
        let record = self.record_path(cid);
        if record.exists() {
            found.push(format!("state record {}", record.display()));
        }
        for file in state_files(&self.state_dir) {
            let relative = file.strip_prefix(&self.state_dir).unwrap_or(&file);
            let name = format!("/{}", relative.display());
            let content = fs::read_to_string(&file).unwrap_or_default();
            let names_it = |s: &str| {
                name.contains(s)
                    || (name.contains("/leases/")
                        && !name.ends_with(".lock")
                        && content.trim() == s)
            };
            if Some(&file) != Some(&record)
                && (names_it(cid) || key.as_deref().is_some_and(names_it) || name.contains("tmp"))
            {
                found.push(format!("stray file {}", file.display()));
            }
        }
        found
    }

    /// Nothing of `cid`'s tunnel is left (waiting up to 10 s for teardown that the kernel does asynchronously):
    /// no `wgo*` link in the host netns, no hook daemon there that is not another live container's, no UAPI
    /// socket of its name, no record and no temp file in the state dir.
    #[track_caller]
    pub fn assert_nothing_left(&self, cid: &str) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let left = self.leftovers(cid);
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "container {cid} (host link {}) left behind, {} s after it ended:\n  {}\n=== lab transcript ===\n{}",
                    self.host_link_of(cid).as_deref().unwrap_or("unknown"),
                    SETTLE.as_secs(),
                    left.join("\n  "),
                    self.transcript()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The hook's error line for a refused container: podman must fail, relay
/// `wg-oci-hook: container <cid>: <step>: <cause>` containing every `needle`, and leave nothing behind.
#[track_caller]
pub fn assert_refused(lab: &Lab, opts: &RunOpts, needles: &[&str]) -> RunOutput {
    let run = lab.podman_run(opts);
    assert!(!run.success(), "podman run should have failed\n{run}");
    let cid = run.cid().to_owned();
    let line = run.hook_error_line().unwrap_or_else(|| {
        panic!("podman's stderr lacks the hook's line `wg-oci-hook: container {cid}: ...`\n{run}")
    });
    println!("refused as expected: {line}");
    for needle in needles {
        assert!(
            line.contains(needle),
            "the hook's error line should name `{needle}`:\n  {line}\n{run}"
        );
    }
    lab.assert_nothing_left(&cid);
    run
}

/// The supervisors of the tunnel `key` (`wg-oci-hook ... supervise KEY`): one while it lives.
pub fn supervisors(key: &str) -> Vec<(u32, String)> {
    processes_mentioning(key)
        .into_iter()
        .filter(|(_, argv)| argv.split(' ').any(|a| a == "supervise"))
        .collect()
}

/// Every file under the state dir, its subdirectories' included.
pub fn state_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            files.extend(state_files(&e.path()));
        } else {
            files.push(e.path());
        }
    }
    files
}

/// The `host_link` of the record at `path`, if it holds one.
pub(super) fn record_host_link(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let record: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(record["host_link"].as_str()?.to_owned())
}

/// `s` as a TOML basic string (quotes, backslashes and control characters escaped).
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(super) fn toml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| toml_str(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
