//! IoT Edge environment: reads the module's identity from the `IOTEDGE_*` variables and talks to
//! the workload API (HTTP/1.1 over a Unix socket or TCP, with hyper's client) for the trust bundle
//! and for signing every SAS token; falls back to `EdgeHubConnectionString` +
//! `EdgeModuleCACertificateFile`.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;

use super::Identity;
use crate::error::{Error, Result};
use crate::transport::http1::Io;

/// Workload API calls are local; a stuck daemon must not hang a token renewal.
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Its answers are a trust bundle (PEM) or a signature: anything larger is not the workload API.
const MAX_WORKLOAD_ANSWER: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

/// The IoT Edge workload API of this module.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    endpoint: Endpoint,
    module_id: String,
    generation_id: String,
    api_version: String,
}

/// What `create_from_edge_environment` needs to build a client.
pub(crate) struct EdgeEnvironment {
    pub identity: Identity,
    pub gateway_hostname: String,
    pub server_verification_cert: String,
    pub credential: super::Credential,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn not_configured() -> Error {
    Error::Client("IoT Edge environment not configured correctly".into())
}

/// Reads the Edge environment (primary variables, else the development fallback).
pub(crate) async fn from_environment() -> Result<EdgeEnvironment> {
    let primary = [
        "IOTEDGE_IOTHUBHOSTNAME",
        "IOTEDGE_DEVICEID",
        "IOTEDGE_MODULEID",
        "IOTEDGE_GATEWAYHOSTNAME",
        "IOTEDGE_MODULEGENERATIONID",
        "IOTEDGE_WORKLOADURI",
        "IOTEDGE_APIVERSION",
    ]
    .map(env);
    if let [Some(hub), Some(device), Some(module), Some(gateway), Some(gen), Some(uri), Some(api)] = primary {
        let workload = Workload::new(&uri, &module, &gen, &api)?;
        let cert = workload.trust_bundle().await?;
        return Ok(EdgeEnvironment {
            identity: Identity { hostname: hub, device_id: device, module_id: Some(module) },
            gateway_hostname: gateway,
            server_verification_cert: cert,
            credential: super::Credential::Edge(workload),
        });
    }
    let (Some(cs), Some(ca_file)) = (env("EdgeHubConnectionString"), env("EdgeModuleCACertificateFile")) else {
        return Err(not_configured());
    };
    let parsed = ironhub_protocol::connection_string::ConnectionString::parse(&cs)?;
    let (Some(device_id), Some(module_id), Some(gateway), Some(key)) =
        (parsed.device_id, parsed.module_id, parsed.gateway_host_name, parsed.shared_access_key)
    else {
        return Err(Error::invalid(
            "EdgeHubConnectionString must hold HostName, DeviceId, ModuleId, GatewayHostName and SharedAccessKey",
        ));
    };
    ironhub_protocol::sas::decode_key(&key)?;
    let cert = tokio::fs::read_to_string(&ca_file)
        .await
        .map_err(|e| Error::invalid(format!("cannot read EdgeModuleCACertificateFile {ca_file}: {e}")))?;
    Ok(EdgeEnvironment {
        identity: Identity { hostname: parsed.host_name, device_id, module_id: Some(module_id) },
        gateway_hostname: gateway,
        server_verification_cert: cert,
        credential: super::Credential::SymmetricKey { key },
    })
}

impl Workload {
    fn new(uri: &str, module_id: &str, generation_id: &str, api_version: &str) -> Result<Workload> {
        let endpoint = if let Some(path) = uri.strip_prefix("unix://") {
            Endpoint::Unix(PathBuf::from(path))
        } else if let Some(rest) = uri.strip_prefix("http://") {
            Endpoint::Tcp(rest.trim_end_matches('/').to_string())
        } else {
            return Err(Error::invalid(format!("unsupported IOTEDGE_WORKLOADURI {uri:?}")));
        };
        Ok(Workload {
            endpoint,
            module_id: module_id.to_string(),
            generation_id: generation_id.to_string(),
            api_version: api_version.to_string(),
        })
    }

    /// `GET /trust-bundle` → PEM chain.
    pub async fn trust_bundle(&self) -> Result<String> {
        let path = format!("/trust-bundle?api-version={}", enc(&self.api_version));
        let body = self.call(http::Method::GET, &path, None).await?;
        body.get("certificate")
            .and_then(|c| c.as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Client("workload API trust bundle has no certificate".into()))
    }

    /// Signs `data` with the module's primary key → base64 digest.
    pub async fn sign(&self, data: &str) -> Result<String> {
        let path = format!(
            "/modules/{}/genid/{}/sign?api-version={}",
            enc(&self.module_id),
            enc(&self.generation_id),
            enc(&self.api_version)
        );
        let req = serde_json::json!({
            "keyId": "primary",
            "algo": "HMACSHA256",
            "data": base64::engine::general_purpose::STANDARD.encode(data.as_bytes()),
        });
        let body = self.call(http::Method::POST, &path, Some(&req)).await?;
        body.get("digest")
            .and_then(|d| d.as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Credential("workload API sign answer has no digest".into()))
    }

