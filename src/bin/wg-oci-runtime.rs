//! wg-oci-runtime: a runc wrapper that adds wg-oci-hook's hooks to enabled containers (see `runtime`).

fn main() -> std::process::ExitCode {
    wg_oci_hook::runtime::run(std::env::args().collect())
}
