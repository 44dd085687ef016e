//! The engine behind `Client`: connection lifecycle (connect, disconnect, shutdown, auto-connect),
//! operations (telemetry, twin, methods), handler registry and the subscriptions it implies,
//! delivery of incoming messages to the dispatcher or to the deprecated inboxes, and the
//! `ensure_desired_properties` resync. Network I/O itself is `transport::mqtt::Link`'s.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ironhub_protocol::limits;
use ironhub_protocol::topics::{self, DeviceBound, PropertyBag};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::time::Instant;

use crate::auth::{Authenticator, Credential, Identity};
use crate::client::{
    BackgroundExceptionHandler, ConnectionStateHandler, MessageHandler, MethodRequestHandler, SasTokenRequiredHandler,
    SendCallback, SendFuture, TwinPatchHandler,
};
use crate::dispatch::SerialQueue;
use crate::error::{Error, Result};
use crate::message::{ConnectionReason, ConnectionStateChange, Message, MethodRequest, MethodResponse};
use crate::options::ClientOptions;
use crate::transport::mqtt::{Link, LinkStatus, CONNACK_TIMEOUT_SECS, MAX_IN_FLIGHT};

#[derive(Default)]
struct Handlers {
    message: Option<MessageHandler>,
    method: Option<MethodRequestHandler>,
    twin_patch: Option<TwinPatchHandler>,
    connection_state: Option<ConnectionStateHandler>,
    sastoken: Option<SasTokenRequiredHandler>,
    background: Option<BackgroundExceptionHandler>,
}

/// The deprecated `receive_*` APIs: once used for a feature, that feature's arrivals queue here.
#[derive(Default)]
struct Inbox {
    messages_mode: bool,
    methods_mode: bool,
    twin_mode: bool,
    messages: VecDeque<Message>,
    methods: VecDeque<MethodRequest>,
    twin_patches: VecDeque<Value>,
}

/// Subscription-bearing features.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Feature {
    Messages,
    Methods,
    DesiredPatches,
}

/// Answer to a twin request, or "ask again" when the connection dropped while waiting.
enum TwinAnswer {
    Response { status: u16, body: Bytes },
    Retry,
}

pub(crate) struct Session {
    pub identity: Identity,
    pub options: ClientOptions,
    pub auth: Authenticator,
    username: String,
    tls: Arc<rustls::ClientConfig>,
    queue: Arc<SerialQueue>,
    handlers: Arc<Mutex<Handlers>>,
    inbox: Mutex<Inbox>,
    inbox_notify: Notify,
    link: Mutex<Option<Arc<Link>>>,
    connect_lock: tokio::sync::Mutex<()>,
    connected: AtomicBool,
    shut_down: AtomicBool,
    permits: Arc<Semaphore>,
    twin_waiters: Mutex<HashMap<String, oneshot::Sender<TwinAnswer>>>,
    /// Twin requests were made: `$iothub/twin/res/#` is part of every re-subscription.
    twin_wanted: AtomicBool,
    next_rid: AtomicU64,
    last_desired_version: Mutex<Option<u64>>,
    /// Expiry of the given token for which `on_new_sastoken_required` already fired.
    sastoken_notified: Mutex<Option<u64>>,
    edge: AtomicBool,
    http: Mutex<Option<reqwest::Client>>,
    /// Telemetry goes through one ordered queue (drained by one task per client), so the wire
    /// order is the call order even while connecting or waiting for an in-flight slot.
    outbox: Mutex<Option<mpsc::UnboundedSender<OutgoingSend>>>,
    outbox_len: Arc<AtomicUsize>,
}

/// A telemetry publish waiting for its turn in the client's outbox.
struct OutgoingSend {
    topic: String,
    payload: Vec<u8>,
    deadline: Instant,
    done: oneshot::Sender<Result<()>>,
}

/// Sends queued beyond this are refused at once rather than piling up while offline.
const MAX_OUTBOX: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn user_agent() -> String {
    format!("ironhub/{}", env!("CARGO_PKG_VERSION"))
}

/// `{hub}/{clientId}/?api-version=..&DeviceClientType=..[&model-id=..]` (wire-protocol.md).
fn build_username(identity: &Identity, product_info: &str) -> String {
    let enc = ironhub_protocol::encoding::percent_encode;
    let base = format!("{}/{}/", identity.hostname, identity.client_id());
    if product_info.starts_with("dtmi") {
        format!(
            "{base}?api-version=2020-09-30&DeviceClientType={}&model-id={}",
            enc(&user_agent()),
            enc(product_info)
        )
    } else {
        format!("{base}?api-version=2019-10-01&DeviceClientType={}", enc(&(user_agent() + product_info)))
    }
}

/// The property bag a message is sent with.
fn outgoing_bag(m: &Message) -> PropertyBag {
    PropertyBag {
        message_id: m.message_id.clone(),
        correlation_id: m.correlation_id.clone(),
        user_id: m.user_id.clone(),
        content_type: m.content_type.clone(),
        content_encoding: m.content_encoding.clone(),
        expiry_time_utc: m.expiry_time_utc.clone(),
        output_name: m.output_name.clone(),
        interface_id: m.iothub_interface_id.clone(),
        custom: m.custom_properties.clone(),
        ..Default::default()
    }
}

