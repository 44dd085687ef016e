//! Where the wrapper waits for core futures (blocking calls and the asyncio clients' background
//! operations). The core's futures do their network work on the core's own runtime; what
//! runs here is only the wait (with its timeout timers), so one worker is enough. Completions that need the GIL go to the blocking pool so a Python
//! thread holding the GIL never stalls the wait for other operations.

use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;

use tokio::runtime::{Builder, Runtime};

/// How often a blocked Python caller looks at pending signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(8)
            .thread_name("ironhub-py-completion")
            .enable_all()
            .build()
            .expect("cannot start the ironhub completion runtime")
    })
}

/// Waits for `fut` in the background, then runs `complete` with its output on a thread that
/// may block (taking the GIL).
pub fn spawn<F, C>(fut: F, complete: C)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    C: FnOnce(F::Output) + Send + 'static,
{
    let rt = runtime();
    let handle = rt.handle().clone();
    rt.spawn(async move {
        let outcome = fut.await;
        // Nobody awaits the completion: it reports through `complete` itself.
        drop(handle.spawn_blocking(move || complete(outcome)));
    });
}

/// Runs `fut` on the completion runtime (some core futures need its timers) and blocks the
/// calling thread, which has released the GIL, until it finishes. Works from any thread.
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    join(futures::executor::block_on(runtime().spawn(fut)))
}

/// Like `block_on`, for a Python thread: waits without the GIL, but wakes every
/// `SIGNAL_CHECK` to run Python's signal handlers, so Ctrl-C interrupts a blocking call as it
/// does azure-iot-device's. An interrupted operation is abandoned (its future dropped).
pub fn block_on_interruptible<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let task = runtime().spawn(async move {
        // The receiver is gone only if the caller was interrupted: nothing to report then.
        let _ = tx.send(fut.await);
    });
    let mut rx = rx;
    loop {
        // The receiver moves into the GIL-free closure and back (it is Send, not Sync).
        let (received, back) = py.detach(move || (rx.recv_timeout(SIGNAL_CHECK), rx));
        rx = back;
        match received {
            Ok(v) => return Ok(v),
            Err(RecvTimeoutError::Timeout) => {
                if let Err(interrupted) = py.check_signals() {
                    task.abort();
                    return Err(interrupted);
                }
            }
            // The task ended without sending: it panicked; re-raise that panic here.
            Err(RecvTimeoutError::Disconnected) => {
                join(futures::executor::block_on(task));
                unreachable!("a task that did not send has panicked");
            }
        }
    }
}

fn join<T>(r: Result<T, tokio::task::JoinError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => unreachable!("the completion runtime is never shut down"),
    }
}
