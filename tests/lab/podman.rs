//! Podman for the lab: its argv (the lab's storage, run root, tmp dir, runtime and hooks dir), a containers.conf
//! of the lab's own (networks under the lab dir, and a netavark wrapper that gives it a run dir of the lab's
//! own, so each lab's aardvark-dns is its own), `podman run` in a fresh busybox rootfs, and what it printed.

use super::command::{is_executable, sh_quote, CmdOutput};
use super::hook::{toml_list, toml_str};
use super::netns::in_netns;
use super::{write_file, Lab};
use std::fmt;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

pub(super) const APPLETS: &[&str] = &[
    "sh", "ip", "cat", "ls", "ping", "ping6", "nc", "wget", "sleep", "echo", "grep", "sed", "head",
    "tail", "wc", "cut", "tr", "true", "false", "test", "env", "timeout", "nslookup",
];

/// Podman 4.3's default `helper_binaries_dir`, searched after the lab's own.
pub(super) const PODMAN_HELPER_DIRS: &[&str] = &[
    "/usr/local/libexec/podman",
    "/usr/local/lib/podman",
    "/usr/libexec/podman",
    "/usr/lib/podman",
];

/// The limits every `podman run` of the lab sets: runc may not raise podman's defaults here.
pub const PODMAN_ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// One `podman run`.
#[derive(Clone, Debug, Default)]
pub struct RunOpts {
    pub annotations: Vec<(String, String)>,
    /// Run as `/bin/sh -c SCRIPT` in the busybox rootfs.
    pub script: String,
    /// `-d`: return once the container started.
    pub detach: bool,
    /// Leave out `--rm`.
    pub keep: bool,
    /// Inserted before `--rootfs`.
    pub extra_args: Vec<String>,
    /// `--network NAME` (a network of this lab, see `Lab::bridge_network`); `None` is `--network none`.
    pub network: Option<String>,
    /// `--pod NAME` instead of any `--network` (a pod's members take its network namespace).
    pub pod: Option<String>,
    /// (lab file, machine path): podman (and so runc and the hook) runs in a mount namespace of its own where
    /// each lab file is bind-mounted over the machine path (e.g. a resolv.conf for the hook's resolver).
    pub binds: Vec<(PathBuf, String)>,
    /// `--runtime PATH` and an empty hooks dir instead of runc and the lab's hooks (see [`Lab::podman_via`]).
    pub via: Option<PathBuf>,
    /// CDI: podman reads the lab's CDI dir (`Lab::cdi_dir`, bind-mounted over /etc/cdi) for its specs.
    pub cdi: bool,
    /// An empty hooks dir instead of the lab's (a container that gets our hooks only from a CDI device).
    pub no_hooks_dir: bool,
}

impl RunOpts {
    /// A container that asks for a tunnel (`wg.enable=true`).
    pub fn wg(script: &str) -> Self {
        RunOpts::plain(script).annotation("wg.enable", "true")
    }

    /// A container without any `wg.*` annotation.
    pub fn plain(script: &str) -> Self {
        RunOpts {
            script: script.to_owned(),
            ..RunOpts::default()
        }
    }

    /// Adds the annotation `key=value`.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs with `-d`.
    pub fn detached(mut self) -> Self {
        self.detach = true;
        self
    }

    /// Attaches the container to the podman network `name` instead of `--network none`.
    pub fn network(mut self, name: &str) -> Self {
        self.network = Some(name.to_owned());
        self
    }

    /// Runs the container in the pod `name` (`--pod`, and no `--network`).
    pub fn in_pod(mut self, name: &str) -> Self {
        self.pod = Some(name.to_owned());
        self
    }

    /// Runs podman with the lab file `file` bind-mounted over `target` (see `RunOpts::binds`).
    pub fn bind(mut self, file: &Path, target: &str) -> Self {
        self.binds.push((file.to_owned(), target.to_owned()));
        self
    }

