//! The Device Provisioning Service wire format over MQTT, as pure functions shared by the
//! provisioning client and the emulator's DPS: the CONNECT username, the SAS resource, the
//! request and response topics, and the group-enrollment device key derivation.
//!
//! - username: `{idScope}/registrations/{registrationId}/api-version=...&ClientVersion=...`
//! - requests: `$dps/registrations/PUT/iotdps-register/?$rid={rid}` and
//!   `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`
//! - responses: `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={seconds}]`

use crate::encoding::{percent_decode, percent_encode};
use crate::sas;
use crate::ProtocolError;

/// The DPS API version the official SDKs speak over MQTT.
pub const API_VERSION: &str = "2019-03-31";
/// The public DPS device endpoint.
pub const GLOBAL_ENDPOINT: &str = "global.azure-devices-provisioning.net";
/// What a device subscribes to before it sends a request.
pub const RESPONSE_FILTER: &str = "$dps/registrations/res/#";
/// The `skn` of a registration token signed with an enrollment (or derived) key.
pub const REGISTRATION_KEY_NAME: &str = "registration";

const REGISTER_PREFIX: &str = "$dps/registrations/PUT/iotdps-register/?";
const STATUS_PREFIX: &str = "$dps/registrations/GET/iotdps-get-operationstatus/?";
const RESPONSE_PREFIX: &str = "$dps/registrations/res/";

/// The CONNECT username of a registration.
pub fn username(id_scope: &str, registration_id: &str, client_version: &str) -> String {
    format!(
        "{id_scope}/registrations/{registration_id}/api-version={API_VERSION}&ClientVersion={}",
        percent_encode(client_version)
    )
}

/// `(id_scope, registration_id)` out of a DPS username; `None` when it is not one (an IoT Hub
/// username is `{host}/{deviceId}/...` and never has `registrations` as its second part with
/// an `api-version` after the third).
pub fn parse_username(username: &str) -> Option<(&str, &str)> {
    let mut parts = username.splitn(4, '/');
    let scope = parts.next()?;
    if parts.next()? != "registrations" {
        return None;
    }
    let registration_id = parts.next()?;
    let rest = parts.next().unwrap_or("");
    let valid = |s: &str| !s.is_empty() && !s.contains(['+', '#', '\0']);
    (valid(scope) && valid(registration_id) && (rest.is_empty() || rest.starts_with("api-version=")))
        .then_some((scope, registration_id))
}

/// The resource a registration's SAS token names: `{idScope}/registrations/{registrationId}`.
pub fn sas_resource(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}")
}

/// The device key of a symmetric-key group enrollment member: base64(HMAC-SHA256(group key,
/// registration id)), as the DPS documentation derives it.
pub fn derive_device_key(group_key_base64: &str, registration_id: &str) -> Result<String, ProtocolError> {
    sas::sign(group_key_base64, registration_id)
}

pub fn register_topic(request_id: &str) -> String {
    format!("{REGISTER_PREFIX}$rid={}", percent_encode(request_id))
}

pub fn operation_status_topic(request_id: &str, operation_id: &str) -> String {
    format!("{STATUS_PREFIX}$rid={}&operationId={}", percent_encode(request_id), percent_encode(operation_id))
}

/// A request a device publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Register { request_id: String },
    OperationStatus { request_id: String, operation_id: String },
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == key => Some(percent_decode(v)),
        _ => None,
    })
}

/// Parses a device's publish topic; `None` for anything that is not a DPS request.
pub fn parse_request_topic(topic: &str) -> Option<Request> {
    if let Some(query) = topic.strip_prefix(REGISTER_PREFIX) {
        return Some(Request::Register { request_id: query_value(query, "$rid")? });
    }
    let query = topic.strip_prefix(STATUS_PREFIX)?;
    Some(Request::OperationStatus {
        request_id: query_value(query, "$rid")?,
        operation_id: query_value(query, "operationId")?,
    })
}

/// A response the service publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub request_id: String,
    /// Seconds the service asks the device to wait before polling again.
    pub retry_after: Option<u64>,
}

pub fn response_topic(status: u16, request_id: &str, retry_after: Option<u64>) -> String {
    let mut topic = format!("{RESPONSE_PREFIX}{status}/?$rid={}", percent_encode(request_id));
    if let Some(secs) = retry_after {
        topic.push_str(&format!("&retry-after={secs}"));
    }
    topic
}

pub fn parse_response_topic(topic: &str) -> Option<Response> {
    let rest = topic.strip_prefix(RESPONSE_PREFIX)?;
    let (status, query) = rest.split_once("/?")?;
    Some(Response {
        status: status.parse().ok()?,
        request_id: query_value(query, "$rid")?,
        retry_after: query_value(query, "retry-after").and_then(|v| v.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_round_trip_and_hub_usernames_are_not_dps() {
        let u = username("0ne00ABC", "reg-1", "ironhub/0.1 (x)");
        assert!(u.starts_with("0ne00ABC/registrations/reg-1/api-version=2019-03-31&ClientVersion=ironhub%2F0.1"));
        assert_eq!(parse_username(&u), Some(("0ne00ABC", "reg-1")));
        assert_eq!(parse_username("0ne/registrations/r"), Some(("0ne", "r")));
        assert_eq!(parse_username("hub.azure-devices.net/dev1/?api-version=2021-04-12"), None);
        assert_eq!(parse_username("hub/registrations/x/?api-version=1"), None);
        assert_eq!(parse_username("/registrations/r/api-version=1"), None);
        assert_eq!(parse_username("s/registrations/+/api-version=1"), None);
    }

    #[test]
    fn topics_round_trip() {
        assert_eq!(register_topic("7"), "$dps/registrations/PUT/iotdps-register/?$rid=7");
        assert_eq!(parse_request_topic(&register_topic("a b")), Some(Request::Register { request_id: "a b".into() }));
        let status = operation_status_topic("9", "4.abc");
        assert_eq!(status, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=9&operationId=4.abc");
        assert_eq!(
            parse_request_topic(&status),
            Some(Request::OperationStatus { request_id: "9".into(), operation_id: "4.abc".into() })
        );
        assert_eq!(parse_request_topic("$dps/registrations/PUT/iotdps-register/?x=1"), None);
        assert_eq!(parse_request_topic("devices/d/messages/events/"), None);
        let res = response_topic(202, "9", Some(3));
        assert_eq!(res, "$dps/registrations/res/202/?$rid=9&retry-after=3");
        assert_eq!(parse_response_topic(&res), Some(Response { status: 202, request_id: "9".into(), retry_after: Some(3) }));
        assert_eq!(parse_response_topic("$dps/registrations/res/200/?$rid=1").unwrap().retry_after, None);
        assert_eq!(parse_response_topic("$dps/registrations/res/abc/?$rid=1"), None);
    }

    #[test]
    fn derived_key_is_hmac_of_the_registration_id() {
        // Expected value computed independently with Python's hmac/hashlib/base64.
        let group = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let key = derive_device_key(group, "sn-007").unwrap();
        assert_eq!(key, "54CJD1fmnlkmA/A62fmzztBIge/NyTeaS5FsXXWh2q4=");
        assert_ne!(key, derive_device_key(group, "sn-008").unwrap());
        assert!(derive_device_key("not base64!", "x").is_err());
    }
}
