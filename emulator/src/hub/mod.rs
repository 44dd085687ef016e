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
//! - `devicebound`: C2D and module-input messages waiting for their PUBACK.
//! - `identities`: registry operations. `service_twins`: twins as the service API sees them.

pub mod auth;
pub mod devicebound;
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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
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

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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
    pending: devicebound::PendingQueues,
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
    #[serde(default)]
    pending: Vec<devicebound::StoredPending>,
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
                state.pending = devicebound::PendingQueues::from_stored(p.pending);
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
            pending: state.pending.to_stored(),
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
            return Err(ConnectRefusal::NotAuthorized);
        }
        auth::verify_identity_key(&token, &authentication, &self.policy_key)?;
        Ok(token.expiry)
    }

    pub fn authenticate_x509(&self, id: &Identity, chain_der: &[Vec<u8>]) -> Result<(), ConnectRefusal> {
        let (authentication, enabled) = Self::authentication_of(&self.lock(), id)?;
        if !enabled {
            return Err(ConnectRefusal::NotAuthorized);
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

    fn identity_exists(state: &State, id: &Identity) -> Result<(), HubError> {
        let device = state.devices.get(&id.device_id).ok_or_else(|| HubError::device_not_found(&id.device_id))?;
        match &id.module_id {
            Some(m) if !device.modules.contains_key(m) => Err(HubError::module_not_found(&id.device_id, m)),
            _ => Ok(()),
        }
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

    /// Accepts a C2D (`to` a device, `input_name` None) or module-input message; it waits, persisted,
    /// until the recipient acknowledges it (see `devicebound`). Returns its lock token.
    /// It is not sent before `delay` has passed (the configured hub latency).
    pub fn enqueue_devicebound(
        &self,
        to: &Identity,
        input_name: Option<String>,
        msg: DeviceBoundMessage,
        delay: Duration,
    ) -> Result<u64, HubError> {
        let mut state = self.lock();
        Self::identity_exists(&state, to)?;
        let now = now_ms();
        let token = state.pending.enqueue(to, input_name, msg, now, now + delay.as_millis() as i64)?;
        self.persist(&state);
        Ok(token)
    }

    /// Sends what waits for `to` and is not yet in flight on connection `conn_id` through `send`
    /// (which returns the packet id used, or `None` when it cannot send now).
    pub fn deliver_pending(&self, to: &Identity, conn_id: u64, send: impl FnMut(&devicebound::PendingMessage) -> Option<u16>) {
        self.lock().pending.deliver(to, conn_id, now_ms(), send);
    }

    /// A PUBACK from `to` on connection `conn_id`: completes the message sent with `pkid`.
    pub fn acknowledge_devicebound(&self, to: &Identity, conn_id: u64, pkid: u16) {
        let mut state = self.lock();
        if state.pending.acknowledge(to, conn_id, pkid) {
            self.persist(&state);
        }
    }

    /// Whether message `lock_token` for `to` went out (or was already completed).
    pub fn devicebound_sent(&self, to: &Identity, lock_token: u64) -> bool {
        self.lock().pending.was_sent(to, lock_token)
    }

    /// C2D messages the device has not acknowledged yet (expired ones are gone).
    pub fn pending_c2d_count(&self, device_id: &str) -> usize {
        self.lock().pending.count(&Identity::device(device_id), now_ms())
    }

    /// What waits for `to`, oldest first, without taking it.
    pub fn pending_messages(&self, to: &Identity) -> Vec<devicebound::PendingMessage> {
        self.lock().pending.peek(to)
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
