//! Shared by the AMQP suites: an AMQP 1.0 client (fe2o3-amqp, over a real TLS socket that trusts
//! the emulator's CA) and the CBS put-token exchange the Azure SDKs do.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{Receiver, Sender, Session};
use fe2o3_amqp_types::messaging::{AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties};
use fe2o3_amqp_types::primitives::{SimpleValue, Value};
use ironhub_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

// The TLS client config that trusts the emulator's CA, and the clock, are the broker tests'.
#[path = "../mqtt_support/mod.rs"]
pub mod mqtt_support;
pub use mqtt_support::{client_config, unix_now, HOST};

pub async fn start() -> RunningEmulator {
    Emulator::start(EmulatorConfig::default()).await.expect("emulator starts")
}

/// A policy token for `resource` (`localhost`, `sb://localhost/<entity>`, ...).
pub fn token(emu: &RunningEmulator, resource: &str, policy: &str, key: &str, expiry: u64) -> String {
    let _ = emu;
    ironhub_protocol::sas::generate_token(resource, key, Some(policy), expiry).unwrap()
}

/// A TLS socket to the AMQP port.
pub async fn tls(emu: &RunningEmulator) -> TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(client_config(emu.ca_pem()));
    let tcp = TcpStream::connect(("127.0.0.1", emu.amqp_port())).await.expect("tcp");
    connector.connect(ServerName::try_from(HOST).unwrap(), tcp).await.expect("tls")
}

pub async fn connect_with(
    emu: &RunningEmulator,
    sasl: SaslProfile,
) -> Result<ConnectionHandle<()>, fe2o3_amqp::connection::OpenError> {
    let stream = tls(emu).await;
    fe2o3_amqp::Connection::builder()
        .container_id(format!("test-{}", rand_id()))
        .hostname(HOST)
        .sasl_profile(sasl)
        .open_with_stream(stream)
        .await
}

pub async fn connect(emu: &RunningEmulator) -> ConnectionHandle<()> {
    connect_with(emu, SaslProfile::Anonymous).await.expect("AMQP connection opens")
}

pub fn rand_id() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// The `$cbs` request and reply links of one session.
pub struct Cbs {
    sender: Sender,
    receiver: Receiver,
    next_id: u64,
}

impl Cbs {
    pub async fn attach(session: &mut SessionHandle<()>) -> Cbs {
        let sender = Sender::attach(session, "cbs-sender", "$cbs").await.expect("attach $cbs sender");
        let receiver = Receiver::builder()
            .name("cbs-receiver")
            .source("$cbs")
            .target("cbs")
            .attach(session)
            .await
            .expect("attach $cbs receiver");
        Cbs { sender, receiver, next_id: 1 }
    }

    /// Puts `token` for `audience`; the answer's status code and description.
    pub async fn put_token(&mut self, audience: &str, token: &str) -> (i32, String) {
        let mut props = ApplicationProperties::default();
        props.0.insert("operation".into(), SimpleValue::String("put-token".into()));
        props.0.insert("type".into(), SimpleValue::String("servicebus.windows.net:sastoken".into()));
        props.0.insert("name".into(), SimpleValue::String(audience.into()));
        let id = self.next_id;
        self.next_id += 1;
        let message = Message::builder()
            .properties(Properties { message_id: Some(MessageId::Ulong(id)), reply_to: Some("cbs".into()), ..Default::default() })
            .application_properties(props)
            .body(Body::Value(AmqpValue(Value::String(token.into()))))
            .build();
        self.sender.send(message).await.expect("put-token sent");
        let delivery = tokio::time::timeout(Duration::from_secs(10), self.receiver.recv::<Body<Value>>())
            .await
            .expect("put-token answered in time")
            .expect("put-token answer");
        self.receiver.accept(&delivery).await.unwrap();
        let answer = delivery.into_message();
        assert_eq!(answer.properties.as_ref().and_then(|p| p.correlation_id.clone()), Some(MessageId::Ulong(id)));
        let props = answer.application_properties.expect("status properties").0;
        let status = match props.get("status-code") {
            Some(SimpleValue::Int(s)) => *s,
            other => panic!("status-code: {other:?}"),
        };
        let description = match props.get("status-description") {
            Some(SimpleValue::String(s)) => s.clone(),
            other => panic!("status-description: {other:?}"),
        };
        (status, description)
    }
}

pub async fn session(connection: &mut ConnectionHandle<()>) -> SessionHandle<()> {
    Session::begin(connection).await.expect("session begins")
}

/// A session holding a CBS claim for the Event Hub-compatible entity.
pub async fn eventhub_session(emu: &RunningEmulator, connection: &mut ConnectionHandle<()>) -> (SessionHandle<()>, Cbs) {
    let mut session = session(connection).await;
    let mut cbs = Cbs::attach(&mut session).await;
    let audience = format!("sb://{HOST}/{}", entity(emu));
    let tok = token(emu, &audience, "service", emu.hub().policy_key(), unix_now() + 600);
    assert_eq!(cbs.put_token(&audience, &tok).await.0, 200);
    (session, cbs)
}

/// The Event Hub-compatible name.
pub fn entity(emu: &RunningEmulator) -> String {
    emu.amqp().eventhub().entity.clone()
}

/// A receiver on one partition, starting where `selector` says.
pub async fn partition_receiver(
    session: &mut SessionHandle<()>,
    address: &str,
    selector: Option<&str>,
) -> Receiver {
    use fe2o3_amqp_types::messaging::Source;
    use fe2o3_amqp_types::primitives::{OrderedMap, Symbol};
    use serde_amqp::described::Described;
    use serde_amqp::descriptor::Descriptor;
    let mut source = Source::builder().address(address.to_owned()).build();
    if let Some(selector) = selector {
        let mut filter = OrderedMap::new();
        let described = Described {
            descriptor: Descriptor::Name(Symbol::from("apache.org:selector-filter:string")),
            value: Value::String(selector.into()),
        };
        filter.insert(Symbol::from("apache.org:selector-filter:string"), Value::Described(Box::new(described)));
        source.filter = Some(filter);
    }
    Receiver::builder().name(format!("rx-{}", rand_id())).source(source).target("me").attach(session).await.expect("attach")
}
