//! The engine behind `Client`: one `Session` per client holds its state, split by feature:
//! `lifecycle` (connect, disconnect, shutdown, link events, SAS tokens), `telemetry` (the bounded,
//! ordered outbox and the send path), `incoming` (publishes from the hub to handlers, inboxes and
//! twin waiters, and their acknowledgements), `subscriptions` (handler setters and the filters they
//! imply), `twin`, `methods`, `inbox` (the deprecated receive APIs) and `offline` (the persistent
//! offline queue). Network I/O is `transport::mqtt::Link`'s: the session owns the link and hears
//! from it only through `LinkEvent`s; user code runs only on `dispatch`'s pool.

mod incoming;
mod inbox;
mod lifecycle;
mod methods;
mod offline;
mod subscriptions;
mod telemetry;
mod twin;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::auth::{Authenticator, Credential, Identity};
use crate::bounds::Budget;
use crate::dispatch::SerialQueue;
use crate::error::{Error, Result};
use crate::handlers::Handlers;
use crate::options::ClientOptions;
use crate::transport::mqtt::{Link, MAX_IN_FLIGHT};

pub(crate) use inbox::Inbox;
use twin::TwinState;

pub(crate) struct Session {
    me: Weak<Session>,
    pub identity: Identity,
    /// `devices/{d}[/modules/{m}]/messages/events/`, built once: a send appends its properties.
    events_topic: String,
    pub options: ClientOptions,
    pub auth: Arc<Authenticator>,
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
    /// Publishes in flight at once (telemetry, twin requests, method responses).
    permits: Arc<Semaphore>,
    twin: TwinState,
    /// Expiry of the given token for which `on_new_sastoken_required` already fired.
    sastoken_notified: Mutex<Option<u64>>,
    /// Last "disconnected" reason reported, so a long outage reports each reason once.
    last_down_reason: Mutex<Option<crate::message::ConnectionReason>>,
    edge: AtomicBool,
    #[cfg(feature = "https")]
    http: Mutex<Option<crate::transport::http::HttpsClient>>,
    outbox: telemetry::Outbox,
    callbacks: telemetry::PendingCallbacks,
    budget: Arc<Budget>,
    offline: Option<offline::OfflineStore>,
    next_rid: AtomicU64,
    running_ack: incoming::RunningAck,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn user_agent() -> String {
    format!("ironhub/{}", env!("CARGO_PKG_VERSION"))
}

impl Session {
    /// The TLS configuration of this client (trust roots, cipher list, X.509 identity), shared
    /// with the HTTPS calls that must present the same identity (file upload).
    #[cfg(feature = "https")]
    pub fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    pub fn new(identity: Identity, auth: Authenticator, options: ClientOptions) -> Result<Arc<Session>> {
        let x509 = match auth.credential() {
            Credential::X509(x) => Some(x.clone()),
            _ => None,
        };
        let tls = crate::transport::tls::client_config(options.server_verification_cert.as_deref(), &options.cipher, x509.as_ref())?;
        let username = ironhub_protocol::username::device_username(
            &identity.hostname,
            &identity.client_id(),
            &user_agent(),
            &options.product_info,
        );
        let offline = match &options.offline_store {
            Some(dir) => Some(offline::OfflineStore::open(dir, &identity.client_id())?),
            None => None,
        };
        let budget = Budget::new(options.max_queued_messages, options.max_queued_bytes);
        let (outbox, outbox_rx) = telemetry::Outbox::new();
        let events_topic = ironhub_protocol::topics::telemetry_topic(
            &identity.device_id,
            identity.module_id.as_deref(),
            &Default::default(),
        );
        let session = Arc::new_cyclic(|me| Session {
            me: me.clone(),
            identity,
            events_topic,
            options,
            auth: Arc::new(auth),
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
            twin: TwinState::default(),
            sastoken_notified: Mutex::new(None),
            last_down_reason: Mutex::new(None),
            edge: AtomicBool::new(false),
            #[cfg(feature = "https")]
            http: Mutex::new(None),
            outbox,
            callbacks: Arc::new(tokio::sync::watch::channel(0).0),
            budget,
            offline,
            next_rid: AtomicU64::new(1),
            running_ack: Default::default(),
        });
        crate::runtime::handle().spawn(telemetry::drain_outbox(Arc::downgrade(&session), outbox_rx));
        session.restore_offline()?;
        Ok(session)
    }

    /// Runs an operation on the shared runtime (so it works from any executor) and awaits it. The
    /// caller's handler context goes with it (an operation called by a handler knows it).
    pub async fn run<F, Fut, T>(self: Arc<Self>, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Session>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let ctx = crate::dispatch::HandlerContext::capture();
        crate::runtime::handle()
            .spawn(ctx.wrap(f(self)))
            .await
            .map_err(|_| Error::Client("internal task failed".into()))?
    }

    /// True on a thread (or in a task started from one) running one of this client's handlers.
    pub fn in_handler(&self) -> bool {
        self.queue.is_current()
    }

    fn arc(&self) -> Option<Arc<Session>> {
        self.me.upgrade()
    }

    fn check_open(&self) -> Result<()> {
        if self.shut_down.load(std::sync::atomic::Ordering::SeqCst) {
            Err(Error::ShutDown)
        } else {
            Ok(())
        }
    }

    fn deadline(&self) -> Instant {
        crate::runtime::deadline_after(self.options.operation_timeout)
    }

    fn current_link(&self) -> Option<Arc<Link>> {
        lock(&self.link).clone()
    }

    /// Queues a handler call on the dispatcher. The handler is looked up when the job starts, so a
    /// handler cleared in between never runs (and `call` is not made).
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
}
