//! Fifty podman containers started at once, each with a tunnel of its own: on a pool of fifty wg-quick files
//! (one lease each) and on the lab's PIA server (one registered key each). Every container must start, get its
//! own interface and address, reach the lab's server through its own tunnel while all fifty are live, and
//! leave nothing once all are stopped at once. Each test also prints the wall time of its fifty starts, and of
//! fifty plain containers (no `wg.enable`) started the same way right after.
//!
//! Heavy (a hundred containers per test): `make test-many` runs them alone, one at a time; `make test` skips
//! them. Needs what `podman` needs plus openssl; fails (never skips) without it.

use crate::lab::*;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

const CONTAINERS: usize = 50;

/// How long the fifty workloads may take to report, and the fifty containers to be gone once told to stop.
const WAIT: Duration = Duration::from_secs(120);

/// Waits for the test's go (written once all fifty run), then records wg0's IPv4 address and what the lab's
/// responder answers through the tunnel, says it is done, and idles until told to stop.
const WORKLOAD: &str = "while [ ! -e /tmp/go ]; do sleep 0.1; done
ip -4 -o addr show dev wg0 > /tmp/addr 2>&1
nc -w 5 10.77.0.1 8080 </dev/null > /tmp/answer 2>&1
touch /tmp/done
while [ ! -e /tmp/stop ]; do sleep 0.1; done";

/// The plain containers' workload: idle until told to stop.
const IDLE: &str = "while [ ! -e /tmp/stop ]; do sleep 0.1; done";

/// What one container of the fifty reported.
struct Report {
    cid: String,
    /// Its rootfs, whose /tmp the test and the workload share.
    rootfs: PathBuf,
    address: String,
    answer: String,
}

#[test]
fn fifty_podman_containers_on_a_pool_of_fifty() {
    let lab = Lab::new("many_pool");
    let pool: LabPool = lab.write_pool("pool", CONTAINERS);
    let server_peers = lab.server_peers();
    assert!(
        pool.leases
            .iter()
            .all(|(_, _, key)| server_peers.contains(key)),
        "the lab's server accepts every lease of the pool"
    );
    // The lab first: the pool's first file, as a plain wg-quick profile, reaches the responder from its address.
    let (first_file, first_address, _) = &pool.leases[0];
    let mut policy = lab.policy();
    policy.profiles.push(LabProfile::new("first", first_file));
    lab.write_policy(&policy);
    let probe = lab.podman_run(&RunOpts::wg(TUNNEL_PROBE).annotation("wg.profile", "first"));
    probe.assert_success("a container on the pool's first file as a plain profile");
    assert!(probe.out.stdout.contains(MARKER), "{probe}");
    assert_eq!(
        lab.responder_peer_ips(),
        std::slice::from_ref(first_address),
        "{probe}"
    );
    lab.assert_nothing_left(probe.cid());
    let probed = lab.responder_peer_ips().len();

    policy.default_profile = "pool".into();
    policy.profiles.push(pool.profile("pool"));
    lab.write_policy(&policy);
    let (reports, with_hook) = fifty_with_tunnels(&lab);
    let expected: BTreeSet<String> = pool.addresses().into_iter().collect();
    for r in &reports {
        assert!(
            expected.contains(&r.address),
            "container {} has {} on wg0, not a pool address\n{}",
            r.cid,
            r.address,
            lab.transcript()
        );
    }
    let seen: BTreeSet<String> = lab.responder_peer_ips()[probed..].iter().cloned().collect();
    assert_eq!(
        seen, expected,
        "the server saw each pool address as a source, while all fifty were live"
    );
    stop_all_and_check(&lab, &reports);
    let plain = fifty_plain(&lab);
    print_times("pool", with_hook, plain);
}

#[test]
fn fifty_pia_containers() {
    let lab = Lab::new("many_pia");
    let pia = PiaLab::start(&lab);
    lab.write_policy(&pia.policy(&lab, &[]));

    let (reports, with_hook) = fifty_with_tunnels(&lab);
    let stats = pia.stats();
    let keys: BTreeSet<&str> = stats.registered.iter().map(|(k, _)| k.as_str()).collect();
    let registered: BTreeSet<String> = stats.registered.iter().map(|(_, a)| a.clone()).collect();
    assert_eq!(
        (stats.registered.len(), keys.len(), registered.len()),
        (CONTAINERS, CONTAINERS, CONTAINERS),
        "one registration per container, each its own key and address\n{stats:?}"
    );
    let server_peers = lab.server_peers();
    assert!(
        keys.iter().all(|k| server_peers.iter().any(|p| p == k)),
        "the lab's server has every registered key as a peer"
    );
    for r in &reports {
        assert!(
            registered.contains(&r.address),
            "container {} has {} on wg0, not a registered peer_ip\n{stats:?}",
            r.cid,
            r.address
        );
    }
    let seen: BTreeSet<String> = lab.responder_peer_ips().into_iter().collect();
    assert_eq!(
        seen, registered,
        "the server saw each registered address as a source, while all fifty were live"
    );
    println!(
        "PIA server: {} token, {} list, {} addKey requests",
        stats.token_requests,
        stats.list_requests,
        stats.add_key.len()
    );
    stop_all_and_check(&lab, &reports);
    let plain = fifty_plain(&lab);
    print_times("PIA", with_hook, plain);
}

