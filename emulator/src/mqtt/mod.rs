//! The device-facing MQTT 3.1.1 broker: what an IoT Hub does on port 8883 and on
//! `wss://host/$iothub/websocket`.
//!
//! Owns the connection lifecycle (CONNECT authentication through [`Hub`], keep-alive, token
//! expiry, "second connection wins"), the persistent session of every identity
//! (subscriptions survive reconnects when clean session is false), the topic ACL, and the
//! hub → device deliveries (C2D, module inputs, desired-property patches, direct methods).
//! Hub state (registry, twins, event log, C2D queues, routes) lives in `crate::hub`; this
//! module only moves messages between sockets and that state.
//!
//! - `acl`: which topics an identity may publish and subscribe to (pure functions).
//! - `framing`: packet I/O over any byte stream with the `rumqttc::mqttbytes::v4` codec.
//! - `sessions`: the identity → session table and the outbound queue of each live connection.
//! - `connection`: one client connection from CONNECT to close.
//! - `inbound`: what the hub does with each PUBLISH a client sends.
//! - `acks`: a connection's PUBACKs, each sent after the store's commit that holds its PUBLISH.
//! - `methods`: direct-method requests waiting for their device's response.
//! - `timing`: the optional latency and jitter added to every hub → device answer.
//! - `websocket`: MQTT over WebSocket binary frames, adapted to a byte stream.

mod acks;
mod acl;
mod connection;
pub(crate) mod framing;
mod inbound;
mod methods;
mod sessions;
mod timing;
pub(crate) mod websocket;

use std::sync::{Arc, Weak};
use std::time::Duration;

use rumqttc::mqttbytes::v4::Publish;
use rumqttc::mqttbytes::QoS;

use crate::hub::error;
use crate::hub::{DeviceBoundMessage, Hub, HubError};
use crate::identity::Identity;
use ironhub_protocol::limits;
use ironhub_protocol::topics::{self, PropertyBag};

pub use methods::{MethodError, MethodResult};
pub use timing::Timing;
use methods::PendingMethods;
use sessions::Sessions;

/// The broker, shared as `Arc<Broker>` by the listeners and the HTTPS side.
pub struct Broker {
    hub: Arc<Hub>,
    sessions: Sessions,
    methods: PendingMethods,
    timing: Timing,
    /// Itself, for deliveries that run later (after the configured latency).
    this: Weak<Broker>,
    /// The provisioning service sharing this listener (registrations are told apart by username).
    dps: std::sync::OnceLock<Arc<crate::dps::Dps>>,
}

impl Broker {
    pub fn new(hub: Arc<Hub>) -> Arc<Broker> {
        Self::with_timing(hub, Timing::default())
    }

    /// A broker that waits `timing` before every answer it sends a device.
    pub fn with_timing(hub: Arc<Hub>, timing: Timing) -> Arc<Broker> {
        Arc::new_cyclic(|this| Broker {
            hub,
            sessions: Sessions::default(),
            methods: PendingMethods::default(),
            timing,
            this: this.clone(),
            dps: Default::default(),
        })
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Serves DPS registrations on this listener from now on (once; later calls are ignored).
    pub fn attach_dps(&self, dps: Arc<crate::dps::Dps>) {
        let _ = self.dps.set(dps);
    }

    /// Accept loop for MQTT over TLS (8883). Every accepted socket gets its own task, so a
    /// slow TLS handshake never holds up the next client.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        cap: crate::tls_listener::ConnectionCap,
    ) {
        crate::tls_listener::serve("mqtt", listener, acceptor, connection::HANDSHAKE_TIMEOUT, cap, move |tls| {
            let chain = peer_chain(tls.get_ref().1);
            self.clone().serve_connection(tls, chain)
        })
        .await
    }

    /// Serves one already-established byte stream until the client goes away or is dropped.
    pub async fn serve_connection<S>(self: Arc<Self>, stream: S, peer_chain: Vec<Vec<u8>>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        connection::serve(self, stream, peer_chain).await
    }

    /// Serves MQTT over a WebSocket the HTTPS side already upgraded (101 sent).
    pub async fn serve_websocket<S>(self: Arc<Self>, upgraded: S, peer_chain: Vec<Vec<u8>>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let stream = websocket::WsByteStream::server(upgraded).await;
        connection::serve(self, stream, peer_chain).await
    }

    pub fn is_connected(&self, id: &Identity) -> bool {
        self.sessions.connection(id).is_some()
    }

    /// Desired-property notification (QoS 0) to a connected client subscribed to desired patches.
    /// Nothing is queued for offline clients: they resync with a twin GET after connecting.
    /// True when it went out.
    pub fn notify_desired(&self, id: &Identity, body_with_version: &serde_json::Value, version: u64) -> bool {
        let topic = topics::desired_patch_topic(version);
        match self.sessions.subscribed_connection(id, &topic) {
            Some(conn) => {
                let body = serde_json::to_vec(body_with_version).unwrap_or_default();
                conn.deliver(Publish::from_bytes(topic, QoS::AtMostOnce, body.into()))
            }
            None => false,
        }
    }

