//! Where the Python layer waits for core futures, always on the core's own runtime
//! (`ironhub::runtime_handle()`): no second tokio runtime.
//!
//! - `wait` / `block_on_interruptible`: a blocking call without the GIL, polled on the calling
//!   thread itself (no task, no thread hop), that still wakes to run Python's signal handlers, so
//!   Ctrl-C interrupts it as it does azure-iot-device's.
//! - `awaitable`: a core future as an asyncio awaitable, through pyo3-async-runtimes' generic
//!   bridge with `CoreRuntime` (the core runtime's handle plus tokio task-locals). Resolving the
//!   asyncio future takes the GIL briefly on a core worker; the wait itself holds nothing.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3_async_runtimes::generic::{ContextExt, JoinError, Runtime};
use pyo3_async_runtimes::TaskLocals;

/// How often a blocked Python caller looks at pending signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

tokio::task_local! {
    static TASK_LOCALS: std::cell::OnceCell<TaskLocals>;
}

/// The core's runtime, as pyo3-async-runtimes sees a runtime.
pub struct CoreRuntime;

pub struct CoreJoinError(tokio::task::JoinError);

impl JoinError for CoreJoinError {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }
    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

type JoinFuture = Pin<Box<dyn Future<Output = Result<(), CoreJoinError>> + Send>>;

impl Runtime for CoreRuntime {
    type JoinError = CoreJoinError;
    type JoinHandle = JoinFuture;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = ironhub::runtime_handle().spawn(fut);
        Box::pin(async move { task.await.map_err(CoreJoinError) })
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        let task = ironhub::runtime_handle().spawn_blocking(f);
        Box::pin(async move { task.await.map_err(CoreJoinError) })
    }
}

impl ContextExt for CoreRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = std::cell::OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS.try_with(|c| c.get().cloned()).unwrap_or_default()
    }
}

/// `fut` as an asyncio awaitable of the running event loop; its output is made a Python value
/// (with the GIL) by `into_py` when it completes.
pub fn awaitable<'py, F, T, C>(py: Python<'py>, fut: F, into_py: C) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = ironhub::Result<T>> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    pyo3_async_runtimes::generic::future_into_py::<CoreRuntime, _, Py<PyAny>>(py, async move {
        let value = fut.await.map_err(crate::errors::to_py_err)?;
        Python::attach(|py| into_py(py, value))
    })
}

/// Makes the core future (`make`) and waits for it on the calling thread, in one release of the
/// GIL: no task is spawned and no other thread is woken to poll it, so a sync call costs one
/// wake-up each way (the network task's and the caller's). The thread enters the core runtime
/// (timers and sockets register there) and wakes every `SIGNAL_CHECK` to run Python's signal
/// handlers with the GIL; an interrupted operation is abandoned (its future dropped).
pub fn wait<F, M>(py: Python<'_>, make: M) -> PyResult<F::Output>
where
    M: FnOnce() -> F + Send,
    F: Future,
    F::Output: Send,
{
    py.detach(move || {
        let _runtime = ironhub::runtime_handle().enter();
        let fut = std::pin::pin!(make());
        poll_on_this_thread(fut)
    })
}

/// Runs `fut` (made on the calling thread with the GIL held) like `wait`. A call made from inside
/// a handler stays known as such (the core then never waits for the handler that made the call).
pub fn block_on_interruptible<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let context = ironhub::HandlerContext::capture();
    wait(py, move || context.wrap(fut))
}

/// The waker of a thread that waits in `poll_on_this_thread`: it unparks that thread.
struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// One waker per thread, made once: a wait allocates nothing.
    static WAKER: std::task::Waker = std::sync::Arc::new(ThreadWaker(std::thread::current())).into();
}

/// Polls `fut` to completion, parking between wake-ups; every `SIGNAL_CHECK` takes the GIL to
/// run Python's signal handlers and gives up with their exception (e.g. `KeyboardInterrupt`).
fn poll_on_this_thread<F: Future>(mut fut: Pin<&mut F>) -> PyResult<F::Output> {
    WAKER.with(|waker| {
        let mut cx = std::task::Context::from_waker(waker);
        let mut next_check = std::time::Instant::now() + SIGNAL_CHECK;
        loop {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return Ok(v);
            }
            let now = std::time::Instant::now();
            if now >= next_check {
                Python::attach(|py| py.check_signals())?;
                next_check = now + SIGNAL_CHECK;
            }
            // Returns early on `unpark` (the future's wake-up) or spuriously: either way, poll again.
            std::thread::park_timeout(next_check.saturating_duration_since(now));
        }
    })
}
