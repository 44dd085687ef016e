//! The output side of one MQTT link: the bytes queued for the current connection and, for a TLS
//! connection, its write half, shared by the network loop and the callers' threads.
//!
//! Why shared: a sync send used to hand its PUBLISH to the loop (a wake-up of a runtime worker,
//! often a second worker woken to look for work) and the loop wrote it. Now a publish that is the
//! only one in flight is written by its caller, straight from its own thread; under load (more
//! than one in flight) the caller only queues and the loop writes everything queued in one write
//! (one TLS record, one syscall for a burst). Order is kept because every byte goes through `out`
//! and is taken from it only under this lock, by whoever writes.
//!
//! Protocol: whoever queues into an empty `out` makes sure it gets written (writes it now, or
//! wakes the loop). When a write cannot finish (the socket is full), the rest goes back to the
//! front of `out` and the loop finishes it; while it does (`loop_flushing`), callers only queue.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

use super::connector::TlsWriteHalf;

/// Largest output buffer kept between writes.
const KEEP_BUFFER: usize = 4 * 1024;

pub(crate) struct LinkWriter {
    state: Mutex<State>,
    /// Wakes the network loop: something is queued that it must write.
    wake: Arc<Notify>,
    /// A waker that notifies `wake`: registered with the socket when a caller's write cannot
    /// finish, so the loop (not the caller, who is gone) is woken when the socket drains.
    loop_waker: Waker,
}

#[derive(Default)]
struct State {
    /// Packets queued for the current connection, in wire order.
    out: BytesMut,
    /// The TLS write half while a TLS connection is up; `None` for WebSocket connections (the
    /// loop writes those whole) and between connections.
    half: Option<TlsWriteHalf>,
    /// The loop is waiting for the socket to take the rest of a write.
    loop_flushing: bool,
    /// A caller's write failed: the loop drops the connection when it next flushes.
    failed: Option<String>,
}

struct NotifyWaker(Arc<Notify>);

impl futures::task::ArcWake for NotifyWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.notify_one();
    }
}

/// What a write attempt left behind.
enum Written {
    /// Everything was written and flushed to the socket.
    All,
    /// The socket is full: the rest waits (in `out` or in the TLS buffer).
    Blocked,
    Failed(io::Error),
}

/// Writes as much of `out` as the stream takes, then flushes; what was not taken goes back to
/// the front of `out`.
fn write_out(half: &mut TlsWriteHalf, out: &mut BytesMut, cx: &mut Context<'_>) -> Written {
    let data = std::mem::take(out);
    let mut pos = 0;
    while pos < data.len() {
        match Pin::new(&mut *half).poll_write(cx, &data[pos..]) {
            Poll::Ready(Ok(0)) => return Written::Failed(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => pos += n,
            Poll::Ready(Err(e)) => return Written::Failed(e),
            Poll::Pending => break,
        }
    }
    if pos < data.len() {
        let mut rest = BytesMut::with_capacity(data.len() - pos + out.len());
        rest.extend_from_slice(&data[pos..]);
        *out = rest;
        return Written::Blocked;
    }
    // A small buffer is kept for the next packets (a sync sender allocates nothing per message);
    // a large one (a burst, a big message) is given back rather than pinned to an idle link.
    if data.capacity() <= KEEP_BUFFER {
        let mut data = data;
        data.clear();
        *out = data;
    }
    match Pin::new(half).poll_flush(cx) {
        Poll::Ready(Ok(())) => Written::All,
        Poll::Ready(Err(e)) => Written::Failed(e),
        Poll::Pending => Written::Blocked,
    }
}

impl LinkWriter {
    pub fn new() -> LinkWriter {
        let wake = Arc::new(Notify::new());
        let loop_waker = futures::task::waker(Arc::new(NotifyWaker(wake.clone())));
        LinkWriter { state: Mutex::new(State::default()), wake, loop_waker }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the loop to write what is queued.
    pub fn notify_loop(&self) {
        self.wake.notify_one();
    }

    /// Resolves when the loop has something to write.
    pub async fn notified(&self) {
        self.wake.notified().await
    }

    /// Queues an encoded packet; true if `out` was empty (the caller then sees to its writing).
    pub fn push(&self, packet: &[u8]) -> bool {
        let mut st = self.state();
        let was_empty = st.out.is_empty();
        st.out.extend_from_slice(packet);
        was_empty
    }

    /// Replaces what is queued (a new connection starts with its retransmissions; a lost one
    /// with nothing).
    pub fn reset(&self, out: BytesMut) {
        self.state().out = out;
    }

    /// A TLS connection is up: its write half is shared from now on.
    pub fn attach(&self, half: TlsWriteHalf) {
        let mut st = self.state();
        st.half = Some(half);
        st.loop_flushing = false;
        st.failed = None;
    }

    /// The connection ends: its write half back to the loop (to say goodbye on it, or drop it).
    pub fn detach(&self) -> Option<TlsWriteHalf> {
        let mut st = self.state();
        st.loop_flushing = false;
        st.failed = None;
        st.half.take()
    }

    /// Takes everything queued (for a connection the loop writes whole: WebSocket). Taken whole:
    /// an idle link keeps no output buffer.
    pub fn take(&self) -> Option<Bytes> {
        let mut st = self.state();
        if st.out.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut st.out).freeze())
    }

    /// A caller writes what is queued from its own thread. Returns false when the loop must be
    /// woken instead: no shared write half, the loop is busy writing, or the socket is full.
    pub fn write_now(&self) -> bool {
        let mut st = self.state();
        if st.loop_flushing || st.failed.is_some() {
            return false;
        }
        let State { out, half, failed, .. } = &mut *st;
        let Some(half) = half.as_mut() else { return false };
        let mut cx = Context::from_waker(&self.loop_waker);
        match write_out(half, out, &mut cx) {
            Written::All => true,
            Written::Blocked => false,
            Written::Failed(e) => {
                // Reported by the loop (it owns the connection's fate); the publish stays in flight.
                *failed = Some(e.to_string());
                false
            }
        }
    }

    /// The loop writes and flushes everything queued on the shared write half (resolves once
    /// nothing is left, including what callers queue meanwhile).
    pub fn poll_flush_all(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.state();
        if let Some(e) = st.failed.take() {
            return Poll::Ready(Err(io::Error::other(e)));
        }
        let State { out, half, loop_flushing, .. } = &mut *st;
        let Some(half) = half.as_mut() else { return Poll::Ready(Ok(())) };
        match write_out(half, out, cx) {
            Written::All => {
                *loop_flushing = false;
                Poll::Ready(Ok(()))
            }
            Written::Blocked => {
                *loop_flushing = true;
                Poll::Pending
            }
            Written::Failed(e) => Poll::Ready(Err(e)),
        }
    }
}
