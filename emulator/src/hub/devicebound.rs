//! Owns the messages waiting for a device or module: C2D messages and module-input messages
//! (routed copies) stay here from the moment the hub accepts them until the client PUBACKs
//! them (at-least-once, as IoT Hub and IoT Edge hub deliver them).
//!
//! A message sent on a connection is "in flight" on it; a PUBACK on that connection for its
//! packet id completes it. A message in flight on a connection that went away is sent again on
//! the next one, with DUP set. Limits are IoT Hub's: at most 50 C2D messages per device
//! (`DeviceMaximumQueueDepthExceeded` beyond), a time to live of one hour unless the message's
//! `expiryTimeUtc` says otherwise, and dead-lettering after 10 deliveries. Routed copies for a
//! module follow IoT Edge hub's store-and-forward defaults (2 h time to live) with a bound on
//! how many are kept. Every message that leaves for good is reported as [`Settled`] with its
//! outcome, from which the hub writes C2D feedback (`feedback`).

use std::collections::{HashMap, VecDeque};

use base64::Engine;
use ironhub_protocol::limits;
use ironhub_protocol::topics::PropertyBag;
use serde::{Deserialize, Serialize};

use super::error::{self, HubError};
use super::feedback::FeedbackStatus;
use super::DeviceBoundMessage;
use crate::Identity;

/// IoT Hub's default `cloudToDeviceMessages.ttlAsIso8601` (PT1H).
pub const DEFAULT_C2D_TTL_MS: i64 = 3_600_000;
/// IoT Edge hub's default `storeAndForwardConfiguration.timeToLiveSecs` (7200).
pub const ROUTED_TTL_MS: i64 = 7_200_000;
/// IoT Hub's default `cloudToDeviceMessages.maxDeliveryCount`: delivered this often without
/// being completed, a message is dead-lettered (dropped here).
pub const MAX_DELIVERY_COUNT: u32 = 10;
/// Routed copies kept for one module; past it the oldest goes (Edge hub's bound is its disk).
pub const MAX_MODULE_PENDING: usize = 1000;

/// One message waiting for its recipient.
#[derive(Clone, Debug)]
pub struct PendingMessage {
    /// Unique in this hub: names the message while it waits.
    pub lock_token: u64,
    /// `None` for C2D; the input name for a module-input message.
    pub input_name: Option<String>,
    pub message: DeviceBoundMessage,
    /// Unix milliseconds after which the message is dropped undelivered.
    pub expires_at_ms: i64,
    /// Unix milliseconds before which it is not sent (the configured hub latency).
    pub not_before_ms: i64,
    /// How often it was sent (redeliveries carry DUP).
    pub delivery_count: u32,
    /// (connection id, packet id) of the delivery awaiting its PUBACK.
    in_flight: Option<(u64, u16)>,
}

/// The persisted form of a [`PendingMessage`] (the in-flight mark is connection-bound and is not kept).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredPending {
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    pub lock_token: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_name: Option<String>,
    /// Base64.
    pub body: String,
    /// The property bag in its topic encoding.
    pub properties: String,
    pub expires_at_ms: i64,
    pub delivery_count: u32,
}

/// Parses `expiryTimeUtc` (ISO 8601) into Unix milliseconds.
fn expiry_of(properties: &PropertyBag) -> Option<i64> {
    let text = properties.expiry_time_utc.as_deref()?;
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis())
}

/// A message that left its queue for good: completed, expired or dead-lettered. The hub deletes
/// its stored row and, for a C2D message sent with `iothub-ack`, records its feedback.
#[derive(Clone, Debug)]
pub struct Settled {
    pub to: Identity,
    pub lock_token: u64,
    pub message: DeviceBoundMessage,
    pub status: FeedbackStatus,
}

impl Settled {
    fn of(to: &Identity, m: &PendingMessage, status: FeedbackStatus) -> Settled {
        Settled { to: to.clone(), lock_token: m.lock_token, message: m.message.clone(), status }
    }
}

#[derive(Default)]
pub struct PendingQueues {
    queues: HashMap<Identity, VecDeque<PendingMessage>>,
    next_token: u64,
    settled: Vec<Settled>,
}

