//! Network transports: TLS configuration (`tls`), the TCP connection direct or through a proxy
//! (`proxy`), opening an MQTT connection (`connector`), the MQTT connection task (`mqtt`) and its shared output (`writer`)
//! and input (`reader`), and the HTTPS client (`http`).

pub(crate) mod connector;
#[cfg(feature = "https")]
pub mod http;
pub mod proxy;
pub(crate) mod mqtt;
pub(crate) mod reader;
pub(crate) mod writer;
pub mod tls;
