//! The hook's two stages: `create_runtime` builds the container's tunnel, each step undone in reverse if a later
//! one fails; `poststop` takes down whatever the container's record says was made. ARCHITECTURE.md draws the
//! flow step by step.

mod create;
#[cfg(all(feature = "fault-injection", not(test)))]
mod fault;
pub mod firewall;
pub mod gc;
pub mod lease;
mod mtu;
pub mod port_forward;
mod poststop;
pub mod record;
pub mod resolv_conf;
mod routing;
pub mod supervisor;
mod teardown;
pub mod tunnel;

#[cfg(test)]
mod tests;

pub use create::create_runtime;
pub use poststop::poststop;
pub use teardown::find_netns;

use std::fmt::Display;

/// One line for the engine's error output: which container, which step, why.
#[derive(Debug, thiserror::Error)]
#[error("container {container}: {step}: {cause}")]
pub struct HookError {
    pub container: String,
    pub step: &'static str,
    pub cause: String,
}

/// A step that failed, before the container's id is put in front.
#[derive(Debug)]
struct StepError {
    step: &'static str,
    cause: String,
}

impl StepError {
    fn of(self, container: &str) -> HookError {
        HookError {
            container: container.to_owned(),
            step: self.step,
            cause: self.cause,
        }
    }
}

/// `.step("what we were doing")?`: names the step a failure happened in.
trait Step<T> {
    fn step(self, step: &'static str) -> Result<T, StepError>;
}

impl<T, E: Display> Step<T> for Result<T, E> {
    fn step(self, step: &'static str) -> Result<T, StepError> {
        self.map_err(|e| StepError {
            step,
            cause: e.to_string(),
        })
    }
}
