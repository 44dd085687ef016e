//! Owns the service-facing C2D links of the AMQP endpoint, as the service SDKs use them:
//! `/messages/devicebound`, where `azure-iothub` `Client.send` and `azure-iot-hub`
//! `send_c2d_message` send cloud-to-device messages (`to` = `/devices/{id}/messages/devicebound`),
//! and `/messages/servicebound/feedback`, where `getFeedbackReceiver` reads delivery feedback.
//!
//! A C2D message is mapped onto the device's MQTT property bag (`message-id` → `$.mid`,
//! `correlation-id` → `$.cid`, `user-id` → `$.uid`, `content-type` → `$.ct`, `content-encoding` →
//! `$.ce`, `absolute-expiry-time` → `$.exp`, `iothub-ack`, application properties as they are) and
//! handed to the broker's `accept_c2d`, the same path as the control API's C2D. Its delivery is
//! accepted once the hub holds it durably, or rejected with the condition IoT Hub uses:
//! `amqp:not-found` (unknown device), `amqp:resource-limit-exceeded` (50 pending),
//! `amqp:link:message-size-exceeded` (over 64 KB), `com.microsoft:argument-error` (bad `to`,
//! `iothub-ack` or body). Feedback messages (`hub::feedback`) go out one at a time and leave the
//! queue when the receiver accepts (or rejects) them; released, modified or unsettled at detach,
//! they are offered again.

use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{LinkAcceptor, LinkEndpoint, SupportedReceiverSettleModes};
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition, LinkError, ReceiverSettleMode};
use fe2o3_amqp::types::messaging::{Body, Data, Message, MessageId, Outcome, Properties, Source, Target};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Value};
use ironhub_protocol::topics::PropertyBag;

use super::Connection;
use crate::hub::error::{self, HubError};
use crate::hub::feedback::{self, FeedbackMessage};
use crate::hub::{DeviceBoundMessage, Hub, Right};
use crate::mqtt::Broker;

/// The C2D sender link's address.
pub const DEVICEBOUND_ADDRESS: &str = "/messages/devicebound";
/// The feedback receiver link's address (the Node SDK spells it `/messages/serviceBound/feedback`).
pub const FEEDBACK_ADDRESS: &str = "/messages/servicebound/feedback";
/// How often an idle feedback link looks for C2D messages that expired meanwhile.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// The service link an attach names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceLink {
    /// The service sends C2D messages (the peer is the sender).
    DeviceBound,
    /// The service receives feedback (the peer is the receiver).
    Feedback,
}

/// Which service link `address` names: the path alone or a full `amqps://host[:port]/path` (as
/// uamqp writes the target), compared case-insensitively (the SDKs differ in `serviceBound`).
pub fn service_link(address: &str) -> Option<ServiceLink> {
    let path = super::address_path(address).trim_end_matches('/');
    let is = |known: &str| path.eq_ignore_ascii_case(known.trim_start_matches('/'));
    if is(DEVICEBOUND_ADDRESS) {
        Some(ServiceLink::DeviceBound)
    } else if is(FEEDBACK_ADDRESS) {
        Some(ServiceLink::Feedback)
    } else {
        None
    }
}

/// fe2o3-amqp's link acceptor without source or target rewriting.
pub type DefaultLinkAcceptor = LinkAcceptor<fn(Source) -> Option<Source>, fn(Target) -> Option<Target>>;

/// The acceptor for these links: the receiver settles first (every disposition settled), whatever
/// the peer asks, as IoT Hub answers. uamqp (Python azure-iot-hub) asks for `second` but completes
/// a send only on a settled disposition, so honouring its request would leave it waiting for ever.
pub fn link_acceptor() -> DefaultLinkAcceptor {
    LinkAcceptor::builder()
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .build()
}

/// Serves a link `route_link` found to be one of these (`path` is its address without scheme and
/// host), once the connection holds a `ServiceConnect` claim for it; a link attached the wrong way
/// round (receiving from `/messages/devicebound`, sending to the feedback node) is refused.
pub async fn route(conn: Arc<Connection>, address: &str, path: &str, link: LinkEndpoint) {
    if !conn.claims.allows(path, Right::ServiceConnect) {
        return super::refuse_unauthorized(link, address).await;
    }
    let (hub, broker) = (conn.server.hub().clone(), conn.server.broker().clone());
    match (service_link(path), link) {
        (Some(ServiceLink::DeviceBound), LinkEndpoint::Receiver(receiver)) => serve_devicebound(hub, broker, receiver).await,
        (Some(ServiceLink::Feedback), LinkEndpoint::Sender(sender)) => serve_feedback(hub, sender).await,
        (_, link) => {
            let why = format!("'{address}' is not served in that direction");
            super::refuse(link, AmqpError::NotAllowed, why).await
        }
    }
}

