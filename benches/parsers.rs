//! What the hook does in process before it touches the system, with Criterion: reading a typical wg-quick file
//! (`config::wgquick::parse`), the shipped example policy (`config::policy::Policy::parse` on
//! `etc/policy.toml`), the OCI state runc sends on stdin (`oci::state::ContainerState::read`), the container's
//! annotations (`config::annotations::enabled` and `parse`), and the kill switch's nft script
//! (`hook::firewall::Rules::render`, the README's example). Public items of the library only.
//!
//! `cargo bench --bench parsers` (about 20 s: 1 s of warm-up and 2 s of measurement each); Criterion's usual
//! arguments filter and tune it (`cargo bench --bench parsers -- render`).

use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;
use wg_oci_hook::config::{annotations, policy::Policy, ports::Inbound, wgquick};
use wg_oci_hook::hook::firewall::Rules;
use wg_oci_hook::oci::state::ContainerState;

/// A wg-quick file as a VPN provider hands it out: comments, both families, DNS with a search domain, an MTU,
/// a preshared key and a keepalive.
const WG_QUICK: &str = "\
# vpn.conf: from the provider's dashboard, 2026-01-12
[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
Address = 10.66.0.2/32, fd66::2/128
DNS = 10.66.0.1, fd66::1, internal.example
MTU = 1420

[Peer]
# se-sto-01
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
PresharedKey = FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=
Endpoint = 192.0.2.17:51820
AllowedIPs = 0.0.0.0/0, ::/0
PersistentKeepalive = 25
";

/// The shipped example policy, comments and all.
const POLICY: &str = include_str!("../etc/policy.toml");

/// What runc sends at createRuntime for a podman container that asks for a tunnel (podman's own annotations
/// included, as the state carries them).
const STATE: &str = r#"{"ociVersion":"1.0.2","id":"3f1c0c3b9d9e4c6f8a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071","status":"creating","pid":48213,"bundle":"/var/lib/containers/storage/overlay-containers/3f1c0c3b9d9e4c6f8a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071/userdata","annotations":{"io.container.manager":"libpod","io.kubernetes.cri-o.Created":"2026-01-12T10:14:07.123456789Z","io.kubernetes.cri-o.TTY":"false","io.podman.annotations.autoremove":"TRUE","io.podman.annotations.init":"FALSE","io.podman.annotations.privileged":"FALSE","io.podman.annotations.publish-all":"FALSE","org.opencontainers.image.stopSignal":"15","wg.enable":"true","wg.profile":"vpn","wg.ports":"8080:80/tcp,5353:53/udp"}}"#;

fn benches(c: &mut Criterion) {
    let conf = Path::new("/etc/wg-oci-hook/vpn.conf");
    wgquick::parse(WG_QUICK, conf).expect("the wg-quick file parses");
    c.bench_function("wgquick::parse (typical file)", |b| {
        b.iter(|| wgquick::parse(black_box(WG_QUICK), conf).unwrap())
    });

    let policy_path = Path::new("/etc/wg-oci-hook/policy.toml");
    Policy::parse(POLICY, policy_path).expect("etc/policy.toml parses");
    c.bench_function("Policy::parse (etc/policy.toml)", |b| {
        b.iter(|| Policy::parse(black_box(POLICY), policy_path).unwrap())
    });

    c.bench_function("ContainerState::read (runc's state, podman)", |b| {
        b.iter(|| ContainerState::read(black_box(STATE.as_bytes())).unwrap())
    });

    let state = ContainerState::read(STATE.as_bytes()).unwrap();
    let found: &HashMap<String, String> = &state.annotations;
    assert!(annotations::enabled(found).unwrap());
    c.bench_function("annotations::enabled + parse", |b| {
        b.iter(|| {
            let a = black_box(found);
            assert!(annotations::enabled(a).unwrap());
            annotations::parse(a).unwrap()
        })
    });

    // The README's example ("How the kill switch works").
    let allow_local = [
        "10.88.0.0/16".parse().unwrap(),
        "fd88::/64".parse().unwrap(),
    ];
    let tunnel = [
        "10.77.0.2/32".parse().unwrap(),
        "fd77::2/128".parse().unwrap(),
    ];
    let maps = ["8080:80/tcp".parse().unwrap()];
    let rules = Rules {
        interface: "wg0",
        kill_switch: true,
        allow_local: &allow_local,
        tunnel_addresses: &tunnel,
        port_maps: &maps,
        inbound: &Inbound::Replies,
        port_forwarding: false,
    };
    c.bench_function("Rules::render (the README's table)", |b| {
        b.iter(|| black_box(&rules).render())
    });
}

criterion_group! {
    name = parsers;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(parsers);
