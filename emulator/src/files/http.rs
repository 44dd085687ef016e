//! Owns the HTTPS routes of file upload: the device-facing hub calls (`/devices/{id}/files`,
//! `/devices/{id}/files/notifications`, authorised with the device's SAS token or, for X.509
//! devices, the client certificate of the TLS connection, as IoT Hub does), the blob
//! endpoint (`/{CONTAINER}/{blob path}?{sas}`) and the control API's
//! `GET /emulator/fileNotifications[?deviceId=...]` (service SAS with ServiceConnect).

use http::Method;
use serde_json::{json, Value};

use super::{Files, CONTAINER};
use crate::http::request::ApiRequest;
use crate::http::response::{self, Reply};
use crate::hub::error::{self, HubError};
use crate::hub::{Hub, Right};
use crate::Identity;

fn authorize_device(hub: &Hub, req: &ApiRequest, device_id: &str) -> Result<(), HubError> {
    let unauthorized = |why: &str| HubError::new(error::UNAUTHORIZED, format!("Unauthorized: {why}"));
    let identity = Identity::device(device_id);
    match req.authorization() {
        Some(token) => hub
            .authenticate_sas(&identity, token)
            .map(|_| ())
            .map_err(|_| unauthorized("the device token is not valid for this device")),
        None if !req.peer_chain.is_empty() => hub
            .authenticate_x509(&identity, &req.peer_chain)
            .map_err(|_| unauthorized("the client certificate is not valid for this device")),
        None => Err(unauthorized("no Authorization header and no client certificate")),
    }
}

/// Dispatches one file-upload call; `None` when the path is not one.
pub fn route(hub: &Hub, files: &Files, req: &ApiRequest) -> Option<Reply> {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let post = req.method == Method::POST;
    let result = match seg.as_slice() {
        [container, blob @ ..] if *container == CONTAINER && !blob.is_empty() => return Some(files.serve_blob(req, &blob.join("/"))),
        ["devices", device_id, "files"] if post => storage_info(hub, files, req, device_id),
        ["devices", device_id, "files", "notifications"] if post => notification(hub, files, req, device_id),
        ["emulator", "fileNotifications"] if req.method == Method::GET => hub
            .authorize_service(req.authorization(), &[Right::ServiceConnect])
            .map(|()| response::ok(&json!({"notifications": files.notifications(req.query.get("deviceId").map(String::as_str))}))),
        _ => return None,
    };
    Some(result.unwrap_or_else(|e| response::error(&e)))
}

fn storage_info(hub: &Hub, files: &Files, req: &ApiRequest, device_id: &str) -> Result<Reply, HubError> {
    authorize_device(hub, req, device_id)?;
    let body = req.json()?;
    let blob_name = body.get("blobName").and_then(Value::as_str).ok_or_else(|| HubError::invalid("The body must be {\"blobName\": \"...\"}"))?;
    let info = files.storage_info(device_id, blob_name).map_err(HubError::invalid)?;
    Ok(response::ok(&info))
}

fn notification(hub: &Hub, files: &Files, req: &ApiRequest, device_id: &str) -> Result<Reply, HubError> {
    authorize_device(hub, req, device_id)?;
    files.complete(device_id, &req.json()?).map_err(HubError::invalid)?;
    Ok(response::no_content())
}
