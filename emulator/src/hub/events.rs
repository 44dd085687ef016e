//! Owns the telemetry event log behind `GET /emulator/events`: every message the hub accepted,
//! with increasing sequence numbers, bounded in memory, and the wake-up signal long-pollers wait on.

use std::collections::VecDeque;

use base64::Engine;
use bytes::Bytes;
use ironhub_protocol::topics::PropertyBag;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// One accepted device-to-cloud message (device telemetry or module output).
#[derive(Clone, Debug)]
pub struct TelemetryRecord {
    pub device_id: String,
    pub module_id: Option<String>,
    pub body: Bytes,
    /// `output_name` inside carries a module output's name.
    pub properties: PropertyBag,
}

#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub sequence_number: u64,
    pub enqueued_time_utc: String,
    pub record: TelemetryRecord,
}

/// Which events a reader wants. No device → every device; a device without a module →
/// the device's own telemetry and its modules' outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub device_id: Option<String>,
    pub module_id: Option<String>,
}

impl EventFilter {
    fn accepts(&self, r: &TelemetryRecord) -> bool {
        self.device_id.as_deref().is_none_or(|d| d == r.device_id)
            && self.module_id.as_deref().is_none_or(|m| r.module_id.as_deref() == Some(m))
    }
}

/// Oldest events are dropped past this many, or past this many body bytes, so a long-running
/// emulator stays bounded (100 000 messages of 256 KB would be 25 GB).
const MAX_EVENTS: usize = 100_000;
const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct EventLog {
    events: VecDeque<StoredEvent>,
    last_sequence: u64,
    body_bytes: usize,
}

impl EventLog {
    /// A log holding `events` (oldest first) that numbers on after `last_sequence` (a restart).
    pub fn restore(events: Vec<StoredEvent>, last_sequence: u64) -> EventLog {
        let body_bytes = events.iter().map(|e| e.record.body.len()).sum();
        EventLog { events: events.into(), last_sequence, body_bytes }
    }

    pub fn append(&mut self, record: TelemetryRecord, now: String) -> u64 {
        self.last_sequence += 1;
        self.body_bytes += record.body.len();
        self.events.push_back(StoredEvent { sequence_number: self.last_sequence, enqueued_time_utc: now, record });
        while self.events.len() > MAX_EVENTS || (self.body_bytes > MAX_EVENT_BYTES && self.events.len() > 1) {
            if let Some(old) = self.events.pop_front() {
                self.body_bytes -= old.record.body.len();
            }
        }
        self.last_sequence
    }

    /// The newest event.
    pub fn last(&self) -> Option<&StoredEvent> {
        self.events.back()
    }

    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    pub fn after(&self, filter: &EventFilter, after: u64) -> Vec<StoredEvent> {
        // Sequence numbers are dense, so the first newer event's index is computable.
        let first = self.events.front().map(|e| e.sequence_number).unwrap_or(1);
        let skip = after.saturating_sub(first - 1) as usize;
        self.events.iter().skip(skip).filter(|e| filter.accepts(&e.record)).cloned().collect()
    }
}

/// The stored form of an event (the store keys it by sequence number).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventDoc {
    device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    module_id: Option<String>,
    /// Base64.
    body: String,
    /// The property bag in its topic encoding.
    properties: String,
    enqueued_time_utc: String,
}

impl StoredEvent {
    pub fn to_doc(&self) -> String {
        let doc = EventDoc {
            device_id: self.record.device_id.clone(),
            module_id: self.record.module_id.clone(),
            body: base64::engine::general_purpose::STANDARD.encode(&self.record.body),
            properties: self.record.properties.encode(),
            enqueued_time_utc: self.enqueued_time_utc.clone(),
        };
        serde_json::to_string(&doc).unwrap_or_default()
    }

    /// `None` when the document is not one [`to_doc`](Self::to_doc) wrote.
    pub fn from_doc(sequence_number: u64, doc: &str) -> Option<StoredEvent> {
        let doc: EventDoc = serde_json::from_str(doc).ok()?;
        let body = base64::engine::general_purpose::STANDARD.decode(doc.body).ok()?;
        Some(StoredEvent {
            sequence_number,
            enqueued_time_utc: doc.enqueued_time_utc,
            record: TelemetryRecord {
                device_id: doc.device_id,
                module_id: doc.module_id,
                body: body.into(),
                properties: PropertyBag::decode(&doc.properties),
            },
        })
    }

    pub fn to_json(&self) -> Value {
        let p = &self.record.properties;
        let custom: Map<String, Value> = p.custom.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        json!({
            "sequenceNumber": self.sequence_number,
            "deviceId": self.record.device_id,
            "moduleId": self.record.module_id,
            "outputName": p.output_name,
            "body": base64::engine::general_purpose::STANDARD.encode(&self.record.body),
            "properties": custom,
            "systemProperties": {
                "messageId": p.message_id,
                "correlationId": p.correlation_id,
                "userId": p.user_id,
                "contentType": p.content_type,
                "contentEncoding": p.content_encoding,
                "expiryTimeUtc": p.expiry_time_utc,
                "interfaceId": p.interface_id,
                "enqueuedTimeUtc": self.enqueued_time_utc,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(d: &str, m: Option<&str>) -> TelemetryRecord {
        TelemetryRecord { device_id: d.into(), module_id: m.map(Into::into), body: Bytes::from_static(b"hi"), properties: PropertyBag::default() }
    }

    #[test]
    fn the_log_is_bounded_by_bytes_and_keeps_numbering() {
        let mut log = EventLog::default();
        let big = Bytes::from(vec![0u8; 1024 * 1024]);
        for _ in 0..70 {
            let mut r = rec("a", None);
            r.body = big.clone();
            log.append(r, "t".into());
        }
        let kept = log.after(&EventFilter::default(), 0);
        assert_eq!(kept.len(), 64);
        assert_eq!(kept[0].sequence_number, 7);
        assert_eq!(log.after(&EventFilter::default(), 68).len(), 2);
        assert_eq!(log.last_sequence(), 70);
    }

    #[test]
    fn filters_and_sequence_numbers() {
        let mut log = EventLog::default();
        assert_eq!(log.append(rec("a", None), "t".into()), 1);
        log.append(rec("b", None), "t".into());
        log.append(rec("a", Some("m")), "t".into());
        let a = EventFilter { device_id: Some("a".into()), module_id: None };
        assert_eq!(log.after(&a, 0).iter().map(|e| e.sequence_number).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(log.after(&a, 1).len(), 1);
        assert_eq!(log.after(&a, 3).len(), 0);
        let am = EventFilter { device_id: Some("a".into()), module_id: Some("m".into()) };
        assert_eq!(log.after(&am, 0).len(), 1);
        assert_eq!(log.after(&EventFilter::default(), 0).len(), 3);
        let first = &log.after(&EventFilter::default(), 0)[2];
        let back = StoredEvent::from_doc(3, &first.to_doc()).unwrap();
        assert_eq!((back.sequence_number, &back.record.module_id, &back.record.body), (3, &Some("m".into()), &first.record.body));
        let j = log.after(&EventFilter::default(), 0)[0].to_json();
        assert_eq!(j["body"], "aGk=");
        assert_eq!(j["systemProperties"]["enqueuedTimeUtc"], "t");
    }
}
