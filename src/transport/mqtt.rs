//! The MQTT connection of one client: a `Link` owns one rumqttc `EventLoop`, polled continuously by
//! one tokio task (the network loop) that never runs user code and never waits on anything but
//! the network and its own timers. Token signing runs in a task of its own and reports back;
//! backoff and the dead-link watchdog are timers of the loop's one `select!`.
//!
//! The loop knows nothing of sessions or handlers: it is configured by a `LinkConfig` and reports
//! `LinkEvent`s to its `LinkOwner`; the owner talks to it through `Link`'s methods (publish,
//! subscribe, ack, re-authenticate, stop). It tracks every publish until its PUBACK (rumqttc
//! reports packet ids only as events, so sends are matched to ids in channel order), keeps
//! unacknowledged publishes across reconnects and renewals, and drops on reconnect the ones whose
//! caller already gave up (reported to that caller as "outcome unknown": never re-sent silently).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing, Publish, QoS,
    Request, StateError, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::auth::{Authenticator, CurrentToken};
use crate::error::{Error, ErrorKind, Result};
use crate::message::ConnectionReason;
use crate::options::{ClientOptions, ProxyType};

/// Publishes that may be unacknowledged at once per client.
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// rumqttc's own flow-control window (packet ids wrap at this value).
const RUMQTTC_INFLIGHT: u16 = MAX_IN_FLIGHT as u16;
/// Room in the request channel for subscribes, unsubscribes and acks next to the publishes.
const CHANNEL_CAPACITY: usize = MAX_IN_FLIGHT + 256;
/// Largest packet accepted from the hub (twin documents, 128 KB method payloads, 64 KB C2D).
const MAX_INCOMING_PACKET: usize = 1024 * 1024;
/// Largest packet sent, and the hub's limit a message is checked against before it is queued:
/// a 256 KB message plus its topic.
pub(crate) const MAX_OUTGOING_PACKET: usize = 256 * 1024 + 64 * 1024;
/// No CONNACK within this bound → OperationTimeout (python-surface.md).
pub(crate) const CONNACK_TIMEOUT_SECS: u64 = 60;
/// How long a renewal waits for in-flight publishes before reconnecting anyway.
const RENEWAL_DRAIN: Duration = Duration::from_secs(2);
/// Shortest wait between reconnect attempts (full jitter may draw 0).
const MIN_BACKOFF: Duration = Duration::from_millis(50);

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

#[derive(Default)]
struct Tracker {
    /// Sent into rumqttc's channel, packet id not yet known (in channel order).
    unassigned: VecDeque<Entry>,
    by_pkid: HashMap<u16, Entry>,
    /// A publish rumqttc parked because its packet id was still in use.
    collided: Option<(u16, Entry)>,
    /// SUBSCRIBE packets handed to rumqttc on this link.
    subs_sent: u64,
    closed: Option<Error>,
}

pub(crate) struct Link {
    pub id: u64,
    client: AsyncClient,
    control: mpsc::UnboundedSender<Control>,
    status: watch::Receiver<LinkStatus>,
    tracker: Mutex<Tracker>,
    /// SUBACKs received (never above `subs_sent`): subscription waiters compare against it.
    subs_acked: watch::Sender<u64>,
    finished: watch::Receiver<bool>,
    /// True while a token renewal waits for in-flight publishes to be acknowledged, so that the
    /// fresh CONNECT retransmits nothing (no duplicates at the hub).
    paused: watch::Sender<bool>,
    /// CONNACKs received: lets `update_sastoken` wait for the re-authentication it asked for.
    connacks: watch::Sender<u64>,
}

fn io_err(e: impl std::fmt::Display) -> Error {
    Error::ConnectionFailed(e.to_string())
}

fn mqtt_options(cfg: &LinkConfig) -> Result<MqttOptions> {
    let opts = &cfg.options;
    let tls = TlsConfiguration::Rustls(cfg.tls.clone());
    let mut mo = if opts.websockets {
        let url = format!("wss://{}:{}/$iothub/websocket", cfg.host, opts.https_port);
        let mut mo = MqttOptions::new(cfg.client_id.clone(), url, opts.https_port);
        mo.set_transport(Transport::wss_with_config(tls));
        mo
    } else {
        let mut mo = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), opts.mqtt_port);
        mo.set_transport(Transport::tls_with_config(tls));
        mo
    };
    mo.set_keep_alive(Duration::from_secs(opts.keep_alive))
        .set_clean_session(false)
        .set_inflight(RUMQTTC_INFLIGHT)
        // C2D and input messages are acknowledged only once a handler or inbox took them.
        .set_manual_acks(true)
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
    if let Some(p) = &opts.proxy_options {
        if p.proxy_type != ProxyType::Http {
            return Err(Error::invalid("only HTTP proxies are supported for MQTT"));
        }
        let auth = match (&p.proxy_username, &p.proxy_password) {
            (Some(u), pw) => rumqttc::ProxyAuth::Basic { username: u.clone(), password: pw.clone().unwrap_or_default() },
            _ => rumqttc::ProxyAuth::None,
        };
        mo.set_proxy(rumqttc::Proxy { ty: rumqttc::ProxyType::Http, auth, addr: p.proxy_addr.clone(), port: p.proxy_port });
    }
    Ok(mo)
}

