//! The input rules every surface (Rust, C, Python, Go) applies: one function per rule, owned
//! here so that the surfaces accept and refuse exactly the same values with the same error kind
//! (`ErrorKind::InvalidArgument`). Surfaces call these at the point where their users give the
//! value (a C setter, a Python factory); the core's factories call the ones about options.
//! `tests/validation_cases.json` is the one table of cases that every surface runs.

use crate::error::{Error, Result};
use crate::message::Message;
use crate::options::{ClientOptions, ProxyOptions, ProxyType};

/// `Message.expiry_time_utc` must be an RFC 3339 (ISO 8601 with offset) timestamp, e.g.
/// `2030-01-01T00:00:00Z`: IoT Hub drops a message whose `$.exp` it cannot parse.
pub fn expiry_time_utc(value: &str) -> Result<()> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|_| ())
        .map_err(|_| Error::invalid(format!("expiry_time_utc {value:?} is not an ISO 8601 (RFC 3339) timestamp")))
}

/// An application property key must not be empty: an empty key cannot be encoded in the
/// property bag of the topic (`=value` is parsed by the hub as a malformed pair).
pub fn property_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("application property key is empty"));
    }
    Ok(())
}

/// Every rule about a message's fields, checked before it is sent.
pub fn message(m: &Message) -> Result<()> {
    if let Some(exp) = &m.expiry_time_utc {
        expiry_time_utc(exp)?;
    }
    m.custom_properties.iter().try_for_each(|(k, _)| property_key(k))
}

/// Proxy type names, case-insensitive in every surface: `HTTP`, `SOCKS4`, `SOCKS5`.
/// SOCKS is accepted here; connecting through it is the transport's job.
pub fn proxy_type(value: &str) -> Result<ProxyType> {
    ProxyType::parse(value)
}

/// A proxy needs an address and a port. (A password without a user name is accepted and unused,
/// as azure-iot-device's PySocks does: HTTP Basic and SOCKS5 authentication need the pair.)
pub fn proxy_options(p: &ProxyOptions) -> Result<()> {
    if p.proxy_addr.trim().is_empty() || p.proxy_port == 0 {
        return Err(Error::invalid("proxy_options needs an address and a non-zero port"));
    }
    if cfg!(not(feature = "proxy")) {
        return Err(needs_feature("proxy_options", "proxy"));
    }
    Ok(())
}

/// `websockets=True` (MQTT over WebSockets on `https_port`) needs the `websocket` feature.
pub fn websockets(enabled: bool) -> Result<()> {
    if enabled && cfg!(not(feature = "websocket")) {
        return Err(needs_feature("websockets", "websocket"));
    }
    Ok(())
}

/// An option whose code this build leaves out (a Cargo feature turned off, e.g. in a firmware
/// build): refused when it is given, naming the feature, rather than ignored or failing later on
/// the network.
pub(crate) fn needs_feature(option: &str, feature: &str) -> Error {
    Error::invalid(format!(
        "{option} needs ironhub built with its `{feature}` Cargo feature, which this build leaves out"
    ))
}

/// The `cipher` option: OpenSSL (or IANA) suite names that rustls with ring offers; an unknown or
/// unsupported name is refused naming it (the list decides the TLS versions too: `tls`).
pub fn cipher(value: &str) -> Result<()> {
    crate::transport::tls::parse_cipher_list(value).map(|_| ())
}

/// `sastoken_ttl` applies only to tokens the client signs itself, so a client authenticated by
/// an X.509 certificate (or by a user-supplied token) refuses it instead of ignoring it.
pub fn sastoken_ttl_refused(options: &ClientOptions, credential: &str) -> Result<()> {
    if options.sastoken_ttl.is_some() {
        return Err(Error::invalid(format!("sastoken_ttl is not allowed with {credential}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_refuses_with_invalid_argument() {
        use crate::ErrorKind::InvalidArgument;
        assert!(expiry_time_utc("2030-01-01T00:00:00Z").is_ok());
        assert_eq!(expiry_time_utc("tomorrow").unwrap_err().kind(), InvalidArgument);
        assert_eq!(property_key("").unwrap_err().kind(), InvalidArgument);
        assert_eq!(proxy_type("socks5").unwrap(), ProxyType::Socks5);
        assert!(cipher("ECDHE-ECDSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256").is_ok());
        let e = cipher("ECDHE-ECDSA-AES128-GCM-SHA256:AES128-SHA").unwrap_err();
        assert_eq!(e.kind(), InvalidArgument);
        assert!(e.to_string().contains("\"AES128-SHA\""), "{e}");
        let opts = ClientOptions { sastoken_ttl: Some(60), ..Default::default() };
        assert_eq!(sastoken_ttl_refused(&opts, "X.509").unwrap_err().kind(), InvalidArgument);
        let mut m = Message::new("x");
        m.custom_properties.push((String::new(), "v".into()));
        assert!(message(&m).is_err());
    }
}
