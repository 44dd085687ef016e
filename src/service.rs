//! A small IoT Hub service client over HTTPS with a policy SAS token: twins (get, update with
//! `If-Match` — 412 is its own error —, replace) and direct methods for devices and modules, plus a
//! raw `request` for the rest (registry, the emulator's `/emulator/...` control API).

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::auth::unix_now;
use crate::error::{Error, Result};
use crate::transport::http;

const API_VERSION: &str = "2021-04-12";
/// Service tokens live an hour and are replaced this long before they expire.
const TOKEN_TTL: u64 = 3600;
const TOKEN_MARGIN: u64 = 300;

/// Options of the service client.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// PEM text of the trusted root(s); `None` → web PKI.
    pub ca_pem: Option<String>,
    /// Bound on every request that has no longer bound of its own.
    pub timeout: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions { ca_pem: None, timeout: Duration::from_secs(60) }
    }
}

/// Body of a direct method call.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectMethodRequest {
    pub method_name: String,
    pub payload: Value,
    /// 5..=300 s on the hub (default 30).
    pub response_timeout_in_seconds: u64,
    /// 0..=300 s (default 0).
    pub connect_timeout_in_seconds: u64,
}

impl DirectMethodRequest {
    pub fn new(method_name: impl Into<String>, payload: Value) -> Self {
        DirectMethodRequest { method_name: method_name.into(), payload, response_timeout_in_seconds: 30, connect_timeout_in_seconds: 0 }
    }
}

/// What the device answered.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectMethodResult {
    pub status: i32,
    pub payload: Value,
}

/// IoT Hub service client (policy connection string, e.g. `iothubowner`).
pub struct ServiceClient {
    host: String,
    key: String,
    policy: String,
    http: http::HttpsClient,
    timeout: Duration,
    token: Mutex<Option<(String, u64)>>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient").field("host", &self.host).field("policy", &self.policy).finish()
    }
}

fn enc(s: &str) -> String {
    ironhub_protocol::encoding::percent_encode(s)
}

fn twin_path(device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(m) => format!("/twins/{}/modules/{}", enc(device_id), enc(m)),
        None => format!("/twins/{}", enc(device_id)),
    }
}

/// ETags travel quoted in `If-Match`; `*` is the wildcard (quoted as the SDK sends it).
fn quoted(etag: &str) -> String {
    let bare = etag.trim().trim_matches('"');
    format!("\"{bare}\"")
}

impl ServiceClient {
    /// `HostName=..;SharedAccessKeyName=..;SharedAccessKey=..` (HostName may carry a port).
    pub fn from_connection_string(connection_string: &str, options: ServiceOptions) -> Result<ServiceClient> {
        let cs = ironhub_protocol::connection_string::ConnectionString::parse(connection_string)?;
        let (Some(policy), Some(key)) = (cs.shared_access_key_name.clone(), cs.shared_access_key.clone()) else {
            return Err(Error::invalid("a service connection string needs SharedAccessKeyName and SharedAccessKey"));
        };
        ironhub_protocol::sas::decode_key(&key)?;
        let http = http::https_client(options.ca_pem.as_deref(), "", None, options.timeout)?;
        Ok(ServiceClient { host: cs.host_name, key, policy, http, timeout: options.timeout, token: Mutex::new(None) })
    }

    /// The hub host (as in the connection string).
    pub fn host(&self) -> &str {
        &self.host
    }

    fn token(&self) -> Result<String> {
        let mut t = self.token.lock().unwrap_or_else(|p| p.into_inner());
        let now = unix_now();
        if let Some((tok, exp)) = &*t {
            if *exp > now + TOKEN_MARGIN {
                return Ok(tok.clone());
            }
        }
        let exp = now + TOKEN_TTL;
        let tok = ironhub_protocol::sas::generate_token(&self.host, &self.key, Some(&self.policy), exp)?;
        *t = Some((tok.clone(), exp));
        Ok(tok)
    }

    fn url(&self, path_and_query: &str) -> String {
        let sep = if path_and_query.contains('?') { '&' } else { '?' };
        if path_and_query.contains("api-version=") {
            format!("https://{}{}", self.host, path_and_query)
        } else {
            format!("https://{}{}{sep}api-version={API_VERSION}", self.host, path_and_query)
        }
    }

