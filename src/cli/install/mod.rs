//! `wg-oci-hook install|uninstall hooks|docker|containerd`: registering the hook with each engine and taking it
//! away, as `nvidia-ctk runtime configure` does for its runtime:
//!
//! - podman, CRI-O, Buildah: two files in hooks.d (`hooks.rs`);
//! - Docker: a `runtimes` entry in daemon.json running `wg-oci-runtime`, merged into what is there (`docker.rs`);
//! - containerd (and Kubernetes through it): a runtime handler in config.toml whose `BinaryName` is
//!   `wg-oci-runtime`, edited in place (`containerd.rs`). runc.v2 options pass the binary no arguments, so a
//!   profile is bound by a link `wg-oci-runtime@PROFILE` (made here) whose name the wrapper reads.
//!
//! - engines with CDI (podman, CRI-O, containerd 1.7+, Docker 25+): a spec with a device per profile in
//!   `/etc/cdi` (`cdi.rs`).
//!
//! Every file changes through `file::Edit`: its mode and owner kept, an operator's file backed up first, a link
//! followed to the real file. A run that would change nothing writes nothing and says so; `--dry-run` prints each
//! change as `diff -u` does (`diff.rs`) and changes nothing.

pub mod cdi;
mod containerd;
mod diff;
mod docker;
mod file;
pub mod hooks;

use super::args::{CommonArgs, Engine};
use crate::config::policy::{self, Policy};
use crate::runtime::BOUND_NAME_PREFIX;
use file::Edit;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One change to a file, and how to say it: `verb` in the past and as what a dry run would do.
struct Step {
    edit: Edit,
    verb: (&'static str, &'static str),
    what: String,
}

/// The `wg-oci-runtime@PROFILE` link of a containerd handler bound to a profile.
enum Link {
    /// Made (or put right) beside `runtime`, leading to it.
    Make { runtime: PathBuf, profile: String },
    /// One of ours that no handler of the file runs any more.
    Remove(PathBuf),
}

impl Link {
    fn path(&self) -> PathBuf {
        match self {
            Link::Make { runtime, profile } => {
                runtime.with_file_name(format!("{BOUND_NAME_PREFIX}{profile}"))
            }
            Link::Remove(path) => path.clone(),
        }
    }

    fn changes(&self) -> bool {
        match self {
            Link::Make { runtime, .. } => {
                fs::read_link(self.path()).ok().as_deref() != runtime.file_name().map(Path::new)
            }
            Link::Remove(path) => fs::symlink_metadata(path).is_ok(),
        }
    }

    /// What it does, as (past, would) sentences.
    fn says(&self) -> (String, String) {
        match self {
            Link::Make { runtime, profile } => {
                let what = format!(
                    "{} -> {} (the handler's BinaryName: its name binds profile {profile:?})",
                    self.path().display(),
                    runtime.file_name().unwrap_or_default().to_string_lossy()
                );
                (format!("linked {what}"), format!("would link {what}"))
            }
            Link::Remove(path) => (
                format!("removed the link {}", path.display()),
                format!("would remove the link {}", path.display()),
            ),
        }
    }

    fn apply(&self) -> Result<(), String> {
        let path = self.path();
        match self {
            Link::Make { runtime, profile } => bind_profile_link(runtime, profile)
                .map(drop)
                .map_err(|e| format!("linking {}: {e}", path.display())),
            Link::Remove(path) => match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(format!("removing {}: {e}", path.display()))
                }
                _ => Ok(()),
            },
        }
    }
}

/// What a command would do, and what to tell the operator.
struct Plan {
    steps: Vec<Step>,
    link: Option<Link>,
    /// When nothing changes.
    unchanged: String,
    /// What the operator does next, after a change.
    next: Option<String>,
}

impl Plan {
    fn changes(&self) -> bool {
        self.steps.iter().any(|s| s.edit.changes()) || self.link.as_ref().is_some_and(Link::changes)
    }

    /// `--dry-run`: the diffs on stdout, what they mean on stderr; nothing written.
    fn show(&self) {
        if !self.changes() {
            eprintln!("dry run: {}", self.unchanged);
            return;
        }
        for step in self.steps.iter().filter(|s| s.edit.changes()) {
            print!("{}", diff::unified(&step.edit));
        }
        for step in self.steps.iter().filter(|s| s.edit.changes()) {
            eprintln!("dry run: {} {}", step.verb.1, step.what);
        }
        if let Some(link) = self.link.as_ref().filter(|l| l.changes()) {
            eprintln!("dry run: {}", link.says().1);
        }
        eprintln!("dry run: nothing written");
    }

