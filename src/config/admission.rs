//! Admission: what a container asked for (its annotations), held against the policy. Decides the profile, the
//! port maps and the region, or refuses the start with one line naming the annotation at fault.

use crate::config::annotations::{self, Request};
use crate::config::policy::{Policy, Profile};
use crate::config::ports::{self, PortMap};

/// A request the policy lets through.
#[derive(Debug)]
pub struct Admitted<'p> {
    pub profile: &'p Profile,
    /// The profile's port maps and the container's `wg.ports`.
    pub port_maps: Vec<PortMap>,
    /// `wg.region`, for a provider profile that picks servers by region.
    pub region: Option<&'p str>,
}

/// Why a request is refused; the hook names the two cases differently.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No profile fits: the one asked for is missing or not allowed, or the runtime's is missing.
    #[error("{0}")]
    Profile(String),
    /// An annotation the policy does not allow, or that does not fit the profile.
    #[error("{0}")]
    Annotation(String),
}

/// Admits `request` under `policy`. `runtime_profile` is the profile a runtime wrapper was bound to
/// (`--profile`), the default for a container that names none.
pub fn admit<'p>(
    policy: &'p Policy,
    request: &'p Request,
    runtime_profile: Option<&str>,
) -> Result<Admitted<'p>, Refusal> {
    let profile = policy
        .select_profile_or(request.profile.as_deref(), runtime_profile)
        .map_err(|e| Refusal::Profile(e.to_string()))?;
    let port_maps = port_maps(policy, profile, request).map_err(Refusal::Annotation)?;
    check_region(policy, profile, request).map_err(Refusal::Annotation)?;
    Ok(Admitted {
        profile,
        port_maps,
        region: request.region.as_deref(),
    })
}

/// The profile's port maps and the container's `wg.ports`, if the policy lets it add some.
fn port_maps(
    policy: &Policy,
    profile: &Profile,
    request: &Request,
) -> Result<Vec<PortMap>, String> {
    let mut maps = profile.port_maps.clone();
    let Some(ports) = &request.ports else {
        return Ok(maps);
    };
    if !policy.allows(annotations::PORTS) {
        return Err(format!(
            "annotation {}: the policy {} does not let containers map ports (allowed_annotations)",
            annotations::PORTS,
            policy.path.display()
        ));
    }
    for map in ports {
        ports::add_port_map(&mut maps, *map).map_err(|e| {
            format!(
                "annotation {} against profile {}'s port_maps: {e}",
                annotations::PORTS,
                profile.name
            )
        })?;
    }
    Ok(maps)
}

