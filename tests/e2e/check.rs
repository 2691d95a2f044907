//! End-to-end: `wg-oci-hook check` run by the real binary in the lab's host netns against lab-written policies:
//! a good one passes (exit 0); each broken one gives one line naming the file and line to blame and exit 1.

use crate::lab::*;
use std::path::Path;

/// The hook's `check` against the lab's policy, as root would run it.
fn check(lab: &Lab, more: &[&str]) -> CmdOutput {
    let policy = lab.policy_path.to_string_lossy().into_owned();
    let mut args = vec!["--policy", policy.as_str(), "check"];
    args.extend_from_slice(more);
    lab.run_hook_direct(&args, "")
}

/// The problem lines (all but the summary), and the summary.
fn lines(out: &CmdOutput) -> (Vec<String>, String) {
    let mut lines: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    let summary = lines.pop().unwrap_or_default();
    (lines, summary)
}

/// The line of the policy that holds `needle` (1-based), as the lab rendered it.
fn policy_line(lab: &Lab, needle: &str) -> usize {
    let text = std::fs::read_to_string(&lab.policy_path).unwrap();
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the policy:\n{text}"))
        + 1
}

fn assert_one_problem(lab: &Lab, out: &CmdOutput, expected_start: &str) {
    assert_eq!(out.status.code(), Some(1), "{out}");
    let (problems, summary) = lines(out);
    assert_eq!(problems.len(), 1, "{out}");
    assert!(
        problems[0].starts_with(expected_start),
        "{expected_start}\n{out}"
    );
    let profiles = lab.policy().profiles.len();
    assert_eq!(
        summary,
        format!(
            "{}: {profiles} profile{} checked, 1 problem",
            lab.policy_path.display(),
            if profiles == 1 { "" } else { "s" }
        ),
        "{out}"
    );
}

#[test]
fn a_good_policy_passes() {
    let lab = Lab::new("check_good");
    let out = check(&lab, &[]);
    assert!(out.success(), "{out}");
    assert_eq!(
        out.stdout,
        format!(
            "{}: 1 profile checked, 0 problems\n",
            lab.policy_path.display()
        )
    );
}

