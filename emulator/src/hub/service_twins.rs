//! Owns the service side of twins: rendering a twin as the REST API returns it, PATCH/PUT from
//! the service with If-Match, and the twin query.

use serde_json::{json, Value};

use super::error::HubError;
use super::twin::{self, DesiredNotification};
use super::{etag, now_iso, query, twin_changes, DeviceEntry, Hub, ModuleEntry};
use crate::Identity;

impl Hub {

    fn service_twin_json(device: &DeviceEntry, module: Option<&ModuleEntry>) -> Value {
        let d = &device.record;
        let (twin, auth, presence) = match module {
            Some(m) => (&m.twin, &m.record.authentication, &m.record.presence),
            None => (&device.twin, &d.authentication, &d.presence),
        };
        let mut out = serde_json::Map::new();
        out.insert("deviceId".into(), json!(d.device_id));
        if let Some(m) = module {
            out.insert("moduleId".into(), json!(m.record.module_id));
        }
        out.insert("etag".into(), json!(twin.etag()));
        out.insert("deviceEtag".into(), json!(module.map(|m| &m.record.etag).unwrap_or(&d.etag)));
        out.insert("version".into(), json!(twin.version));
        out.insert("status".into(), json!(d.status()));
        out.insert("statusReason".into(), json!(d.status_reason));
        out.insert("statusUpdateTime".into(), json!(d.status_updated_time));
        out.insert("connectionState".into(), json!(if presence.connected { "Connected" } else { "Disconnected" }));
        out.insert("lastActivityTime".into(), json!(presence.last_activity_time.as_deref().unwrap_or("0001-01-01T00:00:00Z")));
        out.insert("cloudToDeviceMessageCount".into(), json!(if module.is_some() { 0 } else { d.cloud_to_device_message_count }));
        out.insert("authenticationType".into(), json!(auth.auth_type.as_str()));
        out.insert(
            "x509Thumbprint".into(),
            json!({"primaryThumbprint": auth.primary_thumbprint, "secondaryThumbprint": auth.secondary_thumbprint}),
        );
        if module.is_none() {
            out.insert("capabilities".into(), json!({"iotEdge": d.iot_edge}));
            // As IoT Hub renders a device twin: the scope of an Edge device, and no parents (the
            // emulator has no nested Edge hierarchies).
            if let Some(scope) = d.device_scope() {
                out.insert("deviceScope".into(), json!(scope));
            }
            out.insert("parentScopes".into(), json!([]));
        }
        out.insert("tags".into(), Value::Object(twin.tags.clone()));
        out.insert("properties".into(), twin.service_properties());
        Value::Object(out)
    }

    /// GET `/twins/{id}[/modules/{mid}]`.
    pub fn get_twin(&self, id: &Identity) -> Result<Value, HubError> {
        let state = self.lock();
        let device = state.devices.get(&id.device_id).ok_or_else(|| HubError::device_not_found(&id.device_id))?;
        let module = match &id.module_id {
            Some(m) => Some(device.modules.get(m).ok_or_else(|| HubError::module_not_found(&id.device_id, m))?),
            None => None,
        };
        Ok(Self::service_twin_json(device, module))
    }

    /// PATCH (merge) or PUT (`replace`) of a twin from the service: returns the full twin and the
    /// desired notification the caller must push to connected clients.
    pub fn update_twin(
        &self,
        id: &Identity,
        body: &Value,
        if_match: Option<&str>,
        replace: bool,
    ) -> Result<(Value, Option<DesiredNotification>), HubError> {
        let body = body.as_object().ok_or_else(|| HubError::invalid("The twin body must be a JSON object"))?;
        let section = |v: Option<&Value>, what: &str| -> Result<Option<twin::Section>, HubError> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Object(o)) => Ok(Some(o.clone())),
                Some(_) => Err(HubError::invalid(format!("Twin {what} must be a JSON object"))),
            }
        };
        let tags = section(body.get("tags"), "tags")?;
        let desired = section(body.get("properties").and_then(|p| p.get("desired")), "desired properties")?;
        let now = now_iso();
        let (notification, desired_version, twin_version) = self.with_twin(id, |twin| {
            if !etag::if_match_allows(if_match, &twin.etag()) {
                return Err(HubError::precondition_failed());
            }
            let notification = if replace {
                twin.replace(&tags.clone().unwrap_or_default(), &desired.clone().unwrap_or_default(), &now).map(Some)?
            } else {
                twin.patch(tags.as_ref(), desired.as_ref(), &now)?
            };
            Ok((notification, twin.desired_version, twin.version))
        })?;
        if notification.is_some() {
            let op = if replace { twin_changes::Operation::Replace } else { twin_changes::Operation::Update };
            let changed = Value::Object(desired.unwrap_or_default());
            let change =
                twin_changes::Change { op, section: "desired", changed: &changed, section_version: desired_version, twin_version };
            self.twin_changed(id, &change);
        }
        Ok((self.get_twin(id)?, notification))
    }

    /// POST `/devices/query`: device twins matching the query, in device id order.
    pub fn query(&self, text: &str) -> Result<Vec<Value>, HubError> {
        let q = query::Query::parse(text)?;
        let state = self.lock();
        let twins = state.devices.values().flat_map(|d| {
            let own = (!q.modules).then(|| Self::service_twin_json(d, None));
            let modules: Vec<Value> =
                if q.modules { d.modules.values().map(|m| Self::service_twin_json(d, Some(m))).collect() } else { Vec::new() };
            own.into_iter().chain(modules)
        });
        Ok(twins.filter(|t| q.matches(t)).collect())
    }
}
