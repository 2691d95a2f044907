//! The examples users copy (`examples/`), run as written, so that they cannot rot:
//!
//! - `compose-cdi.yaml`: its install line (`install cdi`, into the lab's CDI dir), then Debian's podman-compose
//!   1.0.3 brings the service up and down with the lab's podman (which sees that dir as /etc/cdi).
//! - `docker-compose.yml`: the install line of its comment is run (`wg-oci-hook install docker ...`, into a
//!   daemon.json of the lab's), a private dockerd of the lab gets the runtime it wrote, and Debian's
//!   docker-compose 1.29 brings the service up (`up -d`, with the test's workload given by a second compose file,
//!   as a user overrides one) and down, and runs it once (`run`). The lab's busybox image stands in for the image
//!   the file names (there is no registry).
//! - `podman/container-wg-app.service`: the unit's ExecStartPre, ExecStart, ExecStop and ExecStopPost, with `%t`
//!   and `%n` expanded as systemd would, run in the lab's podman (whose hooks dir is what `wg-oci-hook install
//!   hooks` writes); only the image and its command are swapped for the lab's busybox rootfs and the test's
//!   workload. systemd itself does not run here.
//! - `podman/wg-app.container` (a quadlet, podman 4.4 or later): quadlet is not on this machine (Debian 12 has
//!   podman 4.3), so it is checked only against the unit above: the same image, command, name, network and
//!   annotations.
//! - `kubernetes/*.yaml`: `tests/e2e/kubernetes.rs` sends over CRI what these files say (with the helpers here).
//! - The README's YAML blocks that show these examples are compared with the files.
//!
//! Needs root, docker.io, docker-compose, podman, runc, wireguard-go and busybox-static; fails (never skips)
//! without them.

use crate::lab::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// `examples/<rel>` of this repository: its path and text.
pub fn example(rel: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(rel);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, text)
}

/// The `wg-oci-hook install TARGET ...` commands the comments of an example tell the user to run (a comment line
/// that starts with the command), each as its arguments from `install` to the end of the command (`&&`, `>>`,
/// `;`, `|` or the line's end). Such a line is plain words: a quote fails the test.
pub fn install_commands(path: &Path, text: &str, target: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(comment) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let Some(command) = comment.trim_start().strip_prefix("wg-oci-hook ") else {
            continue;
        };
        let words: Vec<String> = command
            .split_whitespace()
            .take_while(|w| !["&&", ">>", ">", ";", "|"].contains(w))
            .map(str::to_owned)
            .collect();
        if words.get(..2) != Some(&["install".to_owned(), target.to_owned()]) {
            continue;
        }
        assert!(
            !words.iter().any(|w| w.contains(['"', '\'', '`', '$'])),
            "{}:{}: the install line must be plain words: {line}",
            path.display(),
            n + 1
        );
        commands.push(words);
    }
    commands
}

/// The value of `--name VALUE` or `--name=VALUE` in `args`.
pub fn option_value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&eq)
        }
    })
}

/// The YAML documents of an example.
pub fn yaml_documents(path: &Path, text: &str) -> Vec<serde_norway::Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|doc| {
            serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// A string field of a YAML document, which must be there.
#[track_caller]
pub fn yaml_str<'a>(path: &Path, value: &'a serde_norway::Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{}: {what} is not a string: {value:?}", path.display()))
}

/// A profile named `name` in the lab's policy, on the lab's server like the default profile `lab` but with DNS
/// of its own, which tells a container on it from one on `lab`; returns that DNS (server, search domain).
pub fn add_profile(lab: &Lab, name: &str) -> (&'static str, &'static str) {
    const DNS: (&str, &str) = ("10.77.0.54", "examples.lab.example");
    assert_ne!(
        name, "lab",
        "an example that names the lab's default profile proves nothing about profiles"
    );
    let mut config = lab.client_config();
    config.dns = vec![DNS.0.into(), DNS.1.into()];
    let path = lab.write_file(&format!("{name}.conf"), &config.render(), 0o600);
    let mut policy = lab.policy();
    policy.profiles.push(LabProfile::new(name, path));
    lab.write_policy(&policy);
    DNS
}

