//! One client connection, from its CONNECT to its close.
//!
//! The task that calls [`serve`] owns the socket: it reads and handles packets in order and
//! enforces keep-alive and token expiry; a writer task it spawns owns the write half and
//! drains the connection's bounded outbound queue, batching packets into few TLS records.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use rumqttc::mqttbytes::Protocol;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::acks::Acks;
use super::framing::{self, PacketReader};
use super::inbound::{Flow, Session};
use super::sessions::ConnectionHandle;
use super::{acl, Broker};
use crate::hub::ConnectRefusal;
use crate::identity::Identity;

/// Time allowed for the TLS handshake, and then for the CONNECT packet.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound queue per connection. Deliveries from other tasks never wait on it (full → the
/// connection is dropped); the connection's own answers wait, bounded by `STALL_TIMEOUT`.
const OUTBOUND_CAPACITY: usize = 4096;
/// A client that reads nothing for this long while its answers pile up is dropped.
pub(super) const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Flush to the socket at least every this many bytes when many packets are queued.
const WRITE_BATCH: usize = 64 * 1024;

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

struct Accepted {
    identity: Identity,
    /// Unix time at which the SAS token expires (none for X.509).
    expiry: Option<u64>,
}

pub(super) async fn serve<S>(broker: Arc<Broker>, stream: S, peer_chain: Vec<Vec<u8>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read_half, mut write_half) = tokio::io::split(stream);
    let mut reader = PacketReader::new(read_half);

    let connect = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read()).await {
        Ok(Ok(Some(Packet::Connect(connect)))) => connect,
        Ok(Ok(Some(other))) => {
            log::debug!("mqtt: first packet is not CONNECT: {:?}", packet_kind(&other));
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            log::debug!("mqtt: bad CONNECT: {e}");
            return;
        }
        Err(_) => {
            log::debug!("mqtt: no CONNECT within {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };

    if let Some(dps) = broker.dps.get().filter(|_| crate::dps::mqtt::is_registration(&connect)) {
        return crate::dps::mqtt::serve(dps.clone(), connect, reader, write_half, peer_chain).await;
    }
    let accepted = match authenticate(&broker, &connect, &peer_chain) {
        Ok(accepted) => accepted,
        Err(code) => {
            log::info!("mqtt: refused CONNECT of client id {:?}: {code:?}", connect.client_id);
            let mut buf = BytesMut::new();
            framing::encode(&Packet::ConnAck(ConnAck::new(code, false)), &mut buf);
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                write_half.write_all(&buf).await?;
                write_half.shutdown().await
            })
            .await;
            return;
        }
    };
    let identity = accepted.identity;

    let (outbound_tx, outbound_rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let (close_tx, close_rx) = watch::channel(false);
    let close_tx = Arc::new(close_tx);
    let conn_id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let handle = ConnectionHandle::new(conn_id, outbound_tx.clone(), close_tx.clone());

    let previous = broker.sessions.attach(&identity, connect.clean_session, handle, |session_present| {
        // The queue is empty and nobody else can see it yet: this cannot fail.
        let _ = outbound_tx.try_send(Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present)));
    });
    if let Some(previous) = previous {
        log::info!("mqtt: {identity} connected again; closing its previous connection");
        previous.close();
    }
    broker.hub.set_connection_state(&identity, true);
    log::info!("mqtt: {identity} connected (connection {conn_id}, keep-alive {}s)", connect.keep_alive);

    let writer = tokio::spawn(write_loop(write_half, outbound_rx, close_rx.clone()));

    // With a store, PUBACKs wait for their commit on a task of their own (`acks`).
    let acks = broker.hub.flush_point().map(|_| Acks::start(broker.hub.clone(), outbound_tx.clone(), close_tx.clone()));
    let session = Session { broker: broker.clone(), identity: identity.clone(), conn_id, outbound: outbound_tx, acks };
    // With a persistent session the device does not re-subscribe: C2D queued while it was
    // away, and whatever it had not acknowledged, goes out now.
    session.deliver_pending();
    read_loop(&session, &mut reader, keep_alive_limit(connect.keep_alive), accepted.expiry, close_rx).await;

    if broker.sessions.detach(&identity, conn_id) {
        broker.hub.set_connection_state(&identity, false);
    }
    log::info!("mqtt: {identity} disconnected (connection {conn_id})");
    // Let the writer flush what is queued (e.g. answers before a DISCONNECT), but not forever.
    drop(session);
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(5), &mut writer).await.is_err() {
        close_tx.send_replace(true);
        let _ = writer.await;
    }
}

