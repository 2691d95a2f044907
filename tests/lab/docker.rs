//! A real Docker daemon (Debian's docker.io, 20.10) in the lab's host netns, private to the lab, and a logging
//! stand-in runtime that records how an engine calls its OCI runtime.
//!
//! [`Lab::start_dockerd`] starts, for one lab:
//! - a containerd of its own (`containerd --config <lab>/dkN/containerd.toml`): root under the lab dir, state
//!   and gRPC socket under the exec-root, CRI and the unusable snapshotters disabled, the `opt` plugin's dir
//!   (machine-wide `/opt/containerd` by default) under the lab dir. dockerd would otherwise start a containerd
//!   itself, which creates `/opt/containerd` on the machine;
//! - `dockerd --containerd <that socket>` with its own data-root, exec-root, pidfile, socket, cgroup parent
//!   (`/wgl-<id>-dN`) and daemon.json (the runtimes a test asks for), no bridge, no iptables, no forwarding,
//!   the vfs storage driver (no per-container mounts).
//!
//! Both run through `nsenter --net=` in the lab's host netns, never in the machine's; nsenter execs them, so the
//! pids the lab holds are theirs. Teardown (when the [`Dockerd`] is dropped, or when the [`Lab`] is, whichever
//! comes first; also after a panic) removes the containers, stops dockerd and containerd by pid (SIGTERM, then
//! SIGKILL), kills whatever is left in the lab's cgroups, shims and runtimes naming the lab's paths, removes the
//! shims' sockets from `/run/containerd/s`, unmounts and removes the dirs and the cgroups.
//!
//! containerd and its shims get `TMPDIR=<lab>/dkN/tmp`, so the shim's console sockets (`pty*/pty.sock`) and
//! exec process files (`runc-process*`) are under the lab dir too.
//!
//! What stays machine-wide, by design of the daemons: two empty dirs, created once and shared by every lab
//! (removing them could race a lab starting in parallel): `/run/containerd/s/`, where containerd 1.6 puts its
//! shims' sockets whatever its state dir (named by a hash of containerd's socket, namespace and container id;
//! removed with their shim, and by the teardown if a shim had to be killed), and `/run/docker/plugins/`, which
//! dockerd 20.10 creates whatever its exec-root. `ctr` without `--fifo-dir` uses `/run/containerd/fifo`.
//!
//! Paths are short on purpose: libnetwork listens on `<exec-root>/libnetwork/<64 hex>.sock`, so the exec-root
//! must stay within [`EXEC_ROOT_MAX`] bytes for a unix socket path (107 bytes).

use super::command::kill;
use super::netns::in_netns;
use super::{
    netns_path, output_with_stdin, processes_mentioning, remove_dir_all_retrying, resolve_tool,
    run_argv, sh_quote, unmount_under, write_file, CmdOutput, Lab, LAB_PATH,
};
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Longest exec-root for which libnetwork's `<exec-root>/libnetwork/<64 hex>.sock` fits a unix socket path.
pub const EXEC_ROOT_MAX: usize = 107 - "/libnetwork/".len() - 64 - ".sock".len();
/// How long dockerd (and containerd before it) may take to answer.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long dockerd may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The containerd namespace dockerd uses.
pub const DOCKER_NAMESPACE: &str = "moby";
/// The containerd namespace [`Dockerd::ctr`] uses.
pub const CTR_NAMESPACE: &str = "wgtest";
/// Where containerd 1.6 puts its shims' sockets, whatever its own state dir (`defaults.DefaultStateDir`/s).
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// (tool, Debian package) the Docker lab needs besides the podman lab's.
const DOCKER_TOOLS: &[(&str, &str)] = &[
    ("dockerd", "docker.io"),
    ("containerd", "containerd"),
    ("containerd-shim-runc-v2", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("tar", "tar"),
    ("sha256sum", "coreutils"),
];
/// The docker CLI that ships with docker.io (a newer one may come first on PATH; it would negotiate down, but
/// the lab tests the 20.10 pair).
const DEBIAN_DOCKER_CLI: &str = "/usr/bin/docker";

/// A running dockerd of one lab, with its own containerd. Dropping it tears both down (see the module doc); the
/// lab tears it down too if it is still running when the lab is dropped.
pub struct Dockerd {
    inner: Arc<DockerdInner>,
    startup: Duration,
}

struct DockerdInner {
    /// `<lab>/dkN`: configs, logs, data-root, containerd's root, the CLI's config dir.
    dir: PathBuf,
    /// The exec-root: dockerd's run state, containerd's state and socket. `<lab>/xN`, or `/tmp/wgl-<id>-xN`
    /// when the lab dir is too long for libnetwork's socket path.
    exec_root: PathBuf,
    /// dockerd's `--data-root` (`<dir>/data`).
    data_root: PathBuf,
    socket: PathBuf,
    containerd_socket: PathBuf,
    /// Absolute cgroup path given as `--cgroup-parent`: every container's cgroup is below it.
    cgroup_parent: String,
    host_ns: String,
    cli_path: String,
    dockerd: Mutex<Option<Child>>,
    containerd: Mutex<Option<Child>>,
    torn_down: Mutex<bool>,
}

/// One call of a [`RuntimeLogger`]: what the engine ran the runtime with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeCall {
    /// The runtime process's pid.
    pub pid: u32,
    /// Its working directory.
    pub cwd: String,
    /// Its arguments (without argv\[0\]).
    pub argv: Vec<String>,
    /// For `create`: a copy of the bundle's config.json as the engine handed it over, taken before the real
    /// runtime ran.
    pub config: Option<PathBuf>,
}

