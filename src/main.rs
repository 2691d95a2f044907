//! `wg-oci-hook`: the OCI hook binary. Everything lives in the library; see `cli::run`.
fn main() -> std::process::ExitCode {
    wg_oci_hook::cli::run(std::env::args().skip(1))
}
