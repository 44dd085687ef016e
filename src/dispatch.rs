//! Handler dispatch: user code never runs on the network loop. Each client owns a `SerialQueue`
//! (its handlers run one at a time, in arrival order); all queues share one small, fixed pool of
//! threads, so 10,000 clients do not mean 10,000 threads. A panicking handler is caught and
//! reported; a slow one occupies one pool thread while the network loops (tokio) go on.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs a queue runs before yielding its pool thread to other clients' queues.
const BATCH: usize = 32;

static NEXT_QUEUE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Id of the queue whose job this thread is running (0 = none): lets a handler setter called
    /// from inside a handler of the same client skip waiting for itself.
    static RUNNING_QUEUE: Cell<u64> = const { Cell::new(0) };
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
    /// Held while a job runs; handler setters take it so that once they return the old handler
    /// is not running and never will again.
    exec: Mutex<()>,
}

impl SerialQueue {
    pub fn new() -> Arc<SerialQueue> {
        Arc::new(SerialQueue {
            id: NEXT_QUEUE_ID.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(QueueState { jobs: VecDeque::new(), scheduled: false }),
            exec: Mutex::new(()),
        })
    }

    /// Queues a job; it runs on a pool thread after every job queued before it.
    pub fn push(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        let schedule = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.jobs.push_back(Box::new(job));
            !std::mem::replace(&mut st.scheduled, true)
        };
        if schedule {
            let tx = pool().tx.lock().unwrap_or_else(|p| p.into_inner());
            let _ = tx.send(self.clone());
        }
    }

    /// Runs `f` while no job of this queue is running (unless called from this queue's own job).
    pub fn exclusive<R>(&self, f: impl FnOnce() -> R) -> R {
        if RUNNING_QUEUE.with(|r| r.get()) == self.id {
            return f();
        }
        let _g = self.exec.lock().unwrap_or_else(|p| p.into_inner());
        f()
    }

    fn run_batch(self: Arc<Self>) {
        for _ in 0..BATCH {
            let job = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                match st.jobs.pop_front() {
                    Some(j) => j,
                    None => {
                        st.scheduled = false;
                        return;
                    }
                }
            };
            let _g = self.exec.lock().unwrap_or_else(|p| p.into_inner());
            RUNNING_QUEUE.with(|r| r.set(self.id));
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                log::error!("a handler panicked; the client goes on");
            }
            RUNNING_QUEUE.with(|r| r.set(0));
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
    use std::time::Duration;

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
}
