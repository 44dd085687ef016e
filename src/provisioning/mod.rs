//! Device Provisioning Service client: what azure-iot-device's `ProvisioningDeviceClient` does.
//! A device with an ID scope and a key (or certificate) asks DPS which hub it belongs to, then
//! connects there ([`RegistrationResult::device_client_from_symmetric_key`]).
//!
//! - [`ProvisioningClient`] (async) and [`blocking::ProvisioningClient`] (sync facade).
//! - `mqtt`: one registration exchange over MQTT (register, then poll with `retry-after`).
//! - [`derive_device_key`]: a group enrollment member's key, from the group key.
//!
//! Options are the hub client's [`ClientOptions`]: `server_verification_cert`, `gateway_hostname`, `websockets`,
//! `cipher`, `proxy_options`, `sastoken_ttl`, `keep_alive`, `operation_timeout` (bound on the
//! whole registration) and the `mqtt_port` / `https_port` knobs apply; the rest are ignored.

pub mod blocking;
mod mqtt;

use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::message::X509;
use crate::options::ClientOptions;
use crate::Client;

/// The public DPS device endpoint (`provisioning_host` for Azure).
pub use ironhub_protocol::dps::GLOBAL_ENDPOINT;

/// base64(HMAC-SHA256(group key, registration id)): the symmetric key of a device that
/// registers through a symmetric-key group enrollment.
pub fn derive_device_key(group_symmetric_key: &str, registration_id: &str) -> Result<String> {
    require("registration_id", registration_id)?;
    Ok(ironhub_protocol::dps::derive_device_key(group_symmetric_key, registration_id)?)
}

/// What the device proves itself with.
#[derive(Clone)]
pub(crate) enum Attestation {
    SymmetricKey(String),
    X509(X509),
}

/// `registration_state` of a result: where the device was assigned.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationState {
    pub device_id: Option<String>,
    pub assigned_hub: Option<String>,
    pub sub_status: Option<String>,
    pub created_date_time: Option<String>,
    pub last_update_date_time: Option<String>,
    pub etag: Option<String>,
    /// The payload the service returned (azure-iot-device's `response_payload`, as JSON).
    pub payload: Option<Value>,
}

/// What `register()` returns: `status` is `"assigned"` on success.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationResult {
    pub operation_id: Option<String>,
    pub status: Option<String>,
    pub registration_state: Option<RegistrationState>,
}

impl RegistrationResult {
    /// Reads a DPS operation answer (`{"operationId", "status", "registrationState": {...}}`).
    pub(crate) fn from_json(body: &Value) -> RegistrationResult {
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        RegistrationResult {
            operation_id: text(body, "operationId"),
            status: text(body, "status"),
            registration_state: body.get("registrationState").filter(|s| s.is_object()).map(|s| RegistrationState {
                device_id: text(s, "deviceId"),
                assigned_hub: text(s, "assignedHub"),
                sub_status: text(s, "substatus"),
                created_date_time: text(s, "createdDateTimeUtc"),
                last_update_date_time: text(s, "lastUpdatedDateTimeUtc"),
                etag: text(s, "etag"),
                payload: s.get("payload").filter(|p| !p.is_null()).cloned(),
            }),
        }
    }

    /// The result as DPS words it (`operationId`, `status`, `registrationState` with `deviceId`,
    /// `assignedHub`, `substatus`, ...): what the C ABI hands out.
    pub fn to_json(&self) -> Value {
        let state = self.registration_state.as_ref().map(|s| {
            serde_json::json!({
                "deviceId": s.device_id,
                "assignedHub": s.assigned_hub,
                "substatus": s.sub_status,
                "createdDateTimeUtc": s.created_date_time,
                "lastUpdatedDateTimeUtc": s.last_update_date_time,
                "etag": s.etag,
                "payload": s.payload,
            })
        });
        serde_json::json!({"operationId": self.operation_id, "status": self.status, "registrationState": state})
    }

    /// `(assigned_hub, device_id)`, or a Client error when the device was not assigned.
    pub fn assignment(&self) -> Result<(&str, &str)> {
        let state = self.registration_state.as_ref();
        match (self.status.as_deref(), state.and_then(|s| s.assigned_hub.as_deref()), state.and_then(|s| s.device_id.as_deref())) {
            (Some("assigned"), Some(hub), Some(device)) => Ok((hub, device)),
            (status, ..) => Err(Error::Client(format!("the device was not assigned to a hub (status {status:?})"))),
        }
    }

