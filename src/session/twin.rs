//! Twin: GET and reported-properties PATCH as `$rid`-correlated request/response exchanges over
//! `$iothub/twin/`, re-asked when the connection drops or is renewed while waiting (bounded by
//! `operation_timeout`), and the `ensure_desired_properties` resync after every (re)connect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ironhub_protocol::limits;
use ironhub_protocol::topics;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{lock, Session};
use crate::error::{Error, Result};

/// Answer to a twin request, or "ask again" when the connection dropped while waiting.
enum TwinAnswer {
    Response { status: u16, body: Bytes },
    Retry,
}

#[derive(Default)]
pub(super) struct TwinState {
    waiters: Mutex<HashMap<String, oneshot::Sender<TwinAnswer>>>,
    /// Twin requests were made: `$iothub/twin/res/#` is part of every re-subscription.
    pub wanted: AtomicBool,
    /// Id of the link on which `$iothub/twin/res/#` is subscribed.
    pub subscribed_on: AtomicU64,
    last_desired_version: Mutex<Option<u64>>,
}

impl Session {
    pub(super) fn fail_twin_waiters(&self) {
        lock(&self.twin.waiters).clear(); // dropped senders → OperationCancelled for the waiters
    }

    /// Connection dropped or renewed: every waiting request asks again once connected.
    pub(super) fn retry_twin_waiters(&self) {
        for (_, w) in lock(&self.twin.waiters).drain() {
            let _ = w.send(TwinAnswer::Retry);
        }
    }

    pub(super) fn twin_answer(&self, rid: &str, status: u16, body: Bytes) {
        if let Some(w) = lock(&self.twin.waiters).remove(rid) {
            let _ = w.send(TwinAnswer::Response { status, body });
        }
    }

    pub(super) fn twin_seen_version(&self, v: Option<u64>) {
        if v.is_some() {
            *lock(&self.twin.last_desired_version) = v;
        }
    }

    async fn ensure_twin_subscription(self: &Arc<Self>, link: &Arc<crate::transport::mqtt::Link>, deadline: tokio::time::Instant) -> Result<()> {
        self.twin.wanted.store(true, Ordering::SeqCst);
        if self.twin.subscribed_on.swap(link.id, Ordering::SeqCst) != link.id {
            if let Err(e) = link.subscribe(&[topics::TWIN_RESPONSE_FILTER.to_string()], deadline).await {
                self.twin.subscribed_on.store(0, Ordering::SeqCst);
                return Err(e);
            }
        }
        Ok(())
    }

    /// One twin request/response exchange, asked again if the connection drops while waiting.
    async fn twin_request(self: &Arc<Self>, topic_for: impl Fn(&str) -> String, payload: &[u8]) -> Result<(u16, Bytes)> {
        let deadline = self.deadline();
        loop {
            let link = self.ensure_link().await?;
            self.ensure_twin_subscription(&link, deadline).await?;
            let rid = self.next_rid.fetch_add(1, Ordering::Relaxed).to_string();
            let (tx, rx) = oneshot::channel();
            lock(&self.twin.waiters).insert(rid.clone(), tx);
            if let Err(e) = self.publish(topic_for(&rid), payload.to_vec(), deadline).await {
                lock(&self.twin.waiters).remove(&rid);
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
                    lock(&self.twin.waiters).remove(&rid);
                    return Err(Error::OperationTimeout("no twin response from the hub in time".into()));
                }
            }
        }
    }

    fn twin_failure(status: u16, body: &[u8]) -> Error {
        let message = ironhub_protocol::hub_error::message_of_body(body);
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
    pub(super) async fn resync_desired(self: &Arc<Self>) {
        match self.get_twin().await {
            Ok(twin) => {
                let desired = twin.get("desired").cloned().unwrap_or(Value::Null);
                let v = desired.get("$version").and_then(Value::as_u64);
                let moved = {
                    let mut last = lock(&self.twin.last_desired_version);
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
}
