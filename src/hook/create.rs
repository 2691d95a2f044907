//! createRuntime: the container's tunnel, built step by step in the order ARCHITECTURE.md gives. `Setup` keeps
//! what has been made so far, so that a failure at any step takes it all back in reverse.

use super::firewall::Rules;
use super::lease::{self, Leases};
use super::record::{LeaseName, Member, Record, SharedResolvConf, StateDir, RECORD_VERSION};
use super::resolv_conf::{Previous, ResolvConfChange};
use super::tunnel::{self, TunnelSpec};
use super::{
    gc, mtu, port_forward, resolv_conf, routing, supervisor, teardown, HookError, Step, StepError,
};
use crate::config::admission::{self, Admitted, Refusal};
use crate::config::annotations;
use crate::config::pia_credentials;
use crate::config::policy::{BackendChoice, Policy, Profile, ProfileSource};
use crate::oci::cdi;
use crate::oci::config::Bundle;
use crate::oci::state::ContainerState;
use crate::provider::pia::settings::PiaSettings;
use crate::provider::pia::{self, port_forward as pia_port_forward, PortForwardRecord};
use crate::sys::deadline::Deadline;
use crate::sys::names::random_host_link_name;
use crate::sys::netlink::Netlink;
use crate::sys::netns::{NetNs, NetnsId};
use crate::sys::nft;
use crate::sys::process::{self, Started};
use crate::sys::sysctl;
use crate::wg::uapi;
use crate::wg::{self, userspace::Daemon, BackendKind};
use log::{debug, info, warn};
use nix::errno::Errno;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

/// Brings the container's tunnel up. The caller has checked `wg.enable` and loaded the policy.
/// `runtime_profile` is the profile a runtime wrapper was bound to (`--profile`), the container's default.
pub fn create_runtime(
    state: &ContainerState,
    policy: &Policy,
    runtime_profile: Option<&str>,
) -> Result<Record, HookError> {
    let id = state.id.as_str();
    create(state, policy, runtime_profile).map_err(|e| e.of(id))
}

/// The profile bound from outside the container: by the one device of ours it asked for (CDI), else by its
/// runtime (`--profile`). Two devices, or a device and a runtime that bind different profiles, are refused: a
/// container has one tunnel.
fn bound_profile<'a>(
    devices: &'a [String],
    runtime_profile: Option<&'a str>,
) -> Result<Option<&'a str>, String> {
    match (devices, runtime_profile) {
        ([], bound) => Ok(bound),
        ([device], Some(bound)) if bound != device => Err(format!(
            "it asked for the device {} and its runtime binds profile {bound:?}: a container has one tunnel",
            cdi::qualified(device)
        )),
        ([device], _) => Ok(Some(device)),
        (many, _) => Err(format!(
            "it asked for {} devices, {}: a container has one tunnel",
            many.len(),
            many.iter().map(|d| cdi::qualified(d)).collect::<Vec<_>>().join(" and ")
        )),
    }
}

fn create(
    state: &ContainerState,
    policy: &Policy,
    runtime_profile: Option<&str>,
) -> Result<Record, StepError> {
    // Every step must end before the engine's hook timeout kills us with no word of why.
    let deadline = Deadline::after(policy.create_timeout, "create_timeout");
    let id = state.id.as_str();
    // First: the devices the container asked for decide its profile (and a hooks.d start of a container that
    // also asked for a device builds the device's tunnel, so whichever of the two runs first builds the one).
    let bundle = Bundle::load(&state.bundle).step("reading the bundle")?;
    let runtime_profile =
        bound_profile(&bundle.devices, runtime_profile).step("choosing a profile")?;
    let request = annotations::parse(&state.annotations).step("reading annotations")?;
    let admitted = admission::admit(policy, &request, runtime_profile).map_err(|e| match e {
        Refusal::Profile(cause) => StepError {
            step: "choosing a profile",
            cause,
        },
        Refusal::Annotation(cause) => StepError {
            step: "reading annotations",
            cause,
        },
    })?;
    let state_dir = StateDir::open(&policy.state_dir).step("opening the state directory")?;
    let pid = state
        .live_pid()
        .ok_or("the OCI state has no container pid")
        .step("reading the OCI state")?;
    let container_ns = NetNs::of_container(pid).step("checking the container's pid")?;
    let netns = container_ns.id().step("checking the container's pid")?;
    let me = Member {
        container_id: id.to_owned(),
        pid,
        start_time: process::start_time(pid)
            .ok_or_else(|| format!("pid {pid} is not running"))
            .step("checking the container's pid")?,
        sandbox: annotations::is_sandbox(&state.annotations),
    };
    let key = netns.key();
    // Dead tunnels first: they may hold a lease this start needs. Their failures are not this container's.
    for failure in gc::sweep_dead(&state_dir, Some(&key)).failures {
        warn!("container {id}: gc: {failure}");
    }
    // One start, poststop or sweep at a time in this netns; other netns go on.
    let lock = state_dir
        .lock(&key, deadline)
        .step("waiting for the tunnel's lock")?;
    // Whether a table of ours may be in the netns already (kept by the teardown of a dead tunnel there).
    let mut table_there = false;
    if let Some(existing) = state_dir.load(&key).step("reading the state record")? {
        match Existing::of(&existing, &me) {
            Existing::Mine => {
                debug!("container {id}: createRuntime again: its tunnel is up");
                return Ok(existing);
            }
            Existing::Live => return join(&state_dir, existing, me, &admitted, &bundle),
            Existing::Dead => {
                let failures =
                    teardown::tear_down(&state_dir, &existing, Some(&container_ns), None);
                if !failures.is_empty() {
                    return Err(failures.join("; ")).step("taking down a dead tunnel in the netns");
                }
                table_there = true;
                info!(
                    "container {id}: took down the tunnel of gone container(s) {} in this netns",
                    existing.member_ids()
                );
            }
        }
    }
    let profile = admitted.profile;
    let lease = match claim(&state_dir, profile, &key, deadline) {
        Ok(lease) => lease,
        Err(refused) => {
            // Nothing was made and no record names this netns: its lock file goes with this start (else every
            // refused start, a kubelet's retries of a pod's sandbox among them, would leave one behind).
            let _ = state_dir.remove_lock(&key, lock);
            return Err(refused);
        }
    };
    let built = build(BuildInput {
        state_dir: &state_dir,
        policy,
        admitted: &admitted,
        container_ns: &container_ns,
        bundle: &bundle,
        netns,
        me,
        lease: lease.clone(),
        table_there,
        deadline,
    });
    if built.is_err() {
        if let Some(lease) = &lease {
            if let Err(e) = lease::release(&state_dir, lease, &key) {
                warn!("container {id}: undo: {e}");
            }
        }
        // The undo removed the record: nothing is left to lock.
        let _ = state_dir.remove_lock(&key, lock);
    }
    built
}

