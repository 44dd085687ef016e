//! Network transports: TLS configuration (`tls`), the TCP connection direct or through a proxy
//! (`proxy`), the MQTT connection task (`mqtt`) and the HTTPS client (`http`).

pub mod http;
pub mod proxy;
pub(crate) mod mqtt;
pub mod tls;
