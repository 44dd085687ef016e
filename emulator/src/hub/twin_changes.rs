//! Owns twin change events: the message routes whose source is `TwinChangeEvents` and whose
//! endpoint is the built-in `events` (IoT Hub configures them through ARM; here the control API
//! sets them), and the notification IoT Hub puts on the Event Hub-compatible endpoint for each
//! reported or desired change while such a route is enabled.

use std::collections::BTreeMap;

use bytes::Bytes;
use ironhub_protocol::topics::PropertyBag;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::HubError;
use super::events::TelemetryRecord;
use crate::Identity;

/// A route as IoT Hub's routing configuration writes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MessageRoute {
    pub source: String,
    #[serde(default = "always")]
    pub condition: String,
    pub endpoint_names: Vec<String>,
    #[serde(default = "enabled")]
    pub is_enabled: bool,
}

fn always() -> String {
    "true".into()
}

fn enabled() -> bool {
    true
}

/// The built-in endpoint's name in routes.
pub const BUILT_IN_ENDPOINT: &str = "events";

impl MessageRoute {
    /// Only what this emulator produces is accepted, so nothing configured is silently ignored.
    pub fn validate(&self) -> Result<(), HubError> {
        if self.source != "TwinChangeEvents" {
            return Err(HubError::invalid("Only routes with source TwinChangeEvents are supported"));
        }
        if self.endpoint_names != [BUILT_IN_ENDPOINT] {
            return Err(HubError::invalid("Only the built-in endpoint 'events' is supported as a route endpoint"));
        }
        if !self.condition.trim().eq_ignore_ascii_case("true") {
            return Err(HubError::invalid("Only the condition 'true' is supported for TwinChangeEvents routes"));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct MessageRoutes(BTreeMap<String, MessageRoute>);

impl MessageRoutes {
    pub fn put(&mut self, name: &str, route: MessageRoute) -> Result<(), HubError> {
        route.validate()?;
        self.0.insert(name.to_owned(), route);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.0.remove(name).is_some()
    }

    pub fn to_json(&self) -> Value {
        json!(self.0)
    }

    /// Whether twin changes go to the built-in endpoint.
    pub fn twin_changes_enabled(&self) -> bool {
        self.0.values().any(|r| r.is_enabled)
    }
}

/// `updateTwin` for a patch, `replaceTwin` for a full replacement (IoT Hub's `opType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Update,
    Replace,
}

/// One change of a twin's `section` (`reported` or `desired`).
pub struct Change<'a> {
    pub op: Operation,
    pub section: &'a str,
    /// The changed properties (the patch, or the whole section for a replacement).
    pub changed: &'a Value,
    pub section_version: u64,
    pub twin_version: u64,
}

/// The event IoT Hub emits for a change: the changed properties with the section's `$version`,
/// and the twin's version.
pub fn change_event(hub_name: &str, id: &Identity, change: &Change<'_>, now: &str) -> TelemetryRecord {
    let mut properties = change.changed.as_object().cloned().unwrap_or_default();
    properties.insert("$version".into(), json!(change.section_version));
    let body = json!({"version": change.twin_version, "properties": {change.section: properties}});
    let mut custom = vec![
        ("hubName".to_owned(), hub_name.to_owned()),
        ("deviceId".to_owned(), id.device_id.clone()),
    ];
    if let Some(m) = &id.module_id {
        custom.push(("moduleId".to_owned(), m.clone()));
    }
    custom.push(("operationTimestamp".to_owned(), now.to_owned()));
    custom.push(("iothub-message-schema".to_owned(), "twinChangeNotification".to_owned()));
    let op = match change.op {
        Operation::Update => "updateTwin",
        Operation::Replace => "replaceTwin",
    };
    custom.push(("opType".to_owned(), op.to_owned()));
    TelemetryRecord {
        device_id: id.device_id.clone(),
        module_id: id.module_id.clone(),
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        properties: PropertyBag {
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            custom,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_twin_change_routes_to_events_are_taken() {
        let route = |source: &str, endpoint: &str, condition: &str| MessageRoute {
            source: source.into(),
            condition: condition.into(),
            endpoint_names: vec![endpoint.into()],
            is_enabled: true,
        };
        let mut routes = MessageRoutes::default();
        assert!(!routes.twin_changes_enabled());
        assert!(routes.put("t", route("TwinChangeEvents", "events", "true")).is_ok());
        assert!(routes.twin_changes_enabled());
        assert!(routes.put("x", route("DeviceMessages", "events", "true")).is_err());
        assert!(routes.put("x", route("TwinChangeEvents", "storage", "true")).is_err());
        assert!(routes.put("x", route("TwinChangeEvents", "events", "$body.a = 1")).is_err());
        assert!(routes.remove("t") && !routes.twin_changes_enabled());
    }

    #[test]
    fn the_event_carries_the_change_and_versions() {
        let changed = json!({"a": 1});
        let change = Change { op: Operation::Update, section: "reported", changed: &changed, section_version: 3, twin_version: 7 };
        let e = change_event("hub", &Identity::module("d", "m"), &change, "t");
        let body: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(body, json!({"version": 7, "properties": {"reported": {"a": 1, "$version": 3}}}));
        let get = |k: &str| e.properties.custom.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!((get("opType"), get("deviceId"), get("moduleId"), get("hubName")), (Some("updateTwin"), Some("d"), Some("m"), Some("hub")));
    }
}
