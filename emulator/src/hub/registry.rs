//! Owns identity registry records (devices and modules): id validation, key generation,
//! authentication settings, and their JSON as the service API reads and writes it.

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::HubError;

/// How an identity authenticates, as IoT Hub names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AuthType {
    #[default]
    #[serde(rename = "sas")]
    Sas,
    #[serde(rename = "selfSigned")]
    SelfSigned,
    #[serde(rename = "certificateAuthority")]
    CertificateAuthority,
    #[serde(rename = "none")]
    None,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Sas => "sas",
            AuthType::SelfSigned => "selfSigned",
            AuthType::CertificateAuthority => "certificateAuthority",
            AuthType::None => "none",
        }
    }

    fn parse(s: &str) -> Result<Self, HubError> {
        match s {
            "sas" => Ok(AuthType::Sas),
            "selfSigned" => Ok(AuthType::SelfSigned),
            "certificateAuthority" => Ok(AuthType::CertificateAuthority),
            "none" => Ok(AuthType::None),
            other => Err(HubError::invalid(format!("Unknown authentication type '{other}'"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    #[serde(rename = "type")]
    pub auth_type: AuthType,
    pub primary_key: String,
    pub secondary_key: String,
    pub primary_thumbprint: Option<String>,
    pub secondary_thumbprint: Option<String>,
}

impl Authentication {
    /// A SAS identity with fresh random keys.
    pub fn generated_sas() -> Self {
        Authentication { auth_type: AuthType::Sas, primary_key: generate_key(), secondary_key: generate_key(), ..Default::default() }
    }

    /// Reads the `authentication` object of a device or module body. Missing or empty SAS keys
    /// are generated; given keys must be base64 (the hub signs with them).
    pub fn from_json(value: Option<&Value>, previous: Option<&Authentication>) -> Result<Self, HubError> {
        let value = match value {
            None | Some(Value::Null) => return Ok(previous.cloned().unwrap_or_else(Self::generated_sas)),
            Some(v) => v,
        };
        let auth_type = match value.get("type").and_then(Value::as_str) {
            Some(t) => AuthType::parse(t)?,
            None => AuthType::Sas,
        };
        let field = |obj: &str, key: &str| {
            value.get(obj).and_then(|o| o.get(key)).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
        };
        let key_or_keep = |name: &str, old: Option<&String>| -> Result<String, HubError> {
            match field("symmetricKey", name) {
                Some(k) => {
                    let decoded = base64::engine::general_purpose::STANDARD.decode(&k);
                    if decoded.map(|d| d.is_empty()).unwrap_or(true) {
                        return Err(HubError::invalid(format!("symmetricKey.{name} is not valid base64")));
                    }
                    Ok(k)
                }
                None => Ok(old.cloned().unwrap_or_else(generate_key)),
            }
        };
        let auth = Authentication {
            auth_type,
            primary_key: key_or_keep("primaryKey", previous.map(|p| &p.primary_key))?,
            secondary_key: key_or_keep("secondaryKey", previous.map(|p| &p.secondary_key))?,
            primary_thumbprint: field("x509Thumbprint", "primaryThumbprint"),
            secondary_thumbprint: field("x509Thumbprint", "secondaryThumbprint"),
        };
        if auth.auth_type == AuthType::SelfSigned && auth.primary_thumbprint.is_none() && auth.secondary_thumbprint.is_none() {
            return Err(HubError::invalid("selfSigned authentication needs x509Thumbprint.primaryThumbprint"));
        }
        Ok(auth)
    }

    pub fn to_json(&self) -> Value {
        let sas = self.auth_type == AuthType::Sas;
        json!({
            "type": self.auth_type.as_str(),
            "symmetricKey": {
                "primaryKey": if sas { json!(self.primary_key) } else { Value::Null },
                "secondaryKey": if sas { json!(self.secondary_key) } else { Value::Null },
            },
            "x509Thumbprint": {
                "primaryThumbprint": self.primary_thumbprint,
                "secondaryThumbprint": self.secondary_thumbprint,
            },
        })
    }

    /// True when `thumbprint` (hex, any case) is one of the registered ones.
    pub fn has_thumbprint(&self, thumbprint: &str) -> bool {
        [&self.primary_thumbprint, &self.secondary_thumbprint]
            .into_iter()
            .flatten()
            .any(|t| t.eq_ignore_ascii_case(thumbprint))
    }
}

/// What the hub tracks about a live connection; not persisted (everyone is offline after a restart).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Presence {
    pub connected: bool,
    pub connection_state_updated_time: Option<String>,
    pub last_activity_time: Option<String>,
}

impl Presence {
    fn to_json(&self, out: &mut serde_json::Map<String, Value>) {
        let never = "0001-01-01T00:00:00Z";
        out.insert("connectionState".into(), json!(if self.connected { "Connected" } else { "Disconnected" }));
        out.insert("connectionStateUpdatedTime".into(), json!(self.connection_state_updated_time.as_deref().unwrap_or(never)));
        out.insert("lastActivityTime".into(), json!(self.last_activity_time.as_deref().unwrap_or(never)));
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    pub device_id: String,
    pub generation_id: String,
    pub etag: String,
    pub enabled: bool,
    pub status_reason: Option<String>,
    pub status_updated_time: String,
    pub authentication: Authentication,
    pub iot_edge: bool,
    pub cloud_to_device_message_count: u64,
    #[serde(skip)]
    pub presence: Presence,
}

impl DeviceRecord {
    pub fn primary_key(&self) -> &str {
        &self.authentication.primary_key
    }

    pub fn secondary_key(&self) -> &str {
        &self.authentication.secondary_key
    }

    pub fn status(&self) -> &'static str {
        if self.enabled {
            "enabled"
        } else {
            "disabled"
        }
    }

    /// The device scope IoT Hub reports for edge devices; leaf devices have none.
    pub(crate) fn device_scope(&self) -> Option<String> {
        self.iot_edge.then(|| format!("ms-azure-iot-edge://{}-{}", self.device_id, self.generation_id))
    }

    pub fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("deviceId".into(), json!(self.device_id));
        out.insert("generationId".into(), json!(self.generation_id));
        out.insert("etag".into(), json!(self.etag));
        out.insert("status".into(), json!(self.status()));
        out.insert("statusReason".into(), json!(self.status_reason));
        out.insert("statusUpdatedTime".into(), json!(self.status_updated_time));
        self.presence.to_json(&mut out);
        out.insert("cloudToDeviceMessageCount".into(), json!(self.cloud_to_device_message_count));
        out.insert("authentication".into(), self.authentication.to_json());
        out.insert("capabilities".into(), json!({"iotEdge": self.iot_edge}));
        out.insert("deviceScope".into(), json!(self.device_scope()));
        out.insert("parentScopes".into(), json!([]));
        Value::Object(out)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleRecord {
    pub device_id: String,
    pub module_id: String,
    pub managed_by: Option<String>,
    pub generation_id: String,
    pub etag: String,
    pub authentication: Authentication,
    #[serde(skip)]
    pub presence: Presence,
}

impl ModuleRecord {
    pub fn primary_key(&self) -> &str {
        &self.authentication.primary_key
    }

    pub fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("moduleId".into(), json!(self.module_id));
        out.insert("deviceId".into(), json!(self.device_id));
        out.insert("managedBy".into(), json!(self.managed_by));
        out.insert("generationId".into(), json!(self.generation_id));
        out.insert("etag".into(), json!(self.etag));
        self.presence.to_json(&mut out);
        out.insert("cloudToDeviceMessageCount".into(), json!(0));
        out.insert("authentication".into(), self.authentication.to_json());
        Value::Object(out)
    }
}

/// The registry fields a device PUT or bulk import may set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSettings {
    pub enabled: bool,
    pub status_reason: Option<String>,
    pub authentication: Authentication,
    pub iot_edge: bool,
}

impl DeviceSettings {
    /// Reads a Device body. `previous` supplies values the body leaves out on an update.
    pub fn from_json(body: &Value, previous: Option<&DeviceRecord>) -> Result<Self, HubError> {
        if !body.is_object() {
            return Err(HubError::invalid("The device body must be a JSON object"));
        }
        let enabled = match body.get("status").and_then(Value::as_str) {
            None => previous.map(|p| p.enabled).unwrap_or(true),
            Some(s) if s.eq_ignore_ascii_case("enabled") => true,
            Some(s) if s.eq_ignore_ascii_case("disabled") => false,
            Some(other) => return Err(HubError::invalid(format!("Unknown device status '{other}'"))),
        };
        Ok(DeviceSettings {
            enabled,
            status_reason: body.get("statusReason").and_then(Value::as_str).map(str::to_owned),
            authentication: Authentication::from_json(body.get("authentication"), previous.map(|p| &p.authentication))?,
            iot_edge: body
                .get("capabilities")
                .and_then(|c| c.get("iotEdge"))
                .and_then(Value::as_bool)
                .unwrap_or_else(|| previous.map(|p| p.iot_edge).unwrap_or(false)),
        })
    }
}

/// IoT Hub's identity rules: case-sensitive, 1..=128 ASCII alphanumerics and
/// `- : . + % _ # * ? ! ( ) , = @ ; $ '`.
pub fn validate_id(kind: &str, id: &str) -> Result<(), HubError> {
    const SPECIAL: &str = "-:.+%_#*?!(),=@;$'";
    let ok = !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || SPECIAL.contains(c));
    if ok {
        Ok(())
    } else {
        Err(HubError::invalid(format!(
            "{kind} id '{}' is invalid: use 1 to 128 ASCII letters, digits or - : . + % _ # * ? ! ( ) , = @ ; $ '",
            id.chars().take(140).collect::<String>().escape_debug()
        )))
    }
}

/// A random 32-byte key, base64, as the hub generates for identities and policies.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A generationId: distinguishes identities re-created under the same id.
pub fn generate_generation_id() -> String {
    format!("{}", rand::thread_rng().next_u64() % 1_000_000_000_000_000_000)
}

/// A random GUID in its 8-4-4-4-12 hex form (DPS operation ids, feedback message ids).
pub fn generate_guid() -> String {
    let n = rand::random::<u128>();
    format!("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", n >> 96, (n >> 80) & 0xffff, (n >> 64) & 0xffff, (n >> 48) & 0xffff, n & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("Device", "dev-1:a.b+c%d_e#f*g?h!i(j)k,l=m@n;o$p'q").is_ok());
        assert!(validate_id("Device", "").is_err());
        assert!(validate_id("Device", &"a".repeat(129)).is_err());
        assert!(validate_id("Device", "a/b").is_err());
        assert!(validate_id("Device", "a b").is_err());
        assert_eq!(validate_id("Device", "é").unwrap_err().code, 400004);
    }

    #[test]
    fn keys_are_generated_when_missing_or_empty() {
        let body = json!({"authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": null}}});
        let s = DeviceSettings::from_json(&body, None).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(&s.authentication.primary_key).unwrap();
        assert_eq!(decoded.len(), 32);
        assert_ne!(s.authentication.primary_key, s.authentication.secondary_key);
        assert!(s.enabled);
        let bad = json!({"authentication": {"symmetricKey": {"primaryKey": "not base64!"}}});
        assert_eq!(DeviceSettings::from_json(&bad, None).unwrap_err().code, 400004);
        assert!(DeviceSettings::from_json(&json!({"status": "sleeping"}), None).is_err());
    }

    #[test]
    fn thumbprints_compare_case_insensitively() {
        let body = json!({"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "ABCDEF"}});
        let auth = Authentication::from_json(Some(&body), None).unwrap();
        assert!(auth.has_thumbprint("abcdef"));
        assert!(!auth.has_thumbprint("abcde0"));
        assert_eq!(auth.to_json()["symmetricKey"]["primaryKey"], Value::Null);
    }
}
