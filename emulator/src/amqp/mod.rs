//! Owns the emulator's AMQP 1.0 side, as IoT Hub serves it on 5671 (TLS) and on 443 (AMQP over
//! WebSockets): accepting connections within bounds, SASL, and handing every attached link to the
//! node its address names ([`route_link`]). The nodes live in submodules: `cbs` (`$cbs` put-token),
//! `eventhub` (the Event Hub-compatible endpoint and its `$management` node).
//!
//! The protocol engine is `fe2o3-amqp`'s acceptor; this module decides what is allowed.

pub mod cbs;
pub mod eventhub;
pub mod framing;
pub mod header;
pub mod node;
pub mod sasl;
pub mod service;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SessionAcceptor, SupportedSenderSettleModes,
};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp_types::definitions::{self, AmqpError, ErrorCondition, SenderSettleMode};
use fe2o3_amqp_types::messaging::TargetArchetype;
use fe2o3_amqp_types::performatives::Attach;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::hub::Hub;

pub use cbs::Claims;

/// Bounds on AMQP peers, like the MQTT side's: what one peer may hold open, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct AmqpLimits {
    /// Largest frame accepted (and announced in OPEN); a bigger one closes the connection.
    pub max_frame_size: u32,
    /// Connections open at once; one more is closed right after TCP accept.
    pub max_connections: usize,
    /// Sessions (channels) per connection.
    pub max_sessions: u16,
    /// Links attached at once per session; one more is refused with `amqp:resource-limit-exceeded`.
    pub max_links_per_session: usize,
    /// A connection silent for this long is closed (announced in OPEN so peers send empty frames).
    pub idle_timeout: Duration,
    /// TLS, the protocol header, SASL and OPEN must be done within this.
    pub handshake_timeout: Duration,
}

impl Default for AmqpLimits {
    fn default() -> Self {
        AmqpLimits {
            max_frame_size: 256 * 1024,
            max_connections: 1000,
            max_sessions: 32,
            max_links_per_session: 64,
            idle_timeout: Duration::from_secs(240),
            handshake_timeout: Duration::from_secs(20),
        }
    }
}

/// The AMQP server of one emulator.
pub struct AmqpServer {
    hub: Arc<Hub>,
    /// Delivers the service's C2D messages to connected devices (`service`).
    broker: Arc<crate::mqtt::Broker>,
    limits: AmqpLimits,
    connections: Arc<Semaphore>,
    eventhub: Arc<eventhub::EventHubEndpoint>,
}

/// What the nodes of one connection share: its CBS claims and the reply links of its
/// request/response nodes.
pub struct Connection {
    pub server: Arc<AmqpServer>,
    pub claims: Claims,
    pub replies: node::ReplyLinks,
}

impl AmqpServer {
    pub fn new(
        hub: Arc<Hub>,
        broker: Arc<crate::mqtt::Broker>,
        limits: AmqpLimits,
        eventhub: Arc<eventhub::EventHubEndpoint>,
    ) -> Arc<AmqpServer> {
        Arc::new(AmqpServer { hub, broker, connections: Arc::new(Semaphore::new(limits.max_connections)), limits, eventhub })
    }

    pub fn broker(&self) -> &Arc<crate::mqtt::Broker> {
        &self.broker
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn eventhub(&self) -> &Arc<eventhub::EventHubEndpoint> {
        &self.eventhub
    }

    /// The 5671 listener: TLS, then AMQP.
    pub async fn serve_tls(self: Arc<Self>, listener: TcpListener, tls: TlsAcceptor, cap: crate::tls_listener::ConnectionCap) {
        let handshake = self.limits.handshake_timeout;
        crate::tls_listener::serve("amqp", listener, tls, handshake, cap, move |stream| self.clone().serve_stream(stream)).await
    }

    /// AMQP over WebSockets (443, after the HTTP upgrade): each binary message carries AMQP bytes.
    pub async fn serve_websocket<S>(self: Arc<Self>, upgraded: S)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        // A frame may span messages; a message is bounded by one frame plus slack.
        let max_message = self.limits.max_frame_size as usize + 1024;
        let stream = crate::mqtt::websocket::WsByteStream::server_with_limit(upgraded, max_message).await;
        self.serve_stream(stream).await
    }

