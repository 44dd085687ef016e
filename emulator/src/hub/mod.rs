//! The hub's state, shared as `Arc<Hub>` by the broker (`mqtt/`) and the HTTPS side (`http/`):
//! the identity registry, twins, the telemetry event log, C2D queues, routes and the service
//! policy key, persisted to the state directory when there is one.
//!
//! Every method is synchronous and takes one internal mutex briefly; persistence happens inside
//! the same critical section so the file on disk always matches some state the hub was in.
//!
//! - `error`: IoT Hub error codes and names. `etag`: ETag rendering and `If-Match`.
//! - `registry`: device and module records. `twin`: twin documents and their rules.
//! - `auth`: service policies, device SAS and X.509 checks. `routes`: Edge routes.
//! - `events`: the telemetry log. `query`: the twin query language. `persist`: atomic files.
//! - `identities`: registry operations. `service_twins`: twins as the service API sees them.

pub mod auth;
pub mod error;
pub mod etag;
pub mod events;
mod identities;
pub mod persist;
pub mod query;
pub mod registry;
pub mod routes;
mod service_twins;
pub mod twin;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ironhub_protocol::limits;
use ironhub_protocol::topics::PropertyBag;
use rustls::server::danger::ClientCertVerifier;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::Identity;

pub use auth::{ConnectRefusal, Right};
pub use error::{HubError, TwinError};
pub use events::{EventFilter, StoredEvent, TelemetryRecord};
pub use registry::{AuthType, Authentication, DeviceRecord, ModuleRecord};
pub use routes::RouteTarget;
pub use twin::{DesiredNotification, Twin};

/// A message on its way to a device (C2D) or a module input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceBoundMessage {
    pub body: Bytes,
    pub properties: PropertyBag,
}

