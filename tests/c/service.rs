//! The hub side of the C tests: one in-process emulator per test process, a fresh identity set
//! per program run, and the answers to the programs' "@@ verb args" requests (see common.h),
//! carried out through the service API and the emulator's control API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ironhub::blocking::ServiceClient;
use ironhub::service::{DirectMethodRequest, ServiceOptions};
use ironhub_emulator::{BackgroundEmulator, EmulatorConfig};
use ironhub_protocol::connection_string::ConnectionString;
use serde_json::{json, Value};

use super::fault_proxy::FaultProxy;

struct Hub {
    emulator: BackgroundEmulator,
    service: ServiceClient,
    ca_file: std::path::PathBuf,
    held: HeldLinks,
}

/// A fault proxy per program run in front of the MQTT port (`IRONHUB_TEST_HELD_MQTT_PORT`), which
/// the program's "stall <device>" and "heal <device>" requests freeze and release: a test holds its
/// link (no PUBACK comes back, nothing drains) by construction, not by outrunning the network.
struct HeldLinks {
    runtime: tokio::runtime::Runtime,
    proxies: Mutex<HashMap<String, FaultProxy>>,
}

impl HeldLinks {
    fn new() -> HeldLinks {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("proxy runtime");
        HeldLinks { runtime, proxies: Mutex::new(HashMap::new()) }
    }

    /// Starts the proxy of `device`'s runs; returns its port.
    fn start(&self, device: &str, mqtt_port: u16) -> u16 {
        let upstream = SocketAddr::from(([127, 0, 0, 1], mqtt_port));
        let proxy = self.runtime.block_on(FaultProxy::start(upstream)).expect("fault proxy");
        let port = proxy.port();
        self.proxies.lock().unwrap().insert(device.to_string(), proxy);
        port
    }

    fn with(&self, device: &str, f: impl FnOnce(&FaultProxy)) -> Result<String, String> {
        let proxies = self.proxies.lock().unwrap();
        f(proxies.get(device).ok_or_else(|| format!("no held link for {device}"))?);
        Ok("ok".into())
    }
}

fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| {
        let emulator = BackgroundEmulator::start(EmulatorConfig::default()).expect("start the emulator");
        let service = ServiceClient::from_connection_string(
            emulator.service_connection_string(),
            ServiceOptions { ca_pem: Some(emulator.ca_pem().to_string()), ..Default::default() },
        )
        .expect("service client");
        let ca_file = super::out_dir().join("emulator-ca.pem");
        std::fs::write(&ca_file, emulator.ca_pem()).expect("write CA file");
        Hub { emulator, service, ca_file, held: HeldLinks::new() }
    })
}