    async fn call(&self, method: http::Method, path: &str, body: Option<&serde_json::Value>) -> Result<serde_json::Value> {
        let fut = async {
            match &self.endpoint {
                #[cfg(unix)]
                Endpoint::Unix(p) => {
                    let s = tokio::net::UnixStream::connect(p).await.map_err(workload_io)?;
                    http_exchange(Box::new(s), "localhost", method, path, body).await
                }
                #[cfg(not(unix))]
                Endpoint::Unix(_) => Err(Error::Client("Unix sockets are not available on this platform".into())),
                Endpoint::Tcp(hp) => {
                    let s = tokio::net::TcpStream::connect(hp.as_str()).await.map_err(workload_io)?;
                    http_exchange(Box::new(s), hp, method, path, body).await
                }
            }
        };
        tokio::time::timeout(WORKLOAD_TIMEOUT, fut)
            .await
            .map_err(|_| Error::OperationTimeout("IoT Edge workload API did not answer".into()))?
    }
}

fn enc(s: &str) -> String {
    ironhub_protocol::encoding::percent_encode(s)
}

fn workload_io(e: std::io::Error) -> Error {
    Error::ConnectionFailed(format!("IoT Edge workload API: {e}"))
}

fn workload_http(e: impl std::fmt::Display) -> Error {
    Error::ConnectionFailed(format!("IoT Edge workload API: {e}"))
}

/// One HTTP/1.1 request on its own connection (hyper's client: framing, chunked bodies and
/// limits are its business); the answer body as JSON.
async fn http_exchange(
    stream: Box<dyn Io>,
    host: &str,
    method: http::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value> {
    let mut connection = crate::transport::http1::handshake(stream).await.map_err(workload_http)?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| Error::Client(format!("IoT Edge workload API request: {e}")))?;
    // Dropping the connection afterwards ends it (and its I/O task).
    let answer = async {
        let response = connection.sender.send_request(request).await.map_err(workload_http)?;
        let status = response.status();
        let bytes = crate::transport::http1::read_body(response.into_body(), MAX_WORKLOAD_ANSWER).await.map_err(workload_http)?;
        Ok::<_, Error>((status, bytes))
    }
    .await;
    drop(connection);
    let (status, bytes) = answer?;
    if !status.is_success() {
        return Err(Error::Client(format!("IoT Edge workload API answered HTTP {}", status.as_u16())));
    }
    serde_json::from_slice(&bytes).map_err(|_| Error::Client("IoT Edge workload API answered non-JSON".into()))
}

#[cfg(test)]
mod tests {
    //! The workload client against a small real HTTP server that answers in chunks cut in the
    //! middle of a multi-byte UTF-8 character (the hand-written decoder this client replaced
    //! turned such an answer into replacement characters and then lost its place in the chunks).

    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Serves one connection: reads the request head (and its body), answers `body` as `chunks`
    /// pieces of chunked transfer encoding.
    async fn answer_in_chunks<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, body: &[u8], cut_at: &[usize]) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut request_body = vec![0u8; length];
        s.read_exact(&mut request_body).await.unwrap();
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let mut start = 0;
        for &end in cut_at.iter().chain(std::iter::once(&body.len())) {
            out.extend_from_slice(format!("{:x}\r\n", end - start).as_bytes());
            out.extend_from_slice(&body[start..end]);
            out.extend_from_slice(b"\r\n");
            start = end;
        }
        out.extend_from_slice(b"0\r\n\r\n");
        s.write_all(&out).await.unwrap();
        let _ = s.shutdown().await;
    }

    /// A JSON body with `value` under `key`, and cut points inside each two-byte character.
    fn split_body(key: &str, value: &str) -> (Vec<u8>, Vec<usize>) {
        let body = serde_json::json!({ key: value }).to_string().into_bytes();
        let text = String::from_utf8(body.clone()).unwrap();
        let cuts = text.char_indices().filter(|(_, c)| c.len_utf8() > 1).map(|(i, _)| i + 1).collect();
        (body, cuts)
    }

    const BUNDLE: &str = "# Vertrauensanker für Modul ü — ŝtest\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[tokio::test]
    async fn chunked_answers_split_inside_utf8_characters_arrive_intact_over_tcp() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (body, cuts) = split_body("certificate", BUNDLE);
        assert!(cuts.len() >= 3, "the body is cut inside characters");
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            answer_in_chunks(s, &body, &cuts).await;
        });
        let workload = Workload::new(&format!("http://{addr}"), "m", "1", "2019-01-30").unwrap();
        assert_eq!(workload.trust_bundle().await.unwrap(), BUNDLE);
        server.await.unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn chunked_answers_split_inside_utf8_characters_arrive_intact_over_a_unix_socket() {
        let path = std::env::temp_dir().join(format!("ironhub-edge-unit-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let digest = "ñø-digest-é";
        let (body, cuts) = split_body("digest", digest);
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            answer_in_chunks(s, &body, &cuts).await;
        });
        let workload = Workload::new(&format!("unix://{}", path.display()), "m", "1", "2019-01-30").unwrap();
        assert_eq!(workload.sign("data").await.unwrap(), digest);
        server.await.unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn an_error_status_is_reported_without_the_body() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let answer = "HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\n{\"secret\":\"x\"}";
            s.write_all(answer.as_bytes()).await.unwrap();
        });
        let workload = Workload::new(&format!("http://{addr}"), "m", "1", "2019-01-30").unwrap();
        let e = workload.sign("data").await.unwrap_err();
        assert_eq!(e.to_string(), "IoT Edge workload API answered HTTP 404");
    }
}
