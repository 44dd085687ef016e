//! MQTT topic names and property bags of IoT Hub's device-side protocol.
//!
//! Device and module ids are never encoded in topics (the hub does not decode them); every other piece
//! (property keys and values, input and method names) is percent-encoded with no safe characters.
//! Builders produce exactly what azure-iot-device 2.14 puts on the wire; parsers are lenient about
//! what they receive (a missing trailing `/`, an empty property bag, empty `&&` segments).

use crate::encoding::{percent_decode, percent_encode};

pub const METHOD_REQUEST_FILTER: &str = "$iothub/methods/POST/#";
pub const TWIN_RESPONSE_FILTER: &str = "$iothub/twin/res/#";
pub const DESIRED_PATCH_FILTER: &str = "$iothub/twin/PATCH/properties/desired/#";

const METHOD_REQUEST_PREFIX: &str = "$iothub/methods/POST/";
const METHOD_RESPONSE_PREFIX: &str = "$iothub/methods/res/";
const TWIN_RESPONSE_PREFIX: &str = "$iothub/twin/res/";
const TWIN_GET_PREFIX: &str = "$iothub/twin/GET/";
const TWIN_REPORTED_PREFIX: &str = "$iothub/twin/PATCH/properties/reported/";
const DESIRED_PATCH_PREFIX: &str = "$iothub/twin/PATCH/properties/desired/";

/// The properties that travel in a topic: IoT Hub's system properties by name, the rest in `custom`.
///
/// Incoming bags fill every field they know, including `$.on`, `$.cdid` and `$.cmid`;
/// [`PropertyBag::take_received_custom`] is how a client surfaces them (as azure-iot-device does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyBag {
    /// `$.mid`
    pub message_id: Option<String>,
    /// `$.cid`
    pub correlation_id: Option<String>,
    /// `$.uid`
    pub user_id: Option<String>,
    /// `$.ct`
    pub content_type: Option<String>,
    /// `$.ce`
    pub content_encoding: Option<String>,
    /// `$.exp`, ISO 8601
    pub expiry_time_utc: Option<String>,
    /// `$.on`: the module output a message was sent to.
    pub output_name: Option<String>,
    /// `$.ifid`: set by `set_as_security_message()`.
    pub interface_id: Option<String>,
    /// `$.to`
    pub to: Option<String>,
    /// `$.cdid`: the device that sent a routed or C2D message.
    pub connection_device_id: Option<String>,
    /// `$.cmid`: the module that sent a routed message.
    pub connection_module_id: Option<String>,
    /// `iothub-ack` on C2D messages.
    pub ack: Option<String>,
    /// Application properties, in arrival order.
    pub custom: Vec<(String, String)>,
}

impl PropertyBag {
    /// System properties (in the order azure-iot-device writes them) paired with their wire keys.
    fn system(&self) -> [(&'static str, &Option<String>); 12] {
        [
            ("$.on", &self.output_name),
            ("$.mid", &self.message_id),
            ("$.cid", &self.correlation_id),
            ("$.uid", &self.user_id),
            ("$.ct", &self.content_type),
            ("$.ce", &self.content_encoding),
            ("$.ifid", &self.interface_id),
            ("$.exp", &self.expiry_time_utc),
            ("$.to", &self.to),
            ("$.cdid", &self.connection_device_id),
            ("$.cmid", &self.connection_module_id),
            ("iothub-ack", &self.ack),
        ]
    }

    fn system_mut(&mut self, key: &str) -> Option<&mut Option<String>> {
        Some(match key {
            "$.on" => &mut self.output_name,
            "$.mid" => &mut self.message_id,
            "$.cid" => &mut self.correlation_id,
            "$.uid" => &mut self.user_id,
            "$.ct" => &mut self.content_type,
            "$.ce" => &mut self.content_encoding,
            "$.ifid" => &mut self.interface_id,
            "$.exp" => &mut self.expiry_time_utc,
            "$.to" => &mut self.to,
            "$.cdid" => &mut self.connection_device_id,
            "$.cmid" => &mut self.connection_module_id,
            "iothub-ack" => &mut self.ack,
            _ => return None,
        })
    }

    /// The application properties of a received C2D or input message as azure-iot-device surfaces
    /// them: the routing facts `$.on`, `$.cdid`, `$.cmid` first (taken out of the bag), then the
    /// custom properties in arrival order. `$.to` is not surfaced.
    pub fn take_received_custom(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(self.custom.len() + 3);
        for (k, v) in [
            ("$.on", self.output_name.take()),
            ("$.cdid", self.connection_device_id.take()),
            ("$.cmid", self.connection_module_id.take()),
        ] {
            if let Some(v) = v {
                out.push((k.to_string(), v));
            }
        }
        out.append(&mut self.custom);
        out
    }

    /// True when no property at all is set.
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty() && self.system().iter().all(|(_, v)| v.is_none())
    }