/// Creates device `c-{tag}`, its modules `mod` and `edge`, the route `mod/outputs/loop →
/// mod/inputs/in1` (one route, shared by every run: a duplicate would deliver twice), and returns the environment a test program reads.
pub fn environment(tag: &str) -> Vec<(String, String)> {
    let h = hub();
    let emu = &h.emulator;
    let device = format!("c-{tag}");
    emu.hub().create_edge_device(&device).expect("create device");
    emu.hub().create_module(&device, "mod").expect("create module");
    emu.hub().create_module(&device, "edge").expect("create edge module");
    let device_cs = emu.hub().device_connection_string(&device, None).expect("device cs");
    let module_cs = emu.hub().device_connection_string(&device, Some("mod")).expect("module cs");
    let edge_cs = emu.hub().device_connection_string(&device, Some("edge")).expect("edge cs");
    let key = ConnectionString::parse(&device_cs).ok().and_then(|cs| cs.shared_access_key).expect("device key");
    let route = json!({"routes": {
        "c-tests-loop": "FROM /messages/modules/mod/outputs/loop INTO BrokeredEndpoint(\"/modules/mod/inputs/in1\")"
    }});
    let (status, body) = h.service.request("PUT", "/emulator/routes", Some(&route)).expect("set route");
    assert!(status < 300, "set route: {status} {body}");
    let x509_device = format!("{device}-x509");
    let (x509_cert, x509_key) = self_signed_device(h, &x509_device);
    let held_port = h.held.start(&device, emu.mqtt_port());
    // A symmetric-key group enrollment whose members the provisioning test registers.
    let group_key = ironhub_emulator::dps::enrollments::generate_key();
    let group = json!({"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": group_key, "secondaryKey": group_key}}});
    emu.dps().put_enrollment(ironhub_emulator::dps::enrollments::Kind::Group, &format!("c-{tag}-group"), &group, None).expect("enrollment group");

    let vars = [
        ("IRONHUB_TEST_HOSTNAME", emu.hostname().to_string()),
        ("IRONHUB_TEST_MQTT_PORT", emu.mqtt_port().to_string()),
        ("IRONHUB_TEST_HELD_MQTT_PORT", held_port.to_string()),
        ("IRONHUB_TEST_HTTPS_PORT", emu.https_port().to_string()),
        ("IRONHUB_TEST_CA_PEM", emu.ca_pem().to_string()),
        ("IRONHUB_TEST_DEVICE_ID", device.clone()),
        ("IRONHUB_TEST_DEVICE_CS", device_cs.clone()),
        ("IRONHUB_TEST_DEVICE_KEY", key),
        ("IRONHUB_TEST_MODULE_CS", module_cs),
        ("IRONHUB_TEST_X509_DEVICE_ID", x509_device),
        ("IRONHUB_TEST_X509_CERT", x509_cert.display().to_string()),
        ("IRONHUB_TEST_X509_KEY", x509_key.display().to_string()),
        ("IRONHUB_TEST_ID_SCOPE", emu.id_scope()),
        ("IRONHUB_TEST_GROUP_KEY", group_key),
        // Development fallback of create_from_edge_environment (wire-protocol.md §Edge).
        ("EdgeHubConnectionString", format!("{edge_cs};GatewayHostName={}", emu.hostname())),
        ("EdgeModuleCACertificateFile", h.ca_file.display().to_string()),
        // The example's own variables.
        ("IOTHUB_DEVICE_CONNECTION_STRING", device_cs),
        ("IRONHUB_CA_PEM", emu.ca_pem().to_string()),
        ("IRONHUB_MQTT_PORT", emu.mqtt_port().to_string()),
        ("IRONHUB_HTTPS_PORT", emu.https_port().to_string()),
        ("TELEMETRY_INTERVAL_MS", "50".to_string()),
    ];
    vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Registers `device_id` with `selfSigned` X.509 authentication: a fresh P-256 certificate made
