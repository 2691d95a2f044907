//! The lab as `benches/container_start.rs` includes it (by this path): all of `lab.rs`, of which the benchmark
//! times a few parts. The tests (`tests/e2e`) include `lab.rs` itself, where every item must be used.

#![allow(dead_code, unused_imports)]

#[path = "lab.rs"]
mod all;

pub use all::*;
