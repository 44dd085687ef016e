//! IoT Hub's documented size limits, in bytes unless named otherwise. One place, so that the client
//! refuses exactly what the hub would refuse, before anything is sent.

/// Device-to-cloud message (body + properties as the hub counts them).
pub const MAX_TELEMETRY_BYTES: usize = 262_144;
/// Cloud-to-device message body.
pub const MAX_C2D_BYTES: usize = 65_536;
/// C2D messages waiting for one device.
pub const MAX_C2D_PENDING: usize = 50;
/// Direct method request or response payload.
pub const MAX_METHOD_PAYLOAD_BYTES: usize = 131_072;
pub const MAX_TWIN_DESIRED_BYTES: usize = 32_768;
pub const MAX_TWIN_REPORTED_BYTES: usize = 32_768;
pub const MAX_TWIN_TAGS_BYTES: usize = 8_192;
/// Nesting depth of twin objects.
pub const MAX_TWIN_DEPTH: usize = 10;
pub const MAX_TWIN_KEY_BYTES: usize = 1_024;
pub const MAX_TWIN_STRING_BYTES: usize = 4_096;
/// MQTT keep-alive bounds IoT Hub accepts, in seconds.
pub const MIN_KEEP_ALIVE_SECS: u64 = 1;
pub const MAX_KEEP_ALIVE_SECS: u64 = 1_740;