impl RuntimeCall {
    /// The runtime subcommand (`create`, `start`, `state`, `kill`, `delete`, `exec`, ...): the first argument
    /// that is neither a global flag nor the value of one of runc's global flags that take a value.
    pub fn subcommand(&self) -> Option<&str> {
        const WITH_VALUE: &[&str] = &["--root", "--log", "--log-format", "--criu", "--rootless"];
        let mut args = self.argv.iter();
        while let Some(a) = args.next() {
            if WITH_VALUE.contains(&a.as_str()) {
                args.next();
            } else if !a.starts_with('-') {
                return Some(a);
            }
        }
        None
    }

    /// `argv` joined by spaces (for reports and assertion messages).
    pub fn line(&self) -> String {
        self.argv.join(" ")
    }
}

/// A stand-in OCI runtime under the lab dir: a shell script that appends each call (pid, cwd, every argument) to
/// a log, copies the bundle's config.json at `create`, then execs the real runtime with the same arguments.
pub struct RuntimeLogger {
    /// The script: give this path to the engine as its runtime.
    pub path: PathBuf,
    log: PathBuf,
}

impl RuntimeLogger {
    /// Every call so far, in the order they were logged.
    pub fn calls(&self) -> Vec<RuntimeCall> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        parse_runtime_log(&text)
    }

    /// The `create` calls so far.
    pub fn creates(&self) -> Vec<RuntimeCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.subcommand() == Some("create"))
            .collect()
    }

    /// The log file's text (for assertion messages).
    pub fn raw(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn parse_runtime_log(text: &str) -> Vec<RuntimeCall> {
    let mut calls = Vec::new();
    let mut cur: Option<RuntimeCall> = None;
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "call" => {
                cur = Some(RuntimeCall {
                    pid: value.parse().unwrap_or(0),
                    cwd: String::new(),
                    argv: Vec::new(),
                    config: None,
                })
            }
            "cwd" => {
                if let Some(c) = cur.as_mut() {
                    c.cwd = value.to_owned();
                }
            }
            "arg" => {
                if let Some(c) = cur.as_mut() {
                    c.argv.push(value.to_owned());
                }
            }
            "config" => {
                if let Some(c) = cur.as_mut() {
                    c.config = Some(PathBuf::from(value));
                }
            }
            "end" => calls.extend(cur.take()),
            _ => {}
        }
    }
    calls
}

