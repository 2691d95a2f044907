//! The `wg.*` annotations a container sets. They are untrusted (whoever may start a container sets them):
//! they only ever choose among names the policy lists, never a path or a key.

use crate::config::ports::{self, PortMap};
use std::collections::HashMap;

pub const ENABLE: &str = "wg.enable";
pub const PROFILE: &str = "wg.profile";
pub const PORTS: &str = "wg.ports";
/// A provider profile's region, chosen by the container (if the policy lets it).
pub const REGION: &str = "wg.region";
/// How CRI engines tell a pod's sandbox container from its app containers: containerd, then CRI-O. Their value
/// is `sandbox` on the sandbox (pause) container.
pub const SANDBOX_MARKERS: [&str; 2] = [
    "io.kubernetes.cri.container-type",
    "io.kubernetes.cri-o.ContainerType",
];

/// Whether the engine says this is a pod's sandbox container (whose tunnel the app containers join).
pub fn is_sandbox(annotations: &HashMap<String, String>) -> bool {
    SANDBOX_MARKERS
        .iter()
        .any(|key| annotations.get(*key).is_some_and(|v| v == "sandbox"))
}
/// More port maps than this in one annotation is not a port list but an attempt at something else.
const MAX_PORT_MAPS: usize = 64;
const PREFIX: &str = "wg.";
const MAX_NAME_LEN: usize = 64;
/// How much of an untrusted key or value an error may quote.
const QUOTE_LIMIT: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub profile: Option<String>,
    /// `wg.ports`: comma-separated port maps, added to the profile's (if the policy allows it).
    pub ports: Option<Vec<PortMap>>,
    /// `wg.region`: the provider region to register in, instead of the profile's list.
    pub region: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AnnotationError(pub String);

/// Whether the container asks for a tunnel: no `wg.enable` is no. See [`enable_value`].
pub fn enabled(annotations: &HashMap<String, String>) -> Result<bool, AnnotationError> {
    if let Some(value) = annotations.get(ENABLE) {
        return enable_value(value);
    }
    // Annotation names are case-sensitive, but whoever wrote `wg.Enable=true` wants the tunnel: refuse rather
    // than start without it (hooks.d runs us for the name in any case).
    match annotations.keys().find(|k| k.eq_ignore_ascii_case(ENABLE)) {
        Some(key) => Err(AnnotationError(format!(
            "annotation {:?}: annotation names are case-sensitive; write {ENABLE}",
            quote(key)
        ))),
        None => Ok(false),
    }
}

/// Whether a container carries `wg.enable` in any case of its name, with any value: the wrapper then hands the
/// decision to the hook.
pub fn mentions_enable(annotations: impl IntoIterator<Item = impl AsRef<str>>) -> bool {
    annotations
        .into_iter()
        .any(|k| k.as_ref().eq_ignore_ascii_case(ENABLE))
}

