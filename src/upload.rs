//! File upload through the hub (device identities): `get_storage_info_for_blob` and
//! `notify_blob_upload_status` as azure-iot-device has them, plus ironhub's one-call upload of a
//! file or buffer, streamed to blob storage in blocks (Put Block, then Put Block List), with a
//! progress callback and a bounded retry of each failed block.
//!
//! The hub calls are HTTPS with the client's own credentials (its SAS token, or its certificate
//! through the client's TLS configuration); the blob calls carry only the blob's SAS URI.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};
use crate::transport::http::{hub_error_message, send, HttpsClient};
use crate::Client;

const API_VERSION: &str = "2021-04-12";

/// `on_progress(bytes_sent, total_bytes)` of an upload; called after each committed block,
/// on the uploading task (keep it short).
pub type UploadProgress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// What the hub answers `get_storage_info_for_blob`: where and with which SAS to upload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageInfo {
    pub correlation_id: String,
    pub host_name: String,
    pub container_name: String,
    pub blob_name: String,
    /// The SAS query, starting with `?`. A secret: never log it.
    pub sas_token: String,
}

impl StorageInfo {
    /// `https://{hostName}/{containerName}/{blobName}{sasToken}`, the blob's SAS URI.
    pub fn blob_url(&self) -> String {
        let path: Vec<String> = self.blob_name.split('/').map(ironhub_protocol::encoding::percent_encode).collect();
        format!("https://{}/{}/{}{}", self.host_name, self.container_name, path.join("/"), self.sas_token)
    }

    /// The dict azure-iot-device returns (`correlationId`, `hostName`, ...).
    pub fn to_json(&self) -> Value {
        json!({
            "correlationId": self.correlation_id,
            "hostName": self.host_name,
            "containerName": self.container_name,
            "blobName": self.blob_name,
            "sasToken": self.sas_token,
        })
    }
}

/// How [`Client::upload_blob_from_file`] / [`Client::upload_blob_from_bytes`] upload.
#[derive(Clone)]
pub struct UploadOptions {
    /// Bytes per block (1 byte ..= 100 MiB; default 2 MiB).
    pub block_size: usize,
    /// Attempts after the first for each block that fails with a network error or a 408/429/5xx.
    pub block_retries: u32,
    pub on_progress: Option<UploadProgress>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions { block_size: 2 * 1024 * 1024, block_retries: 3, on_progress: None }
    }
}

impl std::fmt::Debug for UploadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadOptions")
            .field("block_size", &self.block_size)
            .field("block_retries", &self.block_retries)
            .field("on_progress", &self.on_progress.is_some())
            .finish()
    }
}

/// What an upload reads its blocks from (a file, a buffer).
type UploadSource = Box<dyn AsyncRead + Unpin + Send>;

const MAX_BLOCK_SIZE: usize = 100 * 1024 * 1024;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);

fn retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

impl Client {
    fn require_device(&self) -> Result<()> {
        if self.is_module() {
            Err(Error::Client("file upload is for device identities only".into()))
        } else {
            Ok(())
        }
    }

    /// An HTTPS client with this client's TLS configuration (trust roots, cipher list, and its
    /// certificate for X.509 identities) and its `proxy_options`.
    fn upload_http(&self) -> Result<HttpsClient> {
        let options = self.options();
        crate::transport::http::https_client_with_tls(
            (*self.session().tls_config()).clone(),
            options.proxy_options.as_ref(),
            options.operation_timeout,
        )
    }

    /// POSTs `body` to `/devices/{id}/files{suffix}` on the hub, with the device's credentials.
    async fn files_call(&self, suffix: &str, body: Value) -> Result<Value> {
        self.require_device()?;
        let session = self.session();
        let options = self.options();
        let host = options.gateway_hostname.as_deref().unwrap_or(&self.identity().hostname);
        let port = if options.https_port == 443 { String::new() } else { format!(":{}", options.https_port) };
        let device = ironhub_protocol::encoding::percent_encode(&self.identity().device_id);
        let url = format!("https://{host}{port}/devices/{device}/files{suffix}?api-version={API_VERSION}");
        let mut req = self
            .upload_http()?
            .post(url)
            .header("Content-Type", "application/json")
            .header("User-Agent", format!("ironhub/{}{}", crate::VERSION, options.product_info))
            .body(body.to_string());
        if let Some(token) = session.auth.password(false).await? {
            req = req.header("Authorization", token.token);
        }
        let answer = send(req).await?;
        if answer.status == 401 {
            return Err(Error::Credential(hub_error_message(&answer.body)));
        }
        if answer.status >= 300 {
            return Err(Error::ServiceFailure { status: answer.status, message: hub_error_message(&answer.body) });
        }
        Ok(answer.body)
    }

