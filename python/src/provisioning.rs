//! `ProvisioningClient` (behind `ironhub.ProvisioningDeviceClient`) and the file-upload calls of
//! the device client (`get_storage_info_for_blob`, `notify_blob_upload_status`, `upload_blob`),
//! as module functions taking the native `Client`. Blocking calls release the GIL.

use std::sync::Arc;

use ironhub::provisioning::ProvisioningClient as CoreProvisioningClient;
use ironhub::upload::UploadOptions;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::aio;
use crate::client::Client;
use crate::convert::{from_json, to_json};
use crate::errors::to_py_err;
use crate::options;

/// A DPS registration client of the native core.
#[pyclass(module = "ironhub._native", frozen)]
pub struct ProvisioningClient {
    inner: CoreProvisioningClient,
}

fn x509_from_py(x509: &Bound<'_, PyAny>) -> PyResult<ironhub::X509> {
    let attr = |n: &str| x509.getattr(n).map_err(|_| PyTypeError::new_err("x509 must be an X509 object"));
    Ok(ironhub::X509::new(
        attr("certificate_file")?.extract::<String>()?,
        attr("key_file")?.extract::<String>()?,
        attr("pass_phrase")?.extract::<Option<String>>()?,
    ))
}

#[pymethods]
impl ProvisioningClient {
    #[staticmethod]
    #[pyo3(signature = (provisioning_host, registration_id, id_scope, symmetric_key, kwargs, refused))]
    fn create_from_symmetric_key(
        provisioning_host: &str,
        registration_id: &str,
        id_scope: &str,
        symmetric_key: &str,
        kwargs: Option<&Bound<'_, PyDict>>,
        refused: Vec<String>,
    ) -> PyResult<ProvisioningClient> {
        let opts = options::from_kwargs(kwargs, &refused)?;
        CoreProvisioningClient::create_from_symmetric_key(provisioning_host, registration_id, id_scope, symmetric_key, opts)
            .map(|inner| ProvisioningClient { inner })
            .map_err(to_py_err)
    }

    #[staticmethod]
    #[pyo3(signature = (provisioning_host, registration_id, id_scope, x509, kwargs, refused))]
    fn create_from_x509_certificate(
        provisioning_host: &str,
        registration_id: &str,
        id_scope: &str,
        x509: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
        refused: Vec<String>,
    ) -> PyResult<ProvisioningClient> {
        let opts = options::from_kwargs(kwargs, &refused)?;
        CoreProvisioningClient::create_from_x509_certificate(provisioning_host, registration_id, id_scope, x509_from_py(x509)?, opts)
            .map(|inner| ProvisioningClient { inner })
            .map_err(to_py_err)
    }

    /// The JSON-serializable payload sent with the registration (None = none).
    #[getter]
    fn provisioning_payload(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.inner.provisioning_payload() {
            Some(v) => Ok(from_json(py, &v)?.unbind()),
            None => Ok(py.None()),
        }
    }

    #[setter]
    fn set_provisioning_payload(&self, value: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let payload = match value {
            Some(v) if !v.is_none() => Some(to_json(&v)?),
            _ => None,
        };
        self.inner.set_provisioning_payload(payload);
        Ok(())
    }

    /// Registers and returns the result as DPS words it (`operationId`, `status`,
    /// `registrationState`), without the GIL.
    fn register(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let inner = self.inner.clone();
        let result = aio::block_on_interruptible(py, async move { inner.register().await })?.map_err(to_py_err)?;
        Ok(from_json(py, &result.to_json())?.unbind())
    }
}

/// base64(HMAC-SHA256(group key, registration id)): a group enrollment member's key.
#[pyfunction]
pub fn derive_device_key(group_symmetric_key: &str, registration_id: &str) -> PyResult<String> {
    ironhub::provisioning::derive_device_key(group_symmetric_key, registration_id).map_err(to_py_err)
}

/// `get_storage_info_for_blob`: the dict azure-iot-device returns.
#[pyfunction]
pub fn get_storage_info_for_blob(py: Python<'_>, client: &Client, blob_name: String) -> PyResult<Py<PyAny>> {
    let c = ironhub::Client::clone(&client.inner);
    let info = aio::block_on_interruptible(py, async move { c.get_storage_info_for_blob(&blob_name).await })?.map_err(to_py_err)?;
    Ok(from_json(py, &info.to_json())?.unbind())
}

#[pyfunction]
pub fn notify_blob_upload_status(
    py: Python<'_>,
    client: &Client,
    correlation_id: String,
    is_success: bool,
    status_code: i32,
    status_description: String,
) -> PyResult<()> {
    let c = ironhub::Client::clone(&client.inner);
    aio::block_on_interruptible(py, async move {
        c.notify_blob_upload_status(&correlation_id, is_success, status_code, &status_description).await
    })?
    .map_err(to_py_err)
}

/// One-call upload of `path` or `data` (exactly one) in blocks; `progress(sent, total)` is called
/// after each block (an exception in it is logged). Returns the storage info dict.
#[pyfunction]
#[pyo3(signature = (client, blob_name, path=None, data=None, block_size=None, progress=None))]
pub fn upload_blob(
    py: Python<'_>,
    client: &Client,
    blob_name: String,
    path: Option<std::path::PathBuf>,
    data: Option<Vec<u8>>,
    block_size: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let mut options = UploadOptions::default();
    if let Some(size) = block_size {
        options.block_size = size;
    }
    if let Some(callback) = progress {
        options.on_progress = Some(Arc::new(move |sent, total| {
            Python::attach(|py| {
                if let Err(e) = callback.call1(py, (sent, total)) {
                    log::error!("upload progress callback raised: {e}");
                }
            })
        }));
    }
    let c = ironhub::Client::clone(&client.inner);
    let info = match (path, data) {
        (Some(path), None) => aio::block_on_interruptible(py, async move { c.upload_blob_from_file(&blob_name, &path, options).await })?,
        (None, Some(data)) => aio::block_on_interruptible(py, async move { c.upload_blob_from_bytes(&blob_name, data, options).await })?,
        _ => return Err(PyValueError::new_err("give exactly one of path and data")),
    }
    .map_err(to_py_err)?;
    Ok(from_json(py, &info.to_json())?.unbind())
}
