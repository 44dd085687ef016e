//! A kill -9 of the emulator binary under load, then a restart on the same state directory: every
//! telemetry message it PUBACKed, every twin write and C2D message it answered is still there.

mod mqtt_support;
mod process_support;

use std::process::Child;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironhub_emulator::Identity;
use ironhub_protocol::topics::{self, PropertyBag};
use mqtt_support::{options, unix_now, Client, Incoming};
use serde_json::{json, Value};

/// The emulator process and a service API caller for it.
struct Running {
    child: Child,
    service: Arc<Service>,
}

struct Service {
    info: Value,
    ca_pem: String,
    http: reqwest::Client,
}

impl Running {
    fn start(dir: &std::path::Path) -> Running {
        let (child, info) = process_support::serve(dir);
        let ca_pem = std::fs::read_to_string(info["caFile"].as_str().unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Running { child, service: Arc::new(Service { info, ca_pem, http }) }
    }
}

impl Service {
    fn port(&self, which: &str) -> u16 {
        self.info[which].as_u64().unwrap() as u16
    }

    fn policy_key(&self) -> String {
        let cs = self.info["serviceConnectionString"].as_str().unwrap();
        cs.split("SharedAccessKey=").nth(1).unwrap().to_owned()
    }

    /// A service API call; `None` when the emulator did not answer (it was killed).
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
        let token = ironhub_protocol::sas::generate_token("localhost", &self.policy_key(), Some("iothubowner"), unix_now() + 600).unwrap();
        let mut req = self.http.request(method, format!("https://localhost:{}{path}", self.port("httpsPort"))).header("Authorization", token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let text = resp.text().await.ok()?;
        Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Registers `device_id`; MQTT options that connect as it (SAS token).
    async fn new_device(&self, device_id: &str) -> rumqttc::MqttOptions {
        let path = format!("/devices/{device_id}");
        let (status, device) = self.call(reqwest::Method::PUT, &path, Some(json!({}))).await.unwrap();
        assert_eq!(status, 200);
        let key = device["authentication"]["symmetricKey"]["primaryKey"].as_str().unwrap().to_owned();
        let resource = ironhub_protocol::sas::device_resource("localhost", device_id, None);
        let token = ironhub_protocol::sas::generate_token(&resource, &key, None, unix_now() + 600).unwrap();
        options(self.port("mqttPort"), &self.ca_pem, &Identity::device(device_id), &token)
    }

    /// The numbers `device_id`'s recorded telemetry carries as bodies.
    async fn telemetry_numbers(&self, device_id: &str) -> std::collections::HashSet<i64> {
        let path = format!("/emulator/events?deviceId={device_id}");
        let (_, events) = self.call(reqwest::Method::GET, &path, None).await.unwrap();
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| String::from_utf8(base64_decode(e["body"].as_str().unwrap())).unwrap().parse().unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_acknowledged() {
    let dir = std::env::temp_dir().join(format!("ironhub-crash-{}", rand::random::<u64>()));
    let mut first = Running::start(&dir);
    let service = first.service.clone();
    let mut device = Client::connect(service.new_device("crash").await).await.unwrap();

    // Three writers at once, each recording the last thing the emulator acknowledged.
    let (acked_telemetry, acked_desired, acked_c2d) = (Arc::new(AtomicI64::new(-1)), Arc::new(AtomicI64::new(-1)), Arc::new(AtomicI64::new(0)));
    let telemetry = {
        let acked = acked_telemetry.clone();
        tokio::spawn(async move {
            let topic = topics::telemetry_topic("crash", None, &PropertyBag::default());
            for n in 0.. {
                if device.client.publish(&topic, rumqttc::QoS::AtLeastOnce, false, n.to_string()).await.is_err() {
                    return;
                }
                loop {
                    match device.next().await {
                        Incoming::PubAck(_) => break,
                        Incoming::Closed(_) => return,
                        _ => {}
                    }
                }
                acked.store(n, Ordering::SeqCst);
            }
        })
    };
    let twins = {
        let (acked, service) = (acked_desired.clone(), service.clone());
        tokio::spawn(async move {
            for n in 0.. {
                match service.call(reqwest::Method::PATCH, "/twins/crash", Some(json!({"properties": {"desired": {"n": n}}}))).await {
                    Some((200, _)) => acked.store(n, Ordering::SeqCst),
                    _ => return,
                }
            }
        })
    };
    let c2d = {
        let (acked, service) = (acked_c2d.clone(), service.clone());
        tokio::spawn(async move {
            for n in 0..50 {
                let path = "/emulator/devices/crash/messages/devicebound";
                match service.call(reqwest::Method::POST, path, Some(json!({"bodyText": format!("c{n}")}))).await {
                    Some((200, _)) => acked.store(n + 1, Ordering::SeqCst),
                    _ => return,
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    for task in [telemetry, twins, c2d] {
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("writers stop once the emulator is gone").unwrap();
    }
    let (telemetry, desired, c2d) =
        (acked_telemetry.load(Ordering::SeqCst), acked_desired.load(Ordering::SeqCst), acked_c2d.load(Ordering::SeqCst));
    eprintln!("acknowledged before the kill: telemetry up to {telemetry}, desired n up to {desired}, {c2d} C2D");
    assert!(telemetry > 10 && desired > 10 && c2d > 10, "the load did run");

    let mut second = Running::start(&dir);
    let service = second.service.clone();
    let bodies = service.telemetry_numbers("crash").await;
    for n in 0..=telemetry {
        assert!(bodies.contains(&n), "telemetry {n} was PUBACKed but is gone");
    }
    let (_, twin) = service.call(reqwest::Method::GET, "/twins/crash", None).await.unwrap();
    assert!(twin["properties"]["desired"]["n"].as_i64().unwrap() >= desired, "{twin}");
    let (status, answer) = service
        .call(reqwest::Method::POST, "/emulator/devices/crash/messages/devicebound", Some(json!({"bodyText": "after"})))
        .await
        .unwrap();
    if c2d < 50 {
        assert_eq!(status, 200, "{answer}");
        assert!(answer["pendingCount"].as_i64().unwrap() > c2d, "{answer}: {c2d} were accepted before the kill");
    } else {
        assert_eq!(status, 403, "all 50 survived, so the queue is full");
    }
    second.child.kill().unwrap();
    second.child.wait().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// At-least-once with the store's group commit: a device pipelines thousands of PUBLISHes (up to
/// 1,000 in flight), the emulator is killed -9 while PUBACKs stream back, and after a restart
/// every message it PUBACKed is in the event log. PUBACKs come in PUBLISH order (MQTT 3.1.1 §4.6),
/// so k PUBACKs acknowledge messages 0..k. Prints the PUBACK rate (a figure, never asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_pipelining_loses_no_acknowledged_message() {
    const ENOUGH: i64 = 10_000;
    let dir = std::env::temp_dir().join(format!("ironhub-crash-pipelined-{}", rand::random::<u64>()));
    let mut first = Running::start(&dir);
    let service = first.service.clone();
    let mut opts = service.new_device("piped").await;
    opts.set_inflight(1000);
    let mut device = Client::connect(opts).await.unwrap();

    let publisher = device.client.clone();
    let publishing = tokio::spawn(async move {
        let topic = topics::telemetry_topic("piped", None, &PropertyBag::default());
        for n in 0u64.. {
            if publisher.publish(&topic, rumqttc::QoS::AtLeastOnce, false, n.to_string()).await.is_err() {
                return;
            }
        }
    });
    let acked = Arc::new(AtomicI64::new(0));
    let counting = {
        let acked = acked.clone();
        tokio::spawn(async move {
            loop {
                match device.next().await {
                    Incoming::PubAck(_) => acked.fetch_add(1, Ordering::SeqCst),
                    Incoming::Closed(_) => return,
                    _ => continue,
                };
            }
        })
    };
    let started = std::time::Instant::now();
    while acked.load(Ordering::SeqCst) < ENOUGH && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (at_kill, took) = (acked.load(Ordering::SeqCst), started.elapsed());
    first.child.kill().unwrap(); // SIGKILL, with PUBLISHes and PUBACKs still in flight
    first.child.wait().unwrap();
    tokio::time::timeout(Duration::from_secs(30), counting).await.expect("the device sees the close").unwrap();
    publishing.abort();
    let acked = acked.load(Ordering::SeqCst);
    eprintln!(
        "pipelined to the persisted emulator: {at_kill} PUBACKs in {:.2} s ({:.0} msg/s); {acked} PUBACKed in all",
        took.as_secs_f64(),
        at_kill as f64 / took.as_secs_f64()
    );
    assert!(acked >= ENOUGH, "only {acked} PUBACKs in 20 s");

    let mut second = Running::start(&dir);
    let bodies = second.service.telemetry_numbers("piped").await;
    let lost: Vec<i64> = (0..acked).filter(|n| !bodies.contains(n)).collect();
    let some = &lost[..lost.len().min(10)];
    assert!(lost.is_empty(), "{} of {acked} PUBACKed messages are gone, e.g. {some:?}", lost.len());
    second.child.kill().unwrap();
    second.child.wait().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
