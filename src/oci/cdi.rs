//! The Container Device Interface (CDI) as it concerns us: a tunnel is the device `wg-oci-hook.dev/tunnel=PROFILE`,
//! whose only container edits are our createRuntime and poststop hooks, run as `wg-oci-hook --cdi-device PROFILE
//! create-runtime|poststop`. An engine that honours CDI (podman, CRI-O, containerd 1.7+, Docker 25+) copies those
//! hooks into the container's config.json when the container asks for the device; that is how the hook learns
//! which devices of ours a container asked for (`devices_in`).

/// The device kind, `vendor/class`: what `--device wg-oci-hook.dev/tunnel=NAME` names.
pub const KIND: &str = "wg-oci-hook.dev/tunnel";

/// The hook's option that says a CDI device runs it, and which.
pub const DEVICE_FLAG: &str = "--cdi-device";

/// The spec's `cdiVersion`: the lowest that holds hooks, which every CDI library since 2022 reads (podman 4.3's
/// reads 0.3.0 to 0.5.0; newer ones refuse below 0.3.0).
pub const VERSION: &str = "0.3.0";

/// A CDI device name (the CDI parser's rule): letters, digits, `_`, `-`, `.` and `:`, a letter or digit first
/// and last. Most profile names are; `vpn_` or `_vpn` are not.
pub fn is_device_name(name: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    let bytes = name.as_bytes();
    bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// The fully qualified name of the device of `profile`, as a user writes it.
pub fn qualified(profile: &str) -> String {
    format!("{KIND}={profile}")
}

/// The device a hook's argv names with `--cdi-device NAME` (or `--cdi-device=NAME`), if any.
pub fn device_in_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == DEVICE_FLAG {
            return args.next();
        }
        if let Some(name) = arg
            .strip_prefix(DEVICE_FLAG)
            .and_then(|s| s.strip_prefix('='))
        {
            return Some(name);
        }
    }
    None
}

/// The devices of ours among a config.json's createRuntime hooks, given as (path, argv): each hook that runs a
/// `wg-oci-hook` with `--cdi-device NAME` in its argv, each name once, in order. Anything else is skipped.
pub fn devices_in<'a>(hooks: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Vec<String> {
    let mut devices: Vec<String> = Vec::new();
    for (path, args) in hooks {
        if std::path::Path::new(path).file_name() != Some("wg-oci-hook".as_ref()) {
            continue;
        }
        if let Some(name) = device_in_args(args.iter().map(String::as_str)) {
            if !devices.iter().any(|d| d == name) {
                devices.push(name.to_owned());
            }
        }
    }
    devices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_follow_the_cdi_parser() {
        for good in ["vpn", "a", "9", "pia-ca", "lab_1", "v1.2", "a:b"] {
            assert!(is_device_name(good), "{good}");
        }
        for bad in [
            "", "_vpn", "vpn_", "vpn-", "vpn.", "-x", "a b", "a/b", "a=b", "é",
        ] {
            assert!(!is_device_name(bad), "{bad}");
        }
        assert_eq!(qualified("vpn"), "wg-oci-hook.dev/tunnel=vpn");
    }

    #[test]
    fn our_devices_are_read_from_the_hooks_each_once() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let hooks = [
            ("/usr/bin/other", argv(&["other", "--cdi-device", "x"])),
            (
                "/usr/bin/wg-oci-hook",
                argv(&["wg-oci-hook", "--cdi-device", "vpn", "create-runtime"]),
            ),
            (
                "/usr/bin/wg-oci-hook",
                argv(&["wg-oci-hook", "create-runtime"]),
            ),
            (
                "/usr/local/bin/wg-oci-hook",
                argv(&["wg-oci-hook", "--cdi-device=lab", "create-runtime"]),
            ),
            (
                "/usr/bin/wg-oci-hook",
                argv(&["wg-oci-hook", "--cdi-device", "vpn", "create-runtime"]),
            ),
            ("/usr/bin/wg-oci-hook", argv(&[])),
        ];
        let found = devices_in(hooks.iter().map(|(p, a)| (*p, a.as_slice())));
        assert_eq!(found, ["vpn", "lab"]);
        assert!(devices_in([]).is_empty());
        assert_eq!(device_in_args(["x", "--cdi-device"]), None);
    }
}