    /// `--device wg-oci-hook.dev/tunnel=PROFILE`, from the lab's CDI dir (see `Lab::install_cdi`).
    pub fn device(mut self, profile: &str) -> Self {
        self.extra_args.push("--device".into());
        self.extra_args
            .push(format!("wg-oci-hook.dev/tunnel={profile}"));
        self.cdi = true;
        self
    }

    /// With an empty hooks dir instead of the lab's hooks.d registration.
    pub fn without_hooks_dir(mut self) -> Self {
        self.no_hooks_dir = true;
        self
    }

    /// Runs podman with `runtime` and no hooks dir (see [`Lab::podman_via`]).
    pub fn via(mut self, runtime: &Path) -> Self {
        self.via = Some(runtime.to_owned());
        self
    }

    /// `podman run` and its arguments for these options, with `cidfile` and `rootfs`.
    fn run_args(&self, cidfile: &Path, rootfs: &Path) -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into()];
        if !self.keep {
            args.push("--rm".into());
        }
        if self.detach {
            args.push("-d".into());
        }
        args.extend(["--cidfile".into(), cidfile.to_string_lossy().into_owned()]);
        match &self.pod {
            Some(pod) => args.extend(["--pod".into(), pod.clone()]),
            None => args.extend([
                "--network".into(),
                self.network.as_deref().unwrap_or("none").to_owned(),
            ]),
        }
        args.extend(PODMAN_ULIMITS.map(String::from));
        // busybox ping needs a raw socket; podman's default capabilities lack NET_RAW.
        args.extend(["--cap-add".into(), "NET_RAW".into()]);
        for (k, v) in &self.annotations {
            args.push("--annotation".into());
            args.push(format!("{k}={v}"));
        }
        args.extend(self.extra_args.iter().cloned());
        args.push("--rootfs".into());
        args.push(rootfs.to_string_lossy().into_owned());
        args.extend(["/bin/sh".into(), "-c".into(), self.script.clone()]);
        args
    }
}

/// One `podman run`'s output, with the container id from the cidfile (podman writes it before starting).
#[derive(Clone, Debug)]
pub struct RunOutput {
    pub out: CmdOutput,
    pub cid: Option<String>,
    pub rootfs: PathBuf,
}

impl RunOutput {
    pub fn success(&self) -> bool {
        self.out.success()
    }

    #[track_caller]
    pub fn cid(&self) -> &str {
        match &self.cid {
            Some(cid) => cid,
            None => panic!("podman wrote no container id to the cidfile\n{self}"),
        }
    }

    #[track_caller]
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(self.success(), "{what}: podman run failed\n{self}");
        self
    }

    /// The hook's error line as podman relays it: from `wg-oci-hook: container <cid>: ` to the end of that line.
    pub fn hook_error_line(&self) -> Option<&str> {
        let needle = format!("wg-oci-hook: container {}: ", self.cid.as_deref()?);
        let start = self.out.stderr.find(&needle)?;
        let rest = &self.out.stderr[start..];
        Some(rest.lines().next().unwrap_or(rest))
    }
}

impl fmt::Display for RunOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "container id: {}",
            self.cid.as_deref().unwrap_or("(none)")
        )?;
        write!(f, "{}", self.out)
    }
}

