//! Test builds only (feature `fault-injection`, which `make test` turns on and a release build never has):
//! createRuntime stops at the step `WG_OCI_HOOK_PAUSE_AT` names, says so by writing the step to
//! `WG_OCI_HOOK_PAUSED_FILE`, and waits there to be killed, as runc kills a hook at its timeout. The crash tests
//! (`tests/e2e/crash.rs`) then check that `gc`, or the next start, takes down what it had made.

use std::time::Duration;

pub fn pause_at(step: &str) {
    if std::env::var("WG_OCI_HOOK_PAUSE_AT").as_deref() != Ok(step) {
        return;
    }
    if let Ok(file) = std::env::var("WG_OCI_HOOK_PAUSED_FILE") {
        let _ = std::fs::write(file, step);
    }
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}