impl PendingQueues {
    fn purge_expired(&mut self, to: &Identity, now_ms: i64) {
        if let Some(queue) = self.queues.get_mut(to) {
            let before = queue.len();
            let settled = &mut self.settled;
            queue.retain(|m| {
                let live = m.expires_at_ms > now_ms;
                if !live {
                    settled.push(Settled::of(to, m, FeedbackStatus::Expired));
                }
                live
            });
            if queue.len() != before {
                log::info!("hub: {} message(s) for {to} expired undelivered", before - queue.len());
            }
        }
    }

    /// Drops every expired message of every identity (their [`Settled`] records say so).
    pub fn purge_all_expired(&mut self, now_ms: i64) {
        let ids: Vec<Identity> = self.queues.keys().cloned().collect();
        for id in ids {
            self.purge_expired(&id, now_ms);
        }
        self.queues.retain(|_, q| !q.is_empty());
    }

    /// The messages that left their queue for good since the last call, and why.
    pub fn take_settled(&mut self) -> Vec<Settled> {
        std::mem::take(&mut self.settled)
    }

    /// Accepts a message for `to`. A device's C2D queue holds at most 50 (403004 beyond); a
    /// module's routed copies at most [`MAX_MODULE_PENDING`] (the oldest makes room).
    pub fn enqueue(
        &mut self,
        to: &Identity,
        input_name: Option<String>,
        message: DeviceBoundMessage,
        now_ms: i64,
        not_before_ms: i64,
    ) -> Result<u64, HubError> {
        self.purge_expired(to, now_ms);
        let ttl = if to.module_id.is_some() { ROUTED_TTL_MS } else { DEFAULT_C2D_TTL_MS };
        let expires_at_ms = expiry_of(&message.properties).unwrap_or(now_ms + ttl);
        let queue = self.queues.entry(to.clone()).or_default();
        if to.module_id.is_none() && queue.len() >= limits::MAX_C2D_PENDING {
            return Err(HubError::new(
                error::QUEUE_DEPTH_EXCEEDED,
                format!("Device {} already has {} cloud-to-device messages pending", to.device_id, limits::MAX_C2D_PENDING),
            ));
        }
        if queue.len() >= MAX_MODULE_PENDING {
            queue.pop_front();
            log::warn!("hub: {to} has {MAX_MODULE_PENDING} messages pending; dropped the oldest");
        }
        self.next_token += 1;
        let lock_token = self.next_token;
        queue.push_back(PendingMessage { lock_token, input_name, message, expires_at_ms, not_before_ms, delivery_count: 0, in_flight: None });
        Ok(lock_token)
    }

    /// Offers every message of `to` not yet in flight on connection `conn_id`, in order, to
    /// `send`, which returns the packet id it went out with (`None`: could not send; the rest wait).
    /// Answers the lock tokens of the messages that went out.
    pub fn deliver(
        &mut self,
        to: &Identity,
        conn_id: u64,
        now_ms: i64,
        mut send: impl FnMut(&PendingMessage) -> Option<u16>,
    ) -> Vec<u64> {
        self.purge_expired(to, now_ms);
        let mut sent = Vec::new();
        let Some(queue) = self.queues.get_mut(to) else { return sent };
        let settled = &mut self.settled;
        queue.retain(|m| {
            let dead = m.delivery_count >= MAX_DELIVERY_COUNT && m.in_flight.is_none_or(|(c, _)| c != conn_id);
            if dead {
                log::info!("hub: message {} for {to} dead-lettered after {MAX_DELIVERY_COUNT} deliveries", m.lock_token);
                settled.push(Settled::of(to, m, FeedbackStatus::DeliveryCountExceeded));
            }
            !dead
        });
        for m in queue.iter_mut().filter(|m| m.in_flight.is_none_or(|(c, _)| c != conn_id)) {
            if m.not_before_ms > now_ms {
                break;
            }
            match send(m) {
                Some(pkid) => {
                    m.in_flight = Some((conn_id, pkid));
                    m.delivery_count += 1;
                    sent.push(m.lock_token);
                }
                None => break,
            }
        }
        sent
    }

    /// Completes the message in flight on `conn_id` with packet id `pkid`; its lock token if there was one.
    pub fn acknowledge(&mut self, to: &Identity, conn_id: u64, pkid: u16) -> Option<u64> {
        let queue = self.queues.get_mut(to)?;
        let at = queue.iter().position(|m| m.in_flight == Some((conn_id, pkid)))?;
        let done = queue.remove(at)?;
        if queue.is_empty() {
            self.queues.remove(to);
        }
        self.settled.push(Settled::of(to, &done, FeedbackStatus::Success));
        Some(done.lock_token)
    }

