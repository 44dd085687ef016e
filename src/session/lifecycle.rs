//! Lifecycle of a session: connect (once, or on demand with `auto_connect`), disconnect, shutdown
//! (from anywhere, including the client's own handlers), the events of the link (connected, lost,
//! gave up, ended) and what they mean for the application (connection state handler, background
//! errors, SAS token requests, re-subscriptions, twin re-asks, desired-properties resync).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{lock, Session};
use crate::error::{Error, Result};
use crate::handlers::Handlers;
use crate::message::{ConnectionReason, ConnectionStateChange};
use crate::transport::mqtt::{Link, LinkConfig, LinkEvent, LinkOwner, CONNACK_TIMEOUT_SECS};

impl Session {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    #[cfg(feature = "edge")]
    pub fn set_edge(&self, on: bool) {
        self.edge.store(on, Ordering::Relaxed);
    }

    pub(super) fn is_edge(&self) -> bool {
        self.edge.load(Ordering::Relaxed)
    }

    fn link_config(&self) -> LinkConfig {
        LinkConfig {
            client_id: self.identity.client_id(),
            host: self.options.gateway_hostname.clone().unwrap_or_else(|| self.identity.hostname.clone()),
            username: self.username.clone(),
            options: self.options.clone(),
            tls: self.tls.clone(),
            auth: self.auth.clone(),
        }
    }

    pub async fn connect(self: &Arc<Self>) -> Result<()> {
        self.check_open()?;
        let _g = self.connect_lock.lock().await;
        self.check_open()?;
        let deadline = Instant::now() + Duration::from_secs(CONNACK_TIMEOUT_SECS).min(self.options.operation_timeout);
        if let Some(link) = self.current_link() {
            return link.wait_connected(deadline).await;
        }
        let owner: std::sync::Weak<dyn LinkOwner> = Arc::downgrade(self) as _;
        let link = Link::start(self.link_config(), owner).await?;
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
    pub(super) async fn ensure_link(self: &Arc<Self>) -> Result<Arc<Link>> {
        self.check_open()?;
        if let Some(l) = self.current_link() {
            if l.is_usable() {
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
        self.ack_running_message();
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

    /// Shuts the client down. From one of the client's own handlers it returns without waiting
    /// for that handler; from anywhere else, once it returns no handler of the client runs again.
    pub async fn shutdown(self: &Arc<Self>) -> Result<()> {
        self.check_open()?;
        let own = self.in_handler();
        self.shut_down.store(true, Ordering::SeqCst);
        self.outbox.close();
        self.disconnect().await?;
        let old = std::mem::take(&mut *lock(&self.handlers));
        drop(old); // user closures (and what they captured) are released outside our locks
        self.inbox_notify.notify_waiters();
        // Send callbacks of cancelled sends are queued promptly: let them run before returning
        // (from the client's own handler they can only run after it, so there is no waiting).
        let limit = self.options.operation_timeout;
        if !own {
            let mut callbacks = self.callbacks.subscribe();
            let _ = tokio::time::timeout(limit, callbacks.wait_for(|n| *n == 0)).await;
        }
        if !self.queue.wait_quiet(own, limit).await {
            return Err(Error::OperationTimeout("a handler of this client is still running".into()));
        }
        Ok(())
    }

    /// Drop of the last `Client`: stop everything without waiting.
    pub fn shutdown_now(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
        self.outbox.close();
        if let Some(link) = lock(&self.link).take() {
            link.stop_now();
        }
        self.fail_twin_waiters();
        self.connected.store(false, Ordering::SeqCst);
        let old = std::mem::take(&mut *lock(&self.handlers));
        drop(old);
        self.inbox_notify.notify_waiters();
    }

    pub(super) fn sastoken_required(&self) {
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

    pub(super) fn background_error(&self, e: Error) {
        log::warn!("{}: background error: {e}", self.identity.client_id());
        self.dispatch(|h| h.background.clone(), move |h| h(e));
    }

    pub(super) fn notify_state(&self, connected: bool, reason: ConnectionReason) {
        *lock(&self.last_down_reason) = (!connected).then_some(reason);
        let change = ConnectionStateChange { connected, reason };
        self.dispatch(|h: &Handlers| h.connection_state.clone(), move |h| h(change));
    }

    fn connection_established(self: &Arc<Self>, link: &Arc<Link>, renewal: bool) {
        log::debug!("{}: connected", self.identity.client_id());
        // Re-subscribe what the handlers need on every (re)connect: the hub may have lost the
        // session, and a renewal dropped any SUBSCRIBE that was in flight.
        self.resubscribe(link);
        // Twin requests in flight across a reconnect or renewal may have lost their answer: ask again.
        self.retry_twin_waiters();
        let changed = !self.connected.swap(true, Ordering::SeqCst);
        if changed && !renewal {
            self.notify_state(true, ConnectionReason::Ok);
        }
        // Desired changes made while we were away (renewals included) reach the handler.
        if self.options.ensure_desired_properties && lock(&self.handlers).twin_patch.is_some() {
            let s = self.clone();
            crate::runtime::handle().spawn(async move { s.resync_desired().await });
        }
        self.flush_offline();
    }

    fn connection_lost(&self, reason: ConnectionReason, was_up: bool) {
        self.retry_twin_waiters();
        if was_up && self.connected.swap(false, Ordering::SeqCst) {
            self.notify_state(false, reason);
        } else if !was_up && reason == ConnectionReason::DeviceDisabled && *lock(&self.last_down_reason) != Some(reason) {
            // Refused while reconnecting: the application learns that the device is disabled.
            self.notify_state(false, reason);
        }
    }

    fn link_ended(&self, link_id: u64) {
        let mut l = lock(&self.link);
        if l.as_ref().is_some_and(|cur| cur.id == link_id) {
            *l = None;
        }
        drop(l);
        if self.connected.swap(false, Ordering::SeqCst) {
            self.notify_state(false, ConnectionReason::CommunicationError);
        }
    }

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
}

impl LinkOwner for Session {
    fn on_link_event(&self, link: &Arc<Link>, event: LinkEvent) {
        let Some(me) = self.arc() else { return };
        match event {
            LinkEvent::Connected { renewal } => me.connection_established(link, renewal),
            LinkEvent::Lost { reason, was_up } => me.connection_lost(reason, was_up),
            LinkEvent::GaveUp { reason, error } => {
                if self.connected.swap(false, Ordering::SeqCst) || *lock(&self.last_down_reason) != Some(reason) {
                    self.notify_state(false, reason);
                }
                self.background_error(error);
            }
            LinkEvent::Publish(p) => me.on_publish(link, p),
            LinkEvent::Background(e) => self.background_error(e),
            LinkEvent::SasTokenRequired => self.sastoken_required(),
            LinkEvent::Ended => self.link_ended(link.id),
        }
    }
}