#[test]
fn a_missing_wg_quick_file_names_the_policy_line() {
    let lab = Lab::new("check_missing");
    let missing = lab.dir.join("nope.conf");
    let mut policy = lab.policy();
    policy.profiles.push(LabProfile::new("gone", &missing));
    lab.write_policy(&policy);
    let line = policy_line(&lab, "nope.conf");
    let out = check(&lab, &[]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let (problems, summary) = lines(&out);
    assert_eq!(
        problems,
        [format!(
            "{}:{line}: profile \"gone\": config {}: No such file or directory (os error 2)",
            lab.policy_path.display(),
            missing.display()
        )],
        "{out}"
    );
    assert!(
        summary.ends_with(": 2 profiles checked, 1 problem"),
        "{out}"
    );
    // --profile checks the one profile named.
    assert!(check(&lab, &["--profile", "lab"]).success());
    let out = check(&lab, &["--profile", "other"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stdout
            .contains("profile \"other\": no such profile in the policy"),
        "{out}"
    );
}

#[test]
fn a_group_readable_wg_quick_file_is_refused() {
    let lab = Lab::new("check_mode");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&lab.config_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let line = policy_line(&lab, "lab.conf");
    assert_one_problem(
        &lab,
        &check(&lab, &[]),
        &format!(
            "{}:{line}: profile \"lab\": config {}: is accessible by group or others (mode 0640)",
            lab.policy_path.display(),
            lab.config_path.display()
        ),
    );
}

#[test]
fn an_empty_pool_is_a_problem() {
    let lab = Lab::new("check_pool");
    let pool = lab.dir.join("empty-pool");
    std::fs::create_dir(&pool).unwrap();
    let mut policy = lab.policy();
    policy.profiles[0] = LabProfile::new("lab", "").with("pool", &toml_string(&pool));
    policy.profiles[0].config = Default::default();
    lab.write_policy(&policy);
    let line = policy_line(&lab, "empty-pool");
    assert_one_problem(
        &lab,
        &check(&lab, &[]),
        &format!(
            "{}:{line}: profile \"lab\": pool {}: no *.conf file in it (a pool needs at least one)",
            lab.policy_path.display(),
            pool.display()
        ),
    );
}

#[test]
fn a_bad_credentials_key_is_named_without_its_value() {
    let lab = Lab::new("check_creds");
    let cred = lab.write_file(
        "pia-credentials",
        "username = \"p1\"\npasword = \"hunter2\"\n",
        0o600,
    );
    let ca = lab.write_file("ca.crt", "", 0o644);
    let mut policy = lab.policy();
    policy.profiles.push(
        LabProfile::provider("pia", "pia")
            .with("credentials", &toml_string(&cred))
            .with("ca", &toml_string(&ca))
            .with("regions_key", &toml_string(&lab.dir.join("regions.pem")))
            .with("regions", "[\"swiss\"]"),
    );
    lab.write_policy(&policy);
    let out = check(&lab, &["--profile", "pia"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let (problems, _) = lines(&out);
    assert_eq!(
        problems[0],
        format!(
            "{}:2: profile \"pia\": credentials: unknown key \"pasword\"; expected username = \"...\", \
             password = \"...\" and optionally dedicated_ip_token = \"...\"",
            cred.display()
        ),
        "{out}"
    );
    assert!(problems[1].contains(": profile \"pia\": ca "), "{out}");
    assert!(
        problems[2].contains(": profile \"pia\": regions_key "),
        "{out}"
    );
    assert!(
        !out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"),
        "{out}"
    );
}

#[test]
fn a_userspace_command_that_does_not_exist_is_named() {
    let lab = Lab::new("check_userspace");
    let mut policy = lab.policy();
    policy.userspace_command = vec!["wireguard-go-missing".into()];
    lab.write_policy(&policy);
    let line = policy_line(&lab, "userspace_command");
    assert_one_problem(
        &lab,
        &check(&lab, &[]),
        &format!(
            "{}:{line}: userspace_command: wireguard-go-missing not found in /usr/local/sbin:",
            lab.policy_path.display()
        ),
    );
}

#[test]
fn an_endpoint_name_that_does_not_resolve_names_its_peer() {
    // The lab's host netns has no route to any resolver (and no /etc/hosts entry holds this name): the lookup
    // fails or gets no answer within resolve_timeout, as it would for the hook.
    let lab = Lab::new("check_endpoint");
    let mut config = lab.client_config();
    config.endpoint = format!("vpn.check-lab.invalid:{SERVER_PORT}");
    lab.write_config(&config.render());
    let mut policy = lab.policy();
    policy
        .extra_top
        .push(("resolve_timeout".into(), "2".into()));
    lab.write_policy(&policy);
    let text = std::fs::read_to_string(&lab.config_path).unwrap();
    let peer_line = text.lines().position(|l| l.trim() == "[Peer]").unwrap() + 1;
    let started = std::time::Instant::now();
    let out = check(&lab, &[]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{out}"
    );
    assert_one_problem(
        &lab,
        &out,
        &format!(
            "{}:{peer_line}: profile \"lab\": peer 1 endpoint vpn.check-lab.invalid:{SERVER_PORT}: ",
            lab.config_path.display()
        ),
    );
    assert!(!out.stdout.contains("PrivateKey"), "{out}");
}

#[test]
fn json_is_one_object_for_machines() {
    let lab = Lab::new("check_json");
    let out = check(&lab, &["--json"]);
    assert!(out.success(), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{out}");
    assert_eq!(v["policy"], lab.policy_path.to_string_lossy().as_ref());
    assert_eq!(v["problems"], serde_json::json!([]));
    assert_eq!(v["profiles"][0]["name"], "lab");

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&lab.config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check(&lab, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let p = &v["problems"][0];
    assert_eq!(
        p["file"],
        lab.policy_path.to_string_lossy().as_ref(),
        "{out}"
    );
    assert_eq!(p["line"], policy_line(&lab, "lab.conf"), "{out}");
    assert_eq!(p["profile"], "lab");
    assert!(
        p["message"].as_str().unwrap().contains("mode 0644"),
        "{out}"
    );
}

fn toml_string(path: &Path) -> String {
    format!("{:?}", path.to_string_lossy())
}