    /// The stored form of one waiting message.
    pub fn stored(&self, to: &Identity, lock_token: u64) -> Option<StoredPending> {
        let m = self.queues.get(to)?.iter().find(|m| m.lock_token == lock_token)?;
        Some(Self::to_stored_one(to, m))
    }

    fn to_stored_one(id: &Identity, m: &PendingMessage) -> StoredPending {
        StoredPending {
            device_id: id.device_id.clone(),
            module_id: id.module_id.clone(),
            lock_token: m.lock_token,
            input_name: m.input_name.clone(),
            body: base64::engine::general_purpose::STANDARD.encode(&m.message.body),
            properties: m.message.properties.encode(),
            expires_at_ms: m.expires_at_ms,
            delivery_count: m.delivery_count,
        }
    }

    pub fn count(&mut self, to: &Identity, now_ms: i64) -> usize {
        self.purge_expired(to, now_ms);
        self.queues.get(to).map_or(0, VecDeque::len)
    }

    /// Whether message `lock_token` has gone out (and awaits its PUBACK) or was already completed.
    pub fn was_sent(&self, to: &Identity, lock_token: u64) -> bool {
        self.queues.get(to).and_then(|q| q.iter().find(|m| m.lock_token == lock_token)).is_none_or(|m| m.in_flight.is_some())
    }

    pub fn peek(&self, to: &Identity) -> Vec<PendingMessage> {
        self.queues.get(to).map(|q| q.iter().cloned().collect()).unwrap_or_default()
    }

    /// Forgets everything for one identity (it was deleted).
    pub fn remove(&mut self, id: &Identity) {
        self.queues.remove(id);
    }

    /// Forgets everything for a device and its modules (the device was deleted).
    pub fn remove_device(&mut self, device_id: &str) {
        self.queues.retain(|id, _| id.device_id != device_id);
    }

    pub fn to_stored(&self) -> Vec<StoredPending> {
        let mut out: Vec<StoredPending> =
            self.queues.iter().flat_map(|(id, q)| q.iter().map(move |m| Self::to_stored_one(id, m))).collect();
        out.sort_by_key(|s| s.lock_token);
        out
    }

