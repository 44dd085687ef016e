//! The input side of one MQTT link over TLS: the read half and the bytes read from the hub not yet
//! parsed, shared by the network loop and the thread of a blocking sync sender.
//!
//! Why shared: a sync send waiting for its PUBACK costs two wake-ups in a row from idle (the PUBACK
//! wakes a runtime worker, whose loop then unparks the caller). The caller that wrote the only
//! publish in flight (`writer::LinkWriter::write_now`) may instead read its PUBACK itself, from its
//! own thread, while it waits (`runtime::wait` → `Assist::wait`): spinning on the socket for a
//! short budget, or blocked in ppoll(2) on it, or whichever way has been quickest lately on this
//! link (`Waits`, the default), as `blocking::set_sync_wait` / `IRONHUB_SYNC_WAIT` say. On an idle
//! machine the adaptive choice settles on spinning (about twice the rate of parking, docs/benchmarks.md);
//! on a busy one it settles on parking or ppoll, which is what measured best there.
//!
//! Rules (the loop owns the connection; a caller only helps):
//! - Everything read goes into `rbuf` and is parsed from its front, under `state`'s lock, by whoever
//!   holds it: no byte is lost or parsed twice, and packets are handled in wire order.
//! - A caller parses only PUBACKs (`Link::on_puback`). Anything else at the front (PUBLISH, SUBACK,
//!   PINGRESP, a malformed packet) and any end of the stream (EOF, a read error, kept in `end`) is
//!   left for the loop, which the caller wakes: the loop handles it exactly as if it had read it.
//! - A caller polls the socket with the loop's waker, so readiness always wakes the loop (never a
//!   caller that has gone), and only `try_lock`s: it never waits for the loop.
//! - Reads by callers count for the keep-alive watchdog (`last_rx`).
//!
//! Lock order: `LinkReader::state`, then `Link::tracker`, then `LinkWriter::state` (a caller calls
//! `on_puback` under `state`; the loop never takes `state` while holding the others).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::pin;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::connector::{TlsReadHalf, READ_CHUNK};
use super::mqtt::{Link, MAX_INCOMING_PACKET};
use crate::runtime::ThreadWaker;

/// First byte and length of every PUBACK (MQTT 3.1.1 §3.4).
const PUBACK: (u8, usize) = (0x40, 4);
/// Longest a caller spins for its PUBACK before it parks: beyond this a wake-up is cheaper.
const SPIN_CAP: Duration = Duration::from_micros(100);
/// Round trips remembered per way of waiting.
const SAMPLES: usize = 16;

pub(crate) struct LinkReader {
    state: Mutex<State>,
    /// When something was last read from the hub (µs since `epoch`), by the loop or a caller.
    last_rx: AtomicU64,
    epoch: Instant,
    /// The socket's descriptor while a TLS connection is up (-1 otherwise), for `Mode::Poll`.
    fd: AtomicI32,
    /// How blocking callers have been waiting, and how long it took.
    waits: Mutex<Waits>,
}

#[derive(Default)]
struct State {
    /// The TLS read half while a TLS connection is up; `None` for WebSocket connections (the loop
    /// reads those itself) and between connections.
    half: Option<TlsReadHalf>,
    /// Bytes read from the hub not yet parsed into packets.
    rbuf: BytesMut,
    /// EOF (`Ok(0)`) or a read error seen by a caller, for the loop to handle.
    end: Option<io::Result<usize>>,
    /// The loop's task waker: callers poll the socket with it, and wake it when they leave work.
    loop_waker: Option<Waker>,
}

#[derive(Default, Clone, Copy)]
struct Rtts {
    us: [u32; SAMPLES],
    len: usize,
    next: usize,
}

impl Rtts {
    fn push(&mut self, rtt: Duration) {
        self.us[self.next] = rtt.as_micros().min(u32::MAX as u128) as u32;
        self.next = (self.next + 1) % SAMPLES;
        self.len = (self.len + 1).min(SAMPLES);
    }

