//! The MQTT connection of one client: a `Link` and its network loop, one tokio task per client that
//! owns the stream (`connector::Stream`), never runs user code and never waits on anything but the
//! network and its own timers. Connecting (DNS, proxy, TLS, WebSocket, CONNECT/CONNACK) and token
//! signing run in tasks of their own and report back; backoff, keep-alive pings and the dead-link
//! watchdog are timers of the loop's one `select!`.
//!
//! The loop knows nothing of sessions or handlers: it is configured by a `LinkConfig` and reports
//! `LinkEvent`s to its `LinkOwner`; the owner talks to it through `Link`'s methods (publish,
//! subscribe, ack, re-authenticate, stop). A publish is encoded by its caller straight into the
//! link's output buffer (packet id assigned there, `writer::LinkWriter`). The only publish in
//! flight (a sync send) is written by its caller from its own thread on the TLS write half the
//! loop shares; otherwise the loop writes everything queued in one write: a burst of sends costs
//! one TLS record and one syscall. A blocking caller waiting for that one PUBACK may read it
//! itself from the TLS read half the loop shares (`reader::LinkReader`) instead of waiting for
//! the loop to be woken for it.
//! Unacknowledged publishes are kept (encoded) across reconnects and renewals and re-sent with DUP
//! set, except those whose caller already gave up (told "outcome unknown": never re-sent silently).
//! Every connection ends with an MQTT DISCONNECT (when the loop stops) and a TLS `close_notify`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{Disconnect, Packet, PingReq, PubAck, Subscribe, SubscribeFilter, Unsubscribe};
pub(crate) use rumqttc::Publish;
use rumqttc::{ConnectReturnCode, QoS};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::connector::{self, ConnectFailure, ConnectParams, Stream};
use super::reader::LinkReader;
use super::writer::LinkWriter;
use crate::auth::{Authenticator, CurrentToken};
use crate::error::{Error, ErrorKind, Result};
use crate::message::ConnectionReason;
use crate::options::ClientOptions;

/// Publishes that may be unacknowledged at once per client.
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// Packet ids of publishes are drawn from 1..=PUBLISH_PKIDS; SUBSCRIBE/UNSUBSCRIBE use the ids above.
const PUBLISH_PKIDS: u16 = 32_767;
/// Largest packet accepted from the hub (twin documents, 128 KB method payloads, 64 KB C2D).
pub(crate) const MAX_INCOMING_PACKET: usize = 1024 * 1024;
/// Largest packet sent, and the hub's limit a message is checked against before it is queued:
/// a 256 KB message plus its topic.
pub(crate) const MAX_OUTGOING_PACKET: usize = 256 * 1024 + 64 * 1024;
/// No CONNACK within this bound → OperationTimeout (python-surface.md).
pub(crate) const CONNACK_TIMEOUT_SECS: u64 = 60;
/// How long a renewal waits for in-flight publishes before reconnecting anyway.
const RENEWAL_DRAIN: Duration = Duration::from_secs(2);
/// Shortest wait between reconnect attempts (full jitter may draw 0).
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Bound on the goodbye (queued acks, DISCONNECT, close_notify) when a link stops.
const CLOSE_BOUND: Duration = Duration::from_secs(2);

static NEXT_LINK_ID: AtomicU64 = AtomicU64::new(1);

/// Where a publish is: the caller's timeout and the link race on it, so that a timed-out send is
/// either withdrawn before it is written or reported "outcome unknown", and never sent later.
pub(crate) struct SendState(AtomicU8);

const QUEUED: u8 = 0;
const WRITTEN: u8 = 1;
const ABANDONED: u8 = 2;

impl SendState {
    pub fn new() -> Arc<SendState> {
        Arc::new(SendState(AtomicU8::new(QUEUED)))
    }

    /// Called by the caller's timeout: true if the publish had already been handed to the network.
    pub fn abandon(&self) -> bool {
        self.0.swap(ABANDONED, Ordering::SeqCst) == WRITTEN
    }

