//! The emulator's MQTT side, as a device would reach it: the input's bytes (after the first) are
//! written to `Broker::serve_connection` over an in-memory stream; when the first byte is odd a
//! valid CONNECT of device `fuzz` goes first, so the fuzzer also explores the authenticated
//! session (publishes, subscriptions, twin and method topics, acks). The broker must neither
//! panic nor hang.
#![no_main]

use ironhub_fuzz::{harness, INPUT_BUDGET};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let h = harness();
    let mut input = Vec::with_capacity(h.connect.len() + rest.len());
    if mode & 1 == 1 {
        input.extend_from_slice(&h.connect);
    }
    input.extend_from_slice(rest);
    h.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(h.broker.clone().serve_connection(server, Vec::new()));
        let exchange = async {
            client.write_all(&input).await?;
            client.shutdown().await?;
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(INPUT_BUDGET, exchange).await;
        drop(client);
        let served = tokio::time::timeout(INPUT_BUDGET, serving).await.expect("the broker ends a connection whose client went away");
        if let Err(e) = served {
            std::panic::resume_unwind(e.into_panic());
        }
    });
});
