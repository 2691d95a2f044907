//! `wg-oci-hook check [--profile NAME] [--json]`: the policy and everything it points at, checked as a start
//! would check them, without a container: the policy itself, each profile's wg-quick file or pool, a PIA
//! profile's credentials, CA and regions key, the backend on this host, and endpoint names. Each problem is
//! one line naming the file and line to blame (a file that cannot be read: the policy line that names it); the
//! loaders are the hook's own, so check and the hook cannot disagree. Keys are never printed.

use super::install::cdi;
use crate::config::file_error::FileError;
use crate::config::pia_credentials;
use crate::config::policy::{BackendChoice, Policy, PolicyError, Profile, ProfileSource};
use crate::hook::{lease, tunnel};
use crate::provider::pia::{serverlist, tls};
use crate::sys::command::{find_executable, DEFAULT_PATH};
use crate::sys::deadline::Deadline;
use crate::sys::netlink::Netlink;
use crate::sys::netns::NetNs;
use nix::errno::Errno;
use serde::Serialize;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// One thing that would make a start fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    pub profile: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(profile) = &self.profile {
            write!(f, "profile {profile:?}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

#[derive(Debug, Serialize)]
pub struct ProfileChecked {
    pub name: String,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub policy: String,
    pub ok: bool,
    pub problems: Vec<Problem>,
    pub profiles: Vec<ProfileChecked>,
}

impl Report {
    /// The problems, one line each, then the summary line.
    pub fn text(&self) -> String {
        let mut out: String = self.problems.iter().map(|p| format!("{p}\n")).collect();
        let n = self.problems.len();
        out += &format!(
            "{}: {} profile{} checked, {n} problem{}\n",
            self.policy,
            self.profiles.len(),
            if self.profiles.len() == 1 { "" } else { "s" },
            if n == 1 { "" } else { "s" },
        );
        out
    }
}

/// What `check` asks of this host; a trait so the tests can answer for it.
pub trait Host {
    /// Whether a kernel WireGuard link can be created.
    fn kernel_wireguard(&self) -> io::Result<()>;
    /// `program` as the hook would find it (hooks.d gives the hook `DEFAULT_PATH`).
    fn find(&self, program: &str) -> io::Result<std::path::PathBuf>;
}

/// The real host: a wireguard link made in a network namespace made for the test and gone with it.
pub struct ThisHost;

impl Host for ThisHost {
    fn kernel_wireguard(&self) -> io::Result<()> {
        NetNs::run_in_throwaway(|| Netlink::connect()?.add_wireguard_link("wgocheck0"))
    }

    fn find(&self, program: &str) -> io::Result<std::path::PathBuf> {
        find_executable(program, DEFAULT_PATH)
    }
}

pub fn run(policy_path: &Path, only: Option<&str>, cdi_dirs: &[PathBuf], json: bool) -> ExitCode {
    let report = check(policy_path, only, cdi_dirs, &ThisHost);
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serializes")
        );
    } else {
        print!("{}", report.text());
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Loads the policy and checks it (or only the profile `only`), and, checking it whole, the CDI spec in each
/// of `cdi_dirs` against it.
pub fn check(
    policy_path: &Path,
    only: Option<&str>,
    cdi_dirs: &[PathBuf],
    host: &dyn Host,
) -> Report {
    let policy_name = policy_path.display().to_string();
    let (problems, profiles) = match Policy::load(policy_path) {
        Ok(policy) => {
            let (mut problems, profiles) = check_policy(&policy, only, host);
            if only.is_none() {
                problems.extend(cdi_problems(&policy, cdi_dirs));
            }
            (problems, profiles)
        }
        Err(e) => (vec![policy_problem(policy_path, &e)], Vec::new()),
    };
    Report {
        policy: policy_name,
        ok: problems.is_empty(),
        problems,
        profiles,
    }
}

/// The CDI specs `install cdi` wrote in `dirs`, against the policy (no spec there: nothing to say).
fn cdi_problems(policy: &Policy, dirs: &[PathBuf]) -> Vec<Problem> {
    let default_policy = crate::config::policy::path(None);
    dirs.iter()
        .flat_map(|dir| cdi::problems(dir, policy, &default_policy))
        .map(|(file, message)| Problem {
            file: file.display().to_string(),
            line: None,
            column: None,
            profile: None,
            message,
        })
        .collect()
}

/// The policy loader's `FILE:LINE:COLUMN: message` (or `FILE: message`) as a problem.
fn policy_problem(path: &Path, e: &PolicyError) -> Problem {
    let file = path.display().to_string();
    let whole = |message: &str| Problem {
        file: file.clone(),
        line: None,
        column: None,
        profile: None,
        message: message.to_owned(),
    };
    let Some(rest) = e.0.strip_prefix(&format!("{file}:")) else {
        return whole(&e.0);
    };
    let number = |s: &str| -> Option<(usize, String)> {
        let (n, rest) = s.split_once(':')?;
        Some((n.parse().ok()?, rest.to_owned()))
    };
    match number(rest).and_then(|(line, rest)| Some((line, number(&rest)?))) {
        Some((line, (column, message))) => Problem {
            line: Some(line),
            column: Some(column),
            message: message.trim_start().to_owned(),
            ..whole("")
        },
        None => whole(rest.trim_start()),
    }
}

fn check_policy(
    policy: &Policy,
    only: Option<&str>,
    host: &dyn Host,
) -> (Vec<Problem>, Vec<ProfileChecked>) {
    let mut problems = Vec::new();
    let at_policy = |key: &str, message: String| Problem {
        file: policy.path.display().to_string(),
        line: policy.lines.get(key).copied(),
        column: None,
        profile: None,
        message,
    };
    let profiles: Vec<&Profile> = match only {
        Some(name) => match policy.profiles.get(name) {
            Some(profile) => vec![profile],
            None => {
                let message = "no such profile in the policy".to_owned();
                let problem = Problem {
                    profile: Some(name.to_owned()),
                    ..at_policy("", message)
                };
                return (vec![problem], Vec::new());
            }
        },
        None => policy.profiles.values().collect(),
    };
    problems.extend(backend_problem(policy, host).map(|(key, m)| at_policy(key, m)));
    let mut checked = Vec::new();
    for profile in profiles {
        let found = check_profile(policy, profile);
        checked.push(ProfileChecked {
            name: profile.name.clone(),
            ok: found.is_empty(),
        });
        problems.extend(found);
    }
    (problems, checked)
}

/// The backend the policy names, as a start on this host would find it: the policy key to blame and why.
fn backend_problem(policy: &Policy, host: &dyn Host) -> Option<(&'static str, String)> {
    // The built-in daemon needs only TUN devices; a userspace_command, its program.
    let userspace = || match &policy.userspace_command {
        None => (!Path::new("/dev/net/tun").exists())
            .then(|| "the built-in userspace backend needs /dev/net/tun (modprobe tun)".to_owned()),
        Some(command) => host
            .find(&command[0])
            .err()
            .map(|e| format!("userspace_command: {e}")),
    };
    let kernel = || {
        host.kernel_wireguard().err().map(|e| {
            let no_wireguard = e.raw_os_error() == Some(Errno::EOPNOTSUPP as i32);
            (no_wireguard, e)
        })
    };
    match policy.backend {
        BackendChoice::Userspace => userspace().map(|m| ("userspace_command", m)),
        BackendChoice::Kernel => kernel().map(|(no_wireguard, e)| {
            let hint = if no_wireguard {
                " (this kernel has no WireGuard; use backend = \"userspace\" or \"auto\")"
            } else {
                ""
            };
            (
                "backend",
                format!("backend kernel: creating a test wireguard link: {e}{hint}"),
            )
        }),
        BackendChoice::Auto => match kernel() {
            None => None,
            // The hook falls back on userspace only when the kernel has no WireGuard.
            Some((true, _)) => userspace().map(|m| {
                (
                    "userspace_command",
                    format!("backend auto: this kernel has no WireGuard, and {m}"),
                )
            }),
            Some((false, e)) => Some((
                "backend",
                format!("backend auto: creating a test wireguard link: {e}"),
            )),
        },
    }
}

/// One profile's files, read by the hook's own loaders.
fn check_profile(policy: &Policy, profile: &Profile) -> Vec<Problem> {
    let at_policy = |key: &str, message: String| Problem {
        file: policy.path.display().to_string(),
        line: profile
            .lines
            .get(key)
            .or_else(|| profile.lines.get("profile"))
            .copied(),
        column: None,
        profile: Some(profile.name.clone()),
        message,
    };
    // A file that cannot be read (or is wrong as a whole) is blamed on the policy line that names it; a wrong
    // line of it, on that line.
    let wg_quick = |path: &Path, key: &str, what: &str| -> Option<Problem> {
        let deadline = Deadline::after(policy.create_timeout, "create_timeout");
        let e = tunnel::from_wg_quick(profile, path, policy.resolve_timeout, deadline).err()?;
        Some(wg_quick_problem(
            e,
            profile,
            || at_policy(key, String::new()),
            what,
        ))
    };
    let mut problems = Vec::new();
    match &profile.source {
        ProfileSource::WgQuick(path) => problems.extend(wg_quick(path, "config", "config")),
        ProfileSource::Pool(dir) => match lease::pool_configs(dir) {
            Err(e) => problems.push(at_policy("pool", e)),
            Ok(configs) if configs.is_empty() => problems.push(at_policy(
                "pool",
                format!(
                    "pool {}: no *.conf file in it (a pool needs at least one)",
                    dir.display()
                ),
            )),
            Ok(configs) => {
                for config in configs {
                    problems.extend(wg_quick(&dir.join(config), "pool", "pool file"));
                }
            }
        },
        ProfileSource::Pia(settings) => {
            if let Err(e) = pia_credentials::load(&settings.credentials) {
                problems.push(match e.line {
                    Some(line) => Problem {
                        file: e.file,
                        line: Some(line),
                        column: None,
                        profile: Some(profile.name.clone()),
                        message: format!("credentials: {}", e.message),
                    },
                    None => at_policy("credentials", format!("credentials {e}")),
                });
            }
            if let Err(e) = tls::load_roots(&settings.ca, "ca") {
                problems.push(at_policy("ca", e));
            }
            if let Some(key) = &settings.regions_key {
                if let Err(e) = serverlist::load_public_key(key) {
                    problems.push(at_policy("regions_key", e));
                }
            }
            if let Some(ca) = &settings.api_ca {
                if let Err(e) = tls::load_roots(ca, "api_ca") {
                    problems.push(at_policy("api_ca", e));
                }
            }
        }
    }
    problems
}

/// A wg-quick error as a problem: at its own line, or (`line` None) at the policy line that names the file,
/// as `WHAT FILE: message`.
fn wg_quick_problem(
    e: FileError,
    profile: &Profile,
    at_policy: impl FnOnce() -> Problem,
    what: &str,
) -> Problem {
    match e.line {
        Some(line) => Problem {
            file: e.file,
            line: Some(line),
            column: None,
            profile: Some(profile.name.clone()),
            message: e.message,
        },
        None => Problem {
            message: format!("{what} {e}"),
            ..at_policy()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    struct FakeHost {
        kernel: Option<Errno>,
        missing: &'static [&'static str],
    }

    impl Host for FakeHost {
        fn kernel_wireguard(&self) -> io::Result<()> {
            match self.kernel {
                Some(errno) => Err(io::Error::from(errno)),
                None => Ok(()),
            }
        }
        fn find(&self, program: &str) -> io::Result<PathBuf> {
            if self.missing.contains(&program) {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{program} not found in {DEFAULT_PATH}"),
                ))
            } else {
                Ok(PathBuf::from("/usr/bin").join(program))
            }
        }
    }

    const GOOD_HOST: FakeHost = FakeHost {
        kernel: None,
        missing: &[],
    };

    const KEY_A: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const KEY_B: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn good_conf(endpoint: &str) -> String {
        format!(
            "[Interface]\nPrivateKey = {KEY_A}\nAddress = 10.0.0.2/32\n\n[Peer]\nPublicKey = {KEY_B}\n\
             Endpoint = {endpoint}\nAllowedIPs = 0.0.0.0/0\n"
        )
    }

    /// A directory of files for one test; the files are root's when the tests run as root (as the hook's do).
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("wgoh-check-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
        fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }
        fn check(&self, policy: &str, only: Option<&str>, host: &dyn Host) -> Report {
            let path = self.write("policy.toml", policy, 0o600);
            check(&path, only, &[], host)
        }
        fn lines(&self, policy: &str) -> Vec<String> {
            let report = self.check(policy, None, &GOOD_HOST);
            let prefix = format!("{}/", self.0.display());
            report
                .problems
                .iter()
                .map(|p| p.to_string().replace(&prefix, ""))
                .collect()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn a_good_policy_has_no_problems_and_says_so() {
        if !root() {
            return;
        }
        let dir = Dir::new("good");
        dir.write("vpn.conf", &good_conf("192.0.2.1:51820"), 0o600);
        let report = dir.check("[profiles.vpn]\nconfig = \"vpn.conf\"\n", None, &GOOD_HOST);
        assert!(report.ok && report.problems.is_empty(), "{:?}", report);
        assert_eq!(
            report.text(),
            format!(
                "{}/policy.toml: 1 profile checked, 0 problems\n",
                dir.0.display()
            )
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["ok"], true);
        assert_eq!(json["profiles"][0]["name"], "vpn");
    }

    #[test]
    fn a_policy_error_keeps_its_line_and_column() {
        let dir = Dir::new("policy");
        let report = dir.check("[profiles.vpn]\nconfig = 3\n", None, &GOOD_HOST);
        assert!(!report.ok);
        let p = &report.problems[0];
        if root() {
            assert_eq!(
                (p.line, p.column, p.profile.as_deref()),
                (Some(2), Some(10), None),
                "{p}"
            );
            assert!(p.to_string().contains("policy.toml:2:10: "), "{p}");
        }
        assert!(report.text().ends_with(": 0 profiles checked, 1 problem\n"));
    }

    #[test]
    fn a_file_that_cannot_be_read_names_the_policy_line_that_points_at_it() {
        if !root() {
            return;
        }
        let dir = Dir::new("missing");
        dir.write("open.conf", &good_conf("192.0.2.1:51820"), 0o640);
        let lines = dir.lines(
            "backend = \"auto\"\n\n[profiles.vpn]\nkill_switch = true\nconfig = \"nope.conf\"\n\n\
             [profiles.open]\nconfig = \"open.conf\"\n",
        );
        assert_eq!(
            lines,
            [
                "policy.toml:8: profile \"open\": config open.conf: is accessible by group or others \
                 (mode 0640); run chmod 600 open.conf",
                "policy.toml:5: profile \"vpn\": config nope.conf: No such file or directory (os error 2)",
            ]
        );
    }

    #[test]
    fn a_wrong_line_of_a_wg_quick_file_is_named_and_the_key_is_not() {
        if !root() {
            return;
        }
        let dir = Dir::new("wgquick");
        let bad = good_conf("192.0.2.1:51820").replace(KEY_B, "c2VjcmV0");
        dir.write("vpn.conf", &bad, 0o600);
        dir.write(
            "split.conf",
            &good_conf("192.0.2.1:1").replace("0.0.0.0/0", "10.9.0.0/16"),
            0o600,
        );
        let lines = dir.lines(
            "[profiles.vpn]\nconfig = \"vpn.conf\"\n[profiles.site]\nconfig = \"split.conf\"\n",
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with(
                "policy.toml:4: profile \"site\": config split.conf: routes only some subnets"
            ),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            "vpn.conf:6: profile \"vpn\": PublicKey is not a valid WireGuard key (base64 of 32 bytes)"
        );
        assert!(!lines.concat().contains("c2VjcmV0") && !lines.concat().contains(KEY_A));
    }

    #[test]
    fn pools_are_checked_file_by_file_and_an_empty_one_is_a_problem() {
        if !root() {
            return;
        }
        let dir = Dir::new("pool");
        dir.write("eu/a.conf", &good_conf("192.0.2.1:51820"), 0o600);
        dir.write("eu/b.conf", "[Interface]\nPrivateKey = x\n", 0o600);
        dir.write("eu/notes.txt", "not a config", 0o644);
        std::fs::create_dir_all(dir.0.join("empty")).unwrap();
        let lines = dir.lines(
            "[profiles.eu]\npool = \"eu\"\n\n[profiles.none]\npool = \"empty\"\n[profiles.gone]\npool = \"gone\"\n",
        );
        assert_eq!(
            lines,
            [
                "eu/b.conf:2: profile \"eu\": PrivateKey is not a valid WireGuard key (base64 of 32 bytes)",
                "policy.toml:7: profile \"gone\": pool gone: No such file or directory (os error 2)",
                "policy.toml:5: profile \"none\": pool empty: no *.conf file in it (a pool needs at least one)",
            ]
        );
    }

    #[test]
    fn pia_files_are_checked_and_a_bad_credentials_key_is_named_without_its_value() {
        if !root() {
            return;
        }
        let dir = Dir::new("pia");
        dir.write(
            "pia/credentials",
            "username = \"p1\"\npasword = \"hunter2\"\n",
            0o600,
        );
        dir.write("pia/ca.crt", "not a certificate\n", 0o644);
        let policy = "[profiles.pia]\nprovider = \"pia\"\ncredentials = \"pia/credentials\"\n\
                      ca = \"pia/ca.crt\"\nregions_key = \"pia/regions.pem\"\nregions = [\"swiss\"]\n";
        let lines = dir.lines(policy);
        assert_eq!(
            lines,
            [
                "pia/credentials:2: profile \"pia\": credentials: unknown key \"pasword\"; expected \
                 username = \"...\", password = \"...\" and optionally dedicated_ip_token = \"...\"",
                "policy.toml:4: profile \"pia\": ca pia/ca.crt: no PEM certificate in it",
                "policy.toml:5: profile \"pia\": regions_key pia/regions.pem: No such file or directory (os error 2)",
            ]
        );
        assert!(!lines.concat().contains("hunter2"));
        dir.write(
            "pia/credentials",
            "username = \"p1\"\npassword = \"hunter2\"\n",
            0o644,
        );
        let lines = dir.lines(policy);
        assert!(lines[0].starts_with("policy.toml:3: profile \"pia\": credentials pia/credentials: is accessible by group"), "{lines:?}");
    }

    #[test]
    fn the_backend_is_looked_for_as_the_hook_would() {
        if !root() {
            return;
        }
        let dir = Dir::new("backend");
        dir.write("vpn.conf", &good_conf("192.0.2.1:51820"), 0o600);
        let profile = "[profiles.vpn]\nconfig = \"vpn.conf\"\n";
        let no_kernel = |missing| FakeHost {
            kernel: Some(Errno::EOPNOTSUPP),
            missing,
        };
        let text = |top: &str, host: &FakeHost| -> Vec<String> {
            dir.check(&format!("{top}{profile}"), None, host)
                .problems
                .iter()
                .map(|p| p.to_string().replace(&format!("{}/", dir.0.display()), ""))
                .collect()
        };
        assert_eq!(
            text(
                "backend = \"userspace\"\nuserspace_command = [\"wg-go\", \"-f\"]\n",
                &no_kernel(&["wg-go"])
            ),
            [format!(
                "policy.toml:2: userspace_command: wg-go not found in {DEFAULT_PATH}"
            )]
        );
        // auto: the kernel would be used, so a missing daemon is no problem.
        assert!(text(
            "userspace_command = [\"wg-go\"]\n",
            &FakeHost {
                kernel: None,
                missing: &["wg-go"]
            }
        )
        .is_empty());
        assert_eq!(
            text("\nuserspace_command = [\"wg-go\"]\n", &no_kernel(&["wg-go"])),
            [format!("policy.toml:2: backend auto: this kernel has no WireGuard, and userspace_command: wg-go not found in {DEFAULT_PATH}")]
        );
        assert_eq!(
            text("backend = \"kernel\"\n", &no_kernel(&[])),
            ["policy.toml:1: backend kernel: creating a test wireguard link: Operation not supported (os error 95) \
              (this kernel has no WireGuard; use backend = \"userspace\" or \"auto\")"]
        );
        // nft is not needed (the kill switch goes over netlink): a policy that still names one is fine.
        assert!(text(
            "nft_command = \"nft2\"\n",
            &FakeHost {
                kernel: None,
                missing: &["nft2"]
            }
        )
        .is_empty());
    }

    #[test]
    fn only_the_profile_asked_for_is_checked_and_it_must_exist() {
        if !root() {
            return;
        }
        let dir = Dir::new("only");
        dir.write("a.conf", &good_conf("192.0.2.1:51820"), 0o600);
        let policy = "[profiles.a]\nconfig = \"a.conf\"\n[profiles.b]\nconfig = \"b.conf\"\n";
        let report = dir.check(policy, Some("a"), &GOOD_HOST);
        assert!(report.ok, "{report:?}");
        assert_eq!(report.profiles.len(), 1);
        assert!(!dir.check(policy, None, &GOOD_HOST).ok);
        let report = dir.check(policy, Some("c"), &GOOD_HOST);
        assert_eq!(
            report.problems[0].to_string(),
            format!(
                "{}/policy.toml: profile \"c\": no such profile in the policy",
                dir.0.display()
            )
        );
    }

    #[test]
    fn an_endpoint_name_that_does_not_resolve_names_its_peer_line() {
        if !root() {
            return;
        }
        let dir = Dir::new("endpoint");
        dir.write("vpn.conf", &good_conf("no-such-host.invalid:51820"), 0o600);
        let lines = dir.lines("resolve_timeout = 2\n[profiles.vpn]\nconfig = \"vpn.conf\"\n");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(
                "vpn.conf:5: profile \"vpn\": peer 1 endpoint no-such-host.invalid:51820: "
            ),
            "{lines:?}"
        );
    }
}
