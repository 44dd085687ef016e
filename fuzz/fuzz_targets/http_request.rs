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
use ironhub_fuzz::{harness, play_connection};
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

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let h = harness();
    let input = if mode & 1 == 1 { splice_auth(rest, &h.service_authorization) } else { rest.to_vec() };
    let ctx = Arc::new(Context { hub: h.hub.clone(), broker: h.broker.clone() });
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(ctx, req, Vec::new()).await) }
    });
    // A malformed request is hyper's error to answer; a panic in the handler is a finding.
    play_connection(&input, |server| hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server), service));
});
