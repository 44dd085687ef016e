//! ironhub quickstart: starts a local IoT Hub (the emulator) in this process on ephemeral ports,
//! registers a device with two modules, and walks through telemetry, a module-to-module route, a
//! direct method, a desired property patch and a reported property patch.
//!
//! Run: `cargo run --release --example quickstart` (exit code 0 when every step worked).

use std::sync::Arc;
use std::time::Duration;

use ironhub::service::{DirectMethodRequest, ServiceClient, ServiceOptions};
use ironhub::{Client, ClientOptions, Message, MethodResponse};
use ironhub_emulator::{Emulator, EmulatorConfig};
use serde_json::json;
use tokio::sync::mpsc;

#[path = "support/steps.rs"]
mod steps;
use steps::{err, step};

async fn run() -> Result<(), String> {
    let emu = step("starting a local IoT Hub (emulator)", async {
        Emulator::start(EmulatorConfig::default()).await.map_err(err)
    })
    .await?;
    println!("  hub {} listening: MQTT on port {}, HTTPS on port {}", emu.hostname(), emu.mqtt_port(), emu.https_port());

    let hub = emu.hub().clone();
    hub.create_device("thermostat").map_err(err)?;
    hub.create_module("thermostat", "sensor").map_err(err)?;
    hub.create_module("thermostat", "filter").map_err(err)?;
    println!("  registered device 'thermostat' with modules 'sensor' and 'filter'");

    let options = ClientOptions {
        server_verification_cert: Some(emu.ca_pem().to_string()),
        mqtt_port: emu.mqtt_port(),
        https_port: emu.https_port(),
        operation_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let cs = |m: Option<&str>| hub.device_connection_string("thermostat", m).ok_or("no connection string".to_string());
    let device = Client::create_from_connection_string(&cs(None)?, options.clone()).map_err(err)?;
    let sensor = Client::create_from_connection_string(&cs(Some("sensor"))?, options.clone()).map_err(err)?;
    let filter = Client::create_from_connection_string(&cs(Some("filter"))?, options.clone()).map_err(err)?;
    let service = ServiceClient::from_connection_string(
        emu.service_connection_string(),
        ServiceOptions { ca_pem: Some(emu.ca_pem().to_string()), ..Default::default() },
    )
    .map_err(err)?;

    // 1. Telemetry with properties.
    step("device sends telemetry with properties", async {
        let mut m = Message::new(r#"{"temperature": 21.5}"#);
        m.content_type = Some("application/json".into());
        m.content_encoding = Some("utf-8".into());
        m.message_id = Some("reading-1".into());
        m.set_property("unit", "celsius");
        device.send_message(&m).await.map_err(err)?;
        let (_, events) = service
            .request("GET", "/emulator/events?deviceId=thermostat&after=0&timeoutSeconds=10", None)
            .await
            .map_err(err)?;
        let e = events["events"].get(0).cloned().ok_or("the hub recorded no event")?;
        println!(
            "  the hub recorded message {} with properties {}",
            e["systemProperties"]["messageId"], e["properties"]
        );
        Ok(())
    })
    .await?;

    // 2. Module-to-module route.
    step("module 'sensor' sends to output 'readings', routed to module 'filter' input 'raw'", async {
        let route = json!({"routes": {"sensorToFilter":
            "FROM /messages/modules/sensor/outputs/readings INTO BrokeredEndpoint(\"/modules/filter/inputs/raw\")"}});
        let (status, body) = service.request("PUT", "/emulator/routes", Some(&route)).await.map_err(err)?;
        if status >= 300 {
            return Err(format!("route refused: {status} {body}"));
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        filter
            .on_message_received(Some(Arc::new(move |m: Message| {
                let _ = tx.send(m);
            })))
            .await
            .map_err(err)?;
        sensor.send_message_to_output(&Message::new("22.0"), "readings").await.map_err(err)?;
        let m = rx.recv().await.ok_or("no routed message")?;
        println!(
            "  'filter' received {:?} on input {:?} from module {:?}",
            String::from_utf8_lossy(&m.data),
            m.input_name.as_deref().unwrap_or("?"),
            m.property("$.cmid").unwrap_or("?")
        );
        Ok(())
    })
    .await?;

    // 3. Direct method round trip.
    step("the service invokes method 'reboot' on the device", async {
        let responder = device.clone();
        device
            .on_method_request_received(Some(Arc::new(move |req| {
                let c = responder.clone();
                // Answer off the dispatcher thread: any thread may respond, any time later.
                std::thread::spawn(move || {
                    let answer = MethodResponse::create_from_method_request(&req, 200, Some(json!({"rebooting": true})));
                    let _ = ironhub::blocking::Client::from_async(c).send_method_response(&answer);
                });
            })))
            .await
            .map_err(err)?;
        let result = service
            .invoke_method("thermostat", None, &DirectMethodRequest::new("reboot", json!({"delay": 1})))
            .await
            .map_err(err)?;
        println!("  the device answered status {} with payload {}", result.status, result.payload);
        if result.status != 200 {
            return Err(format!("unexpected status {}", result.status));
        }
        Ok(())
    })
    .await?;

    // 4. Desired property patch.
    step("the service sets desired property targetTemperature = 23", async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        device
            .on_twin_desired_properties_patch_received(Some(Arc::new(move |p| {
                let _ = tx.send(p);
            })))
            .await
            .map_err(err)?;
        // With ensure_desired_properties the handler first gets the current desired document.
        service
            .update_twin("thermostat", None, &json!({"properties": {"desired": {"targetTemperature": 23}}}), None)
            .await
            .map_err(err)?;
        loop {
            let p = rx.recv().await.ok_or("no desired patch")?;
            if p.get("targetTemperature").is_some() {
                println!("  the device received desired patch {p}");
                return Ok(());
            }
        }
    })
    .await?;

    // 5. Reported property patch.
    step("the device reports currentTemperature = 22.5", async {
        device.patch_twin_reported_properties(&json!({"currentTemperature": 22.5})).await.map_err(err)?;
        let twin = service.get_twin("thermostat", None).await.map_err(err)?;
        println!("  the service sees reported properties {}", twin["properties"]["reported"]["currentTemperature"]);
        Ok(())
    })
    .await?;

    for c in [&device, &sensor, &filter] {
        c.shutdown().await.map_err(err)?;
    }
    emu.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() {
    match run().await {
        Ok(()) => println!("quickstart finished: every step worked"),
        Err(e) => {
            eprintln!("quickstart FAILED: {e}");
            std::process::exit(1);
        }
    }
}
