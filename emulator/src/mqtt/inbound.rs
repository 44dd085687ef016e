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

use super::connection::{packet_kind, STALL_TIMEOUT};
use super::{acl, Broker};
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
    pub(super) outbound: mpsc::Sender<Packet>,
}

impl Session {
    pub(super) async fn handle(&self, packet: Packet) -> Flow {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish).await,
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe).await,
            Packet::Unsubscribe(unsubscribe) => self.on_unsubscribe(unsubscribe).await,
            Packet::PingReq => self.send(Packet::PingResp).await,
            // Hub → client QoS 1 deliveries are fire-and-forget for the emulator: the ack is
            // accepted and needs no bookkeeping.
            Packet::PubAck(_) => Flow::Continue,
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
                self.on_telemetry(Identity { device_id, module_id }, bag, publish.payload)
            }
            DeviceOriginated::TwinGet { rid } => self.on_twin_get(&rid).await,
            DeviceOriginated::TwinReportedPatch { rid } => self.on_reported_patch(&rid, &publish.payload).await,
            DeviceOriginated::MethodResponse { status, rid } => {
                self.broker.methods.complete(&self.identity, &rid, status, &publish.payload);
                Flow::Continue
            }
        };
        if handled == Flow::Close {
            return Flow::Close;
        }
        // Acknowledge after handling, so a client that saw its PUBACK finds its telemetry
        // in the event log.
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
        for target in hub.route(&sender, bag.output_name.as_deref()) {
            if let RouteTarget::ModuleInput { device_id, module_id, input_name } = target {
                // Edge hub stamps the sender's identity on routed copies.
                let mut properties = bag.clone();
                properties.connection_device_id = Some(sender.device_id.clone());
                properties.connection_module_id = sender.module_id.clone();
                let copy = crate::hub::DeviceBoundMessage { body: body.clone(), properties };
                if !self.broker.deliver_input(&device_id, &module_id, &input_name, copy) {
                    log::debug!("mqtt: route from {sender} to {device_id}/{module_id} input {input_name}: target offline, message dropped");
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
        let answer = match self.broker.hub.twin_properties(&self.identity) {
            Ok(twin) => (200, None, json_bytes(&twin)),
            Err(e) => twin_error(&e),
        };
        self.twin_response(rid, answer).await
    }

    async fn on_reported_patch(&self, rid: &str, body: &[u8]) -> Flow {
        let answer = match serde_json::from_slice::<serde_json::Value>(body) {
            Err(_) => twin_error(&TwinError { status: 400, code: 400006, message: "reported patch is not valid JSON".into() }),
            Ok(patch) => match self.broker.hub.patch_reported(&self.identity, &patch) {
                Ok(version) => (204, Some(version), Bytes::new()),
                Err(e) => twin_error(&e),
            },
        };
        self.twin_response(rid, answer).await
    }

    async fn twin_response(&self, rid: &str, (status, version, body): (u16, Option<u64>, Bytes)) -> Flow {
        let topic = topics::twin_response_topic(status, rid, version);
        self.send(Packet::Publish(Publish::from_bytes(topic, QoS::AtMostOnce, body))).await
    }

    async fn on_subscribe(&self, subscribe: Subscribe) -> Flow {
        let sessions = &self.broker.sessions;
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        for filter in &subscribe.filters {
            if acl::may_subscribe(&self.identity, &filter.path) {
                sessions.subscribe(&self.identity, &filter.path);
                // IoT Hub grants at most QoS 1.
                let granted = if filter.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                codes.push(SubscribeReasonCode::Success(granted));
            } else {
                log::info!("mqtt: {} may not subscribe to {:?}", self.identity, filter.path);
                codes.push(SubscribeReasonCode::Failure);
            }
        }
        let flow = self.send(Packet::SubAck(SubAck::new(subscribe.pkid, codes))).await;
        // After the SUBACK, so the client knows the subscription before the first message.
        self.drain_pending_c2d();
        flow
    }

    async fn on_unsubscribe(&self, unsubscribe: Unsubscribe) -> Flow {
        for filter in &unsubscribe.topics {
            self.broker.sessions.unsubscribe(&self.identity, filter);
        }
        self.send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid))).await
    }

    /// Sends the C2D messages the hub queued while this device could not take them, in order,
    /// if it is now subscribed; whatever cannot go out stays queued.
    pub(super) fn drain_pending_c2d(&self) {
        if self.identity.module_id.is_some() {
            return;
        }
        let device_id = &self.identity.device_id;
        let probe = topics::c2d_topic(device_id, &PropertyBag::default());
        if self.broker.sessions.subscribed_connection(&self.identity, &probe).is_none() {
            return;
        }
        let hub = &self.broker.hub;
        let mut pending = hub.take_pending_c2d(device_id).into_iter();
        for msg in pending.by_ref() {
            if let Err(msg) = self.broker.deliver_c2d(device_id, msg) {
                let _ = hub.queue_c2d(device_id, msg);
                break;
            }
        }
        for msg in pending {
            let _ = hub.queue_c2d(device_id, msg);
        }
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
