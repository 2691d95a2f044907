//! wg-oci-hook: an OCI runtime hook that gives a container a WireGuard tunnel as its network before its
//! workload starts, and takes it away when the container stops. See DESIGN.md for the flow.

pub mod annotations;
pub mod cli;
pub mod dns;
pub mod firewall;
pub mod hook;
pub mod install;
pub mod key;
pub mod policy;
pub mod profile;
pub mod provider;
pub mod record;
pub mod runtime_wrapper;
pub mod state;
pub mod sys;
pub mod wg;
pub mod wgquick;
