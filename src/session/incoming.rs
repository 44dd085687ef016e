//! Publishes from the hub: C2D and input messages to the message handler or inbox, method
//! requests to the method handler or inbox, desired patches to the twin patch handler or inbox,
//! twin responses to their waiters. A C2D or input message is PUBACKed only once a handler or the
//! inbox took it (a crash or shutdown before leaves it with the hub, which redelivers it);
//! everything else is acknowledged on arrival.

use std::sync::Arc;

use bytes::Bytes;
use ironhub_protocol::topics::{self, DeviceBound, PropertyBag};
use rumqttc::Publish;
use serde_json::Value;

use super::{lock, Inbox, Session};
use crate::message::{Message, MethodRequest};
use crate::transport::mqtt::Link;

/// PUBACKs one incoming message when dropped, if armed (so a panicking handler still counts as
/// having taken it: redelivering it would only panic again).
pub(super) struct AckOnDrop {
    link: Arc<Link>,
    header: Option<Publish>,
}

impl AckOnDrop {
    fn new(link: &Arc<Link>, p: &Publish) -> AckOnDrop {
        // Only the packet id and QoS matter for the PUBACK: no copy of the topic or payload.
        let mut header = Publish::new("", p.qos, Bytes::new());
        header.pkid = p.pkid;
        link.owe_ack(&header);
        AckOnDrop { link: link.clone(), header: Some(header) }
    }

    /// Acknowledges now.
    fn ack(mut self) {
        if let Some(h) = self.header.take() {
            self.link.ack(&h);
        }
    }

    /// Drops without acknowledging (nobody took the message).
    fn disarm(mut self) {
        if let Some(h) = self.header.take() {
            self.link.forgive_ack(&h);
        }
    }
}

/// The ack of the C2D/input message whose handler is running now (handlers of one client run
/// one at a time): a graceful `disconnect`/`shutdown` called from that handler acknowledges it
/// first, or the hub would deliver it again on the next connection.
pub(super) type RunningAck = Arc<std::sync::Mutex<Option<AckOnDrop>>>;

impl Drop for AckOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.header.take() {
            self.link.ack(&h);
        }
    }
}

/// A received C2D/input message: system properties by name, `custom_properties` as the protocol
/// crate maps them (`PropertyBag::take_received_custom`).
fn incoming_message(mut bag: PropertyBag, data: Bytes, input_name: Option<String>) -> Message {
    let custom = bag.take_received_custom();
    Message {
        data,
        custom_properties: custom,
        message_id: bag.message_id,
        expiry_time_utc: bag.expiry_time_utc,
        correlation_id: bag.correlation_id,
        user_id: bag.user_id,
        content_encoding: bag.content_encoding,
        content_type: bag.content_type,
        output_name: None,
        input_name,
        ack: bag.ack,
        iothub_interface_id: bag.interface_id,
    }
}

