//! End-to-end: where the hook's lines go (issue 15, item 3). Every createRuntime and poststop ends with one
//! info line (`STAGE container= profile= backend= duration_ms= outcome=`) at the policy's `log` destination:
//! a file, stderr, syslog's `/dev/log` or journald's native socket. The hook runs for real, on a stand-in
//! container of the lab. This machine need not have a syslog daemon or journald: for those, the hook runs in a
//! private mount namespace where the test's own datagram socket is at `/dev/log` or
//! `/run/systemd/journal/socket` (a tmpfs over `/dev` or `/run/systemd` holding bind mounts of what was there,
//! so the hook still has `/dev/net/tun` and `/dev/null`, and nothing is made on the machine). Also: no secret in
//! any destination, stderr as the fallback when a socket is missing or stuck, and a podman start through runc
//! (which drops a successful hook's stderr) whose lines reach the file. Fails (never skips) without what
//! `podman` needs.

use crate::lab::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A container the test starts and stops by running the hook itself, with a stand-in init.
struct Direct<'a> {
    lab: &'a Lab,
    id: String,
    state: String,
    policy: String,
}

impl<'a> Direct<'a> {
    fn new(lab: &'a Lab, name: &str) -> Direct<'a> {
        let id = format!("{name}-{}", lab.id);
        lab.track_container_id(&id);
        let pid = lab.spawn_netns_sleeper();
        Direct {
            lab,
            state: lab.fake_state(&id, pid, &[("wg.enable", "true")]),
            id,
            policy: lab.policy_path.to_string_lossy().into_owned(),
        }
    }

    /// The hook's `stage` (`create-runtime` or `poststop`), in a mount namespace of its own after `setup` if
    /// there is one.
    fn run(&self, stage: &str, setup: Option<&str>) -> CmdOutput {
        let args = [stage, "--policy", self.policy.as_str()];
        match setup {
            Some(setup) => self.lab.run_hook_in_mount_ns(setup, &args, &self.state),
            None => self.lab.run_hook_direct(&args, &self.state),
        }
    }

    /// createRuntime then poststop, both must succeed; leaves nothing.
    fn start_and_stop(&self, setup: Option<&str>) -> (CmdOutput, CmdOutput) {
        let create = self.run("create-runtime", setup);
        assert!(create.success(), "create-runtime\n{create}");
        let stop = self.run("poststop", setup);
        assert!(stop.success(), "poststop\n{stop}");
        self.lab.assert_nothing_left(&self.id);
        (create, stop)
    }
}

/// A datagram socket of the test's, standing in for syslog's or journald's.
struct Listener {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Listener {
    fn bind(lab: &Lab, name: &str) -> Listener {
        let path = lab.dir.join(name);
        let socket =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        socket.set_nonblocking(true).unwrap();
        Listener { socket, path }
    }

    /// Every datagram that arrived so far (the hook has ended: they are all queued).
    fn received(&self) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 1 << 17];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => all.push(buf[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return all,
                Err(e) => panic!("reading {}: {e}", self.path.display()),
            }
        }
    }

    /// Fills the socket's queue, so that a sender has to wait, as for a logger that stopped reading.
    fn fill(&self) {
        let sender = UnixDatagram::unbound().unwrap();
        sender.set_nonblocking(true).unwrap();
        for n in 0.. {
            match sender.send_to(b"<30>filler", &self.path) {
                Ok(_) => assert!(n < 100_000, "the queue never filled"),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("filling {}: {e}", self.path.display()),
            }
        }
    }
}