/// A received C2D/input message: system properties by name; `$.on`, `$.cdid`, `$.cmid` and user
/// keys in `custom_properties` (as azure-iot-device surfaces them); `$.to` ignored.
fn incoming_message(bag: PropertyBag, data: Bytes, input_name: Option<String>) -> Message {
    let mut custom = Vec::with_capacity(bag.custom.len() + 3);
    for (k, v) in [("$.on", bag.output_name), ("$.cdid", bag.connection_device_id), ("$.cmid", bag.connection_module_id)] {
        if let Some(v) = v {
            custom.push((k.to_string(), v));
        }
    }
    custom.extend(bag.custom);
    Message {
        data,
        custom_properties: custom,
        message_id: bag.message_id,
        expiry_time_utc: bag.expiry_time_utc,
        correlation_id: bag.correlation_id,
        user_id: bag.user_id,
        content_encoding: bag.content_encoding,
        content_type: bag.content_type,
        output_name: None,
        input_name,
        ack: bag.ack,
        iothub_interface_id: bag.interface_id,
    }
}

fn json_payload(bytes: &[u8]) -> Value {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

impl Session {
    pub fn new(identity: Identity, auth: Authenticator, options: ClientOptions) -> Result<Arc<Session>> {
        let x509 = match auth.credential() {
            Credential::X509(x) => Some(x.clone()),
            _ => None,
        };
        let tls = crate::transport::tls::client_config(options.server_verification_cert.as_deref(), &options.cipher, x509.as_ref())?;
        let username = build_username(&identity, &options.product_info);
        let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
        let session = Arc::new(Session {
            identity,
            options,
            auth,
            username,
            tls,
            queue: SerialQueue::new(),
            handlers: Arc::new(Mutex::new(Handlers::default())),
            inbox: Mutex::new(Inbox::default()),
            inbox_notify: Notify::new(),
            link: Mutex::new(None),
            connect_lock: tokio::sync::Mutex::new(()),
            connected: AtomicBool::new(false),
            shut_down: AtomicBool::new(false),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            twin_waiters: Mutex::new(HashMap::new()),
            twin_wanted: AtomicBool::new(false),
            next_rid: AtomicU64::new(1),
            last_desired_version: Mutex::new(None),
            sastoken_notified: Mutex::new(None),
            edge: AtomicBool::new(false),
            http: Mutex::new(None),
            outbox: Mutex::new(Some(outbox_tx)),
            outbox_len: Arc::new(AtomicUsize::new(0)),
        });
        crate::runtime::handle().spawn(drain_outbox(Arc::downgrade(&session), outbox_rx));
        Ok(session)
    }

    /// Runs an operation on the shared runtime (so it works from any executor) and awaits it.
    pub async fn run<F, Fut, T>(self: Arc<Self>, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Session>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        crate::runtime::handle()
            .spawn(f(self))
            .await
            .map_err(|_| Error::Client("internal task failed".into()))?
    }

    pub fn set_edge(&self, on: bool) {
        self.edge.store(on, Ordering::Relaxed);
    }

    pub fn username(&self) -> String {
        self.username.clone()
    }

    pub fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    /// The host actually connected to.
    pub fn connect_host(&self) -> &str {
        self.options.gateway_hostname.as_deref().unwrap_or(&self.identity.hostname)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn check_open(&self) -> Result<()> {
        if self.shut_down.load(Ordering::SeqCst) {
            Err(Error::ShutDown)
        } else {
            Ok(())
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.options.operation_timeout
    }

    fn current_link(&self) -> Option<Arc<Link>> {
        lock(&self.link).clone()
    }

    // ----- lifecycle -------------------------------------------------------------------------

    pub async fn connect(self: &Arc<Self>) -> Result<()> {
        self.check_open()?;
        let _g = self.connect_lock.lock().await;
        self.check_open()?;
        let deadline = Instant::now() + Duration::from_secs(CONNACK_TIMEOUT_SECS).min(self.options.operation_timeout);
        if let Some(link) = self.current_link() {
            return link.wait_connected(deadline).await;
        }
        let link = Link::start(self.clone()).await?;
        *lock(&self.link) = Some(link.clone());
        match link.wait_connected(deadline).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.drop_link(&link).await;
                Err(e)
            }
        }
    }

    async fn drop_link(&self, link: &Arc<Link>) {
        {
            let mut l = lock(&self.link);
            if l.as_ref().is_some_and(|cur| cur.id == link.id) {
                *l = None;
            }
        }
        link.stop().await;
    }

    /// The link, connecting first when allowed (`auto_connect`).
    async fn ensure_link(self: &Arc<Self>) -> Result<Arc<Link>> {
        self.check_open()?;
        if let Some(l) = self.current_link() {
            if !matches!(l.status(), LinkStatus::Failed(_) | LinkStatus::Closed) {
                return Ok(l);
            }
        }
        if !self.options.auto_connect {
            return Err(Error::NoConnection);
        }
        self.connect().await?;
        self.current_link().ok_or_else(|| Error::ConnectionDropped("the connection closed right after connecting".into()))
    }

    pub async fn disconnect(self: &Arc<Self>) -> Result<()> {
        // No connect_lock here: a connect still waiting for its CONNACK is cancelled, not awaited.
        let link = lock(&self.link).take();
        // Reported before the link stops, so its end is not mistaken for a dropped connection.
        if self.connected.swap(false, Ordering::SeqCst) {
            self.notify_state(false, ConnectionReason::ClientClose);
        }
        if let Some(link) = link {
            link.stop().await;
        }
        self.fail_twin_waiters();
        Ok(())
    }

    pub async fn shutdown(self: &Arc<Self>) -> Result<()> {
        self.check_open()?;
        self.shut_down.store(true, Ordering::SeqCst);
        lock(&self.outbox).take();
        self.disconnect().await?;
        self.clear_handlers();
        self.inbox_notify.notify_waiters();
        Ok(())
    }

    /// Drop of the last `Client`: stop everything without waiting.
    pub fn shutdown_now(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
        lock(&self.outbox).take();
        if let Some(link) = lock(&self.link).take() {
            link.stop_now();
        }
        self.fail_twin_waiters();
        self.connected.store(false, Ordering::SeqCst);
        self.clear_handlers();
        self.inbox_notify.notify_waiters();
    }

    fn clear_handlers(&self) {
        let old = self.queue.exclusive(|| std::mem::take(&mut *lock(&self.handlers)));
        drop(old); // user closures (and what they captured) are released outside our locks
    }

    fn fail_twin_waiters(&self) {
        lock(&self.twin_waiters).clear(); // dropped senders → OperationCancelled for the waiters
    }

    // ----- called by the link task -----------------------------------------------------------

    pub fn link_ended(&self, link_id: u64) {
        let mut l = lock(&self.link);
        if l.as_ref().is_some_and(|cur| cur.id == link_id) {
            *l = None;
        }
        drop(l);
        if self.connected.swap(false, Ordering::SeqCst) {
            self.notify_state(false, ConnectionReason::CommunicationError);
        }
    }

    /// Seconds-precise instant at which the token must be renewed (or the app asked for a new one).
    pub fn renewal_instant(&self) -> Option<Instant> {
        let expiry = self.auth.current_expiry()?;
        if !self.auth.is_renewable() && *lock(&self.sastoken_notified) == Some(expiry) {
            return None;
        }
        let at = expiry.saturating_sub(self.auth.renewal_margin());
        let now = crate::auth::unix_now();
        Some(Instant::now() + Duration::from_secs(at.saturating_sub(now)))
    }

    pub fn sastoken_required(&self) {
        let expiry = self.auth.current_expiry();
        {
            let mut n = lock(&self.sastoken_notified);
            if *n == expiry {
                return;
            }
            *n = expiry;
        }
        self.dispatch(|h| h.sastoken.clone(), |h| h());
    }

    pub fn background_error(&self, e: Error) {
        log::warn!("{}: background error: {e}", self.identity.client_id());
        self.dispatch(|h| h.background.clone(), move |h| h(e));
    }

    pub fn connection_established(self: &Arc<Self>, link: &Arc<Link>, renewal: bool) {
        log::debug!("{}: connected", self.identity.client_id());
        // Re-subscribe what the handlers need on every (re)connect: the hub may have lost the session.
        let filters = self.wanted_filters();
        if !filters.is_empty() {
            if let Err(e) = link.send_subscribe(&filters) {
                self.background_error(e);
            }
        }
        if self.twin_wanted.load(Ordering::SeqCst) {
            link.twin_subscribed.store(true, Ordering::SeqCst);
        }
        let changed = !self.connected.swap(true, Ordering::SeqCst);
        if changed && !renewal {
            self.notify_state(true, ConnectionReason::Ok);
        }
        if !renewal && self.options.ensure_desired_properties && lock(&self.handlers).twin_patch.is_some() {
            let s = self.clone();
            crate::runtime::handle().spawn(async move { s.resync_desired().await });
        }
    }

    pub fn connection_lost(&self, reason: ConnectionReason, was_up: bool) {
        // Twin requests waiting for an answer ask again after the reconnect.
        for (_, w) in lock(&self.twin_waiters).drain() {
            let _ = w.send(TwinAnswer::Retry);
        }
        if was_up && self.connected.swap(false, Ordering::SeqCst) {
            self.notify_state(false, reason);
        }
    }

    fn notify_state(&self, connected: bool, reason: ConnectionReason) {
        let change = ConnectionStateChange { connected, reason };
        self.dispatch(|h| h.connection_state.clone(), move |h| h(change));
    }

    /// Queues a handler call on the dispatcher. The handler is looked up when the job runs (under
    /// the queue's exclusive section), so a handler cleared in between never runs.
    fn dispatch<H: Send + 'static>(
        &self,
        pick: impl FnOnce(&Handlers) -> Option<H> + Send + 'static,
        call: impl FnOnce(H) + Send + 'static,
    ) {
        let table = self.handlers.clone();
        self.queue.push(move || {
            let h = pick(&lock(&table));
            if let Some(h) = h {
                call(h);
            }
        });
    }

    /// Hands an arrival to its inbox when that feature is in inbox mode (returns true).
    fn to_inbox(&self, push: impl FnOnce(&mut Inbox) -> bool) -> bool {
        let taken = push(&mut lock(&self.inbox));
        if taken {
            self.inbox_notify.notify_waiters();
        }
        taken
    }

    fn deliver_message(&self, m: Message) {
        let mut slot = Some(m);
        let taken = self.to_inbox(|i| {
            if i.messages_mode {
                i.messages.extend(slot.take());
                true
            } else {
                false
            }
        });
        if !taken {
            if let Some(m) = slot {
                self.dispatch(|h| h.message.clone(), move |h| h(m));
            }
        }
    }

    fn deliver_method(&self, r: MethodRequest) {
        let mut slot = Some(r);
        let taken = self.to_inbox(|i| {
            if i.methods_mode {
                i.methods.extend(slot.take());
                true
            } else {
                false
            }
        });
        if !taken {
            if let Some(r) = slot {
                self.dispatch(|h| h.method.clone(), move |h| h(r));
            }
        }
    }

    fn deliver_twin_patch(&self, patch: Value) {
        let mut slot = Some(patch);
        let taken = self.to_inbox(|i| {
            if i.twin_mode {
                i.twin_patches.extend(slot.take());
                true
            } else {
                false
            }
        });
        if !taken {
            if let Some(p) = slot {
                self.dispatch(|h| h.twin_patch.clone(), move |h| h(p));
            }
        }
    }

    pub fn on_publish(self: &Arc<Self>, p: rumqttc::Publish) {
        match topics::parse_device_bound(&p.topic) {
            Some(DeviceBound::C2d { bag, .. }) => self.deliver_message(incoming_message(bag, p.payload, None)),
            Some(DeviceBound::Input { bag, input_name, .. }) => {
                self.deliver_message(incoming_message(bag, p.payload, Some(input_name)))
            }
            Some(DeviceBound::MethodRequest { name, rid }) => {
                self.deliver_method(MethodRequest { request_id: rid, name, payload: json_payload(&p.payload) })
            }
            Some(DeviceBound::TwinResponse { status, rid, .. }) => {
                if let Some(w) = lock(&self.twin_waiters).remove(&rid) {
                    let _ = w.send(TwinAnswer::Response { status, body: p.payload });
                }
            }
            Some(DeviceBound::DesiredPatch { version }) => {
                let patch = json_payload(&p.payload);
                let v = version.or_else(|| patch.get("$version").and_then(Value::as_u64));
                if v.is_some() {
                    *lock(&self.last_desired_version) = v;
                }
                self.deliver_twin_patch(patch);
            }
            None => log::debug!("{}: ignoring a publish on an unknown topic", self.identity.client_id()),
        }
    }

    // ----- subscriptions -----------------------------------------------------------------------

    fn filter_of(&self, f: Feature) -> String {
        match f {
            Feature::Messages => match &self.identity.module_id {
                Some(m) => topics::input_filter(&self.identity.device_id, m),
                None => topics::c2d_filter(&self.identity.device_id),
            },
            Feature::Methods => topics::METHOD_REQUEST_FILTER.to_string(),
            Feature::DesiredPatches => topics::DESIRED_PATCH_FILTER.to_string(),
        }
    }

    fn wants(&self, f: Feature) -> bool {
        let h = lock(&self.handlers);
        let i = lock(&self.inbox);
        match f {
            Feature::Messages => h.message.is_some() || i.messages_mode,
            Feature::Methods => h.method.is_some() || i.methods_mode,
            Feature::DesiredPatches => h.twin_patch.is_some() || i.twin_mode,
        }
    }

    /// Every filter the current handlers, inboxes and twin use need (twin responses first, so a
    /// twin GET sent right after never beats its subscription).
    fn wanted_filters(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.twin_wanted.load(Ordering::SeqCst) {
            v.push(topics::TWIN_RESPONSE_FILTER.to_string());
        }
        for f in [Feature::Messages, Feature::Methods, Feature::DesiredPatches] {
            if self.wants(f) {
                v.push(self.filter_of(f));
            }
        }
        v
    }

    /// After a handler/inbox change: subscribe (auto-connecting) or unsubscribe.
    async fn sync_subscription(self: &Arc<Self>, f: Feature, before: bool) -> Result<()> {
        let after = self.wants(f);
        if after && !before {
            if f == Feature::DesiredPatches && self.options.ensure_desired_properties {
                // ensure_desired_properties needs twin responses too.
                self.twin_wanted.store(true, Ordering::SeqCst);
            }
            let link = match self.current_link() {
                Some(l) => l,
                None if self.options.auto_connect => self.ensure_link().await?,
                // Not connected and not allowed to connect: `connection_established` subscribes later.
                None => return Ok(()),
            };
            let mut filters = vec![self.filter_of(f)];
            if self.twin_wanted.load(Ordering::SeqCst) && !link.twin_subscribed.swap(true, Ordering::SeqCst) {
                filters.insert(0, topics::TWIN_RESPONSE_FILTER.to_string());
            }
            link.subscribe(&filters, self.deadline()).await?;
        } else if before && !after {
            if let Some(link) = self.current_link() {
                link.unsubscribe(&self.filter_of(f));
            }
        }
        Ok(())
    }

    async fn ensure_twin_subscription(self: &Arc<Self>, link: &Arc<Link>, deadline: Instant) -> Result<()> {
        self.twin_wanted.store(true, Ordering::SeqCst);
        if !link.twin_subscribed.swap(true, Ordering::SeqCst) {
            if let Err(e) = link.subscribe(&[topics::TWIN_RESPONSE_FILTER.to_string()], deadline).await {
                link.twin_subscribed.store(false, Ordering::SeqCst);
                return Err(e);
            }
        }
        Ok(())
    }

    // ----- handlers ----------------------------------------------------------------------------

    fn set_handler(&self, set: impl FnOnce(&mut Handlers)) -> Result<()> {
        self.check_open()?;
        self.queue.exclusive(|| set(&mut lock(&self.handlers)));
        Ok(())
    }

    fn refuse_if_inbox(&self, mode: impl Fn(&Inbox) -> bool, what: &str) -> Result<()> {
        if mode(&lock(&self.inbox)) {
            return Err(Error::Client(format!(
                "cannot set a {what} handler after using the deprecated receive API for it"
            )));
        }
        Ok(())
    }

    pub async fn set_message_handler(self: &Arc<Self>, h: Option<MessageHandler>) -> Result<()> {
        self.check_open()?;
        if h.is_some() {
            self.refuse_if_inbox(|i| i.messages_mode, "message")?;
        }
        let before = self.wants(Feature::Messages);
        self.set_handler(|t| t.message = h)?;
        self.sync_subscription(Feature::Messages, before).await
    }

    pub async fn set_method_handler(self: &Arc<Self>, h: Option<MethodRequestHandler>) -> Result<()> {
        self.check_open()?;
        if h.is_some() {
            self.refuse_if_inbox(|i| i.methods_mode, "method request")?;
        }
        let before = self.wants(Feature::Methods);
        self.set_handler(|t| t.method = h)?;
        self.sync_subscription(Feature::Methods, before).await
    }

    pub async fn set_twin_patch_handler(self: &Arc<Self>, h: Option<TwinPatchHandler>) -> Result<()> {
        self.check_open()?;
        if h.is_some() {
            self.refuse_if_inbox(|i| i.twin_mode, "twin patch")?;
        }
        let before = self.wants(Feature::DesiredPatches);
        self.set_handler(|t| t.twin_patch = h)?;
        self.sync_subscription(Feature::DesiredPatches, before).await
    }

    pub fn set_connection_state_handler(&self, h: Option<ConnectionStateHandler>) -> Result<()> {
        self.set_handler(|t| t.connection_state = h)
    }

    pub fn set_sastoken_handler(&self, h: Option<SasTokenRequiredHandler>) -> Result<()> {
        self.set_handler(|t| t.sastoken = h)
    }

    pub fn set_background_exception_handler(&self, h: Option<BackgroundExceptionHandler>) -> Result<()> {
        self.set_handler(|t| t.background = h)
    }

    // ----- telemetry -----------------------------------------------------------------------------

    /// Topic and payload of a message, validated (size limit before anything is sent).
    fn telemetry(&self, m: &Message) -> Result<(String, Vec<u8>)> {
        let size = m.get_size();
        if size > limits::MAX_TELEMETRY_BYTES {
            return Err(Error::MessageTooLarge { size, limit: limits::MAX_TELEMETRY_BYTES });
        }
        if m.output_name.is_some() && self.identity.module_id.is_none() {
            return Err(Error::invalid("only module clients can send to an output"));
        }
        let topic = topics::telemetry_topic(&self.identity.device_id, self.identity.module_id.as_deref(), &outgoing_bag(m));
        Ok((topic, m.data.to_vec()))
    }

    /// Publishes at QoS 1 and waits for the PUBACK (bounded by `deadline`).
    async fn publish(self: &Arc<Self>, topic: String, payload: Vec<u8>, deadline: Instant) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(topic, payload, deadline, tx).await;
        Self::await_puback(rx, deadline).await
    }

    /// Hands one publish to the link (connecting first when allowed, waiting for an in-flight
    /// slot); every failure is reported through `done`.
    async fn enqueue(self: &Arc<Self>, topic: String, payload: Vec<u8>, deadline: Instant, done: oneshot::Sender<Result<()>>) {
        let link = match tokio::time::timeout_at(deadline, self.ensure_link()).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                let _ = done.send(Err(e));
                return;
            }
            Err(_) => {
                let _ = done.send(Err(Error::OperationTimeout("not connected in time".into())));
                return;
            }
        };
        link.wait_unpaused(deadline).await;
        let permit = match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                let _ = done.send(Err(Error::ShutDown));
                return;
            }
            Err(_) => {
                let _ = done.send(Err(Error::OperationTimeout("too many messages waiting for the hub".into())));
                return;
            }
        };
        if let Err((e, done)) = link.enqueue_publish(topic, payload, permit, done) {
            let _ = done.send(Err(e));
        }
    }

    async fn await_puback(rx: oneshot::Receiver<Result<()>>, deadline: Instant) -> Result<()> {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::OperationCancelled),
            Err(_) => Err(Error::OperationTimeout("no PUBACK from the hub in time".into())),
        }
    }

    pub fn send_pipelined(self: Arc<Self>, m: &Message) -> SendFuture {
        let prepared = self.check_open().and_then(|_| self.telemetry(m));
        let (topic, payload) = match prepared {
            Ok(tp) => tp,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        if !self.options.auto_connect && self.current_link().is_none() {
            return Box::pin(std::future::ready(Err(Error::NoConnection)));
        }
        let deadline = self.deadline();
        let (tx, rx) = oneshot::channel();
        let queued = {
            let outbox = lock(&self.outbox);
            match &*outbox {
                Some(q) if self.outbox_len.load(Ordering::Relaxed) < MAX_OUTBOX => {
                    self.outbox_len.fetch_add(1, Ordering::Relaxed);
                    q.send(OutgoingSend { topic, payload, deadline, done: tx }).is_ok()
                }
                Some(_) => {
                    return Box::pin(std::future::ready(Err(Error::OperationTimeout(
                        "too many messages queued for the hub".into(),
                    ))))
                }
                None => false,
            }
        };
        if !queued {
            return Box::pin(std::future::ready(Err(Error::ShutDown)));
        }
        Box::pin(Self::await_puback(rx, deadline))
    }

    pub fn send_with_callback(self: Arc<Self>, m: &Message, callback: SendCallback) {
        let guard = CallbackGuard { cb: Some(callback), queue: self.queue.clone() };
        let fut = self.send_pipelined(m);
        crate::runtime::handle().spawn(async move {
            let r = fut.await;
            guard.complete(r);
        });
    }

    // ----- twin ------------------------------------------------------------------------------------

    /// One twin request/response exchange (`$rid` correlated), asked again if the connection drops
    /// while waiting; bounded by `operation_timeout`.
    async fn twin_request(self: &Arc<Self>, topic_for: impl Fn(&str) -> String, payload: &[u8]) -> Result<(u16, Bytes)> {
        let deadline = self.deadline();
        loop {
            let link = self.ensure_link().await?;
            self.ensure_twin_subscription(&link, deadline).await?;
            let rid = self.next_rid.fetch_add(1, Ordering::Relaxed).to_string();
            let (tx, rx) = oneshot::channel();
            lock(&self.twin_waiters).insert(rid.clone(), tx);
            if let Err(e) = self.publish(topic_for(&rid), payload.to_vec(), deadline).await {
                lock(&self.twin_waiters).remove(&rid);
                return Err(e);
            }
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(TwinAnswer::Response { status, body })) => return Ok((status, body)),
                Ok(Ok(TwinAnswer::Retry)) => {
                    // Ask again once reconnected (and re-subscribed to twin responses).
                    link.wait_connected(deadline).await?;
                    continue;
                }
                Ok(Err(_)) => return Err(Error::OperationCancelled),
                Err(_) => {
                    lock(&self.twin_waiters).remove(&rid);
                    return Err(Error::OperationTimeout("no twin response from the hub in time".into()));
                }
            }
        }
    }

    fn twin_failure(status: u16, body: &[u8]) -> Error {
        let text = String::from_utf8_lossy(body);
        let message = match serde_json::from_slice::<Value>(body) {
            Ok(v) => crate::transport::http::hub_error_message(&v),
            Err(_) => text.into_owned(),
        };
        Error::ServiceFailure { status, message }
    }

    pub async fn get_twin(self: &Arc<Self>) -> Result<Value> {
        self.check_open()?;
        let (status, body) = self.twin_request(topics::twin_get_topic, b"").await?;
        if status >= 300 {
            return Err(Self::twin_failure(status, &body));
        }
        serde_json::from_slice(&body).map_err(|_| Error::Client("the hub sent a twin that is not JSON".into()))
    }

    pub async fn patch_reported(self: &Arc<Self>, patch: &Value) -> Result<()> {
        self.check_open()?;
        if !patch.is_object() {
            return Err(Error::invalid("a reported properties patch must be a JSON object"));
        }
        let body = serde_json::to_vec(patch).map_err(|e| Error::invalid(format!("patch is not serializable: {e}")))?;
        if body.len() > limits::MAX_TWIN_REPORTED_BYTES {
            return Err(Error::invalid(format!(
                "reported properties patch of {} bytes exceeds {} bytes",
                body.len(),
                limits::MAX_TWIN_REPORTED_BYTES
            )));
        }
        let (status, answer) = self.twin_request(topics::twin_reported_patch_topic, &body).await?;
        if status >= 300 {
            return Err(Self::twin_failure(status, &answer));
        }
        Ok(())
    }

    /// ensure_desired_properties: GET the twin and deliver the whole desired document if its
    /// `$version` moved since the last one seen.
    async fn resync_desired(self: &Arc<Self>) {
        match self.get_twin().await {
            Ok(twin) => {
                let desired = twin.get("desired").cloned().unwrap_or(Value::Null);
                let v = desired.get("$version").and_then(Value::as_u64);
                let moved = {
                    let mut last = lock(&self.last_desired_version);
                    let moved = *last != v;
                    *last = v;
                    moved
                };
                if moved {
                    self.deliver_twin_patch(desired);
                }
            }
            Err(Error::ShutDown) | Err(Error::OperationCancelled) => {}
            Err(e) => self.background_error(e),
        }
    }

    // ----- methods -----------------------------------------------------------------------------------

    pub async fn send_method_response(self: &Arc<Self>, r: &MethodResponse) -> Result<()> {
        self.check_open()?;
        if r.request_id.is_empty() {
            return Err(Error::invalid("method response needs the request id"));
        }
        let payload = serde_json::to_vec(r.payload.as_ref().unwrap_or(&Value::Null))
            .map_err(|e| Error::invalid(format!("method response payload is not serializable: {e}")))?;
        if payload.len() > limits::MAX_METHOD_PAYLOAD_BYTES {
            return Err(Error::invalid(format!(
                "method response payload of {} bytes exceeds {} bytes",
                payload.len(),
                limits::MAX_METHOD_PAYLOAD_BYTES
            )));
        }
        self.publish(topics::method_response_topic(r.status, &r.request_id), payload, self.deadline()).await
    }

    pub async fn invoke_method(self: &Arc<Self>, params: &Value, device_id: &str, module_id: Option<&str>) -> Result<Value> {
        self.check_open()?;
        let gateway = match (&self.identity.module_id, &self.options.gateway_hostname) {
            (Some(_), Some(g)) if self.edge.load(Ordering::Relaxed) || !g.is_empty() => g.clone(),
            _ => {
                return Err(Error::Client(
                    "invoke_method is only available to module clients of an IoT Edge deployment".into(),
                ))
            }
        };
        if device_id.trim().is_empty() {
            return Err(Error::invalid("device_id must not be empty"));
        }
        let obj = params.as_object().ok_or_else(|| Error::invalid("method_params must be a JSON object"))?;
        let name = obj.get("methodName").and_then(Value::as_str).filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| Error::invalid("method_params needs a non-empty \"methodName\""))?;
        let secs = |k: &str, default: u64| obj.get(k).and_then(Value::as_u64).unwrap_or(default);
        let (response_timeout, connect_timeout) = (secs("responseTimeoutInSeconds", 30), secs("connectTimeoutInSeconds", 0));
        let body = serde_json::json!({
            "methodName": name,
            "payload": obj.get("payload").cloned().unwrap_or(Value::Null),
            "responseTimeoutInSeconds": response_timeout,
            "connectTimeoutInSeconds": connect_timeout,
        });
        let enc = ironhub_protocol::encoding::percent_encode;
        let mut path = format!("/twins/{}", enc(device_id));
        if let Some(m) = module_id {
            path.push_str(&format!("/modules/{}", enc(m)));
        }
        let port = if self.options.https_port == 443 { String::new() } else { format!(":{}", self.options.https_port) };
        let url = format!("https://{gateway}{port}{path}/methods?api-version=2019-10-01");
        // Wait as long as the hub may take (azure-iot-device cuts every call at 10 s).
        let timeout = Duration::from_secs(response_timeout + connect_timeout + 10);
        let http = self.http_client(timeout)?;
        let token = self.auth.password(false).await?.map(|t| t.token).unwrap_or_default();
        let req = http
            .post(url)
            .timeout(timeout)
            .header("Authorization", token)
            .header("x-ms-edge-moduleId", self.identity.client_id())
            .header("Content-Type", "application/json")
            .header("User-Agent", user_agent() + &self.options.product_info)
            .body(body.to_string());
        let answer = crate::transport::http::send(req).await?;
        if answer.status >= 300 {
            return Err(Error::ServiceFailure {
                status: answer.status,
                message: crate::transport::http::hub_error_message(&answer.body),
            });
        }
        Ok(answer.body)
    }

    fn http_client(&self, timeout: Duration) -> Result<reqwest::Client> {
        let mut h = lock(&self.http);
        if let Some(c) = &*h {
            return Ok(c.clone());
        }
        let c = crate::transport::http::https_client(self.options.server_verification_cert.as_deref(), timeout.max(Duration::from_secs(60)))?;
        *h = Some(c.clone());
        Ok(c)
    }

    // ----- SAS tokens --------------------------------------------------------------------------------

    pub async fn update_sastoken(self: &Arc<Self>, token: &str) -> Result<()> {
        self.check_open()?;
        self.auth.update_token(token)?;
        if let Some(link) = self.current_link() {
            if self.is_connected() {
                link.reauthenticate(self.deadline()).await?;
            } else {
                link.reauthenticate_later();
            }
        }
        Ok(())
    }

    // ----- deprecated inboxes ----------------------------------------------------------------------

    async fn wait_inbox<T>(
        self: &Arc<Self>,
        timeout: Option<Duration>,
        mut take: impl FnMut(&mut Inbox) -> Option<T>,
    ) -> Result<Option<T>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let notified = self.inbox_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = take(&mut lock(&self.inbox)) {
                return Ok(Some(v));
            }
            self.check_open()?;
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return Ok(None);
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Switches a feature to inbox mode (refused when its handler is set) and subscribes.
    async fn use_inbox(self: &Arc<Self>, f: Feature) -> Result<()> {
        self.check_open()?;
        let handler_set = {
            let h = lock(&self.handlers);
            match f {
                Feature::Messages => h.message.is_some(),
                Feature::Methods => h.method.is_some(),
                Feature::DesiredPatches => h.twin_patch.is_some(),
            }
        };
        if handler_set {
            return Err(Error::Client("cannot use the deprecated receive API while a handler is set".into()));
        }
        let before = self.wants(f);
        {
            let mut i = lock(&self.inbox);
            match f {
                Feature::Messages => i.messages_mode = true,
                Feature::Methods => i.methods_mode = true,
                Feature::DesiredPatches => i.twin_mode = true,
            }
        }
        self.sync_subscription(f, before).await
    }

    pub async fn receive_message(self: &Arc<Self>, input: Option<String>, timeout: Option<Duration>) -> Result<Option<Message>> {
        self.use_inbox(Feature::Messages).await?;
        self.wait_inbox(timeout, |i| {
            let pos = i.messages.iter().position(|m| input.is_none() || m.input_name == input)?;
            i.messages.remove(pos)
        })
        .await
    }

    pub async fn receive_method_request(
        self: &Arc<Self>,
        name: Option<String>,
        timeout: Option<Duration>,
    ) -> Result<Option<MethodRequest>> {
        self.use_inbox(Feature::Methods).await?;
        self.wait_inbox(timeout, |i| {
            let pos = i.methods.iter().position(|r| name.is_none() || Some(&r.name) == name.as_ref())?;
            i.methods.remove(pos)
        })
        .await
    }

    pub async fn receive_twin_patch(self: &Arc<Self>, timeout: Option<Duration>) -> Result<Option<Value>> {
        self.use_inbox(Feature::DesiredPatches).await?;
        self.wait_inbox(timeout, |i| i.twin_patches.pop_front()).await
    }
}