/// What a start finds in its netns's record.
enum Existing {
    /// Its own complete tunnel: createRuntime ran twice.
    Mine,
    /// Another member's complete tunnel, with a member that runs: join it.
    Live,
    /// A tunnel none of whose other members runs, or a start that died half-way (under our lock, nobody is
    /// building it): take it down and build anew.
    Dead,
}

impl Existing {
    fn of(record: &Record, me: &Member) -> Existing {
        if !record.complete {
            Existing::Dead
        } else if record.member(&me.container_id) == Some(me) {
            Existing::Mine
        } else if record.member_runs_besides(Some(&me.container_id)) {
            Existing::Live
        } else {
            Existing::Dead
        }
    }
}

/// A later container of a netns joins its tunnel: same profile, same port maps, the tunnel's DNS in its own
/// resolv.conf (written once when several members mount one file).
fn join(
    state_dir: &StateDir,
    mut record: Record,
    me: Member,
    admitted: &Admitted,
    bundle: &Bundle,
) -> Result<Record, StepError> {
    let step = "joining the tunnel of its network namespace";
    let id = me.container_id.clone();
    let key = record
        .key()
        .ok_or("a record without its netns")
        .step(step)?;
    if record.profile != admitted.profile.name {
        return Err(format!(
            "its network namespace has the tunnel of container {} on profile {:?}, and this container asks for \
             profile {:?}: containers that share a network namespace share its tunnel",
            record.builder(),
            record.profile,
            admitted.profile.name
        ))
        .step(step);
    }
    let port_maps = port_map_names(admitted);
    if port_maps != record.port_maps {
        return Err(format!(
            "its network namespace has the tunnel of container {} with port maps [{}], and this container asks \
             for [{}]: containers that share a network namespace share its firewall",
            record.builder(),
            record.port_maps.join(", "),
            port_maps.join(", ")
        ))
        .step(step);
    }
    // A member of that id before is gone (the container restarted without a poststop).
    record.members.retain(|m| m.container_id != id);
    let _ = teardown::leave_resolv_confs(state_dir, Some(&key), &mut record.resolv_confs, &id);
    state_dir
        .set_membership(&id, &key)
        .step("writing the state record")?;
    let mut wrote = None;
    if !record.dns_servers.is_empty() {
        let location = resolv_conf::location(bundle);
        match record
            .resolv_confs
            .iter_mut()
            .find(|s| s.change.location == location)
        {
            Some(shared) => shared.users.push(id.clone()),
            None => {
                let content = resolv_conf::render(
                    &record.dns_servers,
                    &record.dns_search,
                    &record.interface,
                    record.builder(),
                );
                let written = write_resolv_conf(state_dir, &key, bundle, &content);
                let change = match written {
                    Ok(change) => change,
                    Err(e) => {
                        let _ = state_dir.remove_membership(&id);
                        return Err(e).step("writing resolv.conf");
                    }
                };
                wrote = Some(change.clone());
                record.resolv_confs.push(SharedResolvConf {
                    change,
                    users: vec![id.clone()],
                });
            }
        }
    }
    record.members.push(me);
    if let Err(e) = state_dir.save(&record) {
        if let Some(change) = wrote {
            teardown::restore(state_dir, Some(&key), &change, &mut Vec::new());
        }
        let _ = state_dir.remove_membership(&id);
        return Err(e).step("writing the state record");
    }
    info!(
        "container {id}: joined the tunnel of container {} ({}, profile {})",
        record.builder(),
        record.interface,
        record.profile
    );
    Ok(record)
}

