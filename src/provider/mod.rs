//! Profiles whose tunnel comes from a VPN provider's API instead of a file.

pub mod pia;
