//! Owns the registry operations of the hub: creating, updating, reading and deleting devices
//! and modules with IoT Hub's If-Match rules, bulk imports, connection strings and statistics.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::error::{self, HubError};
use super::registry::{self, Authentication, DeviceRecord, ModuleRecord};
use super::{etag, now_iso, store, BulkResult, DeviceEntry, Hub, ModuleEntry, State, Twin};
use crate::Identity;

impl Hub {

    fn next_etag(state: &mut State) -> String {
        state.revision += 1;
        etag::registry_etag(state.revision)
    }

    /// Fails with 404001/404010 unless the identity exists.
    pub fn check_identity(&self, id: &Identity) -> Result<(), HubError> {
        Self::identity_exists(&self.lock(), id)
    }

    /// PUT `/devices/{id}`: no `If-Match` creates only (409001 when it exists); with one, updates
    /// (412 on an ETag mismatch; `*` also creates).
    pub fn put_device(&self, device_id: &str, body: &Value, if_match: Option<&str>) -> Result<DeviceRecord, HubError> {
        registry::validate_id("Device", device_id)?;
        if let Some(body_id) = body.get("deviceId").and_then(Value::as_str) {
            if body_id != device_id {
                return Err(HubError::invalid(format!("The body's deviceId '{body_id}' does not match the URL's '{device_id}'")));
            }
        }
        let mut state = self.lock();
        let now = now_iso();
        let existing = state.devices.get(device_id).map(|d| d.record.clone());
        let record = match (existing, if_match) {
            (Some(_), None) => {
                return Err(HubError::new(error::DEVICE_ALREADY_EXISTS, format!("A device with ID '{device_id}' is already registered")))
            }
            (Some(existing), Some(tag)) => {
                if !etag::if_match_allows(Some(tag), &existing.etag) {
                    return Err(HubError::precondition_failed());
                }
                let settings = registry::DeviceSettings::from_json(body, Some(&existing))?;
                let mut record = existing;
                if record.enabled != settings.enabled {
                    record.status_updated_time = now.clone();
                }
                record.enabled = settings.enabled;
                record.status_reason = settings.status_reason;
                record.authentication = settings.authentication;
                record.iot_edge = settings.iot_edge;
                record.etag = Self::next_etag(&mut state);
                record
            }
            (None, Some(tag)) if etag::strip_quotes(tag) != "*" => return Err(HubError::device_not_found(device_id)),
            (None, _) => {
                let settings = registry::DeviceSettings::from_json(body, None)?;
                DeviceRecord {
                    device_id: device_id.to_owned(),
                    generation_id: registry::generate_generation_id(),
                    etag: Self::next_etag(&mut state),
                    enabled: settings.enabled,
                    status_reason: settings.status_reason,
                    status_updated_time: now.clone(),
                    authentication: settings.authentication,
                    iot_edge: settings.iot_edge,
                    cloud_to_device_message_count: 0,
                    presence: Default::default(),
                }
            }
        };
        match state.devices.get_mut(device_id) {
            Some(entry) => entry.record = record.clone(),
            None => {
                let entry = DeviceEntry { record: record.clone(), twin: Twin::new(&now), modules: BTreeMap::new() };
                state.devices.insert(device_id.to_owned(), entry);
            }
        }
        self.persist_device(&state, device_id);
        Ok(record)
    }

    pub fn create_device(&self, device_id: &str) -> Result<DeviceRecord, HubError> {
        self.put_device(device_id, &json!({}), None)
    }

    /// A device with the `iotEdge` capability: its modules may call the Edge hub's method endpoint.
    pub fn create_edge_device(&self, device_id: &str) -> Result<DeviceRecord, HubError> {
        self.put_device(device_id, &json!({"capabilities": {"iotEdge": true}}), None)
    }

    pub fn get_device(&self, device_id: &str) -> Result<DeviceRecord, HubError> {
        let state = self.lock();
        state.devices.get(device_id).map(|d| d.record.clone()).ok_or_else(|| HubError::device_not_found(device_id))
    }

