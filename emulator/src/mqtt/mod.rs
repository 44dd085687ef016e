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
//! - `methods`: direct-method requests waiting for their device's response.
//! - `websocket`: MQTT over WebSocket binary frames, adapted to a byte stream.

mod acl;
mod connection;
pub(crate) mod framing;
mod inbound;
mod methods;
mod sessions;
mod websocket;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::v4::Publish;
use rumqttc::mqttbytes::QoS;

use crate::hub::{DeviceBoundMessage, Hub};
use crate::identity::Identity;
use ironhub_protocol::topics;

pub use methods::{MethodError, MethodResult};
use methods::PendingMethods;
use sessions::Sessions;

/// The broker, shared as `Arc<Broker>` by the listeners and the HTTPS side.
pub struct Broker {
    hub: Arc<Hub>,
    sessions: Sessions,
    methods: PendingMethods,
    /// The provisioning service sharing this listener (registrations are told apart by username).
    dps: std::sync::OnceLock<Arc<crate::dps::Dps>>,
}

impl Broker {
    pub fn new(hub: Arc<Hub>) -> Arc<Broker> {
        Arc::new(Broker { hub, sessions: Sessions::default(), methods: PendingMethods::default(), dps: Default::default() })
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
    pub async fn serve_tls(self: Arc<Self>, listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Accept errors (EMFILE, ECONNABORTED) are per-socket: keep listening.
                    log::warn!("mqtt: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let broker = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(connection::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        log::debug!("mqtt: TLS handshake with {peer} failed: {e}");
                        return;
                    }
                    Err(_) => {
                        log::debug!("mqtt: TLS handshake with {peer} timed out");
                        return;
                    }
                };
                let chain = peer_chain(tls.get_ref().1);
                broker.serve_connection(tls, chain).await;
            });
        }
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
    pub fn notify_desired(&self, id: &Identity, body_with_version: &serde_json::Value, version: u64) {
        let topic = topics::desired_patch_topic(version);
        if let Some(conn) = self.sessions.subscribed_connection(id, &topic) {
            let body = serde_json::to_vec(body_with_version).unwrap_or_default();
            conn.deliver(Publish::from_bytes(topic, QoS::AtMostOnce, body.into()));
        }
    }

    /// C2D to a connected device subscribed to `devices/{d}/messages/devicebound/#`; the message
    /// comes back in `Err` when it cannot be delivered now, so the caller can queue it.
    // The message itself is the error payload (so it is not lost), hence a large `Err`.
    #[allow(clippy::result_large_err)]
    pub fn deliver_c2d(&self, device_id: &str, msg: DeviceBoundMessage) -> Result<(), DeviceBoundMessage> {
        let id = Identity::device(device_id);
        let topic = topics::c2d_topic(device_id, &msg.properties);
        match self.sessions.subscribed_connection(&id, &topic) {
            Some(conn) if conn.deliver(Publish::from_bytes(topic, QoS::AtLeastOnce, msg.body.clone())) => Ok(()),
            _ => Err(msg),
        }
    }

    /// Message to a module input (control API and routes); false when the module is not
    /// connected and subscribed to its inputs.
    pub fn deliver_input(&self, device_id: &str, module_id: &str, input_name: &str, msg: DeviceBoundMessage) -> bool {
        let id = Identity::module(device_id, module_id);
        let topic = topics::input_topic(device_id, module_id, input_name, &msg.properties);
        match self.sessions.subscribed_connection(&id, &topic) {
            Some(conn) => conn.deliver(Publish::from_bytes(topic, QoS::AtLeastOnce, msg.body)),
            None => false,
        }
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
