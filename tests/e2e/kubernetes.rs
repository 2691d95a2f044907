//! Kubernetes through a real CRI: containerd 1.6's CRI plugin (started by the lab in its host netns, with CNI and
//! the runtime handlers `wg-oci-hook install containerd` adds to its config.toml; see `tests/lab/cri.rs`),
//! driven with the calls a kubelet makes: RunPodSandbox (pod annotations, runtime handler), CreateContainer +
//! StartContainer per app container, StopPodSandbox, RemovePodSandbox. No kubelet, no API server. Needs root,
//! containerd, runc, containernetworking-plugins, wireguard-go, busybox-static; fails (never skips) without them.
//!
//! A pod is one network namespace: the sandbox's, which every app container joins. The tunnel must be there
//! before the first app container's first instruction, be the one both app containers use, and be gone with the
//! pod.
//!
//! The tunnelled pods are the examples users copy (`examples/kubernetes/`): what the tests send over CRI (the
//! pod's name and annotations, the runtime handler of its RuntimeClass, its containers' names) is read from
//! those files, and the handlers containerd has are the ones the install lines of `runtimeclass.yaml` print. The
//! containers' images and commands are the lab's (its busybox, a workload that records what it sees).

use crate::examples::{
    add_profile, example, install_commands, option_value, yaml_documents, yaml_str,
};
use crate::lab::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// An app container's workload: records what it sees first (interfaces, then resolv.conf and addresses), then
/// runs `probe` (its output to /out/probe, its exit code to /out/probe.rc), marks /out/done and stays up as a
/// pod's container does.
fn app_script(probe: &str) -> String {
    format!(
        "cat /proc/net/dev > /out/netdev\n\
         ls /sys/class/net > /out/links\n\
         cat /etc/resolv.conf > /out/resolv\n\
         ip -o -4 addr > /out/addr\n\
         {probe} > /out/probe 2>&1; echo $? > /out/probe.rc\n\
         echo done > /out/done\n\
         exec sleep 2147483647\n"
    )
}

/// Through the tunnel to the lab's responder, which answers [`MARKER`].
const TUNNEL_NC: &str = "nc -w 2 10.77.0.1 8080 </dev/null";
/// The two app containers of the plain (not tunnelled) pod.
const APPS: [&str; 2] = ["app-a", "app-b"];

/// What one app container recorded (see [`app_script`]).
struct AppOutput {
    name: String,
    id: String,
    netdev: String,
    links: String,
    resolv: String,
    addr: String,
    probe: String,
    probe_rc: String,
}

impl AppOutput {
    fn show(&self) -> String {
        format!(
            "--- {} ({}) ---\n/proc/net/dev (first instruction):\n{}\n/sys/class/net: {}\nresolv.conf:\n{}\naddr:\n{}\nprobe (rc {}):\n{}",
            self.name,
            self.id,
            self.netdev.trim_end(),
            self.links.split_whitespace().collect::<Vec<_>>().join(" "),
            self.resolv.trim_end(),
            self.addr.trim_end(),
            self.probe_rc.trim(),
            self.probe.trim_end()
        )
    }

    fn links(&self) -> Vec<&str> {
        self.links.split_whitespace().collect()
    }
}

/// A running pod: its sandbox and its two app containers, each started and its first records written.
struct Pod {
    spec: PodSpec,
    sandbox: String,
    apps: Vec<AppOutput>,
}

