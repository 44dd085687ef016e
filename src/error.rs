//! The one error type of the crate, and its mapping onto the exception tree of
//! python-surface.md (`kind()`), which the C ABI and the Python module translate
//! into their own result codes / exception classes. Messages never carry a key,
//! a signature or a token.

use std::fmt;

/// One kind per exception of python-surface.md's tree (plus the argument errors,
/// which are Python's `ValueError`/`TypeError` and C's `IRONHUB_ERROR_INVALID_ARGUMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Bad argument (Python `ValueError`).
    InvalidArgument,
    /// Message over 262144 bytes (Python `ValueError`, C `MESSAGE_TOO_LARGE`).
    MessageTooLarge,
    /// `ClientError` (also: use after shutdown in Python).
    Client,
    /// `ConnectionFailedError`.
    ConnectionFailed,
    /// `ConnectionDroppedError`.
    ConnectionDropped,
    /// `NoConnectionError`.
    NoConnection,
    /// `CredentialError`.
    Credential,
    /// `OperationTimeout`.
    OperationTimeout,
    /// `OperationCancelled`.
    OperationCancelled,
    /// `ServiceError`.
    Service,
    /// The client was shut down (Python `ClientError`, C `SHUT_DOWN`).
    ShutDown,
}

/// Every error ironhub returns.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A bad argument: malformed connection string, bad key, option out of range, invalid JSON...
    #[error("{0}")]
    InvalidArgument(String),
    /// Telemetry larger than the IoT Hub limit; nothing was sent.
    #[error("message size {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },
    /// A client-side failure that is none of the more specific kinds.
    #[error("{0}")]
    Client(String),
    /// The hub answered a device-side request (twin GET/PATCH) with a failure status:
    /// Python raises `ClientError` caused by `ServiceError`.
    #[error("hub answered with status {status}: {message}")]
    ServiceFailure { status: u16, message: String },
    /// The service (HTTPS) answered with a failure status (`ServiceError`).
    #[error("service error {status}: {message}")]
    Service { status: u16, message: String },
    /// `If-Match` did not match the current ETag (HTTP 412); a `ServiceError`.
    #[error("precondition failed (ETag mismatch): {0}")]
    PreconditionFailed(String),
    /// The hub could not be reached or refused the connection for a non-credential reason.
    #[error("connection failed: {0}")]
    ConnectionFailed(String),
    /// The connection dropped while the operation was in progress.
    #[error("connection dropped: {0}")]
    ConnectionDropped(String),
    /// Not connected and `auto_connect` is off.
    #[error("client is not connected (auto_connect is off)")]
    NoConnection,
    /// The hub refused the credentials (CONNACK 4/5, HTTP 401), or a credential could not be used.
    #[error("credential error: {0}")]
    Credential(String),
    /// The client's bounded queue (`max_queued_messages` / `max_queued_bytes`) is full; nothing
    /// was queued. A `ClientError` (C: `IRONHUB_ERROR_CLIENT`).
    #[error("queue full: {0}")]
    QueueFull(String),
    /// The operation did not complete within its bound. For a send, the message says whether it
    /// was withdrawn before being written or its outcome is unknown (written, no PUBACK in time).
    #[error("operation timed out: {0}")]
    OperationTimeout(String),
    /// The operation was cancelled by disconnect, shutdown or drop of the client.
    #[error("operation cancelled")]
    OperationCancelled,
    /// The client was shut down; no further calls are possible.
    #[error("client has been shut down")]
    ShutDown,
}

impl Error {
    /// Which exception/result code this error maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::MessageTooLarge { .. } => ErrorKind::MessageTooLarge,
            Error::Client(_) | Error::ServiceFailure { .. } | Error::QueueFull(_) => ErrorKind::Client,
            Error::Service { .. } | Error::PreconditionFailed(_) => ErrorKind::Service,
            Error::ConnectionFailed(_) => ErrorKind::ConnectionFailed,
            Error::ConnectionDropped(_) => ErrorKind::ConnectionDropped,
            Error::NoConnection => ErrorKind::NoConnection,
            Error::Credential(_) => ErrorKind::Credential,
            Error::OperationTimeout(_) => ErrorKind::OperationTimeout,
            Error::OperationCancelled => ErrorKind::OperationCancelled,
            Error::ShutDown => ErrorKind::ShutDown,
        }
    }

    /// For `ServiceFailure`: the HTTP-like status the hub answered (Python's `__cause__` ServiceError).
    pub fn service_status(&self) -> Option<u16> {
        match self {
            Error::ServiceFailure { status, .. } | Error::Service { status, .. } => Some(*status),
            Error::PreconditionFailed(_) => Some(412),
            _ => None,
        }
    }

    /// The outcome of a send (telemetry) as the SDKs report it: with `connection_retry` off, a send
    /// still pending when the connection drops is cancelled (azure-iot-device's `OperationCancelled`),
    /// not failed, since the client will not reconnect to complete it. The one place of that rule:
    /// the engine applies it to every telemetry send's outcome, so Rust callers see what the
    /// Python, C and Go layers report (they make no call of their own).
    pub fn for_send(self, connection_retry: bool) -> Error {
        match self {
            Error::ConnectionDropped(_) if !connection_retry => Error::OperationCancelled,
            other => other,
        }
    }

    pub(crate) fn invalid(msg: impl fmt::Display) -> Error {
        Error::InvalidArgument(msg.to_string())
    }
}

impl From<ironhub_protocol::ProtocolError> for Error {
    fn from(e: ironhub_protocol::ProtocolError) -> Self {
        // ProtocolError messages are secret-free by contract, and every one is a bad input.
        Error::InvalidArgument(e.to_string())
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
