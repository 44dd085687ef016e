//! The one tokio runtime every client of the process shares, created lazily on first use: network
//! loops of any number of clients are tasks on a small fixed set of worker threads.

use std::future::Future;
use std::os::fd::RawFd;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::thread::Thread;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::time::Instant;

use crate::dispatch::HandlerContext;
use crate::transport::reader::Assist;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(2)
            // DNS lookups of connects run on blocking threads: bounded, so a burst of
            // thousands of connects does not mean thousands of threads.
            .max_blocking_threads(4)
            .thread_name("ironhub-net")
            .enable_all()
            .build()
            .expect("cannot start the ironhub runtime")
    })
}

/// Handle of the shared runtime.
pub fn handle() -> &'static Handle {
    runtime().handle()
}

/// Runs `fut` on the shared runtime and blocks the calling thread until it finishes. Works from
/// any thread, including one inside another runtime (it blocks that thread, it does not panic).
/// A call made from inside a handler keeps that fact (`HandlerContext`), so client operations
/// it runs know not to wait for the very handler that is blocked here.
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // One task type for every caller: the future is boxed and its output handed back through a
    // slot, so tokio's task machinery (harness, cell, task-local scope) is instantiated once
    // rather than once per blocking call site.
    let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
    let out = slot.clone();
    let erased: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
        let v = fut.await;
        *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    });
    let task = handle().spawn(HandlerContext::capture().wrap(erased));
    match futures::executor::block_on(task) {
        Ok(()) => slot.lock().unwrap_or_else(|p| p.into_inner()).take().expect("the task set its output"),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => panic!("ironhub runtime task was cancelled"),
    }
}

/// The waker of a thread blocked in `wait`: sets `woken` (the future may make progress), then
/// unparks the thread, or, while it waits in ppoll(2) for its PUBACK (`reader::Assist`), writes
/// its eventfd so the ppoll returns.
pub(crate) struct ThreadWaker {
    thread: Thread,
    woken: AtomicBool,
    in_ppoll: AtomicBool,
    /// Made on the thread's first wait in ppoll; -1 if it could not be made (that mode then
    /// falls back to parking).
    eventfd: OnceLock<RawFd>,
}

impl futures::task::ArcWake for ThreadWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.woken.store(true, Ordering::SeqCst);
        if arc_self.in_ppoll.load(Ordering::SeqCst) {
            if let Some(&fd) = arc_self.eventfd.get() {
                // SAFETY: an eventfd this waker owns (closed only when the thread ends).
                let _ = unsafe { libc::eventfd_write(fd, 1) };
            }
        }
        arc_self.thread.unpark();
    }
}

impl Drop for ThreadWaker {
    fn drop(&mut self) {
        if let Some(&fd) = self.eventfd.get().filter(|fd| **fd >= 0) {
            // SAFETY: the eventfd this waker made; nothing uses it once the waker is gone.
            unsafe { libc::close(fd) };
        }
    }
}

impl ThreadWaker {
    pub fn is_woken(&self) -> bool {
        self.woken.load(Ordering::SeqCst)
    }

    /// Blocks in ppoll(2) until `fd` is readable, this waker is woken, or `timeout` passes.
    /// False when the wait cannot be made or `fd` is no longer a valid socket (the caller parks).
    pub fn wait_readable(&self, fd: RawFd, timeout: Duration) -> bool {
        // SAFETY: eventfd(2) with valid flags; the descriptor is owned by this waker.
        let efd = *self.eventfd.get_or_init(|| unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) });
        if efd < 0 {
            return false;
        }
        self.in_ppoll.store(true, Ordering::SeqCst);
        // Woken between the caller's last check and `in_ppoll`: the eventfd was not written.
        if self.is_woken() {
            self.in_ppoll.store(false, Ordering::SeqCst);
            return true;
        }
        let mut fds = [
            libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: efd, events: libc::POLLIN, revents: 0 },
        ];
        let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
        // SAFETY: two valid pollfd entries and a valid timespec, for the duration of the call.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
        self.in_ppoll.store(false, Ordering::SeqCst);
        if fds[1].revents != 0 {
            let mut v = 0;
            // SAFETY: reading the counter of our own non-blocking eventfd.
            let _ = unsafe { libc::eventfd_read(efd, &mut v) };
        }
        n > 0 && fds[0].revents & libc::POLLNVAL == 0
    }
}

thread_local! {
    /// This thread's waker for `wait`, made once (a sync send allocates none).
    static THREAD_WAKER: Arc<ThreadWaker> = Arc::new(ThreadWaker {
        thread: std::thread::current(),
        woken: AtomicBool::new(false),
        in_ppoll: AtomicBool::new(false),
        eventfd: OnceLock::new(),
    });
}

/// Blocks the calling thread until `fut` (a send's outcome: a oneshot and a timer) is ready,
/// polling it on this thread: whoever completes it (the network loop) wakes this thread directly,
/// with no runtime task in between. When the poll wrote the only publish in flight from this
/// thread, the thread first waits for its PUBACK on the link itself, the way that has been
/// quickest lately (`reader::Assist`), then parks. The runtime is entered so the future's timer
/// registers with it.
pub(crate) fn wait<F: Future>(fut: F) -> F::Output {
    match wait_on_this_thread(|| fut, None, || Ok::<(), std::convert::Infallible>(())) {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// Makes a future with `make` and blocks the calling thread until it is ready, as
/// [`crate::blocking::Client`]'s sends wait: polled on this thread, and a send that `make` (or a
/// poll) writes from this thread as the only one in flight has its PUBACK read by this thread
/// (`reader::Assist`: spinning, ppoll or parking, as measured quickest on that link). For layers
/// that keep their own blocking loop (the Python wheel releases the GIL around it): every `tick`,
/// `on_tick` runs on this thread, and an error from it abandons the wait (the future is dropped).
pub fn wait_on_this_thread<F, M, E>(
    make: M,
    tick: Option<Duration>,
    mut on_tick: impl FnMut() -> std::result::Result<(), E>,
) -> std::result::Result<F::Output, E>
where
    M: FnOnce() -> F,
    F: Future,
{
    let _enter = handle().enter();
    let started = Instant::now();
    let (fut, mut assist) = Assist::offered_by(make, started);
    THREAD_WAKER.with(|tw| {
        let waker = futures::task::waker_ref(tw);
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        let mut next_tick = tick.map(|t| std::time::Instant::now() + t);
        loop {
            tw.woken.store(false, Ordering::SeqCst);
            let (r, offered) = Assist::offered_by(|| fut.as_mut().poll(&mut cx), started);
            assist = offered.or(assist);
            if let Poll::Ready(v) = r {
                // The future's state (its timer too) was dropped as it completed, in that poll.
                if let Some(a) = assist {
                    a.finish();
                }
                return Ok(v);
            }
            if let Some(a) = &assist {
                a.wait(tw);
            }
            while !tw.is_woken() {
                match (next_tick, tick) {
                    (Some(at), Some(every)) => {
                        let now = std::time::Instant::now();
                        if now >= at {
                            on_tick()?;
                            next_tick = Some(now + every);
                        } else {
                            std::thread::park_timeout(at - now);
                        }
                    }
                    _ => std::thread::park(),
                }
            }
        }
    })
}

/// `now + after`, saturating far in the future instead of overflowing (`Instant + huge` panics).
pub(crate) fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}
