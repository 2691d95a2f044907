//! `cargo run --example gen-docs -- OUT`: what the Debian package (`make deb`) ships besides the binaries,
//! made from the code itself so that nothing is kept by hand twice:
//!
//! - `OUT/man/`: a man page for `wg-oci-hook`, one per visible subcommand (`wg-oci-hook-status.1`,
//!   `wg-oci-hook-install-docker.1`, ...) and one for `wg-oci-runtime`, from the clap definitions;
//! - `OUT/completions/{bash,zsh,fish}/`: `wg-oci-hook`'s completions, under the names each shell looks for;
//! - `OUT/hooks.d/`: the repository's `hooks.d/*.json` (which point at `/usr/local/bin`, for `make install`),
//!   written again by `install::hooks::entry` for `/usr/bin/wg-oci-hook`.
//!
//! OUT is emptied first, so a page of a subcommand that is gone does not linger into the package. A tool, not
//! a part of the release binaries: clap_mangen and clap_complete are dev-dependencies.

use clap_complete::Shell;
use clap_mangen::Man;
use std::fs;
use std::io;
use std::path::Path;

/// Where the package installs the hook; the hooks.d entries name it.
const PACKAGED_HOOK: &str = "/usr/bin/wg-oci-hook";
const BIN: &str = "wg-oci-hook";

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: gen-docs OUT-DIR");
        std::process::exit(2);
    };
    if let Err(e) = generate(Path::new(&out)) {
        eprintln!("gen-docs: {e}");
        std::process::exit(1);
    }
}

fn generate(out: &Path) -> Result<(), String> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e: io::Error| format!("{what}: {e}")
    };
    match fs::remove_dir_all(out) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(out)(e)),
        _ => {}
    }
    let man = out.join("man");
    fs::create_dir_all(&man).map_err(io(&man))?;
    for (name, page) in man_pages() {
        let path = man.join(name);
        fs::write(&path, page).map_err(io(&path))?;
    }

    for (shell, name) in [
        (Shell::Bash, BIN.to_owned()),
        (Shell::Zsh, format!("_{BIN}")),
        (Shell::Fish, format!("{BIN}.fish")),
    ] {
        let dir = out.join("completions").join(shell.to_string());
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut text = Vec::new();
        clap_complete::generate(
            shell,
            &mut wg_oci_hook::cli::args::command(),
            BIN,
            &mut text,
        );
        let path = dir.join(name);
        fs::write(&path, text).map_err(io(&path))?;
    }

    let hooks_d = out.join("hooks.d");
    fs::create_dir_all(&hooks_d).map_err(io(&hooks_d))?;
    for (stage, file) in wg_oci_hook::cli::install::hooks::FILES {
        let entry = wg_oci_hook::cli::install::hooks::entry(Path::new(PACKAGED_HOOK), None, stage);
        let path = hooks_d.join(file);
        let text = serde_json::to_string_pretty(&entry).expect("serializable") + "\n";
        fs::write(&path, text).map_err(io(&path))?;
    }
    let path = out.join("changelog");
    fs::write(&path, changelog(seconds_since_epoch())?).map_err(io(&path))?;
    Ok(())
}

/// The package's Debian changelog (Debian's policy wants one in every package): one entry for this version,
/// by the maintainer Cargo.toml names; the project's history is its git log.
fn changelog(now: u64) -> Result<String, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let text = fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let toml: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let deb = &toml["package"]["metadata"]["deb"];
    let maintainer = deb["maintainer"]
        .as_str()
        .ok_or("no [package.metadata.deb] maintainer")?;
    // cargo-deb's default revision is 1.
    let revision = deb.get("revision").and_then(|r| r.as_str()).unwrap_or("1");
    let version = match revision {
        "" => env!("CARGO_PKG_VERSION").to_owned(),
        r => format!("{}-{r}", env!("CARGO_PKG_VERSION")),
    };
    Ok(format!(
        "{BIN} ({version}) unstable; urgency=medium\n\n  * Built from the upstream source by `make deb` (cargo-deb).\n    \
         The changes are in the project's git history.\n\n -- {maintainer}  {}\n",
        rfc2822(now)
    ))
}

/// SOURCE_DATE_EPOCH if set (reproducible builds), else now.
fn seconds_since_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs()
        })
}

/// `Thu, 03 Dec 2026 10:11:12 +0000`, the date format of Debian changelogs.
fn rfc2822(secs: u64) -> String {
    // humantime's calendar (`2026-12-03T10:11:12Z`), rearranged.
    let rfc3339 = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    )
    .to_string();
    let (year, month, day, time) = (
        &rfc3339[0..4],
        &rfc3339[5..7],
        &rfc3339[8..10],
        &rfc3339[11..19],
    );
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(secs / 86_400 % 7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][month.parse::<usize>().expect("two digits") - 1];
    format!("{weekday}, {day} {month} {year} {time} +0000")
}