    /// Makes the changes: a link to make first (a handler never names a missing binary), one to remove last.
    fn apply(self) -> Result<(), String> {
        if !self.changes() {
            println!("{}", self.unchanged);
            return Ok(());
        }
        let link = self.link.filter(Link::changes);
        if let Some(link @ Link::Make { .. }) = &link {
            link.apply()?;
            println!("{}", link.says().0);
        }
        for step in self.steps.iter().filter(|s| s.edit.changes()) {
            let backup = step.edit.apply()?;
            match backup {
                Some(backup) => println!(
                    "{} {}; the previous file is {}",
                    step.verb.0,
                    step.what,
                    backup.display()
                ),
                None => println!("{} {}", step.verb.0, step.what),
            }
        }
        if let Some(link @ Link::Remove(_)) = &link {
            link.apply()?;
            println!("{}", link.says().0);
        }
        if let Some(next) = self.next {
            println!("{next}");
        }
        Ok(())
    }
}

/// The runtime's name and its `runtimeArgs`.
fn runtime_name_and_args(
    name: Option<&str>,
    profile: Option<&str>,
    policy: Option<&Path>,
) -> (String, Vec<String>) {
    let name = match (name, profile) {
        (Some(n), _) => n.to_owned(),
        (None, Some(p)) => format!("wg-{p}"),
        (None, None) => "wg".to_owned(),
    };
    let mut args = Vec::new();
    if let Some(p) = profile {
        args.push(format!("--wg-profile={p}"));
    }
    if let Some(p) = policy {
        args.push(format!("--wg-policy={}", p.display()));
    }
    (name, args)
}

/// Creates (or replaces, atomically) `wg-oci-runtime@PROFILE` beside `runtime`: a link to it, relative so the two
/// move together. wg-oci-runtime reads the profile from the name it was run under.
pub fn bind_profile_link(runtime: &Path, profile: &str) -> io::Result<PathBuf> {
    let dir = runtime.parent().unwrap_or(Path::new("."));
    let target = runtime
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let name = format!("{BOUND_NAME_PREFIX}{profile}");
    let link = dir.join(&name);
    if fs::read_link(&link).is_ok_and(|t| t == Path::new(target)) {
        return Ok(link);
    }
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, &link).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(link)
}

/// A link of ours a removed handler ran, to remove: `wg-oci-runtime@PROFILE` leading to `wg-oci-runtime`.
fn our_link(binary: &Path) -> Option<Link> {
    let named = binary.file_name()?.to_str()?.starts_with(BOUND_NAME_PREFIX);
    let target = fs::read_link(binary).ok()?;
    (named && target.file_name()? == "wg-oci-runtime").then(|| Link::Remove(binary.to_owned()))
}

fn beside_me(name: &str) -> Result<PathBuf, String> {
    std::env::current_exe()
        .map(|me| me.with_file_name(name))
        .map_err(|e| format!("finding {name}: {e}"))
}

/// Refuses a `--profile` the policy (the one the runtime will read) does not have.
fn check_profile(policy: Option<&Path>, profile: &str) -> Result<(), String> {
    let path = policy::path(policy);
    let loaded = Policy::load(&path)
        .map_err(|e| format!("--profile {profile}: the policy does not load: {e}"))?;
    if loaded.profiles.contains_key(profile) {
        return Ok(());
    }
    let has: Vec<String> = loaded.profiles.keys().map(|k| format!("{k:?}")).collect();
    Err(format!(
        "--profile {profile}: {} has no profile {profile:?} (it has {})",
        path.display(),
        if has.is_empty() {
            "none".to_owned()
        } else {
            has.join(", ")
        }
    ))
}

fn hooks_plan(
    dir: &Path,
    uninstall: bool,
    policy: Option<&Path>,
    profile: Option<&str>,
) -> Result<Plan, String> {
    if profile.is_some() {
        return Err(
            "--profile: hooks.d enables containers by their annotations; bind a profile with wg.profile or \
             the policy's default instead"
                .into(),
        );
    }
    let shown = dir.display();
    let (edits, verb, unchanged, next) = if uninstall {
        (
            hooks::uninstall(dir)?,
            ("removed", "would remove"),
            format!("{shown} holds no hooks.d file of wg-oci-hook: nothing to remove"),
            None,
        )
    } else {
        let hook = beside_me("wg-oci-hook")?;
        (
            hooks::install(dir, &hook, policy)?,
            ("wrote", "would write"),
            format!("{shown} already holds wg-oci-hook's hooks.d files: nothing to change"),
            Some(
                "podman and CRI-O read hooks.d at each container start: nothing to restart"
                    .to_owned(),
            ),
        )
    };
    Ok(Plan {
        steps: edits
            .into_iter()
            .map(|edit| Step {
                what: edit.path.display().to_string(),
                edit,
                verb,
            })
            .collect(),
        link: None,
        unchanged,
        next,
    })
}

