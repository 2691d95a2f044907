//! createRuntime and poststop: the flow of DESIGN.md section 1, each step undone in reverse on failure.

pub mod firewall;
pub mod record;
pub mod resolv_conf;
pub mod tunnel;

use crate::config::annotations;

use crate::config::policy::{BackendChoice, Policy, Profile, ProfileSource};
use crate::config::ports::{self, PortMap};
use crate::hook::record::{Record, StateDir, RECORD_VERSION};
use crate::oci::state::{Bundle, ContainerState};
use crate::provider::pia::{self, port_forward, PortForwardRecord};
use crate::sys::deadline::Deadline;
use crate::sys::names::random_host_link_name;
use crate::sys::netlink::Netlink;
use crate::sys::netns::NetNs;
use crate::sys::nft::Nft;
use crate::sys::process::{self, Started};
use crate::wg::uapi;
use crate::wg::{self, userspace::Daemon, BackendKind};
use firewall::Rules;
use log::{debug, info, warn};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::fmt::Display;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tunnel::TunnelSpec;

/// wg-quick's fallback when nothing tells it the path MTU, and its WireGuard overhead (IPv6 + UDP + WG).
const FALLBACK_UNDERLAY_MTU: u32 = 1500;
const WIREGUARD_OVERHEAD: u32 = 80;
const EOPNOTSUPP: i32 = 95;
/// wg-quick's routing for a tunnel that takes the default route: the /0 goes into its own table, and two
/// rules ahead of main make every lookup use it while main's more specific routes (the networks the container
/// is attached to) still win. Main's own default routes are left alone, so an engine that adds one later
/// (Docker 28 attaches networks after our hook) neither fails nor wins.
const TUNNEL_TABLE: u32 = 51820;
const RULE_MAIN_WITHOUT_DEFAULTS: u32 = 32764;
const RULE_TUNNEL_TABLE: u32 = 32765;
const EEXIST: i32 = 17;

/// The profile's port maps and the container's `wg.ports`, if the policy lets it add some.
fn port_maps(
    policy: &Policy,
    profile: &Profile,
    request: &annotations::Request,
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
fn check_region(
    policy: &Policy,
    profile: &Profile,
    request: &annotations::Request,
) -> Result<(), String> {
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

/// The network namespace of the container whose init the OCI state names. The state is input, not truth: the pid
/// must be a live process in mount and network namespaces other than the runtime's (every runc or crun container
/// has both), so that no state can make us build a tunnel in, or clean up, a host process's namespace.
fn container_netns(pid: u32) -> Result<NetNs, String> {
    // Checked by number: in a sandbox /proc/1/ns/* may be unreadable, and a runtime never runs a container as 1.
    if pid == 1 {
        return Err("pid 1 is the host's init, not a container".into());
    }
    // The namespaces are opened through one handle on /proc/PID: if the process dies and its pid is reused
    // between the two, the second open fails instead of reaching the new process.
    let proc_dir = nix::fcntl::open(
        format!("/proc/{pid}").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => format!("pid {pid} is not running"),
        e => format!("pid {pid}: /proc/{pid}: {e}"),
    })?;
    let ns = |kind: &str| {
        nix::fcntl::openat(
            &proc_dir,
            format!("ns/{kind}").as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(std::fs::File::from)
        .map_err(|e| match e {
            Errno::ENOENT | Errno::ESRCH => format!("pid {pid} is not running"),
            e => format!("pid {pid}: opening its {kind} namespace: {e}"),
        })
    };
    let same = |a: &std::fs::File, b: &str| -> Result<bool, String> {
        let (a, b) = (a.metadata(), std::fs::metadata(b));
        match (a, b) {
            (Ok(a), Ok(b)) => Ok(a.dev() == b.dev() && a.ino() == b.ino()),
            (Err(e), _) | (_, Err(e)) => Err(format!("pid {pid}: comparing namespaces: {e}")),
        }
    };
    if same(&ns("mnt")?, "/proc/thread-self/ns/mnt")? {
        return Err(format!(
            "pid {pid} shares the runtime's mount namespace: not a container; refusing to touch its network"
        ));
    }
    let net = ns("net")?;
    if same(&net, "/proc/thread-self/ns/net")? {
        return Err(format!(
            "pid {pid}: the container shares the runtime's network namespace (--network host); refusing to move \
             a tunnel there"
        ));
    }
    Ok(NetNs::from_file(net, format!("/proc/{pid}/ns/net")))
}

/// One line for the engine's error output: which container, which step, why.
#[derive(Debug)]
pub struct HookError {
    pub container: String,
    pub step: &'static str,
    pub cause: String,
}

impl Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "container {}: {}: {}",
            self.container, self.step, self.cause
        )
    }
}