/// Why a C2D message is refused: an IoT Hub error, rendered as the AMQP rejection IoT Hub sends.
#[derive(Debug)]
pub struct Refusal(pub HubError);

impl From<HubError> for Refusal {
    fn from(e: HubError) -> Self {
        Refusal(e)
    }
}

impl Refusal {
    fn invalid(message: impl Into<String>) -> Refusal {
        Refusal(HubError::invalid(message))
    }

    /// The AMQP error condition IoT Hub (and the SDKs' error tables) use for this code.
    pub fn condition(&self) -> ErrorCondition {
        match self.0.code {
            error::DEVICE_NOT_FOUND | error::MODULE_NOT_FOUND | error::NOT_FOUND => AmqpError::NotFound.into(),
            error::QUEUE_DEPTH_EXCEEDED => AmqpError::ResourceLimitExceeded.into(),
            error::MESSAGE_TOO_LARGE => LinkError::MessageSizeExceeded.into(),
            error::THROTTLED => ErrorCondition::Custom(Symbol::from("com.microsoft:device-container-throttled")),
            code if code / 1000 == 400 => ErrorCondition::Custom(Symbol::from("com.microsoft:argument-error")),
            _ => AmqpError::InternalError.into(),
        }
    }

    /// The rejection: the condition, and IoT Hub's error name and message as the description.
    pub fn amqp_error(&self) -> definitions::Error {
        definitions::Error::new(self.condition(), Some(format!("{}: {}", self.0.name(), self.0.message)), None)
    }
}

/// `message-id` / `correlation-id` as IoT Hub renders them on the device side (UUIDs hyphenated).
fn id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => {
            let hex: String = u.as_inner().iter().map(|b| format!("{b:02x}")).collect();
            format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
        }
        MessageId::Binary(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// An application property's value as text (the MQTT property bag carries strings only).
fn property_text(value: &SimpleValue) -> String {
    match value {
        SimpleValue::Null => String::new(),
        SimpleValue::Bool(b) => b.to_string(),
        SimpleValue::Ubyte(n) => n.to_string(),
        SimpleValue::Ushort(n) => n.to_string(),
        SimpleValue::Uint(n) => n.to_string(),
        SimpleValue::Ulong(n) => n.to_string(),
        SimpleValue::Byte(n) => n.to_string(),
        SimpleValue::Short(n) => n.to_string(),
        SimpleValue::Int(n) => n.to_string(),
        SimpleValue::Long(n) => n.to_string(),
        SimpleValue::Float(n) => n.to_string(),
        SimpleValue::Double(n) => n.to_string(),
        SimpleValue::Char(c) => c.to_string(),
        SimpleValue::Timestamp(t) => iso_of_ms(t.milliseconds()),
        SimpleValue::Uuid(u) => id_text(&MessageId::Uuid(u.clone())),
        SimpleValue::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.0.clone(),
        other => format!("{other:?}"),
    }
}

fn iso_of_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// The body's bytes: data sections concatenated, or an amqp-value that is binary or a string.
fn body_bytes(body: &Body<Value>) -> Result<Vec<u8>, Refusal> {
    match body {
        Body::Data(sections) => Ok(sections.iter().flat_map(|d| d.0.iter().copied()).collect()),
        Body::Value(v) => match &v.0 {
            Value::Binary(b) => Ok(b.to_vec()),
            Value::String(s) => Ok(s.clone().into_bytes()),
            Value::Null => Ok(Vec::new()),
            _ => Err(Refusal::invalid("The message body must be data sections, or a binary or string amqp-value")),
        },
        Body::Empty => Ok(Vec::new()),
        Body::Sequence(_) => Err(Refusal::invalid("The message body must be data sections, not amqp-sequence")),
    }
}

/// `/devices/{id}/messages/devicebound` → the device id (percent-decoded, as the SDKs encode it).
fn device_of(to: &str) -> Result<String, Refusal> {
    let segments: Vec<&str> = to.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["devices", id, "messages", bound] if !id.is_empty() && bound.eq_ignore_ascii_case("devicebound") => {
            Ok(percent_encoding::percent_decode_str(id).decode_utf8_lossy().into_owned())
        }
        ["devices", _, "modules", ..] => {
            Err(Refusal::invalid("IoT Hub sends cloud-to-device messages to devices only, not to modules"))
        }
        _ => Err(Refusal::invalid(format!("'to' must be /devices/{{deviceId}}/messages/devicebound, not '{to}'"))),
    }
}

