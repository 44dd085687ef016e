//! IoT Hub connection strings: `;`-separated `Key=Value` pairs, validated as azure-iot-device validates
//! them (same rules, same error wording), for device, module and service (policy) identities.

use std::fmt;

use crate::ProtocolError;

const KEYS: [&str; 8] = [
    "HostName",
    "DeviceId",
    "ModuleId",
    "SharedAccessKey",
    "SharedAccessKeyName",
    "SharedAccessSignature",
    "GatewayHostName",
    "x509",
];

#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectionString {
    pub host_name: String,
    pub device_id: Option<String>,
    pub module_id: Option<String>,
    pub shared_access_key: Option<String>,
    pub shared_access_key_name: Option<String>,
    pub shared_access_signature: Option<String>,
    pub gateway_host_name: Option<String>,
    /// `x509=true`: the identity authenticates with a client certificate.
    pub x509: bool,
}

impl ConnectionString {
    pub fn parse(s: &str) -> Result<ConnectionString, ProtocolError> {
        use ProtocolError::InvalidConnectionString as Invalid;
        let mut cs = ConnectionString::default();
        let mut seen: Vec<&str> = Vec::new();
        let mut host = None;
        let mut x509 = None;
        for segment in s.split(';') {
            let (key, value) = segment.split_once('=').ok_or(Invalid("Unable to parse"))?;
            if !KEYS.contains(&key) || seen.contains(&key) {
                return Err(Invalid("Invalid Key"));
            }
            seen.push(key);
            let value = value.to_string();
            match key {
                "HostName" => host = Some(value),
                "DeviceId" => cs.device_id = Some(value),
                "ModuleId" => cs.module_id = Some(value),
                "SharedAccessKey" => cs.shared_access_key = Some(value),
                "SharedAccessKeyName" => cs.shared_access_key_name = Some(value),
                "SharedAccessSignature" => cs.shared_access_signature = Some(value),
                "GatewayHostName" => cs.gateway_host_name = Some(value),
                _ => x509 = Some(value),
            }
        }
        cs.x509 = x509.is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if cs.shared_access_key.is_some() && cs.x509 {
            return Err(Invalid("Mixed authentication scheme"));
        }
        let present = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
        let host_ok = host.as_deref().is_some_and(|h| !h.is_empty());
        let device_identity = host_ok && present(&cs.device_id) && (present(&cs.shared_access_key) || cs.x509);
        let service_identity = host_ok && present(&cs.shared_access_key) && present(&cs.shared_access_key_name);
        if !(device_identity || service_identity) {
            return Err(Invalid("Incomplete"));
        }
        cs.host_name = host.unwrap_or_default();
        Ok(cs)
    }

    /// True for a policy (service) connection string: `SharedAccessKeyName` and no device.
    pub fn is_service(&self) -> bool {
        self.shared_access_key_name.is_some() && self.device_id.is_none()
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectionString")
            .field("host_name", &self.host_name)
            .field("device_id", &self.device_id)
            .field("module_id", &self.module_id)
            .field("shared_access_key", &redact(&self.shared_access_key))
            .field("shared_access_key_name", &self.shared_access_key_name)
            .field("shared_access_signature", &redact(&self.shared_access_signature))
            .field("gateway_host_name", &self.gateway_host_name)
            .field("x509", &self.x509)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0a2V5c2VjcmV0a2V5";

    #[test]
    fn parses_device_module_and_service_strings() {
        let cs = ConnectionString::parse(&format!("HostName=h.net;DeviceId=d;ModuleId=m;SharedAccessKey={KEY};GatewayHostName=gw")).unwrap();
        assert_eq!(cs.host_name, "h.net");
        assert_eq!(cs.device_id.as_deref(), Some("d"));
        assert_eq!(cs.module_id.as_deref(), Some("m"));
        assert_eq!(cs.gateway_host_name.as_deref(), Some("gw"));
        assert!(!cs.is_service());
        let svc = ConnectionString::parse(&format!("HostName=h:8443;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}")).unwrap();
        assert!(svc.is_service());
        assert_eq!(svc.host_name, "h:8443");
        let x = ConnectionString::parse("HostName=h;DeviceId=d;x509=True").unwrap();
        assert!(x.x509);
    }

    #[test]
    fn value_may_contain_equals_signs() {
        let cs = ConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=abc==").unwrap();
        assert_eq!(cs.shared_access_key.as_deref(), Some("abc=="));
    }

    #[test]
    fn rejects_what_azure_iot_device_rejects() {
        let cases = [
            ("HostName=h;DeviceId", "Unable to parse"),
            ("HostName=h;DeviceId=d;SharedAccessKey=k;", "Unable to parse"),
            ("HostName=h;DeviceId=d;DeviceId=e;SharedAccessKey=k", "Invalid Key"),
            ("HostName=h;DeviceId=d;Foo=1;SharedAccessKey=k", "Invalid Key"),
            ("hostname=h;DeviceId=d;SharedAccessKey=k", "Invalid Key"),
            ("HostName=h;DeviceId=d;SharedAccessKey=k;x509=true", "Mixed authentication scheme"),
            ("HostName=h;DeviceId=d", "Incomplete"),
            ("HostName=h;SharedAccessKey=k", "Incomplete"),
            ("DeviceId=d;SharedAccessKey=k", "Incomplete"),
            ("HostName=;DeviceId=d;SharedAccessKey=k", "Incomplete"),
            ("", "Unable to parse"),
        ];
        for (input, reason) in cases {
            let err = ConnectionString::parse(input).unwrap_err();
            assert_eq!(err, ProtocolError::InvalidConnectionString(reason), "{input}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_the_key() {
        let s = "HostName=h;DeviceId=d;SharedAccessKey=SUPERSECRET;Bogus=1";
        assert!(!ConnectionString::parse(s).unwrap_err().to_string().contains("SUPERSECRET"));
        let ok = ConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=SUPERSECRET").unwrap();
        assert!(!format!("{ok:?}").contains("SUPERSECRET"));
    }
}
