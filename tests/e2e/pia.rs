//! End-to-end: `provider = "pia"` profiles against the lab's PIA-compatible server (`tests/lab/pia.rs`): podman +
//! runc run the shipped hooks; the hook gets a token, the signed server list and an addKey registration over
//! HTTPS from servers in the lab's server netns, then the container talks through the registered tunnel.
//! Needs what `podman` needs plus openssl; fails (never skips) without.

use crate::lab::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A TOML string.
fn q(s: impl AsRef<str>) -> String {
    toml_str(s.as_ref())
}

fn q_path(p: &Path) -> String {
    q(p.to_string_lossy())
}

fn start(test: &str) -> (Lab, PiaLab) {
    let lab = Lab::new(test);
    let pia = PiaLab::start(&lab);
    (lab, pia)
}

/// No secret of the lab's PIA account in `text`: password, DIP token, any token the server issued.
#[track_caller]
fn assert_no_secrets(pia: &PiaLab, what: &str, text: &str) {
    assert!(
        !text.contains(PIA_PASSWORD),
        "{what} holds the PIA password:\n{text}"
    );
    assert!(
        !text.contains(PIA_DIP_TOKEN),
        "{what} holds the dedicated-IP token:\n{text}"
    );
    for token in pia.tokens_issued() {
        assert!(!text.contains(&token), "{what} holds a PIA token:\n{text}");
    }
}

const THROUGH_THE_TUNNEL: &str = "set -e
ping -c 1 -W 2 10.77.0.1
nc 10.77.0.1 8080 </dev/null
echo BEGIN addr; ip -o -4 addr show dev wg0; echo END addr
echo BEGIN resolv; cat /etc/resolv.conf; echo END resolv";

#[test]
fn pia_container_reaches_the_lab_through_its_registered_tunnel_on_first_try() {
    let (lab, pia) = start("pia_first_try");
    lab.write_policy(&pia.policy(&lab, &[]));
    let run = lab.podman_run(&RunOpts::wg(THROUGH_THE_TUNNEL));
    run.assert_success("a PIA container");
    assert!(
        run.out.stdout.contains(MARKER.trim_end()),
        "the responder's marker\n{run}"
    );
    let addr = section(&run.out.stdout, "addr").join("\n");
    let peer_ip = pia.assert_registered_on_first_try(&lab, "laba401", &addr);
    let resolv = section(&run.out.stdout, "resolv");
    assert!(
        resolv.contains(&"nameserver 10.77.0.53"),
        "DNS = dns_servers\n{run}"
    );
    lab.assert_nothing_left(run.cid());

    // The next start reuses the cached token and the cached, re-verified list; wg.region picks lab_b.
    let run = lab.podman_run(&RunOpts::wg(THROUGH_THE_TUNNEL).annotation("wg.region", "lab_b"));
    run.assert_success("a second PIA container, in lab_b");
    let stats = pia.stats();
    assert_eq!(
        stats.add_key.last().unwrap(),
        &("labb402".to_owned(), true),
        "{stats:?}"
    );
    assert_eq!(
        (stats.token_requests, stats.list_requests),
        (1, 1),
        "token and list were cached\n{stats:?}"
    );
    let second_ip = &stats.registered[1].1;
    assert_ne!(second_ip, &peer_ip, "a fresh key and address per container");
    assert!(run.out.stdout.contains(MARKER.trim_end()), "{run}");
    lab.assert_nothing_left(run.cid());
    assert_no_secrets(&pia, "the lab transcript", &lab.transcript());
}

