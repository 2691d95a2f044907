//! Kubernetes through a real CRI: containerd 1.6's CRI plugin (started by the lab in its host netns, with CNI and
//! the runtime handlers `wg-oci-hook install containerd` prints; see `tests/lab/cri.rs`), driven with the calls a
//! kubelet makes: RunPodSandbox (pod annotations, runtime handler), CreateContainer + StartContainer per app
//! container, StopPodSandbox, RemovePodSandbox. No kubelet, no API server. Needs root, containerd, runc,
//! containernetworking-plugins, wireguard-go, busybox-static; fails (never skips) without them.
//!
//! A pod is one network namespace: the sandbox's, which every app container joins. The tunnel must be there
//! before the first app container's first instruction, be the one both app containers use, and be gone with the
//! pod.

use crate::lab::*;
use std::fs;
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
/// The two app containers of every test pod.
const APPS: [&str; 2] = ["app-a", "app-b"];

/// What one app container recorded (see [`app_script`]).
struct AppOutput {
    name: &'static str,
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

/// RunPodSandbox, then for each app container CreateContainer + StartContainer and its records; panics with
/// the CRI error (the hook's message, relayed by containerd) and containerd's log if a call fails.
fn run_pod(lab: &Lab, d: &Containerd, spec: PodSpec, probe: &str) -> Pod {
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
    let mut apps = Vec::new();
    for name in APPS {
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
            name,
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
            d.container_log(&spec, app.name)
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
fn assert_one_tunnel_for_the_pod(lab: &Lab, d: &Containerd, spec: PodSpec, dns: (&str, &str)) {
    let pod = run_pod(lab, d, spec, TUNNEL_NC);
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
        lab.responder_peer_ips(),
        [CLIENT_TUNNEL_V4, CLIENT_TUNNEL_V4],
        "the server saw both app containers come from the tunnel's address\n{shown}"
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
    let pod = run_pod(&lab, &d, spec, &format!("ping -c 1 -W 2 {CNI_GATEWAY}"));
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

/// A pod annotated `wg.enable=true` through the `wg` handler: one tunnel for the pod, used by both app
/// containers.
#[test]
fn pod_gets_one_tunnel_that_both_app_containers_use() {
    let lab = Lab::new("k8s_pod_tunnel");
    let d = lab.start_cri(&[None]);
    let spec = PodSpec {
        name: "tunnelled".into(),
        handler: d.handler(None),
        annotations: vec![
            ("wg.enable".into(), "true".into()),
            ("wg.profile".into(), "lab".into()),
        ],
    };
    assert_one_tunnel_for_the_pod(&lab, &d, spec, (DNS_SERVER, DNS_SEARCH));
}

/// The handler `install containerd --profile k8s` prints (`wg-k8s`, BinaryName `wg-oci-runtime@k8s`) gives a
/// pod without any wg annotation the profile `k8s` (its own DNS line tells it from the default `lab`).
#[test]
fn a_runtime_bound_profile_handler_applies_its_profile() {
    const K8S_DNS: &str = "10.77.0.54";
    const K8S_SEARCH: &str = "k8s.lab.example";
    let lab = Lab::new("k8s_bound_profile");
    let mut config = lab.client_config();
    config.dns = vec![K8S_DNS.into(), K8S_SEARCH.into()];
    let k8s_conf = lab.write_file("k8s.conf", &config.render(), 0o600);
    let mut policy = lab.policy();
    policy.profiles.push(LabProfile::new("k8s", k8s_conf));
    lab.write_policy(&policy);
    let d = lab.start_cri(&[None, Some("k8s")]);
    let handler = d.handler(Some("k8s"));
    assert_ne!(handler, d.handler(None));
    let spec = PodSpec {
        name: "bound".into(),
        handler,
        annotations: Vec::new(),
    };
    assert_one_tunnel_for_the_pod(&lab, &d, spec, (K8S_DNS, K8S_SEARCH));
}

/// What every app container of `pod` recorded, for failure messages.
fn shown(pod: &Pod) -> String {
    pod.apps
        .iter()
        .map(AppOutput::show)
        .collect::<Vec<_>>()
        .join("\n")
}
