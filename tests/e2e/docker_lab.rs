//! The Docker part of the lab (`tests/lab/docker.rs`) proves itself with plain runc: a private dockerd 20.10 with its
//! own containerd in the lab's host netns runs busybox containers through an extra runtime, isolated in their own
//! netns, and the lab's teardown leaves nothing (processes, mounts, cgroups, shim sockets, namespaces, dirs).
//!
//! It also records how each engine calls its OCI runtime (through the lab's logging runtime): Docker through
//! containerd-shim-runc-v2, podman through conmon, and containerd's own `ctr`. With `WGL_SAVE_FIXTURES=<dir>`
//! set, the config.json each engine handed the runtime at `create` and the calls' argv are written there
//! (that is how `tests/fixtures/` was made).
//!
//! Needs root and the Debian packages docker.io (containerd, runc), podman, busybox-static; fails (never skips)
//! without them.

use crate::lab::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What must be gone once a lab that ran dockerd is dropped.
struct Traces {
    dir: PathBuf,
    host_ns: String,
    server_ns: String,
    exec_root: PathBuf,
    cgroup_parent: String,
    pids: Vec<u32>,
}

impl Traces {
    fn of(lab: &Lab, d: &Dockerd) -> Traces {
        Traces {
            dir: lab.dir.clone(),
            host_ns: lab.host_ns.clone(),
            server_ns: lab.server_ns.clone(),
            exec_root: d.exec_root().to_owned(),
            cgroup_parent: d.cgroup_parent().to_owned(),
            pids: vec![d.pid(), d.containerd_pid()],
        }
    }

    #[track_caller]
    fn assert_gone(&self) {
        let mut left = Vec::new();
        for needle in [&self.dir, &self.exec_root] {
            for (pid, argv) in processes_mentioning(&needle.to_string_lossy()) {
                left.push(format!("process {pid}: {argv}"));
            }
        }
        for pid in &self.pids {
            if !argv_of(*pid).is_empty() {
                left.push(format!("daemon pid {pid} still runs"));
            }
        }
        let netns = fs::read_dir("/var/run/netns")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for ns in [&self.host_ns, &self.server_ns] {
            if netns.contains(ns) {
                left.push(format!("netns {ns}"));
            }
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        for needle in [&self.dir, &self.exec_root] {
            let needle = needle.to_string_lossy();
            for m in mounts.lines().filter(|l| l.contains(needle.as_ref())) {
                left.push(format!("mount {m}"));
            }
        }
        for path in [&self.dir, &self.exec_root] {
            if path.exists() {
                left.push(format!("dir {}", path.display()));
            }
        }
        let rel = self.cgroup_parent.trim_start_matches('/');
        for e in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            if e.path().join(rel).exists() {
                left.push(format!("cgroup {}", e.path().join(rel).display()));
            }
        }
        if Path::new("/sys/fs/cgroup").join(rel).exists() {
            left.push(format!("cgroup /sys/fs/cgroup/{rel}"));
        }
        assert!(left.is_empty(), "left behind:\n  {}", left.join("\n  "));
    }
}

/// [`ns_id`] of a namespace file that must exist.
fn ns(path: &str) -> (u64, u64) {
    ns_id(path).unwrap_or_else(|| panic!("{path}: no such namespace file"))
}

fn save_fixture(name: &str, text: &str) {
    if let Ok(dir) = std::env::var("WGL_SAVE_FIXTURES") {
        let path = Path::new(&dir).join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        println!("saved {}", path.display());
    }
}

fn calls_text(calls: &[RuntimeCall]) -> String {
    calls
        .iter()
        .map(|c| format!("cwd={}\n  {}\n", c.cwd, c.line()))
        .collect()
}

/// A dockerd of `lab` with an extra runtime `lab-runc` (runc itself), and the lab's busybox image in it.
fn lab_runc_dockerd(lab: &Lab) -> (Dockerd, String) {
    let d = lab.start_dockerd(&[("lab-runc", &real_runc(), &[])]);
    println!("dockerd + containerd answered after {:?}", d.startup());
    let image = d.import_busybox(lab);
    (d, image)
}

