//! The persistent offline queue (`ClientOptions::offline_store`): telemetry accepted while the
//! client is not connected is appended to `<dir>/<client id>.queue` and fsync'd before the caller
//! hears "sent"; it survives a crash or kill -9 and is sent in order when the client next connects
//! (at the next start the client connects by itself when `auto_connect` is on), then removed from
//! the file. Delivery is at least once: a crash between the hub's PUBACK and the file's rewrite
//! sends those messages again at the next start.
//!
//! Record: `len: u32 LE | check: 8 bytes (SHA-256 of body) | body`, body = `topic_len: u32 LE |
//! topic | payload`. Loading stops at the first record that is short or fails its check (a torn
//! last write), so a crash mid-append loses only the message whose send had not returned.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::telemetry::{await_outcome, OutgoingSend};
use super::{lock, Session};
use crate::error::{Error, Result};
use crate::transport::mqtt::SendState;

const CHECK_LEN: usize = 8;

struct Record {
    topic: String,
    payload: Vec<u8>,
}

struct StoreState {
    file: File,
    records: VecDeque<Record>,
    bytes: usize,
    flushing: bool,
}

pub(super) struct OfflineStore {
    path: PathBuf,
    state: Mutex<StoreState>,
}

fn check_of(body: &[u8]) -> [u8; CHECK_LEN] {
    let digest = Sha256::digest(body);
    let mut c = [0u8; CHECK_LEN];
    c.copy_from_slice(&digest[..CHECK_LEN]);
    c
}

fn encode(topic: &str, payload: &[u8]) -> Vec<u8> {
    let body_len = 4 + topic.len() + payload.len();
    let mut body = Vec::with_capacity(body_len);
    body.extend_from_slice(&(topic.len() as u32).to_le_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(payload);
    let mut rec = Vec::with_capacity(4 + CHECK_LEN + body_len);
    rec.extend_from_slice(&(body_len as u32).to_le_bytes());
    rec.extend_from_slice(&check_of(&body));
    rec.extend_from_slice(&body);
    rec
}

/// Every whole, intact record of `data`, in order; stops at a torn or corrupted one.
fn decode_all(mut data: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while data.len() >= 4 + CHECK_LEN {
        let len = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        let Some(body) = data.get(4 + CHECK_LEN..4 + CHECK_LEN + len) else { break };
        if check_of(body) != data[4..4 + CHECK_LEN] || body.len() < 4 {
            break;
        }
        let topic_len = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
        let Some(topic) = body.get(4..4 + topic_len).and_then(|t| std::str::from_utf8(t).ok()) else { break };
        out.push(Record { topic: topic.to_string(), payload: body[4 + topic_len..].to_vec() });
        data = &data[4 + CHECK_LEN + len..];
    }
    out
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Client(format!("offline store: cannot {what} {}: {e}", path.display()))
}

impl OfflineStore {
    /// Opens (creating) the queue file of `client_id` under `dir` and loads what it holds.
    pub fn open(dir: &Path, client_id: &str) -> Result<OfflineStore> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
        let name: String = client_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let path = dir.join(format!("{name}.queue"));
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error("read", &path, e)),
        };
        let records: VecDeque<Record> = decode_all(&data).into();
        let bytes = records.iter().map(|r| r.topic.len() + r.payload.len()).sum();
        // Rewrite without a torn tail, so appends follow the last whole record.
        let file = rewrite(&path, &records)?;
        Ok(OfflineStore { path, state: Mutex::new(StoreState { file, records, bytes, flushing: false }) })
    }

    fn len(&self) -> usize {
        lock(&self.state).records.len()
    }
}