    pub fn list_devices(&self, top: Option<usize>) -> Vec<DeviceRecord> {
        let state = self.lock();
        state.devices.values().take(top.unwrap_or(usize::MAX)).map(|d| d.record.clone()).collect()
    }

    /// DELETE `/devices/{id}`: its modules, twins and queued C2D go with it.
    pub fn delete_device(&self, device_id: &str, if_match: Option<&str>) -> Result<(), HubError> {
        let mut state = self.lock();
        let existing = state.devices.get(device_id).ok_or_else(|| HubError::device_not_found(device_id))?;
        if !etag::if_match_allows(if_match, &existing.record.etag) {
            return Err(HubError::precondition_failed());
        }
        state.devices.remove(device_id);
        state.pending.remove_device(device_id);
        self.persist_device(&state, device_id);
        self.store_writes(|| vec![store::Write::PendingDeleteDevice { device_id: device_id.to_owned() }]);
        Ok(())
    }

    /// PUT `/devices/{id}/modules/{mid}`, with the same `If-Match` rules as devices (409301).
    pub fn put_module(&self, device_id: &str, module_id: &str, body: &Value, if_match: Option<&str>) -> Result<ModuleRecord, HubError> {
        registry::validate_id("Module", module_id)?;
        if !body.is_object() {
            return Err(HubError::invalid("The module body must be a JSON object"));
        }
        let mut state = self.lock();
        let revision_etag = Self::next_etag(&mut state);
        let device = state.devices.get_mut(device_id).ok_or_else(|| HubError::device_not_found(device_id))?;
        let existing = device.modules.get(module_id);
        let managed_by = body.get("managedBy").and_then(Value::as_str).map(str::to_owned);
        let record = match (existing, if_match) {
            (Some(_), None) => {
                return Err(HubError::new(
                    error::MODULE_ALREADY_EXISTS,
                    format!("A module with ID '{module_id}' already exists on device '{device_id}'"),
                ))
            }
            (Some(m), Some(tag)) => {
                if !etag::if_match_allows(Some(tag), &m.record.etag) {
                    return Err(HubError::precondition_failed());
                }
                let mut record = m.record.clone();
                record.authentication = Authentication::from_json(body.get("authentication"), Some(&m.record.authentication))?;
                record.managed_by = managed_by.or(record.managed_by);
                record.etag = revision_etag;
                record
            }
            (None, Some(tag)) if etag::strip_quotes(tag) != "*" => return Err(HubError::module_not_found(device_id, module_id)),
            (None, _) => ModuleRecord {
                device_id: device_id.to_owned(),
                module_id: module_id.to_owned(),
                managed_by,
                generation_id: registry::generate_generation_id(),
                etag: revision_etag,
                authentication: Authentication::from_json(body.get("authentication"), None)?,
                presence: Default::default(),
            },
        };
        match device.modules.get_mut(module_id) {
            Some(entry) => entry.record = record.clone(),
            None => {
                let entry = ModuleEntry { record: record.clone(), twin: Twin::new(&now_iso()) };
                device.modules.insert(module_id.to_owned(), entry);
            }
        }
        self.persist_device(&state, device_id);
        Ok(record)
    }

    pub fn create_module(&self, device_id: &str, module_id: &str) -> Result<ModuleRecord, HubError> {
        self.put_module(device_id, module_id, &json!({}), None)
    }

    pub fn get_module(&self, device_id: &str, module_id: &str) -> Result<ModuleRecord, HubError> {
        let state = self.lock();
        let device = state.devices.get(device_id).ok_or_else(|| HubError::device_not_found(device_id))?;
        device.modules.get(module_id).map(|m| m.record.clone()).ok_or_else(|| HubError::module_not_found(device_id, module_id))
    }

    pub fn list_modules(&self, device_id: &str) -> Result<Vec<ModuleRecord>, HubError> {
        let state = self.lock();
        let device = state.devices.get(device_id).ok_or_else(|| HubError::device_not_found(device_id))?;
        Ok(device.modules.values().map(|m| m.record.clone()).collect())
    }

