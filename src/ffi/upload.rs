//! File upload on `ironhub_client` (device identities): the azure-iot-device pair
//! (`get_storage_info_for_blob`, `notify_blob_upload_status`) and the one-call uploads.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::boundary::{arg_bytes, arg_ref, arg_str, ffi_fallible, opt_str, Out};
use super::client::ironhub_client;
use super::handlers::UserData;
use super::handles::export_string;
use super::ironhub_result;
use crate::upload::UploadOptions;

/// Progress of a one-call upload: bytes sent so far and the total. Runs on an ironhub thread
/// while the upload call blocks, after each block; it must not call back into this client.
pub type ironhub_upload_progress_callback = Option<extern "C" fn(user_data: *mut c_void, sent: u64, total: u64)>;

/// Where to upload `blob_name`: `*storage_info_json` receives `{"correlationId", "hostName",
/// "containerName", "blobName", "sasToken"}` (free with `ironhub_string_free`; the SAS is a secret).
#[no_mangle]
pub extern "C" fn ironhub_client_get_storage_info_for_blob(
    c: *mut ironhub_client,
    blob_name: *const c_char,
    storage_info_json: *mut *mut c_char,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let blob_name = arg_str(blob_name, "blob_name")?;
        let out = Out::new(storage_info_json, "storage_info_json")?;
        let info = c.client.get_storage_info_for_blob(blob_name)?;
        out.write(export_string(info.to_json().to_string()));
        Ok(())
    }
}

/// Tells the hub how the upload of `correlation_id` ended. `status_description` may be NULL.
#[no_mangle]
pub extern "C" fn ironhub_client_notify_blob_upload_status(
    c: *mut ironhub_client,
    correlation_id: *const c_char,
    is_success: bool,
    status_code: i32,
    status_description: *const c_char,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let correlation_id = arg_str(correlation_id, "correlation_id")?;
        let description = opt_str(status_description, "status_description")?.unwrap_or("");
        Ok(c.client.notify_blob_upload_status(correlation_id, is_success, status_code, description)?)
    }
}

fn upload_options(block_size: usize, progress: ironhub_upload_progress_callback, user_data: *mut c_void) -> UploadOptions {
    let mut options = UploadOptions::default();
    if block_size > 0 {
        options.block_size = block_size;
    }
    if let Some(cb) = progress {
        let user_data = UserData(user_data);
        options.on_progress = Some(Arc::new(move |sent, total| cb(user_data.get(), sent, total)));
    }
    options
}

/// Uploads the file at `path` as `blob_name` in blocks of `block_size` bytes (0 = 2 MiB), each
/// retried on failure, then notifies the hub; returns when the blob is committed and notified.
/// `progress` may be NULL.
#[no_mangle]
pub extern "C" fn ironhub_client_upload_blob_from_file(
    c: *mut ironhub_client,
    blob_name: *const c_char,
    path: *const c_char,
    block_size: usize,
    progress: ironhub_upload_progress_callback,
    user_data: *mut c_void,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let blob_name = arg_str(blob_name, "blob_name")?;
        let path = arg_str(path, "path")?;
        c.client.upload_blob_from_file(blob_name, std::path::Path::new(path), upload_options(block_size, progress, user_data))?;
        Ok(())
    }
}

/// As `ironhub_client_upload_blob_from_file`, from `len` bytes at `data` (copied first).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn ironhub_client_upload_blob_from_buffer(
    c: *mut ironhub_client,
    blob_name: *const c_char,
    data: *const u8,
    len: usize,
    block_size: usize,
    progress: ironhub_upload_progress_callback,
    user_data: *mut c_void,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let blob_name = arg_str(blob_name, "blob_name")?;
        let data = arg_bytes(data, len, "data")?.to_vec();
        c.client.upload_blob_from_bytes(blob_name, data, upload_options(block_size, progress, user_data))?;
        Ok(())
    }
}
