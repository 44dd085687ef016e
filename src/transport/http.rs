//! HTTPS requests: the Edge `invoke_method` call, file upload and the service client. One request
//! is hyper's HTTP/1.1 client connection (framing, chunked answers, keep-alive are its business)
//! over the engine's own connection code: the TCP connection or proxy tunnel of
//! `transport::proxy` and rustls with the caller's configuration (the `cipher` list, the trust
//! roots, an X.509 identity). Each request is bounded as a whole (connect, TLS, answer body), and
//! a client keeps a few idle connections per host so the service client and the upload's blocks
//! do not pay a TLS handshake per call. Errors are mapped onto `Error` with the host name at most:
//! never the path or query (a blob's SAS), a header (a token) or a proxy password.
//!
//! This replaces reqwest, which brought a second HTTP client stack (hyper-util's pooled client,
//! tower, url/idna) into every build with HTTPS for the few calls above. No caller follows
//! redirects (the hub and blob storage answer in place), so a 3xx is handed back as it is.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use rustls_pki_types::ServerName;
use serde_json::Value;

pub use ::http::Method;

use crate::error::{Error, Result};
use crate::options::ProxyOptions;
use crate::transport::connector::Tcp;
use crate::transport::http1::{self, Connection};

/// Idle connections a client keeps (across hosts; the newest are kept).
const MAX_IDLE: usize = 4;
/// Largest answer body read: the hub's and blob storage's answers are small JSON or XML; a peer
/// sending more is cut off rather than filling memory.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// An HTTPS client: a TLS configuration, an optional proxy, a default bound per request and its
/// idle connections. Cheap to clone (clones share the idle connections).
#[derive(Clone)]
pub struct HttpsClient {
    inner: Arc<Inner>,
}

struct Inner {
    tls: tokio_rustls::TlsConnector,
    proxy: Option<ProxyOptions>,
    timeout: Duration,
    /// `(host:port, connection)`, oldest first.
    idle: Mutex<Vec<(String, Connection)>>,
}

/// A client that trusts `ca_pem` (or the default roots), offers the `cipher` list (empty: the
/// defaults) and goes through `proxy` when given.
pub fn https_client(
    ca_pem: Option<&str>,
    cipher: &str,
    proxy: Option<&ProxyOptions>,
    timeout: Duration,
) -> Result<HttpsClient> {
    https_client_with_tls((*super::tls::client_config(ca_pem, cipher, None)?).clone(), proxy, timeout)
}

/// As [`https_client`] over a TLS configuration of the caller's (file upload: the one of the
/// client's MQTT link, with its X.509 identity).
pub fn https_client_with_tls(
    mut tls: rustls::ClientConfig,
    proxy: Option<&ProxyOptions>,
    timeout: Duration,
) -> Result<HttpsClient> {
    #[cfg(not(feature = "proxy"))]
    if proxy.is_some() {
        return Err(crate::validate::needs_feature("proxy_options", "proxy"));
    }
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(HttpsClient {
        inner: Arc::new(Inner {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            proxy: proxy.cloned(),
            timeout,
            idle: Mutex::new(Vec::new()),
        }),
    })
}

impl HttpsClient {
    /// A request to `url` (`https://host[:port]/path?query`), bounded by the client's timeout
    /// unless [`RequestBuilder::timeout`] says otherwise.
    pub fn request(&self, method: Method, url: impl Into<String>) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Bytes::new(),
            timeout: self.inner.timeout,
        }
    }

    pub fn post(&self, url: impl Into<String>) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    pub fn put(&self, url: impl Into<String>) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// An idle connection to `authority` that still takes requests, if one is kept.
    fn take_idle(&self, authority: &str) -> Option<Connection> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|(_, c)| !c.sender.is_closed());
        let i = idle.iter().rposition(|(a, _)| a == authority)?;
        Some(idle.remove(i).1)
    }

    fn keep_idle(&self, authority: String, connection: Connection) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((authority, connection));
    }

    /// A new connection: TCP (direct or tunnelled), TLS with the host's name, the HTTP/1.1
    /// handshake.
    async fn connect(&self, target: &Target<'_>) -> Result<Connection> {
        let tcp = super::proxy::connect_tcp(target.host, target.port, self.inner.proxy.as_ref()).await?;
        let name = ServerName::try_from(target.host.to_owned())
            .map_err(|_| Error::invalid(format!("invalid host name {:?}", target.host)))?;
        let tls = self.inner.tls.connect(name, Tcp(tcp)).await.map_err(|e| target.failed(format!("TLS: {e}")))?;
        http1::handshake(Box::new(tls)).await.map_err(|e| target.failed(e))
    }
}

/// A request being put together (the subset of reqwest's builder the callers use).
pub struct RequestBuilder {
    client: HttpsClient,
    method: Method,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    timeout: Duration,
}