/// A workload that records what it sees first (its interfaces), then its resolv.conf and an answer from the
/// lab's server through the tunnel, then, if `stay`, waits for SIGTERM (and exits 0 on it).
fn recording_script(stay: bool) -> String {
    let mut script = "echo BEGIN netdev; cat /proc/net/dev; echo END netdev\n\
         echo BEGIN resolv; cat /etc/resolv.conf; echo END resolv\n\
         nc -w 2 10.77.0.1 8080 </dev/null; echo \"probe rc $?\"\n"
        .to_owned();
    if stay {
        script += "trap 'exit 0' TERM\nsleep 2147483647 & wait\n";
    }
    script
}

/// What a [`recording_script`] printed: `wg0` at its first instruction, an answer through the tunnel, and the
/// DNS (server, search domain) of its profile in resolv.conf.
#[track_caller]
fn assert_recorded_the_tunnel(output: &str, dns: (&str, &str)) {
    assert!(
        section(output, "netdev")
            .iter()
            .any(|l| l.trim_start().starts_with("wg0:")),
        "no wg0 at the workload's first instruction:\n{output}"
    );
    assert!(
        output.contains(MARKER.trim_end()) && output.contains("probe rc 0"),
        "no answer from the lab's server through the tunnel:\n{output}"
    );
    let resolv = section(output, "resolv");
    assert!(
        resolv.contains(&format!("nameserver {}", dns.0).as_str())
            && resolv.contains(&format!("search {}", dns.1).as_str()),
        "resolv.conf lacks the profile's DNS ({}, {}):\n{output}",
        dns.0,
        dns.1
    );
}

/// No file left in the lab's state dir (records, memberships, leases, locks) but the profiles' lease locks, which
/// stay as the profiles do.
#[track_caller]
fn assert_state_dir_empty(lab: &Lab) {
    let left: Vec<String> = state_files(&lab.state_dir)
        .into_iter()
        .filter_map(|f| Some(f.strip_prefix(&lab.state_dir).ok()?.display().to_string()))
        .filter(|f| !(f.starts_with("leases/") && f.ends_with(".lock")))
        .collect();
    assert!(left.is_empty(), "left in the state dir: {left:?}");
}

