//! The end-to-end tests, one test binary so the lab is compiled once: real podman, runc, dockerd, containerd and
//! qemu against the lab (`tests/lab`, see `lab.rs`) and the kernel-backend VM (`tests/vm`). Each module is
//! one area; a test's name is `module::test` (`cargo test podman::` runs one area).
//!
//! Tests of different modules run side by side in this one process (`--test-threads=2`), so whatever a test
//! checks machine-wide must be scoped to its own lab (its netns, its dir, its ids), as the lab's own checks are:
//! every lab is uniquely named, and no test may count what another test's lab has. Process-wide state lives
//! only where it is shared on purpose: the kernel VM boots once for all of `kernel_vm` (a `OnceLock` there),
//! and the lab's counters only make names unique.
//!
//! Needs root and the Debian packages `tests/install-deps.sh` installs; every test fails (never skips) without
//! them.

#[path = "../lab/lab.rs"]
mod lab;
#[path = "../vm/mod.rs"]
mod vm;

mod adversarial;
mod cdi;
mod check;
mod cli;
mod crash;
mod daemon;
mod deadline;
mod docker;
mod docker_lab;
mod enable;
mod examples;
mod inbound;
mod install;
mod kernel_vm;
mod kubernetes;
mod leaks;
mod logs;
mod long_lived;
mod many;
mod pia;
mod pia_lab;
mod podman;
mod runtime_wrapper;
mod shared_netns;
mod state_dir;
mod status;