    /// `get_storage_info_for_blob(blob_name)`: a correlation id and a SAS URI to upload to.
    pub async fn get_storage_info_for_blob(&self, blob_name: &str) -> Result<StorageInfo> {
        if blob_name.trim().is_empty() {
            return Err(Error::invalid("blob_name must not be empty"));
        }
        let body = self.files_call("", json!({ "blobName": blob_name })).await?;
        serde_json::from_value(body).map_err(|e| Error::Client(format!("the hub's storage info is not what was expected: {e}")))
    }

    /// `notify_blob_upload_status(correlation_id, is_success, status_code, status_description)`.
    pub async fn notify_blob_upload_status(
        &self,
        correlation_id: &str,
        is_success: bool,
        status_code: i32,
        status_description: &str,
    ) -> Result<()> {
        if correlation_id.trim().is_empty() {
            return Err(Error::invalid("correlation_id must not be empty"));
        }
        let body = json!({
            "correlationId": correlation_id,
            "isSuccess": is_success,
            "statusCode": status_code,
            "statusDescription": status_description,
        });
        self.files_call("/notifications", body).await.map(|_| ())
    }

    /// Uploads the file at `path` as `blob_name` in one call: storage info, blocks, block list,
    /// notification (also of a failure, before the error is returned).
    pub async fn upload_blob_from_file(&self, blob_name: &str, path: &Path, options: UploadOptions) -> Result<StorageInfo> {
        let file = tokio::fs::File::open(path).await.map_err(|e| Error::invalid(format!("cannot open {}: {e}", path.display())))?;
        let total = file.metadata().await.map_err(|e| Error::invalid(format!("cannot read {}: {e}", path.display())))?.len();
        self.upload_blob(blob_name, Box::new(file), total, options).await
    }

    /// As [`Client::upload_blob_from_file`], from memory.
    pub async fn upload_blob_from_bytes(&self, blob_name: &str, data: impl Into<bytes::Bytes>, options: UploadOptions) -> Result<StorageInfo> {
        let data = data.into();
        let total = data.len() as u64;
        self.upload_blob(blob_name, Box::new(std::io::Cursor::new(data)), total, options).await
    }

    /// The upload itself, over a boxed source: one copy of it for files and buffers alike.
    async fn upload_blob(&self, blob_name: &str, source: UploadSource, total: u64, options: UploadOptions) -> Result<StorageInfo> {
        if options.block_size == 0 || options.block_size > MAX_BLOCK_SIZE {
            return Err(Error::invalid(format!("block_size must be between 1 and {MAX_BLOCK_SIZE} bytes")));
        }
        let info = self.get_storage_info_for_blob(blob_name).await?;
        match self.put_blocks(&info, source, total, &options).await {
            Ok(()) => {
                self.notify_blob_upload_status(&info.correlation_id, true, 201, "Upload succeeded").await?;
                Ok(info)
            }
            Err(e) => {
                let status = match &e {
                    Error::ServiceFailure { status, .. } => i32::from(*status),
                    _ => 500,
                };
                // The upload's own error is what the caller needs; a failing notification adds nothing.
                let _ = self.notify_blob_upload_status(&info.correlation_id, false, status, &e.to_string()).await;
                Err(e)
            }
        }
    }

