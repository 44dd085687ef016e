//! IoT Hub's error bodies, written by the hub and read by clients: over HTTPS the details are a
//! JSON document serialized into `Message` (`{"Message": "{\"errorCode\":..,\"message\":..}",
//! "ExceptionMessage": ""}`); over MQTT (twin responses) they are the inner document itself.

use serde_json::{json, Value};

/// The details document: `{"errorCode", "trackingId", "message", "timestampUtc"}`.
pub fn details(code: u32, tracking_id: &str, message: &str, timestamp_utc: &str) -> Value {
    json!({"errorCode": code, "trackingId": tracking_id, "message": message, "timestampUtc": timestamp_utc})
}

/// The HTTPS body around a details document.
pub fn https_body(details: &Value) -> Value {
    json!({"Message": details.to_string(), "ExceptionMessage": ""})
}

/// The MQTT (twin response) body: `{"errorCode", "message"}`.
pub fn mqtt_body(code: u32, message: &str) -> Value {
    json!({"errorCode": code, "message": message})
}

/// `"{code}: {message}"` out of any of these shapes (or the body itself when it is none of them).
pub fn message_of(body: &Value) -> String {
    let outer = body.get("Message").or_else(|| body.get("message"));
    let inner = match outer {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(inner) if inner.is_object() => inner,
            _ => return with_code(body.get("errorCode"), s),
        },
        Some(_) | None => return body.to_string(),
    };
    let msg = inner.get("message").and_then(Value::as_str).unwrap_or_default();
    with_code(inner.get("errorCode"), msg)
}

/// `message_of` for raw bytes (non-JSON bodies come back as text).
pub fn message_of_body(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => message_of(&v),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

fn with_code(code: Option<&Value>, msg: &str) -> String {
    match code {
        Some(c) => format!("{c}: {msg}"),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_read_back_as_code_and_message() {
        let d = details(404001, "t", "Device not found", "2026-01-01T00:00:00Z");
        assert_eq!(message_of(&https_body(&d)), "404001: Device not found");
        assert_eq!(message_of(&mqtt_body(400027, "bad patch")), "400027: bad patch");
        assert_eq!(message_of_body(b"{\"errorCode\":1,\"message\":\"m\"}"), "1: m");
        assert_eq!(message_of_body(b"plain"), "plain");
        assert_eq!(message_of(&json!({"Message": "not json"})), "not json");
        assert_eq!(message_of(&json!({"other": 1})), "{\"other\":1}");
    }
}