/// `wg.` in any case: the names we own.
fn is_ours(key: &str) -> bool {
    key.get(..PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
}

/// Reads a `wg.enable` value, for the hook and the runtime wrapper alike. The boolean spellings people and YAML
/// 1.1 tools write (`true yes on 1`, `false no off 0`, any case) mean what they say; anything else is refused,
/// since treating it as "off" would start a container that asked for the tunnel without one.
pub fn enable_value(value: &str) -> Result<bool, AnnotationError> {
    const ON: [&str; 4] = ["true", "yes", "on", "1"];
    const OFF: [&str; 4] = ["false", "no", "off", "0"];
    let is = |spellings: [&str; 4]| spellings.iter().any(|s| value.eq_ignore_ascii_case(s));
    if is(ON) {
        Ok(true)
    } else if is(OFF) {
        Ok(false)
    } else {
        Err(AnnotationError(format!(
            "annotation {ENABLE}={:?}: expected true or false",
            quote(value)
        )))
    }
}

/// Validates every `wg.*` annotation of an enabled container into a request. An unknown `wg.*` key is
/// refused: a typo such as `wg.profle` must not silently fall back to the default profile.
pub fn parse(annotations: &HashMap<String, String>) -> Result<Request, AnnotationError> {
    let mut request = Request::default();
    // Sorted, so that of several bad annotations the same one is always reported.
    let mut keys: Vec<&String> = annotations.keys().filter(|k| is_ours(k)).collect();
    keys.sort();
    for key in keys {
        let value = &annotations[key];
        match key.as_str() {
            ENABLE => {}
            PROFILE => {
                if !is_valid_name(value) {
                    return Err(AnnotationError(format!(
                        "annotation {PROFILE}: invalid value {:?} (expected 1-64 characters of A-Z a-z 0-9 _ . -, \
                         not starting with . or -)",
                        quote(value)
                    )));
                }
                request.profile = Some(value.clone());
            }
            REGION => {
                if !is_valid_name(value) {
                    return Err(AnnotationError(format!(
                        "annotation {REGION}: invalid value {:?} (expected a region id such as ca_vancouver)",
                        quote(value)
                    )));
                }
                request.region = Some(value.clone());
            }
            PORTS => {
                let items: Vec<&str> = value.split(',').collect();
                if items.len() > MAX_PORT_MAPS {
                    return Err(AnnotationError(format!(
                        "annotation {PORTS}: more than {MAX_PORT_MAPS} port maps"
                    )));
                }
                let maps = ports::parse_port_maps(items.iter().map(|i| i.trim()))
                    .map_err(|e| AnnotationError(format!("annotation {PORTS}: {e}")))?;
                request.ports = Some(maps);
            }
            other => {
                return Err(AnnotationError(format!(
                    "annotation {:?}: unknown wg.* annotation (known: {ENABLE}, {PROFILE}, {PORTS}, {REGION})",
                    quote(other)
                )));
            }
        }
    }
    Ok(request)
}

/// Profile names, as annotations may give them and as the policy must define them.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn quote(s: &str) -> &str {
    match s.char_indices().nth(QUOTE_LIMIT) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_sandbox_is_the_one_containerd_or_cri_o_marks() {
        let with = |k: &str, v: &str| HashMap::from([(k.to_owned(), v.to_owned())]);
        assert!(is_sandbox(&with(
            "io.kubernetes.cri.container-type",
            "sandbox"
        )));
        assert!(is_sandbox(&with(
            "io.kubernetes.cri-o.ContainerType",
            "sandbox"
        )));
        assert!(!is_sandbox(&with(
            "io.kubernetes.cri.container-type",
            "container"
        )));
        assert!(!is_sandbox(&with(
            "io.kubernetes.cri-o.ContainerType",
            "container"
        )));
        assert!(!is_sandbox(&with(
            "io.kubernetes.cri.container-type",
            "Sandbox"
        )));
        assert!(!is_sandbox(&HashMap::new()));
    }

    #[test]
    fn enable_is_on_off_or_refused() {
        for v in ["true", "True", "TRUE", "yes", "Yes", "on", "ON", "1"] {
            assert!(enabled(&map(&[("wg.enable", v)])).unwrap(), "{v:?}");
        }
        for v in ["false", "False", "FALSE", "no", "NO", "off", "Off", "0"] {
            assert!(!enabled(&map(&[("wg.enable", v)])).unwrap(), "{v:?}");
        }
        assert!(!enabled(&map(&[])).unwrap());
        assert!(!enabled(&map(&[("wg.profile", "lab")])).unwrap());
        for v in [
            "", " ", "true ", " true", "tru", "maybe", "y", "n", "t", "2", "01", "-1", "enable",
            "true\n", "ｔrue", "\0true",
        ] {
            let e = enabled(&map(&[("wg.enable", v)])).unwrap_err().0;
            assert_eq!(
                e,
                format!("annotation wg.enable={v:?}: expected true or false"),
                "{v:?}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_huge_enable_value_is_quoted_in_part() {
        let big = "x".repeat(1 << 20);
        let e = enable_value(&big).unwrap_err().0;
        assert!(e.len() < 150, "{}", e.len());
        assert!(e.starts_with("annotation wg.enable=\"xxx"), "{e}");
        assert!(e.ends_with("\": expected true or false"), "{e}");
        // Quoting stops at a character boundary.
        let wide = "é".repeat(100);
        assert!(enable_value(&wide).unwrap_err().0.contains(&"é".repeat(64)));
    }

    #[test]
    fn a_mis_cased_enable_is_refused_and_other_wg_names_in_any_case_are_ours() {
        let e = enabled(&map(&[("wg.Enable", "true")])).unwrap_err().0;
        assert_eq!(
            e,
            "annotation \"wg.Enable\": annotation names are case-sensitive; write wg.enable"
        );
        assert!(enabled(&map(&[("WG.ENABLE", "false")])).is_err());
        assert!(!enabled(&map(&[("wg.enabled", "true")])).unwrap());
        assert!(mentions_enable(["x", "Wg.EnAbLe"]));
        assert!(!mentions_enable(["wg.profile"]));
        let e = parse(&map(&[("WG.profile", "lab")])).unwrap_err().0;
        assert!(e.contains("\"WG.profile\": unknown wg.* annotation"), "{e}");
        // Not ours: a longer prefix that merely starts alike, and a non-ASCII key.
        assert!(parse(&map(&[("wgx.profile", "lab"), ("é", "x")])).is_ok());
    }

    #[test]
    fn profile_is_read() {
        let r = parse(&map(&[
            ("wg.enable", "true"),
            ("wg.profile", "work-vpn_2.eu"),
        ]))
        .unwrap();
        assert_eq!(r.profile.as_deref(), Some("work-vpn_2.eu"));
        assert_eq!(parse(&map(&[("wg.enable", "true")])).unwrap().profile, None);
    }

    #[test]
    fn path_like_and_odd_profile_values_are_refused() {
        let long = "a".repeat(65);
        for v in [
            "../etc",
            "/etc/x",
            "",
            ".hidden",
            "-x",
            "a b",
            "a\nb",
            "é",
            long.as_str(),
            "a/b",
        ] {
            let e = parse(&map(&[("wg.profile", v)])).unwrap_err().0;
            assert!(e.starts_with("annotation wg.profile: invalid value"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn unknown_wg_annotations_are_refused_and_others_ignored() {
        let e = parse(&map(&[("wg.profle", "lab")])).unwrap_err().0;
        assert!(e.contains("wg.profle") && e.contains("unknown"), "{e}");
        assert!(parse(&map(&[("io.podman.x", "y"), ("wgx", "z")])).is_ok());
    }

    #[test]
    fn ports_are_parsed_and_bad_ones_named() {
        let r = parse(&map(&[("wg.ports", "8080:80/tcp, 5353:53/udp")])).unwrap();
        let ports: Vec<String> = r.ports.unwrap().iter().map(|m| m.to_string()).collect();
        assert_eq!(ports, ["8080:80/tcp", "5353:53/udp"]);
        for bad in ["", "80:80/icmp", "1:2,", "8080:80; drop", "99999:1"] {
            let e = parse(&map(&[("wg.ports", bad)])).unwrap_err().0;
            assert!(e.starts_with("annotation wg.ports: "), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let many = vec!["1:1"; 65].join(",");
        assert!(parse(&map(&[("wg.ports", &many)])).is_err());
    }

    #[test]
    fn huge_values_give_short_errors() {
        let big = "x".repeat(1 << 20);
        let e = parse(&map(&[("wg.profile", &big)])).unwrap_err().0;
        assert!(e.len() < 300, "{}", e.len());
        let e = parse(&map(&[(&format!("wg.{big}"), "v")])).unwrap_err().0;
        assert!(e.len() < 300, "{}", e.len());
    }
}