/// Writes the tunnel's resolv.conf. A file another live tunnel has written already (containers of different
/// netns started from one rootfs) keeps that tunnel's record of what was there first, so that the last of them
/// to go restores the original, not another tunnel's DNS.
fn write_resolv_conf(
    state_dir: &StateDir,
    key: &str,
    bundle: &Bundle,
    content: &str,
) -> io::Result<ResolvConfChange> {
    let mut change = resolv_conf::write(bundle, content)?;
    // Only a file that held one of our writes can be another tunnel's: no scan of the records otherwise.
    let Previous::File { content: previous } = &change.previous else {
        return Ok(change);
    };
    if !resolv_conf::is_ours(previous) {
        return Ok(change);
    }
    if let Some(other) = teardown::other_writer(state_dir, Some(key), &change.location) {
        if *previous == other.written {
            change.previous = other.previous;
        }
    }
    Ok(change)
}

/// One line for a start refused because `profile`'s `configs` are all leased, to the tunnels of `holders`.
fn lease_refusal(profile: &Profile, configs: &[String], holders: &[String]) -> String {
    let name = &profile.name;
    match &profile.source {
        ProfileSource::Pool(dir) if configs.is_empty() => {
            format!("profile {name:?}: the pool {} has no *.conf file", dir.display())
        }
        ProfileSource::Pool(dir) => format!(
            "profile {name:?}: all {} configs of the pool {} are leased (to the tunnels of containers {})",
            configs.len(),
            dir.display(),
            holders.join(", ")
        ),
        _ => lease::static_profile_taken(name, holders),
    }
}

fn port_map_names(admitted: &Admitted) -> Vec<String> {
    admitted.port_maps.iter().map(ToString::to_string).collect()
}

/// The lease a profile needs before its tunnel is built: a pool's file, a static profile's only config (unless
/// the profile is `shared`); none for a provider's.
fn claim(
    state_dir: &StateDir,
    profile: &Profile,
    key: &str,
    deadline: Deadline,
) -> Result<Option<LeaseName>, StepError> {
    let step = "leasing the profile";
    let configs = match &profile.source {
        ProfileSource::WgQuick(_) if !profile.shared => vec![lease::ONLY_CONFIG.to_owned()],
        ProfileSource::Pool(dir) => lease::pool_configs(dir).step(step)?,
        ProfileSource::WgQuick(_) | ProfileSource::Pia(_) => return Ok(None),
    };
    let leases = Leases::open(state_dir).step(step)?;
    let name = profile.name.as_str();
    let refusal = |holders: &[String]| lease_refusal(profile, &configs, holders);
    leases
        .claim(state_dir, name, &configs, key, deadline, &refusal)
        .map(Some)
        .step(step)
}

/// What the first container of a netns builds its tunnel from.
struct BuildInput<'a> {
    state_dir: &'a StateDir,
    policy: &'a Policy,
    admitted: &'a Admitted<'a>,
    container_ns: &'a NetNs,
    bundle: &'a Bundle,
    netns: NetnsId,
    me: Member,
    lease: Option<LeaseName>,
    table_there: bool,
    deadline: Deadline,
}

/// The first container of a netns builds its tunnel.
fn build(input: BuildInput) -> Result<Record, StepError> {
    let BuildInput {
        state_dir,
        policy,
        admitted,
        container_ns,
        bundle,
        netns,
        me,
        lease,
        table_there,
        deadline,
    } = input;
    let id = me.container_id.as_str();
    let pid = me.pid;
    let profile = admitted.profile;
    let key = netns.key();
    // Last of the checks, since a provider registers a key: nothing before this may still refuse the start.
    let (mut spec, pia_record, api_deadline) = match &profile.source {
        ProfileSource::WgQuick(path) => {
            let spec = tunnel::from_wg_quick(profile, path, policy.resolve_timeout, deadline)
                .step("reading the profile")?;
            (spec, None, None)
        }
        ProfileSource::Pool(dir) => {
            let config = &lease.as_ref().expect("a pool profile is leased").config;
            let path = dir.join(config);
            let spec = tunnel::from_wg_quick(profile, &path, policy.resolve_timeout, deadline)
                .step("reading the profile")?;
            (spec, None, None)
        }
        ProfileSource::Pia(settings) => {
            // Its HTTP calls and the wait for a forwarded port share one deadline, inside the start's.
            let api_deadline =
                Deadline::after(settings.api_deadline, "api_deadline").earlier(deadline);
            let credentials =
                pia_credentials::load(&settings.credentials).step("registering with PIA")?;
            let mut wanted = pia::Wanted::new(settings, admitted.region);
            if settings.port_persist {
                // A persisted port's server first, in its region: the port stays only there.
                let held = |key: &str| state_dir.tunnel_runs(key);
                if let Some((region, server)) =
                    pia_port_forward::persisted_server(state_dir.dir(), &profile.name, held)
                {
                    if wanted.regions.contains(&region) {
                        wanted = wanted.first(&region);
                        wanted.prefer = Some(server);
                    }
                }
            }
            let registered = pia::register(
                settings,
                &credentials,
                state_dir.dir(),
                &wanted,
                id,
                api_deadline,
            )
            .step("registering with PIA")?;
            let record = registered.record(admitted.region, pid, &bundle.rootfs);
            let spec = tunnel::from_pia(profile, &settings.credentials, registered);
            (spec, Some(record), Some(api_deadline))
        }
    };
    spec.port_maps = admitted.port_maps.clone();
    let mut setup = Setup {
        id,
        key: key.clone(),
        policy,
        state_dir,
        record: Record {
            version: RECORD_VERSION,
            netns: Some(netns),
            netns_path: bundle.netns_path.clone(),
            members: vec![me.clone()],
            legacy_container_id: None,
            profile: profile.name.clone(),
            interface: policy.interface.clone(),
            // Picked once netlink can tell which names are free.
            host_link: String::new(),
            backend: BackendKind::Userspace,
            daemon: None,
            legacy_daemon_pid: None,
            lease,
            port_maps: port_map_names(admitted),
            dns_servers: spec.dns_servers.clone(),
            dns_search: spec.dns_search.clone(),
            resolv_confs: Vec::new(),
            legacy_resolv_conf: None,
            named_endpoints: spec.named_endpoints.clone(),
            supervisor: None,
            pia: pia_record,
            complete: false,
        },
        host_nl: None,
        container_nl: None,
        container_ns,
        host_link_index: None,
        link_in_container: None,
        daemon: None,
        daemon_control: None,
        tun: None,
        member_noted: false,
        table_there,
        record_saved: false,
        firewall_loaded: false,
        rules_added: Vec::new(),
        deadline,
        api_deadline,
    };
    match setup.run(&spec, bundle, profile.pia()) {
        Ok(()) => {
            info!(
                "container {id}: {} up ({} backend, profile {}, {} peer(s))",
                policy.interface,
                setup.record.backend,
                profile.name,
                spec.device.peers.len()
            );
            Ok(setup.record.clone())
        }
        Err(e) => {
            setup.undo();
            Err(e)
        }
    }
}

