//! Direct methods: requests published to a device or module, waiting for the response
//! that carries their request id (`$rid`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rumqttc::mqttbytes::v4::Publish;
use rumqttc::mqttbytes::QoS;
use tokio::sync::oneshot;

use super::Broker;
use crate::identity::Identity;
use ironhub_protocol::topics;

#[derive(Clone, Debug, PartialEq)]
pub struct MethodResult {
    pub status: i32,
    pub payload: serde_json::Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodError {
    /// Not connected and subscribed to methods within the connect timeout (404103).
    NotOnline,
    /// No response within the response timeout (504101).
    Timeout,
}

impl std::fmt::Display for MethodError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MethodError::NotOnline => "the device is not online",
            MethodError::Timeout => "timed out waiting for the method response",
        })
    }
}

impl std::error::Error for MethodError {}

struct Waiter {
    target: Identity,
    reply: oneshot::Sender<MethodResult>,
}

#[derive(Default)]
pub(super) struct PendingMethods {
    next_rid: AtomicU64,
    waiters: Mutex<HashMap<String, Waiter>>,
}

impl PendingMethods {
    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A device's `$iothub/methods/res/{status}/?$rid=..`. Only the identity the request was
    /// sent to can answer it; anything else (unknown, late or foreign rid) is ignored.
    pub(super) fn complete(&self, from: &Identity, rid: &str, status: i32, body: &[u8]) {
        let waiter = {
            let mut waiters = self.waiters();
            match waiters.get(rid) {
                Some(w) if &w.target == from => waiters.remove(rid),
                _ => None,
            }
        };
        let Some(waiter) = waiter else {
            log::debug!("mqtt: {from} answered unknown or expired method request {rid:?}");
            return;
        };
        // The SDKs send `null` (or nothing) for "no payload"; a body that is not JSON is
        // passed on as a string rather than lost.
        let payload = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(body)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
        };
        let _ = waiter.reply.send(MethodResult { status, payload });
    }
}

/// Removes the waiter however `invoke` ends, including when its caller gives up on it.
struct WaiterGuard<'a> {
    methods: &'a PendingMethods,
    rid: String,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.methods.waiters().remove(&self.rid);
    }
}

pub(super) async fn invoke(
    broker: &Broker,
    id: &Identity,
    name: &str,
    payload: serde_json::Value,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<MethodResult, MethodError> {
    let methods = &broker.methods;
    let rid = format!("{:x}", methods.next_rid.fetch_add(1, Ordering::Relaxed) + 1);
    let topic = topics::method_request_topic(name, &rid);

    // Wait for the target to be connected and subscribed, woken by session changes.
    let deadline = tokio::time::Instant::now() + connect_timeout;
    let mut changes = broker.sessions.watch_changes();
    let connection = loop {
        changes.borrow_and_update();
        if let Some(conn) = broker.sessions.subscribed_connection(id, &topic) {
            break conn;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            _ => return Err(MethodError::NotOnline),
        }
    };

    let (reply, response) = oneshot::channel();
    methods.waiters().insert(rid.clone(), Waiter { target: id.clone(), reply });
    let _guard = WaiterGuard { methods, rid };
    let body = serde_json::to_vec(&payload).unwrap_or_default();
    broker.timing.pause().await;
    if !connection.deliver(Publish::from_bytes(topic, QoS::AtMostOnce, body.into())) {
        return Err(MethodError::NotOnline);
    }
    match tokio::time::timeout(response_timeout, response).await {
        Ok(Ok(result)) => Ok(result),
        _ => Err(MethodError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_target_completes_a_request() {
        let methods = PendingMethods::default();
        let (reply, mut response) = oneshot::channel();
        methods.waiters().insert("1".into(), Waiter { target: Identity::device("d1"), reply });
        methods.complete(&Identity::device("d2"), "1", 200, b"{}");
        assert!(response.try_recv().is_err());
        methods.complete(&Identity::device("d1"), "1", 201, br#"{"a":1}"#);
        let result = response.try_recv().expect("completed");
        assert_eq!(result, MethodResult { status: 201, payload: serde_json::json!({"a": 1}) });
        assert!(methods.waiters().is_empty());
    }
}
