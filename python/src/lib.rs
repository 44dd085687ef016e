//! `ironhub._native`: the PyO3 module behind the `ironhub` Python package. A thin adapter over
//! the Rust core (`ironhub` crate): argument conversion, GIL handling, exception mapping and
//! logging; no protocol logic lives here.
//!
//! - `errors`: the exception classes and the core error → exception mapping.
//! - `options`: factory keyword arguments → `ClientOptions`.
//! - `convert`: Python models and JSON ↔ core types.
//! - `handlers`: Python callables as core handlers (dispatcher thread, GIL, logged exceptions).
//! - `provisioning`: the `ProvisioningClient` class and the device client's file-upload calls.
//! - `aio`: waiting for core futures on the core's runtime (blocking, or as asyncio awaitables).
//! - `client`: the `Client` class (a blocking and an `_async` method per operation).

use pyo3::prelude::*;

mod aio;
mod client;
mod convert;
mod errors;
mod handlers;
mod options;
mod provisioning;

/// The size IoT Hub counts against its 256 KB telemetry limit for `message` (an
/// `ironhub.models.Message`).
#[pyfunction]
fn message_size(message: &Bound<'_, PyAny>) -> PyResult<usize> {
    Ok(convert::message_from_py(message)?.get_size())
}

/// Checks a `ProxyOptions.proxy_type` with the core's rule (HTTP, SOCKS4, SOCKS5, any case):
/// `ValueError` otherwise.
#[pyfunction]
fn check_proxy_type(proxy_type: &str) -> PyResult<()> {
    ironhub::validate::proxy_type(proxy_type).map(drop).map_err(errors::to_py_err)
}

static LOG_RESET: std::sync::OnceLock<pyo3_log::ResetHandle> = std::sync::OnceLock::new();

/// Forgets the Python logging levels the Rust log bridge cached: call it after changing the
/// level of an `ironhub` logger so Rust records follow the new level.
#[pyfunction]
fn reset_log_cache() {
    if let Some(h) = LOG_RESET.get() {
        h.reset();
    }
}

/// The native half of the `ironhub` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Rust `log` records go to Python's `logging` (target `ironhub::x` → logger `ironhub.x`).
    // Levels are cached per target so a disabled record costs no GIL; `reset_log_cache` drops the
    // cache. A second import in the same process finds the bridge installed already: fine.
    if let Ok(handle) = pyo3_log::try_init() {
        let _ = LOG_RESET.set(handle);
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<client::Client>()?;
    m.add_function(wrap_pyfunction!(message_size, m)?)?;
    m.add_function(wrap_pyfunction!(reset_log_cache, m)?)?;
    m.add_class::<provisioning::ProvisioningClient>()?;
    m.add_function(wrap_pyfunction!(provisioning::derive_device_key, m)?)?;
    m.add_function(wrap_pyfunction!(provisioning::get_storage_info_for_blob, m)?)?;
    m.add_function(wrap_pyfunction!(provisioning::notify_blob_upload_status, m)?)?;
    m.add_function(wrap_pyfunction!(provisioning::upload_blob, m)?)?;
    m.add("HANDLER_NAMES", handlers::HANDLER_NAMES.to_vec())?;
    // One definition of the security-message marker: the core's.
    m.add("SECURITY_MESSAGE_INTERFACE_ID", ironhub::message::SECURITY_MESSAGE_INTERFACE_ID)?;
    m.add_function(wrap_pyfunction!(check_proxy_type, m)?)?;
    aio::exit_guard::register(m)?;
    Ok(())
}
