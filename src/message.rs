//! The data types a client sends and receives: `Message` (telemetry, outputs, C2D, module
//! inputs), `MethodRequest` and `MethodResponse`, named and shaped as azure-iot-device's models.

use bytes::Bytes;
use serde_json::Value;

/// Interface id that marks a security message (`Message.set_as_security_message()`).
pub const SECURITY_MESSAGE_INTERFACE_ID: &str = "urn:azureiot:Security:SecurityAgent:1";

/// A telemetry message (outgoing) or a C2D / input message (incoming).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Payload; received messages carry the raw bytes.
    pub data: Bytes,
    /// Application properties (`custom_properties`), in insertion order; keys unique.
    pub custom_properties: Vec<(String, String)>,
    pub message_id: Option<String>,
    /// ISO 8601 expiry (`$.exp`).
    pub expiry_time_utc: Option<String>,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    pub content_encoding: Option<String>,
    pub content_type: Option<String>,
    /// Output name for `send_message_to_output` (`$.on`).
    pub output_name: Option<String>,
    /// Set on received module input messages.
    pub input_name: Option<String>,
    /// `iothub-ack` of received C2D messages.
    pub ack: Option<String>,
    /// `$.ifid`; read-only in Python, set by `set_as_security_message`.
    pub iothub_interface_id: Option<String>,
}

impl Message {
    /// A message with this payload and nothing else set.
    pub fn new(data: impl Into<Bytes>) -> Message {
        Message { data: data.into(), ..Default::default() }
    }

    /// Sets (or replaces) an application property.
    pub fn set_property(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.custom_properties.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.custom_properties.push((key, value)),
        }
    }

    /// The value of an application property.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.custom_properties.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Marks the message as a security message (Azure Security Center for IoT).
    pub fn set_as_security_message(&mut self) {
        self.iothub_interface_id = Some(SECURITY_MESSAGE_INTERFACE_ID.to_string());
    }

    /// Size the 256 KB limit is checked against: payload plus every property key and value,
    /// as azure-iot-device's `Message.get_size()` counts it.
    pub fn get_size(&self) -> usize {
        let system = [
            &self.message_id,
            &self.expiry_time_utc,
            &self.correlation_id,
            &self.user_id,
            &self.content_encoding,
            &self.content_type,
            &self.output_name,
            &self.iothub_interface_id,
        ];
        self.data.len()
            + self.custom_properties.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + system.iter().filter_map(|v| v.as_ref()).map(|v| v.len()).sum::<usize>()
    }
}

/// A direct method invocation received from the hub.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodRequest {
    pub request_id: String,
    pub name: String,
    /// JSON payload (`Value::Null` when the invoker sent none or sent non-JSON).
    pub payload: Value,
}

/// The answer to a `MethodRequest`; may be sent from any thread, at any time later.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodResponse {
    pub request_id: String,
    pub status: i32,
    /// `None` is sent as JSON `null`.
    pub payload: Option<Value>,
}

impl MethodResponse {
    pub fn new(request_id: impl Into<String>, status: i32, payload: Option<Value>) -> Self {
        MethodResponse { request_id: request_id.into(), status, payload }
    }

    /// `MethodResponse.create_from_method_request(req, status, payload=None)`.
    pub fn create_from_method_request(req: &MethodRequest, status: i32, payload: Option<Value>) -> Self {
        MethodResponse::new(req.request_id.clone(), status, payload)
    }
}

/// `X509(cert_file, key_file, pass_phrase=None)`: paths of PEM files.
#[derive(Clone, PartialEq, Eq)]
pub struct X509 {
    pub certificate_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    /// Pass phrase of an encrypted key (PKCS#8 `ENCRYPTED PRIVATE KEY` or legacy OpenSSL PEM).
    pub pass_phrase: Option<String>,
}

impl X509 {
    pub fn new(
        certificate_file: impl Into<std::path::PathBuf>,
        key_file: impl Into<std::path::PathBuf>,
        pass_phrase: Option<String>,
    ) -> X509 {
        X509 { certificate_file: certificate_file.into(), key_file: key_file.into(), pass_phrase }
    }
}

impl std::fmt::Debug for X509 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509")
            .field("certificate_file", &self.certificate_file)
            .field("key_file", &self.key_file)
            .field("pass_phrase", &self.pass_phrase.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why the connection state changed (the C SDK's reasons, which azure-iot-device lacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionReason {
    Ok,
    ExpiredSasToken,
    DeviceDisabled,
    BadCredential,
    RetryExpired,
    NoNetwork,
    CommunicationError,
    NoPingResponse,
    ClientClose,
}

/// Argument of the connection state change handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionStateChange {
    pub connected: bool,
    pub reason: ConnectionReason,
}