/// A setup script: `dir` covered by a tmpfs that holds bind mounts of everything `dir` held but `except`, so
/// that something can be put at `dir/except` that only the hook sees.
fn cover(lab: &Lab, dir: &str, except: &str) -> String {
    assert!(
        Path::new(dir).is_dir(),
        "{dir} must exist on this machine (a mount point for the test's tmpfs)"
    );
    let old = lab.dir.join(format!("ns{}", dir.replace('/', "-")));
    fs::create_dir_all(&old).unwrap();
    let old = old.display();
    format!(
        r#"mount --rbind {dir} {old}
mount -t tmpfs -o mode=0755 tmpfs {dir}
for e in {old}/* {old}/.[!.]*; do
  [ -e "$e" ] || [ -L "$e" ] || continue
  name=${{e##*/}}; n={dir}/$name
  [ "$name" = {except} ] && continue
  if [ -L "$e" ]; then cp -P "$e" "$n"
  elif [ -d "$e" ]; then mkdir "$n"; mount --rbind "$e" "$n"
  else touch "$n"; mount --bind "$e" "$n"; fi
done"#
    )
}

/// Setup: the test's socket at `/dev/log`, or nothing there with `None`.
fn syslog_at(lab: &Lab, socket: Option<&Listener>) -> String {
    let mut script = cover(lab, "/dev", "log");
    if let Some(socket) = socket {
        script += &format!(
            "\ntouch /dev/log\nmount --bind {} /dev/log",
            socket.path.display()
        );
    }
    script
}

/// Setup: the test's socket at `/run/systemd/journal/socket`, or nothing there with `None`.
fn journald_at(lab: &Lab, socket: Option<&Listener>) -> String {
    let mut script = cover(lab, "/run/systemd", "journal");
    if let Some(socket) = socket {
        script += &format!(
            "\nmkdir /run/systemd/journal\ntouch /run/systemd/journal/socket\nmount --bind {} /run/systemd/journal/socket",
            socket.path.display()
        );
    }
    script
}

/// A datagram of journald's native protocol as its fields (each datagram is one entry).
fn journal_fields(datagram: &[u8]) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or_else(|| panic!("a field without its newline: {datagram:?}"));
        let line = &rest[..nl];
        let (key, value, used) = match line.iter().position(|&b| b == b'=') {
            Some(eq) => (&line[..eq], &line[eq + 1..], nl + 1),
            None => {
                let len = u64::from_le_bytes(rest[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let value = &rest[nl + 9..nl + 9 + len];
                assert_eq!(rest[nl + 9 + len], b'\n', "{datagram:?}");
                (line, value, nl + 10 + len)
            }
        };
        let key = String::from_utf8(key.to_vec()).unwrap();
        assert!(
            !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "field name {key:?}"
        );
        fields.insert(key, String::from_utf8(value.to_vec()).unwrap());
        rest = &rest[used..];
    }
    fields
}

/// The outcome line of `stage` for `id` in `text` (ok, profile lab, userspace), with its duration checked.
#[track_caller]
fn outcome_line<'t>(text: &'t str, stage: &str, id: &str) -> &'t str {
    let head = format!("{stage} container={id} profile=lab backend=userspace duration_ms=");
    let line = text
        .lines()
        .find(|l| l.contains(&head))
        .unwrap_or_else(|| panic!("no `{head}...` line in:\n{text}"));
    let rest = &line[line.find(&head).unwrap() + head.len()..];
    let (ms, outcome) = rest.split_once(' ').unwrap();
    let ms: f64 = ms
        .parse()
        .unwrap_or_else(|_| panic!("duration {ms:?}: {line}"));
    assert!(ms > 0.0 && ms < 60_000.0, "{line}");
    assert_eq!(outcome, "outcome=ok", "{line}");
    line
}

#[track_caller]
fn assert_stderr_quiet(out: &CmdOutput) {
    assert!(
        out.stderr.trim().is_empty(),
        "a successful stage at the default level writes nothing to stderr\n{out}"
    );
}

/// The lab's policy with `log` and, unless None, `log_level` (None: the hook's default).
fn policy_with(lab: &Lab, log: Option<&str>, level: Option<&str>) {
    let mut policy = lab.policy();
    policy.log = log.map(str::to_owned);
    policy.log_level = level.unwrap_or_default().to_owned();
    lab.write_policy(&policy);
}

