//! Telemetry: a message is validated as it will be on the wire (size limit, topic ≤ 65,535 bytes,
//! packet within the hub's limit), takes room in the client's bounded queue (`Error::QueueFull`
//! when there is none), and goes through one ordered outbox, drained by one task per client, so the
//! wire order is the call order even while connecting or waiting for an in-flight slot. A send
//! whose caller timed out is withdrawn if it was not written yet, or reported "outcome unknown"
//! (and never re-sent) if it was.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use ironhub_protocol::limits;
use ironhub_protocol::topics::PropertyBag;
use tokio::sync::{oneshot, watch, Notify, Semaphore};
use tokio::time::Instant;

use super::{lock, Session};
use crate::bounds::Reservation;
use crate::dispatch::SerialQueue;
use crate::error::{Error, Result};
use crate::handlers::{SendCallback, SendFuture};
use crate::message::Message;
use crate::transport::mqtt::{Entry, Link, SendState, MAX_OUTGOING_PACKET};

/// MQTT 3.1.1 §1.5.3: a topic is a length-prefixed string of at most 65,535 bytes.
const MAX_TOPIC_BYTES: usize = u16::MAX as usize;

/// A publish waiting for its turn in the client's outbox.
pub(super) struct OutgoingSend {
    pub topic: String,
    pub payload: Vec<u8>,
    pub deadline: Instant,
    pub done: oneshot::Sender<Result<()>>,
    pub state: Arc<SendState>,
    pub reservation: Option<Reservation>,
}

/// The client's outbox; closed at shutdown (or when the session goes). `queued` counts the sends
/// pushed and not yet handed to the link: only while it is 0 may a send skip the outbox (order is
/// call order). A plain deque, not a channel: an idle client's outbox holds no allocation.
pub(super) struct Outbox(Arc<OutboxShared>);

pub(super) struct OutboxShared {
    state: Mutex<OutboxState>,
    ready: Notify,
}

struct OutboxState {
    items: VecDeque<OutgoingSend>,
    closed: bool,
    queued: usize,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.close();
    }
}

impl Outbox {
    pub fn new() -> (Outbox, Arc<OutboxShared>) {
        let state = OutboxState { items: VecDeque::new(), closed: false, queued: 0 };
        let shared = Arc::new(OutboxShared { state: Mutex::new(state), ready: Notify::new() });
        (Outbox(shared.clone()), shared)
    }

    pub fn close(&self) {
        lock(&self.0.state).closed = true;
        self.0.ready.notify_one();
    }

    /// Queues a send (the queue is bounded by the reservation each send holds); false once closed.
    pub fn push(&self, item: OutgoingSend) -> std::result::Result<(), OutgoingSend> {
        let mut st = lock(&self.0.state);
        if st.closed {
            return Err(item);
        }
        st.items.push_back(item);
        st.queued += 1;
        drop(st);
        self.0.ready.notify_one();
        Ok(())
    }

    /// The drain task handed one send to the link (or failed it).
    fn done_one(&self) {
        let mut st = lock(&self.0.state);
        st.queued = st.queued.saturating_sub(1);
    }

    /// The fast path of a send: with nothing queued ahead of it, a ready link and a free in-flight
    /// slot, the caller's thread hands the publish to the link itself (no task, no channel hop).
    /// Gives the item back when it must take the outbox.
    fn try_direct(&self, link: Option<Arc<Link>>, permits: &Arc<Semaphore>, item: OutgoingSend) -> Option<OutgoingSend> {
        let st = lock(&self.0.state);
        if st.queued > 0 || st.closed {
            return Some(item);
        }
        // Under the outbox lock, so a concurrent send cannot overtake this one.
        self.direct(link, permits, item).err()
    }

    /// Hands a publish to a ready link if an in-flight slot is free; gives it back otherwise.
    fn direct(&self, link: Option<Arc<Link>>, permits: &Arc<Semaphore>, item: OutgoingSend) -> std::result::Result<(), OutgoingSend> {
        let Some(link) = link.filter(|l| l.is_ready()) else { return Err(item) };
        let Ok(permit) = permits.clone().try_acquire_owned() else { return Err(item) };
        let OutgoingSend { topic, payload, done, state, reservation, .. } = item;
        link.enqueue_publish(topic, payload, Entry { done, state, permit, reservation });
        Ok(())
    }
}

/// The property bag a message is sent with.
fn outgoing_bag(m: &Message) -> PropertyBag {
    PropertyBag {
        message_id: m.message_id.clone(),
        correlation_id: m.correlation_id.clone(),
        user_id: m.user_id.clone(),
        content_type: m.content_type.clone(),
        content_encoding: m.content_encoding.clone(),
        expiry_time_utc: m.expiry_time_utc.clone(),
        output_name: m.output_name.clone(),
        interface_id: m.iothub_interface_id.clone(),
        custom: m.custom_properties.clone(),
        ..Default::default()
    }
}