/// Maps one AMQP C2D message onto its device and the message the device receives over MQTT.
pub fn to_device_bound(message: &Message<Body<Value>>) -> Result<(String, DeviceBoundMessage), Refusal> {
    let p = message.properties.clone().unwrap_or_default();
    let to = p.to.as_deref().ok_or_else(|| Refusal::invalid("The message has no 'to' property"))?;
    let device_id = device_of(to)?;
    let mut bag = PropertyBag {
        message_id: p.message_id.as_ref().map(id_text),
        correlation_id: p.correlation_id.as_ref().map(id_text),
        user_id: p.user_id.as_ref().map(|u| String::from_utf8_lossy(u).into_owned()),
        content_type: p.content_type.map(|s| s.0),
        content_encoding: p.content_encoding.map(|s| s.0),
        expiry_time_utc: p.absolute_expiry_time.map(|t| iso_of_ms(t.milliseconds())),
        ..Default::default()
    };
    if let Some(app) = &message.application_properties {
        for (key, value) in app.0.iter() {
            let text = property_text(value);
            if key.eq_ignore_ascii_case("iothub-ack") {
                if feedback::AckMode::parse(&text).is_none() {
                    return Err(Refusal::invalid(format!("iothub-ack must be none, positive, negative or full, not '{text}'")));
                }
                bag.ack = Some(text.to_ascii_lowercase());
            } else {
                bag.custom.push((key.clone(), text));
            }
        }
    }
    let body = body_bytes(&message.body)?;
    Ok((device_id, DeviceBoundMessage { body: body.into(), properties: bag }))
}

/// Serves one `/messages/devicebound` link (the peer sends): every message is queued for its device
/// and accepted once durable, or rejected with IoT Hub's condition. Returns when the link ends.
pub async fn serve_devicebound(hub: Arc<Hub>, broker: Arc<Broker>, mut receiver: Receiver) {
    loop {
        let delivery: Delivery<Body<Value>> = match receiver.recv().await {
            Ok(d) => d,
            Err(e) => {
                log::debug!("amqp: the C2D link ended: {e}");
                break;
            }
        };
        let queued = to_device_bound(delivery.message()).and_then(|(device_id, msg)| {
            broker.accept_c2d(&device_id, msg).map_err(Refusal::from).map(|_| device_id)
        });
        let disposed = match queued {
            Ok(device_id) => {
                hub.flushed().await;
                log::debug!("amqp: C2D message for {device_id} accepted");
                receiver.accept(&delivery).await
            }
            Err(refusal) => {
                log::info!("amqp: C2D message rejected: {}", refusal.0);
                receiver.reject(&delivery, refusal.amqp_error()).await
            }
        };
        if let Err(e) = disposed {
            log::debug!("amqp: cannot settle a C2D delivery: {e}");
            break;
        }
    }
    let _ = receiver.close().await;
}

/// The hub's name as IoT Hub writes it in a feedback message's `user-id`: the first label of its host name.
fn hub_name(hostname: &str) -> &str {
    hostname.split('.').next().unwrap_or(hostname)
}

/// One feedback message as IoT Hub sends it.
pub fn feedback_message(m: &FeedbackMessage, hostname: &str) -> Message<Data> {
    let properties = Properties {
        message_id: Some(MessageId::String(m.message_id.clone())),
        user_id: Some(Binary::from(hub_name(hostname).as_bytes().to_vec())),
        content_type: Some(Symbol::from(feedback::CONTENT_TYPE)),
        creation_time: Some(fe2o3_amqp::types::primitives::Timestamp::from_milliseconds(m.enqueued_ms)),
        ..Default::default()
    };
    Message::builder().properties(properties).data(Binary::from(m.body())).build()
}

