//! The deprecated `receive_*` APIs: once one is used for a feature, that feature's arrivals queue
//! in the session's `Inbox` (bounded by `max_queued_messages`) instead of going to a handler.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::subscriptions::Feature;
use super::{lock, Session};
use crate::error::{Error, Result};
use crate::message::{Message, MethodRequest};

#[derive(Default)]
pub(crate) struct Inbox {
    pub messages_mode: bool,
    pub methods_mode: bool,
    pub twin_mode: bool,
    pub messages: VecDeque<Message>,
    pub methods: VecDeque<MethodRequest>,
    pub twin_patches: VecDeque<Value>,
}

impl Inbox {
    /// Whether the feature is in inbox mode.
    pub fn mode_mut(&mut self, f: Feature) -> &mut bool {
        match f {
            Feature::Messages => &mut self.messages_mode,
            Feature::Methods => &mut self.methods_mode,
            Feature::DesiredPatches => &mut self.twin_mode,
        }
    }
}

impl Session {
    async fn wait_inbox<T>(
        self: &Arc<Self>,
        timeout: Option<Duration>,
        mut take: impl FnMut(&mut Inbox) -> Option<T>,
    ) -> Result<Option<T>> {
        let deadline = timeout.map(crate::runtime::deadline_after);
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
        if f.handler_set(&lock(&self.handlers)) {
            return Err(Error::Client("cannot use the deprecated receive API while a handler is set".into()));
        }
        let before = self.wants(f);
        *lock(&self.inbox).mode_mut(f) = true;
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
