//! Transport options: MQTT over WebSockets, X.509 client certificates, gateway_hostname, Plug and
//! Play model ids, keep-alive, and many clients sharing a fixed set of threads.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ironhub::{Client, ClientOptions, ErrorKind, Message, X509};
use serde_json::json;
use sha2::Digest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websockets() {
    let env = common::start().await;
    let cs = env.device("w1");
    let client = Client::create_from_connection_string(&cs, ClientOptions { websockets: true, ..env.options() }).unwrap();
    client.send_message(&Message::new("over wss")).await.expect("send over websockets");
    let twin = client.get_twin().await.expect("twin over websockets");
    assert!(twin["desired"].is_object());
    assert_eq!(env.wait_events("w1", 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_self_signed_device() {
    let env = common::start().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["x509dev".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "x509dev");
    let cert = params.self_signed(&key).unwrap();
    let thumb = hex(&sha2::Sha256::digest(cert.der()));
    let (s, b) = env
        .service
        .request(
            "PUT",
            "/devices/x509dev",
            Some(&json!({"deviceId": "x509dev", "authentication": {"type": "selfSigned",
                "x509Thumbprint": {"primaryThumbprint": thumb}}})),
        )
        .await
        .unwrap();
    assert!(s < 300, "{s} {b}");
    let dir = std::env::temp_dir().join(format!("ironhub-x509-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let client = Client::create_from_x509_certificate(
        X509::new(&cert_file, &key_file, None),
        "localhost",
        "x509dev",
        None,
        env.options(),
    )
    .unwrap();
    client.send_message(&Message::new("signed")).await.expect("x509 send");
    assert_eq!(env.wait_events("x509dev", 1).await.len(), 1);

    // A certificate the hub does not know is refused as a credential error.
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::CertificateParams::new(vec!["x509dev".to_string()]).unwrap().self_signed(&other_key).unwrap();
    std::fs::write(dir.join("other.pem"), other.pem()).unwrap();
    std::fs::write(dir.join("other.key"), other_key.serialize_pem()).unwrap();
    let stranger = Client::create_from_x509_certificate(
        X509::new(dir.join("other.pem"), dir.join("other.key"), None),
        "localhost",
        "x509dev",
        None,
        env.options(),
    )
    .unwrap();
    assert_eq!(stranger.connect().await.unwrap_err().kind(), ErrorKind::Credential);
    let _ = std::fs::remove_dir_all(&dir);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_hostname_is_dialled_while_identity_uses_the_hub_host() {
    let env = common::start().await;
    let cs = format!("{};GatewayHostName=127.0.0.1", env.device("g1"));
    let client = Client::create_from_connection_string(&cs, env.options()).unwrap();
    client.send_message(&Message::new("through the gateway")).await.expect("send via gateway host");
    assert_eq!(env.wait_events("g1", 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plug_and_play_model_id_and_short_keep_alive() {
    let env = common::start().await;
    let cs = env.device("p1");
    let opts = ClientOptions { product_info: "dtmi:com:example:Thermostat;1".into(), keep_alive: 1, ..env.options() };
    let client = Client::create_from_connection_string(&cs, opts).unwrap();
    client.connect().await.unwrap();
    // Several keep-alive periods pass without traffic: pings keep the connection up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(client.connected());
    client.send_message(&Message::new("still here")).await.unwrap();
}

/// Threads of this process outside the test harness's own runtime (the emulator runs there).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .filter(|n| n.starts_with("ironhub"))
                .collect()
        })
        .unwrap_or_default()
}

fn thread_count() -> usize {
    thread_names().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_a_fixed_set_of_threads() {
    let env = common::start().await;
    // Warm up the shared runtime and dispatcher pool with one client.
    let first = env.device_client("many-0");
    first
        .on_connection_state_change(Some(Arc::new(|_| {})))
        .unwrap();
    first.send_message(&Message::new("warm")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = thread_count();
    let mut clients = Vec::new();
    for i in 1..=200 {
        let c = env.device_client(&format!("many-{i}"));
        c.on_connection_state_change(Some(Arc::new(|_| {}))).unwrap();
        clients.push(c);
    }
    let sends: Vec<_> = clients.iter().map(|c| c.send_message_pipelined(&Message::new("hi"))).collect();
    for s in sends {
        s.await.expect("every client sends");
    }
    assert!(clients.iter().all(|c| c.connected()));
    let after = thread_count();
    assert!(after <= before + 4, "threads grew with clients: {before} → {after}: {:?}", thread_names());
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Scale probe (run explicitly: `cargo test -p ironhub --test transport_options -- --ignored --nocapture`):
/// 1000 connected clients in one process; prints memory per client and thread count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow scale probe; prints numbers rather than asserting tight bounds"]
async fn scale_probe_1000_clients() {
    let env = common::start().await;
    let warm = env.device_client("scale-0");
    warm.connect().await.unwrap();
    let (rss0, threads0) = (rss_kb(), thread_count());
    let mut clients = Vec::new();
    for i in 1..=1000 {
        clients.push(env.device_client(&format!("scale-{i}")));
    }
    for chunk in clients.chunks(100) {
        let conns: Vec<_> = chunk.iter().map(|c| c.send_message_pipelined(&Message::new("x"))).collect();
        for c in conns {
            c.await.unwrap();
        }
    }
    let (rss1, threads1) = (rss_kb(), thread_count());
    println!(
        "1000 clients: RSS +{} KB (~{} KB per client, emulator side included), ironhub threads {} → {}",
        rss1 - rss0,
        (rss1 - rss0) / 1000,
        threads0,
        threads1
    );
    assert!(threads1 <= threads0 + 4);
}
