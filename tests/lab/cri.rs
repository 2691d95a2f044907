//! Kubernetes without a kubelet: Debian's containerd (1.6) with its CRI plugin in the lab's host netns, driven by
//! a Rust CRI client (k8s-cri's runtime.v1 over tonic, on containerd's unix socket) making the calls a kubelet
//! makes.
//!
//! [`Lab::start_cri`] starts, for one lab, under `<lab>/k8s`:
//! - a containerd of its own (`containerd --config <lab>/k8s/config.toml`, through `nsenter --net=` in the lab's
//!   host netns, never the machine's): root, state, gRPC socket, `opt` dir and TMPDIR under the lab dir, the
//!   unusable snapshotters disabled, the CRI plugin on with the `native` snapshotter, `SystemdCgroup = false`
//!   (every pod gets the cgroupfs parent `/wgl-<id>-k8s`), no AppArmor, netns mounts under its state dir, the
//!   streaming server on the lab host netns' loopback;
//! - `sandbox_image` = `wgl-pause:<id>` and the app image `wgl-busybox:<id>`, both the lab's busybox rootfs as an
//!   OCI archive built here (one layer, two configs: the pause stand-in's entrypoint sleeps forever) and imported
//!   with `ctr -n k8s.io images import` (there is no registry);
//! - CNI from Debian's containernetworking-plugins (`/usr/lib/cni`): a bridge + host-local conflist under the lab
//!   dir, subnet [`CNI_SUBNET`] (inside the lab's 198.18.0.0/15, which only the lab's namespaces carry; the
//!   bridge lives in the lab's host netns, nothing is masqueraded), IPAM data under the lab dir;
//! - the runtime handlers that `wg-oci-hook install containerd --config <lab>/k8s/config.toml [--profile P]` (the
//!   built binary, run twice each) edits into that config.toml: `BinaryName` is the built `wg-oci-runtime` (or its
//!   `@P` link beside it), which finds the built hook beside itself, and the lab's runc settings are copied;
//!   `WG_OCI_HOOK_POLICY` in containerd's environment (so its shims' and the wrapper's) is the lab's policy.
//!
//! Teardown (when the [`Containerd`] is dropped, or the [`Lab`] is, whichever comes first; also after a panic):
//! StopPodSandbox and RemovePodSandbox for every pod (best effort), containerd stopped by pid (SIGTERM, then
//! SIGKILL), shims and container processes left behind killed, their sockets removed from `/run/containerd/s`,
//! CNI result files of this lab's network removed from `/var/lib/cni/results`, mounts under the dir unmounted,
//! the cgroups and the dir removed.
//!
//! What stays machine-wide, by design of containerd 1.6 and libcni: the shared dirs `/run/containerd/s/` (see
//! `docker.rs`) and `/var/lib/cni/results/`, where libcni caches each attachment's result until its CNI DEL.

use super::command::{kill, output_with_stdin, COMMAND_TIMEOUT_SECS};
use super::netns::in_netns;
use super::{
    netns_path, processes_mentioning, remove_dir_all_retrying, resolve_tool, run_argv, toml_str,
    unmount_under, write_file, CmdOutput, Lab, HOOK_BIN, LAB_PATH,
};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as api;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use k8s_cri::v1 as cri_api;

/// The containerd namespace of the CRI plugin.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The pods' CNI subnet (bridge `wgk<id>` in the lab's host netns).
pub const CNI_SUBNET: &str = "198.18.2.0/24";
/// The CNI bridge's address, the pods' default gateway.
pub const CNI_GATEWAY: &str = "198.18.2.1";
/// The "cluster DNS" the pods' DNS config names, as a kubelet would pass it (nothing answers there).
pub const CLUSTER_DNS: &str = "198.18.2.10";
/// The pods' DNS search list, as a kubelet would pass it for namespace `default`.
pub const CLUSTER_SEARCH: [&str; 3] = [
    "default.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
];
/// Where containerd 1.6 puts its shims' sockets, whatever its own state dir.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// Where libcni caches results, whatever the runtime's dirs.
const CNI_RESULTS_DIR: &str = "/var/lib/cni/results";
/// Debian's CNI plugins.
const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// How long containerd may take to answer CRI `Status` with both conditions true.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Bound on one CRI call.
const CALL_TIMEOUT: Duration = Duration::from_secs(COMMAND_TIMEOUT_SECS as u64);
/// (tool, Debian package) the CRI lab needs besides the podman lab's.
const CRI_TOOLS: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("containerd-shim-runc-v2", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("tar", "tar"),
    ("sha256sum", "coreutils"),
];

