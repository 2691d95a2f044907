//! wg-oci-hook: an OCI runtime hook that gives a container a WireGuard tunnel as its network before its
//! workload starts, and takes it away when the container stops. See DESIGN.md for the flow.

pub mod annotations;
pub mod atomic_file;
pub mod cli;
pub mod command;
pub mod container_file;
pub mod deadline;
pub mod dns;
pub mod firewall;
pub mod hook;
pub mod install;
pub mod key;
pub mod link;
pub mod names;
pub mod netns;
pub mod policy;
pub mod private_dir;
pub mod private_file;
pub mod process;
pub mod profile;
pub mod provider;
pub mod record;
pub mod regular_file;
pub mod runtime_wrapper;
pub mod state;
pub mod wg;
pub mod wgquick;