/// ISO 8601 UTC with milliseconds, as IoT Hub renders every timestamp.
pub fn now_iso() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// How to build a hub.
#[derive(Clone, Default)]
pub struct HubConfig {
    pub hostname: String,
    /// Where `state.json` lives; `None` keeps everything in memory.
    pub state_dir: Option<PathBuf>,
    /// The shared access policy key; when `None`, the persisted one or a new random one.
    pub policy_key: Option<String>,
    /// Verifies device certificates for `certificateAuthority` identities (from `--ca-cert`).
    pub ca_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

struct ModuleEntry {
    record: ModuleRecord,
    twin: Twin,
}

struct DeviceEntry {
    record: DeviceRecord,
    twin: Twin,
    modules: BTreeMap<String, ModuleEntry>,
}

#[derive(Default)]
struct State {
    devices: BTreeMap<String, DeviceEntry>,
    routes: routes::RouteTable,
    c2d: HashMap<String, VecDeque<DeviceBoundMessage>>,
    events: events::EventLog,
    /// Source of registry ETags: bumped on every device or module write.
    revision: u64,
}

/// `state.json`: what survives a restart.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Persisted {
    policy_key: String,
    revision: u64,
    devices: Vec<PersistedDevice>,
    routes: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct PersistedDevice {
    device: DeviceRecord,
    twin: Twin,
    modules: Vec<PersistedModule>,
}

#[derive(Serialize, Deserialize)]
struct PersistedModule {
    module: ModuleRecord,
    twin: Twin,
}

/// The result of a bulk registry call.
#[derive(Clone, Debug, PartialEq)]
pub struct BulkResult {
    pub errors: Vec<Value>,
}

impl BulkResult {
    pub fn is_successful(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn to_json(&self) -> Value {
        json!({"isSuccessful": self.is_successful(), "errors": self.errors, "warnings": []})
    }
}

pub struct Hub {
    hostname: String,
    policy_key: String,
    state_file: Option<PathBuf>,
    ca_verifier: Option<Arc<dyn ClientCertVerifier>>,
    state: Mutex<State>,
    /// Carries the last event sequence number; long-pollers wait for it to change.
    events_signal: tokio::sync::watch::Sender<u64>,
}

impl Hub {
    /// Builds the hub, loading `state.json` from the state directory when there is one.
    pub fn new(config: HubConfig) -> Result<Hub, HubError> {
        let state_file = config.state_dir.as_ref().map(|d| d.join("state.json"));
        let mut state = State::default();
        let mut stored_key = None;
        if let Some(file) = &state_file {
            let io = |e: std::io::Error| HubError::new(error::SERVER_ERROR, format!("cannot read {}: {e}", file.display()));
            if let Some(bytes) = persist::read_optional(file).map_err(io)? {
                let p: Persisted = serde_json::from_slice(&bytes).map_err(|e| {
                    HubError::new(error::SERVER_ERROR, format!("{} is not a valid state file: {e}", file.display()))
                })?;
                stored_key = Some(p.policy_key);
                state.revision = p.revision;
                for d in p.devices {
                    let modules = d
                        .modules
                        .into_iter()
                        .map(|m| (m.module.module_id.clone(), ModuleEntry { record: m.module, twin: m.twin }))
                        .collect();
                    state.devices.insert(d.device.device_id.clone(), DeviceEntry { record: d.device, twin: d.twin, modules });
                }
                state.routes.merge(p.routes.into_iter().map(|(n, r)| (n, Some(r))).collect())?;
            }
        }
        let policy_key = match config.policy_key {
            Some(k) => {
                ironhub_protocol::sas::decode_key(&k).map_err(|_| HubError::invalid("the policy key is not valid base64"))?;
                k
            }
            None => stored_key.unwrap_or_else(registry::generate_key),
        };
        let hub = Hub {
            hostname: config.hostname,
            policy_key,
            state_file,
            ca_verifier: config.ca_verifier,
            state: Mutex::new(state),
            events_signal: tokio::sync::watch::channel(0).0,
        };
        hub.persist(&hub.lock());
        Ok(hub)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the whole hub down with a poisoned lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, state: &State) {
        let Some(file) = &self.state_file else { return };
        let p = Persisted {
            policy_key: self.policy_key.clone(),
            revision: state.revision,
            devices: state
                .devices
                .values()
                .map(|d| PersistedDevice {
                    device: d.record.clone(),
                    twin: d.twin.clone(),
                    modules: d.modules.values().map(|m| PersistedModule { module: m.record.clone(), twin: m.twin.clone() }).collect(),
                })
                .collect(),
            routes: state.routes.texts(),
        };
        let bytes = serde_json::to_vec_pretty(&p).unwrap_or_default();
        if let Err(e) = persist::write_atomic(file, &bytes) {
            log::error!("hub: cannot persist state to {}: {e}", file.display());
        }
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The key every shared access policy signs with.
    pub fn policy_key(&self) -> &str {
        &self.policy_key
    }

    /// `HostName=..;SharedAccessKeyName=iothubowner;SharedAccessKey=..` for a hub reachable at `host`.
    pub fn service_connection_string(&self, host: &str) -> String {
        format!("HostName={host};SharedAccessKeyName=iothubowner;SharedAccessKey={}", self.policy_key)
    }

    // ---- device side (the broker's contract) ----

    fn authentication_of(state: &State, id: &Identity) -> Result<(Authentication, bool), ConnectRefusal> {
        let device = state.devices.get(&id.device_id).ok_or(ConnectRefusal::NotAuthorized)?;
        let auth = match &id.module_id {
            None => device.record.authentication.clone(),
            Some(m) => device.modules.get(m).ok_or(ConnectRefusal::NotAuthorized)?.record.authentication.clone(),
        };
        Ok((auth, device.record.enabled))
    }

    pub fn authenticate_sas(&self, id: &Identity, password: &str) -> Result<u64, ConnectRefusal> {
        let token = auth::parse_identity_token(password, &self.hostname, &id.device_id, id.module_id.as_deref())?;
        let (authentication, enabled) = Self::authentication_of(&self.lock(), id)?;
        if !enabled {
            // IoT Hub refuses a disabled device with CONNACK 3 (azure-iot-sdk-c: DEVICE_DISABLED).
            return Err(ConnectRefusal::ServerUnavailable);
        }
        auth::verify_identity_key(&token, &authentication, &self.policy_key)?;
        Ok(token.expiry)
    }

    pub fn authenticate_x509(&self, id: &Identity, chain_der: &[Vec<u8>]) -> Result<(), ConnectRefusal> {
        let (authentication, enabled) = Self::authentication_of(&self.lock(), id)?;
        if !enabled {
            // IoT Hub refuses a disabled device with CONNACK 3 (azure-iot-sdk-c: DEVICE_DISABLED).
            return Err(ConnectRefusal::ServerUnavailable);
        }
        auth::verify_certificate(&authentication, &id.device_id, chain_der, self.ca_verifier.as_ref())
    }

    pub fn set_connection_state(&self, id: &Identity, connected: bool) {
        let mut state = self.lock();
        let Some(device) = state.devices.get_mut(&id.device_id) else { return };
        let presence = match &id.module_id {
            None => &mut device.record.presence,
            Some(m) => match device.modules.get_mut(m) {
                Some(module) => &mut module.record.presence,
                None => return,
            },
        };
        let now = now_iso();
        presence.connected = connected;
        presence.connection_state_updated_time = Some(now.clone());
        presence.last_activity_time = Some(now);
    }

    /// Runs `f` on an identity's twin; 404001/404010 when the identity is unknown.
    fn with_twin<T>(&self, id: &Identity, f: impl FnOnce(&mut Twin) -> Result<T, HubError>) -> Result<T, HubError> {
        let mut state = self.lock();
        let device = state.devices.get_mut(&id.device_id).ok_or_else(|| HubError::device_not_found(&id.device_id))?;
        let twin = match &id.module_id {
            None => &mut device.twin,
            Some(m) => &mut device.modules.get_mut(m).ok_or_else(|| HubError::module_not_found(&id.device_id, m))?.twin,
        };
        let out = f(twin)?;
        self.persist(&state);
        Ok(out)
    }

    pub fn twin_properties(&self, id: &Identity) -> Result<Value, TwinError> {
        let state = self.lock();
        let device = state.devices.get(&id.device_id).ok_or_else(|| HubError::device_not_found(&id.device_id))?;
        match &id.module_id {
            None => Ok(device.twin.device_view()),
            Some(m) => Ok(device.modules.get(m).ok_or_else(|| HubError::module_not_found(&id.device_id, m))?.twin.device_view()),
        }
    }

    pub fn patch_reported(&self, id: &Identity, patch: &Value) -> Result<u64, TwinError> {
        let patch = patch.as_object().ok_or_else(|| HubError::invalid("A reported properties patch must be a JSON object"))?;
        let now = now_iso();
        self.with_twin(id, |twin| twin.patch_reported(patch, &now))
    }

    pub fn record_telemetry(&self, msg: TelemetryRecord) -> u64 {
        let now = now_iso();
        let seq = {
            let mut state = self.lock();
            if let Some(device) = state.devices.get_mut(&msg.device_id) {
                device.record.presence.last_activity_time = Some(now.clone());
            }
            state.events.append(msg, now)
        };
        self.events_signal.send_replace(seq);
        seq
    }

    pub fn route(&self, from: &Identity, output_name: Option<&str>) -> Vec<RouteTarget> {
        self.lock().routes.targets(from, output_name)
    }

    pub fn take_pending_c2d(&self, device_id: &str) -> Vec<DeviceBoundMessage> {
        self.lock().c2d.remove(device_id).map(Vec::from).unwrap_or_default()
    }

    pub fn queue_c2d(&self, device_id: &str, msg: DeviceBoundMessage) -> Result<(), HubError> {
        let mut state = self.lock();
        if !state.devices.contains_key(device_id) {
            return Err(HubError::device_not_found(device_id));
        }
        let queue = state.c2d.entry(device_id.to_owned()).or_default();
        if queue.len() >= limits::MAX_C2D_PENDING {
            return Err(HubError::new(
                error::QUEUE_DEPTH_EXCEEDED,
                format!("Device {device_id} already has {} cloud-to-device messages pending", limits::MAX_C2D_PENDING),
            ));
        }
        queue.push_back(msg);
        Ok(())
    }

    pub fn pending_c2d_count(&self, device_id: &str) -> usize {
        self.lock().c2d.get(device_id).map(VecDeque::len).unwrap_or(0)
    }

    /// Counts a C2D message in the device's `cloudToDeviceMessageCount`.
    pub fn count_c2d(&self, device_id: &str) {
        if let Some(d) = self.lock().devices.get_mut(device_id) {
            d.record.cloud_to_device_message_count += 1;
        }
    }

    // ---- control API ----

    pub fn events_after(&self, filter: &EventFilter, after: u64) -> Vec<StoredEvent> {
        self.lock().events.after(filter, after)
    }

    /// Events newer than `after`, waiting up to `timeout` for the first one to arrive.
    pub async fn wait_for_events(&self, filter: &EventFilter, after: u64, timeout: Duration) -> Vec<StoredEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut signal = self.events_signal.subscribe();
        loop {
            // Subscribed before looking, so an event recorded in between still wakes us.
            signal.borrow_and_update();
            let found = self.events_after(filter, after);
            if !found.is_empty() {
                return found;
            }
            match tokio::time::timeout_at(deadline, signal.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Vec::new(),
            }
        }
    }