/// Polls `logs` (up to 20 s) until the [`recording_script`] has recorded its probe; returns what it printed.
fn wait_for_recording(mut logs: impl FnMut() -> CmdOutput) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = logs();
        if out.stdout.contains("probe rc ") {
            return out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "the workload recorded nothing within 20 s:\n{out}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

// ----- compose with a CDI device ---------------------------------------------------------------------------------

/// `examples/compose-cdi.yaml` as a user runs it: its install line (`install cdi`, into the lab's CDI dir, which
/// the lab's podman sees as /etc/cdi), then Debian's podman-compose 1.0.3 `up -d` and `down` with the lab's
/// podman (no hooks dir): the service's workload has the tunnel of the device's profile from its first
/// instruction, and nothing is left after `down`. docker compose with CDI needs Docker 25 (not on this machine).
#[test]
fn compose_cdi_example_runs_its_service_in_the_devices_tunnel_with_podman_compose() {
    let lab = Lab::new("examples_compose_cdi");
    let (path, text) = example("compose-cdi.yaml");
    let docs = yaml_documents(&path, &text);
    assert_eq!(docs.len(), 1, "{}: one document", path.display());
    let services = docs[0]["services"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{}: no services", path.display()));
    assert_eq!(services.len(), 1, "{}: one service", path.display());
    let (name, service) = services.iter().next().unwrap();
    let name = yaml_str(&path, name, "the service's name");
    let image = yaml_str(&path, &service["image"], "image");
    let devices = service["devices"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{}: no devices", path.display()));
    assert_eq!(devices.len(), 1, "{}: one device", path.display());
    let device = yaml_str(&path, &devices[0], "the device");
    let profile = device
        .strip_prefix("wg-oci-hook.dev/tunnel=")
        .unwrap_or_else(|| panic!("{}: {device} is not a tunnel device", path.display()));
    let dns = add_profile(&lab, profile);

    let installs = install_commands(&path, &text, "cdi");
    assert_eq!(
        installs.len(),
        1,
        "{}: one `wg-oci-hook install cdi` line",
        path.display()
    );
    let mut install = vec![HOOK_BIN.to_owned()];
    install.extend(installs[0].iter().cloned());
    install.extend([
        "--dir".to_owned(),
        lab.cdi_dir().to_string_lossy().into_owned(),
        "--policy".to_owned(),
        lab.policy_path.to_string_lossy().into_owned(),
    ]);
    lab.run(&install)
        .assert_success("the example's install line");

    // The lab's busybox as the example's image (there is no registry).
    let tarball = lab.dir.join("busybox.tar");
    lab.busybox_tarball(&tarball);
    lab.podman(&[
        "import",
        "--change",
        "CMD [\"/bin/sh\"]",
        &tarball.to_string_lossy(),
        image,
    ])
    .assert_success("podman import");

    // The test's workload in place of the example's command: a copy of the file with that one key changed
    // (podman-compose 1.0.3 appends an override file's command to the first's instead of replacing it).
    let project = format!("wgl{}", lab.id);
    let mut compose_file = docs[0].clone();
    // `$$`: compose interpolates `$` in its files.
    let script = recording_script(true).replace('$', "$$");
    compose_file["services"][name]["command"] =
        serde_norway::to_value(["/bin/sh", "-c", &script]).unwrap();
    let file = lab.write_file(
        "compose-cdi.yaml",
        &serde_norway::to_string(&compose_file).unwrap(),
        0o600,
    );
    let file = file.to_string_lossy().into_owned();
    let podman = lab.podman_with_cdi_script();
    let podman = podman.to_string_lossy().into_owned();
    let compose = |args: &[&str]| {
        let mut all = vec!["podman-compose", "--podman-path", &podman, "-p", &project];
        all.extend(["-f", &file]);
        all.extend(args);
        lab.run(&all)
    };
    compose(&["up", "-d"]).assert_success("podman-compose up -d");
    let in_ns = |args: &[&str]| {
        let mut all = vec![podman.as_str()];
        all.extend(args);
        lab.run(&all)
    };
    let ps = in_ns(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=io.podman.compose.project={project}"),
    ]);
    ps.assert_success("podman ps -a");
    let containers: Vec<&str> = ps.stdout.split_whitespace().collect();
    assert_eq!(containers.len(), 1, "one container of the project\n{ps}");
    let cid = containers[0].to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let logs = loop {
        let logs = in_ns(&["logs", &cid]).stdout;
        if logs.contains("probe rc") || Instant::now() > deadline {
            break logs;
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert_recorded_the_tunnel(&logs, dns);
    compose(&["down"]).assert_success("podman-compose down");
    lab.assert_nothing_left(&cid);
    assert_state_dir_empty(&lab);
}

// ----- docker-compose ---------------------------------------------------------------------------------------------

/// `examples/docker-compose.yml` as a user runs it: its install line, then `up -d` and `down`, and `run`.
#[test]
fn docker_compose_example_runs_its_service_in_the_tunnel_until_down() {
    let began = Instant::now();
    let lab = Lab::new("examples_compose");
    let (path, text) = example("docker-compose.yml");
    let file = path.to_string_lossy().into_owned();
    let docs = yaml_documents(&path, &text);
    assert_eq!(docs.len(), 1, "{}: one document", path.display());
    let services = docs[0]["services"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{}: no services", path.display()));
    assert_eq!(
        services.len(),
        1,
        "{}: one service (a static profile serves one container at a time)",
        path.display()
    );
    let (name, service) = services.iter().next().unwrap();
    let name = yaml_str(&path, name, "the service's name");
    let runtime = yaml_str(&path, &service["runtime"], "runtime");
    let image = yaml_str(&path, &service["image"], "image");
    let network_mode = yaml_str(&path, &service["network_mode"], "network_mode");

    // The install line of the comment, into a daemon.json of the lab's, with the lab's policy.
    let installs = install_commands(&path, &text, "docker");
    assert_eq!(
        installs.len(),
        1,
        "{}: one `wg-oci-hook install docker` line",
        path.display()
    );
    let profile = option_value(&installs[0], "--profile")
        .unwrap_or_else(|| panic!("{}: the install line binds no --profile", path.display()));
    let dns = add_profile(&lab, profile);
    let daemon_json = lab.dir.join("daemon.json");
    let mut install = vec![HOOK_BIN.to_owned()];
    install.extend(installs[0].iter().cloned());
    install.extend([
        "--daemon-json".to_owned(),
        daemon_json.to_string_lossy().into_owned(),
        "--policy".to_owned(),
        lab.policy_path.to_string_lossy().into_owned(),
    ]);
    lab.run(&install)
        .assert_success("the example's install line");
    let written: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&daemon_json).unwrap()).unwrap();
    let installed = written["runtimes"].as_object().cloned().unwrap_or_default();
    assert!(
        installed.contains_key(runtime),
        "{}: the service's runtime {runtime:?} is not what its install line adds: {}",
        path.display(),
        written["runtimes"]
    );
    let runtimes: Vec<(String, String, Vec<String>)> = installed
        .iter()
        .map(|(name, entry)| {
            let args = entry["runtimeArgs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            (
                name.clone(),
                entry["path"].as_str().unwrap().to_owned(),
                args,
            )
        })
        .collect();
    let args: Vec<Vec<&str>> = runtimes
        .iter()
        .map(|(_, _, args)| args.iter().map(String::as_str).collect())
        .collect();
    let runtimes: Vec<(&str, &str, &[&str])> = runtimes
        .iter()
        .zip(&args)
        .map(|((name, path, _), args)| (name.as_str(), path.as_str(), &args[..]))
        .collect();
    let d = lab.start_dockerd(&runtimes);
    let busybox = d.import_busybox(&lab);
    d.docker(&["tag", &busybox, image])
        .assert_success("tagging the lab's busybox as the example's image");

    // `up -d`, with the test's workload in a second compose file, as a user overrides a service.
    let project = format!("wgl{}", lab.id);
    let mut services = serde_json::Map::new();
    // `$$`: compose interpolates `$` in its files.
    let script = recording_script(true).replace('$', "$$");
    services.insert(
        name.to_owned(),
        serde_json::json!({ "command": ["/bin/sh", "-c", script] }),
    );
    let workload = serde_norway::to_string(&serde_json::json!({ "services": services })).unwrap();
    let workload_file = lab.write_file("compose-workload.yml", &workload, 0o600);
    let workload_file = workload_file.to_string_lossy().into_owned();
    let compose = |args: &[&str]| {
        let mut all = vec!["-f", &file];
        if args[0] == "up" {
            all.extend(["-f", &workload_file]);
        }
        all.extend(["-p", &project]);
        all.extend(args);
        d.compose(&all)
    };
    let containers = || {
        let out = d.docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ]);
        out.assert_success("docker ps -a");
        out.stdout
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let up = compose(&["up", "-d"]);
    up.assert_success("docker-compose up -d");
    println!("{up}");
    let ids = containers();
    assert_eq!(ids.len(), 1, "one container for the service\n{up}");
    let cid = ids[0].clone();
    lab.track_container_id(&cid);
    let recorded = wait_for_recording(|| d.docker(&["logs", &cid]));
    println!("=== the service's first records ===\n{recorded}");
    assert_recorded_the_tunnel(&recorded, dns);
    let inspect = d.docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.Runtime}} {{.HostConfig.NetworkMode}}",
        &cid,
    ]);
    inspect.assert_success("docker inspect");
    assert_eq!(
        inspect.stdout.trim(),
        format!("{runtime} {network_mode}"),
        "the service's container does not run as the example says"
    );
    assert!(
        lab.wait_for_record(&cid).is_some(),
        "no tunnel record while the service runs"
    );
    let exec = d.docker(&["exec", &cid, "/bin/sh", "-c", TUNNEL_PROBE]);
    exec.assert_success("the tunnel of the running service");
    assert!(exec.stdout.contains(MARKER.trim_end()), "{exec}");

    // A second container on the static profile while the service runs is refused, as the file's comment says.
    let refused = compose(&["run", "-T", "--rm", name, "true"]);
    assert!(
        !refused.success()
            && refused.stderr.contains(&format!(
                "profile \"{profile}\" is in use by the tunnel of container"
            )),
        "a second container on the profile was not refused with the hook's line\n{refused}"
    );

    // `down`: the container stops, its poststop takes the tunnel.
    compose(&["down"]).assert_success("docker-compose down");
    lab.assert_nothing_left(&cid);
    assert_state_dir_empty(&lab);
    assert!(
        containers().is_empty(),
        "docker-compose down left containers"
    );

    // `run`: a one-off container of the service, with a command of the user's.
    let once = format!("{project}-once");
    let run = compose(&[
        "run",
        "-T",
        "--name",
        &once,
        name,
        "/bin/sh",
        "-c",
        TUNNEL_PROBE,
    ]);
    run.assert_success("docker-compose run");
    assert!(
        run.stdout.contains(MARKER.trim_end()),
        "no answer through the tunnel\n{run}"
    );
    let id = d.docker(&["inspect", "-f", "{{.Id}}", &once]);
    id.assert_success("docker inspect");
    let id = id.stdout.trim().to_owned();
    lab.track_container_id(&id);
    lab.assert_nothing_left(&id);
    assert_state_dir_empty(&lab);
    compose(&["down"]).assert_success("docker-compose down");
    assert!(
        containers().is_empty(),
        "docker-compose down left the one-off container"
    );
    let peers = lab.responder_peer_ips();
    assert!(
        peers.len() >= 3 && peers.iter().all(|p| p == CLIENT_TUNNEL_V4),
        "the lab's server saw {peers:?}, not the tunnel's address each time"
    );
    println!("whole test took {:?}", began.elapsed());
}

