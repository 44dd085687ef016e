//! HTTPS requests (reqwest over our rustls configuration): the Edge `invoke_method` call and the
//! service client. Errors are mapped onto `Error` with the hub's error text, never a token.

use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// A reqwest client that trusts `ca_pem` (or the web PKI) with the ring provider.
pub fn https_client(ca_pem: Option<&str>, timeout: Duration) -> Result<reqwest::Client> {
    let mut tls = (*super::tls::client_config(ca_pem, "", None)?).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .build()
        .map_err(|e| Error::Client(format!("cannot build the HTTPS client: {e}")))
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
            // reqwest's Display includes the URL, which never carries a secret here.
            Error::ConnectionFailed(format!("HTTPS request failed: {e}"))
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

/// The hub's error text out of its error body (`ironhub_protocol::hub_error`).
pub fn hub_error_message(body: &Value) -> String {
    ironhub_protocol::hub_error::message_of(body)
}
