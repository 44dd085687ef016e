//! The exception tree of `ironhub.exceptions` (same names and hierarchy as
//! `azure.iot.device.exceptions`) and the one mapping from the core's `Error` onto it.
//! Messages come from the core, which keeps keys, signatures and tokens out of them.

use ironhub::{Error, ErrorKind};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

create_exception!(
    ironhub.exceptions,
    OperationCancelled,
    PyException,
    "An operation was cancelled."
);
create_exception!(
    ironhub.exceptions,
    OperationTimeout,
    PyException,
    "An operation timed out."
);
create_exception!(
    ironhub.exceptions,
    ServiceError,
    PyException,
    "Error received from an Azure IoT service."
);
create_exception!(
    ironhub.exceptions,
    ClientError,
    PyException,
    "Generic error for a client."
);
create_exception!(
    ironhub.exceptions,
    ConnectionFailedError,
    ClientError,
    "Failed to establish a connection."
);
create_exception!(
    ironhub.exceptions,
    ConnectionDroppedError,
    ClientError,
    "Lost connection while executing operation."
);
create_exception!(
    ironhub.exceptions,
    NoConnectionError,
    ClientError,
    "Operation could not be completed because no connection has been established."
);
create_exception!(
    ironhub.exceptions,
    CredentialError,
    ClientError,
    "Could not connect client using given credentials."
);

/// Converts a core error into the Python exception azure-iot-device raises in the same case.
pub fn to_py_err(err: Error) -> PyErr {
    let message = err.to_string();
    match err.kind() {
        ErrorKind::InvalidArgument | ErrorKind::MessageTooLarge => PyValueError::new_err(message),
        ErrorKind::Client => client_error(&err, message),
        ErrorKind::Service => ServiceError::new_err(message),
        ErrorKind::ConnectionFailed => ConnectionFailedError::new_err(message),
        ErrorKind::ConnectionDropped => ConnectionDroppedError::new_err(message),
        ErrorKind::NoConnection => NoConnectionError::new_err(message),
        ErrorKind::Credential => CredentialError::new_err(message),
        ErrorKind::OperationTimeout => OperationTimeout::new_err(message),
        ErrorKind::OperationCancelled => OperationCancelled::new_err(message),
        // azure-iot-device leaks an internal type after shutdown; the spec asks for ClientError.
        ErrorKind::ShutDown => ClientError::new_err(message),
    }
}

/// A hub-side failure answering a device request is a `ClientError` whose `__cause__` is a
/// `ServiceError`, exactly as azure-iot-device chains them.
fn client_error(err: &Error, message: String) -> PyErr {
    let outer = ClientError::new_err(message.clone());
    if err.service_status().is_some() {
        Python::attach(|py| outer.set_cause(py, Some(ServiceError::new_err(message))));
    }
    outer
}

/// Registers the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("OperationCancelled", py.get_type::<OperationCancelled>())?;
    m.add("OperationTimeout", py.get_type::<OperationTimeout>())?;
    m.add("ServiceError", py.get_type::<ServiceError>())?;
    m.add("ClientError", py.get_type::<ClientError>())?;
    m.add(
        "ConnectionFailedError",
        py.get_type::<ConnectionFailedError>(),
    )?;
    m.add(
        "ConnectionDroppedError",
        py.get_type::<ConnectionDroppedError>(),
    )?;
    m.add("NoConnectionError", py.get_type::<NoConnectionError>())?;
    m.add("CredentialError", py.get_type::<CredentialError>())?;
    Ok(())
}
