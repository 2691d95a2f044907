//! PIA's server list (`serverlist::verify_and_parse`): one JSON line, a blank line, a base64 RSA-SHA256
//! signature of the line; servers found by service, each with its group's port. An input that ends in
//! `\n\nSIGN` is signed here with the unit tests' key (so the fuzzer reaches the JSON behind a valid
//! signature); any other input must fail the signature check.
#![no_main]

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use std::sync::OnceLock;
use wg_oci_hook::provider::pia::serverlist::{verify_and_parse, ServerList};

const SIGN: &[u8] = b"\n\nSIGN";

fn key() -> &'static RsaKeyPair {
    static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaKeyPair::from_der(include_bytes!(
            "../../src/provider/pia/testdata/list-key.der"
        ))
        .expect("the unit tests' list key")
    })
}

fn check(result: &Result<ServerList, String>) {
    match result {
        Ok(list) => {
            for region in &list.regions {
                assert!(list.region(&region.id).is_some());
                let mut servers = region.servers.wg.iter().chain(&region.servers.meta);
                assert!(servers.all(|s| s.port != 0), "a server without a port");
            }
        }
        Err(e) => common::assert_one_line(e),
    }
}

fuzz_target!(|data: &[u8]| {
    let key = key();
    let public = key.public().as_ref();
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let parsed = ServerList::parse(line);
    check(&parsed);
    match data.strip_suffix(SIGN) {
        Some(signed) if !signed.contains(&b'\n') => {
            let mut signature = vec![0; key.public().modulus_len()];
            key.sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signed,
                &mut signature,
            )
            .expect("signing");
            let mut body = signed.to_vec();
            body.extend_from_slice(b"\n\n");
            body.extend_from_slice(STANDARD.encode(&signature).as_bytes());
            body.push(b'\n');
            let verified = verify_and_parse(&body, public);
            check(&verified);
            assert_eq!(
                verified.is_ok(),
                parsed.is_ok(),
                "a signed list reads as the line does"
            );
        }
        _ => {
            let verified = verify_and_parse(data, public);
            check(&verified);
            assert!(verified.is_err(), "an unsigned list was accepted");
        }
    }
});
