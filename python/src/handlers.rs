//! Python handlers as core handlers. The core calls them on its dispatcher threads (never the
//! network loop); each call takes the GIL, converts the delivery into Python objects, calls the
//! handler, and logs an exception it raises through Python's `logging` (logger `ironhub`) so the
//! client goes on, as azure-iot-device does.

use std::sync::Arc;

use ironhub::Client;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::{from_json, message_to_py, method_request_to_py};
use crate::errors::to_py_err;

/// The handler kinds `Client.set_handler(name, ...)` knows, named after the Python properties.
pub const HANDLER_NAMES: &[&str] = &[
    "message",
    "method_request",
    "twin_desired_properties_patch",
    "connection_state_change",
    "new_sastoken_required",
    "background_exception",
];

/// Calls `handler` with the arguments `args` builds; logs whatever goes wrong.
fn invoke<F>(kind: &'static str, handler: &Py<PyAny>, args: F)
where
    F: for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>,
{
    Python::attach(|py| {
        if let Err(err) = args(py).and_then(|a| handler.call1(py, a)) {
            log_handler_exception(py, kind, err);
        }
    });
}

/// Logs a handler's exception (with its traceback) under the `ironhub` logger.
pub fn log_handler_exception(py: Python<'_>, kind: &str, err: PyErr) {
    let logged = (|| -> PyResult<()> {
        let value = err.value(py);
        if let Some(tb) = err.traceback(py) {
            value.setattr("__traceback__", tb)?;
        }
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("ironhub",))?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("exc_info", value)?;
        logger.call_method(
            "error",
            ("Exception in the %s handler; the client goes on", kind),
            Some(&kwargs),
        )?;
        Ok(())
    })();
    if logged.is_err() {
        // Logging itself failed (interpreter shutting down): the last resort is stderr.
        err.print(py);
    }
}

/// Installs (or with `None` removes) the handler `kind`; runs without the GIL because the core
/// waits for a running handler of this client to finish, and that handler needs the GIL.
pub fn set(
    py: Python<'_>,
    client: &Client,
    kind: &str,
    handler: Option<Py<PyAny>>,
) -> PyResult<()> {
    let c = client.clone();
    let result = match kind {
        "message" => {
            let h = handler.map(|h| {
                Arc::new(move |m: ironhub::Message| {
                    invoke("on_message_received", &h, |py| {
                        PyTuple::new(py, [message_to_py(py, &m)?])
                    })
                }) as ironhub::MessageHandler
            });
            py.detach(|| crate::background::block_on(async move { c.on_message_received(h).await }))
        }
        "method_request" => {
            let h = handler.map(|h| {
                Arc::new(move |r: ironhub::MethodRequest| {
                    invoke("on_method_request_received", &h, |py| {
                        PyTuple::new(py, [method_request_to_py(py, &r)?])
                    })
                }) as ironhub::MethodRequestHandler
            });
            py.detach(|| {
                crate::background::block_on(async move { c.on_method_request_received(h).await })
            })
        }
        "twin_desired_properties_patch" => {
            let h = handler.map(|h| {
                Arc::new(move |patch: serde_json::Value| {
                    invoke("on_twin_desired_properties_patch_received", &h, |py| {
                        PyTuple::new(py, [from_json(py, &patch)?])
                    })
                }) as ironhub::TwinPatchHandler
            });
            py.detach(|| {
                crate::background::block_on(async move {
                    c.on_twin_desired_properties_patch_received(h).await
                })
            })
        }
        "connection_state_change" => {
            // azure-iot-device's handler takes no argument; the app reads `connected`.
            let h = handler.map(|h| {
                Arc::new(move |_change: ironhub::ConnectionStateChange| {
                    invoke("on_connection_state_change", &h, |py| {
                        Ok(PyTuple::empty(py))
                    })
                }) as ironhub::ConnectionStateHandler
            });
            py.detach(|| c.on_connection_state_change(h))
        }
        "new_sastoken_required" => {
            let h = handler.map(|h| {
                Arc::new(move || {
                    invoke("on_new_sastoken_required", &h, |py| Ok(PyTuple::empty(py)))
                }) as ironhub::SasTokenRequiredHandler
            });
            py.detach(|| c.on_new_sastoken_required(h))
        }
        "background_exception" => {
            let h = handler.map(|h| {
                Arc::new(move |e: ironhub::Error| {
                    invoke("on_background_exception", &h, |py| {
                        PyTuple::new(py, [to_py_err(e).into_value(py)])
                    })
                }) as ironhub::BackgroundExceptionHandler
            });
            py.detach(|| c.on_background_exception(h))
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown handler kind {other:?}"
            )))
        }
    };
    result.map_err(to_py_err)
}
