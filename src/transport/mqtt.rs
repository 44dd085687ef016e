//! The MQTT connection of one client: a `Link` owns one rumqttc `EventLoop`, polled continuously by
//! one tokio task that never runs user code. It tracks every publish until its PUBACK (rumqttc
//! reports packet ids only as events, so sends are matched to ids in channel order), reconnects
//! with backoff, renews SAS tokens by a fresh CONNECT, and keeps unacknowledged and queued
//! publishes across reconnects (resent even when the hub lost the session).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS,
    Request, StateError, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::message::ConnectionReason;
use crate::session::Session;

/// Publishes that may be unacknowledged at once per client; also the bound of the offline queue.
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// rumqttc's own flow-control window (packet ids wrap at this value).
const RUMQTTC_INFLIGHT: u16 = MAX_IN_FLIGHT as u16;
/// Room in the request channel for subscribes/unsubscribes next to the publishes.
const CHANNEL_CAPACITY: usize = MAX_IN_FLIGHT + 256;
/// Largest packet accepted from the hub (twin documents, 128 KB method payloads, 64 KB C2D).
const MAX_INCOMING_PACKET: usize = 1024 * 1024;
/// Largest packet sent: a 256 KB message plus its topic.
const MAX_OUTGOING_PACKET: usize = 256 * 1024 + 64 * 1024;
/// No CONNACK within this bound → OperationTimeout (python-surface.md).
pub(crate) const CONNACK_TIMEOUT_SECS: u64 = 60;
/// How long a renewal waits for in-flight publishes before reconnecting anyway.
const RENEWAL_DRAIN: Duration = Duration::from_secs(2);
/// Upper bound of the reconnect backoff (when the configured interval is smaller).
const MAX_BACKOFF: Duration = Duration::from_secs(60);

static NEXT_LINK_ID: AtomicU64 = AtomicU64::new(1);