impl RequestBuilder {
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The bound on the whole request: connection, TLS, sending and reading the answer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends the request and reads the whole answer. A network failure is
    /// `Error::ConnectionFailed`, running out of time `Error::OperationTimeout`.
    pub async fn send(self) -> Result<Answer> {
        let target = Target::parse(&self.url)?;
        match tokio::time::timeout(self.timeout, self.exchange(&target)).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::OperationTimeout(format!(
                "HTTPS request to {} timed out after {} s",
                target.host,
                self.timeout.as_secs_f32()
            ))),
        }
    }

    fn to_request(&self, target: &Target<'_>) -> Result<::http::Request<Full<Bytes>>> {
        let mut request = ::http::Request::builder()
            .method(self.method.clone())
            .uri(target.path_and_query)
            .header(::http::header::HOST, target.authority);
        for (name, value) in &self.headers {
            // Names only in errors: a value may be a token.
            let value = ::http::HeaderValue::try_from(value.as_str())
                .map_err(|_| Error::invalid(format!("the HTTP header {name} holds a character a header cannot carry")))?;
            request = request.header(*name, value);
        }
        // The URI is not shown: its query may hold a blob's SAS.
        request.body(Full::new(self.body.clone())).map_err(|_| Error::invalid("the request URL or a header name is not valid HTTP"))
    }

    async fn exchange(&self, target: &Target<'_>) -> Result<Answer> {
        // An idle connection first. One the server closed while idle refuses the request before
        // sending any of it, and the request goes on a new connection; once sent, it is not resent
        // (a POST may have taken effect). One send path for both, so hyper's is compiled once.
        let mut idle = self.client.take_idle(target.authority);
        loop {
            let reused = idle.is_some();
            let mut connection = match idle.take() {
                Some(c) => c,
                None => self.client.connect(target).await?,
            };
            if let Err(e) = connection.sender.ready().await {
                if reused {
                    continue;
                }
                return Err(target.failed(e));
            }
            match connection.sender.try_send_request(self.to_request(target)?).await {
                Ok(response) => return self.finish(target, connection, response).await,
                Err(mut e) => {
                    if !(reused && e.take_message().is_some()) {
                        return Err(target.failed(e.into_error()));
                    }
                }
            }
        }
    }

    async fn finish(
        &self,
        target: &Target<'_>,
        connection: Connection,
        response: ::http::Response<hyper::body::Incoming>,
    ) -> Result<Answer> {
        let (head, body) = response.into_parts();
        let body = http1::read_body(body, MAX_ANSWER).await.map_err(|e| {
            Error::ConnectionDropped(format!("reading the HTTPS answer of {} failed: {e}", target.host))
        })?;
        let closing = head.headers.get_all(::http::header::CONNECTION).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if !closing && !connection.sender.is_closed() {
            self.client.keep_idle(target.authority.to_owned(), connection);
        }
        Ok(Answer { status: head.status.as_u16(), headers: head.headers, body })
    }
}

/// A finished request: status, headers and the whole body.
pub struct Answer {
    pub status: u16,
    pub headers: ::http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// A header's value when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Where a URL points: `https://authority` then the path and query.
struct Target<'a> {
    authority: &'a str,
    /// Without brackets for an IPv6 literal.
    host: &'a str,
    port: u16,
    path_and_query: &'a str,
}

impl<'a> Target<'a> {
    /// Errors name the authority at most: the path and query may hold a SAS.
    fn parse(url: &'a str) -> Result<Target<'a>> {
        let rest = url.strip_prefix("https://").ok_or_else(|| Error::invalid("an HTTPS request needs an https:// URL"))?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(end);
        if !path_and_query.starts_with('/') {
            return Err(Error::invalid(format!("the URL of host {authority:?} has no path")));
        }
        let bad = || Error::invalid(format!("unusable host in an HTTPS URL: {authority:?}"));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().map_err(|_| bad())?),
            _ => (authority, 443),
        };
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() || host.contains(['@', '[', ']', '/']) {
            return Err(bad());
        }
        Ok(Target { authority, host, port, path_and_query })
    }

    fn failed(&self, e: impl std::fmt::Display) -> Error {
        Error::ConnectionFailed(format!("HTTPS request to {} failed: {e}", self.host))
    }
}

/// Status and parsed JSON body (Null when empty or not JSON) of a finished request.
pub struct HttpAnswer {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Value,
}

/// Sends a request whose answer is JSON (the hub's calls).
pub async fn send(req: RequestBuilder) -> Result<HttpAnswer> {
    let answer = req.send().await?;
    let etag = answer.header("etag").map(str::to_string);
    let body = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    Ok(HttpAnswer { status: answer.status, etag, body })
}

/// The hub's error text out of its error body (`ironhub_protocol::hub_error`).
pub fn hub_error_message(body: &Value) -> String {
    ironhub_protocol::hub_error::message_of(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        let t = Target::parse("https://hub.example:8443/devices/d/files?api-version=1").unwrap();
        assert_eq!((t.authority, t.host, t.port, t.path_and_query), ("hub.example:8443", "hub.example", 8443, "/devices/d/files?api-version=1"));
        let t = Target::parse("https://[::1]/c/b?sig=s").unwrap();
        assert_eq!((t.host, t.port, t.path_and_query), ("::1", 443, "/c/b?sig=s"));
        let t = Target::parse("https://[::1]:9/x").unwrap();
        assert_eq!((t.host, t.port), ("::1", 9));
    }

    #[test]
    fn bad_urls_are_invalid_and_never_show_their_query() {
        for url in ["http://h/x?sig=SECRET", "https://h?sig=SECRET", "https://h:99999/x?sig=SECRET", "https://u@h/x?sig=SECRET", "https:///x?sig=SECRET"] {
            let e = Target::parse(url).err().unwrap_or_else(|| panic!("{url} accepted"));
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{url}: {e}");
            assert!(!e.to_string().contains("SECRET"), "{e}");
        }
    }
}