    pub fn last_event_sequence(&self) -> u64 {
        self.lock().events.last_sequence()
    }

    /// Merges named routes (`None` removes one); all-or-nothing; persisted.
    pub fn merge_routes(&self, changes: Vec<(String, Option<String>)>) -> Result<BTreeMap<String, String>, HubError> {
        let mut state = self.lock();
        state.routes.merge(changes)?;
        self.persist(&state);
        Ok(state.routes.texts())
    }

    pub fn routes(&self) -> BTreeMap<String, String> {
        self.lock().routes.texts()
    }

    // ---- service authorization ----

    /// Checks a service `Authorization` header for one of `any_of` (401002 otherwise).
    pub fn authorize_service(&self, header: Option<&str>, any_of: &[Right]) -> Result<(), HubError> {
        auth::authorize_service(header, &self.hostname, &self.policy_key, any_of)
    }

    /// The Edge hub's method endpoint: a module's own SAS token, named by `x-ms-edge-moduleId: d/m`.
    pub fn authorize_edge_module(&self, header: Option<&str>, edge_module_id: &str) -> Result<Identity, HubError> {
        let denied = || HubError::new(error::UNAUTHORIZED, "Unauthorized: the module token does not match x-ms-edge-moduleId");
        let (d, m) = edge_module_id.split_once('/').ok_or_else(denied)?;
        let caller = Identity::module(d, m);
        self.authenticate_sas(&caller, header.unwrap_or("")).map_err(|_| denied())?;
        Ok(caller)
    }
}
