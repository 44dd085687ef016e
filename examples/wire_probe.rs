//! Sends a list of messages with ironhub, for wire-compatibility tests that compare what the hub
//! records from ironhub and from azure-iot-device (tests/compat/test_wire_identity.py).
//!
//! Usage: `wire_probe <connection-string> <ca-pem-file> <mqtt-port> <messages.json>` where the JSON
//! is a list of `{"data", "message_id", "correlation_id", "user_id", "content_type",
//! "content_encoding", "output_name", "properties": {..}}` (all but `data` optional).

use std::time::Duration;

use ironhub::{blocking::Client, ClientOptions, Message};
use serde_json::Value;

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cs, ca_file, port, messages] = args.as_slice() else {
        return Err("usage: wire_probe <connection-string> <ca-pem-file> <mqtt-port> <messages.json>".into());
    };
    let ca = std::fs::read_to_string(ca_file).map_err(|e| format!("{ca_file}: {e}"))?;
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    let list: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(messages).map_err(|e| format!("{messages}: {e}"))?)
        .map_err(|e| format!("{messages}: {e}"))?;
    let options = ClientOptions {
        server_verification_cert: Some(ca),
        mqtt_port: port,
        operation_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let client = Client::create_from_connection_string(cs, options).map_err(|e| e.to_string())?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    for item in &list {
        let mut m = Message::new(text(item, "data").unwrap_or_default());
        m.message_id = text(item, "message_id");
        m.correlation_id = text(item, "correlation_id");
        m.user_id = text(item, "user_id");
        m.content_type = text(item, "content_type");
        m.content_encoding = text(item, "content_encoding");
        if let Some(props) = item.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                m.set_property(k.clone(), v.as_str().unwrap_or_default());
            }
        }
        match text(item, "output_name") {
            Some(o) => client.send_message_to_output(&m, &o),
            None => client.send_message(&m),
        }
        .map_err(|e| format!("send failed: {e}"))?;
    }
    client.shutdown().map_err(|e| e.to_string())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("wire_probe: {e}");
        std::process::exit(1);
    }
}