/// by the openssl CLI, registered by its SHA-256 thumbprint through the service API. Returns the
/// certificate and key file paths.
fn self_signed_device(h: &Hub, device_id: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = super::out_dir();
    let (cert, key) = (dir.join(format!("{device_id}.cert.pem")), dir.join(format!("{device_id}.key.pem")));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .arg("-subj")
        .arg(format!("/CN={device_id}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "openssl req: {}", String::from_utf8_lossy(&made.stderr));
    let fp = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .expect("run openssl");
    let fp = String::from_utf8_lossy(&fp.stdout);
    let thumbprint: String = fp.split('=').nth(1).unwrap_or_default().trim().replace(':', "");
    assert_eq!(thumbprint.len(), 64, "thumbprint from {fp:?}");
    let body = json!({"deviceId": device_id, "authentication": {"type": "selfSigned",
        "x509Thumbprint": {"primaryThumbprint": thumbprint}}});
    let (status, reply) =
        h.service.request("PUT", &format!("/devices/{device_id}"), Some(&body)).expect("create x509 device");
    assert!(status < 300, "create x509 device: {status} {reply}");
    (cert, key)
}

fn json_arg(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("bad JSON {text:?}: {e}"))
}

/// Carries out one request line (without the "@@ " prefix) and returns the reply line.
pub fn handle(request: &str) -> Result<String, String> {
    let h = hub();
    let mut words = request.splitn(2, ' ');
    let verb = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default();
    match verb {
        "desired" => {
            let (device, patch) = rest.split_once(' ').ok_or("desired <device> <json>")?;
            let body = json!({"properties": {"desired": json_arg(patch)?}});
            h.service.update_twin(device, None, &body, None).map_err(|e| e.to_string())?;
            Ok("ok".into())
        }
        "invoke" => {
            let mut parts = rest.splitn(4, ' ');
            let (Some(device), Some(module), Some(method), Some(payload)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err("invoke <device> <module|-> <method> <json>".into());
            };
            let module = (module != "-").then_some(module);
            let mut req = DirectMethodRequest::new(method, json_arg(payload)?);
            req.response_timeout_in_seconds = 20;
            req.connect_timeout_in_seconds = 5;
            let r = h.service.invoke_method(device, module, &req).map_err(|e| e.to_string())?;
            Ok(format!("{} {}", r.status, r.payload))
        }
        "device" => {
            // A fresh device of its own (tests with many clients): its connection string.
            h.emulator.hub().create_device(rest).map_err(|e| e.to_string())?;
            h.emulator.hub().device_connection_string(rest, None).ok_or_else(|| format!("no connection string for {rest}"))
        }
        "c2d" => {
            let (device, text) = rest.split_once(' ').ok_or("c2d <device> <payload>")?;
            let body = json!({"bodyText": text, "properties": {"k": "v"}});
            let path = format!("/emulator/devices/{device}/messages/devicebound");
            let (status, reply) = h.service.request("POST", &path, Some(&body)).map_err(|e| e.to_string())?;
            if status >= 300 {
                return Err(format!("c2d: {status} {reply}"));
            }
            Ok("ok".into())
        }
        // The program's held link (IRONHUB_TEST_HELD_MQTT_PORT): frozen with every socket open, then moving again.
        "stall" => h.held.with(rest, FaultProxy::stall),
        "heal" => h.held.with(rest, FaultProxy::heal),
        "disconnect" => {
            // The hub drops the device's MQTT connection (as a network failure would).
            let path = format!("/emulator/devices/{rest}/disconnect");
            let (status, reply) = h.service.request("POST", &path, None).map_err(|e| e.to_string())?;
            if status >= 300 {
                return Err(format!("disconnect: {status} {reply}"));
            }
            Ok("ok".into())
        }
        "events" => {
            let path = format!("/emulator/events?deviceId={rest}");
            let (status, reply) = h.service.request("GET", &path, None).map_err(|e| e.to_string())?;
            if status >= 300 {
                return Err(format!("events: {status} {reply}"));
            }
            let n = reply.get("events").and_then(Value::as_array).map_or(0, Vec::len);
            Ok(n.to_string())
        }
        "distinct_events" => {
            // Telemetry with distinct bodies the hub recorded: equal to "events" when none came twice.
            let path = format!("/emulator/events?deviceId={rest}");
            let (status, reply) = h.service.request("GET", &path, None).map_err(|e| e.to_string())?;
            if status >= 300 {
                return Err(format!("distinct_events: {status} {reply}"));
            }
            let events = reply.get("events").and_then(Value::as_array).cloned().unwrap_or_default();
            let bodies: std::collections::HashSet<String> =
                events.iter().filter_map(|e| e.get("body").and_then(Value::as_str)).map(str::to_string).collect();
            Ok(bodies.len().to_string())
        }
        "token" => {
            let (device, ttl) = rest.split_once(' ').ok_or("token <device> <ttl>")?;
            let ttl: u64 = ttl.parse().map_err(|_| "ttl must be a number")?;
            let cs = h.emulator.hub().device_connection_string(device, None).ok_or("unknown device")?;
            let cs = ConnectionString::parse(&cs).map_err(|e| e.to_string())?;
            let key = cs.shared_access_key.ok_or("device has no key")?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
            let resource = ironhub_protocol::sas::device_resource(&cs.host_name, device, None);
            ironhub_protocol::sas::generate_token(&resource, &key, None, now + ttl).map_err(|e| e.to_string())
        }
        other => Err(format!("unknown request {other:?}")),
    }
}