    fn mark_written(&self) -> bool {
        self.0.compare_exchange(QUEUED, WRITTEN, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    pub fn is_abandoned(&self) -> bool {
        self.0.load(Ordering::SeqCst) == ABANDONED
    }
}

/// Everything a link needs to connect, fixed at creation.
pub(crate) struct LinkConfig {
    pub client_id: String,
    /// The host actually connected to (gateway or hub).
    pub host: String,
    pub username: String,
    pub options: ClientOptions,
    pub tls: Arc<rustls::ClientConfig>,
    pub auth: Arc<Authenticator>,
}

/// What the network loop reports to its owner.
pub(crate) enum LinkEvent {
    /// CONNACK accepted; `renewal` = a reconnect made only to present a new token.
    Connected { renewal: bool },
    /// The connection went down (`was_up`) or an attempt failed, and why.
    Lost { reason: ConnectionReason, was_up: bool },
    /// The loop stopped reconnecting (`retry_give_up_after`, or `connection_retry` off).
    GaveUp { reason: ConnectionReason, error: Error },
    /// A publish from the hub. C2D and input messages are acknowledged by the owner (`Link::ack`)
    /// once a handler or inbox has taken them; everything else is acknowledged already.
    Publish(Publish),
    /// An error no caller waits for.
    Background(Error),
    /// A given (non-renewable) token is about to expire: ask the application for a new one.
    SasTokenRequired,
    /// The loop has ended.
    Ended,
}

/// The owner of a link: receives its events on the network loop (it must only record them and
/// hand work elsewhere: never block, never run user code).
pub(crate) trait LinkOwner: Send + Sync + 'static {
    fn on_link_event(&self, link: &Arc<Link>, event: LinkEvent);
}

/// What the owner of a link can ask of its loop.
enum Control {
    /// New credentials are available: reconnect with them now.
    Reauthenticate,
    Stop,
}

#[derive(Clone, Debug)]
pub(crate) enum LinkStatus {
    Connecting,
    Connected,
    Reconnecting,
    Failed(Error),
    Closed,
}

/// A publish waiting for its PUBACK; holds an in-flight permit and whatever the owner attached
/// (its queue reservation), released when the outcome is known.
pub(crate) struct Entry {
    pub done: oneshot::Sender<Result<()>>,
    pub state: Arc<SendState>,
    /// Held (not read) until the outcome is known: dropping them frees the slot and the room.
    #[allow(dead_code)]
    pub permit: OwnedSemaphorePermit,
    #[allow(dead_code)]
    pub reservation: Option<crate::bounds::Reservation>,
}

impl Entry {
    fn complete(self, r: Result<()>) {
        let _ = self.done.send(r);
    }
}

/// A publish waiting for its PUBACK, with its encoded packet (re-sent after a reconnect).
struct Tracked {
    entry: Entry,
    packet: Bytes,
    /// Order of the first write: retransmissions keep it.
    seq: u64,
}

#[derive(Default)]
struct Tracker {
    /// A connection is up (packets for it are queued in `Link::writer`). Offline, publishes wait
    /// in `by_pkid` for the next CONNACK (re-sent then, in order) and acks are dropped (the hub
    /// redelivers what was not acknowledged).
    online: bool,
    by_pkid: HashMap<u16, Tracked>,
    next_pkid: u16,
    next_ctl_pkid: u16,
    next_seq: u64,
    /// SUBSCRIBE packets queued on this link.
    subs_sent: u64,
    /// Publishes from the hub (QoS 1) handed to the session whose PUBACK is not queued yet (a C2D
    /// handler still running): a renewal waits for them too, or a PUBACK queued while the old
    /// connection closes would be lost and the hub would deliver the message a second time.
    acks_owed: usize,
    closed: Option<Error>,
}

impl Tracker {
    /// A packet id no unacknowledged publish uses (at most `MAX_IN_FLIGHT` are in use).
    fn publish_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = if self.next_pkid >= PUBLISH_PKIDS { 1 } else { self.next_pkid + 1 };
            if !self.by_pkid.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    fn control_pkid(&mut self) -> u16 {
        self.next_ctl_pkid = if self.next_ctl_pkid <= PUBLISH_PKIDS || self.next_ctl_pkid == u16::MAX {
            PUBLISH_PKIDS + 1
        } else {
            self.next_ctl_pkid + 1
        };
        self.next_ctl_pkid
    }
}

pub(crate) struct Link {
    pub id: u64,
    control: mpsc::UnboundedSender<Control>,
    status: watch::Receiver<LinkStatus>,
    tracker: Mutex<Tracker>,
    /// The packets queued for the connection and its shared write half (lock order: `reader`,
    /// then `tracker`, then `writer`).
    writer: LinkWriter,
    /// The shared read half and read buffer of a TLS connection (see `reader` for its rules).
    pub(super) reader: LinkReader,
    /// SUBACKs received (never above `subs_sent`): subscription waiters compare against it.
    subs_acked: watch::Sender<u64>,
    finished: watch::Receiver<bool>,
    /// True while a token renewal waits for in-flight publishes to be acknowledged, so that the
    /// fresh CONNECT retransmits nothing (no duplicates at the hub).
    paused: watch::Sender<bool>,
    /// CONNACKs received: lets `update_sastoken` wait for the re-authentication it asked for.
    connacks: watch::Sender<u64>,
}

fn encode(write: impl FnOnce(&mut BytesMut) -> std::result::Result<usize, rumqttc::mqttbytes::Error>) -> Result<BytesMut> {
    let mut b = BytesMut::new();
    write(&mut b).map_err(|e| Error::invalid(format!("cannot encode the MQTT packet: {e}")))?;
    Ok(b)
}

impl Link {
    /// Starts the network loop (which connects). The first token is signed here, before the loop
    /// exists: a workload-API outage fails the connect, not a loop.
    pub async fn start(cfg: LinkConfig, owner: Weak<dyn LinkOwner>) -> Result<Arc<Link>> {
        let password = cfg.auth.password(false).await?.map(|t| t.token).unwrap_or_default();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(LinkStatus::Connecting);
        let (finished_tx, finished_rx) = watch::channel(false);
        let link = Arc::new(Link {
            id: NEXT_LINK_ID.fetch_add(1, Ordering::Relaxed),
            control: control_tx,
            status: status_rx,
            tracker: Mutex::new(Tracker::default()),
            writer: LinkWriter::new(),
            reader: LinkReader::new(),
            subs_acked: watch::channel(0).0,
            finished: finished_rx,
            paused: watch::channel(false).0,
            connacks: watch::channel(0).0,
        });
        let task_link = link.clone();
        crate::runtime::handle().spawn(async move {
            let mut net = NetworkLoop {
                cfg,
                password,
                owner,
                link: task_link,
                conn: None,
                rbuf: BytesMut::new(),
                connecting: None,
                control: control_rx,
                status: status_tx,
                ever_connected: false,
                attempt: 0,
                renewing: false,
                drain_until: None,
                retry_at: None,
                outage_since: None,
                signing: None,
                reconnect_when_signed: false,
                token_notified: None,
                next_ping: None,
                timer: Box::pin(tokio::time::sleep_until(crate::runtime::deadline_after(Duration::MAX))),
                timer_at: None,
            };
            net.run().await;
            let _ = finished_tx.send(true);
        });
        Ok(link)
    }

    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> LinkStatus {
        self.status.borrow().clone()
    }

    pub fn is_usable(&self) -> bool {
        !matches!(self.status(), LinkStatus::Failed(_) | LinkStatus::Closed)
    }

    /// Connected, and no renewal is holding publishes back: a send may go straight to the link.
    pub fn is_ready(&self) -> bool {
        matches!(*self.status.borrow(), LinkStatus::Connected) && !*self.paused.borrow()
    }

