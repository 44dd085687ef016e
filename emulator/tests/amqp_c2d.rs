//! Service-side C2D over AMQP, end to end over real TLS: a service client (fe2o3-amqp, a policy SAS
//! token put on `$cbs` as the service SDKs do) sends on `/messages/devicebound`
//! and reads `/messages/servicebound/feedback`; the device is a real MQTT client. Covers the
//! property mapping, IoT Hub's rejections (unknown device, full queue, too large, a module target,
//! no claim) and feedback over the link: success, expiry (a short `absolute-expiry-time`), release.

mod amqp_support;
use amqp_support::mqtt_support;

use std::time::Duration;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition, LinkError};
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, MessageId, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Timestamp, Value};
use fe2o3_amqp::{Receiver, Sender};
use ironhub_emulator::Identity;
use ironhub_protocol::topics::{self, DeviceBound};
use mqtt_support::{unix_now, Client, TestHub, HOST, WAIT};

/// A service-side AMQP connection and session.
struct Service {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
}

impl Service {
    /// Authenticated as the service SDKs do it (SASL ANONYMOUS, then an `iothubowner` SAS token
    /// put on `$cbs` for the hub), or left without any claim.
    async fn connect(hub: &TestHub, authenticated: bool) -> Service {
        let mut connection = amqp_support::connect(&hub.emulator).await;
        let mut session = amqp_support::session(&mut connection).await;
        if authenticated {
            let token = amqp_support::token(&hub.emulator, HOST, "iothubowner", hub.hub.policy_key(), unix_now() + 3600);
            let (status, description) = amqp_support::Cbs::attach(&mut session).await.put_token(HOST, &token).await;
            assert_eq!(status, 200, "put-token: {description}");
        }
        Service { connection, session }
    }

    /// Without a SASL layer at all (protocol header `AMQP 0 1 0 0`), as Node.js azure-iothub
    /// connects, then a token on `$cbs`.
    async fn connect_without_sasl(hub: &TestHub) -> Service {
        let stream = amqp_support::tls(&hub.emulator).await;
        let mut connection = fe2o3_amqp::Connection::builder()
            .container_id("no-sasl")
            .hostname(HOST)
            .open_with_stream(stream)
            .await
            .expect("a peer without SASL is accepted");
        let mut session = amqp_support::session(&mut connection).await;
        let token = amqp_support::token(&hub.emulator, HOST, "service", hub.hub.policy_key(), unix_now() + 3600);
        let (status, description) = amqp_support::Cbs::attach(&mut session).await.put_token(HOST, &token).await;
        assert_eq!(status, 200, "put-token: {description}");
        Service { connection, session }
    }

    async fn c2d_sender(&mut self) -> Sender {
        Sender::attach(&mut self.session, format!("c2d-{}", rand::random::<u32>()), "/messages/devicebound").await.expect("attach")
    }

    async fn feedback_receiver(&mut self) -> Receiver {
        // The Node SDK's spelling; the address is case-insensitive as on IoT Hub.
        Receiver::attach(&mut self.session, format!("fb-{}", rand::random::<u32>()), "/messages/serviceBound/feedback")
            .await
            .expect("attach")
    }