#[test]
fn outcome_lines_reach_a_log_file_created_0640() {
    let lab = Lab::new("logs_file");
    let file = lab.dir.join("var-log/wg-oci-hook.log");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    policy_with(&lab, Some(&format!("file:{}", file.display())), None);
    let c = Direct::new(&lab, "logs-file");
    let (create, stop) = c.start_and_stop(None);
    assert_stderr_quiet(&create);
    assert_stderr_quiet(&stop);
    let text = fs::read_to_string(&file).unwrap();
    println!("{text}");
    for stage in ["create-runtime", "poststop"] {
        let line = outcome_line(&text, stage, &c.id);
        // `2025-06-24T10:00:00.123Z wg-oci-hook[PID]: INFO: ...`, one line each.
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert!(stamp.ends_with('Z') && stamp.contains('T'), "{line}");
        assert!(rest.starts_with("wg-oci-hook["), "{line}");
        assert!(rest.contains("]: INFO: "), "{line}");
    }
    assert!(
        text.lines().all(|l| !l.contains(": DEBUG: ")),
        "the default level is info:\n{text}"
    );
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "the log file's mode");
    // Lines are appended: a second container's follow the first's.
    let d = Direct::new(&lab, "logs-file-2");
    d.start_and_stop(None);
    let text = fs::read_to_string(&file).unwrap();
    let first = text.find(&format!("container={} ", c.id)).unwrap();
    let second = text.find(&format!("container={} ", d.id)).unwrap();
    assert!(first < second, "{text}");
}

#[test]
fn outcome_lines_reach_syslog_at_dev_log() {
    let lab = Lab::new("logs_syslog");
    // The default destination.
    policy_with(&lab, None, None);
    let syslog = Listener::bind(&lab, "syslog.sock");
    let setup = syslog_at(&lab, Some(&syslog));
    let c = Direct::new(&lab, "logs-syslog");
    let (create, stop) = c.start_and_stop(Some(&setup));
    assert_stderr_quiet(&create);
    assert_stderr_quiet(&stop);
    let lines: Vec<String> = syslog
        .received()
        .into_iter()
        .map(|d| String::from_utf8(d).unwrap())
        .collect();
    let text = lines.join("\n");
    println!("{text}");
    for stage in ["create-runtime", "poststop"] {
        let line = outcome_line(&text, stage, &c.id);
        // `<30>Mmm dd hh:mm:ss wg-oci-hook[PID]: ...`: daemon.info, as syslog(3) sends it.
        assert!(line.starts_with("<30>"), "{line}");
        let after_stamp = &line[4 + 16..];
        assert!(after_stamp.starts_with("wg-oci-hook["), "{line}");
        assert_eq!(&line[4 + 9..4 + 10], ":", "{line}");
    }
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("<30>") || l.starts_with("<28>") || l.starts_with("<27>")),
        "info, warning or error only, at the default level:\n{text}"
    );
    assert!(lines.iter().all(|l| !l.contains('\n')), "{text}");
}

#[test]
fn outcome_lines_reach_journald_with_fields() {
    let lab = Lab::new("logs_journald");
    policy_with(&lab, Some("journald"), None);
    let journal = Listener::bind(&lab, "journal.sock");
    let setup = journald_at(&lab, Some(&journal));
    let c = Direct::new(&lab, "logs-journald");
    let (create, stop) = c.start_and_stop(Some(&setup));
    assert_stderr_quiet(&create);
    assert_stderr_quiet(&stop);
    let entries: Vec<BTreeMap<String, String>> = journal
        .received()
        .iter()
        .map(|d| journal_fields(d))
        .collect();
    println!("{entries:#?}");
    for stage in ["create-runtime", "poststop"] {
        let entry = entries
            .iter()
            .find(|e| e.get("WG_STAGE").map(String::as_str) == Some(stage))
            .unwrap_or_else(|| panic!("no {stage} entry in {entries:#?}"));
        outcome_line(&entry["MESSAGE"], stage, &c.id);
        for (key, value) in [
            ("PRIORITY", "6"),
            ("SYSLOG_IDENTIFIER", "wg-oci-hook"),
            ("SYSLOG_FACILITY", "3"),
            ("CONTAINER_ID", &c.id[..12]),
            ("CONTAINER_ID_FULL", &c.id),
            ("WG_PROFILE", "lab"),
            ("WG_BACKEND", "userspace"),
            ("WG_OUTCOME", "ok"),
        ] {
            assert_eq!(
                entry.get(key).map(String::as_str),
                Some(value),
                "{key}: {entry:#?}"
            );
        }
        assert!(entry["WG_DURATION_MS"].parse::<f64>().is_ok(), "{entry:#?}");
        assert!(entry["SYSLOG_PID"].parse::<u32>().is_ok(), "{entry:#?}");
    }
    assert!(
        entries
            .iter()
            .all(|e| e.contains_key("MESSAGE") && e.contains_key("PRIORITY")),
        "{entries:#?}"
    );
}