    /// Waits until connected, failed or closed, at most until `deadline`.
    pub async fn wait_connected(&self, deadline: Instant) -> Result<()> {
        let mut rx = self.status.clone();
        let r = tokio::time::timeout_at(
            deadline,
            rx.wait_for(|s| !matches!(s, LinkStatus::Connecting | LinkStatus::Reconnecting)),
        )
        .await;
        match r {
            Err(_) => Err(Error::OperationTimeout("no CONNACK from the hub in time".into())),
            Ok(Err(_)) => Err(Error::OperationCancelled),
            Ok(Ok(s)) => match &*s {
                LinkStatus::Connected => Ok(()),
                LinkStatus::Failed(e) => Err(e.clone()),
                _ => Err(Error::OperationCancelled),
            },
        }
    }

    /// Waits while a renewal drains the in-flight publishes (the caller bounds the wait).
    pub async fn wait_unpaused(&self) {
        if *self.paused.borrow() {
            let mut rx = self.paused.subscribe();
            let _ = rx.wait_for(|p| !*p).await;
        }
    }

    fn set_paused(&self, on: bool) {
        self.paused.send_if_modified(|p| std::mem::replace(p, on) != on);
    }

    /// No publish waiting for its PUBACK, and no PUBACK owed to the hub.
    fn idle(&self) -> bool {
        let t = self.tracker();
        t.by_pkid.is_empty() && t.acks_owed == 0
    }

    /// A QoS 1 publish from the hub was handed up: its PUBACK (`ack`) or its release (`forgive`)
    /// follows exactly once.
    pub fn owe_ack(&self, publish: &Publish) {
        if publish.qos != QoS::AtMostOnce {
            self.tracker().acks_owed += 1;
        }
    }

    /// An owed PUBACK will not be sent (nobody took the message: the hub redelivers it).
    pub fn forgive_ack(&self, publish: &Publish) {
        if publish.qos != QoS::AtMostOnce {
            self.settle_owed(&mut self.tracker());
        }
    }

    /// One owed PUBACK is settled (queued or forgiven). A renewal draining for the last one is
    /// woken: nothing else wakes the loop for a forgiven ack or one dropped while offline.
    fn settle_owed(&self, t: &mut Tracker) {
        t.acks_owed = t.acks_owed.saturating_sub(1);
        if t.acks_owed == 0 && *self.paused.borrow() {
            self.writer.notify_loop();
        }
    }

    /// Queues a QoS 1 publish; the entry's `done` receives its PUBACK outcome. A publish its
    /// caller abandoned meanwhile is dropped here (withdrawn, never written). Encoded here, on
    /// the caller's thread, straight into the output buffer.
    pub fn enqueue_publish(self: &Arc<Self>, topic: String, payload: Vec<u8>, entry: Entry) {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
        let mut t = self.tracker();
        if let Some(e) = &t.closed {
            let e = e.clone();
            drop(t);
            entry.complete(Err(e));
            return;
        }
        if !entry.state.mark_written() {
            return;
        }
        p.pkid = t.publish_pkid();
        let packet = match encode(|b| p.write(b)) {
            Ok(b) => b.freeze(),
            Err(e) => {
                drop(t);
                entry.complete(Err(e));
                return;
            }
        };
        let queued_first = t.online && self.writer.push(&packet);
        t.next_seq += 1;
        let seq = t.next_seq;
        t.by_pkid.insert(p.pkid, Tracked { entry, packet, seq });
        // The only publish in flight (a sync send): written from this thread, so the loop is
        // not woken for it. Under load the loop batches everything queued into one write.
        let alone = t.by_pkid.len() == 1;
        drop(t);
        if queued_first {
            if alone && self.writer.write_now() {
                super::reader::offer(self);
            } else {
                self.writer.notify_loop();
            }
        }
    }

    /// Queues a control packet for the current connection (dropped when offline: SUBSCRIBEs are
    /// re-made after every CONNACK, and unacknowledged incoming publishes are redelivered).
    fn queue_control(&self, t: &mut Tracker, packet: &[u8]) {
        if t.online && self.writer.push(packet) {
            self.writer.notify_loop();
        }
    }