fn cdi_plan(
    dir: &Path,
    uninstall: bool,
    policy: Option<&Path>,
    profile: Option<&str>,
) -> Result<Plan, String> {
    if profile.is_some() {
        return Err(
            "--profile: the spec has a device for every profile of the policy; a container names its own"
                .into(),
        );
    }
    let shown = dir.join(cdi::FILE).display().to_string();
    if uninstall {
        return Ok(Plan {
            steps: cdi::uninstall(dir)?
                .into_iter()
                .map(|edit| Step {
                    edit,
                    verb: ("removed", "would remove"),
                    what: shown.clone(),
                })
                .collect(),
            link: None,
            unchanged: format!("no {shown}: nothing to remove"),
            next: None,
        });
    }
    let path = policy::path(policy);
    let loaded = Policy::load(&path).map_err(|e| format!("the policy does not load: {e}"))?;
    let hook = beside_me("wg-oci-hook")?;
    let cdi::Install {
        edit,
        devices,
        unnamed,
    } = cdi::install(dir, &loaded, &hook, policy)?;
    for profile in unnamed {
        eprintln!(
            "wg-oci-hook: install cdi: profile {profile:?} gets no device: a CDI device name has a letter or \
             digit first and last"
        );
    }
    Ok(Plan {
        steps: vec![Step {
            verb: if edit.old.is_some() {
                ("rewrote", "would rewrite")
            } else {
                ("wrote", "would write")
            },
            what: format!("{shown} ({})", devices.join(", ")),
            edit,
        }],
        link: None,
        unchanged: format!(
            "{shown} already holds a device per profile of the policy: nothing to change"
        ),
        next: Some(format!(
            "engines read CDI specs at each container start: podman run --device {} ...",
            devices.first().map_or("", String::as_str)
        )),
    })
}

fn docker_plan(
    daemon_json: &Path,
    name: Option<&str>,
    uninstall: bool,
    policy: Option<&Path>,
    profile: Option<&str>,
) -> Result<Plan, String> {
    let shown = daemon_json.display();
    let (name, runtime_args) = runtime_name_and_args(name, profile, policy);
    if uninstall {
        let change = docker::uninstall(daemon_json, &name)?;
        return Ok(Plan {
            steps: vec![Step {
                edit: change.edit,
                verb: ("removed", "would remove"),
                what: format!("runtime {name:?} from {shown}"),
            }],
            link: None,
            unchanged: format!("no runtime {name:?} in {shown}: nothing to remove"),
            next: Some("restart dockerd: systemctl restart docker".into()),
        });
    }
    if let Some(profile) = profile {
        check_profile(policy, profile)?;
    }
    let runtime = beside_me("wg-oci-runtime")?;
    let change = docker::install(daemon_json, &name, &runtime, &runtime_args)?;
    Ok(Plan {
        steps: vec![Step {
            edit: change.edit,
            verb: if change.existed {
                ("replaced", "would replace")
            } else {
                ("added", "would add")
            },
            what: format!(
                "runtime {name:?} {} {shown}",
                if change.existed { "in" } else { "to" }
            ),
        }],
        link: None,
        unchanged: format!("runtime {name:?} in {shown} is already installed: nothing to change"),
        next: Some(format!(
            "restart dockerd (systemctl restart docker), then: docker run --runtime {name} ..."
        )),
    })
}