    /// The custom property `key`, if present.
    pub fn custom(&self, key: &str) -> Option<&str> {
        self.custom.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `key=value&...`: system properties first, then custom properties sorted by key, all percent-encoded.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let mut push = |k: &str, v: &str| {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(&percent_encode(k));
            out.push('=');
            out.push_str(&percent_encode(v));
        };
        for (key, value) in self.system() {
            if let Some(v) = value {
                push(key, v);
            }
        }
        let mut custom: Vec<&(String, String)> = self.custom.iter().collect();
        custom.sort();
        for (k, v) in custom {
            push(k, v);
        }
        out
    }

    /// Parses `key=value&...`. Empty segments are skipped and a segment without `=` is a key with an
    /// empty value: a malformed bag from the network degrades, it never fails a receive.
    pub fn decode(bag: &str) -> PropertyBag {
        let mut out = PropertyBag::default();
        for segment in bag.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = segment.split_once('=').unwrap_or((segment, ""));
            let (key, value) = (percent_decode(k), percent_decode(v));
            match out.system_mut(&key) {
                Some(slot) => *slot = Some(value),
                None => out.custom.push((key, value)),
            }
        }
        out
    }

    /// Wire size of the properties as IoT Hub counts them toward the 256 KB message limit: the UTF-8
    /// lengths of every key and value.
    pub fn size_in_bytes(&self) -> usize {
        let system: usize = self.system().iter().filter_map(|(k, v)| v.as_ref().map(|v| k.len() + v.len())).sum();
        system + self.custom.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}

fn identity_prefix(device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(m) => format!("devices/{device_id}/modules/{m}"),
        None => format!("devices/{device_id}"),
    }
}

/// `devices/{d}[/modules/{m}]/messages/events/{props}` (module outputs carry `$.on` in the bag).
pub fn telemetry_topic(device_id: &str, module_id: Option<&str>, bag: &PropertyBag) -> String {
    format!("{}/messages/events/{}", identity_prefix(device_id, module_id), bag.encode())
}

/// `devices/{d}/messages/devicebound/{props}`
pub fn c2d_topic(device_id: &str, bag: &PropertyBag) -> String {
    format!("devices/{device_id}/messages/devicebound/{}", bag.encode())
}

/// `devices/{d}/modules/{m}/inputs/{input}/{props}`
pub fn input_topic(device_id: &str, module_id: &str, input_name: &str, bag: &PropertyBag) -> String {
    format!("devices/{device_id}/modules/{module_id}/inputs/{}/{}", percent_encode(input_name), bag.encode())
}

pub fn c2d_filter(device_id: &str) -> String {
    format!("devices/{device_id}/messages/devicebound/#")
}

pub fn input_filter(device_id: &str, module_id: &str) -> String {
    format!("devices/{device_id}/modules/{module_id}/inputs/#")
}

pub fn method_request_topic(name: &str, rid: &str) -> String {
    format!("{METHOD_REQUEST_PREFIX}{}/?$rid={}", percent_encode(name), percent_encode(rid))
}

pub fn method_response_topic(status: i32, rid: &str) -> String {
    format!("{METHOD_RESPONSE_PREFIX}{status}/?$rid={}", percent_encode(rid))
}

pub fn twin_get_topic(rid: &str) -> String {
    format!("{TWIN_GET_PREFIX}?$rid={}", percent_encode(rid))
}

pub fn twin_reported_patch_topic(rid: &str) -> String {
    format!("{TWIN_REPORTED_PREFIX}?$rid={}", percent_encode(rid))
}

pub fn twin_response_topic(status: u16, rid: &str, version: Option<u64>) -> String {
    let mut topic = format!("{TWIN_RESPONSE_PREFIX}{status}/?$rid={}", percent_encode(rid));
    if let Some(v) = version {
        topic.push_str(&format!("&$version={v}"));
    }
    topic
}

pub fn desired_patch_topic(version: u64) -> String {
    format!("{DESIRED_PATCH_PREFIX}?$version={version}")
}