    /// Sends one SUBSCRIBE for `filters`; returns the SUBACK count that acknowledges it.
    pub fn send_subscribe(&self, filters: &[String]) -> Result<u64> {
        let mut t = self.tracker();
        if let Some(e) = &t.closed {
            return Err(e.clone());
        }
        if !t.online {
            // Nothing is queued while offline: the re-subscription at the next CONNACK carries
            // these filters (the session wants them already), so wait for that one's SUBACK.
            // Counting this one as sent would leave its waiter short of a SUBACK that never comes.
            return Ok(t.subs_sent + 1);
        }
        let mut s = Subscribe::new_many(filters.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)));
        s.pkid = t.control_pkid();
        let packet = encode(|b| s.write(b))?;
        self.queue_control(&mut t, &packet);
        t.subs_sent += 1;
        Ok(t.subs_sent)
    }

    /// Subscribes and waits for the SUBACK (or for a reconnect that re-subscribes anyway).
    pub async fn subscribe(&self, filters: &[String], deadline: Instant) -> Result<()> {
        let target = self.send_subscribe(filters)?;
        let mut rx = self.subs_acked.subscribe();
        let acked = tokio::time::timeout_at(deadline, rx.wait_for(|acked| *acked >= target)).await.is_ok();
        if acked {
            Ok(())
        } else {
            Err(Error::OperationTimeout("no SUBACK from the hub in time".into()))
        }
    }

    pub fn unsubscribe(&self, filter: &str) {
        let mut t = self.tracker();
        if t.closed.is_none() {
            let mut u = Unsubscribe::new(filter);
            u.pkid = t.control_pkid();
            if let Ok(packet) = encode(|b| u.write(b)) {
                self.queue_control(&mut t, &packet);
            }
        }
    }

    /// PUBACKs a publish from the hub (no-op for QoS 0, or when offline: the hub then redelivers
    /// it on the next connection). Acks queued before `stop` are written before the DISCONNECT.
    pub fn ack(&self, publish: &Publish) {
        if publish.qos == QoS::AtMostOnce {
            return;
        }
        let mut t = self.tracker();
        if let Ok(packet) = encode(|b| PubAck::new(publish.pkid).write(b)) {
            self.queue_control(&mut t, &packet);
        }
        self.settle_owed(&mut t);
    }

    /// Subscriptions in flight when a connection drops are re-made after the reconnect: release
    /// their waiters now rather than leave them to time out.
    fn release_subscription_waiters(&self) {
        let sent = self.tracker().subs_sent;
        self.subs_acked.send_modify(|a| *a = sent);
    }

    /// A connect that re-subscribed nothing still answers the waiters of subscriptions asked for
    /// while offline (they wait for "the re-subscription's SUBACK"): count it as sent and acked.
    fn count_empty_resubscription(&self, sent_before: u64) {
        let mut t = self.tracker();
        if t.subs_sent == sent_before {
            t.subs_sent += 1;
            let sent = t.subs_sent;
            drop(t);
            self.subs_acked.send_modify(|a| *a = sent);
        }
    }

    fn on_suback(&self) {
        let sent = self.tracker().subs_sent;
        self.subs_acked.send_modify(|a| *a = (*a + 1).min(sent));
    }

    pub(super) fn on_puback(&self, pkid: u16) {
        let done = self.tracker().by_pkid.remove(&pkid);
        if let Some(t) = done {
            t.entry.complete(Ok(()));
        }
    }

    /// The connection went down: nothing more is queued for it.
    fn go_offline(&self) {
        let mut t = self.tracker();
        t.online = false;
        self.writer.reset(BytesMut::new());
    }

    /// A connection is up: queues the retransmission (DUP set) of every unacknowledged publish in
    /// its original order, minus those whose callers gave up (dropped: "outcome unknown").
    fn go_online(&self) {
        let mut t = self.tracker();
        let abandoned: Vec<u16> = t.by_pkid.iter().filter(|(_, e)| e.entry.state.is_abandoned()).map(|(p, _)| *p).collect();
        let dropped: Vec<Tracked> = abandoned.iter().filter_map(|p| t.by_pkid.remove(p)).collect();
        let mut resend: Vec<(u64, Bytes)> = t.by_pkid.values().map(|e| (e.seq, e.packet.clone())).collect();
        resend.sort_by_key(|(seq, _)| *seq);
        let mut out = BytesMut::with_capacity(resend.iter().map(|(_, p)| p.len()).sum());
        for (_, p) in resend {
            let start = out.len();
            out.extend_from_slice(&p);
            out[start] |= 0x08; // DUP
        }
        self.writer.reset(out);
        t.online = true;
        drop(t);
        drop(dropped); // releases their permits and queue reservations
    }

    /// Ends every tracked operation with `err`; later enqueues fail with it too (acks already
    /// queued stay queued: the loop writes them before it closes).
    fn fail_all(&self, err: Error) {
        let entries: Vec<Tracked> = {
            let mut t = self.tracker();
            if t.closed.is_none() {
                t.closed = Some(err.clone());
            }
            t.by_pkid.drain().map(|(_, e)| e).collect()
        };
        self.subs_acked.send_modify(|a| *a = u64::MAX);
        self.set_paused(false);
        for e in entries {
            e.entry.complete(Err(err.clone()));
        }
    }

    /// Asks the loop to reconnect with fresh credentials and waits for the hub's CONNACK.
    pub async fn reauthenticate(&self, deadline: Instant) -> Result<()> {
        let mut rx = self.connacks.subscribe();
        let before = *rx.borrow_and_update();
        let _ = self.control.send(Control::Reauthenticate);
        let r = tokio::time::timeout_at(deadline, rx.wait_for(|n| *n > before)).await;
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::OperationCancelled),
            Err(_) => Err(Error::OperationTimeout("re-authentication was not confirmed in time".into())),
        }
    }

    /// Asks the loop to use fresh credentials at its next connection attempt.
    pub fn reauthenticate_later(&self) {
        let _ = self.control.send(Control::Reauthenticate);
    }

    /// Stops the loop: tracked operations end with `OperationCancelled`; queued acks, a
    /// DISCONNECT and the TLS close_notify are written first. Waits (bounded) for the loop to
    /// finish so no event of this link is reported after `stop` returns.
    pub async fn stop(&self) {
        self.stop_now();
        let mut f = self.finished.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), f.wait_for(|d| *d)).await;
    }

    /// `stop` for synchronous contexts (drop): does not wait.
    pub fn stop_now(&self) {
        self.fail_all(Error::OperationCancelled);
        let _ = self.control.send(Control::Stop);
    }
}

/// Exponential backoff with full jitter: a uniform draw from [0, min(cap, interval · 2^attempt)],
/// never below `MIN_BACKOFF` (so a refusing hub is not hammered).
pub(crate) fn backoff(interval: Duration, cap: Duration, attempt: u32, unit: f64) -> Duration {
    let ceiling = interval.saturating_mul(1u32 << attempt.min(20)).min(cap.max(MIN_BACKOFF));
    ceiling.mul_f64(unit.clamp(0.0, 1.0)).max(MIN_BACKOFF)
}

