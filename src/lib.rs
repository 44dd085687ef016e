//! ironhub: an Azure IoT Hub device and module client.
//!
//! - [`Client`] (async) and [`blocking::Client`] (sync facade over one shared runtime): the
//!   surface of azure-iot-device's `IoTHubDeviceClient` / `IoTHubModuleClient` (factories, options,
//!   operations, handlers, deprecated receive APIs), plus pipelined sends.
//! - [`service::ServiceClient`]: a small IoT Hub service client (twins, direct methods).
//! - `ffi` (feature `capi`): the C ABI (over this crate's API, no logic of its own).
//! - [`validate`]: the input rules every surface applies, one function each.
//!
//! Handlers never run on a network loop: they run on a small shared dispatcher pool, one at a time
//! per client. No call blocks without a bound (`ClientOptions::operation_timeout`), and no key,
//! signature or token ever appears in an error or a log line.
//!
//! ```no_run
//! # async fn demo() -> ironhub::Result<()> {
//! use std::sync::Arc;
//! use ironhub::{Client, ClientOptions, Message};
//!
//! let client = Client::create_from_connection_string(
//!     "HostName=hub.azure-devices.net;DeviceId=dev1;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg==",
//!     ClientOptions::default(),
//! )?;
//! client.on_message_received(Some(Arc::new(|m: Message| println!("C2D: {:?}", m.data)))).await?;
//! let mut m = Message::new("{\"temperature\": 21.5}");
//! m.content_type = Some("application/json".into());
//! m.set_property("unit", "celsius");
//! client.send_message(&m).await?;
//! client.patch_twin_reported_properties(&ironhub::serde_json::json!({"firmware": "1.0"})).await?;
//! client.shutdown().await
//! # }
//! ```

/// Twins, method payloads and parameters are `serde_json::Value`s: re-exported so callers build
/// them with the very crate this one was compiled against (`ironhub::serde_json::json!`).
pub use serde_json;

pub mod auth;
mod batch;
pub mod blocking;
mod bounds;
pub mod client;
mod dispatch;
pub mod error;
#[cfg(feature = "capi")]
pub mod ffi;
mod handlers;
pub mod message;
pub mod options;
pub mod provisioning;
mod runtime;
#[cfg(feature = "service")]
pub mod service;
mod session;
pub mod transport;
#[cfg(feature = "https")]
pub mod upload;
pub mod validate;

pub use auth::Identity;
pub use client::{
    BackgroundExceptionHandler, Client, ConnectionStateHandler, MessageHandler, MethodRequestHandler,
    SasTokenRequiredHandler, SendCallback, SendFuture, TwinPatchHandler,
};
pub use dispatch::HandlerContext;
pub use error::{Error, ErrorKind, Result};
pub use message::{ConnectionReason, ConnectionStateChange, Message, MethodRequest, MethodResponse, X509};
pub use options::{ClientOptions, ProxyOptions, ProxyType};

/// The shared tokio runtime every client runs on, for adapters that bridge it to another event
/// loop (the Python wheel's asyncio futures through pyo3-async-runtimes): no second runtime.
pub fn runtime_handle() -> &'static tokio::runtime::Handle {
    runtime::handle()
}

pub use runtime::wait_on_this_thread;

/// The crate version (equal to Cargo.toml's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The optional parts this build has (Cargo features; the defaults have them all). A firmware
/// build without one refuses its options at creation, naming the feature (`ErrorKind::InvalidArgument`).
pub const FEATURES: &[&str] = &[
    #[cfg(feature = "websocket")]
    "websocket",
    #[cfg(feature = "proxy")]
    "proxy",
    #[cfg(feature = "edge")]
    "edge",
    #[cfg(feature = "https")]
    "https",
    #[cfg(feature = "service")]
    "service",
    #[cfg(feature = "encrypted-keys")]
    "encrypted-keys",
    #[cfg(feature = "webpki-roots")]
    "webpki-roots",
    #[cfg(feature = "capi")]
    "capi",
];