/// A topic the hub publishes to a device or module.
// Parsed topics live for one message and are matched by value at once: boxing the property bag to
// shrink the enum would cost an allocation per message on the hot path for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceBound {
    C2d { device_id: String, bag: PropertyBag },
    Input { device_id: String, module_id: String, input_name: String, bag: PropertyBag },
    MethodRequest { name: String, rid: String },
    TwinResponse { status: u16, rid: String, version: Option<u64> },
    DesiredPatch { version: Option<u64> },
}

/// A topic a device or module publishes to.
// Parsed topics live for one message and are matched by value at once: boxing the property bag to
// shrink the enum would cost an allocation per message on the hot path for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceOriginated {
    Telemetry { device_id: String, module_id: Option<String>, bag: PropertyBag },
    MethodResponse { status: i32, rid: String },
    TwinGet { rid: String },
    TwinReportedPatch { rid: String },
}

/// The value of `key` in a `?a=1&b=2` query (the leading `?` optional), decoded.
fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

/// `{first}/{rest}` → (first, rest); `rest` may be empty or missing.
fn split_segment(s: &str) -> (&str, &str) {
    s.split_once('/').unwrap_or((s, ""))
}

/// `$rid` of a request/response topic; missing → empty (the caller then matches nothing).
fn rid_of(query: &str) -> String {
    query_param(query, "$rid").unwrap_or_default()
}

pub fn parse_device_bound(topic: &str) -> Option<DeviceBound> {
    if let Some(rest) = topic.strip_prefix(METHOD_REQUEST_PREFIX) {
        let (name, query) = split_segment(rest);
        return Some(DeviceBound::MethodRequest { name: percent_decode(name), rid: rid_of(query) });
    }
    if let Some(rest) = topic.strip_prefix(TWIN_RESPONSE_PREFIX) {
        let (status, query) = split_segment(rest);
        return Some(DeviceBound::TwinResponse {
            status: status.parse().ok()?,
            rid: rid_of(query),
            version: query_param(query, "$version").and_then(|v| v.parse().ok()),
        });
    }
    if let Some(query) = topic.strip_prefix(DESIRED_PATCH_PREFIX) {
        return Some(DeviceBound::DesiredPatch {
            version: query_param(query, "$version").and_then(|v| v.parse().ok()),
        });
    }
    let rest = topic.strip_prefix("devices/")?;
    let (device_id, rest) = split_segment(rest);
    if device_id.is_empty() {
        return None;
    }
    if let Some(bag) = rest.strip_prefix("messages/devicebound") {
        let bag = bag.strip_prefix('/').unwrap_or(bag);
        return Some(DeviceBound::C2d { device_id: device_id.into(), bag: PropertyBag::decode(bag) });
    }
    let rest = rest.strip_prefix("modules/")?;
    let (module_id, rest) = split_segment(rest);
    let rest = rest.strip_prefix("inputs/")?;
    let (input_name, bag) = split_segment(rest);
    if module_id.is_empty() || input_name.is_empty() {
        return None;
    }
    Some(DeviceBound::Input {
        device_id: device_id.into(),
        module_id: module_id.into(),
        input_name: percent_decode(input_name),
        bag: PropertyBag::decode(bag),
    })
}