    /// The hub client of the assigned device, authenticated with the same symmetric key the
    /// device registered with (for a group member: its derived key).
    pub fn device_client_from_symmetric_key(&self, symmetric_key: &str, options: ClientOptions) -> Result<Client> {
        let (hub, device) = self.assignment()?;
        Client::create_from_symmetric_key(symmetric_key, hub, device, options)
    }

    /// The hub client of the assigned device, authenticated with the registration's certificate.
    pub fn device_client_from_x509_certificate(&self, x509: X509, options: ClientOptions) -> Result<Client> {
        let (hub, device) = self.assignment()?;
        Client::create_from_x509_certificate(x509, hub, device, None, options)
    }
}

fn require(name: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        Err(Error::invalid(format!("{name} must not be empty")))
    } else {
        Ok(())
    }
}

pub(crate) struct Settings {
    pub provisioning_host: String,
    pub registration_id: String,
    pub id_scope: String,
    pub attestation: Attestation,
    pub options: ClientOptions,
}

/// `ProvisioningDeviceClient`: registers one device with DPS. Cheap to clone.
#[derive(Clone)]
pub struct ProvisioningClient {
    settings: Arc<Settings>,
    payload: Arc<Mutex<Option<Value>>>,
}

impl ProvisioningClient {
    fn new(
        provisioning_host: &str,
        registration_id: &str,
        id_scope: &str,
        attestation: Attestation,
        options: ClientOptions,
    ) -> Result<ProvisioningClient> {
        require("provisioning_host", provisioning_host)?;
        require("registration_id", registration_id)?;
        require("id_scope", id_scope)?;
        if registration_id.contains(['/', '+', '#', '\0']) || id_scope.contains(['/', '+', '#', '\0']) {
            return Err(Error::invalid("registration_id and id_scope must not contain '/', '+', '#' or NUL"));
        }
        options.validate()?;
        let settings = Settings {
            provisioning_host: provisioning_host.to_owned(),
            registration_id: registration_id.to_owned(),
            id_scope: id_scope.to_owned(),
            attestation,
            options,
        };
        Ok(ProvisioningClient { settings: Arc::new(settings), payload: Arc::default() })
    }

    /// `create_from_symmetric_key(provisioning_host, registration_id, id_scope, symmetric_key, **kw)`.
    pub fn create_from_symmetric_key(
        provisioning_host: &str,
        registration_id: &str,
        id_scope: &str,
        symmetric_key: &str,
        options: ClientOptions,
    ) -> Result<ProvisioningClient> {
        ironhub_protocol::sas::decode_key(symmetric_key)?;
        Self::new(provisioning_host, registration_id, id_scope, Attestation::SymmetricKey(symmetric_key.to_owned()), options)
    }

    /// `create_from_x509_certificate(provisioning_host, registration_id, id_scope, x509, **kw)`;
    /// the certificate's common name is the registration id.
    pub fn create_from_x509_certificate(
        provisioning_host: &str,
        registration_id: &str,
        id_scope: &str,
        x509: X509,
        options: ClientOptions,
    ) -> Result<ProvisioningClient> {
        // Read the files now: a bad path or key is a bad argument, not a later connection failure.
        crate::transport::tls::load_client_identity(&x509)?;
        Self::new(provisioning_host, registration_id, id_scope, Attestation::X509(x509), options)
    }

    pub fn registration_id(&self) -> &str {
        &self.settings.registration_id
    }

    /// `provisioning_payload`: custom JSON sent with the registration (None = none).
    pub fn provisioning_payload(&self) -> Option<Value> {
        self.payload.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_provisioning_payload(&self, payload: Option<Value>) {
        *self.payload.lock().unwrap_or_else(|p| p.into_inner()) = payload;
    }

    /// Registers: connects, sends the registration, polls the operation with the service's
    /// `retry-after` until it is assigned or failed, and disconnects. Bounded by
    /// `options.operation_timeout`. Errors: `Credential` (refused CONNECT), `ConnectionFailed`,
    /// `ConnectionDropped`, `OperationTimeout`, `ServiceFailure` (the service answered an error
    /// status or a failed registration: Python's ClientError caused by ServiceError).
    pub async fn register(&self) -> Result<RegistrationResult> {
        let payload = self.provisioning_payload();
        let timeout = self.settings.options.operation_timeout;
        let settings = self.settings.clone();
        // On the shared runtime, so `register` can be awaited from any executor.
        let task = crate::runtime::handle().spawn(async move {
            match tokio::time::timeout(timeout, mqtt::register(&settings, payload)).await {
                Ok(result) => result,
                Err(_) => Err(Error::OperationTimeout(format!("registration did not complete within {timeout:?}"))),
            }
        });
        task.await.map_err(|e| Error::Client(format!("the registration task failed: {e}")))?
    }
}