/// How the undo finds our link in the container's netns.
enum InContainer {
    /// By its index, once looked up.
    Index(u32),
    /// By name, from the request that made it or moved it in under that name (which would have failed had the
    /// name been taken) until its index is known.
    Name(String),
}

fn name_taken(interface: &str) -> String {
    format!("the container already has an interface named {interface}")
}

/// The last step: the record, whole.
const LAST_STEP: &str = "writing the state record";
const START_SUPERVISOR: &str = "starting the tunnel's supervisor";

/// What has been made so far, so that a failure can take it all back.
struct Setup<'a> {
    id: &'a str,
    /// The tunnel's key in the state dir (its netns).
    key: String,
    policy: &'a Policy,
    state_dir: &'a StateDir,
    record: Record,
    host_nl: Option<Netlink>,
    container_nl: Option<Netlink>,
    container_ns: &'a NetNs,
    /// Set while the link exists in the host netns under its temporary name.
    host_link_index: Option<u32>,
    /// Our link in the container's netns, once there is one.
    link_in_container: Option<InContainer>,
    daemon: Option<Daemon>,
    /// The built-in daemon's configuration socket, until it is configured.
    daemon_control: Option<std::os::unix::net::UnixStream>,
    /// The built-in daemon's TUN, which the hook holds too until it exits.
    tun: Option<std::os::fd::OwnedFd>,
    /// The container's membership file names this tunnel.
    member_noted: bool,
    /// A table of ours may be in the netns already: the kill switch replaces it.
    table_there: bool,
    record_saved: bool,
    firewall_loaded: bool,
    /// (ipv6, priority) of the policy rules added in the container.
    rules_added: Vec<(bool, u32)>,
    /// create_timeout, from the hook's start.
    deadline: Deadline,
    /// A provider profile's deadline for its API calls, the first port binding included (never after `deadline`).
    api_deadline: Option<Deadline>,
}

