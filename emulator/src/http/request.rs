//! Owns turning a hyper request into what handlers need: decoded path segments, query
//! parameters, a few headers, and a size-limited body parsed as JSON (400006 when it is not).

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Limited};
use ironhub_protocol::encoding::percent_decode as decode;
use serde_json::Value;

use crate::hub::error::{HubError, IOTHUB_FORMAT_ERROR, MESSAGE_TOO_LARGE};

/// Larger than any legal body (100 bulk devices, a 128 KB method payload in JSON, a 64 KB C2D
/// body in base64), small enough that a bad client cannot make us buffer much.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A client that sends its headers and then trickles (or withholds) the body is cut off.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct ApiRequest {
    pub method: Method,
    pub segments: Vec<String>,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client certificate chain of the TLS connection (leaf first; empty without one): how
    /// X.509 devices authenticate their HTTPS calls (file upload).
    pub peer_chain: Vec<Vec<u8>>,
}

impl ApiRequest {
    /// Reads the whole request; a body that has not arrived within `body_timeout` is a 400.
    pub async fn read(req: http::Request<hyper::body::Incoming>, body_timeout: std::time::Duration) -> Result<ApiRequest, HubError> {
        let (parts, body) = req.into_parts();
        let body = tokio::time::timeout(body_timeout, Limited::new(body, MAX_BODY_BYTES).collect())
            .await
            .map_err(|_| HubError::invalid(format!("The request body did not arrive within {body_timeout:?}")))?
            .map_err(|_| HubError::new(MESSAGE_TOO_LARGE, format!("The request body is over {MAX_BODY_BYTES} bytes or broken")))?
            .to_bytes();
        let segments = parts.uri.path().split('/').filter(|s| !s.is_empty()).map(decode).collect();
        let query = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (decode(k), decode(&v.replace('+', " "))),
                None => (decode(p), String::new()),
            })
            .collect();
        Ok(ApiRequest { method: parts.method, segments, query, headers: parts.headers, body, peer_chain: Vec::new() })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn if_match(&self) -> Option<&str> {
        self.header("if-match")
    }

    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }

    /// The body as JSON; an empty body reads as `{}` (some SDK calls send none).
    pub fn json(&self) -> Result<Value, HubError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| HubError::new(IOTHUB_FORMAT_ERROR, format!("The request body is not valid JSON: {e}")))
    }

    pub fn query_u64(&self, name: &str) -> Result<Option<u64>, HubError> {
        match self.query.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| HubError::invalid(format!("Query parameter {name} must be a whole number"))),
        }
    }
}