/// The topic a message is sent on: the client's events topic (built once) and the message's
/// properties (`topics::telemetry_topic`, without re-formatting the identity on every send).
fn events_topic(base: &str, m: &Message) -> String {
    let props = outgoing_bag(m).encode();
    let mut topic = String::with_capacity(base.len() + props.len());
    topic.push_str(base);
    topic.push_str(&props);
    topic
}

/// Checks what goes on the wire: the topic fits MQTT's 16-bit length and the whole PUBLISH fits
/// the packet limit (a message refused here never reaches the hub, so it cannot wedge the link).
pub(crate) fn check_wire_size(topic: &str, payload_len: usize) -> Result<()> {
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(Error::invalid(format!(
            "the message's properties encode to a topic of {} bytes; MQTT allows at most {MAX_TOPIC_BYTES}",
            topic.len()
        )));
    }
    // Fixed header (≤ 5 bytes), topic length prefix (2), packet id (2).
    let packet = 5 + 2 + topic.len() + 2 + payload_len;
    if packet > MAX_OUTGOING_PACKET {
        return Err(Error::MessageTooLarge { size: packet, limit: MAX_OUTGOING_PACKET });
    }
    Ok(())
}

/// Waits for a publish's outcome until `deadline`; on timeout it is withdrawn or "outcome unknown".
pub(super) async fn await_outcome(rx: oneshot::Receiver<Result<()>>, state: Arc<SendState>, deadline: Instant) -> Result<()> {
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(Error::OperationCancelled),
        Err(_) => Err(Error::OperationTimeout(if state.abandon() {
            "no PUBACK from the hub in time; the outcome is unknown (the message was written and will not be re-sent)"
                .into()
        } else {
            "the message could not be sent in time; it was withdrawn and will not be sent".into()
        })),
    }
}

impl Session {
    /// Topic and payload of a message, validated before anything is queued.
    fn telemetry(&self, m: &Message) -> Result<(String, Vec<u8>)> {
        let size = m.get_size();
        if size > limits::MAX_TELEMETRY_BYTES {
            return Err(Error::MessageTooLarge { size, limit: limits::MAX_TELEMETRY_BYTES });
        }
        if m.output_name.is_some() && self.identity.module_id.is_none() {
            return Err(Error::invalid("only module clients can send to an output"));
        }
        let topic = events_topic(&self.events_topic, m);
        check_wire_size(&topic, m.data.len())?;
        Ok((topic, m.data.to_vec()))
    }

    /// Publishes at QoS 1 outside the telemetry queue (twin requests, method responses) and waits
    /// for the PUBACK, bounded by `deadline`.
    pub(super) async fn publish(self: &Arc<Self>, topic: String, payload: Vec<u8>, deadline: Instant) -> Result<()> {
        check_wire_size(&topic, payload.len())?;
        let (tx, rx) = oneshot::channel();
        let state = SendState::new();
        let item = OutgoingSend { topic, payload, deadline, done: tx, state: state.clone(), reservation: None };
        self.enqueue(item).await;
        await_outcome(rx, state, deadline).await
    }

    /// Hands one publish to the link (connecting first when allowed, waiting for an in-flight
    /// slot); every failure is reported through `done`.
    pub(super) async fn enqueue(self: &Arc<Self>, item: OutgoingSend) {
        // Connected with a free slot (the common case in a burst): no timers, no waiting.
        let item = match self.outbox.direct(self.current_link(), &self.permits, item) {
            Ok(()) => return,
            Err(item) => item,
        };
        let OutgoingSend { topic, payload, deadline, done, state, reservation } = item;
        let fail = |done: oneshot::Sender<Result<()>>, e: Error| {
            let _ = done.send(Err(e));
        };
        // One timer for the whole wait (connection, renewal pause, in-flight slot): in a burst
        // every send past the window comes this way.
        let mut connected = false;
        let ready = tokio::time::timeout_at(deadline, async {
            let link = self.ensure_link().await?;
            connected = true;
            link.wait_unpaused().await;
            let permit = self.permits.clone().acquire_owned().await.map_err(|_| Error::ShutDown)?;
            Ok::<_, Error>((link, permit))
        })
        .await;
        let (link, permit) = match ready {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return fail(done, e),
            Err(_) if !connected => return fail(done, Error::OperationTimeout("not connected in time".into())),
            Err(_) => return fail(done, Error::OperationTimeout("too many messages waiting for the hub".into())),
        };
        link.enqueue_publish(topic, payload, Entry { done, state, permit, reservation });
    }

