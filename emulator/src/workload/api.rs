//! Owns the calls of the IoT Edge workload API a module makes, answered as iotedged answers them:
//! `GET /trust-bundle` and `POST /modules/{moduleId}/genid/{generationId}/sign`, every one with an
//! `api-version` query parameter; failures are `{"message": ...}` with a 4xx status.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::request::ApiRequest;
use crate::http::response::{self, Reply};
use crate::hub::{AuthType, Hub, ModuleRecord};

/// The api-versions iotedged understands; modules send the one in `IOTEDGE_APIVERSION`.
const API_VERSIONS: &[&str] =
    &["2018-06-28", "2019-01-30", "2019-10-22", "2019-11-05", "2020-07-07", "2020-10-10", "2021-12-07", "2022-08-03"];

/// The api-version the emulator hands to modules (`IOTEDGE_APIVERSION`), as IoT Edge 1.x does.
pub const DEFAULT_API_VERSION: &str = "2019-01-30";

/// A failed call: a status and a message that names no key and no digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadError {
    pub status: StatusCode,
    pub message: String,
}

impl WorkloadError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        WorkloadError { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

/// The body of a sign call. `data` is base64 of the bytes to sign (for a SAS token, the string to sign).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignRequest {
    key_id: String,
    algo: String,
    data: String,
}

/// What the workload API answers with: the hub (module keys and generation ids) and the trust
/// bundle (the emulator's CA, which every server certificate of the emulator chains to).
pub struct WorkloadApi {
    hub: Arc<Hub>,
    trust_bundle: String,
}

impl WorkloadApi {
    pub fn new(hub: Arc<Hub>, trust_bundle: String) -> Self {
        WorkloadApi { hub, trust_bundle }
    }

    /// One HTTP request to one reply; never fails, never panics.
    pub async fn handle(&self, req: http::Request<hyper::body::Incoming>) -> Reply {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let result = match ApiRequest::read(req, crate::http::request::BODY_READ_TIMEOUT).await {
            Ok(req) => self.route(&req),
            Err(e) => Err(WorkloadError::new(StatusCode::PAYLOAD_TOO_LARGE, e.message)),
        };
        match result {
            Ok(body) => {
                // The path names a module and a generation, never a secret; the body holds the digest.
                log::debug!("workload: {method} {path} → 200");
                response::ok(&body)
            }
            Err(e) => {
                log::info!("workload: {method} {path} → {}: {}", e.status.as_u16(), e.message);
                response::json_with_status(e.status, &json!({"message": e.message}))
            }
        }
    }

    /// Routes on the path first, as iotedged does: an unknown path is 404 whatever the version.
    fn route(&self, req: &ApiRequest) -> Result<Value, WorkloadError> {
        let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["trust-bundle"] => {
                check_call(req, Method::GET)?;
                Ok(json!({"certificate": self.trust_bundle}))
            }
            ["modules", module_id, "genid", generation_id, "sign"] => {
                check_call(req, Method::POST)?;
                self.sign(module_id, generation_id, &req.body)
            }
            _ => Err(WorkloadError::not_found(format!("No such workload API resource: /{}", segments.join("/")))),
        }
    }

    fn sign(&self, module_id: &str, generation_id: &str, body: &[u8]) -> Result<Value, WorkloadError> {
        let request: SignRequest = serde_json::from_slice(body)
            .map_err(|e| WorkloadError::bad_request(format!("The sign request body is not valid: {e}")))?;
        if request.algo != "HMACSHA256" {
            return Err(WorkloadError::bad_request(format!("Unsupported algo '{}': only HMACSHA256", request.algo)));
        }
        let data = BASE64
            .decode(request.data.as_bytes())
            .map_err(|_| WorkloadError::bad_request("The sign request data is not valid base64"))?;
        let module = self.find_module(module_id, generation_id)?;
        if module.authentication.auth_type != AuthType::Sas {
            return Err(WorkloadError::bad_request(format!(
                "Module {module_id} on device {} does not authenticate with symmetric keys",
                module.device_id
            )));
        }
        let key = match request.key_id.as_str() {
            "primary" => &module.authentication.primary_key,
            "secondary" => &module.authentication.secondary_key,
            other => return Err(WorkloadError::bad_request(format!("Unknown keyId '{other}': use primary or secondary"))),
        };
        let digest = hmac_sha256(key, &data).ok_or_else(|| {
            WorkloadError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("The key of module {module_id} is not usable"))
        })?;
        Ok(json!({"digest": digest}))
    }

    /// The module `module_id` of generation `generation_id`, on whichever device holds it: one
    /// workload API serves every edge device of the emulator, and generation ids are unique.
    fn find_module(&self, module_id: &str, generation_id: &str) -> Result<ModuleRecord, WorkloadError> {
        let mut known = false;
        for device in self.hub.list_devices(None) {
            if let Ok(module) = self.hub.get_module(&device.device_id, module_id) {
                if module.generation_id == generation_id {
                    return Ok(module);
                }
                known = true;
            }
        }
        Err(WorkloadError::not_found(if known {
            // A stale generation id means the module was deleted and re-created since it started.
            format!("Module {module_id} has no generation {generation_id}")
        } else {
            format!("Module {module_id} not found")
        }))
    }
}

/// The method a resource allows, and a supported `api-version`.
fn check_call(req: &ApiRequest, allowed: Method) -> Result<(), WorkloadError> {
    if req.method != allowed {
        return Err(WorkloadError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not allowed here; use {allowed}", req.method)));
    }
    match req.query.get("api-version") {
        None => Err(WorkloadError::bad_request("The api-version query parameter is required")),
        Some(v) if API_VERSIONS.contains(&v.as_str()) => Ok(()),
        Some(v) => Err(WorkloadError::bad_request(format!("Unsupported api-version '{v}'"))),
    }
}

/// base64(HMAC-SHA256(base64decode(key), data)); `None` when the stored key is not base64.
fn hmac_sha256(key_base64: &str, data: &[u8]) -> Option<String> {
    ironhub_protocol::sas::sign_bytes(key_base64, data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_the_sas_signature_of_the_same_text() {
        let key = BASE64.encode(b"0123456789abcdef0123456789abcdef");
        let text = "localhost%2Fdevices%2Fd%2Fmodules%2Fm\n1700000000";
        assert_eq!(hmac_sha256(&key, text.as_bytes()), Some(ironhub_protocol::sas::sign(&key, text).unwrap()));
        assert_eq!(hmac_sha256("not base64!", b"x"), None);
    }
}
