//! `wg-oci-runtime`'s command line: our leading `--wg-*` options (`split_options`), then the runc command line
//! (`parse_runc_args`). The input is the arguments, separated by NUL bytes (which no argv string holds).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use wg_oci_hook::config::annotations;
use wg_oci_hook::oci::runc_args::parse_runc_args;
use wg_oci_hook::runtime::split_options;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let args: Vec<String> = text.split('\0').map(str::to_owned).collect();
    let rest = match split_options(&args) {
        Ok((options, rest)) => {
            // The runtime's arguments are the tail of ours, untouched, and start with none of ours.
            assert!(args.ends_with(rest), "the runtime's arguments were changed");
            assert!(rest.first().is_none_or(|a| !a.starts_with("--wg-")));
            if let Some(profile) = &options.profile {
                assert!(annotations::is_valid_name(profile), "profile {profile:?}");
            }
            for value in [options.runtime.as_deref()]
                .into_iter()
                .chain(
                    [options.policy.as_deref(), options.hook.as_deref()]
                        .map(|p| p.and_then(|p| p.to_str())),
                )
                .flatten()
            {
                assert!(!value.is_empty(), "an option with an empty value");
            }
            rest
        }
        Err(e) => {
            common::assert_clean_line(&e);
            common::assert_bounded(&e, 512);
            &args[..]
        }
    };
    let cmd = parse_runc_args(rest);
    // Everything it reports is one argument or the value part of one (`--flag=value`).
    let from_args = |v: &Option<String>| {
        v.as_ref().is_none_or(|v| {
            rest.iter()
                .any(|a| a == v || a.split_once('=').is_some_and(|(_, x)| x == v))
        })
    };
    assert!(from_args(&cmd.subcommand) && from_args(&cmd.bundle) && from_args(&cmd.log));
    assert!(from_args(&cmd.log_format) && from_args(&cmd.container_id));
    // A lone `-` is an argument to Go's flag package, as to us; anything else starting with `-` is a flag.
    if let Some(sub) = &cmd.subcommand {
        assert!(
            sub == "-" || !sub.starts_with('-'),
            "subcommand {sub:?} is a flag"
        );
    }
    // Only create and run have a bundle and an id worth reading.
    if !matches!(cmd.subcommand.as_deref(), Some("create" | "run")) {
        assert_eq!((&cmd.bundle, &cmd.container_id), (&None, &None));
    }
});
