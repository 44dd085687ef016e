//! The emulator's Device Provisioning Service: enrollments (individual and group, symmetric key
//! and X.509), device registration with polling, and assignment to the emulator's hub (the
//! device identity is created there with the enrollment's initial twin).
//!
//! Its state (ID scope, service key, enrollments, registration records) is its own file in the
//! state directory (`dps.json`, mode 0600: it holds keys), independent of the hub's store.
//!
//! - `enrollments`: the enrollment documents of the service REST API (pure JSON functions).
//! - `mqtt`: a device's registration session on the hub's MQTT listener, told apart by username.
//! - `rest`: `/enrollments/{id}`, `/enrollmentGroups/{id}`, `/registrations/{id}` on the HTTPS listener.

pub mod enrollments;
pub mod mqtt;
pub mod rest;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::hub::auth::{common_name, host_matches, thumbprints, unix_now};
use crate::hub::certificates::chain_ends_at;
use crate::hub::{now_iso, ConnectRefusal, Hub};
use crate::Identity;
use enrollments::{Attestation, Kind};
use ironhub_protocol::sas::SasToken;
use ironhub_protocol::dps as wire;

/// The only DPS service policy, as `provisioningserviceowner` grants every right.
pub const SERVICE_POLICY: &str = "provisioningserviceowner";
const STATE_FILE: &str = "dps.json";
/// What the service tells a device to wait before polling an operation.
pub const RETRY_AFTER_SECS: u64 = 1;

/// A DPS answer: status, JSON body, and the `retry-after` hint.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
}

impl Answer {
    fn error(status: u16, code: u32, message: impl Into<String>) -> Answer {
        Answer { status, body: error_body(code, message), retry_after: None }
    }
}

/// DPS's error shape (flat, unlike IoT Hub's nested `Message`).
pub fn error_body(code: u32, message: impl Into<String>) -> Value {
    json!({
        "errorCode": code,
        "trackingId": format!("{:032x}", rand::random::<u128>()),
        "message": message.into(),
        "timestampUtc": now_iso(),
    })
}

/// The enrollment a connected device proved it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attested {
    pub registration_id: String,
    pub kind: Kind,
    pub enrollment_id: String,
    /// DER of the device certificate for X.509 attestation (the hub identity is made from it).
    pub leaf: Option<Vec<u8>>,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    id_scope: String,
    service_key: String,
    enrollments: BTreeMap<String, Value>,
    enrollment_groups: BTreeMap<String, Value>,
    registrations: BTreeMap<String, Value>,
    /// operationId → (registration id, answer); in memory only, as operations are short-lived.
    #[serde(skip)]
    operations: HashMap<String, (String, Value)>,
}

impl State {
    fn table(&mut self, kind: Kind) -> &mut BTreeMap<String, Value> {
        match kind {
            Kind::Individual => &mut self.enrollments,
            Kind::Group => &mut self.enrollment_groups,
        }
    }
}

pub struct Dps {
    hub: Arc<Hub>,
    file: Option<PathBuf>,
    state: Mutex<State>,
}

fn generate_id_scope() -> String {
    format!("0ne{:08X}", rand::random::<u32>())
}

