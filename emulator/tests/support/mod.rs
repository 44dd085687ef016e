//! Shared by the emulator's HTTPS test suites: an emulator on ephemeral loopback ports and a
//! real HTTPS client (reqwest trusting the emulator's CA) that signs service SAS tokens.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ironhub_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use ironhub_protocol::sas;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub async fn start() -> RunningEmulator {
    start_with(EmulatorConfig::default()).await
}

pub async fn start_with(config: EmulatorConfig) -> RunningEmulator {
    Emulator::start(config).await.expect("emulator starts")
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn policy_token(emu: &RunningEmulator, policy: &str) -> String {
    sas::generate_token(emu.hostname(), emu.hub().policy_key(), Some(policy), unix_now() + 3600).unwrap()
}

pub fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// One answer: status, the `iothub-errorcode` header if any, the ETag header, and the JSON body
/// (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub error_code_name: Option<String>,
    pub etag: Option<String>,
    pub item_type: Option<String>,
    pub continuation: Option<String>,
    pub body: Value,
}

impl Answer {
    /// The numeric code inside IoT Hub's nested-JSON `Message` field.
    pub fn error_code(&self) -> u64 {
        let message = self.body["Message"].as_str().unwrap_or_else(|| panic!("no Message in {:?}", self.body));
        let inner: Value = serde_json::from_str(message).expect("Message holds JSON");
        inner["errorCode"].as_u64().expect("errorCode")
    }
}

/// A service API caller with a fixed Authorization header.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub authorization: Option<String>,
}

impl Api {
    pub fn new(emu: &RunningEmulator) -> Api {
        Self::with_policy(emu, "iothubowner")
    }

    pub fn with_policy(emu: &RunningEmulator, policy: &str) -> Api {
        Api {
            base: format!("https://localhost:{}", emu.https_port()),
            client: https_client(emu.ca_pem()),
            authorization: Some(policy_token(emu, policy)),
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Answer {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut req = self.client.request(method, format!("{}{path}{sep}api-version=2021-04-12", self.base));
        if let Some(auth) = &self.authorization {
            req = req.header("Authorization", auth);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json; charset=utf-8").body(body.to_string());
        }
        let resp = req.send().await.expect("request is answered");
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (status, error_code_name, etag) = (resp.status(), header("iothub-errorcode"), header("etag"));
        let (item_type, continuation) = (header("x-ms-item-type"), header("x-ms-continuation"));
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
        Answer { status, error_code_name, etag, item_type, continuation, body }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None, &[]).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(body), &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path, Some(body), &[]).await
    }
}