/// A running containerd with its CRI plugin, private to one lab, and a CRI client connected to it. Dropping it
/// tears it down (see the module doc); the lab does too if it is still running when the lab is dropped.
pub struct Containerd {
    inner: Arc<Inner>,
    /// (profile given to `install containerd`, the handler name it added).
    handlers: Vec<(Option<String>, String)>,
    /// The sandbox image (`sandbox_image`) and the app containers' image.
    pub pause_image: String,
    pub app_image: String,
}

struct Inner {
    /// `<lab>/k8s`: config, log, root, state, socket, CNI config, pod logs, the pods' host-mounted dirs.
    dir: PathBuf,
    socket: PathBuf,
    host_ns: String,
    /// The lab's id (names the CNI network and bridge).
    lab_id: String,
    /// Absolute cgroupfs parent of every pod (`/wgl-<id>-k8s`).
    cgroup_parent: String,
    rt: tokio::runtime::Runtime,
    channel: Mutex<Option<tonic::transport::Channel>>,
    containerd: Mutex<Option<Child>>,
    /// Every sandbox id this lab's client was given (for the shims' sockets at teardown).
    sandboxes: Mutex<Vec<String>>,
    torn_down: Mutex<bool>,
}

/// One pod as the tests describe it: its name and annotations, and the runtime handler (RuntimeClass).
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    pub handler: String,
    pub annotations: Vec<(String, String)>,
}

impl Lab {
    /// Starts a containerd with CRI for this lab (see the module doc), with one runtime handler per entry of
    /// `profiles`: `None` is `wg-oci-hook install containerd`, `Some(P)` is `... --profile P`. Returns once CRI
    /// `Status` reports RuntimeReady and NetworkReady; panics with containerd's log if that takes longer than
    /// 30 s or containerd exits.
    pub fn start_cri(&self, profiles: &[Option<&str>]) -> Containerd {
        check_cri_prerequisites();
        let dir = self.dir.join("k8s");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the CRI client");
        let inner = Arc::new(Inner {
            socket: dir.join("c.sock"),
            host_ns: self.host_ns.clone(),
            lab_id: self.id.clone(),
            cgroup_parent: format!("/wgl-{}-k8s", self.id),
            rt,
            channel: Mutex::new(None),
            containerd: Mutex::new(None),
            sandboxes: Mutex::new(Vec::new()),
            torn_down: Mutex::new(false),
            dir: dir.clone(),
        });
        // From here on the lab tears this containerd down, whatever happens next.
        let hook = inner.clone();
        self.teardown_hooks
            .lock()
            .unwrap()
            .push(Box::new(move || hook.teardown()));
        for sub in ["tmp", "cni", "cni-ipam", "logs", "out", "image"] {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir.join(sub))
                .unwrap();
        }
        // The pods' host-mounted dirs are written by the containers' root, but keep them open to all the same.
        fs::set_permissions(dir.join("out"), fs::Permissions::from_mode(0o755)).unwrap();

        let pause_image = format!("docker.io/library/wgl-pause:{}", self.id);
        let app_image = format!("docker.io/library/wgl-busybox:{}", self.id);
        let archive = self.busybox_oci_archive(&dir.join("image"), &pause_image, &app_image);

