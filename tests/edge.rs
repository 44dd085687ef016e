//! IoT Edge end to end: `create_from_edge_environment` with the `IOTEDGE_*` variables (the trust
//! bundle and every SAS signature from the emulator's workload API, over its Unix socket or TCP),
//! with the development fallback (`EdgeHubConnectionString` + `EdgeModuleCACertificateFile`), and
//! with neither; `invoke_method` from a module to a module and to a device through the Edge hub's
//! method endpoint. The environment is process-wide: every test holds `ENV_LOCK` while it uses it.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use ironhub::{Client, ClientOptions, ConnectionStateChange, ErrorKind, Message, MethodResponse};
use ironhub_emulator::EmulatorConfig;
use serde_json::json;

static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every variable `create_from_edge_environment` reads.
const EDGE_VARIABLES: [&str; 10] = [
    "IOTEDGE_IOTHUBHOSTNAME",
    "IOTEDGE_DEVICEID",
    "IOTEDGE_MODULEID",
    "IOTEDGE_GATEWAYHOSTNAME",
    "IOTEDGE_MODULEGENERATIONID",
    "IOTEDGE_WORKLOADURI",
    "IOTEDGE_APIVERSION",
    "IOTEDGE_AUTHSCHEME",
    "EdgeHubConnectionString",
    "EdgeModuleCACertificateFile",
];

fn clear_edge_environment() {
    for name in EDGE_VARIABLES {
        std::env::remove_var(name);
    }
}

/// Replaces the whole Edge environment with `vars`.
fn set_edge_environment(vars: &[(String, String)]) {
    clear_edge_environment();
    for (name, value) in vars {
        std::env::set_var(name, value);
    }
}

/// An emulator that also serves the workload API, on a Unix socket of this test and on loopback TCP.
async fn start_edge(tag: &str) -> common::Env {
    let socket = std::env::temp_dir().join(format!("ironhub-edge-{}-{tag}.sock", std::process::id()));
    let config = EmulatorConfig {
        workload_socket: Some(socket),
        workload_addr: Some(([127, 0, 0, 1], 0).into()),
        ..Default::default()
    };
    common::start_with(config).await
}

/// What a module gets besides the environment: the emulator's ports (IoT Edge uses the standard
/// ones), no `server_verification_cert` (the environment supplies the trust), short test bounds.
fn edge_options(env: &common::Env) -> ClientOptions {
    ClientOptions { server_verification_cert: None, ..env.options() }
}

/// Answers every method request with status 200 and the request's payload.
async fn answer_methods_with_echo(client: &Client) {
    let responder = client.clone();
    client
        .on_method_request_received(Some(Arc::new(move |request| {
            let c = responder.clone();
            // The handler runs on the client's dispatcher: answer from elsewhere, as applications may.
            std::thread::spawn(move || {
                let echo = Some(request.payload.clone());
                ironhub::blocking::Client::from_async(c)
                    .send_method_response(&MethodResponse::create_from_method_request(&request, 200, echo))
                    .expect("method response");
            });
        })))
        .await
        .expect("method handler subscribes");
}

