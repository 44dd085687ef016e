//! What the hub does with each packet a connected client sends: telemetry and module outputs
//! (event log + routes), twin GET and reported PATCH, method responses, (un)subscriptions.
//!
//! Twin responses go to the requesting connection whether or not it subscribed to
//! `$iothub/twin/res/#`. azure-iot-device's `ensure_desired_properties` publishes a twin GET
//! after every (re)connect without subscribing first, and hangs waiting for an answer that a
//! strictly subscription-gated hub would never send; a response can only ever reach the
//! client that asked, so answering it unconditionally leaks nothing.

use std::sync::Arc;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, SubAck, Subscribe, SubscribeReasonCode, UnsubAck, Unsubscribe};
use rumqttc::mqttbytes::QoS;
use tokio::sync::mpsc;

use super::acks::Acks;
use super::connection::{packet_kind, STALL_TIMEOUT};
use super::{acl, Broker};
use crate::hub::throttle::Operation;
use crate::hub::{RouteTarget, TelemetryRecord, TwinError};
use crate::identity::Identity;
use ironhub_protocol::limits::MAX_TELEMETRY_BYTES;
use ironhub_protocol::topics::{self, DeviceOriginated, PropertyBag};

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Close,
}

/// The authenticated side of one connection, as the packet handlers see it.
pub(super) struct Session {
    pub(super) broker: Arc<Broker>,
    pub(super) identity: Identity,
    /// This connection's id: C2D and input deliveries in flight on it are matched to its PUBACKs.
    pub(super) conn_id: u64,
    pub(super) outbound: mpsc::Sender<Packet>,
    /// The PUBACKs that wait for the store's commit; `None` when the hub keeps nothing on disk.
    pub(super) acks: Option<Acks>,
}

