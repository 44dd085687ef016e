//! File upload from the device client against the emulator over real TLS: the azure-iot-device
//! calls (`get_storage_info_for_blob`, `notify_blob_upload_status`) and ironhub's one-call upload
//! (blocks, progress, retry of a failed block), and the blob endpoint's SAS checks.

mod common;

use std::sync::{Arc, Mutex};

use ironhub::upload::UploadOptions;
use ironhub::Error;

fn notifications(env: &common::Env, device_id: &str) -> Vec<serde_json::Value> {
    env.emu.files().notifications(Some(device_id))
}

#[tokio::test]
async fn one_call_upload_streams_blocks_reports_progress_and_notifies() {
    let env = common::start().await;
    let client = env.device_client("up-1");
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let progress = seen.clone();
    let options = UploadOptions {
        block_size: 1024,
        on_progress: Some(Arc::new(move |sent, total| progress.lock().unwrap().push((sent, total)))),
        ..Default::default()
    };
    let info = client.upload_blob_from_bytes("logs/run 1.bin", data.clone(), options).await.expect("upload");
    assert_eq!(info.blob_name, "up-1/logs/run 1.bin");
    assert_eq!(env.emu.files().blob(&info.blob_name).unwrap(), data);
    assert_eq!(*seen.lock().unwrap(), vec![(1024, 5000), (2048, 5000), (3072, 5000), (4096, 5000), (5000, 5000)]);
    let [note] = notifications(&env, "up-1").try_into().unwrap();
    assert_eq!(note["blobSizeInBytes"], 5000);
    assert_eq!(note["correlationId"], info.correlation_id.as_str());

    // From a file, an empty one too.
    let dir = std::env::temp_dir().join(format!("ironhub-upload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, content) in [("a.txt", &b"file content"[..]), ("empty.txt", &b""[..])] {
        std::fs::write(dir.join(name), content).unwrap();
        let info = client.upload_blob_from_file(name, &dir.join(name), UploadOptions::default()).await.unwrap();
        assert_eq!(env.emu.files().blob(&info.blob_name).unwrap(), content);
    }
    std::fs::remove_dir_all(dir).unwrap();
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_block_is_retried_and_a_lasting_failure_is_notified_and_returned() {
    let env = common::start().await;
    let client = env.device_client("up-2");
    env.emu.files().fail_next_blocks(2);
    let options = UploadOptions { block_size: 4, ..Default::default() };
    let info = client.upload_blob_from_bytes("retried.bin", &b"0123456789"[..], options).await.expect("retries");
    assert_eq!(env.emu.files().blob(&info.blob_name).unwrap(), &b"0123456789"[..]);

    env.emu.files().fail_next_blocks(1);
    let options = UploadOptions { block_retries: 0, ..Default::default() };
    let err = client.upload_blob_from_bytes("failed.bin", &b"x"[..], options).await.unwrap_err();
    assert_eq!(err.service_status(), Some(500), "{err:?}");
    // Only the successful upload raised a notification; the failed one was reported and closed.
    assert_eq!(notifications(&env, "up-2").len(), 1);
    let bad = UploadOptions { block_size: 0, ..Default::default() };
    assert_eq!(client.upload_blob_from_bytes("x", &b"x"[..], bad).await.unwrap_err().kind(), ironhub::ErrorKind::InvalidArgument);
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_sdk_calls_and_the_blob_endpoint_refuse_what_they_should() {
    let env = common::start().await;
    let client = env.device_client("up-3");
    let info = client.get_storage_info_for_blob("manual.txt").await.unwrap();
    assert!(info.sas_token.starts_with('?'));
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(env.emu.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let put = |url: String| http.put(url).header("x-ms-blob-type", "BlockBlob").body("hello").send();
    assert_eq!(put(info.blob_url()).await.unwrap().status(), 201);
    client.notify_blob_upload_status(&info.correlation_id, true, 200, "ok").await.unwrap();
    assert_eq!(notifications(&env, "up-3").len(), 1);

    // Unknown (or already completed) correlation id: the hub refuses it.
    let err = client.notify_blob_upload_status(&info.correlation_id, true, 200, "again").await.unwrap_err();
    assert_eq!(err.service_status(), Some(400), "{err:?}");
    assert_eq!(client.get_storage_info_for_blob(" ").await.unwrap_err().kind(), ironhub::ErrorKind::InvalidArgument);
    assert!(client.get_storage_info_for_blob("../escape").await.is_err());

    // A SAS for another blob, a tampered expiry, an expired one: 403 AuthenticationFailed.
    let other = client.get_storage_info_for_blob("other.txt").await.unwrap();
    let expired = env.emu.files().sas_token(&info.blob_name, chrono::Utc::now() - chrono::Duration::seconds(5));
    let base = info.blob_url().split('?').next().unwrap().to_owned();
    for sas in [other.sas_token.clone(), info.sas_token.replace("se=", "se=1"), expired, String::new()] {
        let resp = put(format!("{base}{sas}")).await.unwrap();
        assert_eq!(resp.status(), 403, "{sas}");
        assert_eq!(resp.headers()["x-ms-error-code"], "AuthenticationFailed");
    }

    // Module identities have no file upload (as in azure-iot-device).
    let module = env.module_client("up-3", "m");
    assert!(matches!(module.get_storage_info_for_blob("x").await, Err(Error::Client(_))));
    client.shutdown().await.unwrap();
}