impl Link {
    /// Builds the MQTT options and starts the network loop (which connects). The first token is
    /// signed here, before the loop exists: a workload-API outage fails the connect, not a loop.
    pub async fn start(cfg: LinkConfig, owner: Weak<dyn LinkOwner>) -> Result<Arc<Link>> {
        let mut mo = mqtt_options(&cfg)?;
        let password = cfg.auth.password(false).await?.map(|t| t.token).unwrap_or_default();
        mo.set_credentials(cfg.username.clone(), password);

        let (client, mut eventloop) = AsyncClient::new(mo, CHANNEL_CAPACITY);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_connection_timeout(CONNACK_TIMEOUT_SECS);
        eventloop.set_network_options(net);

        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(LinkStatus::Connecting);
        let (finished_tx, finished_rx) = watch::channel(false);
        let link = Arc::new(Link {
            id: NEXT_LINK_ID.fetch_add(1, Ordering::Relaxed),
            client,
            control: control_tx,
            status: status_rx,
            tracker: Mutex::new(Tracker::default()),
            subs_acked: watch::channel(0).0,
            finished: finished_rx,
            paused: watch::channel(false).0,
            connacks: watch::channel(0).0,
        });
        let task_link = link.clone();
        crate::runtime::handle().spawn(async move {
            let mut net = NetworkLoop {
                cfg,
                owner,
                link: task_link,
                ev: eventloop,
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
                last_rx: Instant::now(),
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

    /// Waits while a renewal drains the in-flight publishes (bounded by `deadline`).
    pub async fn wait_unpaused(&self, deadline: Instant) {
        let mut rx = self.paused.subscribe();
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(|p| !*p)).await;
    }

    fn set_paused(&self, on: bool) {
        self.paused.send_if_modified(|p| std::mem::replace(p, on) != on);
    }

    /// No publish waiting for its PUBACK or for a packet id.
    fn idle(&self) -> bool {
        let t = self.tracker();
        t.by_pkid.is_empty() && t.unassigned.is_empty() && t.collided.is_none()
    }

    /// Queues a QoS 1 publish; the entry's `done` receives its PUBACK outcome. A publish its
    /// caller abandoned meanwhile is dropped here (withdrawn, never written).
    pub fn enqueue_publish(&self, topic: String, payload: Vec<u8>, entry: Entry) {
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
        // Under the tracker lock, so the order in `unassigned` is the order in rumqttc's channel.
        if self.client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_err() {
            drop(t);
            entry.complete(Err(Error::ConnectionDropped("the connection is closing".into())));
            return;
        }
        t.unassigned.push_back(entry);
    }

    /// Sends one SUBSCRIBE for `filters`; returns the SUBACK count that acknowledges it.
    pub fn send_subscribe(&self, filters: &[String]) -> Result<u64> {
        let mut t = self.tracker();
        if let Some(e) = &t.closed {
            return Err(e.clone());
        }
        let subs = filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        self.client
            .try_subscribe_many(subs)
            .map_err(|_| Error::ConnectionDropped("the connection is closing".into()))?;
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
        if self.tracker().closed.is_none() {
            let _ = self.client.try_unsubscribe(filter);
        }
    }

    /// PUBACKs a publish from the hub (no-op for QoS 0, or once the link is gone: the hub then
    /// redelivers it on the next connection).
    pub fn ack(&self, publish: &Publish) {
        let _ = self.client.try_ack(publish);
    }

    /// Subscriptions in flight when a connection drops are re-made after the reconnect: release
    /// their waiters now rather than leave them to time out.
    fn release_subscription_waiters(&self) {
        let sent = self.tracker().subs_sent;
        self.subs_acked.send_modify(|a| *a = sent);
    }

    fn on_suback(&self) {
        let sent = self.tracker().subs_sent;
        self.subs_acked.send_modify(|a| *a = (*a + 1).min(sent));
    }

    fn on_outgoing_publish(&self, pkid: u16) {
        let mut t = self.tracker();
        if t.by_pkid.contains_key(&pkid) {
            return; // a retransmission after reconnect: already tracked
        }
        if let Some(e) = t.unassigned.pop_front() {
            t.by_pkid.insert(pkid, e);
        }
    }

    fn on_collision(&self, pkid: u16) {
        let mut t = self.tracker();
        if let Some(e) = t.unassigned.pop_front() {
            t.collided = Some((pkid, e));
        }
    }

    fn on_puback(&self, pkid: u16) {
        let mut t = self.tracker();
        let done = t.by_pkid.remove(&pkid);
        if t.collided.as_ref().is_some_and(|(p, _)| *p == pkid) {
            if let Some((p, e)) = t.collided.take() {
                t.by_pkid.insert(p, e);
            }
        }
        drop(t);
        if let Some(e) = done {
            e.complete(Ok(()));
        }
    }

    /// Drops from `pending` (what rumqttc will retransmit) the publishes whose callers gave up.
    fn withdraw_abandoned(&self, pending: &mut VecDeque<Request>) {
        let mut t = self.tracker();
        let mut dropped = Vec::new();
        pending.retain(|r| match r {
            Request::Publish(p) if t.by_pkid.get(&p.pkid).is_some_and(|e| e.state.is_abandoned()) => {
                dropped.extend(t.by_pkid.remove(&p.pkid));
                false
            }
            _ => true,
        });
        drop(t);
        drop(dropped); // releases their permits and queue reservations
    }

    /// Ends every tracked operation with `err`; later enqueues fail with it too.
    fn fail_all(&self, err: Error) {
        let entries: Vec<Entry> = {
            let mut t = self.tracker();
            if t.closed.is_none() {
                t.closed = Some(err.clone());
            }
            let mut v: Vec<Entry> = t.unassigned.drain(..).collect();
            v.extend(t.by_pkid.drain().map(|(_, e)| e));
            v.extend(t.collided.take().map(|(_, e)| e));
            v
        };
        self.subs_acked.send_modify(|a| *a = u64::MAX);
        self.set_paused(false);
        for e in entries {
            e.complete(Err(err.clone()));
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

    /// Stops the loop: tracked operations end with `OperationCancelled`. Waits (bounded) for the
    /// loop to finish so no event of this link is reported after `stop` returns.
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
fn classify(e: &ConnectionError, ever_connected: bool, token_expired: bool) -> (Error, ConnectionReason) {
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
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
        ConnectionError::NetworkTimeout => (
            Error::OperationTimeout(format!("no CONNACK within {CONNACK_TIMEOUT_SECS} s")),
            ConnectionReason::NoNetwork,
        ),
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            (Error::ConnectionDropped("no ping response from the hub".into()), ConnectionReason::NoPingResponse)
        }
        other if !ever_connected => (io_err(other), ConnectionReason::NoNetwork),
        other => (Error::ConnectionDropped(other.to_string()), ConnectionReason::CommunicationError),
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
    Event(std::result::Result<Event, ConnectionError>),
}

/// The state of one network loop.
struct NetworkLoop {
    cfg: LinkConfig,
    owner: Weak<dyn LinkOwner>,
    link: Arc<Link>,
    ev: EventLoop,
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
    last_rx: Instant,
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

    async fn run(&mut self) {
        let end = loop {
            if let Some(until) = self.drain_until {
                if self.link.idle() || Instant::now() >= until || self.ev.network.is_none() {
                    self.drain_until = None;
                    if self.ev.network.is_some() {
                        log::debug!("{}: re-authenticating with a new SAS token", self.cfg.client_id);
                        self.renewing = true;
                        // Drops the socket; anything unacknowledged moves to `pending` and is resent.
                        self.ev.clean();
                    } else {
                        self.link.set_paused(false);
                    }
                }
            }
            let connected = self.ev.network.is_some();
            // No renewal timer while a token is being signed or after a failed signing's pause.
            let renew_at = if self.drain_until.is_some() {
                self.drain_until
            } else if self.signing.is_none() && self.retry_at.is_none() {
                self.renewal_instant()
            } else {
                None
            };
            let silent_at = connected.then(|| self.last_rx + 2 * self.keep_alive());
            let may_poll = self.retry_at.is_none() && !(self.reconnect_when_signed && self.signing.is_some() && !connected);
            // rumqttc forgets what was pending when the hub has no session for us: keep it aside
            // while connecting, minus what callers gave up on, and put it back in front after.
            let stash = (!connected).then(|| {
                let mut pending: VecDeque<Request> = std::mem::take(&mut self.ev.pending)
                    .into_iter()
                    .filter(|r| !matches!(r, Request::Subscribe(_)))
                    .collect();
                self.link.withdraw_abandoned(&mut pending);
                pending
            });
            let step = tokio::select! {
                biased;
                c = self.control.recv() => Step::Control(c),
                s = recv_opt(&mut self.signing) => Step::Signed(s),
                _ = sleep_until_opt(renew_at) => if self.drain_until.is_some() { Step::DrainTimeout } else { Step::Renew },
                _ = sleep_until_opt(self.retry_at) => Step::Retry,
                _ = sleep_until_opt(silent_at) => Step::Silent,
                r = self.ev.poll(), if may_poll => Step::Event(r),
            };
            if let Some(mut s) = stash {
                s.extend(self.ev.pending.drain(..));
                self.ev.pending = s;
            }
            match step {
                Step::Control(None) | Step::Control(Some(Control::Stop)) => break (Error::OperationCancelled, None),
                Step::DrainTimeout => {}
                Step::Retry => self.retry_at = None,
                Step::Control(Some(Control::Reauthenticate)) => {
                    // New credentials end a backoff at once.
                    self.retry_at = None;
                    self.reconnect_when_signed = true;
                    self.start_signing(false);
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
                }
                Step::Signed(result) => {
                    self.signing = None;
                    match result {
                        Some(Ok(token)) => {
                            if let Some(t) = token {
                                self.ev.mqtt_options.set_credentials(self.cfg.username.clone(), t.token);
                            }
                            if std::mem::take(&mut self.reconnect_when_signed) && self.ev.network.is_some() {
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
                }
                Step::Silent => {
                    log::info!("{}: nothing from the hub for 2 x keep-alive: the link is dead", self.cfg.client_id);
                    self.ev.clean();
                    let err = Error::ConnectionDropped("no ping response from the hub".into());
                    if let Some(end) = self.connection_failed(err, ConnectionReason::NoPingResponse) {
                        break end;
                    }
                }
                Step::Event(Ok(event)) => {
                    self.last_rx = Instant::now();
                    if !self.handle_event(event) {
                        break (Error::OperationCancelled, None);
                    }
                }
                Step::Event(Err(e)) => {
                    let token_expired = self.cfg.auth.current_expiry().is_some_and(|x| x <= crate::auth::unix_now());
                    let (err, reason) = classify(&e, self.ever_connected, token_expired);
                    log::info!("{}: connection error: {err}", self.cfg.client_id);
                    if let Some(end) = self.connection_failed(err, reason) {
                        break end;
                    }
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
        let wait = backoff(self.retry_interval(), max_delay, self.attempt, rand::random::<f64>());
        self.attempt = self.attempt.saturating_add(1);
        let mut at = Instant::now() + wait;
        if let Some(limit) = give_up {
            // Wake up in time to give up on schedule.
            at = at.min(since + limit);
        }
        self.retry_at = Some(at);
        None
    }

    /// Handles one rumqttc event; false when the owner is gone.
    fn handle_event(&mut self, event: Event) -> bool {
        match event {
            Event::Incoming(Incoming::ConnAck(_)) => {
                self.ever_connected = true;
                self.attempt = 0;
                self.outage_since = None;
                self.link.set_paused(false);
                // Re-subscriptions go out before anyone waiting for "connected" can queue a request.
                let renewal = std::mem::take(&mut self.renewing);
                let alive = self.report(LinkEvent::Connected { renewal });
                self.link.connacks.send_modify(|n| *n += 1);
                let _ = self.status.send(LinkStatus::Connected);
                alive
            }
            Event::Incoming(Incoming::Publish(p)) => self.report(LinkEvent::Publish(p)),
            Event::Incoming(Incoming::PubAck(a)) => {
                self.link.on_puback(a.pkid);
                true
            }
            Event::Incoming(Incoming::SubAck(s)) => {
                if s.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                    log::warn!("{}: the hub refused a subscription", self.cfg.client_id);
                }
                self.link.on_suback();
                true
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                self.link.on_outgoing_publish(pkid);
                true
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                self.link.on_collision(pkid);
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
        let draws: Vec<_> = (0..200).map(|_| backoff(i, cap, 4, rand::random::<f64>())).collect();
        assert!(draws.iter().all(|d| *d >= MIN_BACKOFF && *d <= Duration::from_secs(32)));
        assert!(draws.iter().any(|d| *d < Duration::from_secs(16)) && draws.iter().any(|d| *d > Duration::from_secs(16)));
    }

    #[test]
    fn connack_codes_map_to_errors_and_reasons() {
        let (e, r) = classify(&ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized), false, false);
        assert_eq!(e.kind(), ErrorKind::Credential);
        assert_eq!(r, ConnectionReason::BadCredential);
        let (_, r) = classify(&ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword), true, true);
        assert_eq!(r, ConnectionReason::ExpiredSasToken);
        let (e, r) = classify(&ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable), false, false);
        assert_eq!(e.kind(), ErrorKind::ConnectionFailed);
        assert_eq!(r, ConnectionReason::DeviceDisabled);
        let (e, _) = classify(&ConnectionError::NetworkTimeout, false, false);
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