    /// Serves one AMQP connection on an established stream (TLS, or a WebSocket's bytes).
    pub async fn serve_stream<Io>(self: Arc<Self>, io: Io)
    where
        Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Ok(_permit) = self.connections.clone().try_acquire_owned() else {
            log::warn!("amqp: connection refused: {} connections open", self.limits.max_connections);
            return;
        };
        let claims = Claims::default();
        let io = framing::FullPerformatives::new(io);
        let accepting = async {
            let (header, io) = header::read(io).await.map_err(fe2o3_amqp::connection::OpenError::Io)?;
            let acceptor = ConnectionAcceptor::builder()
                .container_id(self.hub.hostname().to_owned())
                .max_frame_size(self.limits.max_frame_size)
                .channel_max(self.limits.max_sessions.saturating_sub(1))
                .idle_time_out(self.limits.idle_timeout.as_millis() as u32);
            if header::is_sasl(&header) {
                acceptor.sasl_acceptor(sasl::HubSasl::new(self.hub.clone(), claims.clone())).build().accept(io).await
            } else {
                // No SASL layer (Node.js azure-iothub): the peer authenticates through $cbs only.
                acceptor.build().accept(io).await
            }
        };
        let mut connection = match tokio::time::timeout(self.limits.handshake_timeout, accepting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => {
                log::debug!("amqp: connection refused during open: {e}");
                return;
            }
            Err(_) => {
                log::debug!("amqp: connection open timed out");
                return;
            }
        };
        let conn = Arc::new(Connection { server: self.clone(), claims, replies: node::ReplyLinks::default() });
        // handle-max announced too: the pure-Python Azure stack compares against it.
        let handle_max = self.limits.max_links_per_session.saturating_sub(1).min(u32::MAX as usize) as u32;
        let session_acceptor = SessionAcceptor::builder().handle_max(handle_max).build();
        while let Some(incoming) = connection.next_incoming_session().await {
            match session_acceptor.accept_incoming_session(incoming, &mut connection).await {
                Ok(session) => {
                    tokio::spawn(serve_session(conn.clone(), session));
                }
                Err(e) => {
                    log::debug!("amqp: session refused: {e}");
                }
            }
        }
        let _ = connection.close().await;
    }
}

