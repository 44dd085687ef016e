//! The IoT Edge workload API over real sockets: HTTP/1.1 on a Unix socket (as modules reach
//! iotedged) and on loopback TCP. The trust bundle is the emulator's CA; a digest signs a SAS
//! token the hub accepts for that module; every bad call is a 4xx with a JSON `message`.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ironhub_emulator::{Emulator, EmulatorConfig, Identity, RunningEmulator};
use ironhub_protocol::sas::{self, SasToken};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};

const API: &str = "api-version=2019-01-30";

/// A socket path of its own per test (and per test process), short enough for `sun_path`.
fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ironhub-wl-{}-{name}.sock", std::process::id()))
}

/// An emulator serving the workload API on `socket`, whatever an earlier run left there.
async fn start_on(socket: &Path) -> RunningEmulator {
    let _ = std::fs::remove_file(socket);
    start_on_existing(socket).await.expect("emulator with a workload socket starts")
}

async fn start_on_existing(socket: &Path) -> Result<RunningEmulator, ironhub_emulator::EmulatorError> {
    Emulator::start(EmulatorConfig { workload_socket: Some(socket.to_path_buf()), ..Default::default() }).await
}

/// One HTTP/1.1 exchange over `io`: the status and the JSON body (`Null` when not JSON).
async fn exchange<S>(io: S, method: &str, path_and_query: &str, body: &str) -> (u16, Value)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.expect("HTTP handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let resp = sender.send_request(req).await.expect("an answer");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    });
    answer.await.expect("the workload API answers within 10 s")
}

async fn unix_call(socket: &Path, method: &str, path_and_query: &str, body: &str) -> (u16, Value) {
    let io = tokio::net::UnixStream::connect(socket).await.expect("workload socket accepts");
    exchange(io, method, path_and_query, body).await
}

fn sign_body(key_id: &str, data: &[u8]) -> String {
    json!({"keyId": key_id, "algo": "HMACSHA256", "data": BASE64.encode(data)}).to_string()
}