// ----- podman: a systemd unit, and a quadlet --------------------------------------------------------------------

/// The entries of a systemd unit file: (section, key, value) in order. A line ending in `\` goes on in the next
/// (joined by a space, as systemd does); blank lines and comments (`#`, `;`) are left out.
fn unit_entries(path: &Path, text: &str) -> Vec<(String, String, String)> {
    let mut entries = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with(['#', ';'])) {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            pending += continued;
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not KEY=VALUE: {raw}", path.display(), n + 1));
        entries.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    assert!(
        pending.is_empty(),
        "{}: the last line goes on after the end",
        path.display()
    );
    entries
}

/// The values of `key` in `section`.
fn unit_values<'a>(
    entries: &'a [(String, String, String)],
    section: &str,
    key: &str,
) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

/// A command line of a unit, split into words as systemd splits it (systemd.service(5), "Command lines"):
/// blanks separate words, `"..."` and `'...'` quote, `\\`, `\"`, `\'`, `\n` and `\t` are escapes; then in each
/// word the specifiers of `specifiers` (and `%%`) are expanded. Anything else this does not know (another escape
/// or specifier, a `-`/`@`/`+`/`!`/`:` prefix) fails the test, rather than running something else.
fn unit_command(value: &str, specifiers: &[(char, &str)]) -> Vec<String> {
    assert!(
        !value.starts_with(['-', '@', '+', '!', ':']),
        "a command prefix the test does not know: {value}"
    );
    let mut words: Vec<String> = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let e = chars.next().expect("a command line ends in a backslash");
                let unescaped = match e {
                    '\\' | '"' | '\'' => e,
                    'n' => '\n',
                    't' => '\t',
                    _ => panic!("an escape the test does not know: \\{e} in {value}"),
                };
                word.get_or_insert_with(String::new).push(unescaped);
            }
            '"' | '\'' if quote == Some(c) => quote = None,
            '"' | '\'' if quote.is_none() => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            c if c.is_whitespace() && quote.is_none() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(quote.is_none(), "an unclosed quote in {value}");
    words.extend(word);
    words
        .into_iter()
        .map(|w| {
            let mut out = String::new();
            let mut chars = w.chars();
            while let Some(c) = chars.next() {
                if c != '%' {
                    out.push(c);
                    continue;
                }
                let s = chars.next().expect("a word ends in %");
                match specifiers.iter().find(|(name, _)| *name == s) {
                    Some((_, expansion)) => out += expansion,
                    None if s == '%' => out.push('%'),
                    None => panic!("a specifier the test does not know: %{s} in {value}"),
                }
            }
            out
        })
        .collect()
}

