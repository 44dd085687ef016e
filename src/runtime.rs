//! The one tokio runtime every client of the process shares, created lazily on first use: network
//! loops of any number of clients are tasks on a small fixed set of worker threads.

use std::future::Future;
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
    let task = handle().spawn(HandlerContext::capture().wrap(fut));
    match futures::executor::block_on(task) {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => panic!("ironhub runtime task was cancelled"),
    }
}

/// Wakes a thread blocked in `wait`: sets `woken` (the future may make progress) and unparks it.
struct ThreadWaker {
    thread: Thread,
    woken: AtomicBool,
}

impl futures::task::ArcWake for ThreadWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.woken.store(true, Ordering::Release);
        arc_self.thread.unpark();
    }
}

thread_local! {
    /// This thread's waker for `wait`, made once (a sync send allocates none).
    static THREAD_WAKER: Arc<ThreadWaker> =
        Arc::new(ThreadWaker { thread: std::thread::current(), woken: AtomicBool::new(false) });
}

/// Blocks the calling thread until `fut` (a send's outcome: a oneshot and a timer) is ready,
/// polling it on this thread: whoever completes it (the network loop) wakes this thread directly,
/// with no runtime task in between. When the poll wrote the only publish in flight from this
/// thread, the thread first reads the link for its PUBACK itself for a short adaptive budget
/// (`reader::Assist`), then parks. The runtime is entered so the future's timer registers with it.
pub(crate) fn wait<F: Future>(fut: F) -> F::Output {
    let _enter = handle().enter();
    THREAD_WAKER.with(|tw| {
        let waker = futures::task::waker_ref(tw);
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        loop {
            tw.woken.store(false, Ordering::Relaxed);
            let (r, assist) = Assist::poll_offered(fut.as_mut(), &mut cx);
            if let Poll::Ready(v) = r {
                return v;
            }
            if let Some(a) = &assist {
                a.spin(|| tw.woken.load(Ordering::Acquire));
            }
            while !tw.woken.load(Ordering::Acquire) {
                std::thread::park();
            }
            if let Some(a) = assist {
                a.finish();
            }
        }
    })
}

/// `now + after`, saturating far in the future instead of overflowing (`Instant + huge` panics).
pub(crate) fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}