pub(super) fn json_payload(bytes: &[u8]) -> Value {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Acknowledges the running message when its handler returns or panics.
struct Taken(RunningAck);

impl Drop for Taken {
    fn drop(&mut self) {
        let ack = lock(&self.0).take();
        drop(ack);
    }
}

impl Session {
    /// Called by a graceful disconnect from one of this client's handlers: the message that
    /// handler is processing counts as taken, so it is acknowledged before the link stops.
    pub(super) fn ack_running_message(&self) {
        if self.in_handler() {
            let ack = lock(&self.running_ack).take();
            if let Some(a) = ack {
                a.ack();
            }
        }
    }

    /// Hands an arrival to its inbox when that feature is in inbox mode (`mode`), keeping at most
    /// `max_queued_messages` there. `Err(item)`: not in inbox mode; `Ok(taken)`: the inbox decided.
    fn to_inbox<T>(
        &self,
        item: T,
        mode: impl FnOnce(&mut Inbox) -> Option<&mut std::collections::VecDeque<T>>,
    ) -> Result<bool, T> {
        let taken = {
            let mut inbox = lock(&self.inbox);
            let Some(q) = mode(&mut inbox) else { return Err(item) };
            if q.len() >= self.options.max_queued_messages {
                false
            } else {
                q.push_back(item);
                true
            }
        };
        if taken {
            self.inbox_notify.notify_waiters();
        } else {
            log::warn!("{}: inbox full; an arrival is left to the hub", self.identity.client_id());
        }
        Ok(taken)
    }

    fn deliver_message(&self, m: Message, ack: AckOnDrop) {
        match self.to_inbox(m, |i| i.messages_mode.then_some(&mut i.messages)) {
            Ok(true) => ack.ack(),
            // Not taken: the hub keeps it and redelivers it on the next connection.
            Ok(false) => ack.disarm(),
            Err(m) => {
                let table = self.handlers.clone();
                let running = self.running_ack.clone();
                self.queue.push(move || {
                    let h = lock(&table).message.clone();
                    match h {
                        // The ack fires when the handler returns (or panics), unless the handler
                        // disconnected meanwhile (then it fired before the link stopped).
                        Some(h) => {
                            *lock(&running) = Some(ack);
                            let _ack = Taken(running);
                            h(m)
                        }
                        None => ack.disarm(),
                    }
                });
            }
        }
    }

    fn deliver_method(&self, r: MethodRequest) {
        if let Err(r) = self.to_inbox(r, |i| i.methods_mode.then_some(&mut i.methods)) {
            self.dispatch(|h| h.method.clone(), move |h| h(r));
        }
    }

    pub(super) fn deliver_twin_patch(&self, patch: Value) {
        if let Err(p) = self.to_inbox(patch, |i| i.twin_mode.then_some(&mut i.twin_patches)) {
            self.dispatch(|h| h.twin_patch.clone(), move |h| h(p));
        }
    }

    pub(super) fn on_publish(self: &Arc<Self>, link: &Arc<Link>, p: Publish) {
        let ack = AckOnDrop::new(link, &p);
        match topics::parse_device_bound(&p.topic) {
            Some(DeviceBound::C2d { bag, .. }) => self.deliver_message(incoming_message(bag, p.payload, None), ack),
            Some(DeviceBound::Input { bag, input_name, .. }) => {
                self.deliver_message(incoming_message(bag, p.payload, Some(input_name)), ack)
            }
            Some(DeviceBound::MethodRequest { name, rid }) => {
                ack.ack();
                self.deliver_method(MethodRequest { request_id: rid, name, payload: json_payload(&p.payload) })
            }
            Some(DeviceBound::TwinResponse { status, rid, .. }) => {
                ack.ack();
                self.twin_answer(&rid, status, p.payload);
            }
            Some(DeviceBound::DesiredPatch { version }) => {
                ack.ack();
                let patch = json_payload(&p.payload);
                let v = version.or_else(|| patch.get("$version").and_then(Value::as_u64));
                self.twin_seen_version(v);
                self.deliver_twin_patch(patch);
            }
            None => log::debug!("{}: ignoring a publish on an unknown topic", self.identity.client_id()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_bag_maps_system_and_custom_properties() {
        let bag = PropertyBag::decode("%24.mid=m1&%24.cid=c1&%24.to=%2Fdevices%2Fd&%24.cdid=d0&iothub-ack=full&k=v%20w");
        let m = incoming_message(bag, Bytes::from_static(b"x"), Some("in1".into()));
        assert_eq!(m.message_id.as_deref(), Some("m1"));
        assert_eq!(m.correlation_id.as_deref(), Some("c1"));
        assert_eq!(m.ack.as_deref(), Some("full"));
        assert_eq!(m.input_name.as_deref(), Some("in1"));
        assert_eq!(m.property("$.cdid"), Some("d0"));
        assert_eq!(m.property("k"), Some("v w"));
        assert!(m.property("$.to").is_none());
    }

    #[test]
    fn json_payloads_are_lenient() {
        assert_eq!(json_payload(b""), Value::Null);
        assert_eq!(json_payload(b" "), Value::Null);
        assert_eq!(json_payload(b"{\"a\":1}"), serde_json::json!({"a": 1}));
        assert_eq!(json_payload(b"not json"), Value::String("not json".into()));
    }
}