/// RunPodSandbox, then for each app container (named `apps`) CreateContainer + StartContainer and its records;
/// panics with the CRI error (the hook's message, relayed by containerd) and containerd's log if a call fails.
fn run_pod(lab: &Lab, d: &Containerd, spec: PodSpec, apps: &[String], probe: &str) -> Pod {
    let sandbox = d.run_pod_sandbox(&spec).unwrap_or_else(|e| {
        panic!(
            "RunPodSandbox (handler {}) failed: {}\n=== containerd log (end) ===\n{}",
            spec.handler,
            e.message(),
            d.log_tail(30)
        )
    });
    lab.track_container_id(&sandbox);
    println!(
        "sandbox {sandbox} config.json (excerpt):\n{}",
        config_excerpt(&d.bundle_config(&sandbox))
    );
    let names = apps;
    let mut apps = Vec::new();
    for name in names {
        let name = name.as_str();
        let config = d.container_config(&spec, name, &app_script(probe));
        let id = d
            .create_and_start(&sandbox, &spec, config)
            .unwrap_or_else(|e| {
                panic!(
                    "CreateContainer/StartContainer of {name} in pod {} (handler {}) failed:\n{}\n{}\n=== containerd log (end) ===\n{}",
                    spec.name,
                    spec.handler,
                    e.message(),
                    apps.iter().map(AppOutput::show).collect::<Vec<_>>().join("\n"),
                    d.log_tail(30)
                )
            });
        lab.track_container_id(&id);
        let read = |file: &str| {
            d.wait_for_output(&spec, name, file).unwrap_or_else(|| {
                panic!(
                    "{name} ({id}) never finished its records; status: {:?}\nlog:\n{}",
                    d.container_status(&id),
                    d.container_log(&spec, name)
                )
            })
        };
        let app = AppOutput {
            name: name.to_owned(),
            netdev: read("netdev"),
            links: read("links"),
            resolv: read("resolv"),
            addr: read("addr"),
            probe: read("probe"),
            probe_rc: read("probe.rc"),
            id: id.clone(),
        };
        println!(
            "{}\n{name} config.json (excerpt):\n{}",
            app.show(),
            config_excerpt(&d.bundle_config(&id))
        );
        apps.push(app);
    }
    // Both app containers still run: they share the pod's netns at once.
    for app in &apps {
        let status = d.container_status(&app.id).expect("ContainerStatus");
        assert_eq!(
            status.state,
            cri_api::ContainerState::ContainerRunning as i32,
            "{} is not running: {status:?}\n{}",
            app.name,
            d.container_log(&spec, &app.name)
        );
    }
    Pod {
        spec,
        sandbox,
        apps,
    }
}

/// What the tests show of a config.json: the annotations, the namespaces, the resolv.conf/hosts/hostname mounts,
/// the hooks (pretty JSON).
fn config_excerpt(config: &serde_json::Value) -> String {
    let mounts: Vec<&serde_json::Value> = config["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["destination"]
                .as_str()
                .is_some_and(|d| d.starts_with("/etc/") || d == "/out")
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "annotations": config["annotations"],
        "linux.namespaces": config["linux"]["namespaces"],
        "mounts (/etc/*, /out)": mounts,
        "hooks": config["hooks"],
        "process.args": config["process"]["args"],
    }))
    .unwrap()
}

fn annotation<'a>(config: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    config["annotations"][key].as_str()
}

