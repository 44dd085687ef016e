//! Shared harness of the broker tests: an in-process emulator (`Emulator::start`) on ephemeral
//! loopback ports, rumqttc clients that trust the emulator's CA (over TLS or WebSockets), and a
//! raw TLS socket for protocol abuse.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ironhub_emulator::hub::Hub;
use ironhub_emulator::mqtt::Broker;
use ironhub_emulator::server::{Emulator, EmulatorConfig, RunningEmulator};
use ironhub_emulator::Identity;
use rumqttc::mqttbytes::v4::{ConnAck, Packet, Publish, SubAck};
use rumqttc::mqttbytes::QoS;
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;

pub const HOST: &str = "localhost";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestHub {
    pub hub: Arc<Hub>,
    pub broker: Arc<Broker>,
    pub mqtt_port: u16,
    pub https_port: u16,
    pub ca_pem: String,
    pub emulator: RunningEmulator,
}

impl TestHub {
    pub async fn start() -> TestHub {
        Self::start_with(EmulatorConfig::default()).await
    }

    pub async fn start_with(config: EmulatorConfig) -> TestHub {
        let _ = env_logger::builder().is_test(true).try_init();
        let emulator = Emulator::start(config).await.expect("emulator starts");
        assert_eq!(emulator.hostname(), HOST);
        TestHub {
            hub: emulator.hub().clone(),
            broker: emulator.broker().clone(),
            mqtt_port: emulator.mqtt_port(),
            https_port: emulator.https_port(),
            ca_pem: emulator.ca_pem().to_owned(),
            emulator,
        }
    }

    /// Registers a SAS device (and module) and returns its primary key.
    pub fn add_identity(&self, id: &Identity) -> String {
        if self.hub.get_device(&id.device_id).is_err() {
            self.hub.create_device(&id.device_id).expect("create device");
        }
        match &id.module_id {
            Some(m) => self.hub.create_module(&id.device_id, m).expect("create module").authentication.primary_key,
            None => self.hub.get_device(&id.device_id).expect("device").authentication.primary_key,
        }
    }

    pub fn token(&self, id: &Identity, key: &str, ttl_secs: i64) -> String {
        let resource = ironhub_protocol::sas::device_resource(HOST, &id.device_id, id.module_id.as_deref());
        let expiry = (unix_now() as i64 + ttl_secs).max(0) as u64;
        ironhub_protocol::sas::generate_token(&resource, key, None, expiry).expect("token")
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        client_config(&self.ca_pem)
    }

    pub fn options(&self, id: &Identity, password: &str) -> MqttOptions {
        options(self.mqtt_port, &self.ca_pem, id, password)
    }

    /// The same client over `wss://localhost:{https}/$iothub/websocket`.
    pub fn websocket_options(&self, id: &Identity, password: &str) -> MqttOptions {
        let client_id = id.client_id();
        let url = format!("wss://{HOST}:{}/$iothub/websocket", self.https_port);
        let mut options = MqttOptions::new(client_id.clone(), url, self.https_port);
        options.set_credentials(format!("{HOST}/{client_id}/?api-version=2019-10-01"), password);
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(60));
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        options.set_transport(Transport::wss_with_config(TlsConfiguration::Rustls(self.client_config())));
        options
    }

    /// A registered identity, connected with a fresh one-hour token.
    pub async fn connected(&self, id: &Identity) -> Client {
        let key = self.add_identity(id);
        let token = self.token(id, &key, 3600);
        Client::connect(self.options(id, &token)).await.expect("connect")
    }

    /// A raw TLS socket to the broker, for writing what rumqttc never would.
    pub async fn raw(&self) -> TlsStream<TcpStream> {
        let connector = tokio_rustls::TlsConnector::from(self.client_config());
        let tcp = TcpStream::connect(("127.0.0.1", self.mqtt_port)).await.expect("tcp");
        connector.connect(ServerName::try_from(HOST).expect("name"), tcp).await.expect("tls")
    }
}

