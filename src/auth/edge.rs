//! IoT Edge environment: reads the module's identity from the `IOTEDGE_*` variables and talks to
//! the workload API (HTTP/1.1 over a Unix socket or TCP) for the trust bundle and for signing
//! every SAS token; falls back to `EdgeHubConnectionString` + `EdgeModuleCACertificateFile`.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Identity;
use crate::error::{Error, Result};

/// Workload API calls are local; a stuck daemon must not hang a token renewal.
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(10);

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
        let body = self.call("GET", &path, None).await?;
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
        let body = self.call("POST", &path, Some(&req)).await?;
        body.get("digest")
            .and_then(|d| d.as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Credential("workload API sign answer has no digest".into()))
    }

    async fn call(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Result<serde_json::Value> {
        let fut = async {
            match &self.endpoint {
                #[cfg(unix)]
                Endpoint::Unix(p) => {
                    let s = tokio::net::UnixStream::connect(p).await.map_err(workload_io)?;
                    http_exchange(s, "localhost", method, path, body).await
                }
                #[cfg(not(unix))]
                Endpoint::Unix(_) => Err(Error::Client("Unix sockets are not available on this platform".into())),
                Endpoint::Tcp(hp) => {
                    let s = tokio::net::TcpStream::connect(hp.as_str()).await.map_err(workload_io)?;
                    http_exchange(s, hp, method, path, body).await
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

/// One HTTP/1.1 request with `Connection: close`; the answer body (plain or chunked) as JSON.
async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value> {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    );
    s.write_all(head.as_bytes()).await.map_err(workload_io)?;
    s.write_all(payload.as_bytes()).await.map_err(workload_io)?;
    s.flush().await.map_err(workload_io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.map_err(workload_io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Client("malformed answer from the IoT Edge workload API".into()))?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    if !(200..300).contains(&status) {
        return Err(Error::Client(format!("IoT Edge workload API answered HTTP {status}")));
    }
    serde_json::from_str(&body).map_err(|_| Error::Client("IoT Edge workload API answered non-JSON".into()))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        let (Some(chunk), Some(tail)) = (rest.get(..n), rest.get(n..)) else { break };
        if n == 0 {
            break;
        }
        out.push_str(chunk);
        s = tail.trim_start_matches("\r\n");
    }
    out
}
