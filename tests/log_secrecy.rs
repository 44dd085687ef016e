//! No key, signature or token in any log line (captured at trace level, every crate but the
//! emulator's) nor in any error message, across connect, renewal, refusals and service calls.

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use ironhub::{Client, ClientOptions, Message};
use serde_json::json;

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        if r.target().starts_with("ironhub_emulator") {
            return; // the hub is not under test here
        }
        self.0.lock().unwrap().push(format!("{} {} {}", r.level(), r.target(), r.args()));
    }
    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static C: OnceLock<&'static Capture> = OnceLock::new();
    C.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).expect("first logger");
        log::set_max_level(log::LevelFilter::Trace);
        c
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_or_errors() {
    let cap = capture();
    let env = common::start().await;
    let cs = env.device("s1");
    let key = cs.split(';').find_map(|kv| kv.strip_prefix("SharedAccessKey=")).unwrap().to_string();
    let service_key = env.emu.service_connection_string().split(';').find_map(|kv| kv.strip_prefix("SharedAccessKey=")).unwrap().to_string();
    let mut errors = Vec::new();

    // Renewing key-based client, with traffic.
    let client = Client::create_from_connection_string(&cs, ClientOptions { sastoken_ttl: Some(4), ..env.options() }).unwrap();
    client.connect().await.unwrap();
    for _ in 0..5 {
        client.send_message(&Message::new("x")).await.unwrap();
        client.patch_twin_reported_properties(&json!({"a": 1})).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    // Refusals with a wrong key and with a bad token, and bad input echoing a key.
    let wrong = format!("HostName=localhost;DeviceId=s1;SharedAccessKey={}", "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk=");
    let c2 = Client::create_from_connection_string(&wrong, env.options()).unwrap();
    errors.push(c2.connect().await.unwrap_err().to_string());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let token = ironhub_protocol::sas::generate_token("localhost/devices/s1", &key, None, now + 3600).unwrap();
    let sig = ironhub_protocol::sas::SasToken::parse(&token).unwrap().signature;
    let c3 = Client::create_from_sastoken(&token, env.options()).unwrap();
    c3.connect().await.unwrap();
    errors.push(c3.update_sastoken(&token.replace("%2Fs1&", "%2Fother&")).await.unwrap_err().to_string());
    errors.push(Client::create_from_connection_string(&format!("HostName=h;DeviceId=d;SharedAccessKey={key}!"), ClientOptions::default()).unwrap_err().to_string());
    errors.push(format!("{:?}", ClientOptions { proxy_options: Some(ironhub::ProxyOptions {
        proxy_type: ironhub::ProxyType::Http, proxy_addr: "p".into(), proxy_port: 1,
        proxy_username: Some("u".into()), proxy_password: Some(key.clone()) }), ..Default::default() }));
    env.service.get_twin("s1", None).await.unwrap();
    errors.push(env.service.get_twin("nobody", None).await.unwrap_err().to_string());
    client.shutdown().await.unwrap();
    c3.shutdown().await.unwrap();

    let lines = cap.0.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.contains("rumqttc") || l.contains("ironhub")), "logs were captured: {}", lines.len());
    let encoded_sig = ironhub_protocol::encoding::percent_encode(&sig);
    for text in lines.iter().chain(errors.iter()) {
        for secret in [key.as_str(), service_key.as_str(), sig.as_str(), encoded_sig.as_str(), "sig=", "SharedAccessSignature sr"] {
            assert!(!text.contains(secret), "secret {secret:?} leaked in: {text}");
        }
    }
    let _ = Arc::new(());
}

/// The proxy password (and its Basic encoding) in no log line nor error, through real proxies on
/// every path: the TCP tunnel under MQTT, MQTT itself, the HTTPS calls; accepted and refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_passwords_never_reach_logs_or_errors() {
    use common::real_proxies::RealProxy;
    use ironhub::transport::proxy::connect_tcp;
    const PASSWORD: &str = "pr0xy-pa55word";
    const WRONG: &str = "not-the-pa55word";
    let cap = capture();
    let env = common::start().await;
    let tiny = RealProxy::tinyproxy(Some(("alice", PASSWORD)), None);
    let micro = RealProxy::microsocks("bob", PASSWORD);
    let mut errors = Vec::new();
    for options in [tiny.options(Some("alice"), Some(PASSWORD)), micro.options(Some("bob"), Some(PASSWORD))] {
        let wrong = ironhub::ProxyOptions { proxy_password: Some(WRONG.into()), ..options.clone() };
        connect_tcp("localhost", env.emu.mqtt_port(), Some(&options)).await.unwrap();
        errors.push(connect_tcp("localhost", env.emu.mqtt_port(), Some(&wrong)).await.unwrap_err().to_string());
        let cs = format!("{};GatewayHostName=localhost", env.edge_module("edgeDev", "caller"));
        for o in [options, wrong] {
            let caller = Client::create_from_connection_string(&cs, ClientOptions { proxy_options: Some(o), auto_connect: false, ..env.options() }).unwrap();
            let params = json!({"methodName": "m", "responseTimeoutInSeconds": 2});
            errors.push(caller.invoke_method(&params, "nobody", None).await.unwrap_err().to_string());
            caller.shutdown().await.unwrap();
        }
    }
    let http = ClientOptions { proxy_options: Some(tiny.options(Some("alice"), Some(PASSWORD))), ..env.options() };
    let client = Client::create_from_connection_string(&env.device("viaProxy"), http).unwrap();
    client.send_message(&Message::new("x")).await.unwrap();
    client.shutdown().await.unwrap();

    let lines = cap.0.lock().unwrap().clone();
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"));
    let basic_wrong = base64::engine::general_purpose::STANDARD.encode(format!("alice:{WRONG}"));
    for text in lines.iter().chain(errors.iter()) {
        for secret in [PASSWORD, WRONG, basic.as_str(), basic_wrong.as_str()] {
            assert!(!text.contains(secret), "proxy secret {secret:?} leaked in: {text}");
        }
    }
}
