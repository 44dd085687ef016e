//! The hub's state, shared as `Arc<Hub>` by the broker (`mqtt/`) and the HTTPS side (`http/`):
//! the identity registry, twins, the telemetry event log, C2D queues, routes and the service
//! policy key, persisted to the state directory when there is one.
//!
//! Every method is synchronous and takes one internal mutex briefly; the matching store writes are
//! queued inside the same critical section (so they land in order) and committed by the store's
//! own thread: callers await `flushed()` before they acknowledge anything.
//!
//! - `error`: IoT Hub error codes and names. `etag`: ETag rendering and `If-Match`.
//! - `registry`: device and module records. `twin`: twin documents and their rules.
//! - `auth`: service policies, device SAS and X.509 checks. `routes`: Edge routes.
//! - `events`: the telemetry log. `query`: the twin query language. `persist`: atomic files.
//! - `devicebound`: C2D and module-input messages waiting for their PUBACK.
//! - `feedback`: C2D delivery feedback (`iothub-ack`) and the queue the service reads it from.
//! - `store`: the SQLite database of the state directory, written off the async workers.
//! - `throttle`: the optional S1 limits (`--throttle s1`).
//! - `identities`: registry operations. `service_twins`: twins as the service API sees them.

pub mod auth;
pub mod certificates;
pub mod devicebound;
pub mod error;
pub mod etag;
pub mod events;
pub mod feedback;
mod identities;
pub mod persist;
pub mod query;
pub mod registry;
pub mod routes;
mod service_twins;
pub mod store;
pub mod throttle;
pub mod twin;
pub mod twin_changes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ironhub_protocol::topics::PropertyBag;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::Identity;

pub use auth::{ConnectRefusal, Right};
pub use error::{HubError, TwinError};
pub use events::{EventFilter, EventSource, StoredEvent, TelemetryRecord};
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
    /// Where `state.db` lives; `None` keeps everything in memory.
    pub state_dir: Option<PathBuf>,
    /// How long telemetry is kept; `None`: [`DEFAULT_RETENTION`].
    pub retention: Option<Duration>,
    /// IoT Hub's limits of this tier; `None`: no throttling.
    pub throttle: Option<throttle::Tier>,
    /// The shared access policy key; when `None`, the persisted one or a new random one.
    pub policy_key: Option<String>,
    /// Roots `certificateAuthority` device chains may end at (from `--ca-cert`), besides the
    /// certificates registered through `/certificates/{name}`.
    pub ca_roots: Vec<CertificateDer<'static>>,
    /// Partitions of the Event Hub-compatible endpoint; 0: IoT Hub's default, 4.
    pub partition_count: u32,
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
    feedback: feedback::FeedbackQueue,
    events: events::EventLog,
    /// IoT Hub message routes (`TwinChangeEvents` into `events`); in memory only.
    message_routes: twin_changes::MessageRoutes,
    /// Source of registry ETags: bumped on every device or module write.
    revision: u64,
}

/// `state.json` of emulators before the SQLite store: imported once.
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
    /// The durable store; `None` keeps everything in memory.
    store: Option<store::Store>,
    retention: Duration,
    throttle: Option<throttle::Throttle>,
    /// Trusted CA certificates (`--ca-cert` and `/certificates/{name}`).
    certificates: Mutex<certificates::Certificates>,
    state: Mutex<State>,
    /// Carries the last event sequence number; long-pollers wait for it to change.
    events_signal: tokio::sync::watch::Sender<u64>,
    /// Bumped whenever feedback is recorded or released; feedback receivers wait for it to change.
    feedback_signal: tokio::sync::watch::Sender<u64>,
}

/// The meta row that holds the feedback queue.
const FEEDBACK_META_KEY: &str = "feedback";

/// IoT Hub's default retention of device-to-cloud messages: one day.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Expired telemetry is pruned from the store every this many messages.
const PRUNE_EVERY: u64 = 1000;

fn state_error(what: impl std::fmt::Display) -> HubError {
    HubError::new(error::SERVER_ERROR, what.to_string())
}

impl PersistedDevice {
    fn of(d: &DeviceEntry) -> PersistedDevice {
        PersistedDevice {
            device: d.record.clone(),
            twin: d.twin.clone(),
            modules: d.modules.values().map(|m| PersistedModule { module: m.record.clone(), twin: m.twin.clone() }).collect(),
        }
    }