/// What the owner of a link can ask of its task.
pub(crate) enum Control {
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

/// A publish waiting for its PUBACK; holds one of the client's in-flight permits.
struct Entry {
    done: oneshot::Sender<Result<()>>,
    _permit: OwnedSemaphorePermit,
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
    /// `$iothub/twin/res/#` subscribed on this link (it is re-subscribed on every reconnect).
    pub twin_subscribed: AtomicBool,
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

impl Link {
    /// Builds the MQTT options for `session` and starts the network task (which connects).
    pub async fn start(session: Arc<Session>) -> Result<Arc<Link>> {
        let opts = session.options.clone();
        let host = session.connect_host().to_string();
        let tls = TlsConfiguration::Rustls(session.tls_config());
        let mut mo = if opts.websockets {
            let url = format!("wss://{host}:{}/$iothub/websocket", opts.https_port);
            let mut mo = MqttOptions::new(session.identity.client_id(), url, opts.https_port);
            mo.set_transport(Transport::wss_with_config(tls));
            mo
        } else {
            let mut mo = MqttOptions::new(session.identity.client_id(), host, opts.mqtt_port);
            mo.set_transport(Transport::tls_with_config(tls));
            mo
        };
        mo.set_keep_alive(Duration::from_secs(opts.keep_alive))
            .set_clean_session(false)
            .set_inflight(RUMQTTC_INFLIGHT)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        if let Some(p) = &opts.proxy_options {
            mo.set_proxy(p.to_mqtt_proxy()?);
        }
        let password = session.auth.password(false).await?.map(|t| t.token).unwrap_or_default();
        mo.set_credentials(session.username(), password);

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
            twin_subscribed: AtomicBool::new(false),
            finished: finished_rx,
            paused: watch::channel(false).0,
            connacks: watch::channel(0).0,
        });
        let task_link = link.clone();
        crate::runtime::handle().spawn(async move {
            run(session, task_link, eventloop, control_rx, status_tx).await;
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

    /// Queues a QoS 1 publish; `done` receives its PUBACK outcome. On refusal `done` is handed back.
    pub fn enqueue_publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        permit: OwnedSemaphorePermit,
        done: oneshot::Sender<Result<()>>,
    ) -> std::result::Result<(), (Error, oneshot::Sender<Result<()>>)> {
        let mut t = self.tracker();
        if let Some(e) = &t.closed {
            return Err((e.clone(), done));
        }
        // Under the tracker lock, so the order in `unassigned` is the order in rumqttc's channel.
        if self.client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_err() {
            return Err((Error::ConnectionDropped("the connection is closing".into()), done));
        }
        t.unassigned.push_back(Entry { done, _permit: permit });
        Ok(())
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

    /// Ends every tracked operation with `err`; later enqueues fail with it too.
    pub fn fail_all(&self, err: Error) {
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

    /// Asks the task to reconnect with fresh credentials and waits for the hub's CONNACK.
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

    /// Asks the task to use fresh credentials at its next connection attempt.
    pub fn reauthenticate_later(&self) {
        let _ = self.control.send(Control::Reauthenticate);
    }

    /// Stops the task: tracked operations end with `OperationCancelled`. Waits (bounded) for the
    /// task to finish so no event of this link is handled after `stop` returns.
    pub async fn stop(&self) {
        self.fail_all(Error::OperationCancelled);
        let _ = self.control.send(Control::Stop);
        let mut f = self.finished.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), f.wait_for(|d| *d)).await;
    }

    /// `stop` for synchronous contexts (drop): does not wait.
    pub fn stop_now(&self) {
        self.fail_all(Error::OperationCancelled);
        let _ = self.control.send(Control::Stop);
    }
}

/// Pending requests from before a reconnect, without the SUBSCRIBEs (every reconnect re-subscribes).
fn take_pending(ev: &mut EventLoop) -> VecDeque<Request> {
    std::mem::take(&mut ev.pending).into_iter().filter(|r| !matches!(r, Request::Subscribe(_))).collect()
}

/// Puts the stashed requests back in front, so they go out first on the new connection (rumqttc
/// drops them when the hub has no session for us; we resend them in any case).
fn restore_pending(ev: &mut EventLoop, mut stash: VecDeque<Request>) {
    stash.extend(ev.pending.drain(..));
    ev.pending = stash;
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn backoff(interval: Duration, attempt: u32) -> Duration {
    let cap = MAX_BACKOFF.max(interval);
    interval.saturating_mul(1u32 << attempt.min(16)).min(cap)
}

/// What a connection error means for the caller and for the connection state handler.
fn classify(e: &ConnectionError, ever_connected: bool, token_expired: bool) -> (Error, ConnectionReason) {
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => {
                let reason = if token_expired { ConnectionReason::ExpiredSasToken } else { ConnectionReason::BadCredential };
                (Error::Credential(format!("the hub refused the credentials ({code:?})")), reason)
            }
            ConnectReturnCode::ServiceUnavailable => {
                (Error::ConnectionFailed("the hub is unavailable (CONNACK 3)".into()), ConnectionReason::CommunicationError)
            }
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

enum Step {
    Control(Option<Control>),
    Renew,
    DrainTimeout,
    Event(std::result::Result<Event, ConnectionError>),
}

/// The network task of one link.
async fn run(
    session: Arc<Session>,
    link: Arc<Link>,
    mut ev: EventLoop,
    mut control: mpsc::UnboundedReceiver<Control>,
    status: watch::Sender<LinkStatus>,
) {
    let interval = Duration::from_secs(session.options.connection_retry_interval);
    let mut ever_connected = false;
    let mut attempt: u32 = 0;
    // A reconnect made only to present a new token is invisible to the application.
    let mut renewing = false;
    // Renewal waiting for the in-flight publishes to drain, until this instant at most.
    let mut drain_until: Option<Instant> = None;
    let end = loop {
        if let Some(until) = drain_until {
            if link.idle() || Instant::now() >= until || ev.network.is_none() {
                drain_until = None;
                if ev.network.is_some() {
                    log::debug!("{}: re-authenticating with a new SAS token", session.identity.client_id());
                    renewing = true;
                    // Drops the socket; anything unacknowledged moves to `pending` and is resent.
                    ev.clean();
                } else {
                    link.set_paused(false);
                }
            }
        }
        let renew_at = if drain_until.is_some() { drain_until } else { session.renewal_instant() };
        let stash = ev.network.is_none().then(|| take_pending(&mut ev));
        let step = tokio::select! {
            biased;
            c = control.recv() => Step::Control(c),
            _ = sleep_until_opt(renew_at) => if drain_until.is_some() { Step::DrainTimeout } else { Step::Renew },
            r = ev.poll() => Step::Event(r),
        };
        if let Some(s) = stash {
            restore_pending(&mut ev, s);
        }
        match step {
            Step::Control(None) | Step::Control(Some(Control::Stop)) => break Error::OperationCancelled,
            Step::DrainTimeout => {}
            Step::Control(Some(Control::Reauthenticate)) | Step::Renew => {
                let fresh = matches!(step, Step::Renew);
                if fresh && !session.auth.is_renewable() {
                    // A given token cannot renew itself: ask the application, once per token.
                    session.sastoken_required();
                    continue;
                }
                match session.auth.password(fresh).await {
                    Ok(Some(t)) => {
                        ev.mqtt_options.set_credentials(session.username(), t.token);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        session.background_error(e);
                        // Try again after a pause rather than spin.
                        tokio::time::sleep(interval).await;
                        continue;
                    }
                }
                if ev.network.is_some() {
                    // Hold new publishes back and let the in-flight ones be acknowledged first.
                    link.set_paused(true);
                    drain_until = Some(Instant::now() + RENEWAL_DRAIN);
                }
            }
            Step::Event(Ok(event)) => {
                attempt = 0;
                handle_event(&session, &link, &status, event, &mut ever_connected, &mut renewing);
            }
            Step::Event(Err(e)) => {
                let token_expired = session.auth.current_expiry().is_some_and(|x| x <= crate::auth::unix_now());
                let (err, reason) = classify(&e, ever_connected, token_expired);
                log::info!("{}: connection error: {err}", session.identity.client_id());
                renewing = false;
                link.release_subscription_waiters();
                session.connection_lost(reason, ever_connected);
                if !ever_connected {
                    let _ = status.send(LinkStatus::Failed(err.clone()));
                    break err;
                }
                if !session.options.connection_retry {
                    break Error::ConnectionDropped(format!("connection lost and connection_retry is off: {err}"));
                }
                let _ = status.send(LinkStatus::Reconnecting);
                if err.kind() == crate::error::ErrorKind::Credential {
                    session.background_error(err.clone());
                    if !session.auth.is_renewable() {
                        session.sastoken_required();
                    }
                }
                let wait = backoff(interval, attempt);
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    c = control.recv() => match c {
                        Some(Control::Reauthenticate) => {}
                        _ => break Error::OperationCancelled,
                    },
                    _ = tokio::time::sleep(wait) => {}
                }
                // A refused or stale token is replaced before the next attempt when we can.
                let fresh = err.kind() == crate::error::ErrorKind::Credential;
                if let Ok(Some(t)) = session.auth.password(fresh && session.auth.is_renewable()).await {
                    ev.mqtt_options.set_credentials(session.username(), t.token);
                }
            }
        }
    };
    link.fail_all(end.clone());
    let _ = status.send(match end {
        Error::OperationCancelled => LinkStatus::Closed,
        e => LinkStatus::Failed(e),
    });
    session.link_ended(link.id);
}

fn handle_event(
    session: &Arc<Session>,
    link: &Arc<Link>,
    status: &watch::Sender<LinkStatus>,
    event: Event,
    ever_connected: &mut bool,
    renewing: &mut bool,
) {
    match event {
        Event::Incoming(Incoming::ConnAck(_)) => {
            *ever_connected = true;
            link.set_paused(false);
            // Re-subscriptions go out before anyone waiting for "connected" can queue a request.
            session.connection_established(link, std::mem::take(renewing));
            link.connacks.send_modify(|n| *n += 1);
            let _ = status.send(LinkStatus::Connected);
        }
        Event::Incoming(Incoming::Publish(p)) => session.on_publish(p),
        Event::Incoming(Incoming::PubAck(a)) => link.on_puback(a.pkid),
        Event::Incoming(Incoming::SubAck(s)) => {
            if s.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                log::warn!("{}: the hub refused a subscription", session.identity.client_id());
            }
            link.on_suback();
        }
        Event::Outgoing(Outgoing::Publish(pkid)) => link.on_outgoing_publish(pkid),
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => link.on_collision(pkid),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_from_the_interval_and_is_bounded() {
        let i = Duration::from_secs(2);
        assert_eq!(backoff(i, 0), Duration::from_secs(2));
        assert_eq!(backoff(i, 1), Duration::from_secs(4));
        assert_eq!(backoff(i, 10), MAX_BACKOFF);
        let big = Duration::from_secs(120);
        assert_eq!(backoff(big, 5), big, "never below the configured interval");
    }

    #[test]
    fn refused_credentials_are_credential_errors() {
        let (e, r) = classify(&ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized), false, false);
        assert_eq!(e.kind(), crate::error::ErrorKind::Credential);
        assert_eq!(r, ConnectionReason::BadCredential);
        let (_, r) = classify(&ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword), true, true);
        assert_eq!(r, ConnectionReason::ExpiredSasToken);
        let (e, _) = classify(&ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable), false, false);
        assert_eq!(e.kind(), crate::error::ErrorKind::ConnectionFailed);
        let (e, _) = classify(&ConnectionError::NetworkTimeout, false, false);
        assert_eq!(e.kind(), crate::error::ErrorKind::OperationTimeout);
    }
}
