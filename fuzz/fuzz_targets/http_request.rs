//! The emulator's HTTPS side without the TLS: the input is written as raw HTTP/1.1 to hyper's
//! server with the emulator's own request handler (`http::handle`: request reading, routing,
//! the service and control APIs). When the first byte is odd, every `AUTH` in the input becomes
//! a valid service `Authorization` value, so the fuzzer reaches past the auth check. The handler
//! must neither panic nor hang.
#![no_main]

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ironhub_emulator::http::{handle, Context};
use ironhub_fuzz::{harness, play_connection, DEVICE};
use libfuzzer_sys::fuzz_target;

fn splice_auth(input: &[u8], auth: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 64);
    let mut i = 0;
    while i < input.len() {
        if input[i..].starts_with(b"AUTH") {
            out.extend_from_slice(auth.as_bytes());
            i += 4;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// Serves `input` with the emulator's handler behind hyper's HTTP/1.1 server; returns the answer.
fn play(input: &[u8]) -> Vec<u8> {
    static CTX: std::sync::OnceLock<Arc<Context>> = std::sync::OnceLock::new();
    let ctx = CTX
        .get_or_init(|| {
            let h = harness();
            Arc::new(Context::in_memory(h.hub.clone(), h.broker.clone()).expect("in-memory context"))
        })
        .clone();
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(ctx, req, Vec::new()).await) }
    });
    // A malformed request is hyper's error to answer; a panic in the handler is a finding.
    // half_close: the player closes its side after the request; the answer must still be written.
    play_connection(input, |server| hyper::server::conn::http1::Builder::new().half_close(true).serve_connection(TokioIo::new(server), service))
}

/// Proves once per fuzzing process that the spliced `Authorization` is accepted, so a change to the
/// emulator's service auth cannot silently leave the fuzzer at the 401.
fn assert_auth_is_accepted() {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        let request = format!("GET /devices/{DEVICE}?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\nAuthorization: AUTH\r\n\r\n");
        let answer = play(&splice_auth(request.as_bytes(), &harness().service_authorization));
        assert!(answer.starts_with(b"HTTP/1.1 200"), "the fuzz harness's Authorization was refused: {}", String::from_utf8_lossy(&answer));
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    assert_auth_is_accepted();
    let input = if mode & 1 == 1 { splice_auth(rest, &harness().service_authorization) } else { rest.to_vec() };
    play(&input);
});