    fn median(&self) -> Option<Duration> {
        if self.len < MIN_SAMPLES {
            return None;
        }
        let mut s = self.us;
        let s = &mut s[..self.len];
        s.sort_unstable();
        Some(Duration::from_micros(s[self.len / 2] as u64))
    }
}

/// How a blocking caller waits for the PUBACK of the publish it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Park at once; the loop reads the PUBACK and unparks the caller (two wake-ups from idle).
    Park = 0,
    /// Re-read the socket for a short budget (yielding between reads), then park: no wake-up
    /// when the PUBACK comes in time, CPU meanwhile.
    Spin = 1,
    /// Block in ppoll(2) on the socket and the thread's eventfd: the kernel wakes the caller
    /// itself when the PUBACK arrives (one wake-up), little CPU.
    Poll = 2,
}

const MODES: [Mode; 3] = [Mode::Park, Mode::Spin, Mode::Poll];
/// One send in this many tries the next mode in turn, so every mode's figure stays current (each
/// is retried every 192 sends: a losing spin costs about 0.5 % of sends up to `SPIN_CAP`).
const EXPLORE_EVERY: u32 = 64;
/// Samples a mode needs before its median counts.
const MIN_SAMPLES: usize = 3;

/// Recent whole-call times (from the call's start to its future's last poll) of each mode on one
/// link, for the adaptive way: each send waits the way that has been quickest lately. A spin must
/// beat the best of the others by 10 % to be chosen (it costs a core while it lasts), so a loaded
/// host, where a spinning caller takes the CPU the hub and the loop need, turns it off by itself;
/// it comes back when it pays again.
#[derive(Default)]
struct Waits {
    rtts: [Rtts; 3],
    sends: u32,
}

impl Waits {
    fn choose(&mut self) -> Mode {
        self.sends = self.sends.wrapping_add(1);
        if let Some(m) = MODES.into_iter().find(|m| self.rtts[*m as usize].len < MIN_SAMPLES) {
            return m; // not measured yet
        }
        if self.sends % EXPLORE_EVERY == 0 {
            return MODES[(self.sends / EXPLORE_EVERY) as usize % MODES.len()];
        }
        let median = |m: Mode| self.rtts[m as usize].median().unwrap_or(Duration::MAX);
        let calm = if median(Mode::Poll) < median(Mode::Park) { Mode::Poll } else { Mode::Park };
        if median(Mode::Spin).mul_f64(1.1) < median(calm) {
            Mode::Spin
        } else {
            calm
        }
    }

    /// How long a spin may last: about twice the recent spun round trip, at most `SPIN_CAP`.
    fn spin_budget(&self) -> Duration {
        match self.rtts[Mode::Spin as usize].median() {
            Some(m) => (2 * m).min(SPIN_CAP),
            None => SPIN_CAP,
        }
    }
}

/// What one attempt by a caller did.
#[derive(Debug, PartialEq, Eq)]
enum Helped {
    /// Read what there was (PUBACKs handled); nothing more is available now.
    Drained,
    /// Left something for the loop (and woke it), or there is no connection to read.
    Stop,
    /// The loop (or another caller) holds the reader.
    Busy,
}

/// What is at the front of the read buffer.
#[derive(Debug, PartialEq, Eq)]
enum Front {
    Incomplete,
    /// A well-formed PUBACK: the only packet a caller parses.
    PubAck,
    /// Any other complete packet, or a malformed or oversized one: left for the loop (which
    /// reports it). A packet that only looks like a PUBACK is left too, because parsing consumes
    /// its bytes even when it fails.
    Other,
}

fn front(buf: &BytesMut) -> Front {
    match rumqttc::mqttbytes::check(buf.iter(), MAX_INCOMING_PACKET) {
        Ok(h) if (buf[0], h.frame_length()) == PUBACK => Front::PubAck,
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Front::Incomplete,
        _ => Front::Other,
    }
}