fn authenticate(broker: &Broker, connect: &Connect, peer_chain: &[Vec<u8>]) -> Result<Accepted, ConnectReturnCode> {
    if connect.protocol != Protocol::V4 {
        return Err(ConnectReturnCode::RefusedProtocolVersion);
    }
    let identity = acl::identity_from_client_id(&connect.client_id).ok_or(ConnectReturnCode::BadClientId)?;
    let login = connect.login.as_ref().ok_or(ConnectReturnCode::NotAuthorized)?;
    if !ironhub_protocol::username::matches(&login.username, broker.hub.hostname(), &connect.client_id) {
        return Err(ConnectReturnCode::BadUserNamePassword);
    }
    let refused = |refusal: ConnectRefusal| match refusal {
        ConnectRefusal::BadUsernameOrPassword => ConnectReturnCode::BadUserNamePassword,
        ConnectRefusal::NotAuthorized => ConnectReturnCode::NotAuthorized,
        ConnectRefusal::ServerUnavailable => ConnectReturnCode::ServiceUnavailable,
    };
    if !login.password.is_empty() {
        let expiry = broker.hub.authenticate_sas(&identity, &login.password).map_err(refused)?;
        Ok(Accepted { identity, expiry: Some(expiry) })
    } else if !peer_chain.is_empty() {
        broker.hub.authenticate_x509(&identity, peer_chain).map_err(refused)?;
        Ok(Accepted { identity, expiry: None })
    } else {
        Err(ConnectReturnCode::NotAuthorized)
    }
}

/// MQTT 3.1.1 §3.1.2.10: the server disconnects a client silent for 1.5 × keep-alive; 0 = off.
fn keep_alive_limit(keep_alive_secs: u16) -> Option<Duration> {
    (keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500))
}

fn until_unix(expiry: u64) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    Duration::from_secs(expiry.saturating_sub(now))
}

async fn read_loop<R: AsyncRead + Unpin>(
    session: &Session,
    reader: &mut PacketReader<R>,
    keep_alive: Option<Duration>,
    expiry: Option<u64>,
    mut close: watch::Receiver<bool>,
) {
    let identity = &session.identity;
    let token_expired = async {
        match expiry {
            Some(at) => tokio::time::sleep(until_unix(at)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(token_expired);
    loop {
        let next = async {
            match keep_alive {
                Some(limit) => tokio::time::timeout(limit, reader.read()).await.ok(),
                None => Some(reader.read().await),
            }
        };
        tokio::select! {
            read = next => match read {
                None => {
                    log::info!("mqtt: {identity} silent for more than 1.5 x keep-alive; closing");
                    return;
                }
                Some(Ok(Some(packet))) => {
                    if session.handle(packet).await == Flow::Close {
                        return;
                    }
                }
                Some(Ok(None)) => return,
                Some(Err(e)) => {
                    log::info!("mqtt: closing {identity}: {e}");
                    return;
                }
            },
            _ = signalled(&mut close) => {
                log::debug!("mqtt: {identity} closed by the hub");
                return;
            }
            _ = &mut token_expired => {
                log::info!("mqtt: {identity}'s SAS token expired; closing");
                return;
            }
        }
    }
}

/// Resolves once the connection is told to close; never if the signal can no longer come.
async fn signalled(close: &mut watch::Receiver<bool>) {
    if close.wait_for(|closed| *closed).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut out: W, mut queue: mpsc::Receiver<Packet>, mut close: watch::Receiver<bool>) {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            _ = signalled(&mut close) => return,
            packet = queue.recv() => packet,
        };
        let Some(first) = first else { break };
        buf.clear();
        framing::encode(&first, &mut buf);
        while buf.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(packet) => {
                    framing::encode(&packet, &mut buf);
                }
                Err(_) => break,
            }
        }
        let write = async {
            out.write_all(&buf).await?;
            out.flush().await
        };
        tokio::select! {
            _ = signalled(&mut close) => return,
            written = write => if written.is_err() { return },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), out.shutdown()).await;
}

pub(super) fn packet_kind(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_is_one_and_a_half_times() {
        assert_eq!(keep_alive_limit(0), None);
        assert_eq!(keep_alive_limit(60), Some(Duration::from_secs(90)));
        assert_eq!(keep_alive_limit(1), Some(Duration::from_millis(1500)));
    }
}