#[test]
fn a_region_whose_addkey_fails_falls_back_to_the_next() {
    let (lab, pia) = start("pia_fallback");
    lab.write_policy(&pia.policy(&lab, &[("regions", "[\"lab_off\", \"lab_a\", \"lab_b\"]")]));
    pia.set_behaviour(|b| {
        b.fail_add_key_cns.insert("laba401".into());
    });
    let run = lab.podman_run(&RunOpts::wg(THROUGH_THE_TUNNEL));
    run.assert_success("falling back to lab_b");
    let stats = pia.stats();
    assert_eq!(
        stats.add_key,
        [("laba401".to_owned(), false), ("labb402".to_owned(), true)],
        "lab_off is listed offline and never tried; lab_a refused; lab_b registered\n{stats:?}"
    );
    assert!(run.out.stdout.contains(MARKER.trim_end()), "{run}");
    lab.assert_nothing_left(run.cid());

    // A region annotation is tried alone: no fallback to regions the container did not ask for.
    let run = assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run").annotation("wg.region", "lab_a"),
        &[
            "registering with PIA",
            "region lab_a",
            "addKey on laba401 (198.18.1.11)",
        ],
    );
    let line = run.hook_error_line().unwrap();
    assert!(!line.contains("labb402"), "{line}");
    // And a region the policy does not let containers choose is refused before any API call.
    let mut policy = pia.policy(&lab, &[]);
    policy.allowed_annotations = vec!["wg.profile".into()];
    lab.write_policy(&policy);
    let before = pia.stats().add_key.len();
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run").annotation("wg.region", "lab_b"),
        &["annotation wg.region=\"lab_b\"", "allowed_annotations"],
    );
    assert_eq!(pia.stats().add_key.len(), before);
}

#[test]
fn an_expired_token_is_renewed_once() {
    let (lab, pia) = start("pia_token_renewal");
    lab.write_policy(&pia.policy(&lab, &[]));
    let run = lab.podman_run(&RunOpts::wg(THROUGH_THE_TUNNEL));
    run.assert_success("first container, first token");
    assert_eq!(pia.stats().token_requests, 1);
    let cache_dir = lab.state_dir.join("pia");
    let token_file = std::fs::read_dir(&cache_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("token-")
        })
        .expect("a cached token");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token cache is private");
    let mode = std::fs::metadata(&cache_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let cached = std::fs::read_to_string(&token_file).unwrap();
    assert!(!cached.contains(PIA_PASSWORD), "only the token is cached");

    pia.expire_tokens();
    let run = lab.podman_run(&RunOpts::wg(THROUGH_THE_TUNNEL));
    run.assert_success("second container after the token expired");
    let stats = pia.stats();
    assert_eq!(
        stats.login_failed, 1,
        "the cached token was refused once\n{stats:?}"
    );
    assert_eq!(stats.token_requests, 2, "and renewed once\n{stats:?}");
    assert_eq!(
        stats.add_key.iter().filter(|(_, ok)| *ok).count(),
        2,
        "both containers registered\n{stats:?}"
    );
    assert!(run.out.stdout.contains(MARKER.trim_end()), "{run}");
    lab.assert_nothing_left(run.cid());
}

#[test]
fn a_server_list_with_a_bad_signature_is_refused() {
    let (lab, pia) = start("pia_bad_signature");
    lab.write_policy(&pia.policy(&lab, &[]));
    pia.set_behaviour(|b| b.bad_list_signature = true);
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["registering with PIA", "the server list", "does not verify"],
    );
    // A genuine list checked against another key is refused the same way.
    pia.set_behaviour(|b| b.bad_list_signature = false);
    let other_key = q_path(&pia.other_regions_key_path());
    let mut policy = pia.policy(&lab, &[]);
    let profile = policy
        .profiles
        .iter_mut()
        .find(|p| p.name == "pia")
        .unwrap();
    profile.extra.retain(|(k, _)| k != "regions_key");
    profile.extra.push(("regions_key".into(), other_key));
    lab.write_policy(&policy);
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["does not verify"],
    );
    let stats = pia.stats();
    assert_eq!(stats.list_requests, 2, "{stats:?}");
    assert!(
        stats.add_key.is_empty() && stats.registered.is_empty(),
        "nothing was registered\n{stats:?}"
    );
    assert!(
        !lab.state_dir.join("pia").exists()
            || std::fs::read_dir(lab.state_dir.join("pia"))
                .unwrap()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().starts_with("servers-")),
        "an unverified list is never cached"
    );
}

