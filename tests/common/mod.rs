//! Shared harness of the integration tests: an in-process emulator on ephemeral loopback ports,
//! client options that point at it, and helpers over its control API.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod real_proxies;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironhub::service::{ServiceClient, ServiceOptions};
use ironhub::ClientOptions;
use ironhub_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use serde_json::{json, Value};

pub struct Env {
    pub emu: RunningEmulator,
    pub service: ServiceClient,
}

pub async fn start() -> Env {
    start_with(EmulatorConfig::default()).await
}

/// As [`start`], with an emulator configured by the test (a workload API, a state dir, ...).
pub async fn start_with(config: EmulatorConfig) -> Env {
    let _ = env_logger::builder().is_test(true).try_init();
    let emu = Emulator::start(config).await.expect("emulator starts");
    let service = ServiceClient::from_connection_string(
        emu.service_connection_string(),
        ServiceOptions { ca_pem: Some(emu.ca_pem().to_string()), timeout: Duration::from_secs(30) },
    )
    .expect("service client");
    Env { emu, service }
}

impl Env {
    /// Options for a client of this emulator: its CA, its ports, short bounds for tests.
    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            server_verification_cert: Some(self.emu.ca_pem().to_string()),
            mqtt_port: self.emu.mqtt_port(),
            https_port: self.emu.https_port(),
            operation_timeout: Duration::from_secs(20),
            connection_retry_interval: 1,
            ..Default::default()
        }
    }

    pub fn device(&self, id: &str) -> String {
        let _ = self.emu.hub().create_device(id);
        self.emu.hub().device_connection_string(id, None).expect("device connection string")
    }

    pub fn module(&self, d: &str, m: &str) -> String {
        let _ = self.emu.hub().create_device(d);
        let _ = self.emu.hub().create_module(d, m);
        self.emu.hub().device_connection_string(d, Some(m)).expect("module connection string")
    }

    /// A module of an IoT Edge device (the only modules the Edge hub's method endpoint serves).
    pub fn edge_module(&self, d: &str, m: &str) -> String {
        let _ = self.emu.hub().create_edge_device(d);
        self.module(d, m)
    }

    pub fn device_client(&self, id: &str) -> ironhub::Client {
        ironhub::Client::create_from_connection_string(&self.device(id), self.options()).expect("device client")
    }

    pub fn module_client(&self, d: &str, m: &str) -> ironhub::Client {
        ironhub::Client::create_from_connection_string(&self.module(d, m), self.options()).expect("module client")
    }

    /// Telemetry events the hub recorded for a device after `after`, long-polling up to `wait_s`.
    pub async fn events(&self, device_id: &str, after: u64, wait_s: u64) -> Vec<Value> {
        let (status, body) = self
            .service
            .request("GET", &format!("/emulator/events?deviceId={device_id}&after={after}&timeoutSeconds={wait_s}"), None)
            .await
            .expect("events call");
        assert_eq!(status, 200, "events: {body}");
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until at least `n` events exist for the device (bounded).
    pub async fn wait_events(&self, device_id: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ev = self.events(device_id, 0, 2).await;
            if ev.len() >= n || tokio::time::Instant::now() > deadline {
                return ev;
            }
        }
    }

    pub async fn c2d(&self, device_id: &str, body: Value) {
        let (s, b) = self
            .service
            .request("POST", &format!("/emulator/devices/{device_id}/messages/devicebound"), Some(&body))
            .await
            .unwrap();
        assert!(s < 300, "c2d: {s} {b}");
    }

    pub async fn input(&self, d: &str, m: &str, input: &str, body: Value) {
        let (s, b) = self
            .service
            .request("POST", &format!("/emulator/devices/{d}/modules/{m}/inputs/{input}"), Some(&body))
            .await
            .unwrap();
        assert!(s < 300, "input: {s} {b}");
    }

    pub async fn kick(&self, d: &str, m: Option<&str>) {
        let path = match m {
            Some(m) => format!("/emulator/devices/{d}/modules/{m}/disconnect"),
            None => format!("/emulator/devices/{d}/disconnect"),
        };
        let (s, b) = self.service.request("POST", &path, Some(&json!({}))).await.unwrap();
        assert!(s < 300, "disconnect: {s} {b}");
    }
}

/// Collects handler arrivals and lets a test wait for them (bounded).
#[derive(Clone)]
pub struct Collector<T> {
    items: Arc<Mutex<Vec<T>>>,
    notify: Arc<tokio::sync::Notify>,
}

impl<T: Clone + Send + 'static> Collector<T> {
    pub fn new() -> Self {
        Collector { items: Arc::new(Mutex::new(Vec::new())), notify: Arc::new(tokio::sync::Notify::new()) }
    }

    pub fn push(&self, v: T) {
        self.items.lock().unwrap().push(v);
        self.notify.notify_waiters();
    }

    pub fn items(&self) -> Vec<T> {
        self.items.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<T> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let notified = self.notify.notified();
            if self.items.lock().unwrap().len() >= n {
                return self.items();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.items();
            }
        }
    }
}