impl Lab {
    /// A containers.conf of the lab's own, so the machine's config does not leak in and no two labs share
    /// podman's tmp dir, locks or network definitions (`<dir>/podman/networks`, never /etc/containers/networks).
    /// Podman finds netavark first in `<dir>/podman/helpers`: see `write_netavark_wrapper`.
    pub(super) fn write_containers_conf(&self) {
        let p = |s: &str| toml_str(&self.podman_dir.join(s).to_string_lossy());
        let mut helper_dirs = vec![self
            .podman_dir
            .join("helpers")
            .to_string_lossy()
            .into_owned()];
        helper_dirs.extend(PODMAN_HELPER_DIRS.iter().map(|d| d.to_string()));
        // The same limits for containers no `podman run` starts (a pod's infra container).
        let default_ulimits: Vec<String> = PODMAN_ULIMITS
            .iter()
            .filter(|a| !a.starts_with("--"))
            .map(|a| a.to_string())
            .collect();
        let text = format!(
            "[containers]\ndefault_sysctls = []\ndefault_ulimits = {}\n\n\
             [engine]\nlock_type = \"file\"\ntmp_dir = {}\nhelper_binaries_dir = {}\n\n\
             [network]\nnetwork_backend = \"netavark\"\nnetwork_config_dir = {}\n",
            toml_list(&default_ulimits),
            p("tmp"),
            toml_list(&helper_dirs),
            p("networks"),
        );
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.podman_dir)
            .unwrap();
        write_file(&self.podman_dir.join("containers.conf"), &text, 0o600);
        self.write_netavark_wrapper();
    }

    /// `<dir>/podman/helpers/netavark`: the real netavark with `--config <dir>/podman/netavark`. Rootful podman
    /// 4.3 always passes the machine-wide `/run/containers/networks`, where netavark keeps aardvark-dns's config
    /// and pid file: labs running in parallel would then share (and signal) one aardvark-dns in one lab's netns.
    pub(super) fn write_netavark_wrapper(&self) {
        let helpers = self.podman_dir.join("helpers");
        fs::DirBuilder::new().mode(0o700).create(&helpers).unwrap();
        let run_dir = self.netavark_run_dir();
        // netavark creates `aardvark-dns/` in it, but not the dir itself.
        fs::DirBuilder::new().mode(0o700).create(&run_dir).unwrap();
        let script = match find_podman_helper("netavark") {
            Some(real) => format!(
                "#!/bin/sh\n\
                 # The lab's netavark: the real one, with a run dir (aardvark-dns config, pid file, lock) of this lab's own.\n\
                 real={}\n\
                 dir={}\n\
                 prev=\n\
                 found=\n\
                 for a in \"$@\"; do\n\
                 \x20 shift\n\
                 \x20 case $prev in --config|-c) a=$dir; found=1 ;; esac\n\
                 \x20 case $a in --config=*) a=--config=$dir; found=1 ;; esac\n\
                 \x20 set -- \"$@\" \"$a\"\n\
                 \x20 prev=$a\n\
                 done\n\
                 [ -n \"$found\" ] || set -- --config \"$dir\" \"$@\"\n\
                 exec \"$real\" \"$@\"\n",
                sh_quote(&real),
                sh_quote(&run_dir.to_string_lossy())
            ),
            None => "#!/bin/sh\necho 'netavark not found: install the Debian package netavark' >&2\nexit 127\n"
                .to_owned(),
        };
        write_file(&helpers.join("netavark"), &script, 0o700);
    }

    /// Where the lab's netavark keeps aardvark-dns's config (`aardvark-dns/`) and lock.
    pub(super) fn netavark_run_dir(&self) -> PathBuf {
        self.podman_dir.join("netavark")
    }

    /// Runs podman in the lab's host netns with the lab's storage and containers.conf, then `args`. Its OCI
    /// runtime is runc with the lab's hooks dir, or with `via`, that runtime (a path) with an empty hooks dir (see
    /// [`Lab::podman_via`]). With `binds`, podman runs in a private mount namespace with each (lab file, machine
    /// path) bind-mounted (never on the machine's own view of those paths: the namespace ends with its last
    /// process).
    fn podman_cmd(
        &self,
        via: Option<&Path>,
        binds: &[(PathBuf, String)],
        args: &[&str],
    ) -> CmdOutput {
        self.podman_cmd_with(via, false, Mounts::Binds(binds), args)
    }

    /// [`Lab::podman_cmd`], with `no_hooks` an empty hooks dir whatever the runtime, and its mounts.
    fn podman_cmd_with(
        &self,
        via: Option<&Path>,
        no_hooks: bool,
        mounts: Mounts,
        args: &[&str],
    ) -> CmdOutput {
        let mut argv = self.podman_argv(via, no_hooks, mounts);
        argv.extend(args.iter().map(|s| s.to_string()));
        self.exec(&argv, &[("CONTAINERS_CONF", &self.containers_conf())])
    }

    fn containers_conf(&self) -> PathBuf {
        self.podman_dir.join("containers.conf")
    }

    /// The lab's podman command line up to its own arguments (see [`Lab::podman_cmd`]).
    fn podman_argv(&self, via: Option<&Path>, no_hooks: bool, mounts: Mounts) -> Vec<String> {
        let no_hooks_dir = || {
            let dir = self.dir.join("no-hooks.d");
            let _ = fs::DirBuilder::new().mode(0o700).create(&dir);
            dir
        };
        let (runtime, hooks_dir) = match via {
            None if no_hooks => ("runc".into(), no_hooks_dir()),
            None => ("runc".into(), self.hooks_dir.clone()),
            Some(runtime) => (runtime.to_string_lossy().into_owned(), no_hooks_dir()),
        };
        let mut argv: Vec<String> = Vec::new();
        let held = match mounts {
            Mounts::Binds(_) => None,
            Mounts::Cdi => Some(self.cdi_mount_ns()),
            Mounts::Held(pid) => Some(pid),
        };
        let binds = match mounts {
            Mounts::Binds(binds) => binds,
            Mounts::Cdi | Mounts::Held(_) => &[],
        };
        if let Some(pid) = held {
            argv.push("nsenter".into());
            argv.push(format!("--mount=/proc/{pid}/ns/mnt"));
        }
        if !binds.is_empty() {
            let mut script = String::new();
            for (file, target) in binds {
                script += &format!(
                    "mount --bind {} {} || exit 125\n",
                    sh_quote(&file.to_string_lossy()),
                    sh_quote(target)
                );
            }
            script += "exec \"$@\"\n";
            argv.extend(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c"].map(String::from),
            );
            argv.push(script);
            argv.push("sh".into());
        }
        let p = |s: &str| self.podman_dir.join(s).to_string_lossy().into_owned();
        let mut podman = in_netns(&self.host_ns, &["podman"]);
        if held.is_some() {
            // One nsenter enters both namespaces.
            podman.remove(0);
        }
        argv.extend(podman);
        for (flag, value) in [
            ("--root", p("root")),
            ("--runroot", p("rr")),
            ("--tmpdir", p("tmp")),
            ("--storage-driver", "vfs".into()),
            ("--cgroup-manager", "cgroupfs".into()),
            ("--runtime", runtime),
            ("--events-backend", "file".into()),
            ("--hooks-dir", hooks_dir.to_string_lossy().into_owned()),
        ] {
            argv.push(flag.into());
            argv.push(value);
        }
        argv
    }

    /// An executable script that is the lab's podman with CDI and an empty hooks dir, for tools that run `podman`
    /// themselves (podman-compose's `--podman-path`): it runs in the lab's CDI mount namespace (`cdi_mount_ns`).
    pub fn podman_with_cdi_script(&self) -> PathBuf {
        let path = self.dir.join("podman-cdi");
        let quoted: Vec<String> = self
            .podman_argv(None, true, Mounts::Cdi)
            .iter()
            .map(|a| sh_quote(a))
            .collect();
        let script = format!(
            "#!/bin/sh\nCONTAINERS_CONF={}\nexport CONTAINERS_CONF\nexec {} \"$@\"\n",
            sh_quote(&self.containers_conf().to_string_lossy()),
            quoted.join(" ")
        );
        write_file(&path, &script, 0o700);
        path
    }

    /// The pid of the process holding the lab's CDI mount namespace, started on first use: a private one where
    /// the lab's CDI dir is /etc/cdi (`cdi_binds`). Every CDI podman command of the lab enters this one
    /// namespace, so each sees what the others mounted there: the netns podman mounts under /run/netns (for a
    /// bridge network, and for `none`), which a namespace of each command's own would hide from the next
    /// command, and from the lab's teardown, leaving it behind. Containers run there are removed there when the
    /// lab ends, before the holder goes.
    fn cdi_mount_ns(&self) -> u32 {
        let mut held = self.cdi_ns.lock().unwrap();
        if let Some(pid) = *held {
            return pid;
        }
        let mut script = String::new();
        for (file, target) in self.cdi_binds() {
            script += &format!(
                "mount --bind {} {} || exit 125\n",
                sh_quote(&file.to_string_lossy()),
                sh_quote(&target)
            );
        }
        script += "exec sleep 86400\n";
        let mut holder = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("unshare --mount");
        let pid = holder.id();
        let began = std::time::Instant::now();
        while !fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
            assert!(
                began.elapsed() < std::time::Duration::from_secs(5),
                "the CDI mount namespace's holder never got to sleep"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        *held = Some(pid);
        let mut rm = self.podman_argv(None, true, Mounts::Held(pid));
        rm.extend(["rm", "-fa", "-t", "0"].map(String::from));
        let env = self.containers_conf();
        self.on_teardown(Box::new(move || {
            let mut problems = Vec::new();
            let out = super::command::run_argv(&rm, &[("CONTAINERS_CONF", &env)]);
            if !out.success() {
                problems.push(format!("podman rm -fa in the CDI mount namespace:\n{out}"));
            }
            let _ = holder.kill();
            let _ = holder.wait();
            problems
        }));
        pid
    }

    /// Runs podman (in the lab's host netns, with the lab's storage and hooks) with `args`.
    pub fn podman(&self, args: &[&str]) -> CmdOutput {
        self.podman_cmd(None, &[], args)
    }

    /// Runs podman as [`Lab::podman`] does, but with `--runtime <runtime>` (a path) instead of runc and with an
    /// empty hooks dir instead of the lab's, so the OCI runtime sees exactly what podman itself generates (for a
    /// runtime wrapper that adds the hooks itself).
    pub fn podman_via(&self, runtime: &Path, args: &[&str]) -> CmdOutput {
        self.podman_cmd(Some(runtime), &[], args)
    }

    /// `podman run` in a fresh busybox rootfs of this lab. On a bridge network of this lab, the bridge is first
    /// re-created with its fixed MAC if netavark deleted it (see `Lab::ensure_bridge`).
    pub fn podman_run(&self, opts: &RunOpts) -> RunOutput {
        if let Some(name) = &opts.network {
            let net = self
                .bridges
                .lock()
                .unwrap()
                .iter()
                .find(|b| &b.name == name)
                .cloned();
            if let Some(net) = net {
                self.ensure_bridge(&net);
            }
        }
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let rootfs = self.make_rootfs(n);
        let cidfile = self.dir.join(format!("run-{n}.cid"));
        let args = opts.run_args(&cidfile, &rootfs);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mounts = if opts.cdi {
            assert!(opts.binds.is_empty(), "a CDI run takes no binds of its own");
            Mounts::Cdi
        } else {
            Mounts::Binds(&opts.binds)
        };
        let out = self.podman_cmd_with(opts.via.as_deref(), opts.no_hooks_dir, mounts, &refs);
        let cid = fs::read_to_string(&cidfile)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if let Some(cid) = &cid {
            self.seen_cids.lock().unwrap().push(cid.clone());
        }
        RunOutput { out, cid, rootfs }
    }

    /// The lab's CDI spec dir: what `install cdi --dir` writes into and podman reads as /etc/cdi (podman 4.3 has
    /// no setting for its spec dirs).
    pub fn cdi_dir(&self) -> PathBuf {
        let dir = self.dir.join("cdi");
        let _ = fs::DirBuilder::new().mode(0o755).create(&dir);
        dir
    }

    /// `wg-oci-hook --policy <lab policy> install cdi --dir <lab cdi dir>`, which must succeed.
    pub fn install_cdi(&self) -> CmdOutput {
        let dir = self.cdi_dir();
        let policy = self.policy_path.to_string_lossy().into_owned();
        let out = self.exec(
            &[
                super::HOOK_BIN.to_owned(),
                "--policy".into(),
                policy,
                "install".into(),
                "cdi".into(),
                "--dir".into(),
                dir.to_string_lossy().into_owned(),
            ],
            &[],
        );
        out.assert_success("wg-oci-hook install cdi");
        out
    }

    /// The mounts that make podman see the lab's CDI dir and no other: over /etc/cdi (made, empty, if the machine
    /// has none: the standard place, which podman reads anyway) and, if the machine has one, over /var/run/cdi
    /// (which wins over /etc/cdi) an empty dir.
    fn cdi_binds(&self) -> Vec<(PathBuf, String)> {
        fs::create_dir_all("/etc/cdi").expect("making /etc/cdi, the CDI spec dir podman reads");
        let mut binds = vec![(self.cdi_dir(), "/etc/cdi".to_owned())];
        if Path::new("/var/run/cdi").is_dir() {
            let empty = self.dir.join("no-cdi");
            let _ = fs::DirBuilder::new().mode(0o755).create(&empty);
            binds.push((empty, "/var/run/cdi".to_owned()));
        }
        binds
    }

    /// A fresh busybox rootfs packed into the tarball `path`, for an engine's `import` (there is no registry).
    pub fn busybox_tarball(&self, path: &Path) {
        let rootfs = self.new_rootfs();
        super::command::run_argv(
            &[
                "tar".to_owned(),
                "-C".to_owned(),
                rootfs.to_string_lossy().into_owned(),
                "-cf".to_owned(),
                path.to_string_lossy().into_owned(),
                ".".to_owned(),
            ],
            &[],
        )
        .assert_success("packing the busybox rootfs");
    }

    /// A fresh busybox rootfs dir under the lab dir (the one `podman_run` gives each container), for
    /// `podman run --rootfs`.
    pub fn new_rootfs(&self) -> PathBuf {
        self.make_rootfs(self.runs.fetch_add(1, Ordering::SeqCst))
    }

    /// A fresh rootfs: busybox (hard-linked from the lab's copy), its applets, empty etc proc sys dev tmp run.
    pub(super) fn make_rootfs(&self, n: usize) -> PathBuf {
        let root = self.dir.join(format!("rootfs-{n}"));
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::hard_link(&self.busybox, root.join("bin/busybox"))
            .or_else(|_| fs::copy(&self.busybox, root.join("bin/busybox")).map(drop))
            .unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        root
    }
}

/// The first `name` in podman's default helper dirs (the lab's own wrapper dir excluded).
pub(super) fn find_podman_helper(name: &str) -> Option<String> {
    PODMAN_HELPER_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
        .map(|p| p.to_string_lossy().into_owned())
}

/// Script output between `BEGIN <tag>` and `END <tag>` lines.
pub fn section<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
    let (begin, end) = (format!("BEGIN {tag}"), format!("END {tag}"));
    out.lines()
        .skip_while(|l| *l != begin)
        .skip(1)
        .take_while(|l| *l != end)
        .collect()
}

/// The mount namespace a podman command of the lab runs in.
#[derive(Clone, Copy)]
enum Mounts<'a> {
    /// The machine's, or with binds a private one of the command's own (see `Lab::podman_cmd`).
    Binds(&'a [(PathBuf, String)]),
    /// The lab's CDI namespace (`Lab::cdi_mount_ns`), started if need be.
    Cdi,
    /// The lab's CDI namespace, held by this pid.
    Held(u32),
}
