//! The answers of PIA's servers: addKey (`parse_add_key_answer`), getSignature (`parse_signature_answer`),
//! bindPort (`parse_bind_port_answer`). The first byte picks the answer (mod 4); the rest is the body, except
//! for 2: a getSignature answer whose payload is the base64 of the rest (so the fuzzer works on the payload's
//! JSON directly).
#![no_main]

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use wg_oci_hook::provider::pia::api::{
    parse_add_key_answer, parse_bind_port_answer, parse_signature_answer, ApiError, Signature,
};

/// The public key we "sent" (the seeds' peer_pubkey).
const OURS: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
/// Two server texts of 120 characters, each escaped (at most 10 bytes a character) plus the call's name.
const MAX_ERROR: usize = 2600;

fn check_error(e: &str) {
    common::assert_clean_line(e);
    common::assert_bounded(e, MAX_ERROR);
}

fn check_signature(result: Result<Signature, ApiError>) {
    match result {
        Ok(s) => assert_ne!(s.port, 0, "port 0 forwarded"),
        Err(e) => check_error(&e.to_string()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => match parse_add_key_answer("addKey on lab (192.0.2.1)", 200, body, OURS) {
            Ok(r) => assert_ne!(r.endpoint.port(), 0, "endpoint port 0"),
            Err(e) => check_error(&e.to_string()),
        },
        1 => check_signature(parse_signature_answer(
            "getSignature on lab (192.0.2.1)",
            body,
        )),
        2 => {
            let answer = serde_json::json!({
                "status": "OK",
                "payload": STANDARD.encode(body),
                "signature": "c2ln",
            });
            check_signature(parse_signature_answer(
                "getSignature on lab (192.0.2.1)",
                answer.to_string().as_bytes(),
            ));
        }
        _ => {
            if let Err(e) = parse_bind_port_answer("bindPort on lab (192.0.2.1)", body) {
                check_error(&e);
            }
        }
    }
});
