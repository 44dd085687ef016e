//! The firmware build (ironhub without default features) against a real emulator over TLS: the
//! `telemetry_min` program sends its messages and the hub records them, and what the build left
//! out (WebSockets, proxies, encrypted keys) is refused at creation with an error naming the Cargo
//! feature, instead of being silently ignored or failing later on the network.
//!
//! Only this package builds ironhub without its defaults: the root package's own tests turn them
//! back on through its dev-dependency on itself.

use std::process::Command;
use std::time::{Duration, Instant};

use ironhub::blocking::Client;
use ironhub::{ClientOptions, ErrorKind, ProxyOptions, ProxyType, X509};
use ironhub_emulator::hub::EventFilter;
use ironhub_emulator::{BackgroundEmulator, EmulatorConfig};

/// This file tests the firmware feature set: `cargo test -p telemetry-min` alone. A workspace-wide
/// build unifies ironhub's features with the other members', which turns them all back on.
fn assert_firmware_build() {
    assert!(
        ironhub::FEATURES.is_empty(),
        "ironhub was built with {:?}: run `cargo test -p telemetry-min` on its own",
        ironhub::FEATURES
    );
}

fn emulator() -> BackgroundEmulator {
    BackgroundEmulator::start(EmulatorConfig::default()).expect("emulator starts")
}

fn device(emu: &BackgroundEmulator, id: &str) -> String {
    emu.hub().create_device(id).expect("create device");
    emu.hub().device_connection_string(id, None).expect("device connection string")
}

#[test]
fn telemetry_min_sends_every_message_and_the_hub_records_them() {
    let emu = emulator();
    let cs = device(&emu, "fw1");
    let ca = std::env::temp_dir().join(format!("ironhub-fw-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, emu.ca_pem()).unwrap();
    // TELEMETRY_MIN_EXE: another build of the program, e.g. the stripped `min-size` one.
    let exe = std::env::var("TELEMETRY_MIN_EXE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_telemetry_min").to_string());
    let out = Command::new(&exe)
        .env("IOTHUB_DEVICE_CONNECTION_STRING", &cs)
        .env("IRONHUB_CA_FILE", &ca)
        .env("IRONHUB_MQTT_PORT", emu.mqtt_port().to_string())
        .env("TELEMETRY_COUNT", "4")
        .output()
        .unwrap_or_else(|e| panic!("{exe} runs: {e}"));
    let _ = std::fs::remove_file(&ca);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "sent 4 messages");

    let filter = EventFilter { device_id: Some("fw1".into()), module_id: None };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = emu.hub().events_after(&filter, 0);
    while events.len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        events = emu.hub().events_after(&filter, 0);
    }
    let bodies: Vec<String> = events.iter().map(|e| String::from_utf8_lossy(&e.record.body).into_owned()).collect();
    assert_eq!(bodies.len(), 4, "{bodies:?}");
    assert_eq!(bodies[3], r#"{"reading":3,"temperature":21.5}"#);
}

fn refused(options: ClientOptions) -> ironhub::Error {
    assert_firmware_build();
    let cs = "HostName=hub.example;DeviceId=fw;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg==";
    match Client::create_from_connection_string(cs, options) {
        Ok(_) => panic!("a build without the feature accepted the option"),
        Err(e) => e,
    }
}

#[test]
fn websockets_are_refused_naming_the_websocket_feature() {
    let e = refused(ClientOptions { websockets: true, ..Default::default() });
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("`websocket`"), "{e}");
}

#[test]
fn proxies_are_refused_naming_the_proxy_feature() {
    let proxy = ProxyOptions {
        proxy_type: ProxyType::Socks5,
        proxy_addr: "127.0.0.1".into(),
        proxy_port: 1080,
        proxy_username: Some("user".into()),
        proxy_password: Some("s3cret".into()),
    };
    let e = refused(ClientOptions { proxy_options: Some(proxy), ..Default::default() });
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let text = e.to_string();
    assert!(text.contains("`proxy`"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

/// An encrypted key is refused before any decryption is tried, naming the feature (and never
/// the pass phrase); a plain key of the same build still loads (the emulator's CA key).
#[test]
fn encrypted_keys_are_refused_naming_the_encrypted_keys_feature() {
    assert_firmware_build();
    let emu = emulator();
    let dir = std::env::temp_dir().join(format!("ironhub-fw-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, emu.ca_pem()).unwrap();
    let encrypted = dir.join("encrypted.pem");
    // PKCS#8 EncryptedPrivateKeyInfo framing is enough: the build must not even try to decrypt.
    let pkcs8 = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBADALBgkqhkiG9w0BBQ0EAA==\n-----END ENCRYPTED PRIVATE KEY-----\n";
    std::fs::write(&encrypted, pkcs8).unwrap();
    let legacy = dir.join("legacy.pem");
    let pem = concat!(
        "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n",
        "DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END EC PRIVATE KEY-----\n"
    );
    std::fs::write(&legacy, pem).unwrap();
    for key in [&encrypted, &legacy] {
        let x509 = X509::new(&cert, key, Some("pass-phrase-42".into()));
        let e = match Client::create_from_x509_certificate(x509, "hub.example", "fw", None, ClientOptions::default()) {
            Ok(_) => panic!("{key:?}: an encrypted key was accepted without the encrypted-keys feature"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        let text = e.to_string();
        assert!(text.contains("`encrypted-keys`"), "{text}");
        assert!(!text.contains("pass-phrase-42"), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without `webpki-roots` the default trust is the five roots IoT Hub and DPS chain to, not
/// Mozilla's list; and a hub whose CA is not among them (the emulator's) is refused.
#[test]
fn default_roots_are_the_azure_roots() {
    assert_firmware_build();
    assert_eq!(ironhub::transport::tls::root_store(None).expect("embedded roots parse").len(), 5);
    let emu = emulator();
    let cs = device(&emu, "fw-roots");
    let options = ClientOptions {
        mqtt_port: emu.mqtt_port(),
        connection_retry: false,
        operation_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let client = Client::create_from_connection_string(&cs, options).expect("client");
    let e = client.connect().expect_err("the emulator's CA is not an Azure root");
    assert_eq!(e.kind(), ErrorKind::ConnectionFailed, "{e}");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}
