//! Network transports: TLS configuration (`tls`), the MQTT connection task (`mqtt`) and the
//! HTTPS client (`http`).

pub mod http;
pub(crate) mod mqtt;
pub mod tls;
