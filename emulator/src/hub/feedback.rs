//! Owns C2D delivery feedback: the outcome records of C2D messages sent with `iothub-ack`
//! (`full`, `positive`, `negative`) and the hub-wide feedback queue the service reads on
//! `/messages/servicebound/feedback`, as IoT Hub produces them.
//!
//! IoT Hub batches records into feedback messages: the body is a JSON array of
//! `{originalMessageId, description, deviceGenerationId, deviceId, enqueuedTimeUtc, statusCode}`,
//! the content type `application/vnd.microsoft.iothub.feedback.json`, the user id the hub's name.
//! A message handed to a receiver stays in the queue until the receiver accepts it; a released
//! (or abandoned) one goes out again, and one delivered [`MAX_DELIVERY_COUNT`] times, or older than
//! [`FEEDBACK_TTL_MS`], is dropped (IoT Hub's `feedback.maxDeliveryCount` and `feedback.ttlAsIso8601`
//! defaults). Records not yet batched are batched when a receiver asks, so one message carries
//! everything that happened since the last one, up to [`MAX_RECORDS_PER_MESSAGE`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The content type of every feedback message.
pub const CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.feedback.json";
/// Records in one feedback message, at most (IoT Hub does not document its batch size).
pub const MAX_RECORDS_PER_MESSAGE: usize = 100;
/// Records the queue holds (batched or not), at most; past it the oldest go, with a warning.
pub const MAX_QUEUED_RECORDS: usize = 5000;
/// IoT Hub's default `feedback.maxDeliveryCount`.
pub const MAX_DELIVERY_COUNT: u32 = 10;
/// IoT Hub's default `feedback.ttlAsIso8601` (PT1H): feedback nobody read within it is dropped.
pub const FEEDBACK_TTL_MS: i64 = 3_600_000;

/// The outcome of one C2D message, as `statusCode` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedbackStatus {
    /// The device completed it (over MQTT: its PUBACK).
    Success,
    /// Its time to live passed before the device completed it.
    Expired,
    /// It was delivered `maxDeliveryCount` times without being completed.
    DeliveryCountExceeded,
    /// The device rejected it. Only the AMQP and HTTPS device protocols can reject, so MQTT
    /// devices never produce it; kept so the status set is IoT Hub's.
    Rejected,
}

impl FeedbackStatus {
    /// The `description` IoT Hub writes next to the status code.
    pub fn description(self) -> &'static str {
        match self {
            FeedbackStatus::Success => "Success",
            FeedbackStatus::Expired => "Message expired",
            FeedbackStatus::DeliveryCountExceeded => "Message delivery count exceeded",
            FeedbackStatus::Rejected => "Message rejected",
        }
    }
}

/// What the sender asked for with `iothub-ack`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    None,
    /// Only successes.
    Positive,
    /// Only failures (expired, delivery count exceeded, rejected).
    Negative,
    Full,
}

impl AckMode {
    /// `iothub-ack` as the SDKs write it (`none`, `positive`, `negative`, `full`; case-insensitive).
    pub fn parse(text: &str) -> Option<AckMode> {
        match text.to_ascii_lowercase().as_str() {
            "none" => Some(AckMode::None),
            "positive" => Some(AckMode::Positive),
            "negative" => Some(AckMode::Negative),
            "full" => Some(AckMode::Full),
            _ => None,
        }
    }

    /// Whether an outcome with `status` produces a feedback record.
    pub fn wants(self, status: FeedbackStatus) -> bool {
        match self {
            AckMode::None => false,
            AckMode::Full => true,
            AckMode::Positive => status == FeedbackStatus::Success,
            AckMode::Negative => status != FeedbackStatus::Success,
        }
    }
}

/// One entry of a feedback message's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRecord {
    pub original_message_id: String,
    pub description: String,
    pub device_generation_id: String,
    pub device_id: String,
    /// When the outcome happened (ISO 8601 UTC).
    pub enqueued_time_utc: String,
    pub status_code: FeedbackStatus,
}