/// The one value of `key` in `[Service]`, as a command of `podman` whose arguments are returned.
fn podman_command(
    path: &Path,
    entries: &[(String, String, String)],
    key: &str,
    specifiers: &[(char, &str)],
) -> Vec<String> {
    let values = unit_values(entries, "Service", key);
    assert_eq!(values.len(), 1, "{}: one {key}", path.display());
    let argv = unit_command(values[0], specifiers);
    assert!(
        argv.first().is_some_and(|p| p.ends_with("/podman")),
        "{}: {key} does not run podman: {argv:?}",
        path.display()
    );
    argv[1..].to_vec()
}

/// `podman run`'s arguments split at the image: (options, image, command). Every option must be one word
/// (`--name=wg-app`, not `--name wg-app`), so that the first word without a dash is the image.
fn split_at_image(path: &Path, run: &[String]) -> (Vec<String>, String, Vec<String>) {
    assert_eq!(
        run.first().map(String::as_str),
        Some("run"),
        "{}: not podman run",
        path.display()
    );
    let at = run
        .iter()
        .skip(1)
        .position(|a| !a.starts_with('-'))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{}: podman run names no image", path.display()));
    for option in &run[1..at] {
        let flag = option.split('=').next().unwrap();
        assert!(
            option.contains('=') || ["--rm", "--detach", "--replace"].contains(&flag),
            "{}: write `{option}` with its value after `=`: the image is the first word without a dash",
            path.display()
        );
    }
    (run[1..at].to_vec(), run[at].clone(), run[at + 1..].to_vec())
}