/// Starts fifty `wg.enable` containers at once and lets them reach the server once all run. Checks that every
/// one started, with a record and a host link of its own, a distinct address on wg0, and the responder's answer.
/// Returns their reports and the wall time of the fifty starts.
fn fifty_with_tunnels(lab: &Lab) -> (Vec<Report>, Duration) {
    let (runs, took) = start_at_once(lab, &RunOpts::wg(WORKLOAD).detached());
    let failed: Vec<&RunOutput> = runs.iter().filter(|r| !r.success()).collect();
    if let Some(first) = failed.first() {
        // The hook's lines without the container ids, each once, with how many containers it refused.
        let mut causes: Vec<(String, usize)> = Vec::new();
        for run in &failed {
            let cause = match (run.hook_error_line(), run.cid.as_deref()) {
                (Some(line), Some(cid)) => line.replace(cid, "<id>"),
                _ => "no line of the hook's".to_owned(),
            };
            match causes.iter_mut().find(|(c, _)| *c == cause) {
                Some((_, n)) => *n += 1,
                None => causes.push((cause, 1)),
            }
        }
        let causes: Vec<String> = causes.iter().map(|(c, n)| format!("{n} x {c}")).collect();
        panic!(
            "{} of {CONTAINERS} containers did not start:\n  {}\nthe first:\n{first}",
            failed.len(),
            causes.join("\n  ")
        );
    }
    let mut links = BTreeSet::new();
    for run in &runs {
        let cid = run.cid();
        assert!(
            lab.wait_for_record(cid).is_some(),
            "container {cid} runs without a record"
        );
        let link = lab
            .host_link_of(cid)
            .unwrap_or_else(|| panic!("container {cid}'s record names no host link"));
        assert!(links.insert(link.clone()), "host link {link} used twice");
    }
    for run in &runs {
        fs::write(run.rootfs.join("tmp/go"), "").unwrap();
    }
    let mut reports = Vec::new();
    let mut addresses = BTreeSet::new();
    for run in &runs {
        let tmp = run.rootfs.join("tmp");
        wait_for_file(&tmp.join("done"), run.cid());
        let addr = read(&tmp.join("addr"));
        let address = addr
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next())
            .unwrap_or_else(|| panic!("container {}: no IPv4 on wg0: {addr:?}", run.cid()))
            .to_owned();
        let answer = read(&tmp.join("answer"));
        assert_eq!(
            answer,
            MARKER,
            "container {} ({address}) did not reach the responder through its tunnel",
            run.cid()
        );
        assert!(
            addresses.insert(address.clone()),
            "address {address} on two containers' wg0"
        );
        reports.push(Report {
            cid: run.cid().to_owned(),
            rootfs: run.rootfs.clone(),
            address,
            answer,
        });
    }
    assert!(reports.iter().all(|r| r.answer == MARKER));
    (reports, took)
}

/// Starts fifty containers without `wg.enable` the same way, stops them, and returns the wall time of the
/// starts.
fn fifty_plain(lab: &Lab) -> Duration {
    let (runs, took) = start_at_once(lab, &RunOpts::plain(IDLE).detached());
    for run in &runs {
        run.assert_success("a plain container");
    }
    for run in &runs {
        fs::write(run.rootfs.join("tmp/stop"), "").unwrap();
    }
    wait_no_containers(lab);
    took
}

/// `podman run` `opts` fifty times at once (each in a fresh rootfs); the runs and the wall time until the last
/// returned.
fn start_at_once(lab: &Lab, opts: &RunOpts) -> (Vec<RunOutput>, Duration) {
    let barrier = Barrier::new(CONTAINERS);
    let start = Instant::now();
    let runs = thread::scope(|s| {
        let handles: Vec<_> = (0..CONTAINERS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    lab.podman_run(opts)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a podman run thread"))
            .collect()
    });
    (runs, start.elapsed())
}

/// Tells every container to stop at once, waits until podman has removed them all, and checks that nothing of
/// any tunnel is left: no record, link, daemon or socket of any of them, no `wgo*` link in the lab's host
/// netns, no hook daemon of this lab, no record or lease in the state dir.
fn stop_all_and_check(lab: &Lab, reports: &[Report]) {
    for r in reports {
        fs::write(r.rootfs.join("tmp/stop"), "").unwrap();
    }
    wait_no_containers(lab);
    for r in reports {
        lab.assert_nothing_left(&r.cid);
    }
    let links: Vec<String> = lab
        .host_links()
        .into_iter()
        .filter(|l| l.starts_with(HOST_LINK_PREFIX))
        .collect();
    assert!(links.is_empty(), "links left in the host netns: {links:?}");
    let daemons = lab.hook_daemons();
    assert!(daemons.is_empty(), "hook daemons left: {daemons:?}");
    let left = files_under(&lab.state_dir);
    assert!(
        left.is_empty(),
        "the state dir still holds (records, leases):\n  {}",
        left.join("\n  ")
    );
}

/// Waits until podman lists no container of this lab (they run with --rm).
fn wait_no_containers(lab: &Lab) {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = lab.podman(&["ps", "-aq"]);
        out.assert_success("podman ps");
        if out.stdout.trim().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "containers still there {} s after they were told to stop:\n{}",
            WAIT.as_secs(),
            out.stdout
        );
        thread::sleep(Duration::from_millis(250));
    }
}

/// Every regular file under `dir`, but the PIA cache (`pia/`: tokens and the server list, kept on purpose).
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if path == dir.join("pia") {
                continue;
            }
            found.extend(files_under(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

fn print_times(what: &str, with_hook: Duration, plain: Duration) {
    println!(
        "{what}: {CONTAINERS} podman starts at once: {:.1} s with the hook, {:.1} s without (one run each)",
        with_hook.as_secs_f64(),
        plain.as_secs_f64()
    );
}

fn wait_for_file(path: &Path, cid: &str) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "container {cid}: timed out waiting for {}",
            path.display()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}