    async fn close(mut self) {
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

fn c2d(device_id: &str, body: &[u8]) -> Message<Body<Value>> {
    Message::builder()
        .properties(Properties { to: Some(format!("/devices/{device_id}/messages/devicebound")), ..Default::default() })
        .data(Binary::from(body.to_vec()))
        .build()
        .map_body(Body::from)
}

fn with_ack(mut m: Message<Body<Value>>, message_id: &str, ack: &str) -> Message<Body<Value>> {
    if let Some(p) = m.properties.as_mut() {
        p.message_id = Some(MessageId::String(message_id.into()));
    }
    m.application_properties = Some(ApplicationProperties::builder().insert("iothub-ack", ack).build());
    m
}

/// The rejection's condition, or a panic with the outcome when the delivery was not rejected.
fn rejected(outcome: Outcome) -> ErrorCondition {
    match outcome {
        Outcome::Rejected(r) => r.error.expect("an error with the rejection").condition,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

async fn device(hub: &TestHub, id: &Identity) -> Client {
    let key = hub.add_identity(id);
    let mut options = hub.options(id, &hub.token(id, &key, 3600));
    options.set_manual_acks(true);
    let mut client = Client::connect(options).await.expect("connect");
    client.subscribe(&topics::c2d_filter(&id.device_id)).await;
    client
}

/// The next feedback message's records (JSON), its delivery and the receiver's view of it.
async fn next_feedback(receiver: &mut Receiver) -> (Vec<serde_json::Value>, fe2o3_amqp::link::delivery::Delivery<Body<Value>>) {
    let delivery: fe2o3_amqp::link::delivery::Delivery<Body<Value>> =
        tokio::time::timeout(WAIT, receiver.recv()).await.expect("feedback within WAIT").expect("recv");
    let body = match delivery.body() {
        Body::Data(sections) => sections.iter().flat_map(|d| d.0.to_vec()).collect::<Vec<u8>>(),
        other => panic!("feedback body is not data: {other:?}"),
    };
    let p = delivery.message().properties.clone().expect("properties");
    assert_eq!(p.content_type, Some(Symbol::from("application/vnd.microsoft.iothub.feedback.json")));
    assert_eq!(p.user_id.as_ref().map(|u| u.to_vec()), Some(HOST.as_bytes().to_vec()), "user-id is the hub name");
    assert!(matches!(p.message_id, Some(MessageId::String(_))));
    (serde_json::from_slice(&body).expect("a JSON array"), delivery)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2d_reaches_the_device_with_every_property_and_success_feedback_comes_back() {
    let hub = TestHub::start().await;
    let id = Identity::device("amqp-dev");
    let mut dev = device(&hub, &id).await;
    let generation = hub.hub.get_device("amqp-dev").unwrap().generation_id;
    let mut service = Service::connect(&hub, true).await;
    let mut sender = service.c2d_sender().await;

    let uuid: [u8; 16] = [0xde, 0xad, 0xbe, 0xef, 0, 1, 0x42, 2, 0x83, 3, 4, 5, 6, 7, 8, 9];
    let expiry = chrono::Utc::now() + chrono::Duration::minutes(10);
    let mut m = c2d("amqp-dev", b"\x00binary body");
    m.properties = Some(Properties {
        to: Some("/devices/amqp-dev/messages/devicebound".into()),
        message_id: Some(MessageId::Uuid(uuid.into())),
        correlation_id: Some(MessageId::String("corr&1".into())),
        user_id: Some(Binary::from(b"backend".to_vec())),
        content_type: Some(Symbol::from("application/octet-stream")),
        content_encoding: Some(Symbol::from("binary")),
        absolute_expiry_time: Some(Timestamp::from_milliseconds(expiry.timestamp_millis())),
        ..Default::default()
    });
    m.application_properties =
        Some(ApplicationProperties::builder().insert("iothub-ack", "full").insert("k", "v w&x=y").insert("n", 5i64).build());
    assert!(matches!(sender.send(m).await.expect("send"), Outcome::Accepted(_)));

    let publish = dev.next_publish().await;
    assert_eq!(&publish.payload[..], b"\x00binary body");
    let Some(DeviceBound::C2d { bag, .. }) = topics::parse_device_bound(&publish.topic) else { panic!("{}", publish.topic) };
    let message_id = "deadbeef-0001-4202-8303-040506070809";
    assert_eq!(bag.message_id.as_deref(), Some(message_id));
    assert_eq!(bag.correlation_id.as_deref(), Some("corr&1"));
    assert_eq!(bag.user_id.as_deref(), Some("backend"));
    assert_eq!(bag.content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(bag.content_encoding.as_deref(), Some("binary"));
    assert_eq!(bag.expiry_time_utc, Some(expiry.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()));
    assert_eq!(bag.to.as_deref(), Some("/devices/amqp-dev/messages/devicebound"));
    assert_eq!(bag.ack.as_deref(), Some("full"));
    assert_eq!(bag.custom("k"), Some("v w&x=y"));
    assert_eq!(bag.custom("n"), Some("5"));
    assert_eq!(hub.hub.get_device("amqp-dev").unwrap().cloud_to_device_message_count, 1);

    let mut receiver = service.feedback_receiver().await;
    dev.client.ack(&publish).await.unwrap();
    let (records, delivery) = next_feedback(&mut receiver).await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["originalMessageId"], message_id);
    assert_eq!((r["statusCode"].as_str(), r["description"].as_str()), (Some("Success"), Some("Success")));
    assert_eq!((r["deviceId"].as_str(), r["deviceGenerationId"].as_str()), (Some("amqp-dev"), Some(generation.as_str())));
    receiver.accept(&delivery).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while hub.hub.feedback_count() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("accepted feedback leaves the queue");
    service.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_carry_iot_hub_conditions() {
    let hub = TestHub::start().await;
    hub.add_identity(&Identity::device("full-dev"));
    let mut service = Service::connect(&hub, true).await;
    let mut sender = service.c2d_sender().await;

    let unknown = sender.send(c2d("nobody", b"x")).await.expect("send");
    assert_eq!(rejected(unknown), ErrorCondition::AmqpError(AmqpError::NotFound));

    for i in 0..50 {
        assert!(matches!(sender.send(c2d("full-dev", format!("{i}").as_bytes())).await.unwrap(), Outcome::Accepted(_)));
    }
    let full = sender.send(c2d("full-dev", b"51st")).await.expect("send");
    assert_eq!(rejected(full), ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded));
    assert_eq!(hub.hub.pending_c2d_count("full-dev"), 50);

    hub.add_identity(&Identity::device("big-dev"));
    let big = sender.send(c2d("big-dev", &vec![b'x'; 64 * 1024 + 1])).await.expect("send");
    assert_eq!(rejected(big), ErrorCondition::LinkError(LinkError::MessageSizeExceeded));

    let mut to_module = c2d("big-dev", b"x");
    to_module.properties.as_mut().unwrap().to = Some("/devices/big-dev/modules/m/messages/devicebound".into());
    assert_eq!(rejected(sender.send(to_module).await.unwrap()), ErrorCondition::Custom(Symbol::from("com.microsoft:argument-error")));
    let bad_ack = with_ack(c2d("big-dev", b"x"), "m", "sometimes");
    assert_eq!(rejected(sender.send(bad_ack).await.unwrap()), ErrorCondition::Custom(Symbol::from("com.microsoft:argument-error")));
    assert_eq!(hub.hub.pending_c2d_count("big-dev"), 0);
    service.close().await;

    // Without a claim (no $cbs token) neither link is served.
    let mut anonymous = Service::connect(&hub, false).await;
    let attempt = Sender::attach(&mut anonymous.session, "c2d-anon", "/messages/devicebound").await;
    let refused = match attempt {
        Err(_) => true,
        Ok(mut s) => !matches!(s.send(c2d("full-dev", b"x")).await, Ok(Outcome::Accepted(_))),
    };
    assert!(refused, "an unauthenticated peer must not send C2D");
    assert_eq!(hub.hub.pending_c2d_count("full-dev"), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_feedback_over_the_link_and_a_released_batch_comes_again() {
    let hub = TestHub::start().await;
    hub.add_identity(&Identity::device("exp-dev"));
    let mut service = Service::connect(&hub, true).await;
    let mut sender = service.c2d_sender().await;
    let mut short = with_ack(c2d("exp-dev", b"soon gone"), "short-ttl", "negative");
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    short.properties.as_mut().unwrap().absolute_expiry_time = Some(Timestamp::from_milliseconds(soon.timestamp_millis()));
    assert!(matches!(sender.send(short).await.unwrap(), Outcome::Accepted(_)));

    // The device never connects: the hub reports the expiry by itself.
    let mut receiver = service.feedback_receiver().await;
    let (records, delivery) = next_feedback(&mut receiver).await;
    assert_eq!(records[0]["originalMessageId"], "short-ttl");
    assert_eq!((records[0]["statusCode"].as_str(), records[0]["description"].as_str()), (Some("Expired"), Some("Message expired")));
    receiver.release(&delivery).await.unwrap();
    let (again, delivery) = next_feedback(&mut receiver).await;
    assert_eq!(again, records, "a released feedback message is offered again");
    receiver.accept(&delivery).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(1500), receiver.recv::<Body<Value>>()).await;
    assert!(quiet.is_err(), "nothing more after the accept");
    assert_eq!(hub.hub.feedback_count(), 0);
    service.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_sasl_sends_c2d_after_a_cbs_token() {
    let hub = TestHub::start().await;
    let id = Identity::device("no-sasl-dev");
    let mut dev = device(&hub, &id).await;
    let mut service = Service::connect_without_sasl(&hub).await;
    let mut sender = service.c2d_sender().await;
    assert!(matches!(sender.send(c2d("no-sasl-dev", b"plain amqp")).await.unwrap(), Outcome::Accepted(_)));
    assert_eq!(&dev.next_publish().await.payload[..], b"plain amqp");
    service.close().await;
}
