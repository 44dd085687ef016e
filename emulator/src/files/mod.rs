//! File upload as IoT Hub does it with its linked storage account: a device asks the hub for a
//! blob SAS URI (`POST /devices/{id}/files`), uploads to blob storage, and tells the hub how it
//! went (`POST /devices/{id}/files/notifications`), which raises a file-upload notification.
//!
//! The emulator plays the storage account too: a small blob endpoint on the HTTPS listener
//! (container [`CONTAINER`]) that accepts only the SAS it handed out (Put Blob, Put Block,
//! Put Block List, Get Blob) and keeps committed blobs under `{state dir}/files/`.
//!
//! - `blob`: the storage side (SAS check, blocks, commits, Azure Storage's error shape).
//! - `http`: routing of the device, blob and control (`/emulator/fileNotifications`) calls.

pub mod blob;
pub mod http;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::hub::now_iso;
use ironhub_protocol::encoding::percent_encode;

/// The storage container the hub hands out (as configured on a real hub's file upload settings).
pub const CONTAINER: &str = "file-uploads";
/// SAS URIs live for an hour, IoT Hub's default `sasTtlAsIso8601`.
pub const SAS_TTL_SECS: i64 = 3600;
/// Uploads handed a SAS URI and not yet reported on, at most.
const MAX_PENDING_UPLOADS: usize = 10_000;
/// Notifications kept for the control API (oldest dropped first).
const MAX_NOTIFICATIONS: usize = 1000;

/// An upload the hub has handed a SAS URI for and not yet heard the end of.
struct PendingUpload {
    device_id: String,
    blob_name: String,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, PendingUpload>,
    /// Committed blobs, by `{deviceId}/{blobName}`, when there is no state directory.
    blobs: BTreeMap<String, Bytes>,
    /// Uncommitted blocks by blob path, then block id.
    blocks: HashMap<String, HashMap<String, Bytes>>,
    notifications: Vec<Value>,
    sequence: u64,
}

pub struct Files {
    /// Signs the blob SAS tokens; never leaves the process.
    key: String,
    /// `host[:port]` of the blob endpoint (the HTTPS listener).
    blob_host: String,
    dir: Option<PathBuf>,
    state: Mutex<State>,
    /// Fault injection for clients' retry logic: this many next Put Block calls fail with 500.
    failing_blocks: AtomicU32,
}

impl Files {
    pub fn new(blob_host: String, state_dir: Option<&Path>) -> Arc<Files> {
        Arc::new(Files {
            key: crate::dps::enrollments::generate_key(),
            blob_host,
            dir: state_dir.map(|d| d.join("files")),
            state: Mutex::new(State::default()),
            failing_blocks: AtomicU32::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The SAS query (with its leading `?`) for one blob, valid until `expiry`.
    pub fn sas_token(&self, blob_path: &str, expiry: DateTime<Utc>) -> String {
        let se = expiry.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let sig = blob::signature(&self.key, blob_path, &se);
        format!("?sv=2018-03-28&sr=b&sp=rw&se={}&sig={}", percent_encode(&se), percent_encode(&sig))
    }

    /// `POST /devices/{id}/files`: a correlation id and where to upload `blob_name`.
    pub fn storage_info(&self, device_id: &str, blob_name: &str) -> Result<Value, String> {
        if blob_name.is_empty() || blob_name.len() > 1024 || blob_name.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(format!("'{blob_name}' is not a valid blob name"));
        }
        let blob_path = format!("{device_id}/{blob_name}");
        let correlation_id = format!("{:032x}", rand::random::<u128>());
        let sas = self.sas_token(&blob_path, Utc::now() + chrono::Duration::seconds(SAS_TTL_SECS));
        let mut state = self.lock();
        // Devices that never report back must not grow the table without bound: past the cap,
        // one forgotten upload is dropped (its notification would then be refused, as on a hub
        // whose correlation ids expired).
        if state.pending.len() >= MAX_PENDING_UPLOADS {
            if let Some(old) = state.pending.keys().next().cloned() {
                state.pending.remove(&old);
            }
        }
        state.pending.insert(correlation_id.clone(), PendingUpload { device_id: device_id.to_owned(), blob_name: blob_path.clone() });
        drop(state);
        Ok(json!({
            "correlationId": correlation_id,
            "hostName": self.blob_host,
            "containerName": CONTAINER,
            "blobName": blob_path,
            "sasToken": sas,
        }))
    }

    /// `POST /devices/{id}/files/notifications`: ends an upload and, when it succeeded, raises
    /// the file-upload notification the service would receive.
    pub fn complete(&self, device_id: &str, body: &Value) -> Result<(), String> {
        let correlation_id = body.get("correlationId").and_then(Value::as_str).ok_or("correlationId is required")?;
        let is_success = body.get("isSuccess").and_then(Value::as_bool).ok_or("isSuccess must be true or false")?;
        let mut state = self.lock();
        match state.pending.get(correlation_id) {
            Some(p) if p.device_id == device_id => {}
            _ => return Err(format!("No upload with correlation id '{correlation_id}' for this device")),
        }
        let upload = state.pending.remove(correlation_id).ok_or("gone")?;
        if !is_success {
            return Ok(());
        }
        let size = self.blob_len(&state, &upload.blob_name).unwrap_or(0);
        state.sequence += 1;
        let notification = json!({
            "sequenceNumber": state.sequence,
            "deviceId": upload.device_id,
            "blobName": upload.blob_name,
            "blobUri": format!("https://{}/{CONTAINER}/{}", self.blob_host, upload.blob_name),
            "blobSizeInBytes": size,
            "lastUpdatedTime": now_iso(),
            "enqueuedTimeUtc": now_iso(),
            "correlationId": correlation_id,
            "statusCode": body.get("statusCode").cloned().unwrap_or(Value::Null),
            "statusDescription": body.get("statusDescription").cloned().unwrap_or(Value::Null),
        });
        if state.notifications.len() >= MAX_NOTIFICATIONS {
            state.notifications.remove(0);
        }
        state.notifications.push(notification);
        Ok(())
    }

    /// File-upload notifications, oldest first, optionally of one device.
    pub fn notifications(&self, device_id: Option<&str>) -> Vec<Value> {
        self.lock()
            .notifications
            .iter()
            .filter(|n| device_id.is_none_or(|d| n["deviceId"] == d))
            .cloned()
            .collect()
    }

    /// Makes the next `count` Put Block calls fail with 500 (fault injection for retry tests).
    pub fn fail_next_blocks(&self, count: u32) {
        self.failing_blocks.store(count, Ordering::SeqCst);
    }

    fn take_block_failure(&self) -> bool {
        self.failing_blocks.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    /// A committed blob's content.
    pub fn blob(&self, blob_path: &str) -> Option<Bytes> {
        let state = self.lock();
        match &self.dir {
            Some(dir) => std::fs::read(dir.join(blob_path)).ok().map(Bytes::from),
            None => state.blobs.get(blob_path).cloned(),
        }
    }

    fn blob_len(&self, state: &State, blob_path: &str) -> Option<u64> {
        match &self.dir {
            Some(dir) => std::fs::metadata(dir.join(blob_path)).ok().map(|m| m.len()),
            None => state.blobs.get(blob_path).map(|b| b.len() as u64),
        }
    }

    fn store_blob(&self, state: &mut State, blob_path: &str, content: Bytes) -> std::io::Result<()> {
        match &self.dir {
            Some(dir) => crate::hub::persist::write_atomic(&dir.join(blob_path), &content),
            None => {
                state.blobs.insert(blob_path.to_owned(), content);
                Ok(())
            }
        }
    }
}