        // CNI: a bridge in the lab's host netns, host-local IPAM with its data under the lab dir.
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": format!("wgl-{}", self.id),
            "plugins": [{
                "type": "bridge",
                "bridge": format!("wgk{}", self.id),
                "isGateway": true,
                "isDefaultGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": CNI_SUBNET, "gateway": CNI_GATEWAY }]],
                    "dataDir": dir.join("cni-ipam"),
                },
            }],
        });
        write_file(
            &dir.join("cni/10-wgl.conflist"),
            &serde_json::to_string_pretty(&conflist).unwrap(),
            0o600,
        );

        // config.toml: ours, then `install containerd` edits in a handler per profile.
        let toml = |p: &Path| toml_str(&p.to_string_lossy());
        let runc_root = dir.join("runc");
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        let config = format!(
            "version = 2\n\
             root = {root}\n\
             state = {state}\n\
             disabled_plugins = [\"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", \
             \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\"]\n\
             \n[grpc]\n  address = {sock}\n\
             \n[ttrpc]\n  address = \"\"\n\
             \n[debug]\n  address = \"\"\n\
             \n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt}\n\
             \n[{cri}]\n  sandbox_image = {pause}\n  stream_server_address = \"127.0.0.1\"\n  \
             stream_server_port = \"0\"\n  enable_selinux = false\n  disable_apparmor = true\n  \
             restrict_oom_score_adj = true\n  netns_mounts_under_state_dir = true\n\
             [{cri}.containerd]\n  snapshotter = \"native\"\n  default_runtime_name = \"runc\"\n\
             [{cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
             [{cri}.containerd.runtimes.runc.options]\n  SystemdCgroup = false\n  Root = {runc_root}\n\
             [{cri}.cni]\n  bin_dir = {bin}\n  conf_dir = {conf}\n  max_conf_num = 1\n\n",
            root = toml(&dir.join("root")),
            state = toml(&dir.join("state")),
            sock = toml(&inner.socket),
            opt = toml(&dir.join("opt")),
            pause = toml_str(&pause_image),
            bin = toml_str(CNI_BIN_DIR),
            conf = toml(&dir.join("cni")),
            runc_root = toml(&runc_root),
        );
        let config_path = dir.join("config.toml");
        write_file(&config_path, &config, 0o600);
        let handlers = profiles
            .iter()
            .map(|profile| {
                let name = self.install_containerd_handler(&config_path, *profile, &runc_root);
                (profile.map(str::to_owned), name)
            })
            .collect();

        let began = Instant::now();
        let log = File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("nsenter")
            .env("PATH", LAB_PATH)
            .env("TMPDIR", dir.join("tmp"))
            .env("WG_OCI_HOOK_POLICY", &self.policy_path)
            .arg(format!("--net={}", netns_path(&self.host_ns)))
            .arg("containerd")
            .arg("--config")
            .arg(&config_path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning containerd: {e}"));
        *inner.containerd.lock().unwrap() = Some(child);
        let d = Containerd {
            inner,
            handlers,
            pause_image,
            app_image,
        };
        d.wait_until_ready(began);
        d.ctr(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            &archive.to_string_lossy(),
        ])
        .assert_success("ctr -n k8s.io images import");
        for image in [&d.pause_image, &d.app_image] {
            let status = d.block_on("ImageStatus", |ch| async move {
                api::image_service_client::ImageServiceClient::new(ch)
                    .image_status(api::ImageStatusRequest {
                        image: Some(api::ImageSpec {
                            image: image.clone(),
                            ..Default::default()
                        }),
                        verbose: false,
                    })
                    .await
            });
            assert!(
                status.is_ok_and(|s| s.image.is_some()),
                "CRI does not see the imported image {image}\n{}",
                d.log_tail(30)
            );
        }
        d
    }

    /// The lab's busybox rootfs as an OCI image archive under `dir`: one uncompressed layer, and two images
    /// (`pause`: entrypoint `sleep` forever, the sandbox's stand-in; `app`: `/bin/sh`). Returns the tarball.
    fn busybox_oci_archive(&self, dir: &Path, pause: &str, app: &str) -> PathBuf {
        let rootfs = self.new_rootfs();
        let layout = dir.join("layout");
        let blobs = layout.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let layer = dir.join("layer.tar");
        run_argv(
            &[
                "tar".into(),
                "--numeric-owner".into(),
                "-C".into(),
                rootfs.to_string_lossy().into_owned(),
                "-cf".into(),
                layer.to_string_lossy().into_owned(),
                ".".into(),
            ],
            &[],
        )
        .assert_success("packing the busybox rootfs");
        let put = |bytes: &[u8]| -> (String, usize) {
            let digest = format!("sha256:{}", sha256_hex(bytes));
            fs::write(blobs.join(&digest["sha256:".len()..]), bytes).unwrap();
            (digest, bytes.len())
        };
        let (layer_digest, layer_size) = put(&fs::read(&layer).unwrap());
        let _ = fs::remove_file(&layer);
        let mut manifests = Vec::new();
        for (name, entrypoint) in [
            (pause, serde_json::json!(["/bin/sleep", "2147483647"])),
            (app, serde_json::json!(["/bin/sh"])),
        ] {
            let config = serde_json::json!({
                "architecture": "amd64",
                "os": "linux",
                "config": { "Env": ["PATH=/bin"], "Entrypoint": entrypoint, "WorkingDir": "/" },
                "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
            });
            let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": config_size,
                },
                "layers": [{
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": layer_size,
                }],
            });
            let (digest, size) = put(&serde_json::to_vec(&manifest).unwrap());
            manifests.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": size,
                "platform": { "architecture": "amd64", "os": "linux" },
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap(),
                },
            }));
        }
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": manifests });
        fs::write(
            layout.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let archive = dir.join("images.tar");
        run_argv(
            &[
                "tar".into(),
                "-C".into(),
                layout.to_string_lossy().into_owned(),
                "-cf".into(),
                archive.to_string_lossy().into_owned(),
                ".".into(),
            ],
            &[],
        )
        .assert_success("packing the OCI archive");
        archive
    }
}