/// The outbox task of one client: hands telemetry to the link strictly in call order. Holds only
/// a weak reference, so it ends with the client.
async fn drain_outbox(session: std::sync::Weak<Session>, mut rx: mpsc::UnboundedReceiver<OutgoingSend>) {
    while let Some(item) = rx.recv().await {
        let Some(s) = session.upgrade() else { return };
        s.outbox_len.fetch_sub(1, Ordering::Relaxed);
        if s.shut_down.load(Ordering::SeqCst) {
            let _ = item.done.send(Err(Error::OperationCancelled));
            continue;
        }
        s.enqueue(item.topic, item.payload, item.deadline, item.done).await;
    }
}

/// Runs a send's completion callback exactly once, on the client's dispatcher: with the outcome,
/// or with `OperationCancelled` if the waiting task is dropped first.
struct CallbackGuard {
    cb: Option<SendCallback>,
    queue: Arc<SerialQueue>,
}

impl CallbackGuard {
    fn complete(mut self, r: Result<()>) {
        // A send cut short by shutdown is, for its caller, a cancelled operation.
        let r = match r {
            Err(Error::ShutDown) => Err(Error::OperationCancelled),
            other => other,
        };
        if let Some(cb) = self.cb.take() {
            self.queue.push(move || cb(r));
        }
    }
}