    /// Rebuilds the queues from their stored form (in lock-token order, which is arrival order).
    pub fn from_stored(mut stored: Vec<StoredPending>) -> PendingQueues {
        stored.sort_by_key(|s| s.lock_token);
        let mut queues = PendingQueues::default();
        for s in stored {
            let Ok(body) = base64::engine::general_purpose::STANDARD.decode(&s.body) else { continue };
            let id = Identity { device_id: s.device_id, module_id: s.module_id };
            queues.next_token = queues.next_token.max(s.lock_token);
            queues.queues.entry(id).or_default().push_back(PendingMessage {
                lock_token: s.lock_token,
                input_name: s.input_name,
                message: DeviceBoundMessage { body: body.into(), properties: PropertyBag::decode(&s.properties) },
                expires_at_ms: s.expires_at_ms,
                not_before_ms: 0,
                delivery_count: s.delivery_count,
                in_flight: None,
            });
        }
        queues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> DeviceBoundMessage {
        DeviceBoundMessage { body: text.to_owned().into(), properties: PropertyBag::default() }
    }

    #[test]
    fn stays_until_acknowledged_and_goes_again_on_a_new_connection() {
        let dev = Identity::device("d");
        let mut q = PendingQueues::default();
        q.enqueue(&dev, None, msg("a"), 0, 0).unwrap();
        q.enqueue(&dev, None, msg("b"), 0, 0).unwrap();
        let mut sent = Vec::new();
        q.deliver(&dev, 1, 0, |m| {
            sent.push((m.message.body.clone(), m.delivery_count));
            Some(sent.len() as u16)
        });
        assert_eq!(sent.len(), 2);
        // Offered again on the same connection: nothing new goes out.
        q.deliver(&dev, 1, 0, |_| panic!("already in flight"));
        assert_eq!(q.acknowledge(&dev, 1, 1), Some(1));
        assert_eq!(q.acknowledge(&dev, 1, 1), None, "completed once");
        assert_eq!(q.acknowledge(&dev, 2, 2), None, "another connection's packet id completes nothing");
        let mut again = Vec::new();
        q.deliver(&dev, 2, 0, |m| {
            again.push((m.message.body.clone(), m.delivery_count));
            Some(7)
        });
        assert_eq!(again, vec![(bytes::Bytes::from("b"), 1)]);
        assert_eq!(q.count(&dev, 0), 1);
    }

    #[test]
    fn limits_expiry_and_dead_lettering() {
        let dev = Identity::device("d");
        let mut q = PendingQueues::default();
        for i in 0..limits::MAX_C2D_PENDING {
            q.enqueue(&dev, None, msg(&i.to_string()), 0, 0).unwrap();
        }
        assert_eq!(q.enqueue(&dev, None, msg("x"), 0, 0).unwrap_err().code, 403004);
        assert_eq!(q.count(&dev, DEFAULT_C2D_TTL_MS), 0, "an hour later every one expired");

        let mut explicit = msg("soon");
        explicit.properties.expiry_time_utc = Some("1970-01-01T00:00:01.000Z".into());
        q.enqueue(&dev, None, explicit, 0, 0).unwrap();
        assert_eq!(q.count(&dev, 999), 1);
        assert_eq!(q.count(&dev, 1000), 0, "expiryTimeUtc is honoured");

        q.enqueue(&dev, None, msg("never acked"), 0, 0).unwrap();
        for conn in 0..u64::from(MAX_DELIVERY_COUNT) {
            q.deliver(&dev, conn, 0, |_| Some(1));
        }
        q.deliver(&dev, 100, 0, |_| panic!("dead-lettered after {MAX_DELIVERY_COUNT} deliveries"));
        assert_eq!(q.count(&dev, 0), 0);

        let module = Identity::module("d", "m");
        for i in 0..=MAX_MODULE_PENDING {
            q.enqueue(&module, Some("in".into()), msg(&i.to_string()), 0, 0).unwrap();
        }
        let kept = q.peek(&module);
        assert_eq!(kept.len(), MAX_MODULE_PENDING);
        assert_eq!(kept[0].message.body, bytes::Bytes::from("1"));
    }

    #[test]
    fn every_final_outcome_is_reported_once() {
        let dev = Identity::device("d");
        let mut q = PendingQueues::default();
        let statuses = |q: &mut PendingQueues| q.take_settled().into_iter().map(|s| (s.lock_token, s.status)).collect::<Vec<_>>();
        let done = q.enqueue(&dev, None, msg("done"), 0, 0).unwrap();
        q.deliver(&dev, 1, 0, |_| Some(1));
        assert!(statuses(&mut q).is_empty(), "in flight is not final");
        q.acknowledge(&dev, 1, 1);
        assert_eq!(statuses(&mut q), vec![(done, FeedbackStatus::Success)]);

        let mut short = msg("short");
        short.properties.expiry_time_utc = Some("1970-01-01T00:00:01.000Z".into());
        let expired = q.enqueue(&dev, None, short, 0, 0).unwrap();
        q.purge_all_expired(999);
        assert!(statuses(&mut q).is_empty());
        q.purge_all_expired(1000);
        assert_eq!(statuses(&mut q), vec![(expired, FeedbackStatus::Expired)]);

        let dead = q.enqueue(&dev, None, msg("never acked"), 0, 0).unwrap();
        for conn in 0..=u64::from(MAX_DELIVERY_COUNT) {
            q.deliver(&dev, conn, 0, |_| Some(1));
        }
        assert_eq!(statuses(&mut q), vec![(dead, FeedbackStatus::DeliveryCountExceeded)]);
        assert!(statuses(&mut q).is_empty(), "reported once");
    }

    #[test]
    fn stored_form_round_trips() {
        let mut q = PendingQueues::default();
        let mut m = msg("\u{0}bin");
        m.properties.message_id = Some("id 1".into());
        m.properties.custom = vec![("k".into(), "v&w".into())];
        q.enqueue(&Identity::device("d"), None, m.clone(), 5, 0).unwrap();
        q.enqueue(&Identity::module("d", "m"), Some("in1".into()), msg("r"), 5, 0).unwrap();
        let json = serde_json::to_string(&q.to_stored()).unwrap();
        let mut back = PendingQueues::from_stored(serde_json::from_str(&json).unwrap());
        assert_eq!(back.peek(&Identity::device("d"))[0].message, m);
        assert_eq!(back.peek(&Identity::module("d", "m"))[0].input_name.as_deref(), Some("in1"));
        let token = back.enqueue(&Identity::device("d"), None, msg("next"), 5, 0).unwrap();
        assert_eq!(token, 3, "lock tokens continue after a restart");
    }
}
