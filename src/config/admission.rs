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
