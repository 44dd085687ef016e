//! ironhub-emulator: a local Azure IoT Hub that speaks the real protocols.
//!
//! - `hub`: registry, twins, telemetry event log, C2D queues, routes, service auth, persistence.
//! - `http`: the HTTPS listener: service API, control API (`/emulator/...`), WebSocket upgrade.
//! - `mqtt`: the device-side MQTT broker (TLS and WebSockets), sessions, ACL, methods, routing.
//! - `certs`: the emulator's CA and server certificate, and the TLS server config.
//! - `workload`: the IoT Edge workload API (trust bundle, module token signing) and `IOTEDGE_*` variables.
//! - `dps`: the Device Provisioning Service (registration over MQTT, enrollment REST API).
//! - `files`: file upload (SAS URIs, an emulated blob endpoint, upload notifications).
//! - `amqp`: the AMQP listener (TLS and WebSockets), SASL, `$cbs`, the Event Hub-compatible endpoint.
//! - `tls_listener`: the accept loop of the TLS listeners (MQTT, AMQP).
//! - `server`: starting and stopping a whole emulator (`Emulator`, `BackgroundEmulator`).

pub mod identity;
pub mod hub;
pub mod http;
pub mod mqtt;
pub mod certs;
pub mod server;
pub mod workload;
pub mod dps;
pub mod files;
pub mod amqp;
pub mod tls_listener;

pub use identity::Identity;
pub use server::{BackgroundEmulator, Emulator, EmulatorConfig, EmulatorError, EmulatorHandle, RunningEmulator};
pub use workload::WorkloadEndpoints;
