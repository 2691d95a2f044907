//! wg-oci-hook: an OCI runtime hook that gives a container a WireGuard tunnel as its network before its
//! workload starts, and takes it away when the container stops. ARCHITECTURE.md draws the layers:
//!
//! - entry points: `cli` (the hook binary's argv) and `runtime` (the runc wrapper);
//! - orchestration: `hook` (createRuntime and poststop, each step undone in reverse);
//! - parsers and providers: `config` (policy, wg-quick, annotations), `oci` (state, config.json, runc's argv),
//!   `provider` (VPN providers' APIs);
//! - system adapters: `wg` (WireGuard backends and keys) and `sys` (netlink, netns, nft, processes, files).
//!
//! Imports point down that list, never up.

pub mod cli;
pub mod config;
pub mod hook;
pub mod oci;
pub mod provider;
pub mod runtime;
pub mod sys;
pub mod wg;

#[cfg(test)]
mod architecture;
