//! Handler dispatch: user code never runs on the network loop. Each client owns a `SerialQueue`
//! (its handlers run one at a time, in arrival order); all queues share one small, fixed pool of
//! threads, so 10,000 clients do not mean 10,000 threads. A panicking handler is caught and
//! reported; a slow one occupies one pool thread while the network loops (tokio) go on.
//!
//! Re-entrancy: a handler may call any client operation. Nothing here holds a lock while a job
//! runs, and waiting for a running job ([`SerialQueue::wait_quiet`]) is an async wait that is
//! skipped when the caller *is* that job (known through a thread-local on the dispatcher thread,
//! carried into futures by [`HandlerContext`]), so a handler that clears its own handler or shuts
//! its client down never waits for itself.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs a queue runs before yielding its pool thread to other clients' queues.
const BATCH: usize = 32;

static NEXT_QUEUE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Id of the queue whose job this thread is running (0 = none).
    static RUNNING_QUEUE: Cell<u64> = const { Cell::new(0) };
}

tokio::task_local! {
    /// The same, for a future started from inside a job and polled elsewhere (see `HandlerContext`).
    static TASK_QUEUE: u64;
}

/// Id of the queue whose handler the current thread (or task started from one) is running.
pub(crate) fn current_queue() -> u64 {
    let id = RUNNING_QUEUE.with(Cell::get);
    if id != 0 {
        return id;
    }
    TASK_QUEUE.try_with(|q| *q).unwrap_or(0)
}

/// Carries "called from inside handler X" into a future that another thread polls: capture it on
/// the calling thread (`HandlerContext::capture()`), then `wrap` the future. `runtime::block_on`
/// does this for every blocking call, so a blocking call made by a handler is recognised as such.
#[derive(Clone, Copy)]
pub struct HandlerContext(u64);

impl HandlerContext {
    /// The handler context of the calling thread.
    pub fn capture() -> HandlerContext {
        HandlerContext(current_queue())
    }

    /// `fut`, polled as if from the captured context.
    pub fn wrap<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        TASK_QUEUE.scope(self.0, fut)
    }
}

struct Pool {
    tx: Mutex<mpsc::Sender<Arc<SerialQueue>>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Arc<SerialQueue>>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8) * 2;
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("ironhub-dispatch-{i}"))
                .spawn(move || loop {
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match next {
                        Ok(q) => q.run_batch(),
                        Err(_) => return,
                    }
                })
                .expect("cannot spawn a dispatcher thread");
        }
        Pool { tx: Mutex::new(tx) }
    })
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// True while the queue is on the pool's channel or being run: at most one thread runs it.
    scheduled: bool,
}

/// One client's serialized job queue.
pub(crate) struct SerialQueue {
    id: u64,
    state: Mutex<QueueState>,
    /// Jobs started so far (a job looks its handler up when it starts).
    started: AtomicU64,
    /// Jobs finished so far: `wait_quiet` waits for it to reach `started`.
    finished: watch::Sender<u64>,
}

impl SerialQueue {
    pub fn new() -> Arc<SerialQueue> {
        Arc::new(SerialQueue {
            id: NEXT_QUEUE_ID.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(QueueState { jobs: VecDeque::new(), scheduled: false }),
            started: AtomicU64::new(0),
            finished: watch::channel(0).0,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when the caller runs inside one of this queue's jobs.
    pub fn is_current(&self) -> bool {
        current_queue() == self.id
    }

    /// Queues a job; it runs on a pool thread after every job queued before it.
    pub fn push(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        let schedule = {
            let mut st = self.state();
            st.jobs.push_back(Box::new(job));
            !std::mem::replace(&mut st.scheduled, true)
        };
        if schedule {
            let tx = pool().tx.lock().unwrap_or_else(|p| p.into_inner());
            let _ = tx.send(self.clone());
        }
    }

    /// Waits (async, bounded by `limit`) until every job started before this call has finished;
    /// returns at once when called from this queue's own job. Returns false on timeout.
    pub fn wait_quiet(&self, from_own_job: bool, limit: Duration) -> impl Future<Output = bool> + Send + 'static {
        let target = self.started.load(Ordering::SeqCst);
        let mut rx = self.finished.subscribe();
        async move { from_own_job || tokio::time::timeout(limit, rx.wait_for(|f| *f >= target)).await.is_ok() }
    }

    /// Like `wait_quiet`, for synchronous callers (the wait itself runs on the shared runtime).
    pub fn wait_quiet_blocking(&self, limit: Duration) -> bool {
        crate::runtime::block_on(self.wait_quiet(self.is_current(), limit))
    }

    fn run_batch(self: Arc<Self>) {
        for _ in 0..BATCH {
            let job = {
                let mut st = self.state();
                match st.jobs.pop_front() {
                    Some(j) => j,
                    None => {
                        st.scheduled = false;
                        return;
                    }
                }
            };
            self.started.fetch_add(1, Ordering::SeqCst);
            RUNNING_QUEUE.with(|r| r.set(self.id));
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                log::error!("a handler panicked; the client goes on");
            }
            RUNNING_QUEUE.with(|r| r.set(0));
            self.finished.send_modify(|f| *f += 1);
        }
        // More work left: go to the back of the pool's line so other clients get a turn.
        let tx = pool().tx.lock().unwrap_or_else(|p| p.into_inner());
        let _ = tx.send(self.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn jobs_of_one_queue_run_in_order_and_one_at_a_time() {
        let q = SerialQueue::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done_rx) = mpsc::channel();
        for i in 0..100 {
            let seen = seen.clone();
            let done_tx = done_tx.clone();
            q.push(move || {
                seen.lock().unwrap().push(i);
                if i == 99 {
                    done_tx.send(()).unwrap();
                }
            });
        }
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(*seen.lock().unwrap(), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_panicking_job_does_not_stop_the_queue() {
        let q = SerialQueue::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        q.push(|| panic!("handler failure"));
        let r = ran.clone();
        q.push(move || {
            r.fetch_add(1, Ordering::SeqCst);
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_slow_queue_does_not_block_another() {
        let slow = SerialQueue::new();
        let fast = SerialQueue::new();
        let (tx, rx) = mpsc::channel();
        slow.push(|| std::thread::sleep(Duration::from_millis(1500)));
        fast.push(move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_millis(1000)).expect("fast queue was blocked by the slow one");
    }

    #[test]
    fn waiting_for_quiet_skips_the_own_job_and_waits_for_others() {
        let q = SerialQueue::new();
        let (tx, rx) = mpsc::channel();
        let q2 = q.clone();
        // From inside its own job: returns at once (would deadlock otherwise).
        q.push(move || tx.send(q2.wait_quiet_blocking(Duration::from_secs(30))).unwrap());
        assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap());
        // From outside: waits for the running job.
        let (started_tx, started_rx) = mpsc::channel();
        q.push(move || {
            started_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        });
        started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let t = std::time::Instant::now();
        assert!(q.wait_quiet_blocking(Duration::from_secs(30)));
        assert!(t.elapsed() >= Duration::from_millis(200), "returned before the running job ended");
    }
}
