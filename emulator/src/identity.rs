//! The identity an MQTT connection or a twin belongs to: a device, or a module on a device.
//! Shared by the hub state (`hub/`) and the broker (`mqtt/`) so both key their tables the same way.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub device_id: String,
    pub module_id: Option<String>,
}

impl Identity {
    pub fn device(device_id: impl Into<String>) -> Self {
        Identity { device_id: device_id.into(), module_id: None }
    }

    pub fn module(device_id: impl Into<String>, module_id: impl Into<String>) -> Self {
        Identity { device_id: device_id.into(), module_id: Some(module_id.into()) }
    }

    /// The MQTT client id IoT Hub expects for this identity: `d` or `d/m`.
    pub fn client_id(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.module_id {
            Some(m) => write!(f, "{}/{}", self.device_id, m),
            None => f.write_str(&self.device_id),
        }
    }
}