impl Drop for CallbackGuard {
    fn drop(&mut self) {
        if let Some(cb) = self.cb.take() {
            self.queue.push(move || cb(Err(Error::OperationCancelled)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(module: Option<&str>) -> Identity {
        Identity { hostname: "hub.example".into(), device_id: "dev1".into(), module_id: module.map(str::to_string) }
    }

    #[test]
    fn username_follows_the_wire_protocol() {
        let u = build_username(&ident(Some("mod1")), " extra");
        assert!(u.starts_with("hub.example/dev1/mod1/?api-version=2019-10-01&DeviceClientType=ironhub%2F"), "{u}");
        assert!(u.ends_with("%20extra"), "{u}");
        let pnp = build_username(&ident(None), "dtmi:com:example:Thermostat;1");
        assert!(pnp.starts_with("hub.example/dev1/?api-version=2020-09-30&DeviceClientType="), "{pnp}");
        assert!(pnp.ends_with("&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1"), "{pnp}");
    }

    #[test]
    fn incoming_bag_maps_system_and_custom_properties() {
        let bag = PropertyBag::decode("%24.mid=m1&%24.cid=c1&%24.to=%2Fdevices%2Fd&%24.cdid=d0&iothub-ack=full&k=v%20w");
        let m = incoming_message(bag, Bytes::from_static(b"x"), Some("in1".into()));
        assert_eq!(m.message_id.as_deref(), Some("m1"));
        assert_eq!(m.correlation_id.as_deref(), Some("c1"));
        assert_eq!(m.ack.as_deref(), Some("full"));
        assert_eq!(m.input_name.as_deref(), Some("in1"));
        assert_eq!(m.property("$.cdid"), Some("d0"));
        assert_eq!(m.property("k"), Some("v w"));
        assert!(m.property("$.to").is_none());
    }

    #[test]
    fn json_payloads_are_lenient() {
        assert_eq!(json_payload(b""), Value::Null);
        assert_eq!(json_payload(b" "), Value::Null);
        assert_eq!(json_payload(b"{\"a\":1}"), serde_json::json!({"a": 1}));
        assert_eq!(json_payload(b"not json"), Value::String("not json".into()));
    }
}
