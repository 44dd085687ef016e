//! A restart with the same state directory (`state.db`) keeps the registry, twins, routes, the
//! policy key and the CA; `hub.json` is written once both listeners accept.

mod support;

use ironhub_emulator::{EmulatorConfig, Identity};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{start_with, Api};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ironhub-{name}-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn restart_keeps_registry_twins_routes_and_keys() {
    let dir = temp_dir("restart");
    let config = EmulatorConfig { state_dir: Some(dir.clone()), ..Default::default() };

    let first = start_with(config.clone()).await;
    let api = Api::new(&first);
    let device = api.put("/devices/keep", json!({})).await.body;
    api.put("/devices/keep/modules/m", json!({})).await;
    api.patch("/twins/keep", json!({"tags": {"t": 1}, "properties": {"desired": {"d": 2}}})).await;
    api.patch("/twins/keep/modules/m", json!({"properties": {"desired": {"md": 3}}})).await;
    first.hub().patch_reported(&Identity::device("keep"), &json!({"r": 4})).unwrap();
    api.put("/emulator/routes", json!({"routes": {"up": "FROM /messages/* INTO $upstream"}})).await;
    let twin_before = api.get("/twins/keep").await.body;
    let (policy_key, ca_pem, conn) =
        (first.hub().policy_key().to_owned(), first.ca_pem().to_owned(), first.hub().device_connection_string("keep", None).unwrap());

    #[cfg(unix)]
    for (file, mode) in [("state.db", 0o600), ("ca-key.pem", 0o600), ("hub.json", 0o600), ("ca.pem", 0o644)] {
        use std::os::unix::fs::PermissionsExt;
        let actual = std::fs::metadata(dir.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(actual, mode, "{file} has mode {actual:o}");
    }
    let info: Value = serde_json::from_slice(&std::fs::read(dir.join("hub.json")).unwrap()).unwrap();
    assert_eq!(info["hostname"], "localhost");
    assert_eq!(info["mqttPort"], first.mqtt_port());
    assert_eq!(info["httpsPort"], first.https_port());
    assert_eq!(info["serviceConnectionString"], first.service_connection_string());
    assert_eq!(std::fs::read_to_string(info["caFile"].as_str().unwrap()).unwrap(), ca_pem);
    first.shutdown().await;

    let second = start_with(config).await;
    assert_eq!(second.hub().policy_key(), policy_key);
    assert_eq!(second.ca_pem(), ca_pem, "clients that trusted the CA keep trusting it");
    assert_eq!(second.hub().device_connection_string("keep", None).unwrap(), conn);
    let api = Api::new(&second);
    let got = api.get("/devices/keep").await.body;
    assert_eq!(got["authentication"], device["authentication"]);
    assert_eq!(got["etag"], device["etag"]);
    assert_eq!(got["connectionState"], "Disconnected");
    assert_eq!(api.get("/twins/keep").await.body, twin_before);
    assert_eq!(api.get("/twins/keep/modules/m").await.body["properties"]["desired"]["md"], 3);
    assert_eq!(api.get("/emulator/routes").await.body["routes"]["up"], "FROM /messages/* INTO $upstream");
    // The next write still gets a fresh etag: the revision counter survived too.
    let updated = api.call(reqwest::Method::PUT, "/devices/keep", Some(json!({})), &[("If-Match", "\"*\"")]).await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_ne!(updated.body["etag"], device["etag"]);
    second.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// `memory_only` (the `--memory-only` flag benchmarks use): the CA and `hub.json` are written, so
/// clients find and trust the hub, but no `state.db`, and a restart forgets the registry.
#[tokio::test]
async fn memory_only_writes_the_ca_and_hub_json_but_no_store() {
    let dir = temp_dir("memory-only");
    let config = EmulatorConfig { state_dir: Some(dir.clone()), memory_only: true, ..Default::default() };
    let first = start_with(config.clone()).await;
    Api::new(&first).put("/devices/gone", json!({})).await;
    let ca_pem = first.ca_pem().to_owned();
    assert!(dir.join("hub.json").exists() && dir.join("ca.pem").exists());
    assert!(!dir.join("state.db").exists(), "memory_only opened a store");
    first.shutdown().await;

    let second = start_with(config).await;
    assert_eq!(second.ca_pem(), ca_pem, "the CA is still kept in the state directory");
    assert_eq!(Api::new(&second).get("/devices/gone").await.status, StatusCode::NOT_FOUND);
    second.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_given_policy_key_wins_and_bad_state_is_a_clear_error() {
    let dir = temp_dir("policy");
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let config = EmulatorConfig { state_dir: Some(dir.clone()), policy_key: Some(key.into()), ..Default::default() };
    let emu = start_with(config.clone()).await;
    assert_eq!(emu.hub().policy_key(), key);
    assert!(emu.service_connection_string().ends_with(&format!("SharedAccessKey={key}")));
    emu.shutdown().await;

    for stale in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    std::fs::write(dir.join("state.db"), b"{ broken, and long enough to be read as a database header").unwrap();
    let err = ironhub_emulator::Emulator::start(config).await.err().expect("a broken state file is refused");
    assert!(err.to_string().contains("state.db"), "{err}");
    let bad_key = EmulatorConfig { policy_key: Some("not base64!".into()), ..Default::default() };
    assert!(ironhub_emulator::Emulator::start(bad_key).await.is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_state_json_of_an_older_emulator_is_imported_once() {
    let dir = temp_dir("legacy");
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let legacy = json!({"policyKey": key, "revision": 7, "devices": [], "routes": {"up": "FROM /messages/* INTO $upstream"}});
    std::fs::write(dir.join("state.json"), serde_json::to_vec(&legacy).unwrap()).unwrap();
    let config = EmulatorConfig { state_dir: Some(dir.clone()), ..Default::default() };
    let emu = start_with(config.clone()).await;
    assert_eq!(emu.hub().policy_key(), key);
    assert_eq!(emu.hub().routes()["up"], "FROM /messages/* INTO $upstream");
    emu.shutdown().await;
    assert!(!dir.join("state.json").exists() && dir.join("state.json.imported").exists());
    let again = start_with(config).await;
    assert_eq!(again.hub().policy_key(), key, "read back from state.db");
    assert_eq!(again.hub().routes().len(), 1);
    again.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn background_emulator_runs_on_its_own_thread() {
    let emu = ironhub_emulator::BackgroundEmulator::start(EmulatorConfig::default()).unwrap();
    emu.hub().create_device("bg").unwrap();
    assert!(emu.ca_pem().contains("BEGIN CERTIFICATE"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async {
        let client = support::https_client(emu.ca_pem());
        let token = ironhub_protocol::sas::generate_token("localhost", emu.hub().policy_key(), Some("iothubowner"), support::unix_now() + 60)
            .unwrap();
        client.get(format!("https://localhost:{}/devices/bg", emu.https_port())).header("Authorization", token).send().await.unwrap().status()
    });
    assert_eq!(status, StatusCode::OK);
    let port = emu.https_port();
    drop(emu);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "listener closed on drop");
}