/// Every man page, as (file name, roff): `wg-oci-hook` and each of its visible subcommands at any depth, named
/// by the path to it as clap_mangen names them (`wg-oci-hook-install-hooks.1`), then `wg-oci-runtime`.
fn man_pages() -> Vec<(String, Vec<u8>)> {
    let mut cmd = wg_oci_hook::cli::args::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    hook_pages(&cmd, &[], &mut pages);
    let mut runtime = wg_oci_hook::runtime::command();
    runtime.build();
    let see_also = [
        format!("{BIN}(1)"),
        format!("{BIN}-install-docker(1)"),
        format!("{BIN}-install-containerd(1)"),
        "runc(8)".to_owned(),
    ];
    pages.push(("wg-oci-runtime.1".to_owned(), man_page(&runtime, &see_also)));
    pages
}

fn hook_pages(cmd: &clap::Command, parents: &[String], pages: &mut Vec<(String, Vec<u8>)>) {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let mut see_also: Vec<String> = parents.iter().map(|p| format!("{p}(1)")).collect();
    if parents.is_empty() {
        see_also.extend(
            [
                "wg-oci-runtime(1)",
                "wg(8)",
                "wg-quick(8)",
                "nft(8)",
                "podman-run(1)",
            ]
            .map(String::from),
        );
    }
    pages.push((format!("{name}.1"), man_page(cmd, &see_also)));
    let parents: Vec<String> = parents.iter().cloned().chain([name]).collect();
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        hook_pages(sub, &parents, pages);
    }
}

/// clap_mangen's sections, with the version of the program on every page (a subcommand has none of its own),
/// the help's closing text as EXAMPLES (or left out when it only points at the documentation, which SEE ALSO
/// names), and a SEE ALSO section.
fn man_page(cmd: &clap::Command, see_also: &[String]) -> Vec<u8> {
    use clap_mangen::roff::{bold, roman, Roff};
    let source = format!("{BIN} {}", env!("CARGO_PKG_VERSION"));
    let man = clap_mangen::Man::new(cmd.clone()).source(source);
    let mut w = Vec::new();
    let mut sections = vec![
        Man::render_title as Section,
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
    ];
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        sections.push(Man::render_options_section);
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        sections.push(Man::render_subcommands_section);
    }
    for section in sections {
        section(&man, &mut w).expect("writing to memory");
    }
    if let Some(after) = cmd.get_after_help().map(|a| a.to_string()) {
        let mut roff = Roff::new();
        if let Some(examples) = after.strip_prefix("Examples:\n") {
            roff.control("SH", ["EXAMPLES"]);
            for line in examples.lines() {
                roff.control("IP", [""]).text([roman(line.trim())]);
            }
        } else if !after.starts_with("Documentation:") {
            roff.control("SH", ["NOTES"]).text([roman(after)]);
        }
        roff.to_writer(&mut w).expect("writing to memory");
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut w)
            .expect("writing to memory");
    }
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    let mut refs = Vec::new();
    for (i, page) in see_also.iter().enumerate() {
        let (name, section) = page.split_once('(').expect("NAME(SECTION)");
        let comma = if i + 1 < see_also.len() { ", " } else { "" };
        refs.push(bold(name));
        refs.push(roman(format!("({section}{comma}")));
    }
    roff.text(refs);
    roff.control("PP", [] as [&str; 0]).text([
        roman("The README, with the policy reference: "),
        bold(format!("/usr/share/doc/{BIN}/README.md")),
    ]);
    roff.to_writer(&mut w).expect("writing to memory");
    // Each part starts with roff's preamble (the Aq string); the page needs it once.
    let text = String::from_utf8(w).expect("roff is text");
    let mut preamble_seen = 0;
    let mut page = String::new();
    for line in text.lines() {
        if line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq") {
            preamble_seen += 1;
            if preamble_seen > 2 {
                continue;
            }
        }
        page.push_str(line);
        page.push('\n');
    }
    page.into_bytes()
}

