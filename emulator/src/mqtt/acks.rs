//! Owns one connection's PUBACKs when the hub persists (a state directory, not `--memory-only`):
//! each goes out only after the store's commit that holds its PUBLISH, and in the order the
//! PUBLISHes came (MQTT 3.1.1 §4.6), by a task of the connection's own.
//!
//! Why a task: the reading side hands each PUBACK over and reads on, so the PUBLISHes a client
//! pipelines while one commit is under way are all in the store's next commit (its writer takes
//! whatever is queued as one transaction) instead of costing one fsync each. A PUBACK still means
//! "on disk": a client that saw it finds the message after a restart, even after a kill -9.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rumqttc::mqttbytes::v4::{Packet, PubAck};
use tokio::sync::{mpsc, oneshot, watch};

use super::connection::STALL_TIMEOUT;
use crate::hub::Hub;

/// PUBACKs waiting for their commit, at most; a client that pipelines more waits for room
/// (its own reading slows down), as it does for the outbound queue.
const CAPACITY: usize = 4096;

struct Ack {
    pkid: u16,
    /// The store's commit point right after the PUBLISH was handled.
    point: u64,
    /// Told once the PUBACK is on the outbound queue (for answers that must follow it).
    queued: Option<oneshot::Sender<()>>,
}

/// The sending side, held by the connection's reading task.
pub(super) struct Acks {
    queue: mpsc::Sender<Ack>,
    /// The commit point of the last telemetry PUBACK queued.
    last_point: AtomicU64,
}

impl Acks {
    /// Starts the connection's PUBACK task; it ends when this is dropped and its queue is empty.
    /// If the client stops reading its answers for `STALL_TIMEOUT`, it closes the connection.
    pub(super) fn start(hub: Arc<Hub>, outbound: mpsc::Sender<Packet>, close: Arc<watch::Sender<bool>>) -> Acks {
        let (queue, pending) = mpsc::channel(CAPACITY);
        tokio::spawn(run(hub, pending, outbound, close));
        Acks { queue, last_point: AtomicU64::new(0) }
    }

    /// Queues the PUBACK of `pkid` to go once the store reached `point`. False when the
    /// connection is closing (or the client left a full queue unread for `STALL_TIMEOUT`).
    pub(super) async fn after_commit(&self, pkid: u16, point: u64) -> bool {
        self.last_point.store(point, Ordering::Relaxed);
        self.push(Ack { pkid, point, queued: None }).await
    }

    /// Queues the PUBACK of a PUBLISH that stored nothing (a twin request) after those of the
    /// earlier PUBLISHes, and returns once it is queued to the client, so it goes out before the
    /// request's answer. It waits for no commit of its own.
    pub(super) async fn in_order(&self, pkid: u16) -> bool {
        let (tx, rx) = oneshot::channel();
        let point = self.last_point.load(Ordering::Relaxed);
        self.push(Ack { pkid, point, queued: Some(tx) }).await && rx.await.is_ok()
    }

    async fn push(&self, ack: Ack) -> bool {
        matches!(tokio::time::timeout(STALL_TIMEOUT, self.queue.send(ack)).await, Ok(Ok(())))
    }
}

async fn run(
    hub: Arc<Hub>,
    mut pending: mpsc::Receiver<Ack>,
    outbound: mpsc::Sender<Packet>,
    close: Arc<watch::Sender<bool>>,
) {
    while let Some(ack) = pending.recv().await {
        // At once when an earlier wait already covered this point (the common case in a burst).
        hub.flushed_through(ack.point).await;
        let sent = tokio::time::timeout(STALL_TIMEOUT, outbound.send(Packet::PubAck(PubAck::new(ack.pkid)))).await;
        if !matches!(sent, Ok(Ok(()))) {
            close.send_replace(true);
            return;
        }
        if let Some(queued) = ack.queued {
            let _ = queued.send(());
        }
    }
}
