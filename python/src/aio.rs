//! Where the Python layer waits for core futures, always on the core's own runtime
//! (`ironhub::runtime_handle()`): no second tokio runtime.
//!
//! - `wait` / `block_on_interruptible`: a blocking call without the GIL, polled on the calling
//!   thread itself (no task, no thread hop), that still wakes to run Python's signal handlers, so
//!   Ctrl-C interrupts it as it does azure-iot-device's.
//! - `awaitable`: a core future as an asyncio awaitable, through pyo3-async-runtimes' generic
//!   bridge with `CoreRuntime` (the core runtime's handle plus tokio task-locals). Resolving the
//!   asyncio future takes the GIL briefly on a core worker; the wait itself holds nothing.
//! - `batched_awaitable` / `LoopCompletions`: the asyncio sends, the hot path of pipelined
//!   telemetry: one driver task per client and loop instead of a task per send, and results
//!   handed to the loop a batch at a time.

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
        // pyo3-async-runtimes resolves the asyncio future here (it calls `call_soon_threadsafe`):
        // not once the process is exiting (`exit_guard`).
        let task = ironhub::runtime_handle().spawn_blocking(move || {
            if let Some(_call) = exit_guard::enter() {
                f()
            }
        });
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
        let outcome = fut.await;
        let Some(_call) = exit_guard::enter() else {
            return std::future::pending().await; // the process is exiting: nobody awaits this
        };
        let value = outcome.map_err(crate::errors::to_py_err)?; // may take the GIL (a cause chain)
        Python::attach(|py| into_py(py, value))
    })
}

