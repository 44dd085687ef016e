//! Python handlers as core handlers. The core calls them on its dispatcher threads (never the
//! network loop); each call takes the GIL, converts the delivery into Python objects, calls the
//! handler, and logs an exception it raises through Python's `logging` (logger `ironhub`) so the
//! client goes on, as azure-iot-device does.
//!
//! The Python callables live in `Slots`, owned by the native client and visible to Python's
//! garbage collector (`Client.__traverse__` / `__clear__`): the closures given to the core only
//! look a slot up when they run. So a handler that captures its own client forms a cycle the
//! collector can see and break, instead of one hidden inside Rust that keeps the client alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::future::{BoxFuture, FutureExt, Shared};

use ironhub::{Client, ConnectionReason};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

use crate::convert::{from_json, message_to_py, method_request_to_py};
use crate::errors::to_py_err;

/// The handler kinds `Client.set_handler(name, ...)` knows, named after the Python properties.
pub const HANDLER_NAMES: &[&str] = &[
    "message",
    "method_request",
    "twin_desired_properties_patch",
    "connection_state_change",
    "new_sastoken_required",
    "background_exception",
];

/// The Python handler of each kind, and the last connection state reason.
#[derive(Default)]
pub struct Slots {
    handlers: Mutex<HashMap<&'static str, Py<PyAny>>>,
    reason: Mutex<Option<ConnectionReason>>,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, HashMap<&'static str, Py<PyAny>>> {
        self.handlers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, py: Python<'_>, kind: &str) -> Option<Py<PyAny>> {
        self.lock().get(kind).map(|h| h.clone_ref(py))
    }

    fn put(&self, kind: &'static str, handler: Option<Py<PyAny>>) -> Option<Py<PyAny>> {
        match handler {
            Some(h) => self.lock().insert(kind, h),
            None => self.lock().remove(kind),
        }
    }

    /// Why the connection state last changed (None before the first change).
    pub fn reason(&self) -> Option<ConnectionReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets the collector see the handlers (never blocks: a slot being changed is skipped).
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(map) = self.handlers.try_lock() {
            for h in map.values() {
                visit.call(h)?;
            }
        }
        Ok(())
    }

    /// Drops every handler (the collector breaking a cycle); the core's closures find none.
    pub fn clear(&self) -> Vec<Py<PyAny>> {
        self.lock().drain().map(|(_, h)| h).collect()
    }
}

/// Calls the handler of `kind` (if one is set) with the arguments `args` builds; logs whatever
/// goes wrong. Holds the slots weakly: a collected client's late delivery finds nothing.
fn invoke<F>(slots: &Weak<Slots>, kind: &'static str, args: F)
where
    F: for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>,
{
    let Some(slots) = slots.upgrade() else { return };
    let Some(_call) = crate::aio::exit_guard::enter() else { return }; // the process is exiting
    Python::attach(|py| {
        let Some(handler) = slots.get(py, kind) else { return };
        if let Err(err) = args(py).and_then(|a| handler.call1(py, a)) {
            log_handler_exception(py, kind, err);
        }
    });
}

/// Logs a handler's exception (with its traceback) under the `ironhub` logger.
pub fn log_handler_exception(py: Python<'_>, kind: &str, err: PyErr) {
    let logged = (|| -> PyResult<()> {
        let value = err.value(py);
        if let Some(tb) = err.traceback(py) {
            value.setattr("__traceback__", tb)?;
        }
        let logger = py.import("logging")?.call_method1("getLogger", ("ironhub",))?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("exc_info", value)?;
        logger.call_method("error", ("Exception in the %s handler; the client goes on", kind), Some(&kwargs))?;
        Ok(())
    })();
    if logged.is_err() {
        // Logging itself failed (interpreter shutting down): the last resort is stderr.
        err.print(py);
    }
}

fn kind_name(kind: &str) -> PyResult<&'static str> {
    HANDLER_NAMES
        .iter()
        .copied()
        .find(|k| *k == kind)
        .ok_or_else(|| PyValueError::new_err(format!("unknown handler kind {kind:?}")))
}

/// Installs the connection state handler for good at creation: it records the reason (for
/// `connection_state_reason`) and calls the Python handler when one is set.
pub fn install_state_tracking(client: &Client, slots: &Arc<Slots>) -> ironhub::Result<()> {
    let weak = Arc::downgrade(slots);
    client.on_connection_state_change(Some(Arc::new(move |change: ironhub::ConnectionStateChange| {
        if let Some(s) = weak.upgrade() {
            *s.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(change.reason);
        }
        // azure-iot-device's handler takes no argument; the app reads `connected`.
        invoke(&weak, "connection_state_change", |py| Ok(PyTuple::empty(py)))
    })))
}

