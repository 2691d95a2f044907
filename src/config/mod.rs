//! Parsers of what operators and container users write: the policy, wg-quick files, annotations. They check
//! and describe; they run nothing.

pub mod admission;
pub mod annotations;
pub mod file_error;
pub mod health;
pub mod pia_credentials;
pub mod policy;
pub mod ports;
pub mod wgquick;
