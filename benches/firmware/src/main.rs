//! The smallest useful firmware program: connect with a device connection string and send
//! telemetry, each message acknowledged by the hub. It uses nothing beyond MQTT over TLS, so it
//! depends on ironhub without default features; docs/benchmarks.md ("Size") reports its stripped
//! size with the `min-size` profile:
//!
//! ```sh
//! cargo build --profile min-size -p telemetry-min
//! ```
//!
//! Env: `IOTHUB_DEVICE_CONNECTION_STRING`; optional `IRONHUB_CA_FILE` (PEM of a private root such
//! as the emulator's), `IRONHUB_MQTT_PORT`, `TELEMETRY_COUNT` (default 3).

use ironhub::blocking::Client;
use ironhub::{ClientOptions, Message};

fn main() {
    let var = |name: &str| std::env::var(name).ok();
    let Some(cs) = var("IOTHUB_DEVICE_CONNECTION_STRING") else {
        eprintln!("set IOTHUB_DEVICE_CONNECTION_STRING");
        std::process::exit(2);
    };
    let mut options = ClientOptions::default();
    if let Some(path) = var("IRONHUB_CA_FILE") {
        options.server_verification_cert = Some(std::fs::read_to_string(path).expect("read IRONHUB_CA_FILE"));
    }
    if let Some(port) = var("IRONHUB_MQTT_PORT").and_then(|p| p.parse().ok()) {
        options.mqtt_port = port;
    }
    let count: u32 = var("TELEMETRY_COUNT").and_then(|n| n.parse().ok()).unwrap_or(3);

    let client = match Client::create_from_connection_string(&cs, options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("create: {e}");
            std::process::exit(1);
        }
    };
    let mut sent = 0;
    for i in 0..count {
        let mut m = Message::new(format!("{{\"reading\":{i},\"temperature\":{:.1}}}", 20.0 + f64::from(i) * 0.5));
        m.content_type = Some("application/json".into());
        m.content_encoding = Some("utf-8".into());
        match client.send_message(&m) {
            Ok(()) => sent += 1,
            Err(e) => eprintln!("send: {e}"),
        }
    }
    println!("sent {sent} messages");
    let _ = client.shutdown();
    std::process::exit(if sent == count { 0 } else { 1 });
}