    async fn call(
        &self,
        method: http::Method,
        path_and_query: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        timeout: Duration,
    ) -> Result<http::HttpAnswer> {
        let mut req = self
            .http
            .request(method, self.url(path_and_query))
            .timeout(timeout)
            .header("Authorization", self.token()?)
            .header("User-Agent", format!("ironhub-service/{}", crate::VERSION));
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json; charset=utf-8").body(b.to_string());
        }
        if let Some(e) = if_match {
            req = req.header("If-Match", quoted(e));
        }
        http::send(req).await
    }

    fn check(answer: http::HttpAnswer) -> Result<Value> {
        match answer.status {
            s if s < 300 => Ok(answer.body),
            412 => Err(Error::PreconditionFailed(http::hub_error_message(&answer.body))),
            401 => Err(Error::Credential(format!("the hub refused the service token: {}", http::hub_error_message(&answer.body)))),
            s => Err(Error::Service { status: s, message: http::hub_error_message(&answer.body) }),
        }
    }

    /// The full twin of a device or module.
    pub async fn get_twin(&self, device_id: &str, module_id: Option<&str>) -> Result<Value> {
        let a = self.call(http::Method::GET, &twin_path(device_id, module_id), None, None, self.timeout).await?;
        Self::check(a)
    }

    /// `PATCH /twins/{id}`: merges `patch` (tags, properties.desired); `etag` → `If-Match`
    /// (mismatch → `Error::PreconditionFailed`). Returns the updated twin.
    pub async fn update_twin(&self, device_id: &str, module_id: Option<&str>, patch: &Value, etag: Option<&str>) -> Result<Value> {
        let a = self.call(http::Method::PATCH, &twin_path(device_id, module_id), Some(patch), etag, self.timeout).await?;
        Self::check(a)
    }

    /// `PUT /twins/{id}`: replaces tags and desired properties.
    pub async fn replace_twin(&self, device_id: &str, module_id: Option<&str>, twin: &Value, etag: Option<&str>) -> Result<Value> {
        let a = self.call(http::Method::PUT, &twin_path(device_id, module_id), Some(twin), etag, self.timeout).await?;
        Self::check(a)
    }

    /// Invokes a direct method on a device or module and returns its answer.
    pub async fn invoke_method(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        request: &DirectMethodRequest,
    ) -> Result<DirectMethodResult> {
        if request.method_name.is_empty() {
            return Err(Error::invalid("method_name must not be empty"));
        }
        let body = serde_json::json!({
            "methodName": request.method_name,
            "payload": request.payload,
            "responseTimeoutInSeconds": request.response_timeout_in_seconds,
            "connectTimeoutInSeconds": request.connect_timeout_in_seconds,
        });
        let timeout = Duration::from_secs(request.response_timeout_in_seconds + request.connect_timeout_in_seconds + 10);
        let path = format!("{}/methods", twin_path(device_id, module_id));
        let a = self.call(http::Method::POST, &path, Some(&body), None, timeout).await?;
        let v = Self::check(a)?;
        let status = v.get("status").and_then(Value::as_i64).unwrap_or(0) as i32;
        Ok(DirectMethodResult { status, payload: v.get("payload").cloned().unwrap_or(Value::Null) })
    }

    /// Any call: `method` ("GET", "PUT", ...), path with query (api-version added when missing),
    /// optional JSON body → (status, JSON body or Null). Statuses are not turned into errors.
    pub async fn request(&self, method: &str, path_and_query: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let m = http::Method::from_bytes(method.as_bytes()).map_err(|_| Error::invalid(format!("bad HTTP method {method:?}")))?;
        // Long-polls (`timeoutSeconds=`) get their own bound on top of the default.
        let a = self.call(m, path_and_query, body, None, self.timeout + Duration::from_secs(60)).await?;
        Ok((a.status, a.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_sent_quoted_once() {
        assert_eq!(quoted("AAAAAAAAAAE="), "\"AAAAAAAAAAE=\"");
        assert_eq!(quoted("\"AAAAAAAAAAE=\""), "\"AAAAAAAAAAE=\"");
        assert_eq!(quoted("*"), "\"*\"");
    }

    #[test]
    fn bad_service_connection_strings_are_invalid_arguments() {
        let e = ServiceClient::from_connection_string("HostName=h;DeviceId=d;SharedAccessKey=a2V5", ServiceOptions::default()).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        let e = ServiceClient::from_connection_string("HostName=h;SharedAccessKeyName=p;SharedAccessKey=!!!", ServiceOptions::default()).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        assert!(!e.to_string().contains("!!!"));
    }
}