/// Telemetry from `client` reaches the hub under its module identity.
async fn assert_telemetry_recorded(env: &common::Env, client: &Client, device_id: &str, module_id: &str, text: &str) {
    client.send_message(&Message::new(text.to_owned())).await.expect("telemetry");
    let events = env.wait_events(device_id, 1).await;
    let event = events.iter().find(|e| e["moduleId"] == module_id).unwrap_or_else(|| panic!("no event from {module_id}: {events:?}"));
    let body = base64::engine::general_purpose::STANDARD.decode(event["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, text.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_environment_missing_or_incomplete_is_an_error() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = start_edge("missing").await;
    clear_edge_environment();
    let e = Client::create_from_edge_environment(edge_options(&env)).await.unwrap_err();
    assert!(e.to_string().contains("IoT Edge environment not configured correctly"), "{e}");

    // Six of the seven primary variables, and no fallback: still not configured.
    env.edge_module("edgeDev", "filter");
    let partial: Vec<_> = env.emu.edge_environment("edgeDev", "filter").into_iter().filter(|(k, _)| k != "IOTEDGE_WORKLOADURI").collect();
    set_edge_environment(&partial);
    let e = Client::create_from_edge_environment(edge_options(&env)).await.unwrap_err();
    assert!(e.to_string().contains("IoT Edge environment not configured correctly"), "{e}");

    // The fallback needs both of its variables.
    set_edge_environment(&[("EdgeHubConnectionString".into(), format!("{};GatewayHostName=localhost", env.edge_module("edgeDev", "filter")))]);
    let e = Client::create_from_edge_environment(edge_options(&env)).await.unwrap_err();
    assert!(e.to_string().contains("IoT Edge environment not configured correctly"), "{e}");
    clear_edge_environment();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_module_over_the_workload_socket_sends_telemetry_and_invokes_methods() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = start_edge("socket").await;
    env.edge_module("edgeDev", "caller");
    let vars = env.emu.edge_environment("edgeDev", "caller");
    assert!(vars.iter().any(|(k, v)| k == "IOTEDGE_WORKLOADURI" && v.starts_with("unix://")), "{vars:?}");
    set_edge_environment(&vars);

    let refused = ClientOptions { server_verification_cert: Some(env.emu.ca_pem().into()), ..edge_options(&env) };
    assert_eq!(Client::create_from_edge_environment(refused).await.unwrap_err().kind(), ErrorKind::InvalidArgument);
    let edge = Client::create_from_edge_environment(edge_options(&env)).await.expect("edge module from the environment");
    clear_edge_environment();
    assert_eq!(edge.identity().device_id, "edgeDev");
    assert_eq!(edge.identity().module_id.as_deref(), Some("caller"));
    // Connecting proves the trust bundle verified the server and the workload API signed the token.
    edge.connect().await.expect("connect with a token signed by the workload API");
    assert_telemetry_recorded(&env, &edge, "edgeDev", "caller", "from an edge module").await;

    let neighbour = env.module_client("edgeDev", "responder");
    answer_methods_with_echo(&neighbour).await;
    let leaf = env.device_client("leafDev");
    answer_methods_with_echo(&leaf).await;

    let params = json!({"methodName": "echo", "payload": {"n": 7}, "responseTimeoutInSeconds": 10});
    let to_module = edge.invoke_method(&params, "edgeDev", Some("responder")).await.expect("module → module");
    assert_eq!(to_module, json!({"status": 200, "payload": {"n": 7}}));
    let params = json!({"methodName": "echo", "payload": "hi", "responseTimeoutInSeconds": 10});
    let to_device = edge.invoke_method(&params, "leafDev", None).await.expect("module → device");
    assert_eq!(to_device, json!({"status": 200, "payload": "hi"}));

    let err = edge.invoke_method(&json!({"payload": 1}), "leafDev", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "methodName is required: {err}");
    let err = edge.invoke_method(&json!({"methodName": "x", "responseTimeoutInSeconds": 5}), "nobody-here", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Client, "{err}");
    assert_eq!(err.service_status(), Some(404));
    for c in [edge, neighbour, leaf] {
        c.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_module_over_a_tcp_workload_uri_connects() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = start_edge("tcp").await;
    env.edge_module("edgeDev", "tcpModule");
    let tcp = env.emu.workload().tcp.expect("TCP workload endpoint");
    let mut vars = env.emu.edge_environment("edgeDev", "tcpModule");
    for (name, value) in &mut vars {
        if name == "IOTEDGE_WORKLOADURI" {
            *value = format!("http://{tcp}");
        }
    }
    set_edge_environment(&vars);
    let edge = Client::create_from_edge_environment(edge_options(&env)).await.expect("edge module over TCP");
    clear_edge_environment();
    assert_telemetry_recorded(&env, &edge, "edgeDev", "tcpModule", "over tcp").await;
    edge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_module_of_a_stale_generation_cannot_connect() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = start_edge("stale").await;
    env.edge_module("edgeDev", "reborn");
    let vars = env.emu.edge_environment("edgeDev", "reborn");
    // The module is deleted and re-created: same id, new generation; the old environment is stale.
    env.emu.hub().delete_module("edgeDev", "reborn", None).unwrap();
    env.emu.hub().create_module("edgeDev", "reborn").unwrap();
    set_edge_environment(&vars);
    let edge = Client::create_from_edge_environment(edge_options(&env)).await.expect("the trust bundle needs no identity");
    clear_edge_environment();
    let err = tokio::time::timeout(Duration::from_secs(30), edge.connect())
        .await
        .expect("connect gives up within 30 s")
        .expect_err("the workload API refuses to sign for a stale generation");
    assert!(err.to_string().contains("workload API"), "{err}");
    assert!(!edge.connected());
    edge.shutdown().await.unwrap();
}

/// A module client made by `create_from_edge_environment` from the development fallback variables
/// (`EdgeHubConnectionString` + `EdgeModuleCACertificateFile`); the caller holds `ENV_LOCK`.
async fn from_fallback_variables(env: &common::Env, module_cs: &str) -> Client {
    let cs = format!("{module_cs};GatewayHostName=localhost");
    let ca: PathBuf = std::env::temp_dir().join(format!("ironhub-edge-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, env.emu.ca_pem()).unwrap();
    set_edge_environment(&[
        ("EdgeHubConnectionString".into(), cs),
        ("EdgeModuleCACertificateFile".into(), ca.display().to_string()),
    ]);
    let client = Client::create_from_edge_environment(edge_options(env)).await.expect("module from the fallback variables");
    clear_edge_environment();
    let _ = std::fs::remove_file(&ca);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_fallback_variables_connect_and_invoke_methods() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = start_edge("fallback").await;
    let edge = from_fallback_variables(&env, &env.edge_module("edgeDev", "caller")).await;
    assert_eq!(edge.identity().module_id.as_deref(), Some("caller"));
    assert_telemetry_recorded(&env, &edge, "edgeDev", "caller", "from the fallback").await;

    let target = env.device_client("edgeTarget");
    answer_methods_with_echo(&target).await;
    let params = json!({"methodName": "echo", "payload": [1, 2], "responseTimeoutInSeconds": 10});
    let result = edge.invoke_method(&params, "edgeTarget", None).await.expect("invoke_method through the Edge hub");
    assert_eq!(result, json!({"status": 200, "payload": [1, 2]}));
    for c in [edge, target] {
        c.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_method_endpoint_refuses_modules_of_a_device_without_iot_edge() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = start_edge("not-edge").await;
    let module = from_fallback_variables(&env, &env.module("plainDev", "caller")).await;
    let target = env.device_client("plainTarget");
    answer_methods_with_echo(&target).await;
    let params = json!({"methodName": "echo", "payload": 1, "responseTimeoutInSeconds": 10});
    let err = module.invoke_method(&params, "plainTarget", None).await.unwrap_err();
    assert!(err.to_string().contains("not an IoT Edge device"), "{err}");
    for c in [module, target] {
        c.shutdown().await.unwrap();
    }
}

/// Tokens of a few seconds are renewed through the workload API before the hub's expiry check
/// would close the connection: the module never drops and keeps sending. (Without renewal the
/// emulator disconnects the client when its first token expires, and the handler would see it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_module_renews_workload_signed_tokens_without_dropping() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = start_edge("renew").await;
    env.module("edgeRenewDev", "renewer");
    set_edge_environment(&env.emu.edge_environment("edgeRenewDev", "renewer"));
    let options = ClientOptions { sastoken_ttl: Some(4), ..edge_options(&env) };
    let edge = Client::create_from_edge_environment(options).await.expect("edge module from the environment");
    clear_edge_environment();
    let drops = Arc::new(Mutex::new(Vec::new()));
    let seen = drops.clone();
    edge.on_connection_state_change(Some(Arc::new(move |change: ConnectionStateChange| {
        if !change.connected {
            seen.lock().unwrap().push(change.reason);
        }
    })))
    .unwrap();
    edge.send_message(&Message::new("before renewals")).await.expect("send with a workload-signed token");
    // 4 s tokens: renewed at half-life, so several renewals happen in this window.
    tokio::time::sleep(Duration::from_secs(7)).await;
    edge.send_message(&Message::new("after renewals")).await.expect("send after renewals");
    assert!(drops.lock().unwrap().is_empty(), "the connection dropped: {:?}", drops.lock().unwrap());
    assert_eq!(env.events("edgeRenewDev", 0, 5).await.len(), 2);
    edge.shutdown().await.unwrap();
}