    fn into_entry(self) -> DeviceEntry {
        let modules =
            self.modules.into_iter().map(|m| (m.module.module_id.clone(), ModuleEntry { record: m.module, twin: m.twin })).collect();
        DeviceEntry { record: self.device, twin: self.twin, modules }
    }
}

impl State {
    /// The state `state.db` holds; `None` when it holds none yet (a new or a pre-SQLite state dir).
    fn from_store(loaded: store::Loaded) -> Result<Option<(State, String)>, HubError> {
        let Some(key) = loaded.meta.get("policyKey").cloned() else { return Ok(None) };
        let mut state = State { revision: loaded.meta.get("revision").and_then(|r| r.parse().ok()).unwrap_or(0), ..Default::default() };
        for doc in &loaded.devices {
            let d: PersistedDevice = serde_json::from_str(doc).map_err(|e| state_error(format!("a stored device is invalid: {e}")))?;
            state.devices.insert(d.device.device_id.clone(), d.into_entry());
        }
        state.routes.merge(loaded.routes.into_iter().map(|(n, r)| (n, Some(r))).collect())?;
        state.pending = devicebound::PendingQueues::from_stored(loaded.pending.iter().filter_map(|d| serde_json::from_str(d).ok()).collect());
        if let Some(doc) = loaded.meta.get(FEEDBACK_META_KEY) {
            state.feedback = serde_json::from_str(doc).unwrap_or_default();
            state.feedback.release_all();
        }
        let events = loaded.events.iter().filter_map(|(seq, doc)| StoredEvent::from_doc(*seq, doc)).collect();
        state.events = events::EventLog::restore(events, loaded.last_event_sequence, events::DEFAULT_PARTITIONS);
        Ok(Some((state, key)))
    }

    /// The state of a `state.json` written before the SQLite store, to import.
    fn from_legacy_file(file: &std::path::Path) -> Result<Option<(State, String)>, HubError> {
        let Some(bytes) = persist::read_optional(file).map_err(|e| state_error(format!("cannot read {}: {e}", file.display())))? else {
            return Ok(None);
        };
        let p: Persisted = serde_json::from_slice(&bytes)
            .map_err(|e| state_error(format!("{} is not a valid state file: {e}", file.display())))?;
        let mut state = State { revision: p.revision, ..Default::default() };
        for d in p.devices {
            state.devices.insert(d.device.device_id.clone(), d.into_entry());
        }
        state.routes.merge(p.routes.into_iter().map(|(n, r)| (n, Some(r))).collect())?;
        state.pending = devicebound::PendingQueues::from_stored(p.pending);
        Ok(Some((state, p.policy_key)))
    }

    /// Every write that recreates this state in an empty store.
    fn all_writes(&self) -> Vec<store::Write> {
        let mut writes: Vec<store::Write> = self
            .devices
            .values()
            .map(|d| store::Write::Device {
                device_id: d.record.device_id.clone(),
                doc: Some(serde_json::to_string(&PersistedDevice::of(d)).unwrap_or_default()),
            })
            .collect();
        writes.push(store::Write::Meta { key: "revision", value: self.revision.to_string() });
        writes.push(store::Write::Routes(self.routes.texts()));
        writes.extend(self.pending.to_stored().into_iter().map(Self::pending_write));
        writes.push(self.feedback_write());
        writes
    }

    /// The feedback queue is small and bounded: it is stored whole, as one meta row.
    fn feedback_write(&self) -> store::Write {
        store::Write::Meta { key: FEEDBACK_META_KEY, value: serde_json::to_string(&self.feedback).unwrap_or_default() }
    }

    fn pending_write(p: devicebound::StoredPending) -> store::Write {
        store::Write::PendingPut {
            lock_token: p.lock_token,
            device_id: p.device_id.clone(),
            module_id: p.module_id.clone(),
            doc: serde_json::to_string(&p).unwrap_or_default(),
        }
    }
}

