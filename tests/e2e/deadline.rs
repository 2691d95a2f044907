//! End-to-end: the hook's deadlines (`resolve_timeout`, `create_timeout`) against podman + runc in the lab.
//! A start that cannot finish must fail in time, before the hooks.d timeout (30 s) lets the engine kill the hook
//! with no word of why, naming what it waited for, and leave nothing behind. Needs what `podman` needs.

use crate::lab::*;
use std::time::{Duration, Instant};

/// A name no /etc/hosts holds: only DNS could answer it.
const SILENT_NAME: &str = "vpn.deadline-lab.test";

/// A resolv.conf and an nsswitch.conf for the hook's resolver: the only nameserver is the lab's server end of
/// the underlay, whose nftables drop every DNS query (no ICMP either: the resolver hears nothing at all), with
/// glibc's slowest sane options. Returns the run options that mount both for podman, runc and the hook.
fn silent_resolver(lab: &Lab, opts: RunOpts) -> RunOpts {
    let rules = "table inet wgl_dns_drop {\n\
                 \tchain input {\n\
                 \t\ttype filter hook input priority -10; policy accept;\n\
                 \t\tudp dport 53 drop\n\
                 \t\ttcp dport 53 drop\n\
                 \t}\n\
                 }\n";
    let rules_file = lab.write_file("dns-drop.nft", rules, 0o600);
    let rules_path = rules_file.to_string_lossy();
    lab.run_in(&lab.server_ns, &["nft", "-f", &rules_path])
        .assert_success("dropping DNS in the lab's server netns");
    let resolv = lab.write_file(
        "silent-resolv.conf",
        &format!("nameserver {SERVER_UNDERLAY}\noptions timeout:20 attempts:2\n"),
        0o644,
    );
    // Every other database as files: only `hosts` matters, and it must reach DNS.
    let nsswitch = lab.write_file(
        "silent-nsswitch.conf",
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
        0o644,
    );
    opts.bind(&resolv, "/etc/resolv.conf")
        .bind(&nsswitch, "/etc/nsswitch.conf")
}

fn write_top_level(lab: &Lab, keys: &[(&str, &str)]) {
    let mut policy = lab.policy();
    for (key, value) in keys {
        policy.extra_top.push((key.to_string(), value.to_string()));
    }
    lab.write_policy(&policy);
}

#[test]
fn an_endpoint_whose_resolver_never_answers_fails_within_resolve_timeout() {
    let lab = Lab::new("silent_resolver");
    let mut config = lab.client_config();
    config.endpoint = format!("{SILENT_NAME}:{SERVER_PORT}");
    lab.write_config(&config.render());
    write_top_level(&lab, &[("resolve_timeout", "2")]);
    let opts = silent_resolver(&lab, RunOpts::wg("echo should-not-run"));

    let started = Instant::now();
    let run = assert_refused(
        &lab,
        &opts,
        &[
            "reading the profile",
            &lab.config_path.to_string_lossy(),
            &format!("peer 1 endpoint {SILENT_NAME}"),
            "no answer from the resolver within 2.0 s",
            "resolve_timeout",
        ],
    );
    let took = started.elapsed();
    println!("refused in {took:?}");
    assert!(
        took < Duration::from_secs(6),
        "a 2 s resolve_timeout should end the start in about 2 s, not {took:?}\n{run}"
    );
    assert!(!run.out.stdout.contains("should-not-run"), "{run}");

    // The same name, answered by /etc/hosts, still makes a working tunnel: the lookup on a thread returns.
    let hosts = lab.write_file(
        "named-hosts",
        &format!("127.0.0.1 localhost\n{SERVER_UNDERLAY} {SILENT_NAME}\n"),
        0o644,
    );
    let opts = silent_resolver(
        &lab,
        RunOpts::wg(&format!(
            "nc {SERVER_TUNNEL_V4} {RESPONDER_PORT} </dev/null"
        )),
    )
    .bind(&hosts, "/etc/hosts");
    let run = lab.podman_run(&opts);
    run.assert_success("a tunnel to an Endpoint named in /etc/hosts");
    assert_eq!(run.out.stdout, MARKER, "{run}");
    lab.assert_nothing_left(run.cid());
}

/// The overall deadline reaches the steps after the profile: a userspace daemon that never opens its socket
/// is given up on when create_timeout passes (not after the daemon wait's own 5 s), and is stopped.
#[test]
fn a_daemon_that_never_opens_its_socket_fails_within_create_timeout() {
    let lab = Lab::new("create_timeout");
    let daemon = lab.write_file(
        "mute-daemon.sh",
        "#!/bin/sh\n# A WireGuard daemon that never opens its UAPI socket.\nwhile :; do sleep 1; done\n",
        0o700,
    );
    let mut policy = lab.policy();
    policy.userspace_command = vec![daemon.to_string_lossy().into_owned()];
    policy.extra_top.push(("create_timeout".into(), "2".into()));
    policy
        .extra_top
        .push(("resolve_timeout".into(), "1".into()));
    lab.write_policy(&policy);

    let started = Instant::now();
    let run = assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &["starting the userspace WireGuard daemon", "create_timeout"],
    );
    let took = started.elapsed();
    println!("refused in {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "a 2 s create_timeout should end the start in about 2 s, not {took:?}\n{run}"
    );
    assert!(
        processes_mentioning(&daemon.to_string_lossy()).is_empty(),
        "the mute daemon was left running"
    );
}

/// PIA's api_deadline (20 s by default) starts inside create_timeout: the earlier of the two bounds the calls.
/// With a token endpoint that never answers, the start ends when create_timeout passes, not after api_timeout.
#[test]
fn a_hanging_pia_api_is_cut_by_create_timeout() {
    let lab = Lab::new("pia_create_timeout");
    let pia = PiaLab::start(&lab);
    let mut policy = pia.policy(&lab, &[("regions", "[\"lab_a\"]"), ("api_timeout", "10")]);
    policy.extra_top.push(("create_timeout".into(), "3".into()));
    lab.write_policy(&policy);
    pia.set_behaviour(|b| {
        b.hang.insert(PiaEndpoint::Token);
    });

    let started = Instant::now();
    let run = assert_refused(
        &lab,
        &RunOpts::wg("echo should-not-run"),
        &[
            "registering with PIA",
            "getting a token",
            "(create_timeout)",
        ],
    );
    let took = started.elapsed();
    println!("refused in {took:?}");
    assert!(
        took < Duration::from_secs(7),
        "a 3 s create_timeout should end the start in about 3 s, not {took:?}\n{run}"
    );
    assert!(pia.stats().registered.is_empty());
}