impl FeedbackRecord {
    pub fn new(
        device_id: &str,
        device_generation_id: &str,
        original_message_id: &str,
        status: FeedbackStatus,
        now_iso: String,
    ) -> FeedbackRecord {
        FeedbackRecord {
            original_message_id: original_message_id.to_owned(),
            description: status.description().to_owned(),
            device_generation_id: device_generation_id.to_owned(),
            device_id: device_id.to_owned(),
            enqueued_time_utc: now_iso,
            status_code: status,
        }
    }
}

/// One feedback message: a batch of records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackMessage {
    /// Names the message while it waits for the receiver's disposition.
    pub lock_token: u64,
    /// The AMQP `message-id` (a GUID, as IoT Hub gives).
    pub message_id: String,
    pub enqueued_time_utc: String,
    pub enqueued_ms: i64,
    pub records: Vec<FeedbackRecord>,
    pub delivery_count: u32,
    /// Handed to a receiver, awaiting its disposition (not persisted: a restart releases it).
    #[serde(skip)]
    in_flight: bool,
}

impl FeedbackMessage {
    /// The JSON array body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.records).unwrap_or_default()
    }
}

/// The hub-wide feedback queue.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackQueue {
    /// Records not yet batched, oldest first, with the Unix ms they happened at.
    unbatched: VecDeque<(i64, FeedbackRecord)>,
    messages: VecDeque<FeedbackMessage>,
    next_token: u64,
}

impl FeedbackQueue {
    /// Adds one record; past [`MAX_QUEUED_RECORDS`] the oldest record goes.
    pub fn record(&mut self, record: FeedbackRecord, now_ms: i64) {
        self.unbatched.push_back((now_ms, record));
        while self.len() > MAX_QUEUED_RECORDS {
            let dropped = match self.messages.front_mut() {
                Some(m) if !m.in_flight => {
                    m.records.remove(0);
                    if m.records.is_empty() {
                        self.messages.pop_front();
                    }
                    true
                }
                _ => self.unbatched.pop_front().is_some(),
            };
            if !dropped {
                break;
            }
            log::warn!("hub: the feedback queue holds {MAX_QUEUED_RECORDS} records; dropped the oldest");
        }
    }

