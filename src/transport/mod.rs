//! Network transports: TLS configuration (`tls`), the MQTT connection task (`mqtt`) and the
//! HTTPS client (`http`).

#[cfg(feature = "https")]
pub mod http;
pub(crate) mod mqtt;
pub mod tls;