    /// Accepts a C2D message for a device: it waits (persisted) until the device acknowledges it,
    /// and goes out at once when the device is connected and subscribed. `Ok(true)` when it went
    /// out now; 404001 unknown device, 403004 when 50 are already pending.
    pub fn deliver_c2d(&self, device_id: &str, msg: DeviceBoundMessage) -> Result<bool, HubError> {
        let id = Identity::device(device_id);
        let delay = self.timing.delay();
        let token = self.hub.enqueue_devicebound(&id, None, msg, delay)?;
        self.deliver_pending_after(&id, delay);
        Ok(self.hub.devicebound_sent(&id, token))
    }

    /// A C2D message from the service side (the control API, AMQP `/messages/devicebound`): checked
    /// against IoT Hub's size limit (413001), addressed (`$.to`) as IoT Hub addresses it, counted in
    /// the device's `cloudToDeviceMessageCount`, then queued as [`deliver_c2d`](Self::deliver_c2d) does.
    pub fn accept_c2d(&self, device_id: &str, mut msg: DeviceBoundMessage) -> Result<bool, HubError> {
        if msg.body.len() > limits::MAX_C2D_BYTES {
            return Err(HubError::new(
                error::MESSAGE_TOO_LARGE,
                format!("The C2D message is {} bytes; the limit is {}", msg.body.len(), limits::MAX_C2D_BYTES),
            ));
        }
        msg.properties.to = Some(format!("/devices/{device_id}/messages/devicebound"));
        let delivered = self.deliver_c2d(device_id, msg)?;
        self.hub.count_c2d(device_id);
        Ok(delivered)
    }

    /// Accepts a message for a module input (a routed copy or the control API's injection); it is
    /// kept for an offline module as IoT Edge hub keeps it. `Ok(true)` when it went out now.
    pub fn deliver_input(&self, device_id: &str, module_id: &str, input_name: &str, msg: DeviceBoundMessage) -> Result<bool, HubError> {
        let id = Identity::module(device_id, module_id);
        let delay = self.timing.delay();
        let token = self.hub.enqueue_devicebound(&id, Some(input_name.to_owned()), msg, delay)?;
        self.deliver_pending_after(&id, delay);
        Ok(self.hub.devicebound_sent(&id, token))
    }

    /// Whether the module is connected and subscribed to its inputs.
    pub fn takes_inputs(&self, device_id: &str, module_id: &str) -> bool {
        let id = Identity::module(device_id, module_id);
        self.sessions.subscribed_connection(&id, &topics::input_topic(device_id, module_id, "any", &PropertyBag::default())).is_some()
    }

    /// Sends what waits for `id` (C2D for a device, inputs for a module) and is not yet in flight on
    /// its live connection, if that connection is subscribed to it. Redeliveries carry DUP.
    /// With a configured latency this happens that much later, on a task of its own.
    pub(crate) fn deliver_pending(&self, id: &Identity) {
        self.deliver_pending_after(id, self.timing.delay());
    }

    fn deliver_pending_after(&self, id: &Identity, delay: Duration) {
        if delay.is_zero() {
            return self.deliver_pending_now(id);
        }
        let (this, id) = (self.this.clone(), id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(broker) = this.upgrade() {
                broker.deliver_pending_now(&id);
            }
        });
    }

    fn deliver_pending_now(&self, id: &Identity) {
        let probe = |input: &str| match &id.module_id {
            None => topics::c2d_topic(&id.device_id, &PropertyBag::default()),
            Some(m) => topics::input_topic(&id.device_id, m, input, &PropertyBag::default()),
        };
        let Some(conn) = self.sessions.subscribed_connection(id, &probe("any")) else { return };
        self.hub.deliver_pending(id, conn.id, |pending| {
            let topic = match (&id.module_id, &pending.input_name) {
                (Some(m), Some(input)) => topics::input_topic(&id.device_id, m, input, &pending.message.properties),
                _ => topics::c2d_topic(&id.device_id, &pending.message.properties),
            };
            let mut publish = Publish::from_bytes(topic, QoS::AtLeastOnce, pending.message.body.clone());
            publish.dup = pending.delivery_count > 0;
            conn.deliver_tracked(publish)
        });
    }

    /// Direct method: waits up to `connect_timeout` for the target to be connected and
    /// subscribed to `$iothub/methods/POST/#`, then up to `response_timeout` for its answer.
    pub async fn invoke_method(
        &self,
        id: &Identity,
        name: &str,
        payload: serde_json::Value,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<MethodResult, MethodError> {
        methods::invoke(self, id, name, payload, connect_timeout, response_timeout).await
    }

    /// Drops that identity's live connection (fault injection). The session is kept, as
    /// IoT Hub keeps it when a connection breaks.
    pub fn disconnect(&self, id: &Identity) -> bool {
        match self.sessions.connection(id) {
            Some(conn) => {
                conn.close();
                true
            }
            None => false,
        }
    }
}

/// The client's certificate chain as DER blobs, leaf first (empty without a client cert).
fn peer_chain(conn: &rustls::ServerConnection) -> Vec<Vec<u8>> {
    conn.peer_certificates()
        .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
        .unwrap_or_default()
}