    /// Records held, batched or not.
    pub fn len(&self) -> usize {
        self.unbatched.len() + self.messages.iter().map(|m| m.records.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn purge(&mut self, now_ms: i64) {
        let before = self.len();
        self.messages
            .retain(|m| m.in_flight || (m.enqueued_ms + FEEDBACK_TTL_MS > now_ms && m.delivery_count < MAX_DELIVERY_COUNT));
        self.unbatched.retain(|(at, _)| at + FEEDBACK_TTL_MS > now_ms);
        if self.len() != before {
            log::info!("hub: {} feedback record(s) expired or exceeded their delivery count unread", before - self.len());
        }
    }

    /// The next feedback message for a receiver (batching waiting records when no message is
    /// ready), marked in flight until [`complete`](Self::complete) or [`release`](Self::release).
    pub fn take(&mut self, now_ms: i64, now_iso: &str) -> Option<FeedbackMessage> {
        self.purge(now_ms);
        if !self.messages.iter().any(|m| !m.in_flight) && !self.unbatched.is_empty() {
            let n = self.unbatched.len().min(MAX_RECORDS_PER_MESSAGE);
            let records = self.unbatched.drain(..n).map(|(_, r)| r).collect();
            self.next_token += 1;
            self.messages.push_back(FeedbackMessage {
                lock_token: self.next_token,
                message_id: super::registry::generate_guid(),
                enqueued_time_utc: now_iso.to_owned(),
                enqueued_ms: now_ms,
                records,
                delivery_count: 0,
                in_flight: false,
            });
        }
        let m = self.messages.iter_mut().find(|m| !m.in_flight)?;
        m.in_flight = true;
        m.delivery_count += 1;
        Some(m.clone())
    }

    /// The receiver accepted message `lock_token`: it leaves the queue. False when it was not in flight.
    pub fn complete(&mut self, lock_token: u64) -> bool {
        let before = self.messages.len();
        self.messages.retain(|m| !(m.in_flight && m.lock_token == lock_token));
        self.messages.len() != before
    }

    /// The receiver released (or abandoned, or lost) message `lock_token`: it goes out again.
    pub fn release(&mut self, lock_token: u64) {
        if let Some(m) = self.messages.iter_mut().find(|m| m.lock_token == lock_token) {
            m.in_flight = false;
        }
    }

    /// Every message in flight is released (at start: nobody holds them any more).
    pub fn release_all(&mut self) {
        self.messages.iter_mut().for_each(|m| m.in_flight = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, status: FeedbackStatus) -> FeedbackRecord {
        FeedbackRecord::new("dev", "gen", id, status, "2026-01-01T00:00:00.000Z".into())
    }

    #[test]
    fn ack_modes_select_outcomes() {
        use FeedbackStatus::*;
        assert_eq!(AckMode::parse("FULL"), Some(AckMode::Full));
        assert_eq!(AckMode::parse("sometimes"), None);
        assert!(AckMode::Positive.wants(Success) && !AckMode::Positive.wants(Expired));
        assert!(!AckMode::Negative.wants(Success));
        assert!([Expired, DeliveryCountExceeded, Rejected].iter().all(|s| AckMode::Negative.wants(*s)));
        assert!(!AckMode::None.wants(Success) && AckMode::Full.wants(Rejected));
    }

    #[test]
    fn records_serialize_with_iot_hub_names() {
        let json = serde_json::to_value(rec("m1", FeedbackStatus::DeliveryCountExceeded)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"originalMessageId": "m1", "description": "Message delivery count exceeded",
                "deviceGenerationId": "gen", "deviceId": "dev", "enqueuedTimeUtc": "2026-01-01T00:00:00.000Z",
                "statusCode": "DeliveryCountExceeded"})
        );
    }

    #[test]
    fn batches_complete_release_and_bounds() {
        let mut q = FeedbackQueue::default();
        assert!(q.take(0, "t").is_none());
        q.record(rec("a", FeedbackStatus::Success), 0);
        q.record(rec("b", FeedbackStatus::Expired), 0);
        let first = q.take(0, "t").unwrap();
        assert_eq!(first.records.len(), 2, "waiting records go out as one batch");
        let body: Vec<FeedbackRecord> = serde_json::from_slice(&first.body()).unwrap();
        assert_eq!(body[1].original_message_id, "b");
        assert!(q.take(0, "t").is_none(), "in flight: not offered twice");
        q.release(first.lock_token);
        let again = q.take(0, "t").unwrap();
        assert_eq!((again.lock_token, again.delivery_count), (first.lock_token, 2));
        assert!(q.complete(again.lock_token));
        assert!(!q.complete(again.lock_token), "completed once");
        assert!(q.is_empty());

        for i in 0..MAX_QUEUED_RECORDS + 3 {
            q.record(rec(&i.to_string(), FeedbackStatus::Success), 0);
        }
        assert_eq!(q.len(), MAX_QUEUED_RECORDS);
        let m = q.take(0, "t").unwrap();
        assert_eq!((m.records.len(), m.records[0].original_message_id.as_str()), (MAX_RECORDS_PER_MESSAGE, "3"));
        assert!(q.take(FEEDBACK_TTL_MS, "t").is_none());
        assert_eq!(q.len(), MAX_RECORDS_PER_MESSAGE, "an hour later only the in-flight batch is left");
        for _ in 1..MAX_DELIVERY_COUNT {
            q.release(m.lock_token);
            assert_eq!(q.take(0, "t").unwrap().lock_token, m.lock_token);
        }
        q.release(m.lock_token);
        assert!(q.take(0, "t").is_none(), "dropped after {MAX_DELIVERY_COUNT} deliveries");
    }
}