impl Setup<'_> {
    /// Fails `step` before it starts once create_timeout has passed; `run` then undoes what was made.
    fn check_deadline(&self, step: &'static str) -> Result<(), StepError> {
        self.fail_point(step)?;
        self.deadline.check().step(step)
    }

    /// In test builds, fails the step `tests::FAIL_AT` names, so that each undo path can be walked.
    #[cfg(test)]
    fn fail_point(&self, step: &'static str) -> Result<(), StepError> {
        super::tests::fail_point(step, &self.record.host_link)
    }

    #[cfg(not(test))]
    fn fail_point(&self, _step: &'static str) -> Result<(), StepError> {
        #[cfg(feature = "fault-injection")]
        super::fault::pause_at(_step);
        Ok(())
    }

    fn run(
        &mut self,
        spec: &TunnelSpec,
        bundle: &Bundle,
        pia: Option<&PiaSettings>,
    ) -> Result<(), StepError> {
        let container_ns = self.container_ns;
        let host = Netlink::connect().step("opening netlink")?;
        let tmp = free_host_link_name(&host).step("naming the WireGuard interface")?;
        self.record.host_link = tmp.clone();
        // The profile's, else wg-quick's rule from the host's routes, which the UDP socket uses.
        let mtu = match spec.mtu {
            Some(mtu) => mtu,
            None => mtu::computed(&host, spec).step("computing the MTU")?,
        };
        self.host_nl = Some(host);
        // Opened before the device: the kernel's link is made in the container's netns and looked up there.
        let container = container_ns
            .run(Netlink::connect)
            .step("opening netlink in the container")?;
        self.container_nl = Some(container);
        // Before the first record: a poststop knows its container only by id.
        self.state_dir
            .set_membership(self.id, &self.key)
            .step("writing the state record")?;
        self.member_noted = true;
        self.check_deadline("creating the WireGuard interface")?;
        self.create_device(&tmp, mtu)?;
        // The supervisor, started last, is recorded in this save already: its own would cost a write.
        self.record_supervisor(pia.filter(|s| s.port_forwarding))?;
        self.save_record()?;
        let policy = self.policy;
        let interface = policy.interface.as_str();
        self.check_deadline("configuring WireGuard")?;
        let mut answer = None;
        match self.record.backend {
            // Through a generic netlink socket of the container's netns, where the device is (the family looks
            // devices up in the requester's netns); its UDP socket stays where the device was created.
            BackendKind::Kernel => {
                container_ns.run(|| wg::kernel::configure(interface, &spec.device))
            }
            // The built-in daemon's over its socketpair, answered once the rest is set up: the daemon starts
            // meanwhile, and its answer is also the sign that it runs.
            BackendKind::Userspace => match self.daemon_control.take() {
                Some(control) => {
                    uapi::send(control, &spec.device, self.deadline).map(|a| answer = Some(a))
                }
                None => uapi::configure(&uapi::socket_path(&tmp), &spec.device, self.deadline),
            },
        }
        .step("configuring WireGuard")?;
        if self.record.backend == BackendKind::Userspace && self.policy.userspace_command.is_some()
        {
            self.move_tun(&tmp, mtu)?;
        }
        let container = self.container_nl.as_ref().expect("connected above");
        let index = container
            .index_of(interface)
            .step("finding the interface in the container")?
            .ok_or_else(|| format!("{interface} is gone from the container"))
            .step("finding the interface in the container")?;
        match &self.link_in_container {
            // wireguard-control's configure makes a link of that name where there is none: it must be ours still.
            Some(InContainer::Index(made)) if *made != index => {
                return Err(format!(
                    "{interface} was replaced while it was configured (index {made}, now {index})"
                ))
                .step("configuring WireGuard");
            }
            _ => self.link_in_container = Some(InContainer::Index(index)),
        }
        if spec.addresses.iter().any(|a| a.is_ipv6()) {
            enable_ipv6(container_ns, interface, self.id)?;
        }
        let container = self.container_nl.as_ref().expect("connected above");
        routing::bring_up(container, index, spec)?;
        // The kill switch goes in before any route leads into the tunnel.
        let rules = Rules {
            interface: &self.policy.interface,
            kill_switch: spec.kill_switch,
            allow_local: &spec.allow_local,
            tunnel_addresses: &spec.addresses,
            port_maps: &spec.port_maps,
            inbound: &spec.inbound,
            port_forwarding: pia.is_some_and(|s| s.port_forwarding),
        };
        self.check_deadline("loading the kill switch (nftables)")?;
        self.firewall_loaded = true;
        let nft_started = std::time::Instant::now();
        let table = rules.table();
        if self.table_there {
            nft::replace(container_ns, &table)
        } else {
            nft::load(container_ns, &table)
        }
        .step("loading the kill switch (nftables)")?;
        debug!(
            "container {}: nftables table loaded in {:.1} ms",
            self.id,
            nft_started.elapsed().as_secs_f64() * 1e3
        );
        let container = self.container_nl.as_ref().expect("connected above");
        routing::add_routes(container, index, spec, &mut self.rules_added)?;
        if let Some(answer) = answer {
            // Before anything that needs the tunnel to carry packets (a PIA port's first bind).
            let what = format!("the built-in daemon for {tmp}");
            answer
                .wait(self.deadline, &what)
                .step("configuring WireGuard")?;
        }

        if spec.dns_servers.is_empty() && spec.kill_switch {
            warn!(
                "container {}: the profile's config has no DNS: resolv.conf keeps the engine's resolvers, \
                 which the kill switch blocks unless allow_local covers them",
                self.id
            );
        }
        if !spec.dns_servers.is_empty() {
            self.check_deadline("writing resolv.conf")?;
            let content = resolv_conf::render(
                &spec.dns_servers,
                &spec.dns_search,
                &self.policy.interface,
                self.id,
            );
            let change = write_resolv_conf(self.state_dir, &self.key, bundle, &content)
                .step("writing resolv.conf")?;
            self.record.resolv_confs.push(SharedResolvConf {
                change,
                users: vec![self.id.to_owned()],
            });
        }
        self.check_deadline(START_SUPERVISOR)?;
        self.start_supervisor(pia.filter(|s| s.port_forwarding))?;
        self.fail_point(LAST_STEP)?;
        self.record.complete = true;
        self.save_record()
    }

    /// Records the tunnel's supervisor before it starts (executable, argv, and with PIA port forwarding where
    /// the port goes), so that a poststop after a start killed at any later step finds it by its argv.
    fn record_supervisor(&mut self, forwarding: Option<&PiaSettings>) -> Result<(), StepError> {
        let (exe, argv) =
            supervisor::command(&self.policy.path, &self.key).step(START_SUPERVISOR)?;
        self.record.supervisor = Some(Started::before_spawn(Some(exe), argv));
        if let (Some(settings), Some(record)) = (forwarding, self.record.pia.as_mut()) {
            record.port_forward = Some(PortForwardRecord {
                helper: None,
                legacy_helper_pid: None,
                port: 0,
                port_file: settings.port_file.clone(),
            });
        }
        Ok(())
    }

    /// Starts the tunnel's supervisor as recorded, and records it whole once it runs (the caller saves). With
    /// PIA port forwarding, waits for its first bind. It works from the record, saved already.
    fn start_supervisor(&mut self, forwarding: Option<&PiaSettings>) -> Result<(), StepError> {
        let step = if forwarding.is_some() {
            "forwarding a port (PIA)"
        } else {
            START_SUPERVISOR
        };
        let recorded = self
            .record
            .supervisor
            .as_ref()
            .expect("recorded at the device");
        let (exe, argv) = (
            recorded.exe.clone().expect("recorded with its executable"),
            recorded.argv.clone(),
        );
        let started = std::time::Instant::now();
        let spawned = supervisor::spawn(self.state_dir.dir(), &self.key, &exe, &argv).step(step)?;
        debug!(
            "container {}: supervisor started as pid {} in {:.1} ms (fork and exec)",
            self.id,
            spawned.pid(),
            started.elapsed().as_secs_f64() * 1e3,
        );
        // Recorded whole (the caller saves); until then a poststop finds it by its argv.
        if let Some(started) = self.record.supervisor.as_mut() {
            started.observe(spawned.pid());
        }
        if forwarding.is_none() {
            return Ok(());
        }
        let wait = self.api_deadline.unwrap_or(self.deadline).left();
        let port = spawned
            .wait_for_port(self.state_dir.dir(), &self.key, wait)
            .step(step)?;
        if let Some(forward) = self.forwarding_mut() {
            forward.port = port;
        }
        Ok(())
    }

    fn forwarding_mut(&mut self) -> Option<&mut PortForwardRecord> {
        self.record.pia.as_mut()?.port_forward.as_mut()
    }

    /// The userspace daemon's TUN, configured in the host netns under the name `tmp`, gets its MTU (which the
    /// daemon only hears of in its own netns) and moves into the container under the policy's name, in one
    /// RTM_SETLINK.
    fn move_tun(&mut self, tmp: &str, mtu: u32) -> Result<(), StepError> {
        let host = self.host_nl.as_ref().expect("connected");
        let index = host
            .index_of(tmp)
            .step("finding the WireGuard interface")?
            .ok_or_else(|| format!("{tmp} vanished"))
            .step("finding the WireGuard interface")?;
        self.host_link_index = Some(index);
        host.set_mtu(index, mtu).step("setting the MTU")?;
        self.check_deadline("moving the interface into the container")?;
        let interface = &self.policy.interface;
        host.move_to_netns(index, self.container_ns.file().as_fd(), interface)
            .map_err(|e| {
                if e.raw_os_error() == Some(Errno::EEXIST as i32) {
                    name_taken(interface)
                } else {
                    e.to_string()
                }
            })
            .step("moving the interface into the container")?;
        self.host_link_index = None;
        self.link_in_container = Some(InContainer::Name(interface.clone()));
        Ok(())
    }

    /// Makes the kernel link, or the userspace daemon under the name `tmp`, recorded first: the record is saved
    /// before anything is made, with the daemon's argv (which holds `tmp`) when one may be started, so that a
    /// poststop after a kill (runc's hook timeout) knows exactly what to look for, and one that finds no record
    /// knows that nothing was made.
    fn create_device(&mut self, tmp: &str, mtu: u32) -> Result<(), StepError> {
        let daemon_command = match (&self.policy.backend, &self.policy.userspace_command) {
            (BackendChoice::Kernel, _) => None,
            (_, None) => {
                let container_pid = self.record.members[0].pid;
                Some(Daemon::builtin_command(tmp, mtu, container_pid))
            }
            (_, Some(command)) => Some(Daemon::command(command, tmp)),
        };
        if let Some(Ok((program, argv))) = &daemon_command {
            // The built-in daemon's executable is known before it runs; another command's, once it does.
            let exe = self
                .policy
                .userspace_command
                .is_none()
                .then(|| program.clone());
            self.record.daemon = Some(Started::before_spawn(exe, argv.clone()));
        }
        self.save_record()?;
        let no_kernel_wireguard =
            |e: &io::Error| e.raw_os_error() == Some(Errno::EOPNOTSUPP as i32);
        let kernel = match self.policy.backend {
            BackendChoice::Userspace => false,
            BackendChoice::Kernel => {
                self.create_kernel_link(tmp, mtu)
                    .map_err(|e| {
                        let hint = if no_kernel_wireguard(&e) {
                            " (this kernel has no WireGuard; use backend = \"userspace\" or \"auto\")"
                        } else {
                            ""
                        };
                        format!("{e}{hint}")
                    })
                    .step("creating the kernel WireGuard link")?;
                true
            }
            BackendChoice::Auto => match self.create_kernel_link(tmp, mtu) {
                Ok(()) => {
                    info!("container {}: backend auto: kernel WireGuard link created, using the kernel", self.id);
                    true
                }
                Err(e) if no_kernel_wireguard(&e) => {
                    info!(
                        "container {}: backend auto: the kernel cannot create a wireguard link ({e}), using userspace",
                        self.id
                    );
                    false
                }
                Err(e) => return Err(e).step("creating the kernel WireGuard link"),
            },
        };
        if kernel {
            self.record.backend = BackendKind::Kernel;
            self.record.daemon = None;
        } else {
            self.record.backend = BackendKind::Userspace;
            let (program, argv) = daemon_command
                .expect("no kernel link: the backend may be userspace")
                .step("starting the userspace WireGuard daemon")?;
            if self.policy.userspace_command.is_some() {
                self.start_daemon(&program, &argv, tmp)?;
            } else {
                self.start_builtin_daemon(&argv, mtu)?;
            }
        }
        Ok(())
    }

    /// The built-in daemon's TUN, made from a thread inside the container's netns under its final name (so
    /// neither a move nor a rename; one the container has already is refused), with its MTU; then the daemon,
    /// in the host's netns, given the TUN's descriptor and a configuration socket (`run` configures it).
    fn start_builtin_daemon(&mut self, argv: &[String], mtu: u32) -> Result<(), StepError> {
        let interface = self.policy.interface.as_str();
        let step = "creating the TUN device in the container";
        let tun = self
            .container_ns
            .run(|| wg::tun::create(interface))
            .map_err(|e| match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
                // IFF_TUN_EXCL: any link of that name, a TUN of the container's own included.
                Errno::EBUSY | Errno::EEXIST | Errno::EINVAL => name_taken(interface),
                _ => e.to_string(),
            })
            .step(step)?;
        self.link_in_container = Some(InContainer::Name(interface.to_owned()));
        let container = self.container_nl.as_ref().expect("connected");
        let index = container
            .index_of(interface)
            .step(step)?
            .ok_or_else(|| format!("{interface} vanished from the container"))
            .step(step)?;
        self.link_in_container = Some(InContainer::Index(index));
        let step = "starting the userspace WireGuard daemon";
        let (daemon, control) = Daemon::spawn_builtin(argv, &tun).step(step)?;
        // Ours too until the start is done: a daemon that dies starting then fails the start where it is awaited
        // (its socket closes without an answer), rather than its device vanishing under a later step.
        self.tun = Some(tun);
        let pid = daemon.pid();
        self.daemon = Some(daemon);
        self.daemon_control = Some(control);
        if let Some(started) = self.record.daemon.as_mut() {
            started.observe(pid);
        }
        debug!("container {}: built-in daemon pid {pid}", self.id);
        let container = self.container_nl.as_ref().expect("connected");
        container.set_mtu(index, mtu).step("setting the MTU")
    }

    /// The kernel WireGuard link, made from the host's netlink socket straight into the container's netns under
    /// its final name (one RTM_NEWLINK with IFLA_NET_NS_FD and the MTU): the device is the container's, and its
    /// UDP socket the host's, since WireGuard opens it in the netns the request came from. Neither a move (an
    /// RCU barrier under rtnl_lock) nor a rename. A name the container has already is refused; a name only the
    /// host has (kernels that look the name up in the requester's netns refuse it too) is worked around: the
    /// link is made under the host-unique `tmp` and renamed inside the container.
    fn create_kernel_link(&mut self, tmp: &str, mtu: u32) -> io::Result<()> {
        let host = self.host_nl.as_ref().expect("connected");
        let container = self.container_nl.as_ref().expect("connected");
        let netns = self.container_ns.file().as_fd();
        let interface = self.policy.interface.as_str();
        let taken = || io::Error::new(io::ErrorKind::AlreadyExists, name_taken(interface));
        match host.add_wireguard_link_in(netns, interface, mtu) {
            Ok(()) => {
                self.link_in_container = Some(InContainer::Name(interface.to_owned()));
                let index = container.index_of(interface)?.ok_or_else(|| {
                    io::Error::other(format!("{interface} vanished from the container"))
                })?;
                self.link_in_container = Some(InContainer::Index(index));
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(Errno::EEXIST as i32) => {
                if container.index_of(interface)?.is_some() {
                    return Err(taken());
                }
                if host.index_of(interface)?.is_none() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        debug!(
            "container {}: the host has an interface named {interface}: the link is made in the container as {tmp} \
             and renamed",
            self.id
        );
        host.add_wireguard_link_in(netns, tmp, mtu)?;
        self.link_in_container = Some(InContainer::Name(tmp.to_owned()));
        let index = container
            .index_of(tmp)?
            .ok_or_else(|| io::Error::other(format!("{tmp} vanished from the container")))?;
        self.link_in_container = Some(InContainer::Index(index));
        container.rename(index, interface).map_err(|e| {
            if e.raw_os_error() == Some(Errno::EEXIST as i32) {
                taken()
            } else {
                e
            }
        })
    }

    /// Starts the userspace daemon (whose argv the record holds already) and waits until it serves its socket,
    /// then records it whole (pid, start time, executable: the caller saves), so that poststop stops exactly it.
    fn start_daemon(
        &mut self,
        program: &Path,
        argv: &[String],
        tmp: &str,
    ) -> Result<(), StepError> {
        let step = "starting the userspace WireGuard daemon";
        let daemon = Daemon::spawn(program, argv, tmp).step(step)?;
        let pid = daemon.pid();
        self.daemon
            .insert(daemon)
            .wait_ready(self.deadline)
            .step(step)?;
        debug!(
            "container {}: userspace daemon pid {pid} for {tmp}",
            self.id
        );
        if let Some(started) = self.record.daemon.as_mut() {
            started.observe(pid);
        }
        Ok(())
    }

    fn save_record(&mut self) -> Result<(), StepError> {
        self.state_dir
            .save(&self.record)
            .step("writing the state record")?;
        self.record_saved = true;
        Ok(())
    }

    /// Takes back, in reverse, whatever `run` made. Best effort: every step is tried.
    fn undo(&mut self) {
        if let Some(started) = self.record.supervisor.take() {
            supervisor::stop(self.state_dir.dir(), &self.key, &started);
        }
        if let Some(forward) = self.record.pia.as_mut().and_then(|p| p.port_forward.take()) {
            port_forward::stop(self.state_dir, &self.key, &forward);
        }
        let mut failures = Vec::new();
        for shared in self.record.resolv_confs.drain(..) {
            teardown::restore(
                self.state_dir,
                Some(&self.key),
                &shared.change,
                &mut failures,
            );
        }
        for failure in failures {
            warn!("container {}: undo: {failure}", self.id);
        }
        if let Some(container) = &self.container_nl {
            for (ipv6, priority) in self.rules_added.drain(..) {
                let _ = container.delete_rules_at(ipv6, priority);
            }
            // Ours only: the container may have had a link of that name before (the start then failed).
            let _ = match &self.link_in_container {
                Some(InContainer::Index(index)) => container.delete_link(*index),
                Some(InContainer::Name(name)) => container.delete_link_named(name).map(drop),
                None => Ok(()),
            };
        }
        if self.firewall_loaded {
            if let Err(e) = nft::delete_table(self.container_ns) {
                warn!(
                    "container {}: undo: deleting the nftables table: {e}",
                    self.id
                );
            }
        }
        if let (Some(host), Some(index)) = (&self.host_nl, self.host_link_index) {
            let _ = host.delete_link(index);
        }
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill_and_reap();
            let _ = wg::userspace::remove_socket(&self.record.host_link);
        }
        if self.record_saved {
            if let Err(e) = self.state_dir.remove(&self.key) {
                warn!(
                    "container {}: undo: removing the state record: {e}",
                    self.id
                );
            }
        }
        if self.member_noted {
            if let Err(e) = self.state_dir.remove_membership(self.id) {
                warn!("container {}: undo: removing the membership: {e}", self.id);
            }
        }
    }
}

/// Docker (20.10 with `--network none`, and any network without IPv6) disables IPv6 in the container's netns,
/// so the tunnel would come up there without IPv6 too (the kernel refuses its addresses with EACCES). The
/// profile's IPv6 addresses are the tunnel's business, and the kill switch still keeps IPv6 off every other
/// interface: enable it on the tunnel alone.
fn enable_ipv6(ns: &NetNs, interface: &str, id: &str) -> Result<(), StepError> {
    if sysctl::enable_ipv6(ns, interface).step("enabling IPv6 on the interface")? {
        info!(
            "container {id}: IPv6 was disabled in the container's netns; enabled it on {interface} for the \
             profile's IPv6 addresses"
        );
    }
    Ok(())
}

/// A random name for the link in the runtime netns that neither a link there nor a UAPI socket uses.
fn free_host_link_name(host: &Netlink) -> io::Result<String> {
    for _ in 0..4 {
        let name = random_host_link_name().map_err(io::Error::other)?;
        let socket_taken = std::fs::symlink_metadata(uapi::socket_path(&name)).is_ok();
        if !socket_taken && host.index_of(&name)?.is_none() {
            return Ok(name);
        }
    }
    Err(io::Error::other(
        "four random link names in a row were taken: something is wrong with the system's randomness",
    ))
}

#[cfg(test)]
mod binding_tests {
    use super::bound_profile;

    #[test]
    fn one_device_binds_its_profile_and_two_bindings_are_refused() {
        let none: [String; 0] = [];
        assert_eq!(bound_profile(&none, None), Ok(None));
        assert_eq!(bound_profile(&none, Some("rt")), Ok(Some("rt")));
        let vpn = ["vpn".to_owned()];
        // The device's own hook (--cdi-device vpn), and a hooks.d start of the same container.
        assert_eq!(bound_profile(&vpn, Some("vpn")), Ok(Some("vpn")));
        assert_eq!(bound_profile(&vpn, None), Ok(Some("vpn")));
        assert_eq!(
            bound_profile(&vpn, Some("rt")).unwrap_err(),
            "it asked for the device wg-oci-hook.dev/tunnel=vpn and its runtime binds profile \"rt\": a \
             container has one tunnel"
        );
        let two = ["vpn".to_owned(), "lab".to_owned()];
        assert_eq!(
            bound_profile(&two, Some("vpn")).unwrap_err(),
            "it asked for 2 devices, wg-oci-hook.dev/tunnel=vpn and wg-oci-hook.dev/tunnel=lab: a container \
             has one tunnel"
        );
    }
}