/// The core call that (un)registers `kind` with the core: a closure that looks its slot up, or
/// None to clear (and, for receive kinds, unsubscribe). `None` for kinds the core never needs
/// to hear about again (the state handler is installed once by `install_state_tracking`).
fn core_setter(
    client: &Client,
    slots: &Arc<Slots>,
    kind: &'static str,
    on: bool,
) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ironhub::Result<()>> + Send>>> {
    let c = client.clone();
    let w = Arc::downgrade(slots);
    Some(match kind {
        "message" => {
            let h = on.then(|| -> ironhub::MessageHandler {
                Arc::new(move |m: ironhub::Message| {
                    invoke(&w, "message", |py| PyTuple::new(py, [message_to_py(py, &m)?]))
                })
            });
            Box::pin(async move { c.on_message_received(h).await })
        }
        "method_request" => {
            let h = on.then(|| -> ironhub::MethodRequestHandler {
                Arc::new(move |r: ironhub::MethodRequest| {
                    invoke(&w, "method_request", |py| PyTuple::new(py, [method_request_to_py(py, &r)?]))
                })
            });
            Box::pin(async move { c.on_method_request_received(h).await })
        }
        "twin_desired_properties_patch" => {
            let h = on.then(|| -> ironhub::TwinPatchHandler {
                Arc::new(move |patch: serde_json::Value| {
                    invoke(&w, "twin_desired_properties_patch", |py| PyTuple::new(py, [from_json(py, &patch)?]))
                })
            });
            Box::pin(async move { c.on_twin_desired_properties_patch_received(h).await })
        }
        "new_sastoken_required" => {
            let h = on.then(|| -> ironhub::SasTokenRequiredHandler {
                Arc::new(move || invoke(&w, "new_sastoken_required", |py| Ok(PyTuple::empty(py))))
            });
            Box::pin(std::future::ready(c.on_new_sastoken_required(h)))
        }
        "background_exception" => {
            let h = on.then(|| -> ironhub::BackgroundExceptionHandler {
                Arc::new(move |e: ironhub::Error| {
                    invoke(&w, "background_exception", |py| PyTuple::new(py, [to_py_err(e).into_value(py)]))
                })
            });
            Box::pin(std::future::ready(c.on_background_exception(h)))
        }
        _ => return None,
    })
}

/// The handler changes the asyncio setters started and that have not completed yet, as one
/// future: each change runs after the one before it (so "set, then clear" ends cleared), and an
/// asyncio operation awaits them (`Client::after_pending`), so `client.on_x = h` followed by any
/// awaited call finds the subscription made.
#[derive(Default)]
pub struct Pending(Mutex<Option<Shared<BoxFuture<'static, ()>>>>);

impl Pending {
    fn lock(&self) -> MutexGuard<'_, Option<Shared<BoxFuture<'static, ()>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The changes not completed yet (None when there are none: the common case costs nothing).
    pub fn outstanding(&self) -> Option<Shared<BoxFuture<'static, ()>>> {
        self.lock().as_ref().filter(|done| done.peek().is_none()).cloned()
    }

    /// `change` (a core setter), run on the core runtime after every change started before it.
    fn push(&self, change: BoxFuture<'static, ()>) {
        let mut last = self.lock();
        let before = last.take().filter(|done| done.peek().is_none());
        let task = ironhub::runtime_handle().spawn(async move {
            if let Some(before) = before {
                before.await;
            }
            change.await;
        });
        *last = Some(async move { drop(task.await) }.boxed().shared());
    }
}

/// Sets (or with `None` clears) the handler `kind`. The handler is recorded at once (a delivery
/// that arrives from now on finds it); then the core change (which may subscribe, first
/// connecting, and waits for a running handler of this client):
/// - by default waited for, without the GIL (which that handler needs), after the background
///   changes started before it;
/// - with `background` (the asyncio setters) made in the background, after the ones before it,
///   so the event loop never waits for the hub; a change that fails is reported as a background
///   exception (the `ironhub` logger, and `on_background_exception` when set).
pub fn set(
    py: Python<'_>,
    client: &Client,
    slots: &Arc<Slots>,
    pending: &Pending,
    kind: &str,
    handler: Option<Py<PyAny>>,
    background: bool,
) -> PyResult<()> {
    let kind = kind_name(kind)?;
    let on = handler.is_some();
    let old = slots.put(kind, handler);
    let Some(change) = core_setter(client, slots, kind, on) else { return Ok(()) };
    if background {
        drop(old);
        // A setter called from inside a handler stays known as such to the core (which then
        // never waits for the handler that made the call).
        let change = ironhub::HandlerContext::capture().wrap(change);
        let weak = Arc::downgrade(slots);
        pending.push(
            async move {
                if let Err(e) = change.await {
                    // Python runs on a blocking thread, never on a runtime worker.
                    drop(tokio::task::spawn_blocking(move || report_background(&weak, kind, e)));
                }
            }
            .boxed(),
        );
        return Ok(());
    }
    let before = pending.outstanding();
    let result = crate::aio::block_on_interruptible(py, async move {
        if let Some(before) = before {
            before.await;
        }
        change.await
    })?;
    drop(old);
    result.map_err(to_py_err)
}

/// Logs a failed background handler change and hands it to `on_background_exception`.
fn report_background(slots: &Weak<Slots>, kind: &'static str, err: ironhub::Error) {
    log::warn!(target: "ironhub", "setting the {kind} handler did not complete: {err}");
    invoke(slots, "background_exception", |py| PyTuple::new(py, [to_py_err(err).into_value(py)]));
}
