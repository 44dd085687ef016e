//! Owns the hub's durable store: a SQLite database (`state.db` in the state directory) with the
//! registry and twins (one row per device, holding its modules, so a twin write costs the same
//! whatever the number of devices), the routes, the device-bound messages not yet acknowledged
//! and the telemetry retained for the retention period.
//!
//! The hub changes its in-memory state under its lock and hands the matching writes, in that
//! order, to one writer thread, which commits them in batches (one transaction per batch; WAL with
//! `synchronous=FULL`, so a committed batch survives a kill -9 and a power cut alike). The async
//! workers never touch the disk: whoever must not acknowledge before its write is on disk (a
//! telemetry PUBACK, a twin response, an HTTP answer) awaits [`Store::flushed`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::watch;

/// One change to the stored state.
#[derive(Debug)]
pub enum Write {
    Meta { key: &'static str, value: String },
    /// `None` deletes the device (its modules are in the same row).
    Device { device_id: String, doc: Option<String> },
    Routes(BTreeMap<String, String>),
    PendingPut { lock_token: u64, device_id: String, module_id: Option<String>, doc: String },
    PendingDelete { lock_token: u64 },
    /// Every pending message of a device and its modules.
    PendingDeleteDevice { device_id: String },
    /// Every pending message of one module.
    PendingDeleteModule { device_id: String, module_id: String },
    Event { sequence_number: u64, enqueued_ms: i64, doc: String },
    /// Drops telemetry enqueued before this Unix time (ms): the retention period ran out.
    PruneEvents { before_ms: i64 },
}

/// What a restart reads back.
#[derive(Debug, Default)]
pub struct Loaded {
    pub meta: BTreeMap<String, String>,
    pub devices: Vec<String>,
    pub routes: BTreeMap<String, String>,
    pub pending: Vec<String>,
    /// (sequence number, doc), oldest first, enqueued within the retention period.
    pub events: Vec<(u64, String)>,
    pub last_event_sequence: u64,
}

/// A numbered unit of writes, committed together.
type Batch = (u64, Vec<Write>);

pub struct Store {
    /// A read-only connection for telemetry older than the in-memory log (WAL: reads do not
    /// wait for the writer).
    reader: Mutex<Option<Connection>>,
    queue: Mutex<Option<mpsc::Sender<Batch>>>,
    submitted: AtomicU64,
    committed: watch::Receiver<u64>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS routes (name TEXT PRIMARY KEY, route TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    lock_token INTEGER PRIMARY KEY, device_id TEXT NOT NULL, module_id TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS pending_by_identity ON pending (device_id, module_id);
CREATE TABLE IF NOT EXISTS events (sequence_number INTEGER PRIMARY KEY, enqueued_ms INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_time ON events (enqueued_ms);
";

/// Telemetry read back at start, at most (the in-memory log's bound).
const MAX_LOADED_EVENTS: i64 = 100_000;
/// Writes committed in one transaction, at most.
const MAX_BATCH: usize = 4096;

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    // It holds every device key and the policy key: 0600, and never through a symlink (the WAL
    // and shared-memory files SQLite creates take the database file's mode).
    super::persist::ensure_private_file(path)
        .map_err(|e| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN), Some(e.to_string())))?;
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk before the writer reports it, so nothing acknowledged is lost even
    // by a power cut (NORMAL would survive a process kill but not that).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn load(conn: &Connection, keep_events_after_ms: i64) -> rusqlite::Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut rows = conn.prepare("SELECT key, value FROM meta")?;
    for row in rows.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (k, v) = row?;
        loaded.meta.insert(k, v);
    }
    let mut rows = conn.prepare("SELECT doc FROM devices ORDER BY device_id")?;
    loaded.devices = rows.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut rows = conn.prepare("SELECT name, route FROM routes")?;
    for row in rows.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (k, v) = row?;
        loaded.routes.insert(k, v);
    }
    let mut rows = conn.prepare("SELECT doc FROM pending ORDER BY lock_token")?;
    loaded.pending = rows.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut rows = conn.prepare(
        "SELECT sequence_number, doc FROM (SELECT sequence_number, doc FROM events WHERE enqueued_ms >= ?1
         ORDER BY sequence_number DESC LIMIT ?2) ORDER BY sequence_number",
    )?;
    loaded.events = rows
        .query_map(params![keep_events_after_ms, MAX_LOADED_EVENTS], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let last: Option<i64> = conn.query_row("SELECT MAX(sequence_number) FROM events", [], |r| r.get(0)).optional()?.flatten();
    loaded.last_event_sequence = last.unwrap_or(0).max(0) as u64;
    Ok(loaded)
}