pub fn parse_device_originated(topic: &str) -> Option<DeviceOriginated> {
    if let Some(rest) = topic.strip_prefix(METHOD_RESPONSE_PREFIX) {
        let (status, query) = split_segment(rest);
        return Some(DeviceOriginated::MethodResponse { status: status.parse().ok()?, rid: rid_of(query) });
    }
    if let Some(query) = topic.strip_prefix(TWIN_GET_PREFIX) {
        return Some(DeviceOriginated::TwinGet { rid: rid_of(query) });
    }
    if let Some(query) = topic.strip_prefix(TWIN_REPORTED_PREFIX) {
        return Some(DeviceOriginated::TwinReportedPatch { rid: rid_of(query) });
    }
    let rest = topic.strip_prefix("devices/")?;
    let (device_id, rest) = split_segment(rest);
    if device_id.is_empty() {
        return None;
    }
    let (module_id, rest) = match rest.strip_prefix("modules/") {
        Some(r) => {
            let (m, r) = split_segment(r);
            if m.is_empty() {
                return None;
            }
            (Some(m.to_string()), r)
        }
        None => (None, rest),
    };
    let bag = rest.strip_prefix("messages/events")?;
    if !(bag.is_empty() || bag.starts_with('/')) {
        return None;
    }
    // azure-iot-device-mqtt (Node) and IoT Edge hub's templates end the bag with `/`
    // (`.../events/%24.on=out1&k=v/`): that `/` closes the list and is no part of the last value
    // (encoded keys and values never hold a bare `/`).
    let bag = bag.trim_start_matches('/');
    Some(DeviceOriginated::Telemetry {
        device_id: device_id.into(),
        module_id,
        bag: PropertyBag::decode(bag.strip_suffix('/').unwrap_or(bag)),
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn received_custom_properties_surface_routing_facts_first() {
        let mut bag = PropertyBag::decode("k=v&%24.cdid=d0&%24.on=out1&%24.to=%2Fdevices%2Fd&%24.cmid=m0");
        let custom = bag.take_received_custom();
        let want: Vec<(String, String)> = [("$.on", "out1"), ("$.cdid", "d0"), ("$.cmid", "m0"), ("k", "v")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(custom, want);
        assert!(bag.output_name.is_none() && bag.custom.is_empty());
        assert_eq!(bag.to.as_deref(), Some("/devices/d"), "$.to stays a system property");
    }

    use super::*;

    #[test]
    fn trailing_slash_after_the_property_list_is_not_part_of_the_last_value() {
        let topic = "devices/D/modules/M/messages/events/%24.on=out1&k=v%20w/";
        let Some(DeviceOriginated::Telemetry { bag, .. }) = parse_device_originated(topic) else { panic!() };
        assert_eq!(bag.output_name.as_deref(), Some("out1"));
        assert_eq!(bag.custom, vec![("k".to_string(), "v w".to_string())]);
        let Some(DeviceOriginated::Telemetry { bag, .. }) = parse_device_originated("devices/D/messages/events/a=%2F/") else {
            panic!()
        };
        assert_eq!(bag.custom("a"), Some("/"), "an encoded slash stays in the value");
    }

    fn sample_bag() -> PropertyBag {
        PropertyBag {
            output_name: Some("out 1".into()),
            message_id: Some("m 1/2".into()),
            content_type: Some("application/json".into()),
            custom: vec![("b".into(), "x y".into()), ("a".into(), "1&2=3".into())],
            ..Default::default()
        }
    }

    #[test]
    fn telemetry_topic_matches_the_spec_example() {
        assert_eq!(
            telemetry_topic("dev1", Some("mod1"), &sample_bag()),
            "devices/dev1/modules/mod1/messages/events/%24.on=out%201&%24.mid=m%201%2F2&%24.ct=application%2Fjson&a=1%262%3D3&b=x%20y"
        );
        assert_eq!(telemetry_topic("d", None, &PropertyBag::default()), "devices/d/messages/events/");
    }

    #[test]
    fn system_properties_keep_sdk_order() {
        let bag = PropertyBag {
            expiry_time_utc: Some("2030-01-01T00:00:00+00:00".into()),
            interface_id: Some("urn:azureiot:Security:SecurityAgent:1".into()),
            content_encoding: Some("utf-8".into()),
            user_id: Some("u".into()),
            correlation_id: Some("c".into()),
            ..Default::default()
        };
        let keys: Vec<String> =
            bag.encode().split('&').map(|kv| kv.split('=').next().unwrap().to_string()).collect();
        assert_eq!(keys, ["%24.cid", "%24.uid", "%24.ce", "%24.ifid", "%24.exp"]);
    }

    #[test]
    fn bag_round_trips_unicode_and_reserved_characters() {
        let mut bag = sample_bag();
        bag.custom.push(("ключ ✓".into(), "a/b?c#d%e+f".into()));
        let decoded = PropertyBag::decode(&bag.encode());
        let mut expected = bag.clone();
        expected.custom.sort();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn decode_is_lenient() {
        let bag = PropertyBag::decode("&a=1&&flag&%24.to=%2Fdevices%2Fd&iothub-ack=full&%24.cdid=d1&%ZZ=1");
        assert_eq!(bag.custom, vec![("a".into(), "1".into()), ("flag".into(), "".into()), ("%ZZ".into(), "1".into())]);
        assert_eq!(bag.to.as_deref(), Some("/devices/d"));
        assert_eq!(bag.ack.as_deref(), Some("full"));
        assert_eq!(bag.connection_device_id.as_deref(), Some("d1"));
        assert!(PropertyBag::decode("").is_empty());
    }

    #[test]
    fn parses_what_the_hub_sends() {
        assert_eq!(
            parse_device_bound("devices/d1/messages/devicebound/%24.mid=7&k=v%20w"),
            Some(DeviceBound::C2d {
                device_id: "d1".into(),
                bag: PropertyBag {
                    message_id: Some("7".into()),
                    custom: vec![("k".into(), "v w".into())],
                    ..Default::default()
                }
            })
        );
        assert!(matches!(
            parse_device_bound("devices/d1/messages/devicebound"),
            Some(DeviceBound::C2d { bag, .. }) if bag.is_empty()
        ));
        assert_eq!(
            parse_device_bound("devices/d/modules/m/inputs/in%201/%24.cdid=d&%24.cmid=m2"),
            Some(DeviceBound::Input {
                device_id: "d".into(),
                module_id: "m".into(),
                input_name: "in 1".into(),
                bag: PropertyBag {
                    connection_device_id: Some("d".into()),
                    connection_module_id: Some("m2".into()),
                    ..Default::default()
                }
            })
        );
        assert_eq!(
            parse_device_bound("$iothub/methods/POST/reboot/?$rid=1f"),
            Some(DeviceBound::MethodRequest { name: "reboot".into(), rid: "1f".into() })
        );
        assert_eq!(
            parse_device_bound("$iothub/twin/res/204/?$rid=9&$version=12"),
            Some(DeviceBound::TwinResponse { status: 204, rid: "9".into(), version: Some(12) })
        );
        assert_eq!(
            parse_device_bound("$iothub/twin/PATCH/properties/desired/?$version=3"),
            Some(DeviceBound::DesiredPatch { version: Some(3) })
        );
        assert_eq!(parse_device_bound("$iothub/twin/res/abc/?$rid=1"), None);
        assert_eq!(parse_device_bound("devices/d/modules/m/outputs/x"), None);
        assert_eq!(parse_device_bound("elsewhere/d"), None);
    }

    #[test]
    fn parses_what_devices_send() {
        assert_eq!(
            parse_device_originated("devices/d/modules/m/messages/events/%24.on=out&a=1"),
            Some(DeviceOriginated::Telemetry {
                device_id: "d".into(),
                module_id: Some("m".into()),
                bag: PropertyBag {
                    output_name: Some("out".into()),
                    custom: vec![("a".into(), "1".into())],
                    ..Default::default()
                }
            })
        );
        for t in ["devices/d/messages/events", "devices/d/messages/events/"] {
            assert!(matches!(
                parse_device_originated(t),
                Some(DeviceOriginated::Telemetry { module_id: None, bag, .. }) if bag.is_empty()
            ));
        }
        assert_eq!(
            parse_device_originated(&method_response_topic(-3, "r1")),
            Some(DeviceOriginated::MethodResponse { status: -3, rid: "r1".into() })
        );
        assert_eq!(parse_device_originated(&twin_get_topic("7")), Some(DeviceOriginated::TwinGet { rid: "7".into() }));
        assert_eq!(
            parse_device_originated(&twin_reported_patch_topic("8")),
            Some(DeviceOriginated::TwinReportedPatch { rid: "8".into() })
        );
        assert_eq!(parse_device_originated("devices/d/messages/eventsX"), None);
        assert_eq!(parse_device_originated("devices//messages/events/"), None);
        assert_eq!(parse_device_originated("devices/d/messages/devicebound/"), None);
    }

    #[test]
    fn builders_and_parsers_agree() {
        let bag = sample_bag();
        let Some(DeviceBound::Input { input_name, bag: back, .. }) =
            parse_device_bound(&input_topic("d", "m", "in/put", &bag))
        else {
            panic!("input topic did not parse")
        };
        assert_eq!(input_name, "in/put");
        assert_eq!(back.encode(), bag.encode());
        assert_eq!(twin_response_topic(200, "r", None), "$iothub/twin/res/200/?$rid=r");
        assert_eq!(desired_patch_topic(4), "$iothub/twin/PATCH/properties/desired/?$version=4");
        assert_eq!(c2d_filter("d"), "devices/d/messages/devicebound/#");
        assert_eq!(input_filter("d", "m"), "devices/d/modules/m/inputs/#");
    }

    #[test]
    fn size_counts_keys_and_values() {
        let bag = PropertyBag { message_id: Some("abc".into()), custom: vec![("k".into(), "vv".into())], ..Default::default() };
        assert_eq!(bag.size_in_bytes(), "$.mid".len() + 3 + 1 + 2);
    }
}
