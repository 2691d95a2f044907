//! Where the hook's log lines go.

use std::io::Write;

/// Log lines at the policy's level (warn by default) to stderr, which runc shows when the hook fails.
pub fn init(policy_level: Option<log::LevelFilter>) {
    let mut builder = env_logger::Builder::new();
    let level = policy_level.unwrap_or(log::LevelFilter::Warn);
    // Our own messages at the policy's level; the HTTP and TLS crates' at warn at most: their debug and trace
    // output is theirs to word, and could carry a URL with a token in it. RUST_LOG can still ask for it.
    builder
        .filter_level(level.min(log::LevelFilter::Warn))
        .filter_module("wg_oci_hook", level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder
        .format(|buf, record| {
            writeln!(
                buf,
                "wg-oci-hook[{}]: {}: {}",
                std::process::id(),
                record.level(),
                record.args()
            )
        })
        .target(env_logger::Target::Stderr)
        .try_init()
        .ok();
}