/// Makes the core future (`make`) and waits for it on the calling thread, in one release of the
/// GIL, the way the core's blocking calls wait (`ironhub::wait_on_this_thread`): no task is
/// spawned and no other thread is woken to poll it, and a sync send written from this thread reads
/// its own PUBACK (spinning, ppoll or parking, whichever the link measured quickest). The thread
/// wakes every `SIGNAL_CHECK` to run Python's signal handlers with the GIL; an interrupted
/// operation is abandoned (its future dropped).
pub fn wait<F, M>(py: Python<'_>, make: M) -> PyResult<F::Output>
where
    M: FnOnce() -> F + Send,
    F: Future,
    F::Output: Send,
{
    py.detach(move || {
        ironhub::wait_on_this_thread(make, Some(SIGNAL_CHECK), || Python::attach(|py| py.check_signals()))
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

/// A send's outcome on its way to the event loop: the asyncio future and what resolves it.
type Outcome = (Py<PyAny>, ironhub::Result<()>);
/// A queued send, until its PUBACK (or failure).
type QueuedSend = Pin<Box<dyn Future<Output = ironhub::Result<()>> + Send>>;

/// The asyncio sends of one client on one event loop, from queueing to their futures' results.
///
/// - One driver task on the core runtime polls every outstanding send of the sink (no task per
///   send): the loop thread appends a send to `incoming` and wakes the driver only when it is idle
///   (a driver already woken takes whatever was appended meanwhile), so a burst costs the runtime a
///   few wake-ups rather than one per message.
/// - Outcomes are resolved in batches: the driver appends them to `ready`, and only the first of
///   a batch asks the loop (one `call_soon_threadsafe`, from a blocking thread, since waiting for the
///   GIL on a runtime worker would stall the network) to resolve everything appended by the time it
///   runs: one GIL hand-over for many messages instead of one per message.
pub struct LoopCompletions {
    event_loop: Py<PyAny>,
    incoming: std::sync::Mutex<Incoming>,
    ready: std::sync::Mutex<Ready>,
}

#[derive(Default)]
struct Incoming {
    sends: Vec<(Py<PyAny>, QueuedSend)>,
    /// The driver's waker while it waits; `None` while it runs (it looks at `sends` before waiting).
    waker: Option<std::task::Waker>,
    /// Whether a driver task exists; it ends (clearing this) once nothing is outstanding.
    driving: bool,
}

#[derive(Default)]
struct Ready {
    outcomes: Vec<Outcome>,
    scheduled: bool,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LoopCompletions {
    /// The completions of `event_loop`: `current` when it belongs to that loop, else a new one.
    pub fn for_loop(current: Option<&std::sync::Arc<Self>>, event_loop: &Bound<'_, PyAny>) -> std::sync::Arc<Self> {
        match current {
            Some(c) if c.event_loop.bind(event_loop.py()).is(event_loop) => c.clone(),
            _ => std::sync::Arc::new(LoopCompletions {
                event_loop: event_loop.clone().unbind(),
                incoming: Default::default(),
                ready: Default::default(),
            }),
        }
    }

    /// Hands a queued send to the driver (starting one if none runs); called on the loop thread.
    fn track(self: &std::sync::Arc<Self>, future: Py<PyAny>, send: QueuedSend) {
        let mut incoming = lock(&self.incoming);
        incoming.sends.push((future, send));
        if !std::mem::replace(&mut incoming.driving, true) {
            drop(incoming);
            drop(ironhub::runtime_handle().spawn(self.clone().drive()));
        } else if let Some(waker) = incoming.waker.take() {
            drop(incoming);
            waker.wake();
        }
    }

    /// The driver: polls every outstanding send, passes on outcomes a batch at a time, and ends
    /// when none is left (under the `incoming` lock, so a send appended meanwhile is never missed).
    async fn drive(self: std::sync::Arc<Self>) {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut outstanding = FuturesUnordered::new();
        let mut done: Vec<Outcome> = Vec::new();
        std::future::poll_fn(|cx| loop {
            {
                let mut incoming = lock(&self.incoming);
                if incoming.sends.is_empty() && outstanding.is_empty() {
                    incoming.driving = false;
                    return std::task::Poll::Ready(());
                }
                for (future, send) in incoming.sends.drain(..) {
                    outstanding.push(async move { (future, send.await) });
                }
                incoming.waker = Some(cx.waker().clone());
            }
            while let std::task::Poll::Ready(Some(outcome)) = outstanding.poll_next_unpin(cx) {
                done.push(outcome);
            }
            if !done.is_empty() {
                self.push(std::mem::take(&mut done));
                continue; // the sink may be empty now: look again before waiting
            }
            return std::task::Poll::Pending;
        })
        .await
    }

    /// Records outcomes for the loop to resolve; called on the runtime.
    fn push(self: &std::sync::Arc<Self>, outcomes: Vec<Outcome>) {
        let mut ready = lock(&self.ready);
        ready.outcomes.extend(outcomes);
        if std::mem::replace(&mut ready.scheduled, true) {
            return; // a resolve is already on its way: it will take these too
        }
        drop(ready);
        let me = self.clone();
        // `try_attach`: an interpreter shutting down (the process exiting right after its last
        // await) is left alone; calling into it aborts the process.
        drop(ironhub::runtime_handle().spawn_blocking(move || Python::try_attach(|py| me.schedule(py))));
    }

    fn schedule(self: std::sync::Arc<Self>, py: Python<'_>) {
        let Some(_call) = exit_guard::enter() else { return }; // the process is exiting
        let event_loop = self.event_loop.clone_ref(py);
        let resolve = ResolveBatch(self.clone());
        if event_loop.call_method1(py, pyo3::intern!(py, "call_soon_threadsafe"), (resolve,)).is_err() {
            // The loop is closed: nobody awaits these futures any more.
            let mut ready = lock(&self.ready);
            ready.outcomes.clear();
            ready.scheduled = false;
        }
    }

    /// On the loop's thread: resolves every outcome recorded so far (a future cancelled by its
    /// awaiter is left alone).
    fn resolve(&self, py: Python<'_>) -> PyResult<()> {
        let outcomes = {
            let mut ready = lock(&self.ready);
            ready.scheduled = false;
            std::mem::take(&mut ready.outcomes)
        };
        for (future, outcome) in outcomes {
            let future = future.bind(py);
            if future.call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
                continue;
            }
            match outcome {
                Ok(()) => future.call_method1(pyo3::intern!(py, "set_result"), (py.None(),))?,
                Err(e) => future.call_method1(pyo3::intern!(py, "set_exception"), (crate::errors::to_py_err(e).into_value(py),))?,
            };
        }
        Ok(())
    }
}

/// Keeps the runtime's threads out of an interpreter that is shutting down. `call_soon_threadsafe`
/// releases the GIL inside (it writes to the loop's self-pipe); if the interpreter starts finalizing
/// meanwhile, taking the GIL back ends the thread with `pthread_exit`, whose unwinding through Rust
/// frames aborts the process (seen when a script exits right after its last awaited send). An
/// `atexit` hook (it runs before finalization starts) closes the gate and waits, without the GIL,
/// for the calls already inside.
pub mod exit_guard {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use pyo3::prelude::*;

    static CLOSED: AtomicBool = AtomicBool::new(false);
    static INSIDE: AtomicUsize = AtomicUsize::new(0);

    /// A call into Python from a runtime thread, counted while it runs.
    pub struct Call(());

    impl Drop for Call {
        fn drop(&mut self) {
            INSIDE.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// `None` once the process is exiting.
    pub fn enter() -> Option<Call> {
        INSIDE.fetch_add(1, Ordering::SeqCst);
        let call = Call(());
        (!CLOSED.load(Ordering::SeqCst)).then_some(call)
    }

    /// The `atexit` hook: no new call gets in; those inside finish (bounded, with the GIL released).
    #[pyfunction]
    pub fn close(py: Python<'_>) {
        CLOSED.store(true, Ordering::SeqCst);
        py.detach(|| {
            let deadline = Instant::now() + Duration::from_secs(2);
            while INSIDE.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
    }

    /// Registers `close` with `atexit`.
    pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        let hook = wrap_pyfunction!(close, m)?;
        m.py().import("atexit")?.call_method1("register", (hook,))?;
        Ok(())
    }
}

/// The callable the loop runs to resolve a batch.
#[pyclass(module = "ironhub._native", frozen)]
struct ResolveBatch(std::sync::Arc<LoopCompletions>);

#[pymethods]
impl ResolveBatch {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        self.0.resolve(py)
    }
}

static GET_RUNNING_LOOP: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

/// `fut` (a send or a batch of sends, queued already) as a future of the running asyncio loop,
/// resolved through `completions`.
pub fn batched_awaitable<'py, F>(
    py: Python<'py>,
    completions: &std::sync::Mutex<Option<std::sync::Arc<LoopCompletions>>>,
    fut: F,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = ironhub::Result<()>> + Send + 'static,
{
    let event_loop = GET_RUNNING_LOOP.import(py, "asyncio", "get_running_loop")?.call0()?;
    let sink = {
        let mut current = lock(completions);
        let sink = LoopCompletions::for_loop(current.as_ref(), &event_loop);
        *current = Some(sink.clone());
        sink
    };
    let future = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
    sink.track(future.clone().unbind(), Box::pin(fut));
    Ok(future)
}
