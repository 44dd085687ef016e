//! Where the Python layer waits for core futures, always on the core's own runtime
//! (`ironhub::runtime_handle()`): no second tokio runtime.
//!
//! - `block_on_interruptible`: a blocking call without the GIL that still wakes to run Python's
//!   signal handlers, so Ctrl-C interrupts it as it does azure-iot-device's.
//! - `awaitable`: a core future as an asyncio awaitable, through pyo3-async-runtimes' generic
//!   bridge with `CoreRuntime` (the core runtime's handle plus tokio task-locals). Resolving the
//!   asyncio future takes the GIL briefly on a core worker; the wait itself holds nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{self, RecvTimeoutError};
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

/// Runs `fut` on the core runtime and waits without the GIL, waking every `SIGNAL_CHECK` to run
/// Python's signal handlers; an interrupted operation is abandoned (its task aborted).
pub fn block_on_interruptible<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    // A call made from inside a handler must stay known as such while a runtime worker polls it
    // (the core then never waits for the handler that made the call).
    let fut = ironhub::HandlerContext::capture().wrap(fut);
    let task = ironhub::runtime_handle().spawn(async move {
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
            Err(RecvTimeoutError::Disconnected) => match futures::executor::block_on(task) {
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                _ => unreachable!("a task that did not send has panicked"),
            },
        }
    }
}
