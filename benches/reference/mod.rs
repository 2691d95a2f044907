//! The reference shell hook (`benches/reference-hook.sh`, a benchmark reference and not a product) in the lab:
//! its hooks.d entries, its direct runs, and the proof, before anything is timed, that it really gives a container
//! a working tunnel equivalent to ours. Included by `container_start.rs`.
//!
//! podman runs it for containers annotated [`ANNOTATION`]`=true`: not a `wg.*` name, since our hook refuses the
//! `wg.*` annotations it does not know, and not `wg.enable`, which runs ours. It runs on the lab's default
//! profile (`lab.conf`), the one our hook's `wg.enable=true` containers get.

use crate::lab::{self, CmdOutput, Lab, MARKER, RESPONDER_PORT, SERVER_TUNNEL_V4, TUNNEL_PROBE};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The script, run in place.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference-hook.sh");
/// The annotation that makes podman run the reference hook (through the hooks.d entries `install` writes).
pub const ANNOTATION: &str = "bench.wg-reference";
/// What runc gives our hook (the shipped hooks.d files), given to the reference as well.
const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The reference hook set up in a lab. Dropping it kills any daemon its records still name (a bench that
/// panicked between a create and its poststop); drop it before the lab.
pub struct Reference {
    /// `WG_REF_RUN_DIR`: one record per container (`PID NAME START INIT_START`).
    pub run_dir: PathBuf,
    /// `WG_REF_CONFIG`: the lab's default profile's wg-quick file.
    pub config: PathBuf,
}

impl Reference {
    /// Its run dir under the lab dir, and hooks.d entries in the lab's hooks dir for [`ANNOTATION`]`=true`.
    pub fn install(lab: &Lab) -> Reference {
        let reference = Reference {
            run_dir: lab.dir.join("reference-run"),
            config: lab.config_path.clone(),
        };
        let env: Vec<String> = reference
            .env()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for (stage, file_stage) in [
            ("createRuntime", "create-runtime"),
            ("poststop", "poststop"),
        ] {
            let entry = serde_json::json!({
                "version": "1.0.0",
                "hook": {
                    "path": SCRIPT,
                    "args": ["reference-hook.sh", file_stage],
                    "env": env,
                    "timeout": 30
                },
                "when": { "annotations": { format!("^{}$", ANNOTATION.replace('.', "\\.")): "^true$" } },
                "stages": [stage]
            });
            lab.write_file(
                &format!("hooks.d/bench-reference-{file_stage}.json"),
                &serde_json::to_string_pretty(&entry).unwrap(),
                0o600,
            );
        }
        reference
    }

    /// The script's whole environment (runc gives a hook only what its hooks.d entry lists).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PATH", HOOK_PATH.to_owned()),
            ("WG_REF_CONFIG", self.config.to_string_lossy().into_owned()),
            (
                "WG_REF_RUN_DIR",
                self.run_dir.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// `reference-hook.sh STAGE`, run as runc runs a hook (state on stdin, only the hooks.d environment), in
    /// whatever netns the calling thread is in.
    pub fn command(&self, stage: &str) -> Command {
        let mut cmd = Command::new(SCRIPT);
        cmd.arg(stage).env_clear().envs(self.env()).current_dir("/");
        cmd
    }

    /// The table the script loads for its profile (`reference-hook.sh nft-script`).
    pub fn nft_script(&self) -> String {
        let out = self
            .command("nft-script")
            .output()
            .expect("reference-hook.sh");
        assert!(
            out.status.success(),
            "reference-hook.sh nft-script: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The record of container `id` (`PID NAME START INIT_START`), if there is one.
    pub fn record(&self, id: &str) -> Option<(u32, String)> {
        let text = std::fs::read_to_string(self.run_dir.join(id)).ok()?;
        let mut f = text.split_whitespace();
        Some((f.next()?.parse().ok()?, f.next()?.to_owned()))
    }

    /// Proves the reference before it is timed, on the lab's default profile:
    /// - the table it loads is the one `src/hook/firewall.rs` renders for that profile;
    /// - run directly (state on stdin, from the lab's host netns) for a process in a netns of its own, and our
    ///   hook for another, both containers' netns hold the same addresses, MTU, rules, routes and nftables
    ///   ruleset; the reference's container pings the lab's peer through the tunnel and gets the responder's
    ///   marker; its poststop leaves no daemon, socket or record;
    /// - under podman (its hooks.d entry), a container annotated [`ANNOTATION`]`=true` pings the peer through the
    ///   tunnel and reads the marker, and leaves nothing behind.
    pub fn prove(&self, lab: &Lab) {
        assert_eq!(
            self.nft_script(),
            rendered_for_lab(lab),
            "reference-hook.sh loads another table than src/hook/firewall.rs renders for the lab's profile"
        );

        // The reference (wireguard-go) handshakes before ours (gotatun) does with the lab's key: gotatun stamps
        // its handshakes 27 s ahead of wireguard-go, and the lab's server would refuse wireguard-go's next ones
        // for that long (see the README, "Which userspace daemon").
        let run = lab.podman_run(&lab::RunOpts::plain(TUNNEL_PROBE).annotation(ANNOTATION, "true"));
        run.assert_success("podman run with the reference hook");
        assert!(
            run.out.stdout.contains(MARKER.trim_end()),
            "the reference hook's container did not reach the peer through its tunnel\n{run}"
        );
        // podman's cleanup (and so the poststop hook) may still be at work when `podman run --rm` returns.
        let cid = run.cid().to_owned();
        let host = lab::ns_id(&format!("/var/run/netns/{}", lab.host_ns));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records: Vec<_> = std::fs::read_dir(&self.run_dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            let daemons: Vec<_> = lab::processes_mentioning("wgr")
                .into_iter()
                .filter(|(pid, argv)| {
                    argv.contains("wireguard-go")
                        && lab::ns_id(&format!("/proc/{pid}/ns/net")) == host
                })
                .collect();
            if records.is_empty() && daemons.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "10 s after {cid} ended: records {records:?}, daemons {daemons:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        let pid = lab.spawn_netns_sleeper();
        let id = format!("proof-ref-{}", lab.id);
        let state = lab.fake_state(&id, pid, &[(ANNOTATION, "true")]);
        self.run_in_lab(lab, "create-runtime", &state)
            .assert_success("reference-hook.sh create-runtime");
        let (daemon, name) = self.record(&id).expect("the reference's record");

        let in_container = |args: &[&str]| {
            let mut argv = vec!["nsenter".to_owned(), format!("--net=/proc/{pid}/ns/net")];
            argv.extend(args.iter().map(|a| a.to_string()));
            lab.run(&argv)
        };
        in_container(&["busybox", "ping", "-c", "1", "-W", "2", SERVER_TUNNEL_V4])
            .assert_success("ping from the reference's container through its tunnel");
        let nc = in_container(&[
            "busybox",
            "timeout",
            "3",
            "nc",
            "-w",
            "2",
            SERVER_TUNNEL_V4,
            &RESPONDER_PORT.to_string(),
        ]);
        assert!(
            nc.stdout.contains(MARKER.trim_end()),
            "the responder's marker through the reference's tunnel\n{nc}"
        );

        let ours_pid = lab.spawn_netns_sleeper();
        let ours_id = format!("proof-ours-{}", lab.id);
        lab.track_container_id(&ours_id);
        let ours_state = lab.fake_state(&ours_id, ours_pid, &[("wg.enable", "true")]);
        let policy = lab.policy_path.to_string_lossy().into_owned();
        lab.run_hook_direct(&["create-runtime", "--policy", &policy], &ours_state)
            .assert_success("our hook's create-runtime for the comparison");

        let (ours, reference) = (snapshot(lab, ours_pid), snapshot(lab, pid));
        assert_eq!(
            ours, reference,
            "the reference's container netns differs from ours (left: ours, right: the reference's)"
        );
        self.run_in_lab(lab, "poststop", &state)
            .assert_success("reference-hook.sh poststop");
        lab.run_hook_direct(&["poststop", "--policy", &policy], &ours_state)
            .assert_success("our hook's poststop for the comparison");
        self.assert_gone(&id, daemon, &name);
        lab.assert_nothing_left(&ours_id);
    }

    /// Runs the script with `stdin` in the lab's host netns (through nsenter), bounded by a timeout.
    fn run_in_lab(&self, lab: &Lab, stage: &str, stdin: &str) -> CmdOutput {
        let mut cmd = Command::new("timeout");
        cmd.args(["30", "nsenter"])
            .arg(format!("--net=/var/run/netns/{}", lab.host_ns))
            .arg(SCRIPT)
            .arg(stage)
            .env_clear()
            .envs(self.env())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("reference-hook.sh");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        CmdOutput {
            cmdline: format!("reference-hook.sh {stage}"),
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Nothing of the reference's tunnel for `id` is left: record, daemon `pid`, socket of `name`.
    pub fn assert_gone(&self, id: &str, pid: u32, name: &str) {
        assert!(
            !self.run_dir.join(id).exists(),
            "the reference's record of {id} is left"
        );
        assert!(
            !lab::argv_of(pid).iter().any(|a| a == name),
            "the reference's daemon {pid} ({name}) still runs"
        );
        let sock = Path::new("/var/run/wireguard").join(format!("{name}.sock"));
        assert!(!sock.exists(), "{} is left", sock.display());
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.run_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let mut f = text.split_whitespace();
            let (Some(pid), Some(name)) = (f.next().and_then(|p| p.parse().ok()), f.next()) else {
                continue;
            };
            let argv = lab::argv_of(pid);
            if argv.last().map(String::as_str) == Some(name)
                && argv.first().is_some_and(|a| a.ends_with("wireguard-go"))
            {
                lab::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The table `src/hook/firewall.rs` renders for the lab's default profile with the lab's default policy: kill
/// switch on, no allow_local, no port maps, and inbound "replies" (AllowedIPs has a /0).
pub fn rendered_for_lab(lab: &Lab) -> String {
    use wg_oci_hook::config::ports::Inbound;
    let config = lab.client_config();
    let addresses: Vec<ipnetwork::IpNetwork> = config
        .addresses
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    wg_oci_hook::hook::firewall::Rules {
        interface: "wg0",
        kill_switch: true,
        allow_local: &[],
        tunnel_addresses: &addresses,
        port_maps: &[],
        inbound: &Inbound::Replies,
        port_forwarding: false,
    }
    .render()
}

/// What a container's netns holds, for comparing ours with the reference's: addresses (without link-local ones,
/// which the kernel may pick at random), wg0's MTU and flags, rules and routes of both families, the ruleset.
fn snapshot(lab: &Lab, pid: u32) -> String {
    let script = "ip -br addr; ip -o link show dev wg0 | cut -d' ' -f2-; ip rule; ip -6 rule; \
                  ip route show table all; ip -6 route show table all; nft list ruleset";
    let out = lab.run(&[
        "nsenter",
        &format!("--net=/proc/{pid}/ns/net"),
        "sh",
        "-c",
        script,
    ]);
    out.assert_success("looking into a container's netns");
    out.stdout
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter(|w| !w.starts_with("fe80:"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