    pub fn delete_module(&self, device_id: &str, module_id: &str, if_match: Option<&str>) -> Result<(), HubError> {
        let mut state = self.lock();
        let device = state.devices.get_mut(device_id).ok_or_else(|| HubError::device_not_found(device_id))?;
        let module = device.modules.get(module_id).ok_or_else(|| HubError::module_not_found(device_id, module_id))?;
        if !etag::if_match_allows(if_match, &module.record.etag) {
            return Err(HubError::precondition_failed());
        }
        device.modules.remove(module_id);
        state.pending.remove(&Identity::module(device_id, module_id));
        self.persist_device(&state, device_id);
        let (device_id, module_id) = (device_id.to_owned(), module_id.to_owned());
        self.store_writes(|| vec![store::Write::PendingDeleteModule { device_id, module_id }]);
        Ok(())
    }

    /// `HostName=..;DeviceId=..[;ModuleId=..];SharedAccessKey={primary}`; `None` when unknown.
    pub fn device_connection_string(&self, device_id: &str, module_id: Option<&str>) -> Option<String> {
        let state = self.lock();
        let device = state.devices.get(device_id)?;
        let host = &self.hostname;
        match module_id {
            None => Some(format!("HostName={host};DeviceId={device_id};SharedAccessKey={}", device.record.primary_key())),
            Some(m) => {
                let module = device.modules.get(m)?;
                Some(format!("HostName={host};DeviceId={device_id};ModuleId={m};SharedAccessKey={}", module.record.primary_key()))
            }
        }
    }

    /// POST `/devices`: each import applied on its own; failures are listed, not fatal.
    pub fn bulk(&self, ops: &[Value]) -> Result<BulkResult, HubError> {
        if ops.len() > 100 {
            return Err(HubError::new(error::TOO_MANY_DEVICES, format!("{} devices in one bulk call; the limit is 100", ops.len())));
        }
        let mut errors = Vec::new();
        for op in ops {
            let id = op.get("id").or_else(|| op.get("deviceId")).and_then(Value::as_str).unwrap_or("");
            let mode = op.get("importMode").and_then(Value::as_str).unwrap_or("createOrUpdate");
            let etag = op.get("eTag").or_else(|| op.get("etag")).and_then(Value::as_str);
            let outcome = match mode.to_ascii_lowercase().as_str() {
                "create" => self.put_device(id, op, None).map(drop),
                "update" | "createorupdate" => self.put_device(id, op, Some("*")).map(drop),
                "updateifmatchetag" => self.put_device(id, op, Some(etag.unwrap_or(""))).map(drop),
                "delete" => self.delete_device(id, None),
                "deleteifmatchetag" => self.delete_device(id, Some(etag.unwrap_or(""))),
                other => Err(HubError::invalid(format!("Unknown importMode '{other}'"))),
            };
            if let Err(e) = outcome {
                errors.push(json!({"deviceId": id, "errorCode": e.name(), "errorStatus": e.message}));
            }
        }
        Ok(BulkResult { errors })
    }

    /// Every identity the broker reported connected.
    pub fn connected_identities(&self) -> Vec<Identity> {
        let state = self.lock();
        let mut out = Vec::new();
        for d in state.devices.values() {
            if d.record.presence.connected {
                out.push(Identity::device(d.record.device_id.clone()));
            }
            for m in d.modules.values().filter(|m| m.record.presence.connected) {
                out.push(Identity::module(d.record.device_id.clone(), m.record.module_id.clone()));
            }
        }
        out
    }

    pub fn statistics_devices(&self) -> Value {
        let state = self.lock();
        let total = state.devices.len();
        let enabled = state.devices.values().filter(|d| d.record.enabled).count();
        json!({"totalDeviceCount": total, "enabledDeviceCount": enabled, "disabledDeviceCount": total - enabled})
    }

    pub fn statistics_service(&self) -> Value {
        let state = self.lock();
        let connected = state.devices.values().filter(|d| d.record.presence.connected).count();
        json!({"connectedDeviceCount": connected})
    }
}
