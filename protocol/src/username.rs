//! The MQTT CONNECT username of a device or module (wire-protocol.md): written by the client,
//! checked by the hub.
//!
//! `{hubHostname}/{clientId}/?api-version=..&DeviceClientType=..[&model-id=..]`

use crate::encoding::percent_encode;

/// API version of the MQTT surface; Plug and Play (`model-id`) needs the newer one.
pub const API_VERSION: &str = "2019-10-01";
pub const PNP_API_VERSION: &str = "2020-09-30";

/// The username a client sends. `product_info` is appended to `user_agent`, unless it is a
/// `dtmi:` model id, which is sent as `model-id` instead.
pub fn device_username(hostname: &str, client_id: &str, user_agent: &str, product_info: &str) -> String {
    let base = format!("{hostname}/{client_id}/");
    if product_info.starts_with("dtmi") {
        format!(
            "{base}?api-version={PNP_API_VERSION}&DeviceClientType={}&model-id={}",
            percent_encode(user_agent),
            percent_encode(product_info)
        )
    } else {
        format!("{base}?api-version={API_VERSION}&DeviceClientType={}", percent_encode(&format!("{user_agent}{product_info}")))
    }
}

/// Whether `username` is `{hubHostname}/{clientId}/` followed by nothing or a `?query`. The host
/// compares case-insensitively (DNS names do) and may carry a `:port`, which clients add when the
/// hub listens on a non-default port.
pub fn matches(username: &str, hub_hostname: &str, client_id: &str) -> bool {
    let Some((host, rest)) = username.split_once('/') else { return false };
    let host_ok = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            name.eq_ignore_ascii_case(hub_hostname) || host.eq_ignore_ascii_case(hub_hostname)
        }
        _ => host.eq_ignore_ascii_case(hub_hostname),
    };
    let Some(after_id) = rest.strip_prefix(client_id) else { return false };
    host_ok && (after_id.is_empty() || after_id == "/" || after_id.starts_with("/?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_wire_protocol() {
        let u = device_username("hub.example", "dev1/mod1", "ironhub/0.1.0", " extra");
        assert!(u.starts_with("hub.example/dev1/mod1/?api-version=2019-10-01&DeviceClientType=ironhub%2F"), "{u}");
        assert!(u.ends_with("%20extra"), "{u}");
        let pnp = device_username("hub.example", "dev1", "ironhub/0.1.0", "dtmi:com:example:Thermostat;1");
        assert!(pnp.starts_with("hub.example/dev1/?api-version=2020-09-30&DeviceClientType="), "{pnp}");
        assert!(pnp.ends_with("&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1"), "{pnp}");
    }

    #[test]
    fn what_the_client_writes_the_hub_accepts() {
        for (client_id, info) in [("dev1", ""), ("dev1/mod1", " x"), ("dev1", "dtmi:a:b;1")] {
            let u = device_username("Hub.Example", client_id, "ironhub/1", info);
            assert!(matches(&u, "hub.example", client_id), "{u}");
            assert!(!matches(&u, "hub.example", "dev", ), "a prefix of the id is another id: {u}");
        }
    }

    #[test]
    fn the_hub_checks_host_and_client_id() {
        let ok = "hub.example/dev1/?api-version=2019-10-01&DeviceClientType=x";
        assert!(matches(ok, "hub.example", "dev1"));
        assert!(matches("HUB.Example/dev1/?api-version=1", "hub.example", "dev1"));
        assert!(matches("hub.example:8883/dev1/?api-version=1", "hub.example", "dev1"));
        assert!(matches("hub.example/dev1/mod1/?api-version=1", "hub.example", "dev1/mod1"));
        assert!(matches("hub.example/dev1/", "hub.example", "dev1"));
        assert!(!matches("other.example/dev1/?api-version=1", "hub.example", "dev1"));
        assert!(!matches("hub.example/dev2/?api-version=1", "hub.example", "dev1"));
        assert!(!matches("hub.example/dev10/?api-version=1", "hub.example", "dev1"));
        assert!(!matches("hub.example:x/dev1/", "hub.example", "dev1"));
        assert!(!matches("hub.example", "hub.example", "dev1"));
    }
}