/// `wg.region` only where the policy allows it, and only for a provider profile that picks servers by region.
fn check_region(policy: &Policy, profile: &Profile, request: &Request) -> Result<(), String> {
    let Some(region) = &request.region else {
        return Ok(());
    };
    let annotation = format!("annotation {}={region:?}", annotations::REGION);
    if !policy.allows(annotations::REGION) {
        return Err(format!(
            "{annotation}: the policy {} does not let containers choose a region (allowed_annotations)",
            policy.path.display()
        ));
    }
    match profile.pia() {
        None => Err(format!(
            "{annotation}: profile {} is not a provider profile",
            profile.name
        )),
        Some(pia) if pia.server.is_some() => Err(format!(
            "{annotation}: profile {} uses a fixed server, not regions",
            profile.name
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    fn policy(top: &str) -> Policy {
        let text = format!(
            "default_profile = \"vpn\"\n{top}\n\
             [profiles.vpn]\nconfig = \"/etc/wg-oci-hook/vpn.conf\"\nport_maps = [\"8080:80/tcp\"]\n\n\
             [profiles.other]\nconfig = \"/etc/wg-oci-hook/other.conf\"\n\n\
             [profiles.pia]\nprovider = \"pia\"\ncredentials = \"/c\"\nca = \"/ca\"\nregions_key = \"/k\"\n\
             regions = [\"lab\"]\n\n\
             [profiles.fixed]\nprovider = \"pia\"\ncredentials = \"/c\"\nca = \"/ca\"\n\
             server = {{ ip = \"192.0.2.1\", cn = \"x\" }}\n"
        );
        Policy::parse(&text, Path::new("/etc/wg-oci-hook/policy.toml")).unwrap()
    }

    fn request(pairs: &[(&str, &str)]) -> Request {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        annotations::parse(&map).unwrap()
    }

    fn refusal(policy: &Policy, pairs: &[(&str, &str)], runtime: Option<&str>) -> Refusal {
        admit(policy, &request(pairs), runtime).unwrap_err()
    }

    #[test]
    fn the_default_profile_brings_its_port_maps_and_a_runtime_profile_wins_over_it() {
        let policy = policy("");
        let none = request(&[]);
        let admitted = admit(&policy, &none, None).unwrap();
        assert_eq!(admitted.profile.name, "vpn");
        assert_eq!(admitted.port_maps, ["8080:80/tcp".parse().unwrap()]);
        assert_eq!(admitted.region, None);
        assert_eq!(
            admit(&policy, &none, Some("other")).unwrap().profile.name,
            "other"
        );
        let Refusal::Profile(e) = refusal(&policy, &[], Some("nope")) else {
            panic!("a missing runtime profile is a profile refusal");
        };
        assert!(
            e.starts_with("--profile \"nope\": no such profile in "),
            "{e}"
        );
    }

    #[test]
    fn a_profile_annotation_needs_the_policys_leave() {
        let Refusal::Profile(e) = refusal(&policy(""), &[("wg.profile", "other")], None) else {
            panic!("an unallowed wg.profile is a profile refusal");
        };
        assert!(
            e.contains("does not let containers choose a profile"),
            "{e}"
        );
        let allowed = policy("allowed_annotations = [\"wg.profile\"]");
        let asked = request(&[("wg.profile", "other")]);
        // The container's choice wins over the runtime's default.
        let admitted = admit(&allowed, &asked, Some("vpn")).unwrap();
        assert_eq!(admitted.profile.name, "other");
    }

    #[test]
    fn port_annotations_need_the_policys_leave_and_may_not_claim_a_taken_port() {
        let Refusal::Annotation(e) = refusal(&policy(""), &[("wg.ports", "9090:90/tcp")], None)
        else {
            panic!("an unallowed wg.ports is an annotation refusal");
        };
        assert!(e.contains("does not let containers map ports"), "{e}");
        let allowed = policy("allowed_annotations = [\"wg.ports\"]");
        let asked = request(&[("wg.ports", "9090:90/tcp")]);
        let admitted = admit(&allowed, &asked, None).unwrap();
        assert_eq!(admitted.port_maps.len(), 2);
        let Refusal::Annotation(e) = refusal(&allowed, &[("wg.ports", "8080:81/tcp")], None) else {
            panic!("a clash with the profile's maps is an annotation refusal");
        };
        assert!(
            e.starts_with("annotation wg.ports against profile vpn's port_maps: "),
            "{e}"
        );
    }

    #[test]
    fn a_region_is_for_provider_profiles_that_pick_by_region() {
        let Refusal::Annotation(e) = refusal(&policy(""), &[("wg.region", "lab")], Some("pia"))
        else {
            panic!("an unallowed wg.region is an annotation refusal");
        };
        assert!(e.contains("does not let containers choose a region"), "{e}");
        let allowed = policy("allowed_annotations = [\"wg.region\"]");
        let asked = request(&[("wg.region", "lab")]);
        assert_eq!(
            admit(&allowed, &asked, Some("pia")).unwrap().region,
            Some("lab")
        );
        for (profile, why) in [
            ("vpn", "is not a provider profile"),
            ("fixed", "uses a fixed server, not regions"),
        ] {
            let Refusal::Annotation(e) = refusal(&allowed, &[("wg.region", "lab")], Some(profile))
            else {
                panic!("{profile}: an annotation refusal");
            };
            assert!(e.ends_with(&format!("profile {profile} {why}")), "{e}");
        }
    }
}
