//! A pool of wg-quick files for the lab's server (`[profiles.NAME] pool = "DIR"`: every `*.conf` in DIR is one
//! lease): each file its own private key and address `10.77.1.N/32` (N = 1..), the lab's server as peer. The
//! server accepts every one of them as a peer of its own, and routes 10.77.1.0/24 into its tunnel so that the
//! responder on 10.77.0.1:8080 answers them.

use super::{Lab, LabProfile, SERVER_PORT, SERVER_UNDERLAY};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

/// The pool's addresses: `10.77.1.N/32`, N = 1..=size.
pub const POOL_PREFIX: &str = "10.77.1";

/// A pool the lab wrote and its server accepts.
#[derive(Clone, Debug)]
pub struct LabPool {
    /// The directory of `*.conf` files (mode 0700, files 0600).
    pub dir: PathBuf,
    /// Each lease: (file, its tunnel address without a prefix length, its public key).
    pub leases: Vec<(PathBuf, String, String)>,
}

impl LabPool {
    /// The profile `name` that leases from this pool: `pool = "DIR"`.
    pub fn profile(&self, name: &str) -> LabProfile {
        LabProfile::new(name, PathBuf::new())
            .with("pool", &super::toml_str(&self.dir.to_string_lossy()))
    }

    /// The tunnel addresses of every lease, in order (10.77.1.1, 10.77.1.2, ...).
    pub fn addresses(&self) -> Vec<String> {
        self.leases.iter().map(|(_, a, _)| a.clone()).collect()
    }
}

impl Lab {
    /// Writes `<lab>/<name>/` with `size` wg-quick files `lease-N.conf` (N = 1..=size, at most 254), each with a
    /// fresh private key, `Address = 10.77.1.N/32`, the lab's DNS, and the lab's server as peer (AllowedIPs
    /// 0.0.0.0/0, ::/0); adds every one of them to the lab's server as a peer (allowed 10.77.1.N/32) and routes
    /// 10.77.1.0/24 into the server's tunnel.
    pub fn write_pool(&self, name: &str, size: usize) -> LabPool {
        assert!((1..=254).contains(&size), "a pool of 1 to 254 leases");
        let dir = self.dir.join(name);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mut leases = Vec::new();
        let mut wg_set: Vec<String> = vec!["wg".into(), "set".into(), self.server_if.clone()];
        for n in 1..=size {
            let private = self.genkey();
            let public = self.pubkey(&private);
            let address = format!("{POOL_PREFIX}.{n}");
            let mut config = self.client_config();
            config.private_key = private;
            config.addresses = vec![format!("{address}/32")];
            config.endpoint = format!("{SERVER_UNDERLAY}:{SERVER_PORT}");
            let file = dir.join(format!("lease-{n}.conf"));
            super::write_file(&file, &config.render(), 0o600);
            wg_set.extend([
                "peer".into(),
                public.clone(),
                "allowed-ips".into(),
                format!("{address}/32"),
            ]);
            leases.push((file, address, public));
        }
        let s = self.server_ns.clone();
        let wg_set: Vec<&str> = wg_set.iter().map(String::as_str).collect();
        self.must_in(&s, &wg_set);
        self.must_ip(
            &s,
            &[
                "route",
                "add",
                &format!("{POOL_PREFIX}.0/24"),
                "dev",
                &self.server_if,
            ],
        );
        LabPool { dir, leases }
    }

    /// The public keys of the peers the lab's server has (`wg show <if> peers`).
    pub fn server_peers(&self) -> Vec<String> {
        let s = self.server_ns.clone();
        let out = self.must_in(&s, &["wg", "show", self.server_if.as_str(), "peers"]);
        out.stdout.split_whitespace().map(String::from).collect()
    }
}