impl LinkReader {
    pub fn new() -> LinkReader {
        LinkReader {
            state: Mutex::default(),
            last_rx: AtomicU64::new(0),
            epoch: Instant::now(),
            fd: AtomicI32::new(-1),
            waits: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn mark_rx(&self) {
        let us = self.epoch.elapsed().as_micros() as u64;
        self.last_rx.fetch_max(us, Ordering::Relaxed);
    }

    /// When the hub was last heard from, by the loop or a caller.
    pub fn last_rx(&self) -> Instant {
        self.epoch + Duration::from_micros(self.last_rx.load(Ordering::Relaxed))
    }

    /// A TLS connection is up: its read half is shared from now on, starting with the bytes the
    /// hub sent after its CONNACK.
    pub fn attach(&self, half: TlsReadHalf, fd: RawFd, rest: BytesMut) {
        let mut st = self.state();
        *st = State { half: Some(half), rbuf: rest, end: None, loop_waker: st.loop_waker.take() };
        self.fd.store(fd, Ordering::Release);
        drop(st);
        self.mark_rx();
    }

    /// The connection ends: the read half and whatever was read and not parsed go with it.
    pub fn detach(&self) -> Option<TlsReadHalf> {
        let mut st = self.state();
        self.fd.store(-1, Ordering::Release);
        st.rbuf = BytesMut::new();
        st.end = None;
        st.half.take()
    }

    /// The loop's read: ready when there is something to handle (a complete packet a caller left,
    /// an end a caller saw, or new bytes); `Ok(0)` is EOF. Registers the loop's waker for callers.
    pub fn poll_read(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut st = self.state();
        if !st.loop_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.loop_waker = Some(cx.waker().clone());
        }
        // Packets a caller left come before the end it saw after them.
        if front(&st.rbuf) != Front::Incomplete {
            return Poll::Ready(Ok(st.rbuf.len()));
        }
        if let Some(end) = st.end.take() {
            return Poll::Ready(end);
        }
        let State { half, rbuf, .. } = &mut *st;
        let Some(half) = half.as_mut() else { return Poll::Pending };
        rbuf.reserve(READ_CHUNK);
        let r = pin!(half.read_buf(rbuf)).poll(cx);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            drop(st);
            self.mark_rx();
        }
        r
    }

    /// The next complete packet in the buffer, for the loop (`Ok(None)`: none complete).
    pub fn next_packet(&self) -> Result<Option<Packet>, rumqttc::mqttbytes::Error> {
        let mut st = self.state();
        let r = match Packet::read(&mut st.rbuf, MAX_INCOMING_PACKET) {
            Ok(p) => Ok(Some(p)),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(e),
        };
        // Everything consumed: give the buffer back (an idle client then holds no read buffer,
        // and a large packet's growth is not kept); the next read takes a fresh READ_CHUNK.
        if st.rbuf.is_empty() {
            st.rbuf = BytesMut::new();
        }
        r
    }

    /// A caller's attempt: handles the PUBACKs at the front of the buffer, reading (without
    /// blocking) while there may be more; stops at anything else and wakes the loop for it.
    fn help(&self, link: &Link) -> Helped {
        let mut st = match self.state.try_lock() {
            Ok(st) => st,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Helped::Busy,
        };
        let Some(waker) = st.loop_waker.clone() else { return Helped::Stop };
        if st.end.is_some() || st.half.is_none() {
            return Helped::Stop;
        }
        loop {
            match front(&st.rbuf) {
                Front::PubAck => {
                    // Checked well-formed: the packet id is its last two bytes.
                    let pkid = u16::from_be_bytes([st.rbuf[2], st.rbuf[3]]);
                    st.rbuf.advance(PUBACK.1);
                    link.on_puback(pkid);
                    continue;
                }
                Front::Other => {
                    waker.wake_by_ref();
                    return Helped::Stop;
                }
                Front::Incomplete => {}
            }
            let State { half, rbuf, end, .. } = &mut *st;
            let Some(half) = half.as_mut() else { return Helped::Stop };
            rbuf.reserve(READ_CHUNK);
            let mut cx = Context::from_waker(&waker);
            let r = super::connector::direct_read(|| pin!(half.read_buf(rbuf)).poll(&mut cx));
            match r {
                Poll::Pending => return Helped::Drained,
                Poll::Ready(Ok(n)) if n > 0 => self.mark_rx(),
                Poll::Ready(r) => {
                    *end = Some(r);
                    waker.wake_by_ref();
                    return Helped::Stop;
                }
            }
        }
    }

