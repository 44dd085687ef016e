//! The one mapping from the core's `Error` to a C result code (through `ErrorKind`, the same
//! classification the Python exceptions use).

use super::boundary::FfiError;
use super::ironhub_result as R;
use crate::error::{Error, ErrorKind};

pub(crate) fn result_code(kind: ErrorKind) -> R {
    match kind {
        ErrorKind::InvalidArgument => R::IRONHUB_ERROR_INVALID_ARGUMENT,
        ErrorKind::MessageTooLarge => R::IRONHUB_ERROR_MESSAGE_TOO_LARGE,
        ErrorKind::Client => R::IRONHUB_ERROR_CLIENT,
        ErrorKind::ConnectionFailed => R::IRONHUB_ERROR_CONNECTION_FAILED,
        ErrorKind::ConnectionDropped => R::IRONHUB_ERROR_CONNECTION_DROPPED,
        ErrorKind::NoConnection => R::IRONHUB_ERROR_NO_CONNECTION,
        ErrorKind::Credential => R::IRONHUB_ERROR_CREDENTIAL,
        ErrorKind::OperationTimeout => R::IRONHUB_ERROR_OPERATION_TIMEOUT,
        ErrorKind::OperationCancelled => R::IRONHUB_ERROR_OPERATION_CANCELLED,
        ErrorKind::Service => R::IRONHUB_ERROR_SERVICE,
        ErrorKind::ShutDown => R::IRONHUB_ERROR_SHUT_DOWN,
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        // The core's Display never contains secrets (error.rs contract).
        FfiError::new(result_code(e.kind()), e.to_string())
    }
}