impl Lab {
    /// A [`RuntimeLogger`] named `name` (a file name) in front of the real runc.
    pub fn runtime_logger(&self, name: &str) -> RuntimeLogger {
        let real = real_runc();
        let dir = self.dir.join(format!("rt-{name}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let log = dir.join("calls");
        let path = dir.join(name);
        // One printf per call, so calls that overlap (a `state` during a `create`) do not interleave.
        let script = format!(
            "#!/bin/sh\n\
             # The lab's logging runtime: records this call, then execs the real runtime.\n\
             log={log}\n\
             dir={dir}\n\
             rec=\"call $$\ncwd $(pwd)\n\"\n\
             bundle=\n\
             prev=\n\
             create=\n\
             for a in \"$@\"; do\n\
             \x20 rec=\"${{rec}}arg $a\n\"\n\
             \x20 case $prev in --bundle|-b) bundle=$a ;; esac\n\
             \x20 case $a in --bundle=*) bundle=${{a#--bundle=}} ;; create) create=1 ;; esac\n\
             \x20 prev=$a\n\
             done\n\
             if [ -n \"$create\" ]; then\n\
             \x20 [ -n \"$bundle\" ] || bundle=$(pwd)\n\
             \x20 cp \"$bundle/config.json\" \"$dir/create-$$.json\" && rec=\"${{rec}}config $dir/create-$$.json\n\"\n\
             fi\n\
             printf '%send\\n' \"$rec\" >> \"$log\"\n\
             exec {real} \"$@\"\n",
            log = sh_quote(&log.to_string_lossy()),
            dir = sh_quote(&dir.to_string_lossy()),
            real = sh_quote(&real),
        );
        write_file(&path, &script, 0o755);
        RuntimeLogger { path, log }
    }

    /// Starts a dockerd of this lab (see the module doc) with the extra `runtimes`, each (name, absolute path,
    /// runtimeArgs), written to its daemon.json. Returns once `docker version` answers; panics with dockerd's
    /// and containerd's logs if that takes longer than 30 s or either exits.
    pub fn start_dockerd(&self, runtimes: &[(&str, &str, &[&str])]) -> Dockerd {
        let began = Instant::now();
        check_docker_prerequisites();
        let (n, dir) = (0..100)
            .find_map(|n| {
                let dir = self.dir.join(format!("dk{n}"));
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .ok()
                    .map(|()| (n, dir))
            })
            .expect("a free dkN dir in the lab dir");
        let mut exec_root = self.dir.join(format!("x{n}"));
        if exec_root.as_os_str().len() > EXEC_ROOT_MAX {
            exec_root = PathBuf::from(format!("/tmp/wgl-{}-x{n}", self.id));
        }
        assert!(
            exec_root.as_os_str().len() <= EXEC_ROOT_MAX,
            "exec-root {} too long",
            exec_root.display()
        );
        let inner = Arc::new(DockerdInner {
            data_root: dir.join("data"),
            socket: self.dir.join(format!("docker{n}.sock")),
            containerd_socket: exec_root.join("ctd.sock"),
            cgroup_parent: format!("/wgl-{}-d{n}", self.id),
            host_ns: self.host_ns.clone(),
            cli_path: docker_cli(),
            dockerd: Mutex::new(None),
            containerd: Mutex::new(None),
            torn_down: Mutex::new(false),
            exec_root: exec_root.clone(),
            dir: dir.clone(),
        });
        // From here on the lab tears this dockerd down, whatever happens next.
        let hook = inner.clone();
        self.on_teardown(Box::new(move || hook.teardown()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&exec_root)
            .unwrap_or_else(|e| panic!("creating {}: {e}", exec_root.display()));
        for sub in ["tmp", "cli", "data"] {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir.join(sub))
                .unwrap();
        }

        // containerd.
        let toml = |p: &Path| super::toml_str(&p.to_string_lossy());
        let ctd_config = format!(
            "version = 2\n\
             root = {root}\n\
             state = {state}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.aufs\", \
             \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \
             \"io.containerd.snapshotter.v1.devmapper\"]\n\
             \n[grpc]\n  address = {sock}\n\
             \n[ttrpc]\n  address = \"\"\n\
             \n[debug]\n  address = \"\"\n\
             \n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt}\n",
            root = toml(&dir.join("ctd")),
            state = toml(&exec_root.join("ctd")),
            sock = toml(&inner.containerd_socket),
            opt = toml(&dir.join("opt")),
        );
        let ctd_config_path = dir.join("containerd.toml");
        write_file(&ctd_config_path, &ctd_config, 0o600);
        let child = inner.spawn(
            "containerd",
            &[
                "containerd".into(),
                "--config".into(),
                ctd_config_path.to_string_lossy().into_owned(),
            ],
            &dir.join("containerd.log"),
            // What its shims and so `wg-oci-runtime` inherit: the lab's policy for handlers bound by name
            // (`wg-oci-runtime@PROFILE`, which take no `--wg-policy`).
            &[("WG_OCI_HOOK_POLICY", &self.policy_path)],
        );
        *inner.containerd.lock().unwrap() = Some(child);
        inner.wait_for("containerd", began, || {
            UnixStream::connect(&inner.containerd_socket).is_ok()
        });

        // dockerd.
        let mut rt = serde_json::Map::new();
        for (name, path, args) in runtimes {
            rt.insert(
                name.to_string(),
                serde_json::json!({ "path": path, "runtimeArgs": args }),
            );
        }
        let daemon_json = serde_json::json!({
            "runtimes": rt,
            // The daemon's identity key; machine-wide /etc/docker/key.json otherwise (no command line flag).
            "deprecated-key-path": dir.join("key.json"),
        });
        let daemon_json_path = dir.join("daemon.json");
        write_file(
            &daemon_json_path,
            &serde_json::to_string_pretty(&daemon_json).unwrap(),
            0o600,
        );
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let argv: Vec<String> = vec![
            "dockerd".into(),
            "--containerd".into(),
            s(&inner.containerd_socket),
            "--data-root".into(),
            s(&inner.data_root),
            "--exec-root".into(),
            s(&exec_root),
            "--pidfile".into(),
            s(&dir.join("docker.pid")),
            "-H".into(),
            format!("unix://{}", inner.socket.display()),
            "--config-file".into(),
            s(&daemon_json_path),
            "--bridge".into(),
            "none".into(),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            "--ip-forward=false".into(),
            "--ip-masq=false".into(),
            "--userland-proxy=false".into(),
            // Containers still running when dockerd is told to stop get this long (default 15 s).
            "--shutdown-timeout".into(),
            "2".into(),
            "--storage-driver".into(),
            "vfs".into(),
            "--cgroup-parent".into(),
            inner.cgroup_parent.clone(),
            "--exec-opt".into(),
            "native.cgroupdriver=cgroupfs".into(),
        ];
        let child = inner.spawn("dockerd", &argv, &dir.join("dockerd.log"), &[]);
        *inner.dockerd.lock().unwrap() = Some(child);
        inner.wait_for("dockerd", began, || ping(&inner.socket));
        inner.cli(&["version"]).assert_success("docker version");
        Dockerd {
            inner,
            startup: began.elapsed(),
        }
    }

    /// Registers `f` to run first when the lab is dropped (last registered, first run); `f` returns problems to
    /// report.
    pub(super) fn on_teardown(&self, f: super::TeardownHook) {
        self.teardown_hooks.lock().unwrap().push(f);
    }
}

impl Dockerd {
    /// Runs the docker CLI (docker.io's, 20.10) against this daemon, in the lab's host netns, with
    /// `DOCKER_CONFIG` under the lab dir.
    pub fn docker(&self, args: &[&str]) -> CmdOutput {
        self.inner.cli(args)
    }

    /// Runs `ctr --address <this containerd> -n wgtest ARGS...` in the lab's host netns (namespace `moby` holds
    /// dockerd's containers; pass `-n` again to look there). Give `ctr run` a `--fifo-dir` under the lab dir
    /// ([`Dockerd::scratch_dir`]) to keep its FIFOs out of `/run/containerd/fifo`.
    pub fn ctr(&self, args: &[&str]) -> CmdOutput {
        let address = self.inner.containerd_socket.to_string_lossy();
        let mut argv = vec!["ctr", "--address", &address, "-n", CTR_NAMESPACE];
        argv.extend(args);
        let argv = in_netns(&self.inner.host_ns, &argv);
        run_argv(&argv, &[])
    }

    /// Builds a busybox rootfs as the lab does for podman (the same applets), imports it as
    /// `wgl-busybox:<lab id>` (default command `/bin/sh`) and returns that name.
    pub fn import_busybox(&self, lab: &Lab) -> String {
        let tarball = self.inner.dir.join("busybox.tar");
        lab.busybox_tarball(&tarball);
        let image = format!("wgl-busybox:{}", lab.id);
        self.docker(&[
            "import",
            "--change",
            "CMD [\"/bin/sh\"]",
            &tarball.to_string_lossy(),
            &image,
        ])
        .assert_success("docker import");
        let _ = fs::remove_file(&tarball);
        image
    }

    /// `ctr run --rm` of `image` (from `import_busybox_into_containerd`) as container `id`, with `runc` as the
    /// runc binary and `sh -c script` as the workload, under this daemon's containerd, runc root and cgroup.
    pub fn ctr_run(&self, runc: &Path, image: &str, id: &str, script: &str) -> CmdOutput {
        let runc_root = self.exec_root().join("ctr-runc");
        let cgroup = format!("{}/{id}", self.cgroup_parent());
        self.ctr(&[
            "run",
            "--rm",
            "--snapshotter",
            "native",
            "--fifo-dir",
            &self.scratch_dir().to_string_lossy(),
            "--runc-binary",
            &runc.to_string_lossy(),
            "--runc-root",
            &runc_root.to_string_lossy(),
            "--cgroup",
            &cgroup,
            &format!("docker.io/library/{image}"),
            id,
            "/bin/sh",
            "-c",
            script,
        ])
    }

    /// The busybox image of `import_busybox`, imported into containerd's own image store (for `ctr run`) too.
    pub fn import_busybox_into_containerd(&self, lab: &Lab) -> String {
        let image = self.import_busybox(lab);
        let saved = self.scratch_dir().join("image.tar");
        self.docker(&["save", "-o", &saved.to_string_lossy(), &image])
            .assert_success("docker save");
        self.ctr(&[
            "image",
            "import",
            "--snapshotter",
            "native",
            &saved.to_string_lossy(),
        ])
        .assert_success("ctr image import");
        image
    }

    /// `docker-compose ARGS...` against this daemon (`DOCKER_HOST` its socket, `DOCKER_CONFIG` under the lab dir),
    /// in the lab's host netns: Debian's docker-compose 1.29, a client of the Docker API like the docker CLI.
    /// Fails the test (never skips it) when docker-compose is not installed.
    pub fn compose(&self, args: &[&str]) -> CmdOutput {
        let compose = resolve_tool("docker-compose").unwrap_or_else(|| {
            panic!("`docker-compose` not found: install the Debian package `docker-compose`")
        });
        let mut argv = vec![compose.as_str()];
        argv.extend(args);
        let host = format!("unix://{}", self.inner.socket.display());
        run_argv(
            &in_netns(&self.inner.host_ns, &argv),
            &[
                ("DOCKER_HOST", Path::new(&host)),
                ("DOCKER_CONFIG", &self.inner.dir.join("cli")),
            ],
        )
    }

    /// dockerd's stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.inner.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// How long `start_dockerd` took, containerd included, until `docker version` answered.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// dockerd's pid.
    pub fn pid(&self) -> u32 {
        child_pid(&self.inner.dockerd)
    }

    /// The private containerd's pid.
    pub fn containerd_pid(&self) -> u32 {
        child_pid(&self.inner.containerd)
    }

    /// The private containerd's gRPC socket.
    pub fn containerd_socket(&self) -> &Path {
        &self.inner.containerd_socket
    }

    /// dockerd's exec-root (its run state; containerd's state and socket are in it too).
    pub fn exec_root(&self) -> &Path {
        &self.inner.exec_root
    }

    /// A dir of this dockerd's own under the lab dir (containerd's and its shims' TMPDIR), removed with it.
    pub fn scratch_dir(&self) -> PathBuf {
        self.inner.dir.join("tmp")
    }

    /// The cgroup every container of this dockerd is placed under (`--cgroup-parent`).
    pub fn cgroup_parent(&self) -> &str {
        &self.inner.cgroup_parent
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let problems = self.inner.teardown();
        if !problems.is_empty() {
            eprintln!("dockerd teardown problems:\n{}", problems.join("\n"));
        }
    }
}

impl DockerdInner {
    fn cli(&self, args: &[&str]) -> CmdOutput {
        let host = format!("unix://{}", self.socket.display());
        let mut argv = vec![self.cli_path.as_str(), "-H", &host];
        argv.extend(args);
        let argv = in_netns(&self.host_ns, &argv);
        run_argv(&argv, &[("DOCKER_CONFIG", &self.dir.join("cli"))])
    }

    fn spawn(&self, what: &str, argv: &[String], log: &Path, env: &[(&str, &Path)]) -> Child {
        let log = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        Command::new("nsenter")
            .env("PATH", LAB_PATH)
            .env("TMPDIR", self.dir.join("tmp"))
            .envs(env.iter().copied())
            .arg(format!("--net={}", netns_path(&self.host_ns)))
            .args(argv)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"))
    }

    /// Polls `ready` until it holds; panics with the logs if `what` exits or the start deadline passes.
    fn wait_for(&self, what: &str, began: Instant, mut ready: impl FnMut() -> bool) {
        loop {
            if ready() {
                return;
            }
            let exited = [&self.containerd, &self.dockerd].iter().find_map(|c| {
                c.lock()
                    .unwrap()
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
            });
            if exited.is_some() || began.elapsed() > START_DEADLINE {
                panic!(
                    "{what} did not come up within {} s ({}):\n=== containerd log (end) ===\n{}\n=== dockerd log (end) ===\n{}",
                    START_DEADLINE.as_secs(),
                    match exited {
                        Some(status) => format!("a daemon exited: {status}"),
                        None => "timed out".to_owned(),
                    },
                    tail(&fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default(), 30),
                    tail(&fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default(), 100),
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything this dockerd left, removed; idempotent. Returns the problems met.
    fn teardown(&self) -> Vec<String> {
        let mut done = self.torn_down.lock().unwrap();
        if *done {
            return Vec::new();
        }
        *done = true;
        let mut problems = Vec::new();
        let mut ids: Vec<(String, String)> = Vec::new();

        // 1. Containers, while dockerd still answers.
        let dockerd_running = self
            .dockerd
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none());
        if dockerd_running && ping(&self.socket) {
            let cli = |args: &[&str]| self.cli(args);
            let ps = cli(&["ps", "-aq", "--no-trunc"]);
            let cids: Vec<String> = ps.stdout.split_whitespace().map(str::to_owned).collect();
            if !cids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(cids.iter().map(String::as_str));
                let out = cli(&args);
                if !out.success() {
                    problems.push(format!("docker rm -f:\n{out}"));
                }
            }
            ids.extend(cids.into_iter().map(|c| (DOCKER_NAMESPACE.to_owned(), c)));
        }

        // 2. dockerd, then whatever is still in the containers' cgroups, then containerd.
        stop_daemon("dockerd", &self.dockerd, STOP_GRACE, &mut problems);
        for pid in self.cgroup_pids() {
            problems.push(format!(
                "killing container process {pid} that outlived dockerd"
            ));
            kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        stop_daemon(
            "containerd",
            &self.containerd,
            Duration::from_secs(5),
            &mut problems,
        );

        // 3. Shims and runtimes naming this dockerd's paths (none, normally: the shims exit with their
        //    containers).
        let needles = [
            self.exec_root.to_string_lossy().into_owned(),
            self.dir.to_string_lossy().into_owned(),
        ];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left: Vec<(u32, String)> = needles
                .iter()
                .flat_map(|n| processes_mentioning(n))
                .collect();
            if left.is_empty() {
                break;
            }
            for (pid, argv) in &left {
                if let Some(id) = arg_after(argv, "-id") {
                    let ns = arg_after(argv, "-namespace").unwrap_or(DOCKER_NAMESPACE.into());
                    ids.push((ns, id));
                }
                if Instant::now() > deadline {
                    problems.push(format!(
                        "killing a process that outlived dockerd: {pid} {argv}"
                    ));
                    kill(*pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
            if Instant::now() > deadline + Duration::from_secs(2) {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        for pid in self.cgroup_pids() {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
        }

        // 4. Shim sockets of killed shims (a shim that exits removes its own).
        for (ns, id) in ids {
            let key = format!("{}/{ns}/{id}", self.containerd_socket.display());
            let mut cmd = Command::new("sha256sum");
            cmd.env("PATH", LAB_PATH);
            let out = output_with_stdin(cmd, key.as_bytes(), "sha256sum");
            if let Some(hash) = out.stdout.split_whitespace().next() {
                let sock = Path::new(SHIM_SOCKET_DIR).join(hash);
                if sock.exists() {
                    problems.push(format!("removing shim socket {} of {id}", sock.display()));
                    let _ = fs::remove_file(&sock);
                }
            }
        }

        // 5. Mounts under the dirs (the data-root is a shared bind mount of itself while dockerd runs).
        problems.extend(unmount_under(&[&self.dir, &self.exec_root]));

        // 6. Cgroups, deepest first.
        for dir in cgroup_dirs_under(&self.cgroup_parent).into_iter().rev() {
            if let Err(e) = fs::remove_dir(&dir) {
                if e.kind() != ErrorKind::NotFound {
                    problems.push(format!("removing cgroup {}: {e}", dir.display()));
                }
            }
        }

        // 7. The dirs.
        if thread::panicking() {
            for (name, lines) in [("containerd.log", 30), ("dockerd.log", 200)] {
                if let Ok(log) = fs::read_to_string(self.dir.join(name)) {
                    eprintln!(
                        "=== {} (end) ===\n{}",
                        self.dir.join(name).display(),
                        tail(&log, lines)
                    );
                }
            }
        }
        for dir in [&self.exec_root, &self.dir] {
            if let Err(e) = remove_dir_all_retrying(dir) {
                problems.push(format!("removing {}: {e}", dir.display()));
            }
        }
        problems
    }

    /// The pids in the containers' cgroups.
    fn cgroup_pids(&self) -> Vec<u32> {
        cgroup_pids_under(&self.cgroup_parent)
    }
}

/// SIGTERM to the daemon, up to `grace` for it to exit, then SIGKILL.
fn stop_daemon(
    what: &str,
    slot: &Mutex<Option<Child>>,
    grace: Duration,
    problems: &mut Vec<String>,
) {
    let Some(mut child) = slot.lock().unwrap().take() else {
        return;
    };
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    kill(child.id(), nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    problems.push(format!(
        "{what} ({}) ignored SIGTERM for {} s; killing it",
        child.id(),
        grace.as_secs()
    ));
    let _ = child.kill();
    let _ = child.wait();
}

fn child_pid(slot: &Mutex<Option<Child>>) -> u32 {
    slot.lock()
        .unwrap()
        .as_ref()
        .map(Child::id)
        .expect("the daemon was stopped")
}

/// The word after `flag` in a space-joined argv.
fn arg_after(argv: &str, flag: &str) -> Option<String> {
    let mut words = argv.split(' ');
    words.find(|w| *w == flag)?;
    words.next().map(str::to_owned)
}

/// True when the docker API at `socket` answers `GET /_ping` with 200.
fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.") && reply.lines().next().is_some_and(|l| l.contains(" 200 "))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// runc's real path (symlinks resolved).
pub fn real_runc() -> String {
    let found = resolve_tool("runc").expect("runc not found: install the Debian package `runc`");
    fs::canonicalize(&found)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or(found)
}

fn docker_cli() -> String {
    if super::is_executable(Path::new(DEBIAN_DOCKER_CLI)) {
        return DEBIAN_DOCKER_CLI.to_owned();
    }
    resolve_tool("docker").expect("docker not found: install the Debian package `docker.io`")
}

/// Fails the test (never skips it) when the machine lacks something the Docker lab needs.
fn check_docker_prerequisites() {
    let mut missing: Vec<String> = DOCKER_TOOLS
        .iter()
        .filter(|(tool, _)| resolve_tool(tool).is_none())
        .map(|(tool, package)| {
            format!("`{tool}` not found: install the Debian package `{package}`")
        })
        .collect();
    if !super::is_executable(Path::new(DEBIAN_DOCKER_CLI)) && resolve_tool("docker").is_none() {
        missing.push("`docker` not found: install the Debian package `docker.io`".to_owned());
    }
    assert!(
        missing.is_empty(),
        "the Docker lab cannot run on this machine:\n  {}",
        missing.join("\n  ")
    );
}

/// Every cgroup dir at or under `parent`, in every hierarchy, parents before children.
pub(super) fn cgroup_dirs_under(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup").join(rel)];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                roots.push(e.path().join(rel));
            }
        }
    }
    let mut dirs = Vec::new();
    for root in roots {
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            if !d.is_dir() {
                continue;
            }
            if let Ok(entries) = fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
            dirs.push(d);
        }
    }
    dirs.sort_by_key(|d| d.components().count());
    dirs
}

/// The pids in the cgroups at or under `parent`.
pub(super) fn cgroup_pids_under(parent: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = cgroup_dirs_under(parent)
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}