fn apply(tx: &rusqlite::Transaction<'_>, write: &Write) -> rusqlite::Result<()> {
    match write {
        Write::Meta { key, value } => {
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![key, value])?;
        }
        Write::Device { device_id, doc: Some(doc) } => {
            tx.execute("INSERT OR REPLACE INTO devices (device_id, doc) VALUES (?1, ?2)", params![device_id, doc])?;
        }
        Write::Device { device_id, doc: None } => {
            tx.execute("DELETE FROM devices WHERE device_id = ?1", params![device_id])?;
        }
        Write::Routes(routes) => {
            tx.execute("DELETE FROM routes", [])?;
            for (name, route) in routes {
                tx.execute("INSERT INTO routes (name, route) VALUES (?1, ?2)", params![name, route])?;
            }
        }
        Write::PendingPut { lock_token, device_id, module_id, doc } => {
            tx.execute(
                "INSERT OR REPLACE INTO pending (lock_token, device_id, module_id, doc) VALUES (?1, ?2, ?3, ?4)",
                params![*lock_token as i64, device_id, module_id, doc],
            )?;
        }
        Write::PendingDelete { lock_token } => {
            tx.execute("DELETE FROM pending WHERE lock_token = ?1", params![*lock_token as i64])?;
        }
        Write::PendingDeleteDevice { device_id } => {
            tx.execute("DELETE FROM pending WHERE device_id = ?1", params![device_id])?;
        }
        Write::PendingDeleteModule { device_id, module_id } => {
            tx.execute("DELETE FROM pending WHERE device_id = ?1 AND module_id = ?2", params![device_id, module_id])?;
        }
        Write::Event { sequence_number, enqueued_ms, doc } => {
            tx.execute(
                "INSERT OR REPLACE INTO events (sequence_number, enqueued_ms, doc) VALUES (?1, ?2, ?3)",
                params![*sequence_number as i64, enqueued_ms, doc],
            )?;
        }
        Write::PruneEvents { before_ms } => {
            tx.execute("DELETE FROM events WHERE enqueued_ms < ?1", params![before_ms])?;
        }
    }
    Ok(())
}

fn commit(conn: &mut Connection, batch: &[Batch]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for (_, writes) in batch {
        for write in writes {
            apply(&tx, write)?;
        }
    }
    tx.commit()
}

fn write_loop(mut conn: Connection, queue: mpsc::Receiver<Batch>, committed: watch::Sender<u64>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let last = batch.last().map_or(0, |(seq, _)| *seq);
        if let Err(e) = commit(&mut conn, &batch) {
            // Nothing sensible to answer a client whose write was lost: say so loudly; the hub's
            // in-memory state stays right for this run.
            log::error!("store: cannot commit {} change(s): {e}", batch.len());
        }
        committed.send_replace(last);
    }
}

impl Store {
    /// Opens (creating) the database at `path` and reads back what it holds; telemetry enqueued
    /// before `keep_events_after_ms` is left out.
    pub fn open(path: &Path, keep_events_after_ms: i64) -> Result<(Store, Loaded), String> {
        let describe = |e: rusqlite::Error| format!("{}: {e}", path.display());
        let conn = open_connection(path).map_err(describe)?;
        let loaded = load(&conn, keep_events_after_ms).map_err(describe)?;
        let (tx, rx) = mpsc::channel();
        let (committed_tx, committed) = watch::channel(0);
        let writer = std::thread::Builder::new()
            .name("ironhub-store".into())
            .spawn(move || write_loop(conn, rx, committed_tx))
            .map_err(|e| format!("cannot start the store writer: {e}"))?;
        let reader = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(describe)?;
        let store = Store {
            reader: Mutex::new(Some(reader)),
            queue: Mutex::new(Some(tx)),
            submitted: AtomicU64::new(0),
            committed,
            writer: Mutex::new(Some(writer)),
        };
        Ok((store, loaded))
    }

