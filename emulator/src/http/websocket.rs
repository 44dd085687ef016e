//! Owns the HTTP side of the WebSocket transports on 443: answering the upgrade with
//! `101 Switching Protocols` and handing the upgraded stream over: `GET /$iothub/websocket` with
//! subprotocol `mqtt` to the MQTT broker, with `AMQPWSB10` (the service SDKs) and
//! `GET /$servicebus/websocket` (the Event Hubs clients) to the AMQP server.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::response::Reply;
use crate::hub::error::HubError;
use crate::amqp::AmqpServer;
use crate::mqtt::Broker;

pub const PATH: &str = "/$iothub/websocket";
/// Where the Event Hubs clients open AMQP over WebSockets.
pub const SERVICEBUS_PATH: &str = "/$servicebus/websocket";
const AMQP_SUBPROTOCOL: &str = "AMQPWSB10";

/// True for a WebSocket upgrade request on the IoT Hub or Service Bus path.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    // uamqp (Python azure-iot-hub over WebSockets) asks for `/$servicebus/websocket/`.
    matches!(req.uri().path().trim_end_matches('/'), PATH | SERVICEBUS_PATH)
        && req.method() == http::Method::GET
        && req.headers().get(http::header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the handshake and, once hyper has switched protocols, serves MQTT or AMQP on the stream.
pub fn upgrade(
    mut req: Request<hyper::body::Incoming>,
    broker: Arc<Broker>,
    amqp: Arc<AmqpServer>,
    peer_chain: Vec<Vec<u8>>,
) -> Result<Reply, HubError> {
    let key = req
        .headers()
        .get(http::header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| HubError::invalid("Sec-WebSocket-Key is missing"))?
        .as_bytes()
        .to_vec();
    let offers = |name: &str| {
        req.headers()
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case(name))
    };
    let subprotocol = if req.uri().path() == PATH && offers("mqtt") {
        "mqtt"
    } else if offers(AMQP_SUBPROTOCOL) {
        AMQP_SUBPROTOCOL
    } else {
        return Err(HubError::invalid("The WebSocket subprotocol must be mqtt or AMQPWSB10"));
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) if subprotocol == "mqtt" => broker.serve_websocket(TokioIo::new(upgraded), peer_chain).await,
            Ok(upgraded) => amqp.serve_websocket(TokioIo::new(upgraded)).await,
            Err(e) => log::warn!("http: websocket upgrade failed: {e}"),
        }
    });
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = reply.headers_mut();
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(subprotocol));
    let accept = HeaderValue::from_str(&derive_accept_key(&key)).map_err(|_| HubError::invalid("bad Sec-WebSocket-Key"))?;
    headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(reply)
}