impl Lab {
    /// `wg-oci-hook install containerd --config CONFIG [--profile P]` (the built binary, the lab's policy in
    /// `WG_OCI_HOOK_POLICY`), run twice as an operator might: the first adds one handler, the second changes
    /// nothing. The handler copies the lab's runc settings (its `Root` under the lab dir); returns its name.
    fn install_containerd_handler(
        &self,
        config: &Path,
        profile: Option<&str>,
        runc_root: &Path,
    ) -> String {
        let runtimes = |text: &str| -> toml::Table {
            let doc: toml::Table = toml::from_str(text)
                .unwrap_or_else(|e| panic!("install containerd left no TOML: {e}\n{text}"));
            doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
                .as_table()
                .cloned()
                .unwrap_or_default()
        };
        let mut argv = vec![
            HOOK_BIN.to_owned(),
            "install".into(),
            "containerd".into(),
            "--config".into(),
            config.to_string_lossy().into_owned(),
        ];
        if let Some(p) = profile {
            argv.push("--profile".into());
            argv.push(p.to_owned());
        }
        let env = [("WG_OCI_HOOK_POLICY", self.policy_path.as_path())];
        let before = fs::read_to_string(config).unwrap();
        let out = run_argv(&argv, &env);
        out.assert_success("wg-oci-hook install containerd");
        assert!(out.stdout.contains("added runtime handler"), "{out}");
        let after = fs::read_to_string(config).unwrap();
        let again = run_argv(&argv, &env);
        again.assert_success("wg-oci-hook install containerd, again");
        assert!(again.stdout.contains("nothing to change"), "{again}");
        assert_eq!(
            fs::read_to_string(config).unwrap(),
            after,
            "a second install changed it"
        );

        let (old, new) = (runtimes(&before), runtimes(&after));
        let added: Vec<&String> = new.keys().filter(|k| !old.contains_key(*k)).collect();
        assert_eq!(added.len(), 1, "one runtime handler per install\n{after}");
        let handler = &new[added[0]];
        assert_eq!(
            handler["pod_annotations"][0].as_str(),
            Some("wg.*"),
            "{after}"
        );
        // runc's state dir under the lab dir (else /run/containerd/runc/k8s.io machine-wide): copied from the
        // lab's runc handler by the install, as SystemdCgroup would be on a real node.
        assert_eq!(
            handler["options"]["Root"].as_str(),
            Some(&*runc_root.to_string_lossy()),
            "{after}"
        );
        added[0].clone()
    }
}

impl Containerd {
    /// The handler (RuntimeClass) name `install containerd` added for `profile` (`None`: without `--profile`).
    pub fn handler(&self, profile: Option<&str>) -> String {
        self.handlers
            .iter()
            .find(|(p, _)| p.as_deref() == profile)
            .map(|(_, name)| name.clone())
            .unwrap_or_else(|| panic!("no handler was installed for profile {profile:?}"))
    }