impl Hub {
    /// Builds the hub on the state directory's `state.db` when there is one (importing a
    /// `state.json` of an older emulator once, which is then renamed `state.json.imported`).
    pub fn new(config: HubConfig) -> Result<Hub, HubError> {
        let retention = config.retention.unwrap_or(DEFAULT_RETENTION);
        let mut state = State::default();
        let mut stored_key = None;
        let mut store = None;
        let mut imported = None;
        let mut stored_certificates = None;
        if let Some(dir) = &config.state_dir {
            std::fs::create_dir_all(dir).map_err(|e| state_error(format!("cannot create {}: {e}", dir.display())))?;
            let keep_after = now_ms() - retention.as_millis() as i64;
            let (opened, loaded) = store::Store::open(&dir.join("state.db"), keep_after).map_err(state_error)?;
            let legacy = dir.join("state.json");
            stored_certificates = loaded.meta.get(certificates::STORE_KEY).cloned();
            let found = match State::from_store(loaded)? {
                Some(found) => Some(found),
                None => {
                    let found = State::from_legacy_file(&legacy)?;
                    if found.is_some() {
                        imported = Some(legacy);
                    }
                    found
                }
            };
            if let Some((loaded_state, key)) = found {
                state = loaded_state;
                stored_key = Some(key);
            }
            opened.submit(vec![store::Write::PruneEvents { before_ms: keep_after }]);
            if imported.is_some() {
                opened.submit(state.all_writes());
            }
            store = Some(opened);
        }
        let policy_key = match config.policy_key {
            Some(k) => {
                ironhub_protocol::sas::decode_key(&k).map_err(|_| HubError::invalid("the policy key is not valid base64"))?;
                k
            }
            None => stored_key.unwrap_or_else(registry::generate_key),
        };
        if let Some(store) = &store {
            store.submit(vec![store::Write::Meta { key: "policyKey", value: policy_key.clone() }]);
            futures::executor::block_on(store.flushed());
        }
        if let Some(legacy) = imported {
            let _ = std::fs::rename(&legacy, legacy.with_extension("json.imported"));
        }
        let partitions = if config.partition_count == 0 { events::DEFAULT_PARTITIONS } else { config.partition_count };
        state.events = std::mem::take(&mut state.events).repartition(partitions);
        Ok(Hub {
            hostname: config.hostname,
            policy_key,
            store,
            retention,
            throttle: config.throttle.map(throttle::Throttle::new),
            certificates: Mutex::new(certificates::Certificates::new(config.ca_roots, stored_certificates.as_deref())?),
            state: Mutex::new(state),
            events_signal: tokio::sync::watch::channel(0).0,
            feedback_signal: tokio::sync::watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the whole hub down with a poisoned lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `writes` for the store (call with the lock held, so they land in order).
    fn store_writes(&self, writes: impl FnOnce() -> Vec<store::Write>) {
        if let Some(store) = &self.store {
            store.submit(writes());
        }
    }

    /// Stores one device row (its record, twin and modules) as it is now, or its removal.
    fn persist_device(&self, state: &State, device_id: &str) {
        self.store_writes(|| {
            let doc = state.devices.get(device_id).map(|d| serde_json::to_string(&PersistedDevice::of(d)).unwrap_or_default());
            vec![
                store::Write::Device { device_id: device_id.to_owned(), doc },
                store::Write::Meta { key: "revision", value: state.revision.to_string() },
            ]
        });
    }

    /// Resolves once every change made before this call is on disk (at once without a store).
    /// Await it before acknowledging anything to a client.
    pub async fn flushed(&self) {
        if let Some(store) = &self.store {
            store.flushed().await;
        }
    }

    /// The store's commit point now (`None` without a store): [`Hub::flushed_through`] resolves
    /// once every change made before this call is on disk. Lets a connection acknowledge a
    /// telemetry PUBLISH after its commit without waiting for that commit before reading on.
    pub fn flush_point(&self) -> Option<u64> {
        self.store.as_ref().map(store::Store::submitted)
    }

    /// Resolves once everything up to `point` (from [`Hub::flush_point`]) is on disk.
    pub async fn flushed_through(&self, point: u64) {
        if let Some(store) = &self.store {
            store.committed_through(point).await;
        }
    }

    /// Commits what is queued and closes the store (shutdown); later changes stay in memory.
    pub fn close_store(&self) {
        if let Some(store) = &self.store {
            store.close();
        }
    }

    /// 429001 when throttling is on and `op` is over its limit.
    pub fn check_throttle(&self, op: throttle::Operation) -> Result<(), HubError> {
        self.throttle.as_ref().map_or(Ok(()), |t| t.check(op))
    }

    /// Waits for capacity when throttling is on (IoT Hub's traffic shaping of device-to-cloud sends).
    pub async fn shape_throttle(&self, op: throttle::Operation) {
        if let Some(t) = &self.throttle {
            t.shape(op).await;
        }
    }

    /// How long telemetry is kept.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The hub's name: the first label of its host name (the Event Hub-compatible entity, `hubName`).
    pub fn hub_name(&self) -> &str {
        self.hostname.split('.').next().unwrap_or_default()
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
        let anchors = self.lock_certificates().trust_anchors();
        auth::verify_certificate(&authentication, &id.device_id, chain_der, &anchors)
    }

    // ---- trusted CA certificates (`/certificates/{name}`) ----

    fn lock_certificates(&self) -> MutexGuard<'_, certificates::Certificates> {
        self.certificates.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the certificate registry as it is now (call with its lock held, so writes land in order).
    fn persist_certificates(&self, certs: &certificates::Certificates) {
        self.store_writes(|| vec![store::Write::Meta { key: certificates::STORE_KEY, value: certs.to_stored() }]);
    }

    pub fn list_certificates(&self) -> Value {
        self.lock_certificates().list()
    }

    pub fn get_certificate(&self, name: &str) -> Result<Value, HubError> {
        self.lock_certificates().get(name)
    }

    pub fn put_certificate(&self, name: &str, body: &Value, if_match: Option<&str>) -> Result<Value, HubError> {
        let mut certs = self.lock_certificates();
        let description = certs.put(name, body, if_match)?;
        self.persist_certificates(&certs);
        Ok(description)
    }

    pub fn generate_certificate_verification_code(&self, name: &str, if_match: Option<&str>) -> Result<Value, HubError> {
        let mut certs = self.lock_certificates();
        let description = certs.generate_verification_code(name, if_match)?;
        self.persist_certificates(&certs);
        Ok(description)
    }

    pub fn verify_certificate(&self, name: &str, if_match: Option<&str>, body: &Value) -> Result<Value, HubError> {
        let mut certs = self.lock_certificates();
        let description = certs.verify(name, if_match, body)?;
        self.persist_certificates(&certs);
        Ok(description)
    }

    pub fn delete_certificate(&self, name: &str, if_match: Option<&str>) -> Result<(), HubError> {
        let mut certs = self.lock_certificates();
        certs.delete(name, if_match)?;
        self.persist_certificates(&certs);
        Ok(())
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
        self.persist_device(&state, &id.device_id);
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
        let object = patch.as_object().ok_or_else(|| HubError::invalid("A reported properties patch must be a JSON object"))?;
        let now = now_iso();
        let (reported_version, twin_version) =
            self.with_twin(id, |twin| Ok((twin.patch_reported(object, &now)?, twin.version)))?;
        let change = twin_changes::Change {
            op: twin_changes::Operation::Update,
            section: "reported",
            changed: patch,
            section_version: reported_version,
            twin_version,
        };
        self.twin_changed(id, &change);
        Ok(reported_version)
    }

    /// Puts a twin change event on the Event Hub-compatible endpoint when a `TwinChangeEvents`
    /// route sends them there.
    fn twin_changed(&self, id: &Identity, change: &twin_changes::Change<'_>) {
        if !self.lock().message_routes.twin_changes_enabled() {
            return;
        }
        let event = twin_changes::change_event(self.hub_name(), id, change, &now_iso());
        self.record_event(EventSource::TwinChangeEvents, event);
    }

    /// Adds or replaces an IoT Hub message route (only `TwinChangeEvents` into `events`).
    pub fn put_message_route(&self, name: &str, route: twin_changes::MessageRoute) -> Result<Value, HubError> {
        let mut state = self.lock();
        state.message_routes.put(name, route)?;
        Ok(state.message_routes.to_json())
    }

    pub fn delete_message_route(&self, name: &str) -> bool {
        self.lock().message_routes.remove(name)
    }

    pub fn message_routes(&self) -> Value {
        self.lock().message_routes.to_json()
    }

    pub fn record_telemetry(&self, msg: TelemetryRecord) -> u64 {
        self.record_event(EventSource::Telemetry, msg)
    }

    /// Appends an event for the Event Hub-compatible endpoint (and, telemetry, the events API).
    pub fn record_event(&self, source: EventSource, msg: TelemetryRecord) -> u64 {
        let now = now_iso();
        let seq = {
            let mut state = self.lock();
            if source == EventSource::Telemetry {
                if let Some(device) = state.devices.get_mut(&msg.device_id) {
                    device.record.presence.last_activity_time = Some(now.clone());
                }
            }
            let seq = state.events.append_from(source, msg, now, now_ms());
            self.store_writes(|| {
                let mut writes = Vec::new();
                if let Some(event) = state.events.last() {
                    writes.push(store::Write::Event { sequence_number: seq, enqueued_ms: now_ms(), doc: event.to_doc() });
                }
                if seq % PRUNE_EVERY == 0 {
                    writes.push(store::Write::PruneEvents { before_ms: now_ms() - self.retention.as_millis() as i64 });
                }
                writes
            });
            seq
        };
        self.events_signal.send_replace(seq);
        seq
    }

    /// Where copies of a message from `from` go, by the route table (sources and `WHERE` conditions).
    pub fn route(&self, from: &Identity, properties: &PropertyBag, body: &[u8]) -> Vec<RouteTarget> {
        self.lock().routes.targets(from, properties, body)
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
        if let Some(ack) = &msg.properties.ack {
            if feedback::AckMode::parse(ack).is_none() {
                return Err(HubError::invalid(format!("iothub-ack must be none, positive, negative or full, not '{ack}'")));
            }
        }
        let mut state = self.lock();
        Self::identity_exists(&state, to)?;
        let now = now_ms();
        let token = state.pending.enqueue(to, input_name, msg, now, now + delay.as_millis() as i64)?;
        self.store_writes(|| state.pending.stored(to, token).map(State::pending_write).into_iter().collect());
        Ok(token)
    }

    /// Sends what waits for `to` and is not yet in flight on connection `conn_id` through `send`
    /// (which returns the packet id used, or `None` when it cannot send now).
    pub fn deliver_pending(&self, to: &Identity, conn_id: u64, send: impl FnMut(&devicebound::PendingMessage) -> Option<u16>) {
        let mut state = self.lock();
        let sent = state.pending.deliver(to, conn_id, now_ms(), send);
        // The delivery count survives a restart, so a redelivery after it still carries DUP.
        self.store_writes(|| sent.iter().filter_map(|t| state.pending.stored(to, *t)).map(State::pending_write).collect());
        self.settle(&mut state);
    }

    /// A PUBACK from `to` on connection `conn_id`: completes the message sent with `pkid`.
    pub fn acknowledge_devicebound(&self, to: &Identity, conn_id: u64, pkid: u16) {
        let mut state = self.lock();
        state.pending.acknowledge(to, conn_id, pkid);
        self.settle(&mut state);
    }

    /// Deletes the stored rows of the messages that left their queues for good and records the
    /// feedback their senders asked for (`iothub-ack`; C2D only). Call with the lock held.
    fn settle(&self, state: &mut State) {
        let settled = state.pending.take_settled();
        if settled.is_empty() {
            return;
        }
        let mut recorded = false;
        for s in &settled {
            let ack = s.message.properties.ack.as_deref().and_then(feedback::AckMode::parse).unwrap_or(feedback::AckMode::None);
            if s.to.module_id.is_some() || !ack.wants(s.status) {
                continue;
            }
            let generation = state.devices.get(&s.to.device_id).map(|d| d.record.generation_id.as_str()).unwrap_or("");
            let message_id = s.message.properties.message_id.as_deref().unwrap_or("");
            let record = feedback::FeedbackRecord::new(&s.to.device_id, generation, message_id, s.status, now_iso());
            state.feedback.record(record, now_ms());
            recorded = true;
        }
        self.store_writes(|| {
            let mut writes: Vec<store::Write> =
                settled.iter().map(|s| store::Write::PendingDelete { lock_token: s.lock_token }).collect();
            if recorded {
                writes.push(state.feedback_write());
            }
            writes
        });
        if recorded {
            self.feedback_signal.send_modify(|n| *n += 1);
        }
    }

    /// Drops every expired device-bound message now (with its feedback), rather than when its
    /// recipient next connects.
    pub fn sweep_devicebound(&self) {
        let mut state = self.lock();
        state.pending.purge_all_expired(now_ms());
        self.settle(&mut state);
    }

    // ---- C2D feedback (the service's `/messages/servicebound/feedback`) ----

    /// The next feedback message for a receiver (expired C2D messages are swept first); it stays
    /// queued until [`complete_feedback`](Self::complete_feedback) or is put back by
    /// [`release_feedback`](Self::release_feedback).
    pub fn take_feedback(&self) -> Option<feedback::FeedbackMessage> {
        self.sweep_devicebound();
        let mut state = self.lock();
        let taken = state.feedback.take(now_ms(), &now_iso());
        if taken.is_some() {
            // A new batch or a higher delivery count.
            self.store_writes(|| vec![state.feedback_write()]);
        }
        taken
    }

    /// The receiver accepted feedback message `lock_token`. False when it was not outstanding.
    pub fn complete_feedback(&self, lock_token: u64) -> bool {
        let mut state = self.lock();
        let done = state.feedback.complete(lock_token);
        if done {
            self.store_writes(|| vec![state.feedback_write()]);
        }
        done
    }

    /// The receiver released, abandoned or lost feedback message `lock_token`: it goes out again.
    pub fn release_feedback(&self, lock_token: u64) {
        self.lock().feedback.release(lock_token);
        self.feedback_signal.send_modify(|n| *n += 1);
    }

    /// Feedback records waiting (batched or not) for a receiver to accept them.
    pub fn feedback_count(&self) -> usize {
        self.lock().feedback.len()
    }

    /// Changes whenever feedback may have become available: receivers wait on it.
    pub fn feedback_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.feedback_signal.subscribe()
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

    // ---- the Event Hub-compatible endpoint's reads ----

    pub fn partition_count(&self) -> u32 {
        self.lock().events.partition_count()
    }

    /// Up to `limit` events of `partition` after hub-wide sequence number `after`, and the hub-wide
    /// sequence number the reader may go on after when none were found. Events older than the
    /// in-memory log come from the store (those of the retention period).
    pub fn partition_events_after(&self, partition: u32, after: u64, limit: usize) -> (Vec<StoredEvent>, u64) {
        let (first_in_memory, in_memory) = {
            let state = self.lock();
            (state.events.first_sequence(), state.events.partition_after(partition, after, limit))
        };
        let (Some(store), Some(first)) = (&self.store, first_in_memory) else { return (in_memory, after) };
        if after + 1 >= first {
            return (in_memory, after);
        }
        // Rows of every partition are scanned: a bounded number per call.
        let rows = store.events_between(after, first, limit * 8);
        let scanned_to = rows.last().map_or(first - 1, |(seq, _)| *seq);
        let older: Vec<StoredEvent> = rows
            .iter()
            .filter_map(|(seq, doc)| StoredEvent::from_doc(*seq, doc))
            .filter(|e| e.partition == partition)
            .take(limit)
            .collect();
        match older.last() {
            Some(last) => {
                let last = last.sequence_number;
                (older, last)
            }
            None => (Vec::new(), scanned_to),
        }
    }

    /// The first retained event of `partition` that `pred` accepts.
    pub fn partition_find(&self, partition: u32, pred: impl Fn(&StoredEvent) -> bool) -> Option<StoredEvent> {
        self.lock().events.partition_find(partition, pred)
    }

    pub fn partition_info(&self, partition: u32) -> events::PartitionInfo {
        self.lock().events.partition_info(partition)
    }

    /// Changes whenever an event is appended (its value: the newest hub-wide sequence number).
    pub fn subscribe_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events_signal.subscribe()
    }

    /// Merges named routes (`None` removes one); all-or-nothing; persisted.
    pub fn merge_routes(&self, changes: Vec<(String, Option<String>)>) -> Result<BTreeMap<String, String>, HubError> {
        let mut state = self.lock();
        state.routes.merge(changes)?;
        self.store_writes(|| vec![store::Write::Routes(state.routes.texts())]);
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
    /// Only modules of an IoT Edge device (`capabilities.iotEdge`) have an Edge hub to call, so
    /// a module of any other device is refused, as IoT Edge hub refuses identities it does not host.
    pub fn authorize_edge_module(&self, header: Option<&str>, edge_module_id: &str) -> Result<Identity, HubError> {
        let denied = || HubError::new(error::UNAUTHORIZED, "Unauthorized: the module token does not match x-ms-edge-moduleId");
        let (d, m) = edge_module_id.split_once('/').ok_or_else(denied)?;
        let caller = Identity::module(d, m);
        self.authenticate_sas(&caller, header.unwrap_or("")).map_err(|_| denied())?;
        if !self.get_device(d).is_ok_and(|device| device.iot_edge) {
            return Err(HubError::new(
                error::UNAUTHORIZED,
                format!("Unauthorized: device '{d}' is not an IoT Edge device, so its modules have no Edge hub to invoke methods through"),
            ));
        }
        Ok(caller)
    }
}