/// `docker run -d --runtime lab-runc --network none IMAGE /bin/sh -c 'sleep 300'`; returns the container id.
fn start_sleeper(d: &Dockerd, image: &str) -> String {
    let out = d.docker(&[
        "run",
        "-d",
        "--runtime",
        "lab-runc",
        "--network",
        "none",
        image,
        "/bin/sh",
        "-c",
        "sleep 300",
    ]);
    out.assert_success("docker run -d");
    out.stdout.trim().to_owned()
}

/// dockerd with an extra runtime `lab-runc` (runc itself): a container prints and shows only `lo`; a sleeping
/// one lives in a netns of its own; the lab's teardown then leaves nothing.
#[test]
fn dockerd_runs_busybox_through_an_extra_runtime() {
    let began = Instant::now();
    let lab = Lab::new("dockerd_runs_busybox_through_an_extra_runtime");
    let (d, image) = lab_runc_dockerd(&lab);

    let out = d.docker(&[
        "run",
        "--rm",
        "--runtime",
        "lab-runc",
        "--network",
        "none",
        &image,
        "/bin/sh",
        "-c",
        "echo hello-from-docker; ip -o link",
    ]);
    out.assert_success("docker run");
    assert!(out.stdout.contains("hello-from-docker\n"), "{out}");
    assert_eq!(parse_link_names(&out.stdout), ["lo"], "{out}");

    let cid = start_sleeper(&d, &image);
    let out = d.docker(&[
        "inspect",
        "-f",
        "{{.State.Pid}} {{.HostConfig.Runtime}}",
        &cid,
    ]);
    out.assert_success("docker inspect");
    let (pid, runtime) = out.stdout.trim().split_once(' ').expect("pid and runtime");
    assert_eq!(runtime, "lab-runc");
    let container_ns = ns(&format!("/proc/{pid}/ns/net"));
    assert_ne!(
        container_ns,
        ns(&format!("/var/run/netns/{}", lab.host_ns)),
        "the container shares the lab's host netns"
    );
    assert_ne!(
        container_ns,
        ns("/proc/self/ns/net"),
        "the container is in the test's (the machine's) netns"
    );
    // Its cgroup is under the lab's cgroup parent.
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroup.contains(d.cgroup_parent()), "{cgroup}");
    d.docker(&["rm", "-f", &cid]).assert_success("docker rm -f");

    let traces = Traces::of(&lab, &d);
    let stop = Instant::now();
    drop(d);
    println!("dockerd teardown took {:?}", stop.elapsed());
    drop(lab);
    traces.assert_gone();
    println!("whole test took {:?}", began.elapsed());
}

/// A dockerd that cannot start (the runtime name `runc` is reserved) fails with dockerd's log, and the lab still
/// cleans up after it.
#[test]
fn a_dockerd_that_fails_to_start_is_reported_and_cleaned_up() {
    let lab = Lab::new("a_dockerd_that_fails_to_start_is_reported_and_cleaned_up");
    let runc = real_runc();
    let traces = Traces {
        dir: lab.dir.clone(),
        host_ns: lab.host_ns.clone(),
        server_ns: lab.server_ns.clone(),
        exec_root: lab.dir.join("x0"),
        cgroup_parent: format!("/wgl-{}-d0", lab.id),
        pids: Vec::new(),
    };
    let began = Instant::now();
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.start_dockerd(&[("runc", &runc, &[])])
    }))
    .err()
    .expect("dockerd started with a runtime named runc");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("dockerd did not come up") && msg.contains("runtime name 'runc' is reserved"),
        "{msg}"
    );
    println!("failed start reported after {:?}", began.elapsed());
    drop(lab);
    traces.assert_gone();
}