/// Writes `records` to a fresh file that replaces `path` atomically; returns it open for appends.
fn rewrite(path: &Path, records: &VecDeque<Record>) -> Result<File> {
    let tmp = path.with_extension("queue.tmp");
    {
        let mut f = File::create(&tmp).map_err(|e| io_error("create", &tmp, e))?;
        for r in records {
            f.write_all(&encode(&r.topic, &r.payload)).map_err(|e| io_error("write", &tmp, e))?;
        }
        f.sync_all().map_err(|e| io_error("sync", &tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io_error("replace", path, e))?;
    if let Some(dir) = path.parent() {
        // The rename itself must reach the disk.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    OpenOptions::new().append(true).open(path).map_err(|e| io_error("open", path, e))
}

impl Session {
    /// Appends one message to the offline queue (durable when this returns).
    pub(super) fn store_offline(self: &Arc<Self>, topic: &str, payload: &[u8]) -> Result<()> {
        let store = self.offline.as_ref().expect("offline store configured");
        {
            let mut st = lock(&store.state);
            let size = topic.len() + payload.len();
            if st.records.len() >= self.options.max_queued_messages || st.bytes + size > self.options.max_queued_bytes {
                return Err(Error::QueueFull(format!(
                    "the offline store holds {} messages of {} bytes (max_queued_messages = {}, max_queued_bytes = {})",
                    st.records.len(),
                    st.bytes,
                    self.options.max_queued_messages,
                    self.options.max_queued_bytes
                )));
            }
            let rec = encode(topic, payload);
            st.file.write_all(&rec).map_err(|e| io_error("append to", &store.path, e))?;
            st.file.sync_data().map_err(|e| io_error("sync", &store.path, e))?;
            st.records.push_back(Record { topic: topic.to_string(), payload: payload.to_vec() });
            st.bytes += size;
        }
        if self.options.auto_connect && self.current_link().is_none() {
            // Nothing else may be about to connect: the queue goes out once this connects.
            let s = self.clone();
            crate::runtime::handle().spawn(async move {
                let _ = s.ensure_link().await;
            });
        }
        Ok(())
    }

    /// At creation: a queue left by an earlier run is sent as soon as the client connects.
    pub(super) fn restore_offline(self: &Arc<Self>) -> Result<()> {
        let Some(store) = &self.offline else { return Ok(()) };
        if store.len() > 0 && self.options.auto_connect {
            log::info!("{}: {} messages in the offline store; connecting to send them", self.identity.client_id(), store.len());
            let s = self.clone();
            crate::runtime::handle().spawn(async move {
                if let Err(e) = s.connect().await {
                    s.background_error(e);
                }
            });
        }
        Ok(())
    }

    /// Once connected: sends the stored messages in order (pipelined) and removes the ones the hub
    /// acknowledged from the file.
    pub(super) fn flush_offline(self: &Arc<Self>) {
        let Some(store) = &self.offline else { return };
        let batch: Vec<(String, Vec<u8>)> = {
            let mut st = lock(&store.state);
            if st.flushing || st.records.is_empty() {
                return;
            }
            st.flushing = true;
            st.records.iter().map(|r| (r.topic.clone(), r.payload.clone())).collect()
        };
        let s = self.clone();
        crate::runtime::handle().spawn(async move {
            let deadline = s.deadline();
            let mut outcomes = Vec::with_capacity(batch.len());
            for (topic, payload) in batch {
                let (tx, rx) = oneshot::channel();
                let state = SendState::new();
                let item = OutgoingSend { topic, payload, deadline, done: tx, state: state.clone(), reservation: None };
                if s.outbox.push(item).is_err() {
                    break;
                }
                outcomes.push(await_outcome(rx, state, deadline));
            }
            let mut acked = 0;
            for o in outcomes {
                if o.await.is_err() {
                    break;
                }
                acked += 1;
            }
            let Some(store) = &s.offline else { return };
            let mut guard = lock(&store.state);
            let st = &mut *guard;
            for r in st.records.drain(..acked) {
                st.bytes -= r.topic.len() + r.payload.len();
            }
            match rewrite(&store.path, &st.records) {
                Ok(f) => st.file = f,
                Err(e) => log::warn!("{}: {e}", s.identity.client_id()),
            }
            st.flushing = false;
            let more = !st.records.is_empty();
            drop(guard);
            log::info!("{}: sent {acked} messages from the offline store", s.identity.client_id());
            if more && s.is_connected() {
                s.flush_offline();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_ignored() {
        let mut data = encode("devices/d/messages/events/", b"one");
        data.extend(encode("devices/d/messages/events/a=b", b""));
        let whole = data.len();
        data.extend(encode("devices/d/messages/events/", b"torn"));
        for cut in [whole, whole + 3, whole + 12, data.len() - 1] {
            let got = decode_all(&data[..cut]);
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0].payload, b"one");
            assert_eq!(got[1].topic, "devices/d/messages/events/a=b");
        }
        assert_eq!(decode_all(&data).len(), 3);
        let mut corrupt = data.clone();
        corrupt[whole + 20] ^= 0xff;
        assert_eq!(decode_all(&corrupt).len(), 2, "a corrupted record ends the load");
    }

    #[test]
    fn the_store_reloads_what_was_appended() {
        let dir = std::env::temp_dir().join(format!("ironhub-offline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = OfflineStore::open(&dir, "dev/mod").unwrap();
            let mut st = lock(&s.state);
            st.file.write_all(&encode("t1", b"a")).unwrap();
            st.file.write_all(&encode("t2", b"b")).unwrap();
            st.file.write_all(&encode("t3", b"c")[..5]).unwrap(); // a crash mid-append
        }
        let s = OfflineStore::open(&dir, "dev/mod").unwrap();
        assert_eq!(s.len(), 2);
        assert!(dir.join("dev_mod.queue").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