/// Serves one feedback link (the peer receives): waiting feedback goes out one message at a time,
/// each completed by the receiver's accept (or reject) and put back by anything else. Returns when
/// the link ends.
pub async fn serve_feedback(hub: Arc<Hub>, mut sender: Sender) {
    let mut signal = hub.feedback_signal();
    loop {
        signal.borrow_and_update();
        if let Some(m) = hub.take_feedback() {
            match sender.send(feedback_message(&m, hub.hostname())).await {
                Ok(Outcome::Accepted(_) | Outcome::Rejected(_)) => {
                    hub.complete_feedback(m.lock_token);
                }
                Ok(_) => hub.release_feedback(m.lock_token),
                Err(e) => {
                    hub.release_feedback(m.lock_token);
                    log::debug!("amqp: the feedback link ended: {e}");
                    break;
                }
            }
            continue;
        }
        tokio::select! {
            _ = signal.changed() => {}
            _ = tokio::time::sleep(EXPIRY_SWEEP) => {}
            _ = sender.on_detach() => break,
        }
    }
    let _ = sender.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::ApplicationProperties;
    use fe2o3_amqp::types::primitives::Timestamp;

    #[test]
    fn addresses() {
        assert_eq!(service_link("/messages/devicebound"), Some(ServiceLink::DeviceBound));
        assert_eq!(service_link("amqps://localhost:5671/messages/devicebound"), Some(ServiceLink::DeviceBound));
        assert_eq!(service_link("/messages/serviceBound/feedback"), Some(ServiceLink::Feedback));
        assert_eq!(service_link("/messages/events"), None);
        assert_eq!(service_link("amqps://localhost"), None);
        assert_eq!(service_link("messages/devicebound"), Some(ServiceLink::DeviceBound), "as route_link passes it");
    }

    fn message(to: &str) -> Message<Body<Value>> {
        Message::builder()
            .properties(Properties { to: Some(to.into()), ..Default::default() })
            .data(Binary::from(b"hi".to_vec()))
            .build()
            .map_body(Body::from)
    }

    #[test]
    fn maps_every_property_onto_the_bag() {
        let mut m = message("/devices/dev%201/messages/devicebound");
        let uuid: [u8; 16] = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x80, 1, 2, 3, 4, 5, 6, 7];
        m.properties = Some(Properties {
            to: Some("/devices/dev%201/messages/devicebound".into()),
            message_id: Some(MessageId::Uuid(uuid.into())),
            correlation_id: Some(MessageId::Ulong(42)),
            user_id: Some(Binary::from(b"svc".to_vec())),
            content_type: Some(Symbol::from("application/json")),
            content_encoding: Some(Symbol::from("utf-8")),
            absolute_expiry_time: Some(Timestamp::from_milliseconds(1_000)),
            ..Default::default()
        });
        m.application_properties = Some(
            ApplicationProperties::builder().insert("iothub-ack", "FULL").insert("k", "v").insert("n", 7i32).build(),
        );
        let (device, msg) = to_device_bound(&m).unwrap();
        assert_eq!(device, "dev 1");
        let bag = msg.properties;
        assert_eq!(bag.message_id.as_deref(), Some("12345678-9abc-4def-8001-020304050607"));
        assert_eq!(bag.correlation_id.as_deref(), Some("42"));
        assert_eq!(bag.user_id.as_deref(), Some("svc"));
        assert_eq!(bag.content_type.as_deref(), Some("application/json"));
        assert_eq!(bag.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(bag.expiry_time_utc.as_deref(), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!(bag.ack.as_deref(), Some("full"));
        assert_eq!(bag.custom, vec![("k".to_string(), "v".to_string()), ("n".to_string(), "7".to_string())]);
        assert_eq!(&msg.body[..], b"hi");
    }

    #[test]
    fn refusals_carry_iot_hub_conditions() {
        let module = to_device_bound(&message("/devices/d/modules/m/messages/devicebound")).unwrap_err();
        assert_eq!(module.condition(), ErrorCondition::Custom(Symbol::from("com.microsoft:argument-error")));
        assert!(to_device_bound(&message("/devices//messages/devicebound")).is_err());
        let mut no_to = message("x");
        no_to.properties = None;
        assert!(to_device_bound(&no_to).is_err());
        let mut bad_ack = message("/devices/d/messages/devicebound");
        bad_ack.application_properties = Some(ApplicationProperties::builder().insert("iothub-ack", "always").build());
        assert_eq!(to_device_bound(&bad_ack).unwrap_err().0.code, error::ARGUMENT_INVALID);
        assert_eq!(Refusal(HubError::device_not_found("d")).condition(), AmqpError::NotFound.into());
        assert_eq!(Refusal(HubError::new(error::QUEUE_DEPTH_EXCEEDED, "x")).condition(), AmqpError::ResourceLimitExceeded.into());
        let text = Refusal(HubError::device_not_found("d")).amqp_error().description.unwrap();
        assert_eq!(text, "DeviceNotFound: Device d not found");
    }
}
