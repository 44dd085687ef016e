//! The MQTT listener on more than one loopback address (`EmulatorConfig::mqtt_extra_ips`,
//! `--mqtt-also-bind`): what lets 50,000 clients on one host connect, since one destination
//! address:port leaves them only ~28,000 ephemeral source ports. Real rumqttc clients over TLS
//! that check the server certificate against the address they dialled.

mod mqtt_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ironhub_emulator::server::EmulatorConfig;
use ironhub_emulator::Identity;
use mqtt_support::{Client, TestHub, HOST};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

const EXTRA: [&str; 2] = ["127.0.0.2", "127.0.0.3"];

/// `id`'s MQTT options, dialling `address` instead of the hub name (as `GatewayHostName=` makes a
/// device do): TLS checks the certificate against that address; username and token name the hub.
fn options_via(hub: &TestHub, id: &Identity, address: &str) -> MqttOptions {
    let key = hub.add_identity(id);
    let client_id = id.client_id();
    let mut options = MqttOptions::new(client_id.clone(), address, hub.mqtt_port);
    options.set_credentials(format!("{HOST}/{client_id}/?api-version=2019-10-01"), hub.token(id, &key, 3600));
    options.set_clean_session(false);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(hub.client_config())));
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_listens_on_every_extra_address_and_its_certificate_names_them() {
    let extra: Vec<IpAddr> = EXTRA.iter().map(|a| a.parse().unwrap()).collect();
    let hub = TestHub::start_with(EmulatorConfig { mqtt_extra_ips: extra, ..Default::default() }).await;
    for (i, address) in ["127.0.0.1"].iter().chain(EXTRA.iter()).enumerate() {
        let id = Identity::device(format!("via-{i}"));
        let mut client = Client::connect(options_via(&hub, &id, address))
            .await
            .unwrap_or_else(|e| panic!("connect through {address}: {e:?}"));
        // The same broker behind every address: telemetry sent through it lands in the hub.
        client.publish(&format!("devices/{}/messages/events/", id.device_id), b"x".to_vec()).await;
        assert!(hub.broker.is_connected(&id), "{id} connected through {address}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_extra_addresses_only_the_configured_one_answers() {
    let hub = TestHub::start().await;
    let id = Identity::device("not-there");
    let refused = Client::connect(options_via(&hub, &id, EXTRA[0])).await;
    assert!(refused.is_err(), "nothing should listen on {}", EXTRA[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_client_is_closed_at_once_instead_of_left_waiting() {
    let hub = TestHub::start_with(EmulatorConfig { max_tls_connections: Some(2), ..Default::default() }).await;
    let (first, second) = (Identity::device("cap-1"), Identity::device("cap-2"));
    let _a = Client::connect(options_via(&hub, &first, "127.0.0.1")).await.expect("first within the cap");
    let _b = Client::connect(options_via(&hub, &second, "127.0.0.1")).await.expect("second within the cap");

    let third = Identity::device("cap-3");
    let started = Instant::now();
    let refused = Client::connect(options_via(&hub, &third, "127.0.0.1")).await;
    assert!(refused.is_err(), "a third connection past a cap of 2");
    // Not the 10 s of a handshake or CONNACK timeout: the socket is closed as soon as it is accepted.
    assert!(started.elapsed() < Duration::from_secs(3), "refused after {:?}", started.elapsed());

    // A connection that ends frees its place.
    assert!(hub.broker.disconnect(&first));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(options_via(&hub, &third, "127.0.0.1")).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no place freed within 10 s: {e:?}"),
        }
    }
}