impl Dps {
    /// Loads `dps.json` from `state_dir` (or starts empty with a new ID scope and key).
    pub fn new(hub: Arc<Hub>, state_dir: Option<&Path>) -> std::io::Result<Arc<Dps>> {
        let file = state_dir.map(|d| d.join(STATE_FILE));
        let mut state: State = match &file {
            Some(path) => match crate::hub::persist::read_optional(path)? {
                Some(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?,
                None => State::default(),
            },
            None => State::default(),
        };
        if state.id_scope.is_empty() {
            state.id_scope = generate_id_scope();
        }
        if state.service_key.is_empty() {
            state.service_key = enrollments::generate_key();
        }
        let dps = Dps { hub, file, state: Mutex::new(state) };
        dps.persist(&dps.lock())?;
        Ok(Arc::new(dps))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, state: &State) -> std::io::Result<()> {
        let Some(path) = &self.file else { return Ok(()) };
        let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
        write_private(path, &bytes)
    }

    fn persist_logged(&self, state: &State) {
        if let Err(e) = self.persist(state) {
            log::warn!("dps: cannot write {STATE_FILE}: {e}");
        }
    }

    pub fn id_scope(&self) -> String {
        self.lock().id_scope.clone()
    }

    /// `HostName=host[:port];SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=...`.
    pub fn service_connection_string(&self, host: &str) -> String {
        format!("HostName={host};SharedAccessKeyName={SERVICE_POLICY};SharedAccessKey={}", self.lock().service_key)
    }

    /// Checks a service `Authorization` header (provisioningserviceowner, this service's host).
    pub fn authorize_service(&self, header: Option<&str>) -> Result<(), String> {
        let token = SasToken::parse(header.ok_or("the Authorization header is missing")?).map_err(|e| e.to_string())?;
        let host = token.resource.split('/').next().unwrap_or_default();
        if !host_matches(self.hub.hostname(), host) {
            return Err("the token was issued for another provisioning service".into());
        }
        if token.key_name.as_deref() != Some(SERVICE_POLICY) {
            return Err(format!("the token must be signed by the {SERVICE_POLICY} policy"));
        }
        if !token.verify(&self.lock().service_key) {
            return Err("the signature does not match the policy key".into());
        }
        if token.is_expired_at(unix_now()) {
            return Err("the token has expired".into());
        }
        Ok(())
    }

    pub fn get_enrollment(&self, kind: Kind, id: &str) -> Option<Value> {
        self.lock().table(kind).get(id).cloned()
    }

    /// PUT an enrollment; `if_match` must name the current etag when given (`*` matches any).
    pub fn put_enrollment(&self, kind: Kind, id: &str, body: &Value, if_match: Option<&str>) -> Result<Value, (u16, String)> {
        let mut state = self.lock();
        let previous = state.table(kind).get(id).cloned();
        check_if_match(if_match, previous.as_ref())?;
        let enrollment = enrollments::normalize(kind, id, body, previous.as_ref())?;
        state.table(kind).insert(id.to_owned(), enrollment.clone());
        self.persist_logged(&state);
        Ok(enrollment)
    }

    pub fn delete_enrollment(&self, kind: Kind, id: &str, if_match: Option<&str>) -> Result<(), (u16, String)> {
        let mut state = self.lock();
        let previous = state.table(kind).get(id).cloned().ok_or((404, format!("No enrollment '{id}'")))?;
        check_if_match(if_match, Some(&previous))?;
        state.table(kind).remove(id);
        self.persist_logged(&state);
        Ok(())
    }

    pub fn get_registration(&self, registration_id: &str) -> Option<Value> {
        self.lock().registrations.get(registration_id).cloned()
    }

    pub fn delete_registration(&self, registration_id: &str) -> bool {
        let mut state = self.lock();
        let found = state.registrations.remove(registration_id).is_some();
        self.persist_logged(&state);
        found
    }

    /// CONNECT with a SAS token: signed with the individual enrollment's key, or with the key
    /// derived from a symmetric-key group's key. No key or signature is ever logged.
    pub fn authenticate_sas(&self, id_scope: &str, registration_id: &str, password: &str) -> Result<Attested, ConnectRefusal> {
        let token = SasToken::parse(password).map_err(|_| ConnectRefusal::BadUsernameOrPassword)?;
        let state = self.lock();
        if !id_scope.eq_ignore_ascii_case(&state.id_scope)
            || token.resource != wire::sas_resource(id_scope, registration_id)
            || token.key_name.as_deref().is_some_and(|k| k != wire::REGISTRATION_KEY_NAME)
            || token.is_expired_at(unix_now())
        {
            return Err(ConnectRefusal::NotAuthorized);
        }
        let attested = |kind, enrollment_id: &str| Attested {
            registration_id: registration_id.to_owned(),
            kind,
            enrollment_id: enrollment_id.to_owned(),
            leaf: None,
        };
        if let Some(e) = state.enrollments.get(registration_id) {
            if let Some(Attestation::SymmetricKey { primary, secondary }) = enrollments::attestation(Kind::Individual, e) {
                if token.verify(&primary) || token.verify(&secondary) {
                    return Ok(attested(Kind::Individual, registration_id));
                }
            }
            // An individual enrollment takes precedence over groups, as in DPS.
            return Err(ConnectRefusal::NotAuthorized);
        }
        for (group_id, group) in &state.enrollment_groups {
            if let Some(Attestation::SymmetricKey { primary, secondary }) = enrollments::attestation(Kind::Group, group) {
                let derived = [primary, secondary].map(|k| wire::derive_device_key(&k, registration_id).unwrap_or_default());
                if derived.iter().any(|k| token.verify(k)) {
                    return Ok(attested(Kind::Group, group_id));
                }
            }
        }
        Err(ConnectRefusal::NotAuthorized)
    }

    /// CONNECT with a client certificate whose CN is the registration id: the individual
    /// enrollment's certificate, or a chain up to a group's signing (root or intermediate) certificate.
    pub fn authenticate_x509(&self, id_scope: &str, registration_id: &str, chain: &[Vec<u8>]) -> Result<Attested, ConnectRefusal> {
        let leaf = chain.first().ok_or(ConnectRefusal::NotAuthorized)?;
        let state = self.lock();
        if !id_scope.eq_ignore_ascii_case(&state.id_scope) || common_name(leaf).as_deref() != Some(registration_id) {
            return Err(ConnectRefusal::NotAuthorized);
        }
        let attested = |kind, enrollment_id: &str| Attested {
            registration_id: registration_id.to_owned(),
            kind,
            enrollment_id: enrollment_id.to_owned(),
            leaf: Some(leaf.clone()),
        };
        if let Some(e) = state.enrollments.get(registration_id) {
            return match enrollments::attestation(Kind::Individual, e) {
                Some(Attestation::X509 { certificates }) if certificates.iter().any(|c| c == leaf) => {
                    Ok(attested(Kind::Individual, registration_id))
                }
                _ => Err(ConnectRefusal::NotAuthorized),
            };
        }
        for (group_id, group) in &state.enrollment_groups {
            if let Some(Attestation::X509 { certificates }) = enrollments::attestation(Kind::Group, group) {
                // DPS lets a group be verified by its root or an intermediate: each is an anchor.
                if certificates.iter().any(|ca| chain_ends_at(&[CertificateDer::from(ca.as_slice())], chain)) {
                    return Ok(attested(Kind::Group, group_id));
                }
            }
        }
        Err(ConnectRefusal::NotAuthorized)
    }

    /// `iotdps-register`: assigns the device to the hub now and answers 202 "assigning" with an
    /// operation id, so the device polls once (with `retry-after`) as it does against DPS.
    pub fn register(&self, who: &Attested, body: &Value) -> Answer {
        if let Some(given) = body.get("registrationId").and_then(Value::as_str) {
            if given != who.registration_id {
                return Answer::error(400, 400004, "registrationId does not match the connection's registration id");
            }
        }
        let Some(enrollment) = self.get_enrollment(who.kind, &who.enrollment_id) else {
            return Answer::error(401, 401002, "The enrollment no longer exists");
        };
        if !enrollments::is_enabled(&enrollment) {
            return Answer::error(401, 401002, "The enrollment is disabled");
        }
        let state = match self.assign(who, &enrollment, body.get("payload")) {
            Ok(state) => state,
            Err(message) => return Answer::error(500, 500000, message),
        };
        let operation_id = format!("4.{:016x}.{}", rand::random::<u64>(), crate::hub::registry::generate_guid());
        let done = json!({"operationId": operation_id, "status": "assigned", "registrationState": state});
        let mut locked = self.lock();
        // One live operation per registration keeps the table bounded by the number of devices.
        locked.operations.retain(|_, (registration_id, _)| *registration_id != who.registration_id);
        locked.operations.insert(operation_id.clone(), (who.registration_id.clone(), done));
        Answer { status: 202, body: json!({"operationId": operation_id, "status": "assigning"}), retry_after: Some(RETRY_AFTER_SECS) }
    }

    /// `iotdps-get-operationstatus` for one of this registration's operations.
    pub fn operation_status(&self, who: &Attested, operation_id: &str) -> Answer {
        match self.lock().operations.get(operation_id) {
            Some((registration_id, done)) if *registration_id == who.registration_id => {
                Answer { status: 200, body: done.clone(), retry_after: None }
            }
            _ => Answer::error(404, 404002, format!("No operation '{operation_id}' for this registration")),
        }
    }

    /// Creates (or refreshes the credentials of) the device in the hub and records the registration.
    fn assign(&self, who: &Attested, enrollment: &Value, payload: Option<&Value>) -> Result<Value, String> {
        let device_id = match who.kind {
            Kind::Individual => enrollment.get("deviceId").and_then(Value::as_str).unwrap_or(&who.registration_id),
            Kind::Group => &who.registration_id,
        }
        .to_owned();
        let authentication = match (enrollments::attestation(who.kind, enrollment), &who.leaf) {
            (_, Some(leaf)) => {
                let [sha1, _] = thumbprints(leaf);
                json!({"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": sha1}})
            }
            (Some(Attestation::SymmetricKey { primary, secondary }), None) => {
                let (primary, secondary) = match who.kind {
                    Kind::Individual => (primary, secondary),
                    Kind::Group => (
                        wire::derive_device_key(&primary, &who.registration_id).map_err(|e| e.to_string())?,
                        wire::derive_device_key(&secondary, &who.registration_id).map_err(|e| e.to_string())?,
                    ),
                };
                json!({"type": "sas", "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}})
            }
            _ => return Err("the enrollment's attestation does not match the connection".into()),
        };
        let device = json!({
            "deviceId": device_id,
            "status": "enabled",
            "authentication": authentication,
            "capabilities": enrollment.get("capabilities").cloned().unwrap_or_else(|| json!({"iotEdge": false})),
        });
        let existed = self.hub.get_device(&device_id).is_ok();
        self.hub
            .put_device(&device_id, &device, existed.then_some("*"))
            .map_err(|e| format!("cannot create device '{device_id}' in the hub: {}", e.message))?;
        if !existed {
            if let Some(twin) = enrollment.get("initialTwin") {
                self.hub
                    .update_twin(&Identity::device(&device_id), twin, None, false)
                    .map_err(|e| format!("cannot apply the initial twin: {}", e.message))?;
            }
        }
        let now = now_iso();
        let mut state = self.lock();
        let previous = state.registrations.get(&who.registration_id);
        let created = previous.and_then(|p| p.get("createdDateTimeUtc")).cloned().unwrap_or_else(|| json!(now));
        let substatus = if previous.is_some() { "reprovisionedToInitialAssignment" } else { "initialAssignment" };
        let mut record = json!({
            "registrationId": who.registration_id,
            "createdDateTimeUtc": created,
            "assignedHub": self.hub.hostname(),
            "deviceId": device_id,
            "status": "assigned",
            "substatus": substatus,
            "lastUpdatedDateTimeUtc": now,
            "etag": format!("{:016x}", rand::random::<u64>()),
        });
        match who.kind {
            Kind::Individual => record["enrollmentId"] = json!(who.enrollment_id),
            Kind::Group => record["enrollmentGroupId"] = json!(who.enrollment_id),
        }
        state.registrations.insert(who.registration_id.clone(), record.clone());
        self.persist_logged(&state);
        drop(state);
        // The device's own payload is echoed back as the service does with a returnData
        // allocation; it is never stored.
        if let Some(p) = payload.filter(|p| !p.is_null()) {
            record["payload"] = p.clone();
        }
        Ok(record)
    }
}

fn check_if_match(if_match: Option<&str>, current: Option<&Value>) -> Result<(), (u16, String)> {
    let Some(tag) = if_match.map(|t| t.trim().trim_matches('"')) else { return Ok(()) };
    let current_tag = current.and_then(|c| c.get("etag")).and_then(Value::as_str);
    if tag == "*" || current_tag == Some(tag) {
        Ok(())
    } else {
        Err((412, "The etag does not match the enrollment's".into()))
    }
}

/// Like `persist::write_atomic`, but the file is created 0600: it holds the service and enrollment keys.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
    }
    std::fs::rename(&tmp, path)
}