fn sign_path(module_id: &str, generation_id: &str) -> String {
    let enc = ironhub_protocol::encoding::percent_encode;
    format!("/modules/{}/genid/{}/sign?{API}", enc(module_id), enc(generation_id))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn workload_trust_bundle_is_the_emulator_ca() {
    let socket = socket_path("trust");
    let emu = start_on(&socket).await;
    let (status, body) = unix_call(&socket, "GET", &format!("/trust-bundle?{API}"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["certificate"].as_str(), Some(emu.ca_pem()));
    assert!(emu.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    emu.shutdown().await;
    assert!(!socket.exists(), "shutdown removes the workload socket");
}

#[tokio::test]
async fn workload_sign_makes_a_token_the_hub_accepts() {
    let socket = socket_path("sign");
    let emu = start_on(&socket).await;
    emu.hub().create_device("edge1").unwrap();
    let module = emu.hub().create_module("edge1", "$edgeHub").unwrap();

    // Exactly what a module does at every token renewal: sign `{sr}\n{se}` for its own resource.
    let resource = sas::device_resource(emu.hostname(), "edge1", Some("$edgeHub"));
    let expiry = unix_now() + 3600;
    let to_sign = sas::string_to_sign(&sas::encode_resource(&resource), expiry);
    let (status, body) = unix_call(&socket, "POST", &sign_path("$edgeHub", &module.generation_id), &sign_body("primary", to_sign.as_bytes())).await;
    assert_eq!(status, 200, "{body}");
    let digest = body["digest"].as_str().expect("a digest").to_owned();
    let token = sas::format_token(&resource, &digest, None, expiry);
    let parsed = SasToken::parse(&token).unwrap();
    assert!(parsed.verify(module.primary_key()), "the digest is HMAC-SHA256 with the module's primary key");
    assert!(!parsed.verify(&module.authentication.secondary_key));
    assert_eq!(emu.hub().authenticate_sas(&Identity::module("edge1", "$edgeHub"), &token), Ok(expiry));

    let (status, body) = unix_call(&socket, "POST", &sign_path("$edgeHub", &module.generation_id), &sign_body("secondary", to_sign.as_bytes())).await;
    assert_eq!(status, 200, "{body}");
    let token = sas::format_token(&resource, body["digest"].as_str().unwrap(), None, expiry);
    assert!(SasToken::parse(&token).unwrap().verify(&module.authentication.secondary_key), "keyId secondary signs with the secondary key");

    // Arbitrary bytes (not UTF-8) are signed as given, not as text.
    let raw = [0u8, 159, 146, 150, 255];
    let (status, body) = unix_call(&socket, "POST", &sign_path("$edgeHub", &module.generation_id), &sign_body("primary", &raw)).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["digest"].as_str(), Some(digest.as_str()));
    emu.shutdown().await;
}

#[tokio::test]
async fn workload_bad_calls_are_4xx_with_a_message() {
    let socket = socket_path("errors");
    let emu = start_on(&socket).await;
    emu.hub().create_device("edge1").unwrap();
    let module = emu.hub().create_module("edge1", "filter").unwrap();
    let x509 = json!({"authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "AB".repeat(20)}}});
    let x509 = emu.hub().put_module("edge1", "certified", &x509, None).unwrap();
    let good = sign_body("primary", b"text");
    let gen = module.generation_id.clone();
    let sign = sign_path("filter", &gen);
    let no_version = format!("/modules/filter/genid/{gen}/sign");
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        ("POST", sign_path("nobody", &gen), good.clone(), 404, "Module nobody not found"),
        ("POST", sign_path("filter", "0000000000000000"), good.clone(), 404, "no generation"),
        ("POST", sign.clone(), "not json".into(), 400, "not valid"),
        ("POST", sign.clone(), json!({"keyId": "primary", "algo": "HMACSHA256"}).to_string(), 400, "data"),
        ("POST", sign.clone(), json!({"keyId": "primary", "algo": "HMACSHA256", "data": "%%%"}).to_string(), 400, "base64"),
        ("POST", sign.clone(), json!({"keyId": "primary", "algo": "RSA", "data": ""}).to_string(), 400, "algo"),
        ("POST", sign.clone(), sign_body("tertiary", b"x"), 400, "keyId"),
        ("POST", no_version.clone(), good.clone(), 400, "api-version"),
        ("POST", format!("{no_version}?api-version=1999-01-01"), good.clone(), 400, "Unsupported api-version"),
        ("POST", sign_path("certified", &x509.generation_id), good.clone(), 400, "symmetric keys"),
        ("GET", sign.clone(), String::new(), 405, "POST"),
        ("POST", format!("/trust-bundle?{API}"), String::new(), 405, "GET"),
        ("GET", format!("/modules?{API}"), String::new(), 404, "No such"),
    ];
    for (method, path, body, want_status, want_text) in cases {
        let (status, answer) = unix_call(&socket, method, &path, &body).await;
        let message = answer["message"].as_str().unwrap_or_else(|| panic!("{method} {path}: no message in {answer}"));
        assert_eq!(status, want_status, "{method} {path} {body}: {message}");
        assert!(message.contains(want_text), "{method} {path}: {message:?} should mention {want_text:?}");
        assert!(!message.contains(module.primary_key()) && !message.contains(&module.authentication.secondary_key));
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn workload_serves_tcp_and_names_itself_in_the_edge_environment() {
    let socket = socket_path("env");
    let _ = std::fs::remove_file(&socket);
    let config = EmulatorConfig {
        workload_socket: Some(socket.clone()),
        workload_addr: Some(([127, 0, 0, 1], 0).into()),
        ..Default::default()
    };
    let emu = Emulator::start(config).await.unwrap();
    emu.hub().create_device("edge1").unwrap();
    let module = emu.hub().create_module("edge1", "filter").unwrap();
    let env: std::collections::HashMap<String, String> = emu.edge_environment("edge1", "filter").into_iter().collect();
    assert_eq!(env["IOTEDGE_IOTHUBHOSTNAME"], "localhost");
    assert_eq!(env["IOTEDGE_GATEWAYHOSTNAME"], "localhost");
    assert_eq!(env["IOTEDGE_DEVICEID"], "edge1");
    assert_eq!(env["IOTEDGE_MODULEID"], "filter");
    assert_eq!(env["IOTEDGE_MODULEGENERATIONID"], module.generation_id);
    assert_eq!(env["IOTEDGE_APIVERSION"], "2019-01-30");
    assert_eq!(env["IOTEDGE_WORKLOADURI"], format!("unix://{}", socket.display()), "the Unix socket is preferred");
    let unknown: Vec<String> = emu.edge_environment("edge1", "ghost").into_iter().map(|(k, _)| k).collect();
    assert!(!unknown.contains(&"IOTEDGE_MODULEGENERATIONID".to_owned()), "no generation id for a module the registry lacks");

    let tcp = emu.workload().tcp.expect("a TCP endpoint");
    assert!(tcp.ip().is_loopback() && tcp.port() != 0);
    let io = tokio::net::TcpStream::connect(tcp).await.unwrap();
    let (status, body) = exchange(io, "POST", &sign_path("filter", &module.generation_id), &sign_body("primary", b"a\n1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["digest"].as_str(), Some(sas::sign(module.primary_key(), "a\n1").unwrap().as_str()));
    emu.shutdown().await;

    // Without a socket, the environment points at TCP; without either, it has no workload URI.
    let tcp_only = Emulator::start(EmulatorConfig { workload_addr: Some(([127, 0, 0, 1], 0).into()), ..Default::default() }).await.unwrap();
    let uri = tcp_only.edge_environment("d", "m").into_iter().find(|(k, _)| k == "IOTEDGE_WORKLOADURI").map(|(_, v)| v);
    assert_eq!(uri, Some(format!("http://{}", tcp_only.workload().tcp.unwrap())));
    let plain = Emulator::start(EmulatorConfig::default()).await.unwrap();
    assert!(plain.edge_environment("d", "m").iter().all(|(k, _)| k != "IOTEDGE_WORKLOADURI"));
}

#[tokio::test]
async fn workload_socket_replaces_dead_sockets_only() {
    let socket = socket_path("life");
    let _ = std::fs::remove_file(&socket);
    // A socket file nobody listens on (an emulator that was killed) is taken over.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let first = start_on_existing(&socket).await.expect("a dead socket is replaced");
    // A live one is not: two emulators never share a socket.
    let err = start_on_existing(&socket).await.err().expect("a live socket is refused").to_string();
    assert!(err.contains("another server"), "{err}");
    let (status, _) = unix_call(&socket, "GET", &format!("/trust-bundle?{API}"), "").await;
    assert_eq!(status, 200, "the first emulator still serves");
    first.shutdown().await;

    // A regular file in the way is an error and stays.
    std::fs::write(&socket, b"precious").unwrap();
    let err = start_on_existing(&socket).await.err().expect("a regular file is refused").to_string();
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&socket).unwrap(), b"precious");
    std::fs::remove_file(&socket).unwrap();

    // hub.json names the workload API for programs that start the emulator and read it.
    let dir = std::env::temp_dir().join(format!("ironhub-wl-state-{}", std::process::id()));
    let config = EmulatorConfig {
        state_dir: Some(dir.clone()),
        workload_socket: Some(socket.clone()),
        workload_addr: Some(([127, 0, 0, 1], 0).into()),
        ..Default::default()
    };
    let emu = Emulator::start(config).await.unwrap();
    let info: Value = serde_json::from_slice(&std::fs::read(dir.join("hub.json")).unwrap()).unwrap();
    assert_eq!(info["workloadUri"], json!(format!("unix://{}", socket.display())));
    assert_eq!(info["workloadHttpUri"], json!(format!("http://{}", emu.workload().tcp.unwrap())));
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn workload_runs_in_a_background_emulator_too() {
    let socket = socket_path("background");
    let _ = std::fs::remove_file(&socket);
    let config = EmulatorConfig { workload_socket: Some(socket.clone()), ..Default::default() };
    let emu = ironhub_emulator::BackgroundEmulator::start(config).expect("background emulator starts");
    emu.hub().create_device("edge1").unwrap();
    let module = emu.hub().create_module("edge1", "filter").unwrap();
    let env = emu.edge_environment("edge1", "filter");
    assert!(env.contains(&("IOTEDGE_MODULEGENERATIONID".to_owned(), module.generation_id.clone())), "{env:?}");
    assert!(env.contains(&("IOTEDGE_WORKLOADURI".to_owned(), format!("unix://{}", socket.display()))), "{env:?}");
    // A plain blocking client, as C tests or other languages would use it.
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("the socket accepts");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /trust-bundle?{API} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("BEGIN CERTIFICATE"), "{answer}");
    drop(emu);
    assert!(!socket.exists(), "dropping the emulator removes its socket");
}
