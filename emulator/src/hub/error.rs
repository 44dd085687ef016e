//! Owns the IoT Hub error vocabulary: numeric error codes, their HTTP statuses and names
//! (the `iothub-errorcode` header), shared by the hub state and the HTTPS layer.

use std::fmt;

/// An IoT Hub error: HTTP status, the six-digit IoT Hub error code and a message that never
/// carries a key, signature or token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubError {
    pub status: u16,
    pub code: u32,
    pub message: String,
}

/// Twin operations fail with the same shape (the MQTT side maps `status` onto twin responses).
pub type TwinError = HubError;

pub const ARGUMENT_INVALID: u32 = 400004;
pub const IOTHUB_FORMAT_ERROR: u32 = 400006;
pub const UNAUTHORIZED: u32 = 401002;
pub const QUEUE_DEPTH_EXCEEDED: u32 = 403004;
pub const DEVICE_NOT_FOUND: u32 = 404001;
pub const MODULE_NOT_FOUND: u32 = 404010;
pub const DEVICE_NOT_ONLINE: u32 = 404103;
pub const NOT_FOUND: u32 = 404000;
pub const METHOD_NOT_ALLOWED: u32 = 405000;
pub const DEVICE_ALREADY_EXISTS: u32 = 409001;
pub const MODULE_ALREADY_EXISTS: u32 = 409301;
pub const PRECONDITION_FAILED: u32 = 412001;
pub const MESSAGE_TOO_LARGE: u32 = 413001;
pub const TOO_MANY_DEVICES: u32 = 413002;
pub const THROTTLED: u32 = 429001;
pub const SERVER_ERROR: u32 = 500001;
pub const GATEWAY_TIMEOUT: u32 = 504101;

/// The `iothub-errorcode` name IoT Hub sends for a code.
pub fn error_name(code: u32) -> &'static str {
    match code {
        ARGUMENT_INVALID => "ArgumentInvalid",
        IOTHUB_FORMAT_ERROR => "IotHubFormatError",
        UNAUTHORIZED => "IotHubUnauthorizedAccess",
        QUEUE_DEPTH_EXCEEDED => "DeviceMaximumQueueDepthExceeded",
        DEVICE_NOT_FOUND => "DeviceNotFound",
        MODULE_NOT_FOUND => "ModuleNotFound",
        DEVICE_NOT_ONLINE => "DeviceNotOnline",
        NOT_FOUND => "NotFound",
        METHOD_NOT_ALLOWED => "MethodNotAllowed",
        DEVICE_ALREADY_EXISTS => "DeviceAlreadyExists",
        MODULE_ALREADY_EXISTS => "ModuleAlreadyExistsOnDevice",
        PRECONDITION_FAILED => "PreconditionFailed",
        MESSAGE_TOO_LARGE => "MessageTooLarge",
        TOO_MANY_DEVICES => "TooManyDevices",
        THROTTLED => "ThrottlingException",
        GATEWAY_TIMEOUT => "GatewayTimeout",
        _ => "ServerError",
    }
}

impl HubError {
    /// The HTTP status is the code's first three digits, as in every IoT Hub error code.
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        HubError { status: (code / 1000) as u16, code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ARGUMENT_INVALID, message)
    }

    pub fn device_not_found(device_id: &str) -> Self {
        Self::new(DEVICE_NOT_FOUND, format!("Device {device_id} not found"))
    }

    pub fn module_not_found(device_id: &str, module_id: &str) -> Self {
        Self::new(MODULE_NOT_FOUND, format!("Module {module_id} on device {device_id} not found"))
    }

    pub fn precondition_failed() -> Self {
        Self::new(PRECONDITION_FAILED, "Precondition failed: the ETag does not match")
    }

    pub fn name(&self) -> &'static str {
        error_name(self.code)
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.name(), self.code, self.message)
    }
}

impl std::error::Error for HubError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_comes_from_the_code() {
        let e = HubError::new(DEVICE_NOT_ONLINE, "x");
        assert_eq!(e.status, 404);
        assert_eq!(e.name(), "DeviceNotOnline");
        assert_eq!(HubError::new(GATEWAY_TIMEOUT, "x").status, 504);
        assert_eq!(HubError::precondition_failed().status, 412);
    }
}
