//! The MQTT listener on more than one loopback address (`EmulatorConfig::mqtt_extra_ips`,
//! `--mqtt-also-bind`): what lets 50,000 clients on one host connect, since one destination
//! address:port leaves them only ~28,000 ephemeral source ports. Real rumqttc clients over TLS
//! that check the server certificate against the address they dialled.

mod mqtt_support;

use std::net::IpAddr;

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
