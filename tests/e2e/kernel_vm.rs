//! The kernel WireGuard backend, proven in a VM (tests/vm): runc starts containers whose config.json carries
//! our hooks, under Debian's kernel with its WireGuard module, against a kernel WireGuard peer. One boot
//! serves every test here; each test asserts the guest's own checks for one behaviour.

use crate::vm;
use std::sync::OnceLock;

static RUN: OnceLock<Result<vm::VmRun, String>> = OnceLock::new();

fn run() -> &'static vm::VmRun {
    match RUN.get_or_init(vm::boot) {
        Ok(run) => run,
        Err(e) => panic!("the kernel-backend VM did not run to the end: {e}"),
    }
}

fn assert_passed(checks: &[&str]) {
    let run = run();
    let mut problems = Vec::new();
    for check in checks {
        match run.results.get(*check) {
            Some((true, _)) => {}
            Some((false, detail)) => problems.push(format!("{check}: FAIL {detail}")),
            None => problems.push(format!("{check}: never reported")),
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n--- guest serial console ---\n{}",
        problems.join("\n"),
        run.log
    );
}

#[test]
fn kernel_tunnel_is_up_before_the_workload_and_carries_its_first_packet() {
    assert_passed(&[
        "kernel_first_packet",
        "kernel_tcp_through_tunnel",
        "kernel_ipv6",
    ]);
}

#[test]
fn kernel_wg0_has_config_addresses_mtu_routes_and_dns() {
    assert_passed(&[
        "kernel_addresses",
        "kernel_mtu",
        "kernel_default_routes",
        "kernel_dns",
    ]);
}

#[test]
fn kernel_honours_listen_port_fwmark_and_preshared_key() {
    assert_passed(&[
        "kernel_listen_port",
        "kernel_listen_port_on_the_wire",
        "kernel_fwmark",
        "kernel_psk_configured",
        "kernel_psk_handshake",
    ]);
}

#[test]
fn kernel_device_is_the_containers_and_its_udp_socket_the_hosts() {
    assert_passed(&[
        "kernel_listen_port_on_the_wire",
        "kernel_socket_in_host_netns",
        "kernel_no_socket_in_container",
        "kernel_container_has_lo_and_wg0",
    ]);
}

#[test]
fn kernel_tunnel_comes_up_beside_a_host_wg0_and_leaves_it_alone() {
    assert_passed(&[
        "kernel_host_wg0_first_packet",
        "kernel_host_wg0_untouched",
        "kernel_host_wg0_teardown",
    ]);
}

#[test]
fn kernel_teardown_leaves_no_link_and_no_record() {
    assert_passed(&[
        "kernel_teardown",
        "kernel_running_has_record",
        "kernel_record_has_no_key",
        "kernel_teardown_after_kill",
    ]);
}

#[test]
fn kernel_status_reads_the_device_from_inside_the_netns() {
    assert_passed(&[
        "kernel_status_table",
        "kernel_status_json",
        "kernel_status_no_key",
        "kernel_status_link_gone",
        "kernel_status_link_gone_json",
    ]);
}

#[test]
fn kernel_name_taken_in_the_container_fails_closed_and_leaves_their_link() {
    assert_passed(&[
        "kernel_failure_fails_start",
        "kernel_failure_names_cause",
        "kernel_failure_rolls_back",
        "kernel_failure_leaves_their_wg0",
    ]);
}

#[test]
fn kernel_failure_or_kill_after_the_link_exists_in_the_container_leaves_nothing() {
    assert_passed(&[
        "kernel_late_failure_fails_start",
        "kernel_late_failure_names_cause",
        "kernel_late_failure_rolls_back",
        "kernel_killed_link_in_container",
        "kernel_killed_poststop_cleans",
    ]);
}

#[test]
fn kernel_kill_switch_lets_nothing_out_but_the_tunnel() {
    assert_passed(&[
        "kernel_killswitch_table",
        "kernel_killswitch_late_default_route",
        "kernel_killswitch_no_leak_on_late_veth",
        "kernel_killswitch_tunnel_still_works",
        "kernel_killswitch_control_sees_leaks",
        "kernel_killswitch_control_sees_kernel_ipv6",
        "kernel_killswitch_control_lan_answers",
    ]);
}

#[test]
fn kernel_tunnel_addresses_do_not_answer_a_neighbour_on_another_link() {
    assert_passed(&[
        "kernel_killswitch_antispoof",
        "kernel_killswitch_antispoof_without_kill_switch",
        "kernel_killswitch_antispoof_rule_is_what_stops_it",
        "kernel_killswitch_antispoof_control",
    ]);
}

#[test]
fn kernel_whole_ruleset_loads_and_its_port_map_works() {
    assert_passed(&[
        "kernel_killswitch_full_ruleset",
        "kernel_killswitch_port_map",
        "kernel_killswitch_teardown",
    ]);
}

#[test]
fn auto_backend_picks_the_kernel_when_it_has_wireguard() {
    assert_passed(&[
        "auto_picks_kernel",
        "auto_record_says_kernel",
        "auto_teardown",
    ]);
}

#[test]
fn guest_reports_create_runtime_times_of_both_backends() {
    let run = run();
    assert_passed(&["timings_leave_nothing"]);
    let median = |name: &str| {
        let mut samples = run.timings.get(name).cloned().unwrap_or_default();
        assert_eq!(samples.len(), 7, "{name} timings: {samples:?}\n{}", run.log);
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    };
    let (kernel, userspace) = (median("kernel"), median("userspace"));
    let (kernel_wall, userspace_wall) = (median("kernel_wall"), median("userspace_wall"));
    // The same device by hand: ip link add + wg set, then moved in; or made in the netns and set there.
    let (ip_move, ip_direct, clock) = (median("ip_move"), median("ip_direct"), median("clock"));
    println!(
        "in the TCG guest, medians of 7 (ms): create-runtime kernel {kernel:.1} (wall {kernel_wall:.1}), \
         userspace {userspace:.1} (wall {userspace_wall:.1}), kernel/userspace {:.2}; by hand: ip link add + \
         wg set + ip link set netns {ip_move:.1}, ip link add netns + wg set inside {ip_direct:.1}, the clock \
         alone {clock:.1}; kernel wall / ip_move {:.2}, kernel wall / ip_direct {:.2}; VM run {:.1} s",
        kernel / userspace,
        kernel_wall / ip_move,
        kernel_wall / ip_direct,
        run.elapsed.as_secs_f64()
    );
    // The same tunnels' poststop (the hook's own duration_ms; the container's netns still lives, as in a pod).
    println!(
        "poststop, medians of 7 (ms): kernel {:.1}, userspace {:.1}",
        median("kernel_poststop"),
        median("userspace_poststop")
    );
    // WG_OCI_HOOK_VM_BASELINE: another build of the hook, timed between the two.
    if run.timings.contains_key("baseline") {
        let (baseline, baseline_wall) = (median("baseline"), median("baseline_wall"));
        println!(
            "baseline build, kernel: {baseline:.1} (wall {baseline_wall:.1}); this build / baseline {:.2} \
             (wall {:.2}); baseline wall / ip_move {:.2}",
            kernel / baseline,
            kernel_wall / baseline_wall,
            baseline_wall / ip_move
        );
    }
}

#[test]
fn every_check_in_the_guest_script_reported_and_passed() {
    let script = include_str!("../vm/init.sh");
    let names: Vec<&str> = script
        .lines()
        .filter_map(|l| l.strip_prefix("check "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(
        names.len() >= 20,
        "the guest script has only {} checks",
        names.len()
    );
    assert_passed(&names);
    let run = run();
    let failed: Vec<_> = run
        .results
        .iter()
        .filter(|(_, (ok, _))| !ok)
        .map(|(n, (_, d))| format!("{n}: {d}"))
        .collect();
    assert!(
        failed.is_empty(),
        "{}\n--- guest serial console ---\n{}",
        failed.join("\n"),
        run.log
    );
}
