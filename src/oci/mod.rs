//! The OCI formats the runtime speaks: the state on a hook's stdin, the bundle's config.json, runc's argv.

pub mod cdi;
pub mod config;
pub mod runc_args;
pub mod state;
