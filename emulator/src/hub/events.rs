//! Owns the event log: every device-to-cloud message the hub accepted (behind `GET /emulator/events`)
//! and the twin change events routed to the built-in endpoint, with increasing sequence numbers,
//! bounded in memory. Each event also belongs to one partition of the Event Hub-compatible
//! endpoint (by its device, stably) and has that partition's sequence number (from 0, dense), as
//! the AMQP readers see it.

use std::collections::VecDeque;

use sha2::Digest as _;

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

/// What produced an event (IoT Hub's `iothub-message-source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventSource {
    #[default]
    Telemetry,
    TwinChangeEvents,
}

impl EventSource {
    /// The `iothub-message-source` value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Telemetry => "Telemetry",
            EventSource::TwinChangeEvents => "twinChangeEvents",
        }
    }
}

#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Hub-wide, from 1; the Event Hub-compatible offset.
    pub sequence_number: u64,
    pub enqueued_time_utc: String,
    pub enqueued_ms: i64,
    pub source: EventSource,
    pub partition: u32,
    /// The partition's own sequence number, from 0.
    pub partition_sequence: u64,
    pub record: TelemetryRecord,
}

/// The partition a device's events go to: stable across runs and emulators (a hash of the id).
pub fn partition_of(device_id: &str, partition_count: u32) -> u32 {
    let digest = sha2::Sha256::digest(device_id.as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    n % partition_count.max(1)
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

/// What a partition holds now (the `com.microsoft:partition` READ answer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The oldest retained event's partition sequence number (the next one when empty).
    pub begin_sequence_number: u64,
    /// The newest event's, if any.
    pub last: Option<(u64, u64, i64)>,
}

#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<StoredEvent>,
    last_sequence: u64,
    body_bytes: usize,
    /// Per partition: the hub-wide sequence numbers of its retained events, oldest first.
    partitions: Vec<VecDeque<u64>>,
    /// Per partition: the next partition sequence number.
    partition_next: Vec<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new(DEFAULT_PARTITIONS)
    }
}

/// IoT Hub's default partition count.
pub const DEFAULT_PARTITIONS: u32 = 4;

impl EventLog {
    pub fn new(partition_count: u32) -> EventLog {
        let n = partition_count.max(1) as usize;
        EventLog {
            events: VecDeque::new(),
            last_sequence: 0,
            body_bytes: 0,
            partitions: vec![VecDeque::new(); n],
            partition_next: vec![0; n],
        }
    }

    /// A log holding `events` (oldest first) that numbers on after `last_sequence` (a restart).
    /// Events stored with another partition count are put in this one's partitions, renumbered.
    pub fn restore(events: Vec<StoredEvent>, last_sequence: u64, partition_count: u32) -> EventLog {
        let mut log = EventLog::new(partition_count);
        let count = log.partitions.len() as u32;
        for mut event in events {
            let p = partition_of(&event.record.device_id, count);
            if event.partition != p || event.partition_sequence < log.partition_next[p as usize] {
                event.partition = p;
                event.partition_sequence = log.partition_next[p as usize];
            }
            log.push(event);
        }
        log.last_sequence = last_sequence.max(log.last_sequence);
        log
    }

