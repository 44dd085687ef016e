//! The HTTPS listener (default port 443): TLS (client certificates requested, never required),
//! HTTP/1.1 with hyper, and dispatch to the service API (`service`), the control API
//! (`control`) and the MQTT-over-WebSocket upgrade (`websocket`).
//!
//! - `request`: decoding a request. `response`: JSON replies and the IoT Hub error format.

pub mod control;
pub mod request;
pub mod response;
pub mod service;
pub mod websocket;

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::hub::error::{HubError, NOT_FOUND};
use crate::hub::Hub;
use crate::mqtt::Broker;
use request::ApiRequest;
use response::Reply;

/// What every handler works on.
pub struct Context {
    pub hub: Arc<Hub>,
    pub broker: Arc<Broker>,
    pub dps: Arc<crate::dps::Dps>,
    pub files: Arc<crate::files::Files>,
    /// The AMQP server, for AMQP over WebSockets and the Event Hub endpoint's consumer groups.
    pub amqp: Arc<crate::amqp::AmqpServer>,
    pub limits: HttpLimits,
}

/// A client that opens a socket and never finishes the handshake must not hold a task for ever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What an HTTPS peer may hold of the emulator: connections at once, and how long it may take to
/// send a request. Defaults fit real clients; tests shrink them to prove each bound holds.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections served at once (service API, control API, MQTT over WebSockets); at the cap the
    /// listener stops accepting (the kernel's backlog holds newcomers) until one ends.
    pub max_connections: usize,
    /// A client that connects and never sends a request head is cut off after this long.
    pub header_read_timeout: Duration,
    /// A client that sends its head and then trickles (or withholds) the body gets a 400 after this long.
    pub body_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: request::BODY_READ_TIMEOUT,
        }
    }
}

impl Context {
    /// A context with an in-memory provisioning service and file store of its own, for driving
    /// [`handle`] without a listener (the `http_request` fuzz target).
    pub fn in_memory(hub: Arc<Hub>, broker: Arc<Broker>) -> std::io::Result<Context> {
        let dps = crate::dps::Dps::new(hub.clone(), None)?;
        broker.attach_dps(dps.clone());
        let files = crate::files::Files::new(hub.hostname().to_owned(), None);
        let amqp = crate::amqp::AmqpServer::new(
            hub.clone(),
            broker.clone(),
            crate::amqp::AmqpLimits::default(),
            crate::amqp::eventhub::EventHubEndpoint::new(hub.clone()),
        );
        Ok(Context { hub, broker, dps, files, amqp, limits: HttpLimits::default() })
    }
}

/// Accepts connections until the listener fails or this future is dropped (aborted); each
/// connection gets its own task, and dropping the loop ends them all with it.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, ctx: Arc<Context>) {
    let mut connections = tokio::task::JoinSet::new();
    let limits = ctx.limits;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        // Reap finished connections so the set does not grow with every client ever seen.
        while connections.try_join_next().is_some() {}
        // At the cap, stop accepting (the kernel's backlog holds newcomers) until one ends.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                log::warn!("http: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        connections.spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return log::debug!("http: TLS handshake with {peer} failed: {e}"),
                Err(_) => return log::debug!("http: TLS handshake with {peer} timed out"),
            };
            let peer_chain: Vec<Vec<u8>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
                .unwrap_or_default();
            let service = service_fn(move |req| {
                let ctx = ctx.clone();
                let peer_chain = peer_chain.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(ctx, req, peer_chain).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                log::debug!("http: connection from {peer} ended: {e}");
            }
        });
    }
}

/// Answers one request (public so the `http_request` fuzz target drives the same code as a client).
pub async fn handle(ctx: Arc<Context>, req: http::Request<hyper::body::Incoming>, peer_chain: Vec<Vec<u8>>) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let result = if websocket::is_upgrade(&req) {
        websocket::upgrade(req, ctx.broker.clone(), ctx.amqp.clone(), peer_chain)
    } else {
        dispatch(&ctx, req, peer_chain).await
    };
    // Nothing is acknowledged before it is on disk: a kill -9 after this answer loses nothing.
    if method != http::Method::GET {
        ctx.hub.flushed().await;
    }
    match result {
        Ok(reply) => {
            log::debug!("http: {method} {path} → {}", reply.status());
            reply
        }
        Err(e) => {
            log::info!("http: {method} {path} → {} {}", e.status, e.name());
            response::error(&e)
        }
    }
}

async fn dispatch(ctx: &Context, req: http::Request<hyper::body::Incoming>, peer_chain: Vec<Vec<u8>>) -> Result<Reply, HubError> {
    let mut req = ApiRequest::read(req, ctx.limits.body_read_timeout).await?;
    req.peer_chain = peer_chain;
    if let Some(reply) = crate::dps::rest::route(&ctx.dps, &req) {
        return Ok(reply);
    }
    if let Some(reply) = crate::files::http::route(&ctx.hub, &ctx.files, &req) {
        return Ok(reply);
    }
    if let Some(result) = control::route(ctx, &req).await {
        return result;
    }
    if let Some(result) = service::route(ctx, &req).await {
        return result;
    }
    Err(HubError::new(NOT_FOUND, format!("No such resource: /{}", req.segments.join("/"))))
}
