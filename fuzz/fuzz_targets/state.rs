//! The OCI state a runtime writes to the hook's stdin (`ContainerState::read`).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use wg_oci_hook::oci::state::{validate_container_id, ContainerState};

fuzz_target!(|data: &[u8]| {
    match ContainerState::read(data) {
        Ok(state) => {
            // The id names files under the state dir: only runc's id alphabet, never a path.
            assert!(
                validate_container_id(&state.id).is_ok(),
                "id {:?}",
                state.id
            );
            assert!(!state.id.contains('/') && state.id != "." && state.id != "..");
            if let Some(pid) = state.live_pid() {
                assert!(pid > 0 && pid <= i32::MAX as u32, "pid {pid}");
            }
        }
        Err(e) => common::assert_clean_line(&e.to_string()),
    }
});
