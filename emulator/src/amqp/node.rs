//! Owns the request/response pattern of AMQP management nodes (`$cbs`, `$management`, ...): the
//! peer sends requests on one link and receives answers on another attached from the same node,
//! whose target is the request's `reply-to` (the pure-Python Azure stack sends no `reply-to`: then
//! the node's one answer link). This module keeps a connection's answer links and sends answers
//! with the request's `message-id` as `correlation-id`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp_types::messaging::{ApplicationProperties, Body, Message, MessageId, Properties};
use fe2o3_amqp_types::performatives::Attach;
use fe2o3_amqp_types::primitives::{SimpleValue, Value};
use tokio::sync::mpsc;

use super::Connection;

pub type AmqpMessage = Message<Body<Value>>;

/// A connection's answer links: (node, target address, where to queue answers).
#[derive(Default)]
pub struct ReplyLinks {
    links: Mutex<Vec<(String, String, mpsc::Sender<AmqpMessage>)>>,
    /// Wakes answers waiting for a link the peer attaches right after sending its request.
    attached: tokio::sync::Notify,
}

/// How long an answer waits for its link to be attached.
const REPLY_LINK_WAIT: Duration = Duration::from_secs(5);

impl ReplyLinks {
    fn register(&self, node: String, address: String, tx: mpsc::Sender<AmqpMessage>) {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).push((node, address, tx));
        self.attached.notify_waiters();
    }

    fn remove(&self, tx: &mpsc::Sender<AmqpMessage>) {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).retain(|(_, _, t)| !t.same_channel(tx));
    }

    /// The link for `reply_to`, else the newest answer link of `node`.
    fn find(&self, node: &str, reply_to: Option<&str>) -> Option<mpsc::Sender<AmqpMessage>> {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let by_address = reply_to.and_then(|r| links.iter().find(|(_, a, _)| a == r));
        by_address.or_else(|| links.iter().rev().find(|(n, _, _)| n == node)).map(|(_, _, tx)| tx.clone())
    }

    /// Sends `answer` to a request of `node` on its answer link, waiting a little for it to appear.
    pub async fn send(&self, node: &str, reply_to: Option<&str>, answer: AmqpMessage) {
        let deadline = tokio::time::Instant::now() + REPLY_LINK_WAIT;
        loop {
            let notified = self.attached.notified();
            if let Some(tx) = self.find(node, reply_to) {
                let _ = tx.send(answer).await;
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                log::debug!("amqp: no answer link attached for {node} ({reply_to:?}); answer dropped");
                return;
            }
        }
    }
}

/// Serves an answer link of `node` until the peer detaches it.
pub async fn serve_replies(conn: Arc<Connection>, node: &str, attach: &Attach, mut sender: Sender) {
    let address = super::target_address(attach).unwrap_or_default();
    let (tx, mut rx) = mpsc::channel::<AmqpMessage>(16);
    conn.replies.register(node.to_owned(), address, tx.clone());
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
    conn.replies.remove(&tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), sender.close()).await;
}

/// Serves a node's request link: each request gets the answer `handle` makes, on the node's
/// answer link, until the peer detaches.
pub async fn serve_requests(
    conn: Arc<Connection>,
    node: &str,
    mut receiver: Receiver,
    handle: impl Fn(&Connection, &AmqpMessage) -> AmqpMessage,
) {
    while let Ok(delivery) = receiver.recv::<Body<Value>>().await {
        let _ = receiver.accept(&delivery).await;
        let request = delivery.into_message();
        let answer = handle(&conn, &request);
        conn.replies.send(node, reply_to(&request).as_deref(), answer).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), receiver.close()).await;
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