    pub fn send_pipelined(self: Arc<Self>, m: &Message) -> SendFuture {
        match self.queue_send(m) {
            Ok(fut) => fut,
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn queue_send(self: &Arc<Self>, m: &Message) -> Result<SendFuture> {
        self.check_open()?;
        let (topic, payload) = self.telemetry(m)?;
        let reservation = self.budget.reserve(topic.len() + payload.len())?;
        if self.offline.is_some() && !self.is_connected() {
            // Offline with a persistent queue: the message is safe on disk once this returns.
            self.store_offline(&topic, &payload)?;
            drop(reservation);
            return Ok(Box::pin(std::future::ready(Ok(()))));
        }
        if !self.options.auto_connect && self.current_link().is_none() {
            return Err(Error::NoConnection);
        }
        let deadline = self.deadline();
        let (tx, rx) = oneshot::channel();
        let state = SendState::new();
        let item = OutgoingSend { topic, payload, deadline, done: tx, state: state.clone(), reservation: Some(reservation) };
        if let Some(item) = self.outbox.try_direct(self.current_link(), &self.permits, item) {
            if self.outbox.push(item).is_err() {
                return Err(Error::ShutDown);
            }
        }
        // The SDKs' rule for a send cut by a drop with `connection_retry` off (`Error::for_send`):
        // applied here so the Rust API reports what C, Python and Go report.
        let retry = self.options.connection_retry;
        Ok(Box::pin(async move { await_outcome(rx, state, deadline).await.map_err(|e| e.for_send(retry)) }))
    }

    pub fn send_with_callback(self: Arc<Self>, m: &Message, callback: SendCallback) {
        let guard = CallbackGuard::new(callback, &self.queue, &self.callbacks);
        let fut = self.send_pipelined(m);
        crate::runtime::handle().spawn(async move {
            let r = fut.await;
            guard.complete(r);
        });
    }
}

/// The outbox task of one client: hands telemetry to the link strictly in call order, skipping
/// what its caller withdrew. Holds only a weak reference, so it ends with the client.
pub(super) async fn drain_outbox(session: Weak<Session>, outbox: Arc<OutboxShared>) {
    loop {
        let next = {
            let mut st = lock(&outbox.state);
            match st.items.pop_front() {
                Some(item) => Some(item),
                None if st.closed => return,
                None => None,
            }
        };
        let Some(item) = next else {
            outbox.ready.notified().await;
            continue;
        };
        let Some(s) = session.upgrade() else { return };
        if item.state.is_abandoned() {
            // Withdrawn by its caller's timeout: never sent.
        } else if s.check_open().is_err() {
            let _ = item.done.send(Err(Error::OperationCancelled));
        } else {
            s.enqueue(item).await;
        }
        s.outbox.done_one();
    }
}

/// Send callbacks not yet started: `shutdown` waits for them to be done, so that no callback of
/// the client runs after it returned (the C ABI frees the caller's context then).
pub(super) type PendingCallbacks = Arc<watch::Sender<usize>>;

/// Runs a send's completion callback exactly once, on the client's dispatcher: with the outcome,
/// or with `OperationCancelled` if the waiting task is dropped first.
struct CallbackGuard {
    cb: Option<SendCallback>,
    queue: Arc<SerialQueue>,
    pending: PendingCallbacks,
}

impl CallbackGuard {
    fn new(cb: SendCallback, queue: &Arc<SerialQueue>, pending: &PendingCallbacks) -> CallbackGuard {
        pending.send_modify(|n| *n += 1);
        CallbackGuard { cb: Some(cb), queue: queue.clone(), pending: pending.clone() }
    }

    fn complete(mut self, r: Result<()>) {
        // A send cut short by shutdown is, for its caller, a cancelled operation.
        let r = match r {
            Err(Error::ShutDown) => Err(Error::OperationCancelled),
            other => other,
        };
        self.run(r);
    }

    fn run(&mut self, r: Result<()>) {
        if let Some(cb) = self.cb.take() {
            let pending = self.pending.clone();
            self.queue.push(move || {
                // Counted as done when it starts: a callback may itself call shutdown.
                pending.send_modify(|n| *n -= 1);
                cb(r)
            });
        }
    }
}

impl Drop for CallbackGuard {
    fn drop(&mut self) {
        self.run(Err(Error::OperationCancelled));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironhub_protocol::topics;

    #[test]
    fn the_events_topic_built_once_is_the_protocol_topic() {
        let mut with_props = Message::new("x");
        with_props.message_id = Some("m 1".into());
        with_props.set_property("k/ey", "v&al");
        for (d, module) in [("dev", None), ("dev", Some("mod"))] {
            let base = topics::telemetry_topic(d, module, &PropertyBag::default());
            for m in [&Message::new("x"), &with_props] {
                assert_eq!(events_topic(&base, m), topics::telemetry_topic(d, module, &outgoing_bag(m)));
            }
        }
    }

    #[test]
    fn topics_over_65535_bytes_and_oversized_packets_are_refused_before_queueing() {
        assert!(check_wire_size(&"t".repeat(65_535), 0).is_ok());
        let e = check_wire_size(&"t".repeat(65_536), 0).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("65535"), "{e}");
        let e = check_wire_size("t", MAX_OUTGOING_PACKET).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::MessageTooLarge);
        // The case: one property of 22,000 '/' percent-encodes to 66,000 bytes.
        let mut m = Message::new("x");
        m.set_property("p", "/".repeat(22_000));
        let topic = topics::telemetry_topic("d", None, &outgoing_bag(&m));
        assert!(check_wire_size(&topic, 1).is_err(), "topic of {} bytes", topic.len());
    }
}