#[test]
fn tls_with_a_wrong_ca_or_cn_is_refused() {
    let (lab, pia) = start("pia_tls");
    // PIA's CA must be the lab CA: another CA's file refuses every PIA server.
    let mut policy = pia.policy(&lab, &[("regions", "[\"lab_a\"]")]);
    let profile = policy
        .profiles
        .iter_mut()
        .find(|p| p.name == "pia")
        .unwrap();
    profile.extra.retain(|(k, _)| k != "ca");
    profile
        .extra
        .push(("ca".into(), q_path(&pia.other_ca_path())));
    lab.write_policy(&policy);
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["addKey on laba401 (198.18.1.11)", "UnknownIssuer"],
    );
    // The right CA, but the server presents a certificate for another name.
    lab.write_policy(&pia.policy(&lab, &[("regions", "[\"lab_a\"]")]));
    pia.set_behaviour(|b| {
        b.wrong_cert_cn.insert("laba401".into());
    });
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["addKey on laba401 (198.18.1.11)", "NotValidForName"],
    );
    // The web API's certificate is checked too (the token goes there with the password): with nothing cached,
    // so that the start must ask it.
    std::fs::remove_dir_all(lab.state_dir.join("pia")).unwrap();
    pia.set_behaviour(|b| {
        b.wrong_cert_cn.clear();
        b.wrong_cert_cn.insert(PIA_WWW_IP.into());
    });
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["198.18.1.1", "certificate"],
    );
    let stats = pia.stats();
    assert!(
        stats.add_key.is_empty() && stats.registered.is_empty(),
        "no addKey got through a refused handshake\n{stats:?}"
    );
    assert_eq!(
        stats.token_requests, 1,
        "the token of the first start, none through the bad certificate\n{stats:?}"
    );
}

#[test]
fn a_hanging_api_fails_the_start_within_the_deadline_leaving_nothing() {
    let (lab, pia) = start("pia_hang");
    lab.write_policy(&pia.policy(&lab, &[("regions", "[\"lab_a\"]"), ("api_timeout", "2")]));
    pia.set_behaviour(|b| {
        b.hang.insert(PiaEndpoint::AddKey);
    });
    let started = Instant::now();
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &[
            "registering with PIA",
            "addKey on laba401",
            "no answer within 2.0 s",
        ],
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "the start failed after {took:?}, not within its deadline"
    );
    assert_eq!(pia.stats().registered.len(), 0);

    // A hanging token endpoint under an overall deadline shorter than two calls: bounded all the same.
    lab.write_policy(&pia.policy(
        &lab,
        &[
            ("regions", "[\"lab_a\"]"),
            ("api_timeout", "2"),
            ("api_deadline", "3"),
        ],
    ));
    pia.set_behaviour(|b| {
        b.hang.clear();
        b.hang.insert(PiaEndpoint::Token);
    });
    std::fs::remove_dir_all(lab.state_dir.join("pia")).unwrap();
    let started = Instant::now();
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["getting a token", "no answer within 2.0 s"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );

    // Malformed JSON is a clear refusal too.
    lab.write_policy(&pia.policy(&lab, &[("regions", "[\"lab_a\"]")]));
    pia.set_behaviour(|b| {
        b.hang.clear();
        b.malformed.insert(PiaEndpoint::AddKey);
    });
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["addKey on laba401", "not the expected JSON"],
    );
    // As is a server that answers for a key that is not ours.
    pia.set_behaviour(|b| {
        b.malformed.clear();
        b.wrong_peer_pubkey = true;
    });
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["not the key we sent"],
    );
    assert_no_secrets(&pia, "the lab transcript", &lab.transcript());
}