/// TLS that trusts the emulator's CA.
pub fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// MQTT over TLS to `localhost:{mqtt_port}` as `id`, persistent session, as azure-iot-device connects.
pub fn options(mqtt_port: u16, ca_pem: &str, id: &Identity, password: &str) -> MqttOptions {
    let client_id = id.client_id();
    let mut options = MqttOptions::new(client_id.clone(), HOST, mqtt_port);
    options.set_credentials(format!("{HOST}/{client_id}/?api-version=2019-10-01"), password);
    options.set_clean_session(false);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(client_config(ca_pem))));
    options
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

pub fn der(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes()).map(|c| c.expect("pem")).collect()
}

#[derive(Debug)]
pub enum Incoming {
    Publish(Publish),
    SubAck(SubAck),
    PubAck(u16),
    /// The event loop stopped: the connection is gone.
    Closed(String),
}

#[derive(Debug)]
pub enum ConnectFailure {
    Refused(ConnectReturnCode),
    Other(String),
}

/// A rumqttc client whose event loop runs in a task and reports every incoming packet.
/// It never reconnects, so a broker-side close is observable.
pub struct Client {
    pub client: AsyncClient,
    pub connack: ConnAck,
    events: mpsc::UnboundedReceiver<Incoming>,
}

impl Client {
    pub async fn connect(options: MqttOptions) -> Result<Client, ConnectFailure> {
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let connack = loop {
            match tokio::time::timeout(WAIT, eventloop.poll()).await {
                Err(_) => return Err(ConnectFailure::Other("no CONNACK".into())),
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => break ack,
                Ok(Ok(_)) => {}
                Ok(Err(ConnectionError::ConnectionRefused(code))) => return Err(ConnectFailure::Refused(code)),
                Ok(Err(e)) => return Err(ConnectFailure::Other(e.to_string())),
            }
        };
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let incoming = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => Incoming::Publish(p),
                    Ok(Event::Incoming(Packet::SubAck(s))) => Incoming::SubAck(s),
                    Ok(Event::Incoming(Packet::PubAck(a))) => Incoming::PubAck(a.pkid),
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Incoming::Closed(e.to_string()));
                        return;
                    }
                };
                if tx.send(incoming).is_err() {
                    return;
                }
            }
        });
        Ok(Client { client, connack, events })
    }

    pub async fn next(&mut self) -> Incoming {
        match tokio::time::timeout(WAIT, self.events.recv()).await {
            Ok(Some(incoming)) => incoming,
            Ok(None) => Incoming::Closed("event task ended".into()),
            Err(_) => panic!("nothing arrived within {WAIT:?}"),
        }
    }

    /// The next PUBLISH, skipping acks.
    pub async fn next_publish(&mut self) -> Publish {
        loop {
            match self.next().await {
                Incoming::Publish(p) => return p,
                Incoming::Closed(why) => panic!("connection closed while waiting for a publish: {why}"),
                _ => {}
            }
        }
    }

    /// Nothing but acks arrives for `quiet`.
    pub async fn assert_no_publish(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return,
                Ok(Some(Incoming::Publish(p))) => panic!("unexpected publish on {}", p.topic),
                Ok(Some(Incoming::Closed(why))) => panic!("connection closed: {why}"),
                Ok(Some(_)) => {}
                Ok(None) => panic!("event task ended"),
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str) -> SubAck {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.expect("subscribe");
        loop {
            match self.next().await {
                Incoming::SubAck(ack) => return ack,
                Incoming::Closed(why) => panic!("closed while subscribing: {why}"),
                _ => {}
            }
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.expect("publish");
        loop {
            match self.next().await {
                Incoming::PubAck(_) => return,
                Incoming::Closed(why) => panic!("closed while publishing: {why}"),
                _ => {}
            }
        }
    }

    /// Waits until the broker closes this connection.
    pub async fn closed(&mut self) -> String {
        loop {
            if let Incoming::Closed(why) = self.next().await {
                return why;
            }
        }
    }
}
