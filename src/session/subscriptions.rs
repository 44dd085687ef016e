//! Handler setters and the subscriptions they imply: setting a receive handler subscribes (and
//! auto-connects), clearing it unsubscribes; every (re)connect re-subscribes what is wanted.
//! Replacing or clearing a handler waits for a call of the old one that is already running
//! (an async wait, skipped when the setter is called from the client's own handler), so once the
//! setter returns the old handler never runs again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ironhub_protocol::topics;

use super::{lock, Session};
use crate::error::{Error, Result};
use crate::handlers::{
    BackgroundExceptionHandler, ConnectionStateHandler, Handlers, MessageHandler, MethodRequestHandler,
    SasTokenRequiredHandler, TwinPatchHandler,
};
use crate::transport::mqtt::Link;

/// Subscription-bearing features.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    Messages,
    Methods,
    DesiredPatches,
}

impl Feature {
    fn name(self) -> &'static str {
        match self {
            Feature::Messages => "message",
            Feature::Methods => "method request",
            Feature::DesiredPatches => "twin patch",
        }
    }

    /// Whether the feature's handler is set.
    pub(super) fn handler_set(self, h: &Handlers) -> bool {
        match self {
            Feature::Messages => h.message.is_some(),
            Feature::Methods => h.method.is_some(),
            Feature::DesiredPatches => h.twin_patch.is_some(),
        }
    }
}

impl Session {
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

    pub(super) fn wants(&self, f: Feature) -> bool {
        f.handler_set(&lock(&self.handlers)) || *lock(&self.inbox).mode_mut(f)
    }

    /// Re-subscribes every filter the current handlers, inboxes and twin use need (twin responses
    /// first, so a twin GET sent right after never beats its subscription).
    pub(super) fn resubscribe(&self, link: &Arc<Link>) {
        let mut filters = Vec::new();
        if self.twin.wanted.load(Ordering::SeqCst) {
            filters.push(topics::TWIN_RESPONSE_FILTER.to_string());
            self.twin.subscribed_on.store(link.id, Ordering::SeqCst);
        }
        for f in [Feature::Messages, Feature::Methods, Feature::DesiredPatches] {
            if self.wants(f) {
                filters.push(self.filter_of(f));
            }
        }
        if !filters.is_empty() {
            if let Err(e) = link.send_subscribe(&filters) {
                self.background_error(e);
            }
        }
    }

    /// After a handler/inbox change: subscribe (auto-connecting) or unsubscribe.
    pub(super) async fn sync_subscription(self: &Arc<Self>, f: Feature, before: bool) -> Result<()> {
        let after = self.wants(f);
        if after && !before {
            if f == Feature::DesiredPatches && self.options.ensure_desired_properties {
                // ensure_desired_properties needs twin responses too.
                self.twin.wanted.store(true, Ordering::SeqCst);
            }
            let link = match self.current_link() {
                Some(l) => l,
                None if self.options.auto_connect => self.ensure_link().await?,
                // Not connected and not allowed to connect: `resubscribe` subscribes later.
                None => return Ok(()),
            };
            let mut filters = vec![self.filter_of(f)];
            if self.twin.wanted.load(Ordering::SeqCst) && self.twin.subscribed_on.swap(link.id, Ordering::SeqCst) != link.id {
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

    /// Swaps a handler in; when one was replaced, waits until a running call of it has returned.
    /// The old handler is dropped outside the table's lock (its captures may call the client).
    async fn swap_handler<T>(&self, set: impl FnOnce(&mut Handlers) -> Option<T>) -> Result<()> {
        self.check_open()?;
        let own = self.in_handler();
        let replaced = {
            let old = set(&mut lock(&self.handlers));
            old.is_some()
        };
        if replaced && !self.queue.wait_quiet(own, self.options.operation_timeout).await {
            return Err(Error::OperationTimeout("the previous handler is still running".into()));
        }
        Ok(())
    }

    /// The synchronous form (the setters that do not subscribe are synchronous in the API).
    fn swap_handler_now<T>(&self, set: impl FnOnce(&mut Handlers) -> Option<T>) -> Result<()> {
        self.check_open()?;
        let replaced = {
            let old = set(&mut lock(&self.handlers));
            old.is_some()
        };
        if replaced && !self.queue.wait_quiet_blocking(self.options.operation_timeout) {
            return Err(Error::OperationTimeout("the previous handler is still running".into()));
        }
        Ok(())
    }

    /// A receive handler (messages, methods, desired patches): refused after the deprecated
    /// receive API was used for the feature; (un)subscribes as needed.
    async fn set_receive_handler<H: Send + 'static>(
        self: &Arc<Self>,
        f: Feature,
        h: Option<H>,
        slot: fn(&mut Handlers) -> &mut Option<H>,
    ) -> Result<()> {
        self.check_open()?;
        if h.is_some() && *lock(&self.inbox).mode_mut(f) {
            return Err(Error::Client(format!(
                "cannot set a {} handler after using the deprecated receive API for it",
                f.name()
            )));
        }
        let before = self.wants(f);
        self.swap_handler(|t| std::mem::replace(slot(t), h)).await?;
        self.sync_subscription(f, before).await
    }

    pub async fn set_message_handler(self: &Arc<Self>, h: Option<MessageHandler>) -> Result<()> {
        self.set_receive_handler(Feature::Messages, h, |t| &mut t.message).await
    }

    pub async fn set_method_handler(self: &Arc<Self>, h: Option<MethodRequestHandler>) -> Result<()> {
        self.set_receive_handler(Feature::Methods, h, |t| &mut t.method).await
    }

    pub async fn set_twin_patch_handler(self: &Arc<Self>, h: Option<TwinPatchHandler>) -> Result<()> {
        self.set_receive_handler(Feature::DesiredPatches, h, |t| &mut t.twin_patch).await
    }

    pub fn set_connection_state_handler(&self, h: Option<ConnectionStateHandler>) -> Result<()> {
        self.swap_handler_now(|t| std::mem::replace(&mut t.connection_state, h))
    }

    pub fn set_sastoken_handler(&self, h: Option<SasTokenRequiredHandler>) -> Result<()> {
        self.swap_handler_now(|t| std::mem::replace(&mut t.sastoken, h))
    }

    pub fn set_background_exception_handler(&self, h: Option<BackgroundExceptionHandler>) -> Result<()> {
        self.swap_handler_now(|t| std::mem::replace(&mut t.background, h))
    }
}