/// The lab tears down a dockerd that still runs a container when the lab is dropped first (as when a test
/// panics with the lab declared after the dockerd).
#[test]
fn lab_teardown_stops_a_running_dockerd_and_its_container() {
    let lab = Lab::new("lab_teardown_stops_a_running_dockerd_and_its_container");
    let (d, image) = lab_runc_dockerd(&lab);
    let cid = start_sleeper(&d, &image);
    let pid = d.docker(&["inspect", "-f", "{{.State.Pid}}", &cid]);
    let pid: u32 = pid
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("docker inspect's pid: {e}\n{pid}"));
    let shims = processes_mentioning(&d.containerd_socket().to_string_lossy());
    assert!(
        shims
            .iter()
            .any(|(_, argv)| argv.contains("containerd-shim-runc-v2")),
        "no shim names the lab's containerd: {shims:?}"
    );
    let traces = Traces::of(&lab, &d);
    let stop = Instant::now();
    drop(lab);
    println!(
        "lab teardown with a running container took {:?}",
        stop.elapsed()
    );
    traces.assert_gone();
    assert!(
        argv_of(pid).is_empty(),
        "the container's process {pid} survived"
    );
    drop(d); // already torn down by the lab: a no-op
}

/// How dockerd 20.10 and containerd-shim-runc-v2 call a configured runtime: runtimeArgs first, then the shim's
/// global flags, then the subcommand.
#[test]
fn docker_runtime_calls() {
    let lab = Lab::new("docker_runtime_calls");
    let logger = lab.runtime_logger("log-runc");
    let path = logger.path.to_string_lossy().into_owned();
    let d = lab.start_dockerd(&[("lab-log", &path, &["--debug"])]);
    let image = d.import_busybox(&lab);
    let out = d.docker(&[
        "run",
        "--rm",
        "--runtime",
        "lab-log",
        "--network",
        "none",
        &image,
        "/bin/sh",
        "-c",
        "echo done",
    ]);
    out.assert_success("docker run");
    assert_eq!(out.stdout, "done\n");
    let first = logger.calls();
    // A container with a terminal, an exec in it, and a forced removal.
    let out = d.docker(&[
        "run",
        "-d",
        "-t",
        "--runtime",
        "lab-log",
        "--network",
        "none",
        &image,
        "/bin/sh",
        "-c",
        "sleep 300",
    ]);
    out.assert_success("docker run -d -t");
    let cid = out.stdout.trim().to_owned();
    d.docker(&["exec", &cid, "true"])
        .assert_success("docker exec");
    d.docker(&["rm", "-f", &cid]).assert_success("docker rm -f");
    let calls = logger.calls();
    println!("=== docker run --rm ===\n{}", calls_text(&first));
    println!(
        "=== docker run -d -t; exec; rm -f ===\n{}",
        calls_text(&calls[first.len()..])
    );

    let subcommands: Vec<&str> = calls.iter().filter_map(|c| c.subcommand()).collect();
    for c in &calls {
        assert_eq!(c.argv[0], "--debug", "runtimeArgs come first: {}", c.line());
        assert_eq!(c.argv[1], "--root", "{}", c.line());
        // Not runtime-lab-log: every runtime of the runc shim shares runc's state dir.
        assert_eq!(
            c.argv[2],
            d.exec_root().join("runtime-runc/moby").to_string_lossy(),
            "{}",
            c.line()
        );
        assert_eq!(c.argv[3], "--log", "{}", c.line());
        assert_eq!(c.argv[5..7], ["--log-format", "json"], "{}", c.line());
        // The shim runs the runtime in the bundle dir.
        assert!(c.argv[4].starts_with(&c.cwd), "{}", c.line());
    }
    for want in ["create", "start", "exec", "kill", "delete"] {
        assert!(subcommands.contains(&want), "no {want}: {subcommands:?}");
    }
    let creates = logger.creates();
    assert_eq!(creates.len(), 2);
    for c in &creates {
        let bundle = &c.argv[c.argv.iter().position(|a| a == "--bundle").unwrap() + 1];
        assert_eq!(bundle, &c.cwd);
        assert!(c.argv.contains(&"--pid-file".to_owned()), "{}", c.line());
    }
    assert!(
        creates[1].argv.contains(&"--console-socket".to_owned()),
        "{}",
        creates[1].line()
    );
    let config = fs::read_to_string(creates[0].config.as_ref().unwrap()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(v["process"]["args"][0], "/bin/sh");
    // Docker's own prestart hook (libnetwork's setkey) is in the config even with --network none.
    assert!(
        v["hooks"]["prestart"]
            .to_string()
            .contains("libnetwork-setkey"),
        "{}",
        v["hooks"]
    );
    save_fixture("docker-20.10-config.json", &config);
    save_fixture("docker-20.10-runtime-calls.txt", &calls_text(&calls));
}

/// How podman 4.3 (through conmon) calls a runtime given as `--runtime <path>`. What it passes depends on the
/// file's name: only a runtime named as in containers.conf's `runtime_supports_json` (runc, crun, ...) gets
/// `--log-format=json --log <file>`.
#[test]
fn podman_runtime_calls() {
    let lab = Lab::new("podman_runtime_calls");
    for name in ["log-runc", "runc"] {
        let logger = lab.runtime_logger(name);
        let rootfs = lab.new_rootfs();
        let rootfs = rootfs.to_string_lossy();
        let run = |extra: &[&str], script: &str| {
            let mut args = vec!["run", "--network", "none", "--annotation", "wg.enable=true"];
            args.extend(PODMAN_ULIMITS);
            args.extend(extra);
            args.extend(["--rootfs", &rootfs, "/bin/sh", "-c", script]);
            lab.podman_via(&logger.path, &args)
        };
        let out = run(&["--rm"], "echo done");
        out.assert_success("podman run");
        assert_eq!(out.stdout, "done\n");
        let first = logger.calls();
        let out = run(&["-d", "-t"], "sleep 300");
        out.assert_success("podman run -d -t");
        let cid = out.stdout.trim().to_owned();
        lab.podman_via(&logger.path, &["exec", &cid, "true"])
            .assert_success("podman exec");
        lab.podman_via(&logger.path, &["rm", "-f", "-t", "0", &cid])
            .assert_success("podman rm -f");
        let calls = logger.calls();
        println!(
            "=== podman --runtime .../{name} run --rm ===\n{}",
            calls_text(&first)
        );
        println!(
            "=== podman --runtime .../{name} run -d -t; exec; rm -f ===\n{}",
            calls_text(&calls[first.len()..])
        );
        let creates = logger.creates();
        assert_eq!(creates.len(), 2, "{}", logger.raw());
        let json_log = calls[0].argv.iter().any(|a| a == "--log-format=json");
        assert_eq!(json_log, name == "runc", "{}", calls[0].line());
        let config = fs::read_to_string(creates[0].config.as_ref().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(v["annotations"]["wg.enable"], "true");
        assert!(
            !config.contains("wg-oci-hook"),
            "podman added the lab's hooks"
        );
        if name == "runc" {
            save_fixture("podman-4.3-config.json", &config);
        }
        save_fixture(
            &format!("podman-4.3-runtime-calls-{name}.txt"),
            &calls_text(&calls),
        );
    }
}

/// How containerd 1.6's `ctr run --runc-binary` calls a runtime, with an image exported from the lab's dockerd.
#[test]
fn ctr_runtime_calls() {
    let lab = Lab::new("ctr_runtime_calls");
    let logger = lab.runtime_logger("log-runc");
    let d = lab.start_dockerd(&[]);
    let image = d.import_busybox_into_containerd(&lab);
    let out = d.ctr_run(&logger.path, &image, "ctr1", "echo done; ip -o link");
    out.assert_success("ctr run");
    assert!(out.stdout.starts_with("done\n"), "{out}");
    assert_eq!(parse_link_names(&out.stdout), ["lo"], "{out}");
    let calls = logger.calls();
    println!("=== ctr run --rm ===\n{}", calls_text(&calls));
    let creates = logger.creates();
    assert_eq!(creates.len(), 1, "{}", logger.raw());
    let c = &creates[0];
    assert_eq!(
        c.argv[..2],
        [
            "--root",
            &format!("{}/wgtest", d.exec_root().join("ctr-runc").display())
        ]
    );
    let config = fs::read_to_string(c.config.as_ref().unwrap()).unwrap();
    save_fixture("containerd-config.json", &config);
    save_fixture("containerd-1.6-runtime-calls.txt", &calls_text(&calls));
}