    /// The PodSandboxConfig a kubelet would send for `pod` in namespace `default`: metadata, hostname, log dir,
    /// the cluster DNS config, kubelet's labels, the pod's annotations, the lab's cgroup parent, pod-wide network
    /// and IPC namespaces and a PID namespace per container.
    pub fn sandbox_config(&self, pod: &PodSpec) -> api::PodSandboxConfig {
        let uid = format!("{}-{}", self.inner.lab_id, pod.name);
        let log_dir = self.inner.dir.join("logs").join(&uid);
        let labels = HashMap::from([
            ("io.kubernetes.pod.name".to_owned(), pod.name.clone()),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                "default".to_owned(),
            ),
            ("io.kubernetes.pod.uid".to_owned(), uid.clone()),
        ]);
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: pod.name.clone(),
                uid,
                namespace: "default".to_owned(),
                attempt: 0,
            }),
            hostname: pod.name.clone(),
            log_directory: log_dir.to_string_lossy().into_owned(),
            dns_config: Some(api::DnsConfig {
                servers: vec![CLUSTER_DNS.to_owned()],
                searches: CLUSTER_SEARCH.iter().map(|s| s.to_string()).collect(),
                options: vec!["ndots:5".to_owned()],
            }),
            labels,
            annotations: pod.annotations.iter().cloned().collect(),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: self.inner.cgroup_parent.clone(),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The ContainerConfig a kubelet would send for app container `name` of `pod` running `sh -c script` in the
    /// app image, with the host dir [`Containerd::out_dir`] mounted at `/out`.
    pub fn container_config(
        &self,
        pod: &PodSpec,
        name: &str,
        script: &str,
    ) -> api::ContainerConfig {
        let out = self.out_dir(pod, name);
        fs::create_dir_all(&out).unwrap();
        api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            image: Some(api::ImageSpec {
                image: self.app_image.clone(),
                ..Default::default()
            }),
            command: vec!["/bin/sh".into(), "-c".into(), script.to_owned()],
            mounts: vec![api::Mount {
                container_path: "/out".to_owned(),
                host_path: out.to_string_lossy().into_owned(),
                ..Default::default()
            }],
            labels: HashMap::from([
                ("io.kubernetes.container.name".to_owned(), name.to_owned()),
                ("io.kubernetes.pod.name".to_owned(), pod.name.clone()),
                (
                    "io.kubernetes.pod.namespace".to_owned(),
                    "default".to_owned(),
                ),
            ]),
            log_path: format!("{name}/0.log"),
            linux: Some(api::LinuxContainerConfig {
                security_context: Some(api::LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The host dir mounted at `/out` in app container `name` of `pod`.
    pub fn out_dir(&self, pod: &PodSpec, name: &str) -> PathBuf {
        self.inner.dir.join("out").join(&pod.name).join(name)
    }

    /// What app container `name` of `pod` wrote to `/out/<file>`, once `/out/done` exists (polled up to 20 s;
    /// `None` if it never appears).
    pub fn wait_for_output(&self, pod: &PodSpec, name: &str, file: &str) -> Option<String> {
        let dir = self.out_dir(pod, name);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.join("done").exists() {
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
        Some(fs::read_to_string(dir.join(file)).unwrap_or_default())
    }

    /// The container log (CRI format) of app container `name` of `pod`.
    pub fn container_log(&self, pod: &PodSpec, name: &str) -> String {
        let uid = format!("{}-{}", self.inner.lab_id, pod.name);
        let path = self
            .inner
            .dir
            .join("logs")
            .join(uid)
            .join(name)
            .join("0.log");
        fs::read_to_string(path).unwrap_or_default()
    }

    /// CRI RunPodSandbox.
    pub fn run_pod_sandbox(&self, pod: &PodSpec) -> Result<String, tonic::Status> {
        let config = self.sandbox_config(pod);
        let handler = pod.handler.clone();
        let id = self
            .block_on("RunPodSandbox", |ch| async move {
                client(ch)
                    .run_pod_sandbox(api::RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: handler,
                    })
                    .await
            })?
            .pod_sandbox_id;
        self.inner.sandboxes.lock().unwrap().push(id.clone());
        Ok(id)
    }

    /// CRI CreateContainer (with the pod's sandbox config, as a kubelet sends it), then StartContainer: the
    /// container's id, or the first call's error.
    pub fn create_and_start(
        &self,
        sandbox: &str,
        pod: &PodSpec,
        config: api::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        let sandbox_config = self.sandbox_config(pod);
        let sandbox = sandbox.to_owned();
        let id = self
            .block_on("CreateContainer", |ch| async move {
                client(ch)
                    .create_container(api::CreateContainerRequest {
                        pod_sandbox_id: sandbox,
                        config: Some(config),
                        sandbox_config: Some(sandbox_config),
                    })
                    .await
            })?
            .container_id;
        let cid = id.clone();
        self.block_on("StartContainer", |ch| async move {
            client(ch)
                .start_container(api::StartContainerRequest { container_id: cid })
                .await
        })?;
        Ok(id)
    }

    /// CRI ContainerStatus.
    pub fn container_status(&self, id: &str) -> Result<api::ContainerStatus, tonic::Status> {
        let id = id.to_owned();
        let status = self.block_on("ContainerStatus", |ch| async move {
            client(ch)
                .container_status(api::ContainerStatusRequest {
                    container_id: id,
                    verbose: false,
                })
                .await
        })?;
        Ok(status.status.unwrap_or_default())
    }

    /// CRI PodSandboxStatus.
    pub fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, tonic::Status> {
        let id = id.to_owned();
        let status = self.block_on("PodSandboxStatus", |ch| async move {
            client(ch)
                .pod_sandbox_status(api::PodSandboxStatusRequest {
                    pod_sandbox_id: id,
                    verbose: false,
                })
                .await
        })?;
        Ok(status.status.unwrap_or_default())
    }

    /// CRI StopPodSandbox.
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), tonic::Status> {
        self.inner.stop_pod_sandbox(id)
    }

    /// CRI RemovePodSandbox.
    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), tonic::Status> {
        self.inner.remove_pod_sandbox(id)
    }

    /// The OCI config.json containerd handed the runtime for container (or sandbox) `id`, from its bundle, while
    /// the container exists (as the runtime left it: the wrapper adds its hooks to enabled containers').
    pub fn bundle_config(&self, id: &str) -> serde_json::Value {
        let path = self
            .inner
            .dir
            .join("state/io.containerd.runtime.v2.task")
            .join(K8S_NAMESPACE)
            .join(id)
            .join("config.json");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// `ctr --address <socket> -n k8s.io ARGS...` in the lab's host netns.
    pub fn ctr(&self, args: &[&str]) -> CmdOutput {
        let address = self.inner.socket.to_string_lossy();
        let mut argv = vec!["ctr", "--address", &address, "-n", K8S_NAMESPACE];
        argv.extend(args);
        run_argv(&in_netns(&self.inner.host_ns, &argv), &[])
    }

    /// The last `n` lines of containerd's log (for assertion messages).
    pub fn log_tail(&self, n: usize) -> String {
        tail(
            &fs::read_to_string(self.inner.dir.join("containerd.log")).unwrap_or_default(),
            n,
        )
    }

    /// Runs one CRI call on this containerd's channel, bounded by [`CALL_TIMEOUT`].
    fn block_on<T, F, Fut>(&self, what: &str, call: F) -> Result<T, tonic::Status>
    where
        F: FnOnce(tonic::transport::Channel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.inner.call(what, call)
    }

    /// Polls CRI `Status` until RuntimeReady and NetworkReady hold.
    fn wait_until_ready(&self, began: Instant) {
        let mut last = String::new();
        loop {
            if let Some(status) = self
                .inner
                .containerd
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "containerd exited: {status}\n=== containerd log (end) ===\n{}",
                    self.log_tail(40)
                );
            }
            if self.inner.socket.exists() {
                match self.block_on("Status", |ch| async move {
                    client(ch)
                        .status(api::StatusRequest { verbose: false })
                        .await
                }) {
                    Ok(s) => {
                        let conditions = s.status.map(|s| s.conditions).unwrap_or_default();
                        if conditions.len() >= 2 && conditions.iter().all(|c| c.status) {
                            return;
                        }
                        last = format!("{conditions:?}");
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            assert!(
                began.elapsed() < START_DEADLINE,
                "containerd's CRI was not ready within {} s (last: {last})\n=== containerd log (end) ===\n{}",
                START_DEADLINE.as_secs(),
                self.log_tail(40)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let problems = self.inner.teardown();
        if !problems.is_empty() {
            eprintln!(
                "containerd (CRI) teardown problems:\n{}",
                problems.join("\n")
            );
        }
    }
}

fn client(
    ch: tonic::transport::Channel,
) -> api::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel> {
    api::runtime_service_client::RuntimeServiceClient::new(ch)
}

/// Kubelet's default namespaces: network and IPC of the pod, PID of the container.
fn namespaces() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Pod as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

impl Inner {
    /// The channel to containerd's socket (connected once; a unix socket, so the URI is a placeholder).
    fn channel(&self) -> Result<tonic::transport::Channel, tonic::Status> {
        let mut slot = self.channel.lock().unwrap();
        if let Some(ch) = slot.as_ref() {
            return Ok(ch.clone());
        }
        let socket = self.socket.clone();
        let ch = self
            .rt
            .block_on(async move {
                tonic::transport::Endpoint::from_static("http://[::1]:50051")
                    .connect_timeout(Duration::from_secs(5))
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let socket = socket.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(socket).await?,
                            ))
                        }
                    }))
                    .await
            })
            .map_err(|e| tonic::Status::unavailable(format!("connecting to containerd: {e}")))?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, tonic::Status>
    where
        F: FnOnce(tonic::transport::Channel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let ch = self.channel()?;
        self.rt.block_on(async move {
            match tokio::time::timeout(CALL_TIMEOUT, call(ch)).await {
                Ok(r) => r.map(tonic::Response::into_inner),
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "CRI {what}: no answer within {} s",
                    CALL_TIMEOUT.as_secs()
                ))),
            }
        })
    }

    fn stop_pod_sandbox(&self, id: &str) -> Result<(), tonic::Status> {
        let id = id.to_owned();
        self.call("StopPodSandbox", |ch| async move {
            client(ch)
                .stop_pod_sandbox(api::StopPodSandboxRequest { pod_sandbox_id: id })
                .await
        })
        .map(drop)
    }

    fn remove_pod_sandbox(&self, id: &str) -> Result<(), tonic::Status> {
        let id = id.to_owned();
        self.call("RemovePodSandbox", |ch| async move {
            client(ch)
                .remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
        })
        .map(drop)
    }

    fn containerd_running(&self) -> bool {
        self.containerd
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Everything this containerd left, removed; idempotent. Returns the problems met.
    fn teardown(&self) -> Vec<String> {
        let mut done = self.torn_down.lock().unwrap();
        if *done {
            return Vec::new();
        }
        *done = true;
        let mut problems = Vec::new();

        // 1. Pods, while containerd still answers: every one it lists, plus those we were given.
        if self.containerd_running() {
            let listed = self.call("ListPodSandbox", |ch| async move {
                client(ch)
                    .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
                    .await
            });
            let mut ids: Vec<String> = match listed {
                Ok(l) => l.items.into_iter().map(|p| p.id).collect(),
                Err(e) => {
                    problems.push(format!("CRI ListPodSandbox: {e}"));
                    Vec::new()
                }
            };
            for id in self.sandboxes.lock().unwrap().iter() {
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
            for id in &ids {
                // A pod the test removed already answers NotFound: not a problem.
                for (what, r) in [
                    ("StopPodSandbox", self.stop_pod_sandbox(id)),
                    ("RemovePodSandbox", self.remove_pod_sandbox(id)),
                ] {
                    if let Err(e) = r {
                        if e.code() != tonic::Code::NotFound {
                            problems.push(format!("CRI {what} {id}: {e}"));
                        }
                    }
                }
            }
            self.sandboxes.lock().unwrap().extend(ids);
        }
        *self.channel.lock().unwrap() = None;

        // 2. containerd, then whatever is still in the pods' cgroups.
        stop_daemon(&self.containerd, &mut problems);
        for pid in self.cgroup_pids() {
            problems.push(format!(
                "killing container process {pid} that outlived containerd"
            ));
            kill(pid, Signal::SIGKILL);
        }

        // 3. Shims naming this containerd's paths (none, normally: they exit with their pods).
        let needle = self.dir.to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_mentioning(&needle);
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for (pid, argv) in &left {
                    problems.push(format!(
                        "killing a process that outlived containerd: {pid} {argv}"
                    ));
                    kill(*pid, Signal::SIGKILL);
                }
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        for pid in self.cgroup_pids() {
            kill(pid, Signal::SIGKILL);
        }

        // 4. Sockets of killed shims (one shim per pod, named by a hash of socket, namespace and sandbox id).
        for id in self.sandboxes.lock().unwrap().iter() {
            let key = format!("{}/{K8S_NAMESPACE}/{id}", self.socket.display());
            let mut cmd = Command::new("sha256sum");
            cmd.env("PATH", LAB_PATH);
            let out = output_with_stdin(cmd, key.as_bytes(), "sha256sum");
            if let Some(hash) = out.stdout.split_whitespace().next() {
                let sock = Path::new(SHIM_SOCKET_DIR).join(hash);
                if sock.exists() {
                    problems.push(format!(
                        "removing shim socket {} of pod {id}",
                        sock.display()
                    ));
                    let _ = fs::remove_file(&sock);
                }
            }
        }

        // 5. libcni's cached results of this lab's network (a pod removed through CRI leaves none).
        let network = format!("wgl-{}-", self.lab_id);
        if let Ok(entries) = fs::read_dir(CNI_RESULTS_DIR) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&network) {
                    problems.push(format!("removing CNI result {}", e.path().display()));
                    let _ = fs::remove_file(e.path());
                }
            }
        }

        // 6. Mounts under the dir (the pods' netns and shm), cgroups deepest first, the dir.
        problems.extend(unmount_under(&[&self.dir]));
        for dir in super::docker::cgroup_dirs_under(&self.cgroup_parent)
            .into_iter()
            .rev()
        {
            if let Err(e) = fs::remove_dir(&dir) {
                if e.kind() != ErrorKind::NotFound {
                    problems.push(format!("removing cgroup {}: {e}", dir.display()));
                }
            }
        }
        if thread::panicking() {
            if let Ok(log) = fs::read_to_string(self.dir.join("containerd.log")) {
                eprintln!(
                    "=== {} (end) ===\n{}",
                    self.dir.join("containerd.log").display(),
                    tail(&log, 60)
                );
            }
        }
        if let Err(e) = remove_dir_all_retrying(&self.dir) {
            problems.push(format!("removing {}: {e}", self.dir.display()));
        }
        problems
    }

    /// The pids in the pods' cgroups.
    fn cgroup_pids(&self) -> Vec<u32> {
        super::docker::cgroup_pids_under(&self.cgroup_parent)
    }
}