#[test]
fn port_forwarding_writes_the_port_and_keeps_binding() {
    let (lab, pia) = start("pia_port_forwarding");
    lab.write_policy(&pia.policy(
        &lab,
        &[
            ("port_forwarding", "true"),
            ("port_file", "\"/run/pia-port\""),
            ("bind_interval", "1"),
        ],
    ));
    // The port is there for the workload's first instruction.
    let run =
        lab.podman_run(&RunOpts::wg("echo PORT=$(cat /run/pia-port); exec sleep 60").detached());
    run.assert_success("a detached PIA container with port forwarding");
    let cid = run.cid().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = pia.stats();
        if stats.bind_port.len() >= 3 {
            assert!(
                stats.bind_port.iter().all(|&p| p == PIA_PF_PORT),
                "{stats:?}"
            );
            assert_eq!(
                stats.get_signature, 1,
                "a 60-day signature is kept\n{stats:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the helper did not keep binding: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = lab.podman(&["logs", &cid]);
    assert!(
        logs.stdout.contains(&format!("PORT={PIA_PF_PORT}")),
        "the workload read the port first thing\n{logs}"
    );
    // The helper's files and argv are named by the tunnel's key.
    let key = lab.tunnel_key_of(&cid).expect("the container's tunnel");
    let host_file = lab.state_dir.join(format!("{key}.port"));
    assert_eq!(
        std::fs::read_to_string(&host_file).unwrap(),
        format!("{PIA_PF_PORT}\n")
    );
    let policy_path = lab.policy_path.to_string_lossy().into_owned();
    let status = lab.run(&[HOOK_BIN, "--policy", &policy_path, "status", "--json"]);
    status.assert_success("wg-oci-hook status --json");
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --json");
    let tunnel = report["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["containers"][0] == cid.as_str())
        .unwrap_or_else(|| panic!("{status}"));
    let shown = &tunnel["pia"];
    assert_eq!(
        (&shown["port"], &shown["region"], &shown["port_file"]),
        (
            &PIA_PF_PORT.into(),
            &"lab_a".into(),
            &"/run/pia-port".into()
        ),
        "{status}"
    );
    assert_eq!(
        shown["helper"], "running",
        "the supervisor keeps it\n{status}"
    );
    assert_eq!(tunnel["supervisor"], "running", "{status}");
    assert_eq!(tunnel["healthy"], true, "{status}");
    let table = lab.run(&[HOOK_BIN, "--policy", &policy_path, "status", &cid]);
    table.assert_success("wg-oci-hook status ID");
    assert!(
        table.stdout.lines().nth(1).is_some_and(
            |row| row.starts_with(&cid[..12]) && row.contains(&format!("  {PIA_PF_PORT}  "))
        ),
        "the table's PORT column\n{table}"
    );
    // One process per tunnel does it all: the supervisor, named by the tunnel's key, no secret in its argv.
    let helpers = supervisors(&key);
    assert_eq!(helpers.len(), 1, "one supervisor: {helpers:?}");
    assert_no_secrets(&pia, "the supervisor's argv", &helpers[0].1);
    let environ = std::fs::read(format!("/proc/{}/environ", helpers[0].0)).unwrap();
    assert_no_secrets(
        &pia,
        "the supervisor's environment",
        &String::from_utf8_lossy(&environ),
    );

    // A new signature that brings another port: the files follow.
    pia.set_behaviour(|b| {
        b.pf_port = Some(47002);
        b.signature_lifetime_secs = Some(3);
    });
    lab.podman(&["rm", "-f", "-t", "0", &cid])
        .assert_success("podman rm -f");
    lab.assert_nothing_left(&cid);
    assert!(supervisors(&key).is_empty());

    let run = lab.podman_run(&RunOpts::wg("exec sleep 60").detached());
    run.assert_success("a second container, short-lived signatures");
    let cid = run.cid().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pia.stats().get_signature < 3 {
        assert!(
            Instant::now() < deadline,
            "signatures were not renewed: {:?}",
            pia.stats()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let inside = lab.podman(&["exec", &cid, "cat", "/run/pia-port"]);
    assert_eq!(inside.stdout, "47002\n", "{inside}");
    lab.podman(&["rm", "-f", "-t", "0", &cid])
        .assert_success("podman rm -f");
    lab.assert_nothing_left(&cid);
}

#[test]
fn a_port_forwarding_start_fails_when_the_first_bind_fails() {
    let (lab, pia) = start("pia_pf_refused");
    lab.write_policy(&pia.policy(&lab, &[("port_forwarding", "true"), ("api_timeout", "2")]));
    pia.set_behaviour(|b| {
        b.hang.insert(PiaEndpoint::BindPort);
    });
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &[
            "forwarding a port (PIA)",
            "bindPort on laba401",
            "no answer within 2.0 s",
        ],
    );
}

#[test]
fn credentials_never_appear_in_logs_records_or_process_arguments() {
    let (lab, pia) = start("pia_secrets");
    let mut policy = pia.policy(&lab, &[("port_forwarding", "true"), ("bind_interval", "1")]);
    policy.log_level = "trace".into();
    lab.write_policy(&policy);
    let pid = lab.spawn_netns_sleeper();
    // Named for this lab: the helpers are found machine-wide by the container id they name.
    let id = format!("pia-direct-secrets-{}", lab.id);
    let id = id.as_str();
    lab.track_container_id(id);
    let state = lab.fake_state(id, pid, &[("wg.enable", "true")]);
    let rootfs = lab.dir.join(format!("bundle-{id}/rootfs"));
    std::fs::create_dir_all(rootfs.join("run")).unwrap();
    let policy_path = lab.policy_path.to_string_lossy().into_owned();
    let out = lab.run_hook_direct(&["create-runtime", "--policy", &policy_path], &state);
    assert!(out.success(), "create-runtime\n{out}");
    assert!(
        out.stderr.contains("registered with PIA region lab_a"),
        "trace logging was on\n{out}"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("run/pia-port")).unwrap(),
        format!("{PIA_PF_PORT}\n")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while pia.stats().bind_port.len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", pia.stats());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!pia.tokens_issued().is_empty());
    assert_no_secrets(
        &pia,
        "create-runtime's output",
        &format!("{}\n{}", out.stdout, out.stderr),
    );
    // Every process's arguments, the supervisor's among them.
    let key = lab.tunnel_key_of(id).expect("the container's tunnel");
    assert_eq!(supervisors(&key).len(), 1, "the tunnel's supervisor");
    for (pid, argv) in processes_mentioning("") {
        assert_no_secrets(&pia, &format!("process {pid}'s arguments"), &argv);
    }
    // The state dir: record, port file, the supervisor's log and verdict; the token cache is the one file that
    // holds a token (and a port_persist signature, which this profile has not).
    let mut seen = 0;
    for entry in walk(&lab.state_dir) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        if name.starts_with("token-") {
            assert!(!text.contains(PIA_PASSWORD), "{name}");
            continue;
        }
        assert_no_secrets(&pia, &entry.display().to_string(), &text);
        seen += 1;
    }
    assert!(
        seen >= 3,
        "record, port file and supervisor log were checked"
    );
    let record = std::fs::read_to_string(lab.record_path(id)).unwrap();
    assert!(
        !record.contains("PrivateKey") && !record.contains("private"),
        "{record}"
    );
    let out = lab.run_hook_direct(&["poststop", "--policy", &policy_path], &state);
    assert!(out.success(), "poststop\n{out}");
    assert_no_secrets(&pia, "poststop's output", &out.stderr);
    lab.assert_nothing_left(id);
}

#[test]
fn dedicated_ip_and_meta_token_routes_register_where_they_should() {
    let (lab, pia) = start("pia_dip_meta");
    // A dedicated IP: its own server, with its own basic-auth addKey.
    lab.write_policy(&pia.policy(&lab, &[]));
    lab.write_file(
        "pia.cred",
        &format!(
            "username = {}\npassword = {}\ndedicated_ip_token = {}\n",
            q(PIA_USERNAME),
            q(PIA_PASSWORD),
            q(PIA_DIP_TOKEN)
        ),
        0o600,
    );
    let run = lab.podman_run(&RunOpts::wg(THROUGH_THE_TUNNEL));
    run.assert_success("a dedicated-IP container");
    let stats = pia.stats();
    assert_eq!(stats.dedicated_ip_requests, 1, "{stats:?}");
    assert_eq!(stats.add_key, [(pia.dip_server().1, true)], "{stats:?}");
    assert_eq!(
        stats.list_requests, 0,
        "a dedicated IP needs no server list\n{stats:?}"
    );
    lab.assert_nothing_left(run.cid());
    // A dedicated IP's server is fixed: a region annotation is refused, not ignored.
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run").annotation("wg.region", "lab_b"),
        &["wg.region=\"lab_b\"", "holds a dedicated IP"],
    );
    assert_eq!(
        pia.stats().add_key.len(),
        1,
        "nothing registered for the refused start"
    );

    // The meta route: the token from the region's meta server, by IP, under PIA's CA.
    let mut policy = pia.policy(&lab, &[("token_via_meta", "true")]);
    policy
        .profiles
        .push(LabProfile::new("unused", &lab.config_path));
    lab.write_policy(&policy);
    std::fs::remove_dir_all(lab.state_dir.join("pia")).unwrap();
    let run = lab.podman_run(&RunOpts::wg(THROUGH_THE_TUNNEL));
    run.assert_success("a token from the meta server");
    let stats = pia.stats();
    assert_eq!(
        (stats.meta_token_requests, stats.token_requests),
        (1, 1),
        "{stats:?}"
    );
    assert!(run.out.stdout.contains(MARKER.trim_end()), "{run}");
    lab.assert_nothing_left(run.cid());

    // Credentials the owner alone may read, or the start is refused.
    let cred = lab.dir.join("pia.cred");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["pia.cred", "chmod 600"],
    );
}

/// Every regular file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