#[test]
fn stderr_keeps_todays_behaviour() {
    let lab = Lab::new("logs_stderr");
    // At its default level (warn), a start that works says nothing: runc would drop it anyway.
    policy_with(&lab, Some("stderr"), None);
    let c = Direct::new(&lab, "logs-stderr");
    let (create, stop) = c.start_and_stop(None);
    assert_stderr_quiet(&create);
    assert_stderr_quiet(&stop);
    // At info, the outcome lines in the old stderr form.
    policy_with(&lab, Some("stderr"), Some("info"));
    let d = Direct::new(&lab, "logs-stderr-info");
    let (create, stop) = d.start_and_stop(None);
    let line = outcome_line(&create.stderr, "create-runtime", &d.id);
    assert!(line.starts_with("wg-oci-hook["), "{line}");
    assert!(line.contains("]: INFO: create-runtime "), "{line}");
    outcome_line(&stop.stderr, "poststop", &d.id);
}

/// A failed start: its outcome line, with the error, at the destination; on stderr the error line alone, once,
/// as the engine shows it. The file and stderr destinations alike.
#[test]
fn a_failed_start_logs_its_error_and_stderr_holds_one_line() {
    let lab = Lab::new("logs_failure");
    let file = lab.dir.join("hook.log");
    let mut policy = lab.policy();
    policy.log = Some(format!("file:{}", file.display()));
    policy.log_level = String::new();
    policy.userspace_command = vec!["/nonexistent/wireguard-go".to_owned()];
    lab.write_policy(&policy);
    let c = Direct::new(&lab, "logs-fail");
    let out = c.run("create-runtime", None);
    assert!(!out.success(), "the start must fail\n{out}");
    let stderr: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(stderr.len(), 1, "one line on stderr\n{out}");
    let error = stderr[0]
        .strip_prefix(&format!("wg-oci-hook: container {}: ", c.id))
        .unwrap_or_else(|| panic!("the error line\n{out}"));
    assert!(error.contains("/nonexistent/wireguard-go"), "{out}");
    let text = fs::read_to_string(&file).unwrap();
    println!("{text}");
    let head = format!(
        "create-runtime container={} profile=lab backend=userspace duration_ms=",
        c.id
    );
    let line = text
        .lines()
        .find(|l| l.contains(&head))
        .unwrap_or_else(|| panic!("no outcome line\n{text}"));
    assert!(
        line.ends_with(&format!(" outcome=error: {error}")),
        "the outcome carries the error line, without its container:\n{line}\n{error}"
    );
    assert!(
        line.contains("]: ERROR: create-runtime "),
        "a failure is an error: {line}"
    );
    // runc runs poststop after a failed create: the container has no tunnel, and says so.
    let stop = c.run("poststop", None);
    assert!(stop.success(), "{stop}");
    lab.assert_nothing_left(&c.id);
    let text = fs::read_to_string(&file).unwrap();
    let stopped = format!(
        "poststop container={} profile=- backend=- duration_ms=",
        c.id
    );
    assert!(text.contains(&stopped), "{text}");

    // A failure is logged at error: with log_level = "error", it still is, and a start that works is not.
    let quiet = lab.dir.join("errors-only.log");
    policy.log = Some(format!("file:{}", quiet.display()));
    policy.log_level = "error".to_owned();
    lab.write_policy(&policy);
    let e = Direct::new(&lab, "logs-fail-quiet");
    assert!(!e.run("create-runtime", None).success());
    e.run("poststop", None);
    lab.assert_nothing_left(&e.id);
    let text = fs::read_to_string(&quiet).unwrap();
    assert!(
        text.contains(&format!("create-runtime container={} ", e.id))
            && text.contains("outcome=error: "),
        "{text}"
    );
    assert!(!text.contains("outcome=ok"), "{text}");

    // With log = "stderr" at info, still the one line: the error is not said twice.
    policy.log = Some("stderr".to_owned());
    policy.log_level = "info".to_owned();
    lab.write_policy(&policy);
    let d = Direct::new(&lab, "logs-fail-stderr");
    let out = d.run("create-runtime", None);
    assert!(!out.success(), "the start must fail\n{out}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("/nonexistent/wireguard-go"))
        .collect();
    assert_eq!(errors.len(), 1, "the error once\n{out}");
    assert!(!out.stderr.contains("outcome=error"), "{out}");
    d.run("poststop", None);
    lab.assert_nothing_left(&d.id);
}

/// A destination that cannot take the line does not fail the start: the line goes to stderr, after a note
/// saying why. Syslog's and journald's sockets missing, a log file that is a symlink (never followed), and a
/// syslog that stopped reading (the start waits half a second once, not for each line).
#[test]
fn a_destination_that_cannot_take_a_line_falls_back_to_stderr() {
    let lab = Lab::new("logs_fallback");
    let target = lab.write_file("precious", "precious\n", 0o644);
    let link = lab.dir.join("hook.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    policy_with(&lab, Some(&format!("file:{}", link.display())), None);
    let c = Direct::new(&lab, "logs-symlink");
    let (create, stop) = c.start_and_stop(None);
    let note = format!(
        "cannot log to file:{} (is a symlink; name the real file); writing to stderr instead",
        link.display()
    );
    for (out, stage) in [(&create, "create-runtime"), (&stop, "poststop")] {
        assert_eq!(out.stderr.matches(&note).count(), 1, "the note once\n{out}");
        outcome_line(&out.stderr, stage, &c.id);
    }
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");

    for (log, setup, note) in [
        (
            None,
            syslog_at(&lab, None),
            "cannot log to syslog (/dev/log: No such file or directory (os error 2)); writing to stderr instead",
        ),
        (
            Some("journald"),
            journald_at(&lab, None),
            "cannot log to journald (/run/systemd/journal/socket: No such file or directory (os error 2)); writing to stderr instead",
        ),
    ] {
        policy_with(&lab, log, None);
        let c = Direct::new(&lab, &format!("logs-missing-{}", log.unwrap_or("syslog")));
        let (create, stop) = c.start_and_stop(Some(&setup));
        for (out, stage) in [(&create, "create-runtime"), (&stop, "poststop")] {
            assert!(out.stderr.contains(note), "{out}");
            assert_eq!(out.stderr.matches(note).count(), 1, "the note once\n{out}");
            let line = outcome_line(&out.stderr, stage, &c.id);
            assert!(line.contains("]: INFO: "), "{line}");
        }
    }

    policy_with(&lab, None, None);
    let syslog = Listener::bind(&lab, "stuck.sock");
    syslog.fill();
    let setup = syslog_at(&lab, Some(&syslog));
    let c = Direct::new(&lab, "logs-stuck");
    let started = Instant::now();
    let create = c.run("create-runtime", Some(&setup));
    let took = started.elapsed();
    assert!(create.success(), "{create}");
    assert!(
        create
            .stderr
            .contains("cannot log to syslog (/dev/log: Resource temporarily unavailable"),
        "{create}"
    );
    outcome_line(&create.stderr, "create-runtime", &c.id);
    assert!(
        took < Duration::from_secs(5),
        "the start took {took:?}\n{create}"
    );
    // The queue is still full: every line of the stop waits no more.
    let stop = c.run("poststop", Some(&setup));
    assert!(stop.success(), "{stop}");
    outcome_line(&stop.stderr, "poststop", &c.id);
    lab.assert_nothing_left(&c.id);
}

/// The profile's private key (and its hex form, as the userspace daemon is told it) never reaches any
/// destination, even at trace.
#[test]
fn no_destination_ever_gets_the_private_key() {
    use base64::Engine;
    let lab = Lab::new("logs_secrets");
    let key = lab.client_private_key.clone();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&key)
        .expect("the lab's key is base64");
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let no_key = |what: &str, text: &str| {
        for secret in [&key, &hex] {
            assert!(
                !text.contains(secret.as_str()),
                "{what} holds the private key:\n{text}"
            );
        }
    };
    // Not vacuous: the destination got the debug and trace lines asked for.
    let check = |what: &str, text: &str| {
        assert!(
            text.contains(": DEBUG: ") || text.contains("<31>") || text.contains("PRIORITY=7"),
            "{what}: trace and debug lines were asked for:\n{text}"
        );
        no_key(what, text);
    };

    let file = lab.dir.join("secrets.log");
    policy_with(
        &lab,
        Some(&format!("file:{}", file.display())),
        Some("trace"),
    );
    let c = Direct::new(&lab, "logs-secret-file");
    let (create, stop) = c.start_and_stop(None);
    check("the file", &fs::read_to_string(&file).unwrap());
    no_key(
        "stderr besides the file",
        &format!("{}{}", create.stderr, stop.stderr),
    );

    policy_with(&lab, Some("stderr"), Some("trace"));
    let c = Direct::new(&lab, "logs-secret-stderr");
    let (create, stop) = c.start_and_stop(None);
    check("stderr", &format!("{}{}", create.stderr, stop.stderr));

    policy_with(&lab, Some("syslog"), Some("trace"));
    let syslog = Listener::bind(&lab, "secret-syslog.sock");
    let c = Direct::new(&lab, "logs-secret-syslog");
    c.start_and_stop(Some(&syslog_at(&lab, Some(&syslog))));
    let datagrams = syslog.received();
    check(
        "syslog",
        &datagrams
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect::<Vec<_>>()
            .join("\n"),
    );

    policy_with(&lab, Some("journald"), Some("trace"));
    let journal = Listener::bind(&lab, "secret-journal.sock");
    let c = Direct::new(&lab, "logs-secret-journald");
    c.start_and_stop(Some(&journald_at(&lab, Some(&journal))));
    let datagrams = journal.received();
    check(
        "journald",
        &datagrams
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    no_key("the lab's transcript", &lab.transcript());
}

/// Through podman and runc, which drop a hook's stderr when it succeeds: the start's and the stop's lines
/// reach the file all the same.
#[test]
fn a_podman_start_and_stop_are_logged_where_runc_would_lose_them() {
    let lab = Lab::new("logs_podman");
    let file = lab.dir.join("podman-hook.log");
    policy_with(&lab, Some(&format!("file:{}", file.display())), None);
    let run = lab.podman_run(&RunOpts::wg(TUNNEL_PROBE));
    run.assert_success("podman run");
    assert!(run.out.stdout.contains(MARKER.trim()), "{run}");
    let cid = run.cid().to_owned();
    assert!(
        !run.out.stderr.contains("outcome="),
        "the lines are not on the engine's output\n{run}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = fs::read_to_string(&file).unwrap_or_default();
        if text.contains(&format!("poststop container={cid} ")) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("{text}");
    outcome_line(&text, "create-runtime", &cid);
    outcome_line(&text, "poststop", &cid);
    lab.assert_nothing_left(&cid);
}