impl std::error::Error for HookError {}

fn step_err<'a, E: Display>(
    container: &'a str,
    step: &'static str,
) -> impl FnOnce(E) -> HookError + 'a {
    move |cause| HookError {
        container: container.to_owned(),
        step,
        cause: cause.to_string(),
    }
}

/// Brings the container's tunnel up. The caller has checked `wg.enable` and loaded the policy.
/// `runtime_profile` is the profile a runtime wrapper was bound to (`--profile`), the container's default.
pub fn create_runtime(
    state: &ContainerState,
    policy: &Policy,
    runtime_profile: Option<&str>,
) -> Result<Record, HookError> {
    // Every step must end before the engine's hook timeout kills us with no word of why.
    let deadline = Deadline::after(policy.create_timeout, "create_timeout");
    let id = state.id.as_str();
    let request =
        annotations::parse(&state.annotations).map_err(step_err(id, "reading annotations"))?;
    let profile = policy
        .select_profile_or(request.profile.as_deref(), runtime_profile)
        .map_err(step_err(id, "choosing a profile"))?;
    let port_maps =
        port_maps(policy, profile, &request).map_err(step_err(id, "reading annotations"))?;
    check_region(policy, profile, &request).map_err(step_err(id, "reading annotations"))?;
    let nft = Nft::locate(&policy.nft_command).map_err(step_err(id, "finding nft"))?;
    let state_dir =
        StateDir::open(&policy.state_dir).map_err(step_err(id, "opening the state directory"))?;
    let pid = state
        .live_pid()
        .ok_or("the OCI state has no container pid")
        .map_err(step_err(id, "reading the OCI state"))?;
    let container_ns =
        container_netns(pid).map_err(step_err(id, "checking the container's pid"))?;
    let bundle = Bundle::load(&state.bundle).map_err(step_err(id, "reading the bundle"))?;
    // Last of the checks, since a provider registers a key: nothing before this may still refuse the start.
    let (mut spec, pia_record, api_deadline) = match &profile.source {
        ProfileSource::WgQuick(path) => {
            let spec = tunnel::from_wg_quick(profile, path, policy.resolve_timeout, deadline)
                .map_err(step_err(id, "reading the profile"))?;
            (spec, None, None)
        }
        ProfileSource::Pia(settings) => {
            // Its HTTP calls and the wait for a forwarded port share one deadline, inside the start's.
            let api_deadline =
                Deadline::after(settings.api_deadline, "api_deadline").earlier(deadline);
            let region = request.region.as_deref();
            let registered = pia::register(settings, &state_dir, region, id, api_deadline)
                .map_err(step_err(id, "registering with PIA"))?;
            let record = registered.record(pid, &bundle.rootfs);
            let spec = tunnel::from_pia(profile, &settings.credentials, registered);
            (spec, Some(record), Some(api_deadline))
        }
    };
    spec.port_maps = port_maps;
    let mut setup = Setup {
        id,
        policy,
        state_dir,
        record: Record {
            version: RECORD_VERSION,
            container_id: id.to_owned(),
            profile: profile.name.clone(),
            interface: policy.interface.clone(),
            // Picked once netlink can tell which names are free.
            host_link: String::new(),
            backend: BackendKind::Userspace,
            daemon: None,
            legacy_daemon_pid: None,
            resolv_conf: None,
            pia: pia_record,
        },
        host_nl: None,
        container_nl: None,
        container_ns: &container_ns,
        nft: &nft,
        host_link_index: None,
        daemon: None,
        record_saved: false,
        firewall_loaded: false,
        rules_added: Vec::new(),
        deadline,
        api_deadline,
    };
    match setup.run(&spec, &bundle, profile.pia()) {
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

/// What has been made so far, so that a failure can take it all back.
struct Setup<'a> {
    id: &'a str,
    policy: &'a Policy,
    state_dir: StateDir,
    record: Record,
    host_nl: Option<Netlink>,
    container_nl: Option<Netlink>,
    container_ns: &'a NetNs,
    nft: &'a Nft,
    /// Set while the link exists in the host netns under its temporary name.
    host_link_index: Option<u32>,
    daemon: Option<Daemon>,
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
    fn err<E: Display>(&self, step: &'static str) -> impl FnOnce(E) -> HookError + '_ {
        step_err(self.id, step)
    }

    /// Fails `step` before it starts once create_timeout has passed; `run` then undoes what was made.
    fn check_deadline(&self, step: &'static str) -> Result<(), HookError> {
        self.deadline.check().map_err(self.err(step))
    }

    fn run(
        &mut self,
        spec: &TunnelSpec,
        bundle: &Bundle,
        pia: Option<&pia::settings::PiaSettings>,
    ) -> Result<(), HookError> {
        let container_ns = self.container_ns;
        let host = Netlink::connect().map_err(self.err("opening netlink"))?;
        let tmp = free_host_link_name(&host).map_err(self.err("naming the WireGuard interface"))?;
        self.record.host_link = tmp.clone();
        self.host_nl = Some(host);
        self.check_deadline("creating the WireGuard interface")?;
        self.create_device(&tmp)?;
        self.save_record()?;
        let socket = wg::uapi::socket_path(&tmp);
        self.check_deadline("configuring WireGuard")?;
        match self.record.backend {
            BackendKind::Kernel => wg::kernel::configure(&tmp, &spec.device),
            BackendKind::Userspace => wg::uapi::configure(&socket, &spec.device, self.deadline),
        }
        .map_err(self.err("configuring WireGuard"))?;

        let host = self.host_nl.as_ref().expect("connected above");
        let index = host
            .index_of(&tmp)
            .map_err(self.err("finding the WireGuard interface"))?
            .ok_or_else(|| {
                self.err("finding the WireGuard interface")(format!("{tmp} vanished"))
            })?;
        self.host_link_index = Some(index);
        // Set before the move: the userspace daemon only hears about MTU changes in its own netns.
        let mtu = match spec.mtu {
            Some(mtu) => mtu,
            None => computed_mtu(host, spec).map_err(self.err("computing the MTU"))?,
        };
        host.set_mtu(index, mtu)
            .map_err(self.err("setting the MTU"))?;
        self.check_deadline("moving the interface into the container")?;
        host.move_to_netns(index, container_ns.file().as_fd(), &self.policy.interface)
            .map_err(|e| {
                let cause = if e.raw_os_error() == Some(EEXIST) {
                    format!(
                        "the container already has an interface named {}",
                        self.policy.interface
                    )
                } else {
                    e.to_string()
                };
                self.err("moving the interface into the container")(cause)
            })?;
        self.host_link_index = None;
        let container = container_ns
            .run(Netlink::connect)
            .map_err(self.err("opening netlink in the container"))?;
        let container = &*self.container_nl.insert(container);
        if spec.addresses.iter().any(|a| a.is_ipv6()) {
            enable_ipv6(container_ns, &self.policy.interface, self.id)
                .map_err(step_err(self.id, "enabling IPv6 on the interface"))?;
        }
        let index = bring_up(container, &self.policy.interface, spec)
            .map_err(|(step, e)| step_err(self.id, step)(e))?;
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
        self.nft
            .load(container_ns, &rules.render(), self.deadline)
            .map_err(self.err("loading the kill switch (nftables)"))?;
        debug!(
            "container {}: nftables table loaded in {:.1} ms",
            self.id,
            nft_started.elapsed().as_secs_f64() * 1e3
        );
        let container = self.container_nl.as_ref().expect("connected above");
        add_routes(container, index, spec, &mut self.rules_added)
            .map_err(|(step, e)| step_err(self.id, step)(e))?;

        if spec.dns_servers.is_empty() && spec.kill_switch {
            warn!(
                "container {}: the profile's config has no DNS: resolv.conf keeps the engine's resolvers, \
                 which the kill switch blocks unless allow_local covers them",
                self.id
            );
        }
        if !spec.dns_servers.is_empty() {
            self.check_deadline("writing resolv.conf")?;
            let content = resolv_conf::render(&spec.dns_servers, &spec.dns_search, self.id);
            let change =
                resolv_conf::write(bundle, &content).map_err(self.err("writing resolv.conf"))?;
            self.record.resolv_conf = Some(change);
        }
        if let Some(settings) = pia.filter(|s| s.port_forwarding) {
            self.check_deadline("forwarding a port (PIA)")?;
            self.forward_port(settings)?;
        }
        self.save_record()
    }

    /// Starts the PIA port-forwarding helper, recorded before it starts (executable, argv) and whole once it runs,
    /// so that poststop stops exactly it, and waits for its first bind.
    fn forward_port(&mut self, settings: &pia::settings::PiaSettings) -> Result<(), HookError> {
        let step = "forwarding a port (PIA)";
        let (exe, argv) = port_forward::command(self.policy, self.id).map_err(self.err(step))?;
        let Some(record) = self.record.pia.as_mut() else {
            return Ok(());
        };
        record.port_forward = Some(PortForwardRecord {
            helper: Some(Started::before_spawn(Some(exe.clone()), argv.clone())),
            legacy_helper_pid: None,
            port: 0,
            port_file: settings.port_file.clone(),
        });
        // The helper reads its registration from the record.
        self.save_record()?;
        let helper = port_forward::spawn(&self.state_dir, self.id, &exe, &argv);
        let helper = helper.map_err(self.err(step))?;
        // Recorded whole with the port (the caller saves); until then a poststop finds it by its argv.
        if let Some(started) = self.forwarding_mut().and_then(|f| f.helper.as_mut()) {
            started.observe(helper.pid());
        }
        let wait = self.api_deadline.unwrap_or(self.deadline).left();
        let port = helper
            .wait_for_port(&self.state_dir, self.id, wait)
            .map_err(self.err(step))?;
        if let Some(forward) = self.forwarding_mut() {
            forward.port = port;
        }
        Ok(())
    }

    fn forwarding_mut(&mut self) -> Option<&mut PortForwardRecord> {
        self.record.pia.as_mut()?.port_forward.as_mut()
    }

    /// Makes the link or the userspace daemon under the name `tmp`, recorded first: the record is saved before
    /// anything is made, with the daemon's argv (which holds `tmp`) when one may be started, so that a poststop
    /// after a kill (runc's hook timeout) knows exactly what to look for, and one that finds no record knows
    /// that nothing was made.
    fn create_device(&mut self, tmp: &str) -> Result<(), HookError> {
        let daemon_command = match self.policy.backend {
            BackendChoice::Kernel => None,
            _ => Some(Daemon::command(&self.policy.userspace_command, tmp)),
        };
        if let Some(Ok((_, argv))) = &daemon_command {
            self.record.daemon = Some(Started::before_spawn(None, argv.clone()));
        }
        self.save_record()?;
        let host = self.host_nl.as_ref().expect("connected");
        let kernel = match self.policy.backend {
            BackendChoice::Userspace => false,
            BackendChoice::Kernel => {
                host.add_wireguard_link(tmp).map_err(|e| {
                    let hint = if e.raw_os_error() == Some(EOPNOTSUPP) {
                        " (this kernel has no WireGuard; use backend = \"userspace\" or \"auto\")"
                    } else {
                        ""
                    };
                    self.err("creating the kernel WireGuard link")(format!("{e}{hint}"))
                })?;
                true
            }
            BackendChoice::Auto => match host.add_wireguard_link(tmp) {
                Ok(()) => {
                    info!("container {}: backend auto: kernel WireGuard link created, using the kernel", self.id);
                    true
                }
                Err(e) if e.raw_os_error() == Some(EOPNOTSUPP) => {
                    info!(
                        "container {}: backend auto: the kernel cannot create a wireguard link ({e}), using userspace",
                        self.id
                    );
                    false
                }
                Err(e) => return Err(self.err("creating the kernel WireGuard link")(e)),
            },
        };
        if kernel {
            self.record.backend = BackendKind::Kernel;
            self.record.daemon = None;
            self.host_link_index = host
                .index_of(tmp)
                .map_err(self.err("finding the WireGuard interface"))?;
        } else {
            self.record.backend = BackendKind::Userspace;
            let (program, argv) = daemon_command
                .expect("no kernel link: the backend may be userspace")
                .map_err(self.err("starting the userspace WireGuard daemon"))?;
            self.start_daemon(&program, &argv, tmp)?;
        }
        Ok(())
    }

    /// Starts the userspace daemon (whose argv the record holds already) and waits until it serves its socket,
    /// then records it whole (pid, start time, executable: the caller saves), so that poststop stops exactly it.
    fn start_daemon(
        &mut self,
        program: &Path,
        argv: &[String],
        tmp: &str,
    ) -> Result<(), HookError> {
        let step = "starting the userspace WireGuard daemon";
        let daemon = Daemon::spawn(program, argv, tmp).map_err(self.err(step))?;
        let pid = daemon.pid();
        self.daemon
            .insert(daemon)
            .wait_ready(self.deadline)
            .map_err(step_err(self.id, step))?;
        debug!(
            "container {}: userspace daemon pid {pid} for {tmp}",
            self.id
        );
        if let Some(started) = self.record.daemon.as_mut() {
            started.observe(pid);
        }
        Ok(())
    }

    fn save_record(&mut self) -> Result<(), HookError> {
        self.state_dir
            .save(&self.record)
            .map_err(self.err("writing the state record"))?;
        self.record_saved = true;
        Ok(())
    }

    /// Takes back, in reverse, whatever `run` made. Best effort: every step is tried.
    fn undo(&mut self) {
        if let Some(forward) = self.record.pia.as_mut().and_then(|p| p.port_forward.take()) {
            stop_port_forwarding(&self.state_dir, self.id, &forward);
        }
        if let Some(change) = self.record.resolv_conf.take() {
            if let Err(e) = resolv_conf::restore(&change) {
                warn!(
                    "container {}: undo: restoring {}: {e}",
                    self.id, change.location
                );
            }
        }
        if let Some(container) = &self.container_nl {
            for (ipv6, priority) in self.rules_added.drain(..) {
                let _ = container.delete_rules_at(ipv6, priority);
            }
            let _ = container.delete_link_named(&self.policy.interface);
        }
        if self.firewall_loaded {
            if let Err(e) = self.nft.delete_table(self.container_ns) {
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
            if let Err(e) = self.state_dir.remove(self.id) {
                warn!(
                    "container {}: undo: removing the state record: {e}",
                    self.id
                );
            }
        }
    }
}

/// Docker (20.10 with `--network none`, and any network without IPv6) disables IPv6 in the container's netns, so
/// the tunnel would come up there without IPv6 too (the kernel refuses its addresses with EACCES). The profile's
/// IPv6 addresses are the tunnel's business, and the kill switch still keeps IPv6 off every other interface:
/// enable it on the tunnel alone.
fn enable_ipv6(ns: &NetNs, interface: &str, id: &str) -> io::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6");
    ns.run(|| {
        // /proc/sys/net answers for the netns of the thread that opens it: this one.
        let current = std::fs::read_to_string(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e} (is IPv6 disabled in this kernel?)")))?;
        if current.trim() != "0" {
            std::fs::write(&path, "0").map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
            info!("container {id}: IPv6 was disabled in the container's netns; enabled it on {interface} for the profile's IPv6 addresses");
        }
        Ok(())
    })
}

/// lo up, the tunnel's addresses, the tunnel up; returns its index in the container.
fn bring_up(
    nl: &Netlink,
    interface: &str,
    spec: &TunnelSpec,
) -> Result<u32, (&'static str, io::Error)> {
    let index = nl
        .index_of(interface)
        .and_then(|i| {
            i.ok_or_else(|| io::Error::other(format!("{interface} not found after the move")))
        })
        .map_err(|e| ("finding the interface in the container", e))?;
    if let Some(lo) = nl.index_of("lo").map_err(|e| ("bringing lo up", e))? {
        nl.set_up(lo).map_err(|e| ("bringing lo up", e))?;
    }
    for addr in &spec.addresses {
        nl.add_address(index, *addr)
            .map_err(|e| ("adding address", io::Error::other(format!("{addr}: {e}"))))?;
    }
    nl.set_up(index)
        .map_err(|e| ("bringing the interface up", e))?;
    Ok(index)
}

/// A route per AllowedIPs prefix: a /0 into `TUNNEL_TABLE` behind two policy rules (see there), every other
/// prefix into main, where it beats the attached networks' default routes by being more specific.
fn add_routes(
    nl: &Netlink,
    index: u32,
    spec: &TunnelSpec,
    rules_added: &mut Vec<(bool, u32)>,
) -> Result<(), (&'static str, io::Error)> {
    const MAIN: u32 = 254;
    for net in &spec.routes {
        let table = if net.prefix() == 0 {
            TUNNEL_TABLE
        } else {
            MAIN
        };
        match nl.add_device_route(index, *net, table) {
            Err(e) if e.raw_os_error() != Some(EEXIST) => {
                return Err(("adding route", io::Error::other(format!("{net}: {e}"))));
            }
            _ => {}
        }
    }
    for ipv6 in [false, true] {
        if !spec
            .routes
            .iter()
            .any(|r| r.prefix() == 0 && r.is_ipv6() == ipv6)
        {
            continue;
        }
        for (priority, table, suppress) in [
            (RULE_MAIN_WITHOUT_DEFAULTS, MAIN, Some(0)),
            (RULE_TUNNEL_TABLE, TUNNEL_TABLE, None),
        ] {
            nl.add_rule(ipv6, priority, table, suppress)
                .map_err(|e| ("adding a routing rule", e))?;
            rules_added.push((ipv6, priority));
        }
    }
    Ok(())
}

/// Takes our rules and table out of a container netns that outlives the container (a shared netns).
fn clean_container_netns(ns: &NetNs, nft: Option<&Nft>, interface: &str) -> io::Result<()> {
    let nl = ns.run(Netlink::connect)?;
    for ipv6 in [false, true] {
        for priority in [RULE_MAIN_WITHOUT_DEFAULTS, RULE_TUNNEL_TABLE] {
            nl.delete_rules_at(ipv6, priority)?;
        }
    }
    nl.delete_link_named(interface)?;
    if let Some(nft) = nft {
        nft.delete_table(ns)?;
    }
    Ok(())
}

/// wg-quick's rule: the largest MTU towards any endpoint (route metric, else its device), else the default
/// route's, else 1500; minus WireGuard's 80 bytes of overhead.
fn computed_mtu(host: &Netlink, spec: &TunnelSpec) -> io::Result<u32> {
    let mut underlay = 0;
    for endpoint in spec.endpoints() {
        if let Some(mtu) = host.path_mtu_to(endpoint.ip())? {
            underlay = underlay.max(mtu);
        }
    }
    if underlay == 0 {
        if let Some(route) = host.default_routes(false)?.first() {
            underlay = host.route_mtu(route)?.unwrap_or(0);
        }
    }
    if underlay == 0 {
        underlay = FALLBACK_UNDERLAY_MTU;
    }
    Ok(underlay.saturating_sub(WIREGUARD_OVERHEAD).max(1280))
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

/// Stops the port-forwarding helper: its supervisor and worker as recorded, and no other process, whatever its
/// argv. Removes its host-side files.
fn stop_port_forwarding(state_dir: &StateDir, id: &str, forward: &PortForwardRecord) {
    if let Some(helper) = &forward.helper {
        // The worker dies with its supervisor (PR_SET_PDEATHSIG); found first, in case it has not yet.
        let worker = helper.child(port_forward::worker_argv(&helper.argv));
        helper.stop();
        if let Some(worker) = worker {
            worker.stop();
        }
    }
    if let Some(pid) = forward.legacy_helper_pid {
        process::stop_legacy(pid, &[port_forward::SUBCOMMAND, id]);
    }
    port_forward::remove_files(state_dir, id);
}

/// Tears down what createRuntime recorded. Idempotent: no record, nothing of ours left. Works when the container's
/// netns is already gone (podman runs poststop after removing it) and after a failed create. The record is
/// removed even when a step fails, and the failure is reported.
pub fn poststop(state: &ContainerState, policy: &Policy) -> Result<(), HookError> {
    let id = state.id.as_str();
    let dir =
        StateDir::open(&policy.state_dir).map_err(step_err(id, "opening the state directory"))?;
    // No record: nothing was made (it is saved before anything is), and nothing is derived from the id.
    let Some(record) = dir
        .load(id)
        .map_err(step_err(id, "reading the state record"))?
    else {
        return Ok(());
    };
    let mut failures: Vec<String> = Vec::new();
    if let Some(forward) = record.pia.as_ref().and_then(|p| p.port_forward.as_ref()) {
        stop_port_forwarding(&dir, id, forward);
    }
    if let Some(change) = &record.resolv_conf {
        if let Err(e) = resolv_conf::restore(change) {
            failures.push(format!("restoring {}: {e}", change.location));
        }
    }
    if let Some(daemon) = &record.daemon {
        if let Err(e) = wg::userspace::stop(daemon, &record.host_link) {
            failures.push(format!("stopping the userspace daemon: {e}"));
        }
    }
    if let Some(pid) = record.legacy_daemon_pid {
        process::stop_legacy(pid, &[&record.host_link]);
        if let Err(e) = wg::userspace::remove_socket(&record.host_link) {
            failures.push(format!("stopping the userspace daemon: {e}"));
        }
    }
    // A link that never left the host netns (a create killed half-way).
    if let Err(e) = Netlink::connect().and_then(|host| host.delete_link_named(&record.host_link)) {
        failures.push(format!("deleting {}: {e}", record.host_link));
    }
    // The container's netns normally died with the container; when it lives on (a shared netns),
    // our link must not.
    if let Some(Ok(ns)) = state.live_pid().map(container_netns) {
        let nft = Nft::locate(&policy.nft_command).ok();
        if let Err(e) = clean_container_netns(&ns, nft.as_ref(), &record.interface) {
            failures.push(format!(
                "deleting {} in the container: {e}",
                record.interface
            ));
        }
    }
    if let Err(e) = dir.remove(id) {
        failures.push(format!("removing the state record: {e}"));
    }
    if failures.is_empty() {
        info!("container {id}: tunnel torn down");
        Ok(())
    } else {
        Err(step_err(id, "tearing down")(failures.join("; ")))
    }
}
