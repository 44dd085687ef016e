//! Owns the request/response pattern of AMQP management nodes (`$cbs`, `$management`, ...): the
//! peer sends requests on one link and receives answers on another whose target is the request's
//! `reply-to`. This module keeps a connection's answer links by that address and sends answers
//! with the request's `message-id` as `correlation-id`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::link::Sender;
use fe2o3_amqp_types::messaging::{ApplicationProperties, Body, Message, MessageId, Properties};
use fe2o3_amqp_types::performatives::Attach;
use fe2o3_amqp_types::primitives::{SimpleValue, Value};
use tokio::sync::mpsc;

use super::Connection;

pub type AmqpMessage = Message<Body<Value>>;

/// A connection's answer links, by their target address.
#[derive(Default)]
pub struct ReplyLinks {
    links: Mutex<HashMap<String, mpsc::Sender<AmqpMessage>>>,
    /// Wakes answers waiting for a link the peer attaches right after sending its request.
    attached: tokio::sync::Notify,
}

/// How long an answer waits for its link to be attached.
const REPLY_LINK_WAIT: Duration = Duration::from_secs(5);

impl ReplyLinks {
    fn register(&self, address: String, tx: mpsc::Sender<AmqpMessage>) {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).insert(address, tx);
        self.attached.notify_waiters();
    }

    fn remove(&self, address: &str) {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).remove(address);
    }

    fn find(&self, address: &str) -> Option<mpsc::Sender<AmqpMessage>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).get(address).cloned()
    }

    /// Sends `answer` on the link attached for `reply_to`, waiting a little for it to appear.
    pub async fn send(&self, reply_to: &str, answer: AmqpMessage) {
        let deadline = tokio::time::Instant::now() + REPLY_LINK_WAIT;
        loop {
            let notified = self.attached.notified();
            // A reply link without a target address (Node.js azure-iothub's `$cbs` receiver) takes
            // the answers no addressed link claims.
            if let Some(tx) = self.find(reply_to).or_else(|| self.find("")) {
                let _ = tx.send(answer).await;
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                log::debug!("amqp: no link attached for reply-to '{reply_to}'; answer dropped");
                return;
            }
        }
    }
}

/// Serves an answer link until the peer detaches it.
pub async fn serve_replies(conn: Arc<Connection>, attach: &Attach, mut sender: Sender) {
    let address = super::target_address(attach).unwrap_or_default();
    let (tx, mut rx) = mpsc::channel::<AmqpMessage>(16);
    conn.replies.register(address.clone(), tx);
    loop {
        tokio::select! {
            answer = rx.recv() => match answer {
                Some(answer) => {
                    if sender.send(answer).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = sender.on_detach() => break,
        }
    }
    conn.replies.remove(&address);
    let _ = tokio::time::timeout(Duration::from_secs(2), sender.close()).await;
}

/// A string application property of a request (the SDKs send these as strings).
pub fn app_property(message: &AmqpMessage, name: &str) -> Option<String> {
    let value = message.application_properties.as_ref()?.0.get(name)?;
    match value {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The request's `reply-to` address.
pub fn reply_to(message: &AmqpMessage) -> Option<String> {
    message.properties.as_ref()?.reply_to.clone()
}

/// An answer to `request`: `status-code`/`status-description` application properties, the
/// request's `message-id` as `correlation-id`, and `body`.
pub fn answer(request: &AmqpMessage, status: i32, description: &str, body: Value) -> AmqpMessage {
    let correlation_id: Option<MessageId> = request.properties.as_ref().and_then(|p| p.message_id.clone());
    let mut props = ApplicationProperties::default();
    props.0.insert("status-code".into(), SimpleValue::Int(status));
    props.0.insert("status-description".into(), SimpleValue::String(description.into()));
    Message::builder()
        .properties(Properties { correlation_id, to: reply_to(request), ..Default::default() })
        .application_properties(props)
        .body(Body::Value(fe2o3_amqp_types::messaging::AmqpValue(body)))
        .build()
}
