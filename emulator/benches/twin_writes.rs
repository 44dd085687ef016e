//! Cost of one durable twin write as the registry grows: a hub on a state directory (SQLite
//! store, synchronous=FULL) with 1,000 and then 50,000 devices; each write is a reported-properties
//! PATCH of one device, awaited until committed (what a device waits for before its 204).
//! Run with `cargo bench -p ironhub-emulator --bench twin_writes`; env `TWIN_DEVICES` (default
//! 50000) and `TWIN_WRITES` (default 300) per size.

use std::time::{Duration, Instant};

use ironhub_emulator::hub::{Hub, HubConfig};
use ironhub_emulator::Identity;
use serde_json::json;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Mean time of `writes` sequential durable twin writes spread over the first `devices` devices.
async fn measure(hub: &Hub, devices: usize, writes: usize) -> Duration {
    let started = Instant::now();
    for i in 0..writes {
        let id = Identity::device(format!("dev{}", (i * 7919) % devices));
        hub.patch_reported(&id, &json!({"n": i, "blob": "x".repeat(200)})).expect("patch");
        hub.flushed().await;
    }
    started.elapsed() / writes as u32
}

async fn grow(hub: &Hub, from: usize, to: usize) {
    let started = Instant::now();
    for i in from..to {
        hub.create_device(&format!("dev{i}")).expect("create");
    }
    hub.flushed().await;
    println!("twin_writes: registered devices {from}..{to} in {:.1?}", started.elapsed());
}

fn main() {
    let (devices, writes) = (env_or("TWIN_DEVICES", 50_000), env_or("TWIN_WRITES", 300));
    let dir = std::env::temp_dir().join(format!("ironhub-twin-bench-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let hub = Hub::new(HubConfig { hostname: "localhost".into(), state_dir: Some(dir.clone()), ..Default::default() }).expect("hub");
        let small = devices.min(1000);
        grow(&hub, 0, small).await;
        let at_small = measure(&hub, small, writes).await;
        grow(&hub, small, devices).await;
        let at_large = measure(&hub, devices, writes).await;
        println!("twin_writes: {writes} durable twin writes: {at_small:.2?} each with {small} devices, {at_large:.2?} each with {devices} devices");
        hub.close_store();
    });
    let _ = std::fs::remove_dir_all(dir);
}
