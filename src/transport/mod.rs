//! Network transports: TLS configuration (`tls`), the TCP connection direct or through a proxy
//! (`proxy`), opening an MQTT connection (`connector`), the MQTT connection task (`mqtt`) and its
//! shared output (`writer`) and input (`reader`), the HTTPS client (`http`) and the HTTP/1.1
//! connection under it and under the Edge workload API's (`http1`).

pub(crate) mod connector;
#[cfg(feature = "https")]
pub mod http;
#[cfg(any(feature = "https", feature = "edge"))]
pub(crate) mod http1;
pub mod proxy;
pub(crate) mod mqtt;
pub(crate) mod reader;
pub(crate) mod writer;
pub mod tls;
