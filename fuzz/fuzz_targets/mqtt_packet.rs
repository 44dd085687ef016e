//! The emulator's MQTT side, as a device would reach it: the input's bytes (after the first) are
//! written to `Broker::serve_connection` over an in-memory stream; when the first byte is odd a
//! valid CONNECT of device `fuzz` goes first, so the fuzzer also explores the authenticated
//! session (publishes, subscriptions, twin and method topics, acks). The broker must neither
//! panic nor hang.
#![no_main]

use ironhub_fuzz::{assert_connect_is_accepted, harness, play_connection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    assert_connect_is_accepted();
    let h = harness();
    let mut input = Vec::with_capacity(h.connect.len() + rest.len());
    if mode & 1 == 1 {
        input.extend_from_slice(&h.connect);
    }
    input.extend_from_slice(rest);
    play_connection(&input, |server| h.broker.clone().serve_connection(server, Vec::new()));
});
