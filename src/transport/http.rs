//! HTTPS requests (reqwest over our rustls configuration, so the `cipher` list and trust roots are
//! the MQTT link's, and through the client's `proxy_options` when set): the Edge `invoke_method`
//! call, file upload and the service client. Errors are mapped onto `Error` with the hub's error
//! text, never a token or a proxy password.

use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::options::ProxyOptions;
#[cfg(feature = "proxy")]
use crate::options::ProxyType;

/// A reqwest client that trusts `ca_pem` (or the web PKI), offers the `cipher` list (empty: the
/// defaults) and goes through `proxy` when given.
pub fn https_client(
    ca_pem: Option<&str>,
    cipher: &str,
    proxy: Option<&ProxyOptions>,
    timeout: Duration,
) -> Result<reqwest::Client> {
    https_client_with_tls((*super::tls::client_config(ca_pem, cipher, None)?).clone(), proxy, timeout)
}

/// As [`https_client`] over a TLS configuration of the caller's (file upload: the one of the
/// client's MQTT link, with its X.509 identity).
pub fn https_client_with_tls(
    mut tls: rustls::ClientConfig,
    proxy: Option<&ProxyOptions>,
    timeout: Duration,
) -> Result<reqwest::Client> {
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let builder = reqwest::Client::builder().use_preconfigured_tls(tls).timeout(timeout);
    #[cfg(feature = "proxy")]
    let builder = match proxy {
        Some(p) => builder.proxy(reqwest_proxy(p)?),
        None => builder,
    };
    #[cfg(not(feature = "proxy"))]
    if proxy.is_some() {
        return Err(crate::validate::needs_feature("proxy_options", "proxy"));
    }
    builder.build().map_err(|e| Error::Client(format!("cannot build the HTTPS client: {e}")))
}

/// `proxy_options` as reqwest's proxy for every request: HTTP CONNECT (Basic auth), SOCKS4a or
/// SOCKS5h (the proxy resolves the host name, as PySocks does for azure-iot-device).
#[cfg(feature = "proxy")]
fn reqwest_proxy(p: &ProxyOptions) -> Result<reqwest::Proxy> {
    let scheme = match p.proxy_type {
        ProxyType::Http => "http",
        ProxyType::Socks4 => "socks4a",
        ProxyType::Socks5 => "socks5h",
    };
    let host = if p.proxy_addr.contains(':') && !p.proxy_addr.starts_with('[') {
        format!("[{}]", p.proxy_addr)
    } else {
        p.proxy_addr.clone()
    };
    // The URL holds no credentials: a parse error message must not be able to show them.
    let proxy = reqwest::Proxy::all(format!("{scheme}://{host}:{}", p.proxy_port))
        .map_err(|e| Error::invalid(format!("proxy_options: unusable proxy address {:?}: {e}", p.proxy_addr)))?;
    Ok(match p.proxy_username.as_deref().filter(|u| !u.is_empty()) {
        Some(user) => proxy.basic_auth(user, p.proxy_password.as_deref().unwrap_or("")),
        None => proxy,
    })
}

/// Status and parsed JSON body (Null when empty or not JSON) of a finished request.
pub struct HttpAnswer {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Value,
}

/// Sends a request; transport failures become ConnectionFailed/OperationTimeout.
pub async fn send(req: reqwest::RequestBuilder) -> Result<HttpAnswer> {
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            Error::OperationTimeout("HTTPS request timed out".into())
        } else {
            // reqwest's Display includes the URL, which never carries a secret here; its causes
            // name what failed (a proxy's refusal, a TLS alert), never the proxy's credentials.
            Error::ConnectionFailed(format!("HTTPS request failed: {}", with_causes(&e)))
        }
    })?;
    let status = resp.status().as_u16();
    let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| Error::ConnectionDropped(format!("reading the HTTPS answer failed: {e}")))?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(HttpAnswer { status, etag, body })
}

/// An error and its chain of causes, `: `-separated (reqwest's own Display stops at the first).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// The hub's error text out of its error body (`ironhub_protocol::hub_error`).
pub fn hub_error_message(body: &Value) -> String {
    ironhub_protocol::hub_error::message_of(body)
}
