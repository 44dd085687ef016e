//! A device's whole life, against a local IoT Hub + Device Provisioning Service (the emulator,
//! in this process on ephemeral ports): the operator creates a group enrollment through the DPS
//! service REST API; the device derives its key from the group key, registers, connects to the
//! hub it was assigned, sends telemetry and uploads a log file.
//!
//! Run: `cargo run --example provisioning` (exit code 0 when every step worked).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ironhub::provisioning::{self, ProvisioningClient};
use ironhub::upload::UploadOptions;
use ironhub::{ClientOptions, Message};
use ironhub_emulator::{Emulator, EmulatorConfig};
use serde_json::json;

#[path = "support/steps.rs"]
mod steps;
use steps::{err, step};

/// `PUT /enrollmentGroups/{id}` with a provisioningserviceowner token, as an operator's tool would.
async fn create_group_enrollment(service_cs: &str, ca_pem: &str, group_id: &str, group_key: &str) -> Result<(), String> {
    let fields: std::collections::HashMap<&str, &str> = service_cs.split(';').filter_map(|kv| kv.split_once('=')).collect();
    let (host, policy, key) = (fields["HostName"], fields["SharedAccessKeyName"], fields["SharedAccessKey"]);
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH).map_err(err)?.as_secs() + 600;
    let token = ironhub_protocol::sas::generate_token(host, key, Some(policy), expiry).map_err(err)?;
    let body = json!({
        "enrollmentGroupId": group_id,
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": group_key, "secondaryKey": group_key}},
        "initialTwin": {"properties": {"desired": {"telemetryIntervalSeconds": 5}}},
    });
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(err)?)
        .build()
        .map_err(err)?;
    let resp = http
        .put(format!("https://{host}/enrollmentGroups/{group_id}?api-version=2021-10-01"))
        .header("Authorization", token)
        .json(&body)
        .send()
        .await
        .map_err(err)?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("the service answered {}", resp.status()))
    }
}

async fn run() -> Result<(), String> {
    let emu = step("starting a local IoT Hub with its provisioning service", async {
        Emulator::start(EmulatorConfig::default()).await.map_err(err)
    })
    .await?;
    println!("  ID scope {}, MQTT on port {}, HTTPS on port {}", emu.id_scope(), emu.mqtt_port(), emu.https_port());

    let group_key = ironhub_emulator::dps::enrollments::generate_key();
    step("operator: creating group enrollment 'thermostats'", async {
        create_group_enrollment(&emu.provisioning_service_connection_string(), emu.ca_pem(), "thermostats", &group_key).await
    })
    .await?;

    let options = ClientOptions {
        server_verification_cert: Some(emu.ca_pem().to_string()),
        mqtt_port: emu.mqtt_port(),
        https_port: emu.https_port(),
        operation_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let registration_id = "thermostat-0042";
    let device_key = provisioning::derive_device_key(&group_key, registration_id).map_err(err)?;
    let result = step("device: registering with the provisioning service", async {
        let client = ProvisioningClient::create_from_symmetric_key(emu.hostname(), registration_id, &emu.id_scope(), &device_key, options.clone())
            .map_err(err)?;
        client.register().await.map_err(err)
    })
    .await?;
    let (hub, device_id) = result.assignment().map_err(err)?;
    println!("  assigned to hub {hub} as device '{device_id}'");

    let device = result.device_client_from_symmetric_key(&device_key, options.clone()).map_err(err)?;
    step("device: connecting to the assigned hub and reading its initial twin", async {
        device.connect().await.map_err(err)?;
        let twin = device.get_twin().await.map_err(err)?;
        println!("  desired telemetryIntervalSeconds = {}", twin["desired"]["telemetryIntervalSeconds"]);
        Ok(())
    })
    .await?;
    step("device: sending telemetry", async {
        let mut message = Message::new(json!({"temperature": 21.5}).to_string());
        message.content_type = Some("application/json".into());
        device.send_message(&message).await.map_err(err)
    })
    .await?;
    let info = step("device: uploading a log file in blocks", async {
        let log: Vec<u8> = (0..300).flat_map(|i| format!("line {i}: all good\n").into_bytes()).collect();
        let options = UploadOptions {
            block_size: 2048,
            on_progress: Some(std::sync::Arc::new(|sent, total| println!("  uploaded {sent}/{total} bytes"))),
            ..Default::default()
        };
        device.upload_blob_from_bytes("logs/boot.log", log, options).await.map_err(err)
    })
    .await?;
    let notifications = emu.files().notifications(Some(device_id));
    if notifications.len() != 1 {
        return Err(format!("expected one file-upload notification, found {}", notifications.len()));
    }
    println!("  the hub raised a file-upload notification for {} ({} bytes)", info.blob_name, notifications[0]["blobSizeInBytes"]);
    device.shutdown().await.map_err(err)?;
    emu.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() {
    match run().await {
        Ok(()) => println!("done: provisioned, connected, sent telemetry and uploaded a file"),
        Err(e) => {
            eprintln!("failed: {e}");
            std::process::exit(1);
        }
    }
}