const UNIT: &str = "podman/container-wg-app.service";
const QUADLET: &str = "podman/wg-app.container";

/// The options of `podman generate systemd --new` (and of quadlet) that run the container as a service, and say
/// nothing about it.
fn is_service_plumbing(option: &str) -> bool {
    let flag = option.split('=').next().unwrap();
    [
        "--cidfile",
        "--cgroups",
        "--sdnotify",
        "--rm",
        "--detach",
        "--replace",
    ]
    .contains(&flag)
}

/// `examples/podman/container-wg-app.service` as systemd would run it: ExecStartPre, ExecStart (the image and its
/// command swapped for the lab's busybox rootfs and the test's workload), then ExecStop and ExecStopPost.
#[test]
fn podman_systemd_unit_example_runs_its_container_in_the_tunnel_until_stopped() {
    let began = Instant::now();
    let lab = Lab::new("examples_podman_unit");
    let (path, text) = example(UNIT);
    let entries = unit_entries(&path, &text);
    // systemd's %t (the runtime dir: /run for a system unit) is a dir of the lab's; %n the unit's name.
    let runtime_dir = lab.dir.join("run");
    fs::create_dir(&runtime_dir).unwrap();
    let runtime_dir = runtime_dir.to_string_lossy().into_owned();
    let unit_name = path.file_name().unwrap().to_string_lossy().into_owned();
    let specifiers = [('t', runtime_dir.as_str()), ('n', unit_name.as_str())];

    let pre = unit_values(&entries, "Service", "ExecStartPre");
    assert_eq!(pre.len(), 1, "{}: one ExecStartPre", path.display());
    lab.run(&unit_command(pre[0], &specifiers))
        .assert_success("ExecStartPre");
    let start = podman_command(&path, &entries, "ExecStart", &specifiers);
    let (options, image, command) = split_at_image(&path, &start);
    println!("the unit's podman run: {options:?}, image {image}, command {command:?}");
    let rootfs = lab.new_rootfs();
    let mut run: Vec<String> = vec!["run".into()];
    run.extend(options.iter().cloned());
    run.extend([
        "--rootfs".into(),
        rootfs.to_string_lossy().into_owned(),
        "/bin/sh".into(),
        "-c".into(),
        recording_script(true),
    ]);
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let out = lab.podman(&run);
    out.assert_success("the unit's ExecStart");
    let cidfile = option_value(&options, "--cidfile")
        .unwrap_or_else(|| panic!("{}: ExecStart has no --cidfile", path.display()));
    let cid = fs::read_to_string(cidfile)
        .unwrap_or_else(|e| panic!("{cidfile}: {e}"))
        .trim()
        .to_owned();
    lab.track_container_id(&cid);
    let recorded = wait_for_recording(|| lab.podman(&["logs", &cid]));
    println!("=== the container's first records ===\n{recorded}");
    assert_recorded_the_tunnel(&recorded, (DNS_SERVER, DNS_SEARCH));
    assert!(
        lab.wait_for_record(&cid).is_some(),
        "no tunnel record while the unit's container runs"
    );
    let name = option_value(&options, "--name").expect("the unit names its container");
    let state = lab.podman(&["inspect", "-f", "{{.State.Status}} {{.Name}}", &cid]);
    state.assert_success("podman inspect");
    assert_eq!(state.stdout.trim(), format!("running {name}"));

    for key in ["ExecStop", "ExecStopPost"] {
        let args = podman_command(&path, &entries, key, &specifiers);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.podman(&args).assert_success(key);
    }
    lab.assert_nothing_left(&cid);
    assert_state_dir_empty(&lab);
    let left = lab.podman(&["ps", "-aq"]);
    left.assert_success("podman ps -a");
    assert!(
        left.stdout.trim().is_empty(),
        "ExecStopPost left containers\n{left}"
    );
    println!("whole test took {:?}", began.elapsed());
}