/// SIGTERM to containerd, up to 5 s for it to exit, then SIGKILL.
fn stop_daemon(slot: &Mutex<Option<Child>>, problems: &mut Vec<String>) {
    let Some(mut child) = slot.lock().unwrap().take() else {
        return;
    };
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    kill(child.id(), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    problems.push(format!(
        "containerd ({}) ignored SIGTERM for 5 s; killing it",
        child.id()
    ));
    let _ = child.kill();
    let _ = child.wait();
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fails the test (never skips it) when the machine lacks something the CRI lab needs.
fn check_cri_prerequisites() {
    let mut missing: Vec<String> = CRI_TOOLS
        .iter()
        .filter(|(tool, _)| resolve_tool(tool).is_none())
        .map(|(tool, package)| {
            format!("`{tool}` not found: install the Debian package `{package}`")
        })
        .collect();
    for plugin in ["bridge", "host-local", "loopback"] {
        if !super::is_executable(&Path::new(CNI_BIN_DIR).join(plugin)) {
            missing.push(format!(
                "the CNI plugin {CNI_BIN_DIR}/{plugin} is missing: install the Debian package \
                 `containernetworking-plugins`"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "the CRI (Kubernetes) lab cannot run on this machine:\n  {}",
        missing.join("\n  ")
    );
}