/// The network namespace path in a config.json.
fn netns_of(config: &serde_json::Value) -> String {
    config["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The host file bind-mounted at /etc/resolv.conf in a config.json.
fn resolv_conf_source(config: &serde_json::Value) -> Option<String> {
    config["mounts"]
        .as_array()?
        .iter()
        .find(|m| m["destination"] == "/etc/resolv.conf")
        .and_then(|m| m["source"].as_str())
        .map(str::to_owned)
}

/// The `wg0` lines of `/proc/net/dev` text.
fn has_wg0(netdev: &str) -> bool {
    netdev.lines().any(|l| l.trim_start().starts_with("wg0:"))
}

/// A pod annotated (or bound by its handler) for a tunnel: the tunnel is in the pod netns before app-a's first
/// instruction; both app containers see it, reach the lab's server through it and read the profile's DNS
/// (`nameserver`, `search`); after StopPodSandbox resolv.conf is containerd's again, and after
/// RemovePodSandbox nothing of the tunnel is left.
fn assert_one_tunnel_for_the_pod(
    lab: &Lab,
    d: &Containerd,
    spec: PodSpec,
    apps: &[String],
    dns: (&str, &str),
) {
    // What the lab's server saw before this pod (an earlier pod of the test's).
    let seen_before = lab.responder_peer_ips().len();
    let pod = run_pod(lab, d, spec, apps, TUNNEL_NC);
    let shown = shown(&pod);
    let sandbox_config = d.bundle_config(&pod.sandbox);
    assert_eq!(
        annotation(&sandbox_config, "io.kubernetes.cri.container-type"),
        Some("sandbox")
    );
    let app_config = d.bundle_config(&pod.apps[0].id);
    // The pod's wg.* annotations reach both runtimes (pod_annotations and container_annotations in the handler).
    for (key, value) in &pod.spec.annotations {
        for (what, config) in [("sandbox", &sandbox_config), ("app-a", &app_config)] {
            assert_eq!(
                annotation(config, key),
                Some(value.as_str()),
                "the {what}'s config.json lacks the pod annotation {key}\n{}",
                config_excerpt(config)
            );
        }
    }
    let resolv_source = resolv_conf_source(&app_config)
        .unwrap_or_else(|| panic!("no /etc/resolv.conf mount in the app's config.json"));
    for app in &pod.apps {
        assert!(
            has_wg0(&app.netdev),
            "{}: no wg0 at its first instruction\n{shown}",
            app.name
        );
        assert!(
            app.probe.contains(MARKER.trim_end()),
            "{}: no answer from the lab server through the tunnel\n{shown}",
            app.name
        );
        let (nameserver, search) = dns;
        assert!(
            app.resolv.contains(&format!("nameserver {nameserver}"))
                && app.resolv.contains(&format!("search {search}"))
                && !app.resolv.contains(CLUSTER_DNS),
            "{}: resolv.conf does not hold the profile's DNS ({nameserver}, {search})\n{shown}",
            app.name
        );
    }
    assert_eq!(
        lab.responder_peer_ips()[seen_before..],
        vec![CLIENT_TUNNEL_V4; pod.apps.len()],
        "the server saw every app container come from the tunnel's address\n{shown}"
    );
    // One tunnel in the pod's netns, seen from outside.
    let netns = netns_of(&sandbox_config);
    let links = lab.run(&["nsenter", &format!("--net={netns}"), "ip", "-o", "link"]);
    links.assert_success("listing the pod netns' links");
    let names = parse_link_names(&links.stdout);
    assert_eq!(
        names.iter().filter(|n| n.starts_with("wg")).count(),
        1,
        "the pod netns should hold exactly one tunnel: {names:?}"
    );

    // StopPodSandbox: every poststop has run once it returns (or soon after): resolv.conf is containerd's.
    d.stop_pod_sandbox(&pod.sandbox)
        .unwrap_or_else(|e| panic!("StopPodSandbox: {}", e.message()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(&resolv_source).unwrap_or_default();
        if text.contains(CLUSTER_DNS) && !text.contains(dns.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after StopPodSandbox the pod's resolv.conf ({resolv_source}) still holds:\n{text}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    d.remove_pod_sandbox(&pod.sandbox)
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {}", e.message()));
    assert_nothing_left_of_the_pod(lab, &pod);
}

/// After RemovePodSandbox: no file in the lab's state dir (records, memberships, leases, temp files), no hook daemon of this lab, no `wgo*` link in the
/// lab's host netns, nothing of the sandbox's or an app container's (waiting up to 10 s).
fn assert_nothing_left_of_the_pod(lab: &Lab, pod: &Pod) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Every file but the profiles' lease locks, which stay as the profiles do.
        let records: Vec<String> = state_files(&lab.state_dir)
            .into_iter()
            .filter_map(|f| Some(f.strip_prefix(&lab.state_dir).ok()?.display().to_string()))
            .filter(|f| !(f.starts_with("leases/") && f.ends_with(".lock")))
            .collect();
        let daemons = lab.hook_daemons();
        if records.is_empty() && daemons.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod {} left records {records:?} and daemons {daemons:?}",
            pod.spec.name
        );
        thread::sleep(Duration::from_millis(100));
    }
    lab.assert_nothing_left(&pod.sandbox);
    for app in &pod.apps {
        lab.assert_nothing_left(&app.id);
    }
}

/// The harness on its own: a pod without wg annotations through the `wg` handler runs like any pod: CNI gives
/// it eth0 in the CNI subnet (the same in both app containers: one netns), its gateway answers, resolv.conf is
/// the pod's DNS config, the wrapper adds no hooks, and the hook leaves nothing.
#[test]
fn plain_pod_runs_through_cri() {
    let lab = Lab::new("k8s_plain");
    let d = lab.start_cri(&[None]);
    let spec = PodSpec {
        name: "plain".into(),
        handler: d.handler(None),
        annotations: Vec::new(),
    };
    let apps = APPS.map(String::from);
    let pod = run_pod(
        &lab,
        &d,
        spec,
        &apps,
        &format!("ping -c 1 -W 2 {CNI_GATEWAY}"),
    );
    let shown = shown(&pod);
    let sandbox_config = d.bundle_config(&pod.sandbox);
    assert_eq!(
        annotation(&sandbox_config, "io.kubernetes.cri.container-type"),
        Some("sandbox"),
        "{}",
        config_excerpt(&sandbox_config)
    );
    let status = d
        .pod_sandbox_status(&pod.sandbox)
        .expect("PodSandboxStatus");
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    assert!(
        ip.starts_with("198.18.2."),
        "the pod's IP {ip:?} is not in {CNI_SUBNET}"
    );
    for app in &pod.apps {
        let config = d.bundle_config(&app.id);
        assert_eq!(
            annotation(&config, "io.kubernetes.cri.container-type"),
            Some("container")
        );
        assert_eq!(
            annotation(&config, "io.kubernetes.cri.sandbox-id"),
            Some(pod.sandbox.as_str())
        );
        assert!(
            config["hooks"]["createRuntime"].is_null(),
            "the wrapper added hooks to an unannotated container:\n{}",
            config_excerpt(&config)
        );
        assert_eq!(app.links(), ["eth0", "lo"], "{shown}");
        assert!(!has_wg0(&app.netdev), "{shown}");
        assert!(
            app.addr.contains(&format!("inet {ip}/24")),
            "{}: eth0 is not the pod's {ip}\n{shown}",
            app.name
        );
        assert_eq!(
            app.probe_rc.trim(),
            "0",
            "the CNI gateway did not answer\n{shown}"
        );
        assert!(
            app.resolv.contains(&format!("nameserver {CLUSTER_DNS}"))
                && app
                    .resolv
                    .contains(&format!("search {}", CLUSTER_SEARCH.join(" "))),
            "resolv.conf is not the pod's DNS config\n{shown}"
        );
    }
    d.stop_pod_sandbox(&pod.sandbox)
        .unwrap_or_else(|e| panic!("StopPodSandbox: {}", e.message()));
    d.remove_pod_sandbox(&pod.sandbox)
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {}", e.message()));
    let left = d.ctr(&["containers", "ls", "-q"]);
    left.assert_success("ctr containers ls");
    assert!(
        left.stdout.trim().is_empty(),
        "containers left after RemovePodSandbox:\n{left}"
    );
    assert_nothing_left_of_the_pod(&lab, &pod);
}

/// `examples/kubernetes/pod-annotated.yaml`: a pod annotated `wg.enable: "true"` and `wg.profile` through the
/// `wg` handler: one tunnel for the pod, of the profile it names, used by both app containers.
#[test]
fn pod_gets_one_tunnel_that_both_app_containers_use() {
    let examples = Examples::read();
    let pod = examples.pod("pod-annotated.yaml");
    let lab = Lab::new("k8s_pod_tunnel");
    let profile = pod
        .annotations
        .get("wg.profile")
        .unwrap_or_else(|| panic!("{}: no wg.profile annotation", pod.file.display()));
    let dns = add_profile(&lab, profile);
    let d = examples.start_cri(&lab);
    assert_eq!(
        examples.profile_of(&d, &pod.handler),
        None,
        "{}: the handler {} binds a profile: the annotation would not be what applies it",
        pod.file.display(),
        pod.handler
    );
    assert_one_tunnel_for_the_pod(&lab, &d, pod.spec(), &pod.containers, dns);
}

/// `examples/kubernetes/pod-wg-vpn.yaml`: the handler `install containerd --profile vpn` adds (`wg-vpn`,
/// BinaryName `wg-oci-runtime@vpn`) gives a pod without any wg annotation the profile `vpn` (its own DNS line
/// tells it from the default `lab`).
#[test]
fn a_runtime_bound_profile_handler_applies_its_profile() {
    let examples = Examples::read();
    let pod = examples.pod("pod-wg-vpn.yaml");
    assert!(
        pod.annotations.is_empty(),
        "{}: a pod on a bound handler needs no annotation",
        pod.file.display()
    );
    let lab = Lab::new("k8s_bound_profile");
    let dns = examples.add_profiles(&lab);
    let d = examples.start_cri(&lab);
    examples.profile_of(&d, &pod.handler).unwrap_or_else(|| {
        panic!(
            "{}: the handler {} binds no profile",
            pod.file.display(),
            pod.handler
        )
    });
    assert_one_tunnel_for_the_pod(&lab, &d, pod.spec(), &pod.containers, dns);
}

/// The two example pods on one static profile, as their comments say: the second is refused while the first
/// runs (RunPodSandbox fails with the hook's line), and starts once the first is gone.
#[test]
fn example_pods_on_one_static_profile_take_turns() {
    let examples = Examples::read();
    let (first, second) = (
        examples.pod("pod-annotated.yaml"),
        examples.pod("pod-wg-vpn.yaml"),
    );
    let lab = Lab::new("k8s_take_turns");
    let dns = examples.add_profiles(&lab);
    let d = examples.start_cri(&lab);
    let profile = examples
        .profile_of(&d, &second.handler)
        .expect("pod-wg-vpn.yaml's handler binds a profile");
    assert_eq!(
        first.annotations.get("wg.profile"),
        Some(&profile),
        "the example pods name different profiles"
    );
    let pod = run_pod(&lab, &d, first.spec(), &first.containers, TUNNEL_NC);
    let refused = d
        .run_pod_sandbox(&second.spec())
        .expect_err("a second pod started on the static profile of a running one");
    let message = refused.message();
    println!("refused as the examples say: {message}");
    assert!(
        message.contains(&format!(
            "profile \"{profile}\" is in use by the tunnel of container"
        )),
        "RunPodSandbox's error lacks the hook's line:\n{message}"
    );
    d.stop_pod_sandbox(&pod.sandbox)
        .unwrap_or_else(|e| panic!("StopPodSandbox: {}", e.message()));
    d.remove_pod_sandbox(&pod.sandbox)
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {}", e.message()));
    assert_nothing_left_of_the_pod(&lab, &pod);
    assert_one_tunnel_for_the_pod(&lab, &d, second.spec(), &second.containers, dns);
}

/// `examples/kubernetes/`, read as a cluster would: the RuntimeClasses and the install lines of
/// `runtimeclass.yaml`.
struct Examples {
    /// `runtimeclass.yaml`.
    file: PathBuf,
    /// (RuntimeClass name, its handler).
    classes: Vec<(String, String)>,
    /// The `--profile` of each `wg-oci-hook install containerd` line (None: without), as `start_cri` takes them.
    profiles: Vec<Option<String>>,
}

/// A pod of `examples/kubernetes/`: what a kubelet sends for it over CRI.
struct ExamplePod {
    file: PathBuf,
    name: String,
    annotations: BTreeMap<String, String>,
    /// The handler of its RuntimeClass.
    handler: String,
    containers: Vec<String>,
}

impl ExamplePod {
    fn spec(&self) -> PodSpec {
        PodSpec {
            name: self.name.clone(),
            handler: self.handler.clone(),
            annotations: self
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl Examples {
    fn read() -> Examples {
        let (file, text) = example("kubernetes/runtimeclass.yaml");
        let mut classes = Vec::new();
        for doc in yaml_documents(&file, &text) {
            assert_eq!(
                doc["kind"].as_str(),
                Some("RuntimeClass"),
                "{}",
                file.display()
            );
            assert_eq!(
                doc["apiVersion"].as_str(),
                Some("node.k8s.io/v1"),
                "{}",
                file.display()
            );
            classes.push((
                yaml_str(&file, &doc["metadata"]["name"], "metadata.name").to_owned(),
                yaml_str(&file, &doc["handler"], "handler").to_owned(),
            ));
        }
        let profiles: Vec<Option<String>> = install_commands(&file, &text, "containerd")
            .into_iter()
            .map(|args| {
                let profile = option_value(&args, "--profile").map(str::to_owned);
                let known = 2 + if profile.is_some() { 2 } else { 0 };
                assert_eq!(
                    args.len(),
                    known,
                    "{}: `{}`: the lab installs handlers with --profile alone",
                    file.display(),
                    args.join(" ")
                );
                profile
            })
            .collect();
        assert!(
            !classes.is_empty() && !profiles.is_empty(),
            "{}: no RuntimeClass or no install line",
            file.display()
        );
        Examples {
            file,
            classes,
            profiles,
        }
    }

    /// Every profile the install lines bind, in the lab's policy (as the file's comment has it: `install containerd
    /// --profile P` refuses a profile the policy does not have); the DNS (server, search domain) they give.
    fn add_profiles(&self, lab: &Lab) -> (&'static str, &'static str) {
        let bound: Vec<&str> = self.profiles.iter().flatten().map(String::as_str).collect();
        assert_eq!(
            bound.len(),
            1,
            "{}: one install line binds a profile",
            self.file.display()
        );
        add_profile(lab, bound[0])
    }

    /// containerd with CRI for `lab`, with the handlers of the install lines; every RuntimeClass's handler must
    /// be one of them.
    fn start_cri(&self, lab: &Lab) -> Containerd {
        let profiles: Vec<Option<&str>> = self.profiles.iter().map(Option::as_deref).collect();
        let d = lab.start_cri(&profiles);
        let installed: Vec<String> = profiles.iter().map(|p| d.handler(*p)).collect();
        for (class, handler) in &self.classes {
            assert!(
                installed.contains(handler),
                "{}: RuntimeClass {class} names the handler {handler}, which no install line makes ({installed:?})",
                self.file.display()
            );
        }
        d
    }

    /// The profile the handler `handler` binds (`install containerd --profile P`), None for one that binds
    /// none.
    fn profile_of(&self, d: &Containerd, handler: &str) -> Option<String> {
        self.profiles
            .iter()
            .find(|p| d.handler(p.as_deref()) == handler)
            .unwrap_or_else(|| panic!("no install line makes the handler {handler}"))
            .clone()
    }

    /// The pod of `examples/kubernetes/<name>`: one Pod whose annotations are strings (Kubernetes refuses an
    /// unquoted `true`), whose RuntimeClass is one of `runtimeclass.yaml`.
    fn pod(&self, name: &str) -> ExamplePod {
        let (file, text) = example(&format!("kubernetes/{name}"));
        let docs = yaml_documents(&file, &text);
        assert_eq!(docs.len(), 1, "{}: one document", file.display());
        let pod = &docs[0];
        assert_eq!(pod["kind"].as_str(), Some("Pod"), "{}", file.display());
        assert_eq!(pod["apiVersion"].as_str(), Some("v1"), "{}", file.display());
        let mut annotations = BTreeMap::new();
        if let Some(map) = pod["metadata"]["annotations"].as_mapping() {
            for (key, value) in map {
                let key = yaml_str(&file, key, "an annotation's name");
                let value = yaml_str(&file, value, &format!("annotation {key}"));
                annotations.insert(key.to_owned(), value.to_owned());
            }
        }
        let class = yaml_str(
            &file,
            &pod["spec"]["runtimeClassName"],
            "spec.runtimeClassName",
        );
        let handler = self
            .classes
            .iter()
            .find(|(c, _)| c == class)
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| {
                panic!(
                    "{}: RuntimeClass {class} is not in {}",
                    file.display(),
                    self.file.display()
                )
            });
        let containers: Vec<String> = pod["spec"]["containers"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|c| yaml_str(&file, &c["name"], "a container's name").to_owned())
            .collect();
        assert!(
            containers.len() >= 2,
            "{}: two containers at least, to show that they share the pod's tunnel",
            file.display()
        );
        ExamplePod {
            name: yaml_str(&file, &pod["metadata"]["name"], "metadata.name").to_owned(),
            file,
            annotations,
            handler,
            containers,
        }
    }
}

/// What every app container of `pod` recorded, for failure messages.
fn shown(pod: &Pod) -> String {
    pod.apps
        .iter()
        .map(AppOutput::show)
        .collect::<Vec<_>>()
        .join("\n")
}