impl Session {
    pub(super) async fn handle(&self, packet: Packet) -> Flow {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish).await,
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe).await,
            Packet::Unsubscribe(unsubscribe) => self.on_unsubscribe(unsubscribe).await,
            Packet::PingReq => self.send(Packet::PingResp).await,
            // Completes a C2D or input message: until then it stays pending for redelivery.
            Packet::PubAck(ack) => {
                self.broker.hub.acknowledge_devicebound(&self.identity, self.conn_id, ack.pkid);
                Flow::Continue
            }
            Packet::Disconnect => Flow::Close,
            other => {
                // A second CONNECT, QoS 2 flows or server-side packets: protocol violations.
                log::info!("mqtt: {} sent {}; closing", self.identity, packet_kind(&other));
                Flow::Close
            }
        }
    }

    /// Queues a packet answering this client. Waiting is fine here (it only slows this
    /// client's own reading), but not forever.
    async fn send(&self, packet: Packet) -> Flow {
        match tokio::time::timeout(STALL_TIMEOUT, self.outbound.send(packet)).await {
            Ok(Ok(())) => Flow::Continue,
            _ => Flow::Close,
        }
    }

    async fn on_publish(&self, publish: Publish) -> Flow {
        if publish.qos == QoS::ExactlyOnce {
            log::info!("mqtt: {} published with QoS 2, which IoT Hub does not support; closing", self.identity);
            return Flow::Close;
        }
        let Some(kind) = topics::parse_device_originated(&publish.topic) else {
            log::info!("mqtt: {} published to a topic it may not use; closing", self.identity);
            return Flow::Close;
        };
        let handled = match kind {
            DeviceOriginated::Telemetry { device_id, module_id, bag } => {
                self.broker.hub.shape_throttle(Operation::DeviceToCloud).await;
                self.on_telemetry(Identity { device_id, module_id }, bag, publish.payload.clone())
            }
            // IoT Hub acknowledges a twin request before it publishes the response: a client must
            // not rely on seeing its PUBACK last (nor first: the response may be delayed).
            DeviceOriginated::TwinGet { rid } => {
                if self.acknowledge(&publish).await == Flow::Close {
                    return Flow::Close;
                }
                return self.on_twin_get(&rid).await;
            }
            DeviceOriginated::TwinReportedPatch { rid } => {
                if self.acknowledge(&publish).await == Flow::Close {
                    return Flow::Close;
                }
                return self.on_reported_patch(&rid, &publish.payload).await;
            }
            DeviceOriginated::MethodResponse { status, rid } => {
                self.broker.methods.complete(&self.identity, &rid, status, &publish.payload);
                Flow::Continue
            }
        };
        if handled == Flow::Close {
            return Flow::Close;
        }
        // Acknowledged after handling and after the store committed it, so a client that saw its
        // PUBACK finds its telemetry in the event log, even after a kill -9 of the emulator; the
        // wait for the commit is the PUBACK task's, so this connection reads on meanwhile.
        self.acknowledge_once_stored(&publish).await
    }

    /// A twin request's PUBACK: the request stored nothing, so it waits for no commit, only for the
    /// PUBACKs of the earlier PUBLISHes; it is queued before the request's answer.
    async fn acknowledge(&self, publish: &Publish) -> Flow {
        match (&self.acks, publish.qos) {
            (Some(acks), QoS::AtLeastOnce) => open_if(acks.in_order(publish.pkid).await),
            _ => self.puback(publish).await,
        }
    }

    /// The PUBACK of a PUBLISH whose effects were stored: queued to go once they are on disk.
    async fn acknowledge_once_stored(&self, publish: &Publish) -> Flow {
        match (&self.acks, self.broker.hub.flush_point(), publish.qos) {
            (Some(acks), Some(point), QoS::AtLeastOnce) => open_if(acks.after_commit(publish.pkid, point).await),
            (_, _, QoS::AtLeastOnce) => self.puback(publish).await,
            _ => {
                // No PUBACK to queue (QoS 0): waiting for the commit here keeps a flood of them from
                // outrunning the store, as the bounded PUBACK queue does for QoS 1.
                self.broker.hub.flushed().await;
                Flow::Continue
            }
        }
    }

    /// Answers a QoS 1 PUBLISH now (QoS 0 has no answer).
    async fn puback(&self, publish: &Publish) -> Flow {
        match publish.qos {
            QoS::AtLeastOnce => self.send(Packet::PubAck(PubAck::new(publish.pkid))).await,
            _ => Flow::Continue,
        }
    }

    fn on_telemetry(&self, sender: Identity, bag: PropertyBag, body: Bytes) -> Flow {
        if sender != self.identity {
            log::info!("mqtt: {} published telemetry as {sender}; closing", self.identity);
            return Flow::Close;
        }
        if body.len() > MAX_TELEMETRY_BYTES {
            log::info!("mqtt: {} sent {} bytes of telemetry (limit {MAX_TELEMETRY_BYTES}); closing", self.identity, body.len());
            return Flow::Close;
        }
        let hub = &self.broker.hub;
        for target in hub.route(&sender, &bag, &body) {
            if let RouteTarget::ModuleInput { device_id, module_id, input_name } = target {
                // Edge hub stamps the sender's identity on routed copies.
                let mut properties = bag.clone();
                properties.connection_device_id = Some(sender.device_id.clone());
                properties.connection_module_id = sender.module_id.clone();
                let copy = crate::hub::DeviceBoundMessage { body: body.clone(), properties };
                match self.broker.deliver_input(&device_id, &module_id, &input_name, copy) {
                    Ok(true) => {}
                    Ok(false) => log::debug!("mqtt: route from {sender} to {device_id}/{module_id} input {input_name}: kept until the target takes it"),
                    Err(e) => log::info!("mqtt: route from {sender} to {device_id}/{module_id} input {input_name}: dropped: {}", e.message),
                }
            }
        }
        hub.record_telemetry(TelemetryRecord {
            device_id: sender.device_id,
            module_id: sender.module_id,
            body,
            properties: bag,
        });
        Flow::Continue
    }

    async fn on_twin_get(&self, rid: &str) -> Flow {
        let answer = match self.broker.hub.check_throttle(Operation::TwinRead).and_then(|()| self.broker.hub.twin_properties(&self.identity)) {
            Ok(twin) => (200, None, json_bytes(&twin)),
            Err(e) => twin_error(&e),
        };
        self.twin_response(rid, answer).await
    }

    async fn on_reported_patch(&self, rid: &str, body: &[u8]) -> Flow {
        if let Err(e) = self.broker.hub.check_throttle(Operation::TwinUpdate) {
            return self.twin_response(rid, twin_error(&e)).await;
        }
        let answer = match serde_json::from_slice::<serde_json::Value>(body) {
            Err(_) => twin_error(&TwinError { status: 400, code: 400006, message: "reported patch is not valid JSON".into() }),
            Ok(patch) => match self.broker.hub.patch_reported(&self.identity, &patch) {
                Ok(version) => {
                    // The 204 acknowledges the write: only once it is on disk.
                    self.broker.hub.flushed().await;
                    (204, Some(version), Bytes::new())
                }
                Err(e) => twin_error(&e),
            },
        };
        self.twin_response(rid, answer).await
    }

    async fn twin_response(&self, rid: &str, (status, version, body): (u16, Option<u64>, Bytes)) -> Flow {
        let topic = topics::twin_response_topic(status, rid, version);
        let response = Packet::Publish(Publish::from_bytes(topic, QoS::AtMostOnce, body));
        let timing = self.broker.timing();
        if timing.is_instant() {
            return self.send(response).await;
        }
        // Delayed on a task of its own, so this connection keeps reading meanwhile (and answers
        // with jitter may overtake each other, as they can on IoT Hub).
        let (outbound, delay) = (self.outbound.clone(), timing.delay());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tokio::time::timeout(STALL_TIMEOUT, outbound.send(response)).await;
        });
        Flow::Continue
    }

    async fn on_subscribe(&self, subscribe: Subscribe) -> Flow {
        let sessions = &self.broker.sessions;
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        for filter in &subscribe.filters {
            if !acl::may_subscribe(&self.identity, &filter.path) {
                log::info!("mqtt: {} may not subscribe to {:?}", self.identity, filter.path);
                codes.push(SubscribeReasonCode::Failure);
            } else if !sessions.subscribe(&self.identity, &filter.path) {
                log::info!("mqtt: {} holds too many subscriptions; refused {:?}", self.identity, filter.path);
                codes.push(SubscribeReasonCode::Failure);
            } else {
                // IoT Hub grants at most QoS 1.
                let granted = if filter.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                codes.push(SubscribeReasonCode::Success(granted));
            }
        }
        let flow = self.send(Packet::SubAck(SubAck::new(subscribe.pkid, codes))).await;
        // After the SUBACK, so the client knows the subscription before the first message.
        self.deliver_pending();
        flow
    }

    async fn on_unsubscribe(&self, unsubscribe: Unsubscribe) -> Flow {
        for filter in &unsubscribe.topics {
            self.broker.sessions.unsubscribe(&self.identity, filter);
        }
        self.send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid))).await
    }

    /// Sends the C2D (device) or input (module) messages waiting for this client, now that it
    /// connected or subscribed; whatever cannot go out stays pending.
    pub(super) fn deliver_pending(&self) {
        self.broker.deliver_pending(&self.identity);
    }
}

/// Goes on while `queued`; closes the connection when its PUBACKs can no longer be queued.
fn open_if(queued: bool) -> Flow {
    if queued {
        Flow::Continue
    } else {
        Flow::Close
    }
}

fn json_bytes(value: &serde_json::Value) -> Bytes {
    serde_json::to_vec(value).unwrap_or_default().into()
}

/// IoT Hub's twin error body over MQTT: status in the topic, details as JSON.
fn twin_error(e: &TwinError) -> (u16, Option<u64>, Bytes) {
    let body = ironhub_protocol::hub_error::mqtt_body(e.code, &e.message);
    (e.status, None, json_bytes(&body))
}