/// `examples/podman/wg-app.container` asks quadlet (podman 4.4 or later, not on this machine) for the container
/// that `container-wg-app.service` runs: the same image, command, name, network and annotations.
#[test]
fn podman_quadlet_example_asks_for_the_container_the_unit_runs() {
    let (unit_path, unit_text) = example(UNIT);
    let unit = unit_entries(&unit_path, &unit_text);
    let start = podman_command(&unit_path, &unit, "ExecStart", &[('t', "/run"), ('n', "u")]);
    let (options, image, command) = split_at_image(&unit_path, &start);
    let mut unit_options: Vec<String> = options
        .into_iter()
        .filter(|o| !is_service_plumbing(o))
        .collect();
    unit_options.sort();

    let (path, text) = example(QUADLET);
    let mut quadlet_options = Vec::new();
    let (mut quadlet_image, mut quadlet_command) = (None, None);
    for (section, key, value) in unit_entries(&path, &text) {
        if section != "Container" {
            continue;
        }
        match key.as_str() {
            "Image" => quadlet_image = Some(value),
            "Exec" => quadlet_command = Some(unit_command(&value, &[])),
            "ContainerName" => quadlet_options.push(format!("--name={value}")),
            "Network" => quadlet_options.push(format!("--network={value}")),
            "Annotation" => quadlet_options.extend(
                unit_command(&value, &[])
                    .into_iter()
                    .map(|a| format!("--annotation={a}")),
            ),
            _ => panic!(
                "{}: [Container] {key}= is a key this test does not map to podman run's options: add it here",
                path.display()
            ),
        }
    }
    quadlet_options.sort();
    assert_eq!(
        quadlet_image.as_deref(),
        Some(image.as_str()),
        "{} and {UNIT}: another image",
        path.display()
    );
    assert_eq!(
        quadlet_command.as_ref(),
        Some(&command),
        "{} and {UNIT}: another command",
        path.display()
    );
    assert_eq!(
        quadlet_options,
        unit_options,
        "{} and {UNIT}: other options",
        path.display()
    );
    assert!(
        unit_options.contains(&"--annotation=wg.enable=true".to_owned()),
        "{UNIT} does not ask for the tunnel: {unit_options:?}"
    );
    for (what, entries) in [("unit", &unit), ("quadlet", &unit_entries(&path, &text))] {
        for key in ["Wants", "After"] {
            assert_eq!(
                unit_values(entries, "Unit", key),
                ["network-online.target"],
                "the {what}'s [Unit] {key}"
            );
        }
    }
}

// ----- the README ------------------------------------------------------------------------------------------------

/// The README's YAML blocks that show examples are the examples: its Kubernetes manifests are documents of
/// `examples/kubernetes/` (comments aside), and its Compose service is the example's, but for its command.
#[test]
fn readme_shows_the_examples_as_they_are() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = fs::read_to_string(&readme).unwrap();
    let blocks: Vec<String> = text
        .split("```yaml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap().to_owned())
        .collect();
    let block = |needle: &str| {
        let found: Vec<&String> = blocks.iter().filter(|b| b.contains(needle)).collect();
        assert_eq!(found.len(), 1, "README.md: one yaml block with {needle:?}");
        found[0].clone()
    };

    let manifests = yaml_documents(&readme, &block("kind: RuntimeClass"));
    let mut examples = Vec::new();
    for file in ["runtimeclass.yaml", "pod-annotated.yaml", "pod-wg-vpn.yaml"] {
        let (path, text) = example(&format!("kubernetes/{file}"));
        examples.extend(yaml_documents(&path, &text));
    }
    assert!(!manifests.is_empty());
    for doc in &manifests {
        assert!(
            examples.contains(doc),
            "README.md shows a manifest that is in no file of examples/kubernetes/:\n{}",
            serde_norway::to_string(doc).unwrap()
        );
    }

    // The Compose services, each shown by the block that names it, but for its command.
    for (needle, example_file) in [
        ("runtime: wg-vpn", "docker-compose.yml"),
        ("wg-oci-hook.dev/tunnel=vpn", "compose-cdi.yaml"),
    ] {
        let shown = yaml_documents(&readme, &block(needle));
        let (path, text) = example(example_file);
        let mut file = yaml_documents(&path, &text).remove(0);
        let services = file["services"].as_mapping_mut().unwrap();
        for (_, service) in services.iter_mut() {
            service.as_mapping_mut().unwrap().remove("command");
        }
        assert_eq!(
            shown,
            [file],
            "README.md's Compose service is not examples/{example_file}'s"
        );
    }
}