    fn waits(&self) -> MutexGuard<'_, Waits> {
        self.waits.lock().unwrap_or_else(|p| p.into_inner())
    }
}

thread_local! {
    /// This thread is polling a send inside `runtime::wait` (a blocking caller, not a task).
    static WAITING: Cell<bool> = const { Cell::new(false) };
    /// The link on which this thread just wrote the only publish in flight.
    static OFFERED: RefCell<Option<Arc<Link>>> = const { RefCell::new(None) };
}

/// Called by a caller that wrote the only publish in flight from its own thread: if it is a
/// blocking caller, it may read the PUBACK itself while it waits.
pub(crate) fn offer(link: &Arc<Link>) {
    if WAITING.with(Cell::get) {
        OFFERED.with(|o| *o.borrow_mut() = Some(link.clone()));
    }
}

/// A blocking caller helping its link's loop while it waits for its send's outcome.
pub(crate) struct Assist {
    link: Arc<Link>,
    since: Instant,
    mode: Mode,
}

impl Assist {
    /// Runs `step` (making a send, or polling one) as a blocking caller; returns what it returned
    /// and the assist it offered, if any (it wrote the only publish in flight from this thread).
    /// `since`: when the caller's send began. A way is judged by the whole call, write and last
    /// poll included: spinning looked quicker between write and PUBACK than the call it made
    /// (the runtime worker, still woken for the PUBACK, overlaps the end of the call).
    pub fn offered_by<R>(step: impl FnOnce() -> R, since: Instant) -> (R, Option<Assist>) {
        WAITING.with(|w| w.set(true));
        let r = step();
        WAITING.with(|w| w.set(false));
        let link = OFFERED.with(|o| o.borrow_mut().take());
        let assist = link.and_then(|link| {
            let mode = match way() {
                // Parking is what the loop does anyway: nothing to set up, nothing to record.
                Some(Mode::Park) => return None,
                Some(mode) => mode,
                None => link.reader.waits().choose(),
            };
            Some(Assist { mode, link, since })
        });
        (r, assist)
    }

    /// Waits for the send's PUBACK the chosen way until `waker` says the outcome is in, or the
    /// loop must take over, or the mode gives up; the caller then parks as usual.
    pub fn wait(&self, waker: &ThreadWaker) {
        let reader = &self.link.reader;
        match self.mode {
            Mode::Park => {}
            Mode::Spin => {
                let until = Instant::now() + reader.waits().spin_budget();
                // Yielding, not a busy pause: on a busy host the hub and the loop may need this
                // very core to produce the PUBACK (a pure spin doubled p90 and CPU there).
                while reader.help(&self.link) != Helped::Stop && !waker.is_woken() && Instant::now() < until {
                    std::thread::yield_now();
                }
            }
            Mode::Poll => {
                let until = Instant::now() + POLL_CAP;
                while reader.help(&self.link) != Helped::Stop && !waker.is_woken() {
                    let fd = reader.fd.load(Ordering::Acquire);
                    let left = until.saturating_duration_since(Instant::now());
                    if fd < 0 || left.is_zero() || !waker.wait_readable(fd, left) {
                        return;
                    }
                }
            }
        }
    }

    /// The send's future is done (its last poll included): remember how long this way took.
    pub fn finish(self) {
        if let Ok(mut w) = self.link.reader.waits.try_lock() {
            w.rtts[self.mode as usize].push(self.since.elapsed());
        }
    }
}

thread_local! {
    /// How this thread's blocking sends wait, when set (`blocking::set_sync_wait`).
    static CONFIGURED: Cell<Option<Way>> = const { Cell::new(None) };
}

/// How blocking sends wait: one way always, or the one chosen by recent round trips (`None`).
pub(crate) type Way = Option<Mode>;

/// Sets how this thread's blocking sends wait, overriding the process default.
pub(crate) fn set_way(way: Way) {
    CONFIGURED.with(|c| c.set(Some(way)));
}

