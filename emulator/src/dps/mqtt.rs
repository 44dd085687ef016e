//! Owns one device's registration session over MQTT: the hub's listener hands over a connection
//! whose CONNECT username has the DPS form (`{idScope}/registrations/{registrationId}/...`).
//! The session authenticates the device against the enrollments (SAS or X.509), then answers
//! `iotdps-register` and `iotdps-get-operationstatus` requests on `$dps/registrations/res/...`.
//!
//! Requests are answered in order on the connection's own task: a registration session is a
//! handful of packets, so it needs none of the hub's per-identity session machinery.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck};
use rumqttc::mqttbytes::{Protocol, QoS};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{Answer, Attested, Dps};
use crate::hub::ConnectRefusal;
use crate::mqtt::framing::{self, PacketReader};
use ironhub_protocol::dps as wire;

/// A registration that sends nothing for this long is over (DPS drops idle sessions too).
const IDLE_LIMIT: Duration = Duration::from_secs(240);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether this CONNECT is for the provisioning service rather than the hub.
pub fn is_registration(connect: &Connect) -> bool {
    connect.login.as_ref().is_some_and(|l| wire::parse_username(&l.username).is_some())
}

fn authenticate(dps: &Dps, connect: &Connect, peer_chain: &[Vec<u8>]) -> Result<Attested, ConnectReturnCode> {
    if connect.protocol != Protocol::V4 {
        return Err(ConnectReturnCode::RefusedProtocolVersion);
    }
    let login = connect.login.as_ref().ok_or(ConnectReturnCode::NotAuthorized)?;
    let (scope, registration_id) = wire::parse_username(&login.username).ok_or(ConnectReturnCode::BadUserNamePassword)?;
    if registration_id != connect.client_id {
        return Err(ConnectReturnCode::BadClientId);
    }
    let refused = |r: ConnectRefusal| match r {
        ConnectRefusal::BadUsernameOrPassword => ConnectReturnCode::BadUserNamePassword,
        ConnectRefusal::NotAuthorized => ConnectReturnCode::NotAuthorized,
        ConnectRefusal::ServerUnavailable => ConnectReturnCode::ServiceUnavailable,
    };
    if !login.password.is_empty() {
        dps.authenticate_sas(scope, registration_id, &login.password).map_err(refused)
    } else if !peer_chain.is_empty() {
        dps.authenticate_x509(scope, registration_id, peer_chain).map_err(refused)
    } else {
        Err(ConnectReturnCode::NotAuthorized)
    }
}

async fn send<W: AsyncWrite + Unpin>(out: &mut W, packets: &[Packet]) -> bool {
    let mut buf = BytesMut::new();
    for p in packets {
        framing::encode(p, &mut buf);
    }
    let write = async {
        out.write_all(&buf).await?;
        out.flush().await
    };
    matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
}

/// Serves a registration session from its CONNECT (already read) until the device leaves.
pub(crate) async fn serve<R, W>(dps: Arc<Dps>, connect: Connect, mut reader: PacketReader<R>, mut out: W, peer_chain: Vec<Vec<u8>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let who = match authenticate(&dps, &connect, &peer_chain) {
        Ok(who) => who,
        Err(code) => {
            log::info!("dps: refused registration {:?}: {code:?}", connect.client_id);
            send(&mut out, &[Packet::ConnAck(ConnAck::new(code, false))]).await;
            let _ = out.shutdown().await;
            return;
        }
    };
    log::info!("dps: registration {} connected ({:?} enrollment {})", who.registration_id, who.kind, who.enrollment_id);
    if !send(&mut out, &[Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))]).await {
        return;
    }
    loop {
        let packet = match tokio::time::timeout(IDLE_LIMIT, reader.read()).await {
            Ok(Ok(Some(packet))) => packet,
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(e)) => {
                log::info!("dps: closing registration {}: {e}", who.registration_id);
                break;
            }
        };
        let replies = match packet {
            Packet::Subscribe(sub) => {
                let codes = sub
                    .filters
                    .iter()
                    .map(|f| {
                        if f.path == wire::RESPONSE_FILTER {
                            SubscribeReasonCode::Success(if f.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce })
                        } else {
                            SubscribeReasonCode::Failure
                        }
                    })
                    .collect();
                vec![Packet::SubAck(SubAck::new(sub.pkid, codes))]
            }
            Packet::Unsubscribe(unsub) => vec![Packet::UnsubAck(UnsubAck::new(unsub.pkid))],
            Packet::Publish(publish) => match on_publish(&dps, &who, &publish) {
                Some(answer) => answer,
                None => break,
            },
            Packet::PingReq => vec![Packet::PingResp],
            Packet::PubAck(_) => continue,
            Packet::Disconnect => break,
            _ => break,
        };
        if !send(&mut out, &replies).await {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), out.shutdown()).await;
    log::info!("dps: registration {} disconnected", who.registration_id);
}

/// PUBACK (for QoS 1) and the response publish; `None` closes the connection (a topic that is
/// not a DPS request, as DPS does).
fn on_publish(dps: &Dps, who: &Attested, publish: &Publish) -> Option<Vec<Packet>> {
    let Some(request) = wire::parse_request_topic(&publish.topic) else {
        log::info!("dps: registration {} published to {:?}; closing", who.registration_id, publish.topic);
        return None;
    };
    let body = || -> Option<Value> {
        let text = std::str::from_utf8(&publish.payload).ok()?;
        if text.trim().is_empty() {
            Some(Value::Object(Default::default()))
        } else {
            serde_json::from_str(text).ok()
        }
    };
    let (request_id, answer) = match request {
        wire::Request::Register { request_id } => {
            let answer = match body() {
                Some(body) => dps.register(who, &body),
                None => Answer::error(400, 400004, "The registration body is not valid JSON"),
            };
            (request_id, answer)
        }
        wire::Request::OperationStatus { request_id, operation_id } => (request_id, dps.operation_status(who, &operation_id)),
    };
    let mut replies = Vec::new();
    if publish.qos == QoS::AtLeastOnce {
        replies.push(Packet::PubAck(PubAck::new(publish.pkid)));
    }
    let topic = wire::response_topic(answer.status, &request_id, answer.retry_after);
    let body = serde_json::to_vec(&answer.body).unwrap_or_default();
    replies.push(Packet::Publish(Publish::from_bytes(topic, QoS::AtMostOnce, body.into())));
    Some(replies)
}