    async fn put_blocks(&self, info: &StorageInfo, mut source: UploadSource, total: u64, options: &UploadOptions) -> Result<()> {
        let http = self.upload_http()?;
        let url = info.blob_url();
        let mut ids = Vec::new();
        let mut sent = 0u64;
        loop {
            let mut block = Vec::with_capacity(options.block_size.min(total.saturating_sub(sent) as usize).max(1));
            (&mut source)
                .take(options.block_size as u64)
                .read_to_end(&mut block)
                .await
                .map_err(|e| Error::Client(format!("reading the upload source failed: {e}")))?;
            if block.is_empty() {
                break;
            }
            // Azure wants block ids of one length within a blob: a fixed-width counter.
            let id = base64::engine::general_purpose::STANDARD.encode(format!("{:08}", ids.len()));
            let block_url = format!("{url}&comp=block&blockid={}", ironhub_protocol::encoding::percent_encode(&id));
            let len = block.len() as u64;
            let body = bytes::Bytes::from(block);
            let mut attempt = 0;
            loop {
                match blob_put(&http, &block_url, body.clone(), &[]).await {
                    Ok(()) => break,
                    Err((retry, e)) if retry && attempt < options.block_retries => {
                        log::info!("upload: block {} of {} failed ({e}); retrying", ids.len(), info.blob_name);
                        tokio::time::sleep(FIRST_RETRY_DELAY * 2u32.pow(attempt.min(6))).await;
                        attempt += 1;
                    }
                    Err((_, e)) => return Err(e),
                }
            }
            ids.push(id);
            sent += len;
            if let Some(progress) = &options.on_progress {
                progress(sent, total.max(sent));
            }
        }
        let list: String = ids.iter().map(|id| format!("<Latest>{id}</Latest>")).collect();
        let xml = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>{list}</BlockList>");
        blob_put(&http, &format!("{url}&comp=blocklist"), xml.into(), &[("Content-Type", "application/xml")]).await.map_err(|(_, e)| e)
    }
}

/// One PUT to blob storage; the error says whether retrying may help. Error texts never carry
/// the URL (it holds the SAS): `transport::http` names the host at most.
async fn blob_put(
    http: &HttpsClient,
    url: &str,
    body: bytes::Bytes,
    headers: &[(&'static str, &str)],
) -> std::result::Result<(), (bool, Error)> {
    let mut req = http.put(url).header("x-ms-version", "2021-08-06").body(body);
    for &(name, value) in headers {
        req = req.header(name, value);
    }
    let answer = req.send().await.map_err(|e| {
        // A bad URL will not get better; a network failure or a timeout may.
        let retry = e.kind() != crate::ErrorKind::InvalidArgument;
        (retry, e)
    })?;
    if answer.status < 300 {
        return Ok(());
    }
    let code = answer.header("x-ms-error-code").unwrap_or("unknown").to_owned();
    Err((retryable(answer.status), Error::ServiceFailure { status: answer.status, message: format!("blob storage refused the upload ({code})") }))
}

/// The same calls on the blocking client, each bounded by `operation_timeout` (and, for the
/// one-call uploads, by the size of what is uploaded).
impl crate::blocking::Client {
    pub fn get_storage_info_for_blob(&self, blob_name: &str) -> Result<StorageInfo> {
        let (client, blob_name) = (self.as_async().clone(), blob_name.to_owned());
        block_on_storage_info(Box::pin(async move { client.get_storage_info_for_blob(&blob_name).await }))
    }

    pub fn notify_blob_upload_status(&self, correlation_id: &str, is_success: bool, status_code: i32, status_description: &str) -> Result<()> {
        let client = self.as_async().clone();
        let (correlation_id, status_description) = (correlation_id.to_owned(), status_description.to_owned());
        crate::runtime::block_on(async move {
            client.notify_blob_upload_status(&correlation_id, is_success, status_code, &status_description).await
        })
    }

    pub fn upload_blob_from_file(&self, blob_name: &str, path: &Path, options: UploadOptions) -> Result<StorageInfo> {
        let (client, blob_name, path) = (self.as_async().clone(), blob_name.to_owned(), path.to_owned());
        block_on_storage_info(Box::pin(async move { client.upload_blob_from_file(&blob_name, &path, options).await }))
    }

    pub fn upload_blob_from_bytes(&self, blob_name: &str, data: impl Into<bytes::Bytes>, options: UploadOptions) -> Result<StorageInfo> {
        let (client, blob_name, data) = (self.as_async().clone(), blob_name.to_owned(), data.into());
        block_on_storage_info(Box::pin(async move { client.upload_blob_from_bytes(&blob_name, data, options).await }))
    }
}

/// The blocking calls that answer a `StorageInfo`, through one boxed future type: the runtime's
/// task code for them is compiled once rather than once per call.
fn block_on_storage_info(call: std::pin::Pin<Box<dyn std::future::Future<Output = Result<StorageInfo>> + Send>>) -> Result<StorageInfo> {
    crate::runtime::block_on(call)
}