type Section = fn(&Man, &mut dyn io::Write) -> io::Result<()>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The man page file names the package must have: the command's, and one for each visible subcommand at any
    /// depth, named by its path (`wg-oci-hook-install-hooks.1`).
    fn expected_pages(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        out.push(format!("{prefix}.1"));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() != "help" {
                expected_pages(sub, &format!("{prefix}-{}", sub.get_name()), out);
            }
        }
    }

    fn temp_out(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("wgoh-gen-docs-{name}-{}", std::process::id()))
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_page_per_visible_command_and_completions_that_know_them_all() {
        let out = temp_out("pages");
        // A stale page from an earlier run must not survive.
        fs::create_dir_all(out.join("man")).unwrap();
        fs::write(out.join("man/wg-oci-hook-gone.1"), "").unwrap();
        generate(&out).unwrap();

        let cmd = wg_oci_hook::cli::args::command();
        let mut want = Vec::new();
        expected_pages(&cmd, BIN, &mut want);
        want.push("wg-oci-runtime.1".into());
        want.sort();
        assert_eq!(files(&out.join("man")), want);
        assert!(
            want.contains(&"wg-oci-hook-status.1".to_owned()),
            "{want:?}"
        );
        assert!(
            want.contains(&"wg-oci-hook-install-containerd.1".to_owned()),
            "{want:?}"
        );
        assert!(!want
            .iter()
            .any(|p| p.contains("pia-port-forward") || p.contains("help")));

        let main = fs::read_to_string(out.join("man/wg-oci-hook.1")).unwrap();
        for page in &want {
            let text = fs::read_to_string(out.join("man").join(page)).unwrap();
            let name = page.strip_suffix(".1").unwrap();
            assert!(text.contains(&format!("\n.TH {name} 1 ")), "{page}: {text}");
            assert!(text.contains(".SH \"SEE ALSO\""), "{page}: {text}");
            assert!(
                text.contains("wg-oci-hook 0.1.0") || text.contains(env!("CARGO_PKG_VERSION")),
                "{page}"
            );
        }
        let visible: Vec<&str> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name())
            .collect();
        assert!(visible.len() >= 7, "{visible:?}");
        for sub in &visible {
            assert!(
                main.contains(&format!("{BIN}-{sub}(1)").replace('-', "\\-")),
                "{sub}: {main}"
            );
        }
        let status = fs::read_to_string(out.join("man/wg-oci-hook-status.1")).unwrap();
        assert!(status.contains("\\-\\-json"), "{status}");
        assert!(
            status.contains("\\-\\-policy"),
            "global options on every page: {status}"
        );
        let runtime = fs::read_to_string(out.join("man/wg-oci-runtime.1")).unwrap();
        for option in [
            "wg-profile",
            "wg-policy",
            "wg-runtime",
            "wg-hook",
            "wg-help",
            "wg-version",
        ] {
            assert!(
                runtime.contains(&format!("\\-\\-{}", option.replace('-', "\\-"))),
                "{option}"
            );
        }

        for (shell, file) in [
            ("bash", "wg-oci-hook"),
            ("zsh", "_wg-oci-hook"),
            ("fish", "wg-oci-hook.fish"),
        ] {
            let text = fs::read_to_string(out.join("completions").join(shell).join(file)).unwrap();
            for sub in visible
                .iter()
                .chain(["hooks", "docker", "containerd"].iter())
            {
                assert!(text.contains(sub), "{shell} completion lacks {sub}");
            }
        }
        assert_eq!(
            files(&out.join("completions")),
            ["bash", "fish", "zsh"],
            "nothing else"
        );
        fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn the_changelog_names_the_package_version_and_a_debian_date() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc2822(1_796_300_000), "Thu, 03 Dec 2026 12:13:20 +0000");
        let text = changelog(1_796_300_000).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            format!(
                "{BIN} ({}-1) unstable; urgency=medium",
                env!("CARGO_PKG_VERSION")
            )
        );
        let last = text.lines().last().unwrap();
        assert!(last.starts_with(" -- wg-oci-hook maintainers <"), "{last}");
        assert!(
            last.ends_with(">  Thu, 03 Dec 2026 12:13:20 +0000"),
            "{last}"
        );
    }

    #[test]
    fn the_packaged_hooks_d_files_are_the_shipped_ones_for_usr_bin() {
        let out = temp_out("hooks");
        generate(&out).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks.d");
        let names = files(&out.join("hooks.d"));
        assert_eq!(names, files(&shipped));
        assert_eq!(names.len(), 2);
        for name in names {
            let read = |p: PathBuf| -> serde_json::Value {
                serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
            };
            let mut packaged = read(out.join("hooks.d").join(&name));
            let shipped = read(shipped.join(&name));
            assert_eq!(packaged["hook"]["path"], PACKAGED_HOOK, "{name}");
            assert_eq!(
                shipped["hook"]["path"], "/usr/local/bin/wg-oci-hook",
                "{name}"
            );
            packaged["hook"]["path"] = shipped["hook"]["path"].clone();
            assert_eq!(packaged, shipped, "{name}: only the hook's path differs");
        }
        fs::remove_dir_all(&out).unwrap();
    }
}
