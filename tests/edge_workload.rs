//! IoT Edge primary environment: trust bundle and every SAS signature come from the workload API,
//! served here over a Unix socket by a minimal HTTP/1.1 responder that signs with the module key.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use ironhub::{Client, ClientOptions, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn serve_workload(listener: tokio::net::UnixListener, ca_pem: String, key: String, signs: Arc<AtomicUsize>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else { return };
        let (ca_pem, key, signs) = (ca_pem.clone(), key.clone(), signs.clone());
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read head and body (Content-Length).
            let (head, body) = loop {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                        .unwrap_or(0);
                    if body.len() >= len || n == 0 {
                        break (head.to_string(), body.to_string());
                    }
                }
            };
            let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
            let answer = if path.starts_with("/trust-bundle?api-version=") {
                serde_json::json!({"certificate": ca_pem})
            } else if path.starts_with("/modules/edgeMod/genid/gen1/sign?api-version=") {
                let req: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(req["keyId"], "primary");
                assert_eq!(req["algo"], "HMACSHA256");
                let data = base64::engine::general_purpose::STANDARD.decode(req["data"].as_str().unwrap()).unwrap();
                signs.fetch_add(1, Ordering::SeqCst);
                serde_json::json!({"digest": ironhub_protocol::sas::sign(&key, &String::from_utf8(data).unwrap()).unwrap()})
            } else {
                serde_json::json!({"message": "not found"})
            };
            let body = answer.to_string();
            let reply = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = s.write_all(reply.as_bytes()).await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_module_signs_tokens_through_the_workload_api() {
    let env = common::start().await;
    let cs = env.module("edgeDev2", "edgeMod");
    let key = cs.split(';').find_map(|kv| kv.strip_prefix("SharedAccessKey=")).unwrap().to_string();
    let sock = std::env::temp_dir().join(format!("ironhub-workload-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let signs = Arc::new(AtomicUsize::new(0));
    tokio::spawn(serve_workload(listener, env.emu.ca_pem().to_string(), key, signs.clone()));
    for (k, v) in [
        ("IOTEDGE_IOTHUBHOSTNAME", "localhost".to_string()),
        ("IOTEDGE_DEVICEID", "edgeDev2".into()),
        ("IOTEDGE_MODULEID", "edgeMod".into()),
        ("IOTEDGE_GATEWAYHOSTNAME", "localhost".into()),
        ("IOTEDGE_MODULEGENERATIONID", "gen1".into()),
        ("IOTEDGE_WORKLOADURI", format!("unix://{}", sock.display())),
        ("IOTEDGE_APIVERSION", "2019-01-30".into()),
    ] {
        std::env::set_var(k, v);
    }
    let opts = ClientOptions { mqtt_port: env.emu.mqtt_port(), https_port: env.emu.https_port(), sastoken_ttl: Some(4), ..Default::default() };
    let client = Client::create_from_edge_environment(opts).await.expect("edge client from the workload API");
    client.send_message(&Message::new("from the edge")).await.expect("send with a workload-signed token");
    // 4 s tokens renew every 2 s, each signed by the workload API.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    client.send_message(&Message::new("after renewals")).await.unwrap();
    assert!(signs.load(Ordering::SeqCst) >= 2, "renewals were signed by the workload API");
    assert_eq!(env.events("edgeDev2", 0, 5).await.len(), 2);
    let _ = std::fs::remove_file(&sock);
}