/// Accepts the links of one session, within the per-session cap, and routes each by address.
async fn serve_session(conn: Arc<Connection>, mut session: ListenerSessionHandle) {
    let link_acceptor = LinkAcceptor::builder().build();
    let service_acceptor = service::link_acceptor();
    // Events go out pre-settled, as an Event Hub sends them: its consumers track positions
    // themselves and the pure-Python one never settles a delivery.
    let settled_acceptor = LinkAcceptor::builder()
        .supported_sender_settle_modes(SupportedSenderSettleModes::Settled)
        .fallback_sender_settle_mode(SenderSettleMode::Settled)
        .build();
    let active = Arc::new(AtomicUsize::new(0));
    while let Some(attach) = session.next_incoming_attach().await {
        let over_cap = active.load(Ordering::SeqCst) >= conn.server.limits.max_links_per_session;
        let name = attach.name.clone();
        let is_partition = attach.role == definitions::Role::Receiver
            && link_address(&attach).is_some_and(|a| eventhub::is_partition_address(address_path(&a)));
        let for_service = link_address(&attach).is_some_and(|a| service::service_link(&a).is_some());
        let acceptor = match (is_partition, for_service) {
            (true, _) => &settled_acceptor,
            (_, true) => &service_acceptor,
            _ => &link_acceptor,
        };
        let link = match acceptor.accept_incoming_attach(attach.clone(), &mut session).await {
            Ok(link) => link,
            Err(e) => {
                log::debug!("amqp: link '{name}' refused: {e}");
                continue;
            }
        };
        if over_cap {
            let limit = conn.server.limits.max_links_per_session;
            tokio::spawn(refuse(link, AmqpError::ResourceLimitExceeded, format!("at most {limit} links per session")));
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let conn = conn.clone();
        let active = active.clone();
        tokio::spawn(async move {
            route_link(conn, attach, link).await;
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
    let _ = session.end().await;
}

/// The address a link attaches to: the target's for links the peer sends on, the source's for
/// links it receives from.
pub fn link_address(attach: &Attach) -> Option<String> {
    match attach.role {
        definitions::Role::Sender => target_address(attach),
        definitions::Role::Receiver => attach.source.as_ref().and_then(|s| s.address.clone()),
    }
}

/// The attach's target address (where the peer sends, or for a receiving peer, its own address).
pub fn target_address(attach: &Attach) -> Option<String> {
    match attach.target.as_deref() {
        Some(TargetArchetype::Target(t)) => t.address.clone(),
        #[allow(unreachable_patterns)] // transactions' coordinator target, with that feature
        _ => None,
    }
}

/// The address without scheme and host (`amqps://host/$cbs` → `$cbs`), as the SDKs send either.
pub fn address_path(address: &str) -> &str {
    let rest = match address.split_once("://") {
        Some((_, after_scheme)) => after_scheme.split_once('/').map_or("", |(_, path)| path),
        None => address,
    };
    rest.trim_start_matches('/')
}

/// Dispatches one attached link to the node its address names; one arm per address family.
/// Every node but `$cbs` checks the connection's claims before it serves anything.
pub async fn route_link(conn: Arc<Connection>, attach: Attach, link: LinkEndpoint) {
    let address = link_address(&attach).unwrap_or_default();
    let path = address_path(&address).to_owned();
    match (path.as_str(), link) {
        (cbs::ADDRESS, LinkEndpoint::Receiver(receiver)) => cbs::serve_requests(conn, receiver).await,
        (cbs::ADDRESS, LinkEndpoint::Sender(sender)) => node::serve_replies(conn, cbs::ADDRESS, &attach, sender).await,
        (eventhub::MANAGEMENT, LinkEndpoint::Receiver(receiver)) => eventhub::serve_management(conn, receiver).await,
        (eventhub::MANAGEMENT, LinkEndpoint::Sender(sender)) => {
            node::serve_replies(conn, eventhub::MANAGEMENT, &attach, sender).await
        }
        (p, LinkEndpoint::Sender(sender)) if eventhub::is_partition_address(p) => {
            eventhub::serve_partition(conn, &attach, p, sender).await
        }
        (p, link) if service::service_link(p).is_some() => service::route(conn, &address, p, link).await,
        (_, link) => refuse(link, AmqpError::NotFound, format!("The messaging entity '{address}' could not be found.")).await,
    }
}

/// Detaches a link with an AMQP error, as IoT Hub refuses an attach.
pub async fn refuse(link: LinkEndpoint, condition: AmqpError, description: String) {
    let error = definitions::Error::new(ErrorCondition::AmqpError(condition), Some(description), None);
    let closing = async move {
        match link {
            LinkEndpoint::Sender(sender) => close_sender(sender, error).await,
            LinkEndpoint::Receiver(receiver) => close_receiver(receiver, error).await,
        }
    };
    // The peer may never answer the detach; the link is gone for us either way.
    let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
}

async fn close_sender(sender: Sender, error: definitions::Error) {
    let _ = sender.close_with_error(error).await;
}

async fn close_receiver(receiver: Receiver, error: definitions::Error) {
    let _ = receiver.close_with_error(error).await;
}

/// An `amqp:unauthorized-access` error for a link whose address the connection holds no claim for.
pub async fn refuse_unauthorized(link: LinkEndpoint, address: &str) {
    refuse(link, AmqpError::UnauthorizedAccess, format!("Unauthorized: no valid token for '{address}' was put on $cbs"))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_paths() {
        assert_eq!(address_path("$cbs"), "$cbs");
        assert_eq!(address_path("amqps://hub.example/$cbs"), "$cbs");
        assert_eq!(address_path("amqps://h:5671/hub/ConsumerGroups/$Default/Partitions/0"), "hub/ConsumerGroups/$Default/Partitions/0");
        assert_eq!(address_path("/messages/devicebound"), "messages/devicebound");
    }
}