/// This thread's way, else the process default: `IRONHUB_SYNC_WAIT=park|spin|poll|adaptive` (read
/// once), else adaptive (it costs a busy host nothing over parking and doubles an idle one's rate).
fn way() -> Way {
    static DEFAULT: std::sync::OnceLock<Way> = std::sync::OnceLock::new();
    CONFIGURED.with(Cell::get).unwrap_or_else(|| {
        *DEFAULT.get_or_init(|| match std::env::var("IRONHUB_SYNC_WAIT").as_deref() {
            Ok("spin") => Some(Mode::Spin),
            Ok("poll") => Some(Mode::Poll),
            Ok("park") => Some(Mode::Park),
            _ => None,
        })
    })
}

/// Longest a caller blocks in ppoll(2) before it parks (a round trip that long is no longer one a
/// wake-up matters for; it also bounds a wait on a descriptor the loop closed meanwhile).
const POLL_CAP: Duration = Duration::from_millis(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(w: &mut Waits, m: Mode, us: u64, n: usize) {
        for _ in 0..n {
            w.rtts[m as usize].push(Duration::from_micros(us));
        }
    }

    fn chosen(w: &mut Waits, n: u32) -> [usize; 3] {
        let mut c = [0; 3];
        for _ in 0..n {
            c[w.choose() as usize] += 1;
        }
        c
    }

    #[test]
    fn each_send_waits_the_way_that_was_quickest_and_the_others_are_retried() {
        let mut w = Waits::default();
        let first: Vec<Mode> = (0..3 * MIN_SAMPLES).map(|_| w.choose()).collect();
        assert!(first.iter().all(|m| *m == Mode::Park), "unmeasured modes are measured first");
        fill(&mut w, Mode::Park, 30, SAMPLES);
        fill(&mut w, Mode::Spin, 22, SAMPLES);
        fill(&mut w, Mode::Poll, 26, SAMPLES);
        let c = chosen(&mut w, 800);
        assert!(c[Mode::Spin as usize] >= 700, "an idle host spins: {c:?}");
        assert!(c[Mode::Park as usize] > 0 && c[Mode::Poll as usize] > 0, "the others are retried: {c:?}");
        assert_eq!(w.spin_budget(), Duration::from_micros(44));
        // Loaded: spinning takes the CPU the hub needs and its round trips get long.
        fill(&mut w, Mode::Spin, 400, SAMPLES);
        let c = chosen(&mut w, 800);
        assert!(c[Mode::Poll as usize] >= 700, "{c:?}");
        assert!(c[Mode::Spin as usize] <= 800 / EXPLORE_EVERY as usize, "a loaded host rarely spins: {c:?}");
        assert_eq!(w.spin_budget(), SPIN_CAP);
        // Spinning only slightly quicker than waiting in ppoll: not worth a core.
        fill(&mut w, Mode::Spin, 25, SAMPLES);
        assert!(chosen(&mut w, 800)[Mode::Poll as usize] >= 700);
        fill(&mut w, Mode::Spin, 20, SAMPLES);
        assert!(chosen(&mut w, 800)[Mode::Spin as usize] >= 700, "back on once it pays again");
    }

    #[test]
    fn callers_take_only_complete_well_formed_pubacks() {
        let f = |b: &[u8]| front(&BytesMut::from(b));
        assert_eq!(f(&[0x40, 2, 0]), Front::Incomplete, "a PUBACK missing a byte");
        assert_eq!(f(&[0x40, 2, 0, 1, 0x40]), Front::PubAck);
        assert_eq!(f(&[0xd0, 0]), Front::Other, "PINGRESP");
        assert_eq!(f(&[0x40, 3, 0, 1, 0]), Front::Other, "a PUBACK of the wrong length is the loop's");
        assert_eq!(f(&[0x41, 2, 0, 1]), Front::Other, "reserved flags set");
        assert_eq!(f(&[0x40, 0xff, 0xff, 0xff, 0xff, 0xff]), Front::Other, "malformed length");
    }
}