/// What a connection error means for the caller and for the connection state handler.
fn classify(e: &ConnectFailure, ever_connected: bool, token_expired: bool) -> (Error, ConnectionReason) {
    match e {
        ConnectFailure::Refused(code) => match code {
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => {
                let reason = if token_expired { ConnectionReason::ExpiredSasToken } else { ConnectionReason::BadCredential };
                (Error::Credential(format!("the hub refused the credentials ({code:?})")), reason)
            }
            // azure-iot-sdk-c reads CONNACK 3 as a disabled device, and IoT Hub refuses one with it.
            ConnectReturnCode::ServiceUnavailable => (
                Error::ConnectionFailed("the device is disabled or the hub is unavailable (CONNACK 3)".into()),
                ConnectionReason::DeviceDisabled,
            ),
            _ => (Error::Client(format!("the hub refused the connection ({code:?})")), ConnectionReason::CommunicationError),
        },
        ConnectFailure::Timeout => (
            Error::OperationTimeout(format!("no CONNACK within {CONNACK_TIMEOUT_SECS} s")),
            ConnectionReason::NoNetwork,
        ),
        ConnectFailure::Io(m) if !ever_connected => (Error::ConnectionFailed(m.clone()), ConnectionReason::NoNetwork),
        ConnectFailure::Io(m) => (Error::ConnectionDropped(m.clone()), ConnectionReason::CommunicationError),
    }
}

async fn recv_opt<T>(rx: &mut Option<oneshot::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.await.ok(),
        None => std::future::pending().await,
    }
}


enum Step {
    Control(Option<Control>),
    /// The renewal instant of the current token came.
    Renew,
    DrainTimeout,
    /// The backoff after a failed connection ended.
    Retry,
    /// Nothing came from the hub for 2 × keep-alive (pings included): the link is dead.
    Silent,
    Signed(Option<Result<Option<CurrentToken>>>),
    /// The connector task finished (`None`: it died).
    Opened(Option<std::result::Result<(Stream, BytesMut), ConnectFailure>>),
    Ping,
    /// Packets were queued for the connection.
    Write,
    Read(std::io::Result<usize>),
}

/// The loop's side of a connection.
enum Conn {
    /// WebSocket: the loop reads and writes the whole stream.
    Whole(Stream),
    /// TLS: reads go through the link's shared read half (`LinkReader`), writes through its
    /// shared write half (`LinkWriter`).
    Split,
}

async fn read_opt(conn: &mut Option<Conn>, buf: &mut BytesMut, reader: &LinkReader) -> std::io::Result<usize> {
    match conn {
        Some(Conn::Whole(c)) => {
            let n = c.read(buf).await?;
            if n > 0 {
                reader.mark_rx();
            }
            Ok(n)
        }
        Some(Conn::Split) => std::future::poll_fn(|cx| reader.poll_read(cx)).await,
        None => std::future::pending().await,
    }
}

type Opening = oneshot::Receiver<std::result::Result<(Stream, BytesMut), ConnectFailure>>;

/// The state of one network loop.
struct NetworkLoop {
    cfg: LinkConfig,
    /// The MQTT password of the next CONNECT (the current SAS token).
    password: String,
    owner: Weak<dyn LinkOwner>,
    link: Arc<Link>,
    /// The current connection, after its CONNACK.
    conn: Option<Conn>,
    /// Bytes read from a WebSocket connection not yet parsed into packets (a TLS connection's
    /// are in the link's `reader`).
    rbuf: BytesMut,
    /// A connection being opened by the connector task.
    connecting: Option<Opening>,
    control: mpsc::UnboundedReceiver<Control>,
    status: watch::Sender<LinkStatus>,
    ever_connected: bool,
    attempt: u32,
    /// A reconnect made only to present a new token is invisible to the application.
    renewing: bool,
    /// Renewal waiting for the in-flight publishes to drain, until this instant at most.
    drain_until: Option<Instant>,
    /// Reconnecting after a failure: the next attempt waits for this instant.
    retry_at: Option<Instant>,
    /// When the current outage began (for `retry_give_up_after`).
    outage_since: Option<Instant>,
    /// A token being signed in its own task; the loop goes on meanwhile.
    signing: Option<oneshot::Receiver<Result<Option<CurrentToken>>>>,
    /// Reconnect as soon as the token being signed is ready (renewal, `update_sastoken`).
    reconnect_when_signed: bool,
    /// Expiry of the given token for which `SasTokenRequired` was reported already.
    token_notified: Option<u64>,
    next_ping: Option<Instant>,
    /// The loop's one timer, armed for `timer_at` (the earliest of its deadlines).
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    timer_at: Option<Instant>,
}

impl NetworkLoop {
    /// Reports an event; false when the owner is gone (the loop then ends).
    fn report(&self, event: LinkEvent) -> bool {
        match self.owner.upgrade() {
            Some(o) => {
                o.on_link_event(&self.link, event);
                true
            }
            None => false,
        }
    }

    fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.cfg.options.keep_alive)
    }

    /// When the current token must be replaced (or the application asked for a new one).
    fn renewal_instant(&self) -> Option<Instant> {
        let auth = &self.cfg.auth;
        let expiry = auth.current_expiry()?;
        if !auth.is_renewable() && self.token_notified == Some(expiry) {
            return None;
        }
        let at = expiry.saturating_sub(auth.renewal_margin());
        let now = crate::auth::unix_now();
        Some(crate::runtime::deadline_after(Duration::from_secs(at.saturating_sub(now))))
    }

    /// Starts signing a token in its own task (a workload-API call may take long or fail).
    fn start_signing(&mut self, fresh: bool) {
        if self.signing.is_some() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let auth = self.cfg.auth.clone();
        crate::runtime::handle().spawn(async move {
            let _ = tx.send(auth.password(fresh).await);
        });
        self.signing = Some(rx);
    }

    /// Opens a connection in a task of its own (DNS, proxy, TLS, CONNECT): the loop goes on.
    fn start_connecting(&mut self) {
        let params = ConnectParams {
            host: self.cfg.host.clone(),
            client_id: self.cfg.client_id.clone(),
            username: self.cfg.username.clone(),
            password: self.password.clone(),
            options: self.cfg.options.clone(),
            tls: self.cfg.tls.clone(),
            max_incoming: MAX_INCOMING_PACKET,
        };
        let (tx, rx) = oneshot::channel();
        crate::runtime::handle().spawn(async move {
            let r = connector::connect(&params, Duration::from_secs(CONNACK_TIMEOUT_SECS)).await;
            if let Err(Ok((mut stream, _))) = tx.send(r) {
                stream.close().await; // the loop stopped meanwhile
            }
        });
        self.connecting = Some(rx);
    }

    /// Writes what is queued for the connection, in one write (the link's writer resolves only
    /// once nothing is left, including what callers queue meanwhile).
    async fn flush(&mut self) -> std::io::Result<()> {
        let bound = (2 * self.keep_alive()).max(Duration::from_secs(10));
        let (conn, writer) = (self.conn.as_mut(), &self.link.writer);
        let write = async move {
            match conn {
                Some(Conn::Whole(s)) => match writer.take() {
                    Some(out) => s.write_all(out).await,
                    None => Ok(()),
                },
                Some(Conn::Split) => std::future::poll_fn(|cx| writer.poll_flush_all(cx)).await,
                None => Ok(()),
            }
        };
        match tokio::time::timeout(bound, write).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the hub stopped reading")),
        }
    }

    /// Ends the connection politely: what is queued (acks), DISCONNECT, TLS close_notify.
    async fn close_connection(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // Callers stop writing and reading first (what they queue now waits for the next
        // connection; what was read and not parsed goes with this one).
        let half = self.link.writer.detach();
        let _read = self.link.reader.detach();
        let mut goodbye = BytesMut::new();
        if let Some(queued) = self.link.writer.take() {
            goodbye.extend_from_slice(&queued);
        }
        if let Ok(d) = encode(|b| Disconnect.write(b)) {
            goodbye.extend_from_slice(&d);
        }
        let write = async {
            match (conn, half) {
                (Conn::Whole(mut s), _) => {
                    let _ = s.write_all(goodbye.freeze()).await;
                    s.close().await;
                }
                (Conn::Split, Some(mut w)) => {
                    let _ = w.write_all(&goodbye).await;
                    let _ = w.flush().await;
                    let _ = w.shutdown().await;
                }
                (Conn::Split, None) => {}
            }
        };
        let _ = tokio::time::timeout(CLOSE_BOUND, write).await;
        self.rbuf = BytesMut::new();
        self.link.go_offline();
    }

    /// The connection failed under us: drop it (no goodbye is possible) and report.
    fn lose_connection(&mut self, err: Error, reason: ConnectionReason) -> Option<(Error, Option<ConnectionReason>)> {
        self.conn = None;
        drop(self.link.writer.detach());
        drop(self.link.reader.detach());
        self.rbuf = BytesMut::new();
        self.next_ping = None;
        self.link.go_offline();
        log::info!("{}: connection lost: {err}", self.cfg.client_id);
        self.connection_failed(err, reason)
    }

    async fn run(&mut self) {
        let end = loop {
            if let Some(until) = self.drain_until {
                if self.link.idle() || Instant::now() >= until || self.conn.is_none() {
                    self.drain_until = None;
                    if self.conn.is_some() {
                        log::debug!("{}: re-authenticating with a new SAS token", self.cfg.client_id);
                        self.renewing = true;
                        // Anything still unacknowledged is re-sent on the new connection.
                        self.close_connection().await;
                    } else {
                        self.link.set_paused(false);
                    }
                }
            }
            let connected = self.conn.is_some();
            // No renewal timer while a token is being signed or after a failed signing's pause.
            let renew_at = if self.drain_until.is_some() {
                self.drain_until
            } else if self.signing.is_none() && self.retry_at.is_none() {
                self.renewal_instant()
            } else {
                None
            };
            let silent_at = connected.then(|| self.link.reader.last_rx() + 2 * self.keep_alive());
            let may_connect = !connected
                && self.connecting.is_none()
                && self.retry_at.is_none()
                && !(self.reconnect_when_signed && self.signing.is_some());
            if may_connect {
                self.start_connecting();
            }
            let ping_at = if connected { self.next_ping } else { None };
            // One timer for every deadline of the loop, re-armed only when the earliest one moves:
            // a sleep per deadline per iteration cost a timer-wheel registration each (perf).
            let due = [renew_at, self.retry_at, silent_at, ping_at].into_iter().flatten().min();
            if due != self.timer_at {
                self.timer_at = due;
                self.timer.as_mut().reset(due.unwrap_or_else(|| crate::runtime::deadline_after(Duration::MAX)));
            }
            let step = tokio::select! {
                biased;
                c = self.control.recv() => Step::Control(c),
                s = recv_opt(&mut self.signing) => Step::Signed(s),
                _ = &mut self.timer, if due.is_some() => {
                    // The earliest deadline that passed; the others fire on the next iterations.
                    let now = Instant::now();
                    let passed = |at: Option<Instant>| at.is_some_and(|at| at <= now);
                    self.timer_at = None;
                    if passed(renew_at) {
                        if self.drain_until.is_some() { Step::DrainTimeout } else { Step::Renew }
                    } else if passed(self.retry_at) {
                        Step::Retry
                    } else if passed(silent_at) {
                        Step::Silent
                    } else if passed(ping_at) {
                        Step::Ping
                    } else {
                        Step::Write
                    }
                }
                r = recv_opt(&mut self.connecting) => Step::Opened(r),
                r = read_opt(&mut self.conn, &mut self.rbuf, &self.link.reader) => Step::Read(r),
                _ = self.link.writer.notified(), if connected => Step::Write,
            };
            let failure = match step {
                Step::Control(None) | Step::Control(Some(Control::Stop)) => {
                    self.close_connection().await;
                    break (Error::OperationCancelled, None);
                }
                Step::DrainTimeout | Step::Write => None,
                Step::Retry => {
                    self.retry_at = None;
                    None
                }
                Step::Control(Some(Control::Reauthenticate)) => {
                    // New credentials end a backoff at once.
                    self.retry_at = None;
                    self.reconnect_when_signed = true;
                    self.start_signing(false);
                    None
                }
                Step::Renew => {
                    if !self.cfg.auth.is_renewable() {
                        // A given token cannot renew itself: ask the application, once per token.
                        self.token_notified = self.cfg.auth.current_expiry();
                        self.report(LinkEvent::SasTokenRequired);
                        continue;
                    }
                    self.reconnect_when_signed = true;
                    self.start_signing(true);
                    None
                }
                Step::Signed(result) => {
                    self.signing = None;
                    match result {
                        Some(Ok(token)) => {
                            if let Some(t) = token {
                                self.password = t.token;
                            }
                            if std::mem::take(&mut self.reconnect_when_signed) && self.conn.is_some() {
                                // Hold new publishes back and let the in-flight ones be acknowledged first.
                                self.link.set_paused(true);
                                self.drain_until = Some(Instant::now() + RENEWAL_DRAIN);
                            }
                        }
                        Some(Err(e)) => {
                            self.report(LinkEvent::Background(e));
                            // Try again after a pause rather than spin; the current token goes on.
                            self.reconnect_when_signed = false;
                            self.retry_at = self.retry_at.or_else(|| Some(Instant::now() + self.retry_interval()));
                        }
                        None => self.reconnect_when_signed = false,
                    }
                    None
                }
                Step::Silent if self.link.reader.last_rx() + 2 * self.keep_alive() > Instant::now() => {
                    // A sync caller read from the hub since the timer was set: not silent.
                    None
                }
                Step::Silent => {
                    log::info!("{}: nothing from the hub for 2 x keep-alive: the link is dead", self.cfg.client_id);
                    let err = Error::ConnectionDropped("no ping response from the hub".into());
                    self.lose_connection(err, ConnectionReason::NoPingResponse)
                }
                Step::Opened(r) => {
                    self.connecting = None;
                    match r {
                        Some(Ok((stream, rest))) => {
                            self.conn = Some(match stream.split() {
                                Ok((read, write, fd)) => {
                                    self.link.writer.attach(write);
                                    self.link.reader.attach(read, fd, rest);
                                    Conn::Split
                                }
                                Err(whole) => {
                                    self.rbuf = rest;
                                    self.link.reader.mark_rx();
                                    Conn::Whole(whole)
                                }
                            });
                            if !self.connection_up() {
                                break (Error::OperationCancelled, None);
                            }
                            // Packets the hub sent right after its CONNACK.
                            self.parse_packets()
                        }
                        Some(Err(f)) => {
                            let token_expired =
                                self.cfg.auth.current_expiry().is_some_and(|x| x <= crate::auth::unix_now());
                            let (err, reason) = classify(&f, self.ever_connected, token_expired);
                            log::info!("{}: connection error: {err}", self.cfg.client_id);
                            self.connection_failed(err, reason)
                        }
                        None => self.connection_failed(Error::ConnectionFailed("the connector stopped".into()), ConnectionReason::NoNetwork),
                    }
                }
                Step::Ping => {
                    self.next_ping = Some(Instant::now() + self.keep_alive());
                    if let Ok(p) = encode(|b| PingReq.write(b)) {
                        let mut t = self.link.tracker();
                        self.link.queue_control(&mut t, &p);
                    }
                    None
                }
                Step::Read(Ok(0)) => {
                    let err = Error::ConnectionDropped("the hub closed the connection".into());
                    self.lose_connection(err, ConnectionReason::CommunicationError)
                }
                Step::Read(Ok(_)) => self.parse_packets(),
                Step::Read(Err(e)) => {
                    let err = Error::ConnectionDropped(format!("reading from the hub: {e}"));
                    self.lose_connection(err, ConnectionReason::CommunicationError)
                }
            };
            if let Some(end) = failure {
                break end;
            }
            // Everything this step queued (acks, re-subscriptions, a ping) goes out in one write.
            if let Err(e) = self.flush().await {
                let err = Error::ConnectionDropped(format!("writing to the hub: {e}"));
                if let Some(end) = self.lose_connection(err, ConnectionReason::CommunicationError) {
                    break end;
                }
            }
        };
        let (err, gave_up) = end;
        self.link.fail_all(err.clone());
        if let Some(reason) = gave_up {
            self.report(LinkEvent::GaveUp { reason, error: err.clone() });
        }
        let _ = self.status.send(match err {
            Error::OperationCancelled => LinkStatus::Closed,
            e => LinkStatus::Failed(e),
        });
        self.report(LinkEvent::Ended);
    }

    /// A CONNACK accepted the connection: re-send what is unacknowledged, report it; false when
    /// the owner is gone.
    fn connection_up(&mut self) -> bool {
        self.ever_connected = true;
        self.attempt = 0;
        self.outage_since = None;
        let ka = self.keep_alive();
        self.next_ping = (!ka.is_zero()).then(|| Instant::now() + ka);
        self.link.go_online();
        self.link.set_paused(false);
        // Re-subscriptions go out before anyone waiting for "connected" can queue a request.
        let renewal = std::mem::take(&mut self.renewing);
        let sent_before = self.link.tracker().subs_sent;
        let alive = self.report(LinkEvent::Connected { renewal });
        self.link.count_empty_resubscription(sent_before);
        self.link.connacks.send_modify(|n| *n += 1);
        let _ = self.status.send(LinkStatus::Connected);
        alive
    }

    /// The next complete packet read from the hub (`Ok(None)`: none complete yet).
    fn next_packet(&mut self) -> std::result::Result<Option<Packet>, rumqttc::mqttbytes::Error> {
        if matches!(self.conn, Some(Conn::Split)) {
            return self.link.reader.next_packet();
        }
        match Packet::read(&mut self.rbuf, MAX_INCOMING_PACKET) {
            Ok(p) => Ok(Some(p)),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                // Everything consumed: give the buffer back (an idle client then holds no read
                // buffer, and a large packet's growth is not kept).
                if self.rbuf.is_empty() {
                    self.rbuf = BytesMut::new();
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Handles every complete packet read; a malformed one drops the connection. Packets are
    /// taken one at a time, so a caller may handle the PUBACKs behind a packet being handled here.
    fn parse_packets(&mut self) -> Option<(Error, Option<ConnectionReason>)> {
        loop {
            match self.next_packet() {
                Ok(Some(p)) => {
                    if !self.handle_packet(p) {
                        return Some((Error::OperationCancelled, None));
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    let err = Error::ConnectionDropped(format!("malformed packet from the hub: {e}"));
                    return self.lose_connection(err, ConnectionReason::CommunicationError);
                }
            }
        }
    }

    fn retry_interval(&self) -> Duration {
        Duration::from_secs(self.cfg.options.connection_retry_interval)
    }

    /// A connection failed or dropped: report it, then either schedule the next attempt or end
    /// the loop (returns the error it ends with, and the reason when it gave up).
    fn connection_failed(&mut self, err: Error, reason: ConnectionReason) -> Option<(Error, Option<ConnectionReason>)> {
        self.renewing = false;
        self.drain_until = None;
        self.link.release_subscription_waiters();
        let was_up = matches!(*self.status.borrow(), LinkStatus::Connected);
        if !self.report(LinkEvent::Lost { reason, was_up }) {
            return Some((Error::OperationCancelled, None));
        }
        if !self.ever_connected {
            let _ = self.status.send(LinkStatus::Failed(err.clone()));
            return Some((err, None));
        }
        let (retry, give_up, max_delay) =
            (self.cfg.options.connection_retry, self.cfg.options.retry_give_up_after, self.cfg.options.retry_max_delay);
        if !retry {
            let e = Error::ConnectionDropped(format!("connection lost and connection_retry is off: {err}"));
            return Some((e, None));
        }
        let since = *self.outage_since.get_or_insert_with(Instant::now);
        if let Some(limit) = give_up {
            if since.elapsed() >= limit {
                let e = Error::ConnectionFailed(format!("gave up reconnecting after {} s: {err}", limit.as_secs()));
                return Some((e, Some(ConnectionReason::RetryExpired)));
            }
        }
        let _ = self.status.send(LinkStatus::Reconnecting);
        if err.kind() == ErrorKind::Credential {
            self.report(LinkEvent::Background(err.clone()));
            if self.cfg.auth.is_renewable() {
                // A refused or stale token is replaced before the next attempt.
                self.start_signing(true);
            } else {
                self.report(LinkEvent::SasTokenRequired);
            }
        }
        let wait = backoff(self.retry_interval(), max_delay, self.attempt, fastrand::f64());
        self.attempt = self.attempt.saturating_add(1);
        let mut at = Instant::now() + wait;
        if let Some(limit) = give_up {
            // Wake up in time to give up on schedule.
            at = at.min(since + limit);
        }
        self.retry_at = Some(at);
        None
    }

    /// Handles one packet from the hub; false when the owner is gone.
    fn handle_packet(&mut self, packet: Packet) -> bool {
        match packet {
            Packet::Publish(p) => self.report(LinkEvent::Publish(p)),
            Packet::PubAck(a) => {
                self.link.on_puback(a.pkid);
                true
            }
            Packet::SubAck(s) => {
                if s.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                    log::warn!("{}: the hub refused a subscription", self.cfg.client_id);
                }
                self.link.on_suback();
                true
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_has_full_jitter_and_is_capped() {
        let i = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(i, cap, 0, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(i, cap, 1, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(i, cap, 10, 1.0), cap, "capped by retry_max_delay");
        assert_eq!(backoff(i, cap, 1000, 1.0), cap, "no overflow for huge attempt counts");
        assert_eq!(backoff(i, cap, 3, 0.5), Duration::from_secs(8), "uniform draw below the ceiling");
        assert_eq!(backoff(i, cap, 3, 0.0), MIN_BACKOFF, "never a busy loop");
        // Drawn for real: every value within [MIN_BACKOFF, ceiling], and they differ.
        let draws: Vec<_> = (0..200).map(|_| backoff(i, cap, 4, fastrand::f64())).collect();
        assert!(draws.iter().all(|d| *d >= MIN_BACKOFF && *d <= Duration::from_secs(32)));
        assert!(draws.iter().any(|d| *d < Duration::from_secs(16)) && draws.iter().any(|d| *d > Duration::from_secs(16)));
    }

    #[test]
    fn connack_codes_map_to_errors_and_reasons() {
        let (e, r) = classify(&ConnectFailure::Refused(ConnectReturnCode::NotAuthorized), false, false);
        assert_eq!(e.kind(), ErrorKind::Credential);
        assert_eq!(r, ConnectionReason::BadCredential);
        let (_, r) = classify(&ConnectFailure::Refused(ConnectReturnCode::BadUserNamePassword), true, true);
        assert_eq!(r, ConnectionReason::ExpiredSasToken);
        let (e, r) = classify(&ConnectFailure::Refused(ConnectReturnCode::ServiceUnavailable), false, false);
        assert_eq!(e.kind(), ErrorKind::ConnectionFailed);
        assert_eq!(r, ConnectionReason::DeviceDisabled);
        let (e, _) = classify(&ConnectFailure::Timeout, false, false);
        assert_eq!(e.kind(), ErrorKind::OperationTimeout);
    }

    #[test]
    fn a_send_is_withdrawn_or_unknown_never_both() {
        let s = SendState::new();
        assert!(!s.abandon(), "abandoned while queued: withdrawn");
        assert!(!s.mark_written(), "a withdrawn send is never written");
        let s = SendState::new();
        assert!(s.mark_written());
        assert!(s.abandon(), "abandoned once written: outcome unknown");
        assert!(s.is_abandoned());
    }
}