    /// The same events in `partition_count` partitions (a no-op when that is the count already).
    pub fn repartition(self, partition_count: u32) -> EventLog {
        if partition_count.max(1) == self.partition_count() {
            return self;
        }
        let last = self.last_sequence;
        EventLog::restore(self.events.into(), last, partition_count)
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    fn push(&mut self, event: StoredEvent) {
        let p = event.partition as usize;
        self.partition_next[p] = event.partition_sequence + 1;
        self.partitions[p].push_back(event.sequence_number);
        self.last_sequence = event.sequence_number;
        self.body_bytes += event.record.body.len();
        self.events.push_back(event);
        while self.events.len() > MAX_EVENTS || (self.body_bytes > MAX_EVENT_BYTES && self.events.len() > 1) {
            if let Some(old) = self.events.pop_front() {
                self.body_bytes -= old.record.body.len();
                self.partitions[old.partition as usize].pop_front();
            }
        }
    }

    pub fn append(&mut self, record: TelemetryRecord, now: String) -> u64 {
        self.append_from(EventSource::Telemetry, record, now, super::now_ms())
    }

    pub fn append_from(&mut self, source: EventSource, record: TelemetryRecord, now: String, now_ms: i64) -> u64 {
        let partition = partition_of(&record.device_id, self.partition_count());
        let event = StoredEvent {
            sequence_number: self.last_sequence + 1,
            enqueued_time_utc: now,
            enqueued_ms: now_ms,
            source,
            partition,
            partition_sequence: self.partition_next[partition as usize],
            record,
        };
        self.push(event);
        self.last_sequence
    }

    /// The oldest event still in memory.
    pub fn first_sequence(&self) -> Option<u64> {
        self.events.front().map(|e| e.sequence_number)
    }

    fn by_sequence(&self, sequence_number: u64) -> Option<&StoredEvent> {
        let first = self.events.front()?.sequence_number;
        self.events.get(sequence_number.checked_sub(first)? as usize)
    }

    /// Up to `limit` events of `partition` with a hub-wide sequence number above `after`, oldest first.
    pub fn partition_after(&self, partition: u32, after: u64, limit: usize) -> Vec<StoredEvent> {
        let Some(seqs) = self.partitions.get(partition as usize) else { return Vec::new() };
        let start = seqs.partition_point(|s| *s <= after);
        seqs.iter().skip(start).take(limit).filter_map(|s| self.by_sequence(*s)).cloned().collect()
    }

    /// The first retained event of `partition` that `pred` accepts.
    pub fn partition_find(&self, partition: u32, pred: impl Fn(&StoredEvent) -> bool) -> Option<StoredEvent> {
        let seqs = self.partitions.get(partition as usize)?;
        seqs.iter().filter_map(|s| self.by_sequence(*s)).find(|e| pred(e)).cloned()
    }

    pub fn partition_info(&self, partition: u32) -> PartitionInfo {
        let p = partition as usize;
        let next = self.partition_next.get(p).copied().unwrap_or(0);
        let seqs = self.partitions.get(p);
        let first = seqs.and_then(|s| s.front()).and_then(|s| self.by_sequence(*s));
        let last = seqs.and_then(|s| s.back()).and_then(|s| self.by_sequence(*s));
        PartitionInfo {
            begin_sequence_number: first.map_or(next, |e| e.partition_sequence),
            last: last.map(|e| (e.partition_sequence, e.sequence_number, e.enqueued_ms)),
        }
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
        // Twin change events are for the Event Hub-compatible endpoint only.
        self.events
            .iter()
            .skip(skip)
            .filter(|e| e.source == EventSource::Telemetry && filter.accepts(&e.record))
            .cloned()
            .collect()
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
    #[serde(default)]
    enqueued_ms: i64,
    #[serde(default, skip_serializing_if = "is_telemetry")]
    twin_change: bool,
    #[serde(default)]
    partition: u32,
    #[serde(default)]
    partition_sequence: u64,
}

fn is_telemetry(twin_change: &bool) -> bool {
    !twin_change
}

impl StoredEvent {
    pub fn to_doc(&self) -> String {
        let doc = EventDoc {
            device_id: self.record.device_id.clone(),
            module_id: self.record.module_id.clone(),
            body: base64::engine::general_purpose::STANDARD.encode(&self.record.body),
            properties: self.record.properties.encode(),
            enqueued_time_utc: self.enqueued_time_utc.clone(),
            enqueued_ms: self.enqueued_ms,
            twin_change: self.source == EventSource::TwinChangeEvents,
            partition: self.partition,
            partition_sequence: self.partition_sequence,
        };
        serde_json::to_string(&doc).unwrap_or_default()
    }

    /// `None` when the document is not one [`to_doc`](Self::to_doc) wrote.
    pub fn from_doc(sequence_number: u64, doc: &str) -> Option<StoredEvent> {
        let doc: EventDoc = serde_json::from_str(doc).ok()?;
        let body = base64::engine::general_purpose::STANDARD.decode(doc.body).ok()?;
        let enqueued_ms = if doc.enqueued_ms > 0 {
            doc.enqueued_ms
        } else {
            chrono::DateTime::parse_from_rfc3339(&doc.enqueued_time_utc).map_or(0, |t| t.timestamp_millis())
        };
        Some(StoredEvent {
            sequence_number,
            enqueued_time_utc: doc.enqueued_time_utc,
            enqueued_ms,
            source: if doc.twin_change { EventSource::TwinChangeEvents } else { EventSource::Telemetry },
            partition: doc.partition,
            partition_sequence: doc.partition_sequence,
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
