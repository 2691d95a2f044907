//! System adapters: the kernel and the filesystem as the layers above use them. Nothing here knows about
//! policies, profiles or containers' records; each module owns one kind of system object.

pub mod atomic_file;
pub mod command;
pub mod container_file;
pub mod deadline;
pub mod lock;
pub mod log_sink;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod private_dir;
pub mod private_file;
pub mod process;
pub mod regular_file;
pub mod sysctl;