    /// Queues `writes` as one unit, after everything submitted before. Call with the hub's lock
    /// held, so the order on disk is the order of the changes in memory.
    pub fn submit(&self, writes: Vec<Write>) {
        if writes.is_empty() {
            return;
        }
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = queue.as_ref() {
            let seq = self.submitted.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = queue.send((seq, writes));
        }
    }

    /// Resolves once everything submitted before this call is committed.
    pub async fn flushed(&self) {
        self.committed_through(self.submitted()).await;
    }

    /// The point everything submitted so far reaches: [`Store::committed_through`] resolves once
    /// it is on disk. Taken right after a change, it names the commit that holds the change.
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::SeqCst)
    }

    /// Resolves once everything up to `point` (from [`Store::submitted`]) is committed; at once
    /// when it already is, or when the writer is gone (it commits all it was given before it ends).
    pub async fn committed_through(&self, point: u64) {
        let mut committed = self.committed.clone();
        let _ = committed.wait_for(|done| *done >= point).await;
    }

    /// Up to `limit` stored events with a sequence number in `after+1 .. before`, oldest first, as
    /// (sequence number, doc). A quick indexed read; an error reads as nothing.
    pub fn events_between(&self, after: u64, before: u64, limit: usize) -> Vec<(u64, String)> {
        let reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conn) = reader.as_ref() else { return Vec::new() };
        let read = || -> rusqlite::Result<Vec<(u64, String)>> {
            let mut rows = conn.prepare_cached(
                "SELECT sequence_number, doc FROM events WHERE sequence_number > ?1 AND sequence_number < ?2
                 ORDER BY sequence_number LIMIT ?3",
            )?;
            let found = rows.query_map(params![after as i64, before as i64, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?;
            found.collect()
        };
        read().unwrap_or_else(|e| {
            log::warn!("store: cannot read stored events: {e}");
            Vec::new()
        })
    }

    /// Commits what is queued and stops the writer (at shutdown).
    pub fn close(&self) {
        self.reader.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_come_back_after_a_reopen() {
        let dir = std::env::temp_dir().join(format!("ironhub-store-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let (store, loaded) = Store::open(&path, 0).unwrap();
        assert!(loaded.devices.is_empty() && loaded.meta.is_empty());
        store.submit(vec![
            Write::Meta { key: "policyKey", value: "k".into() },
            Write::Device { device_id: "a".into(), doc: Some("{\"a\":1}".into()) },
            Write::Device { device_id: "b".into(), doc: Some("{}".into()) },
            Write::PendingPut { lock_token: 1, device_id: "a".into(), module_id: None, doc: "p1".into() },
            Write::PendingPut { lock_token: 2, device_id: "a".into(), module_id: Some("m".into()), doc: "p2".into() },
            Write::Event { sequence_number: 1, enqueued_ms: 10, doc: "old".into() },
            Write::Event { sequence_number: 2, enqueued_ms: 2000, doc: "new".into() },
        ]);
        store.submit(vec![
            Write::Device { device_id: "b".into(), doc: None },
            Write::PendingDeleteModule { device_id: "a".into(), module_id: "m".into() },
            Write::Routes([("r".to_string(), "FROM /messages/* INTO $upstream".to_string())].into()),
        ]);
        store.flushed().await;
        drop(store);
        let (_store, loaded) = Store::open(&path, 1000).unwrap();
        assert_eq!(loaded.meta["policyKey"], "k");
        assert_eq!(loaded.devices, vec!["{\"a\":1}".to_string()]);
        assert_eq!(loaded.pending, vec!["p1".to_string()]);
        assert_eq!(loaded.routes.len(), 1);
        assert_eq!(loaded.events, vec![(2, "new".to_string())], "older than the retention: not read back");
        assert_eq!(loaded.last_event_sequence, 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
