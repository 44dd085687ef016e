//! Who may say what: the identity behind a client id (the CONNECT username check is
//! `ironhub_protocol::username::matches`), and which
//! subscription filters an identity may hold. Pure functions, so every rule is unit-tested.
//!
//! IoT Hub confines a client to its own identity's topics plus `$iothub/...` (whose
//! deliveries are per connection, so they can never leak another identity's traffic).
//! Publishes are checked in `inbound` by parsing the topic with `ironhub_protocol::topics`.

use rumqttc::mqttbytes::valid_filter;

use crate::identity::Identity;

/// `d` or `d/m`; anything else (empty parts, wildcards, more segments) is not an identity.
pub(super) fn identity_from_client_id(client_id: &str) -> Option<Identity> {
    let valid = |s: &str| !s.is_empty() && !s.contains(['+', '#', '\0']);
    let mut parts = client_id.split('/');
    let device = parts.next()?;
    let module = parts.next();
    if parts.next().is_some() || !valid(device) || !module.is_none_or(valid) {
        return None;
    }
    Some(match module {
        Some(m) => Identity::module(device, m),
        None => Identity::device(device),
    })
}

/// Topic prefixes (ending in `/`) under which `id` may subscribe, besides `$iothub/`.
fn own_subscription_prefix(id: &Identity) -> String {
    match &id.module_id {
        Some(m) => format!("devices/{}/modules/{}/inputs/", id.device_id, m),
        None => format!("devices/{}/messages/devicebound/", id.device_id),
    }
}

/// Whether `id` may subscribe to `filter`. Wildcards are fine inside the identity's own
/// subtree but never in the part that names the identity (`devices/+/...` would otherwise
/// be a way to listen to other devices).
pub(super) fn may_subscribe(id: &Identity, filter: &str) -> bool {
    if !valid_filter(filter) {
        return false;
    }
    if filter.starts_with("$iothub/") {
        return true;
    }
    let prefix = own_subscription_prefix(id);
    filter.starts_with(&prefix) || filter == prefix.trim_end_matches('/')
}

/// MQTT 3.1.1 §4.7 topic matching. rumqttc's `matches` refuses every `$` topic, but IoT Hub
/// lives under `$iothub/`: a `$` topic matches a filter that names its first level
/// literally, never one starting with a wildcard.
pub(super) fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match levels.next() {
            Some(level) if f == "+" || f == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        assert_eq!(identity_from_client_id("dev1"), Some(Identity::device("dev1")));
        assert_eq!(identity_from_client_id("dev1/mod1"), Some(Identity::module("dev1", "mod1")));
        for bad in ["", "/m", "d/", "d/m/x", "d+", "#", "d/m#"] {
            assert_eq!(identity_from_client_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        assert!(filter_matches("$iothub/twin/PATCH/properties/desired/#", "$iothub/twin/PATCH/properties/desired/?$version=3"));
        assert!(filter_matches("$iothub/methods/POST/#", "$iothub/methods/POST/reboot/?$rid=1"));
        assert!(filter_matches("devices/d/messages/devicebound/#", "devices/d/messages/devicebound/%24.mid=1"));
        assert!(filter_matches("devices/d/messages/devicebound/#", "devices/d/messages/devicebound"));
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(!filter_matches("a/+/c", "a/b/c/d"));
        assert!(!filter_matches("a/b", "a/b/c"));
        assert!(!filter_matches("#", "$iothub/methods/POST/x"));
        assert!(!filter_matches("+/methods/#", "$iothub/methods/POST/x"));
        assert!(!filter_matches("devices/d/messages/devicebound/#", "devices/d2/messages/devicebound/x"));
    }

    #[test]
    fn subscriptions() {
        let dev = Identity::device("d1");
        let module = Identity::module("d1", "m1");
        assert!(may_subscribe(&dev, "devices/d1/messages/devicebound/#"));
        assert!(may_subscribe(&dev, "$iothub/methods/POST/#"));
        assert!(may_subscribe(&dev, "$iothub/twin/res/#"));
        assert!(may_subscribe(&module, "devices/d1/modules/m1/inputs/#"));
        assert!(!may_subscribe(&dev, "devices/d2/messages/devicebound/#"));
        assert!(!may_subscribe(&dev, "devices/+/messages/devicebound/#"));
        assert!(!may_subscribe(&dev, "devices/#"));
        assert!(!may_subscribe(&dev, "#"));
        assert!(!may_subscribe(&dev, "devices/d1/messages/events/#"));
        assert!(!may_subscribe(&module, "devices/d1/messages/devicebound/#"));
        assert!(!may_subscribe(&module, "devices/d1/modules/m2/inputs/#"));
        assert!(!may_subscribe(&dev, "devices/d1/messages/devicebound/#/x"));
    }
}