fn containerd_plan(
    config: &Path,
    name: Option<&str>,
    uninstall: bool,
    policy: Option<&Path>,
    profile: Option<&str>,
) -> Result<Plan, String> {
    let shown = config.display();
    let (name, _) = runtime_name_and_args(name, profile, None);
    if uninstall {
        let change = containerd::uninstall(config, &name)?;
        return Ok(Plan {
            link: change.freed_binary.as_deref().and_then(our_link),
            steps: vec![Step {
                edit: change.edit,
                verb: ("removed", "would remove"),
                what: format!("runtime handler {name:?} from {shown}"),
            }],
            unchanged: format!("no runtime handler {name:?} in {shown}: nothing to remove"),
            next: Some("restart containerd: systemctl restart containerd".into()),
        });
    }
    if policy.is_some() {
        return Err(
            "--policy cannot reach wg-oci-runtime (containerd passes it no arguments): set \
             WG_OCI_HOOK_POLICY in containerd's environment instead"
                .into(),
        );
    }
    if let Some(profile) = profile {
        check_profile(None, profile)?;
    }
    let runtime = beside_me("wg-oci-runtime")?;
    let link = profile.map(|profile| Link::Make {
        runtime: runtime.clone(),
        profile: profile.to_owned(),
    });
    let binary = link.as_ref().map_or(runtime, Link::path);
    let change = containerd::install(config, &name, &binary)?;
    Ok(Plan {
        steps: vec![Step {
            edit: change.edit,
            verb: if change.existed {
                ("updated", "would update")
            } else {
                ("added", "would add")
            },
            what: format!(
                "runtime handler {name:?} {} {shown} (config version {})",
                if change.existed { "in" } else { "to" },
                change.version
            ),
        }],
        link,
        unchanged: format!(
            "runtime handler {name:?} in {shown} is already installed: nothing to change"
        ),
        next: Some(format!(
            "restart containerd (systemctl restart containerd); a RuntimeClass with handler: {name} selects it"
        )),
    })
}

/// `wg-oci-hook install ENGINE` or, with `uninstall`, `wg-oci-hook uninstall ENGINE`.
pub fn run(
    engine: &Engine,
    uninstall: bool,
    policy: Option<&Path>,
    profile: Option<&str>,
) -> std::process::ExitCode {
    let verb = if uninstall { "uninstall" } else { "install" };
    // The hooks run with the bundle as their working directory: a relative --policy would lead nowhere there.
    let absolute = policy.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_owned()));
    let policy = absolute.as_deref();
    let (what, common): (_, &CommonArgs) = match engine {
        Engine::Hooks(a) => ("hooks", &a.common),
        Engine::Docker(a) => ("docker", &a.common),
        Engine::Containerd(a) => ("containerd", &a.common),
        Engine::Cdi(a) => ("cdi", &a.common),
    };
    let plan = match engine {
        Engine::Hooks(a) => hooks_plan(&a.dir, uninstall, policy, profile),
        Engine::Docker(a) => docker_plan(
            &a.daemon_json,
            a.name.as_deref(),
            uninstall,
            policy,
            profile,
        ),
        Engine::Containerd(a) => {
            containerd_plan(&a.config, a.name.as_deref(), uninstall, policy, profile)
        }
        Engine::Cdi(a) => cdi_plan(&a.dir, uninstall, policy, profile),
    };
    let result = plan.and_then(|plan| {
        if common.dry_run {
            plan.show();
            Ok(())
        } else {
            plan.apply()
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wg-oci-hook: {verb} {what}: {}", e.replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_follow_the_profile() {
        assert_eq!(
            runtime_name_and_args(None, None, None),
            ("wg".into(), vec![])
        );
        let (name, args) = runtime_name_and_args(None, Some("pia"), Some(Path::new("/p.toml")));
        assert_eq!(name, "wg-pia");
        assert_eq!(args, ["--wg-profile=pia", "--wg-policy=/p.toml"]);
        assert_eq!(runtime_name_and_args(Some("x"), Some("pia"), None).0, "x");
    }

    #[test]
    fn a_containerd_profile_is_bound_by_a_link_named_for_it() {
        let dir = std::env::temp_dir().join(format!("wgoh-link-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let runtime = dir.join("wg-oci-runtime");
        fs::write(&runtime, "").unwrap();
        let make = Link::Make {
            runtime: runtime.clone(),
            profile: "vpn".into(),
        };
        assert!(make.changes());
        make.apply().unwrap();
        assert!(!make.changes());
        let link = bind_profile_link(&runtime, "vpn").unwrap();
        assert_eq!(link, dir.join("wg-oci-runtime@vpn"));
        assert_eq!(make.path(), link);
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("wg-oci-runtime"));
        // Again, and over a stale link: the same link, nothing else left in the dir.
        assert_eq!(bind_profile_link(&runtime, "vpn").unwrap(), link);
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/elsewhere", &link).unwrap();
        assert!(make.changes());
        bind_profile_link(&runtime, "vpn").unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("wg-oci-runtime"));
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["wg-oci-runtime", "wg-oci-runtime@vpn"]);

        // Only our links are removed: named for a profile, leading to wg-oci-runtime.
        assert!(our_link(&runtime).is_none());
        std::os::unix::fs::symlink("/usr/bin/runc", dir.join("wg-oci-runtime@other")).unwrap();
        assert!(our_link(&dir.join("wg-oci-runtime@other")).is_none());
        let remove = our_link(&link).unwrap();
        assert!(remove.changes());
        remove.apply().unwrap();
        assert!(!remove.changes());
        assert!(!link.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
