//! Owns how every HTTPS answer is built: JSON bodies and the IoT Hub error format
//! (`iothub-errorcode` header plus a `Message` field holding a JSON string).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::hub::{now_iso, HubError};

pub type Reply = Response<Full<Bytes>>;

const JSON: &str = "application/json; charset=utf-8";

pub fn json_with_status(status: StatusCode, body: &Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(serde_json::to_vec(body).unwrap_or_default())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    reply
}

pub fn ok(body: &Value) -> Reply {
    json_with_status(StatusCode::OK, body)
}

/// 200 with an `ETag` header (quoted, as IoT Hub sends it) taken from the body's `etag`.
pub fn ok_with_etag(body: &Value) -> Reply {
    let mut reply = ok(body);
    if let Some(tag) = body.get("etag").and_then(Value::as_str) {
        if let Ok(v) = HeaderValue::from_str(&format!("\"{tag}\"")) {
            reply.headers_mut().insert(http::header::ETAG, v);
        }
    }
    reply
}

pub fn no_content() -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::NO_CONTENT;
    reply
}

/// IoT Hub's error shape: the details are a JSON document serialized into `Message`.
pub fn error(e: &HubError) -> Reply {
    let tracking_id = format!("{:032x}", rand::random::<u128>());
    let inner = ironhub_protocol::hub_error::details(e.code, &tracking_id, &e.message, &now_iso());
    let body = ironhub_protocol::hub_error::https_body(&inner);
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut reply = json_with_status(status, &body);
    reply.headers_mut().insert("iothub-errorcode", HeaderValue::from_static(e.name()));
    reply
}
