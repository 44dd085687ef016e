//! `ironhub._native.Client`: one core client (device or module) as a Python object, with one
//! typed method per operation: `op(...)` blocks with the GIL released (Ctrl-C still
//! interrupts it) and `op_async(...)` returns an asyncio awaitable resolved on the core's
//! runtime. Both take their arguments through the same conversion and the same core future
//! (`ops`), so they accept exactly the same values and raise the same exceptions.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::Duration;

use ironhub::{Client as CoreClient, Error, ErrorKind, Message, MethodRequest};
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{PyTraverseError, PyVisit};
use serde_json::Value;

use crate::aio;
use crate::convert::{from_json, message_to_py, outgoing_message, method_request_to_py, method_response_from_py, to_json};
use crate::errors::{to_py_err, ClientError};
use crate::handlers::{self, Pending, Slots};
use crate::options;

/// A device or module client of the native core.
#[pyclass(module = "ironhub._native", frozen)]
pub struct Client {
    /// Dropped by hand (see `Drop`): never with the GIL held.
    pub(crate) inner: ManuallyDrop<CoreClient>,
    slots: Arc<Slots>,
    /// Handler changes the asyncio setters started that have not completed yet.
    pending: Pending,
    /// Where the asyncio sends of the current event loop are resolved, in batches.
    completions: std::sync::Mutex<Option<Arc<aio::LoopCompletions>>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: `inner` is taken exactly once, here, and never used afterwards.
        let inner = unsafe { ManuallyDrop::take(&mut self.inner) };
        // Dropping the last handle shuts the core client down, which waits for a running
        // handler of this client; that handler may need the GIL the collector holds now.
        Python::attach(|py| py.detach(move || drop(inner)));
    }
}

/// `receive_*(block, timeout)` → the core's wait: `Some(0)` = don't block, `None` = forever.
fn receive_wait(block: bool, timeout: Option<f64>) -> PyResult<Option<Duration>> {
    if !block {
        return Ok(Some(Duration::ZERO));
    }
    match timeout {
        None => Ok(None),
        Some(t) => Duration::try_from_secs_f64(t)
            .map(Some)
            .map_err(|_| PyValueError::new_err("timeout must be a non-negative number of seconds")),
    }
}

/// azure-iot-device raises a `ClientError` caused by the `TypeError` when an object cannot be
/// encoded (a payload or a JSON document): the conversion's TypeError becomes that chain.
fn encoding_error(py: Python<'_>, err: PyErr) -> PyErr {
    if !err.is_instance_of::<PyTypeError>(py) {
        return err;
    }
    let outer = ClientError::new_err(format!("Unable to encode: {}", err.value(py)));
    outer.set_cause(py, Some(err));
    outer
}

fn unit(py: Python<'_>, (): ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}
fn json(py: Python<'_>, v: Value) -> PyResult<Py<PyAny>> {
    Ok(from_json(py, &v)?.unbind())
}
fn optional_json(py: Python<'_>, v: Option<Value>) -> PyResult<Py<PyAny>> {
    v.map_or(Ok(py.None()), |v| json(py, v))
}
fn optional_message(py: Python<'_>, m: Option<Message>) -> PyResult<Py<PyAny>> {
    m.map_or(Ok(py.None()), |m| Ok(message_to_py(py, &m)?.unbind()))
}
fn optional_request(py: Python<'_>, r: Option<MethodRequest>) -> PyResult<Py<PyAny>> {
    r.map_or(Ok(py.None()), |r| Ok(method_request_to_py(py, &r)?.unbind()))
}

/// Generates, for each operation, the blocking method `$name` and the asyncio method
/// `$name_async` over the same `ops::$name` future, with the same typed arguments.
macro_rules! operations {
    ($( $(#[doc = $doc:expr])* fn $name:ident / $name_async:ident = $prep:ident ( $($arg:ident : $ty:ty),* ) [$sig:meta] => $conv:path; )* @also { $($also:tt)* }) => {
        #[pymethods]
        impl Client {
            $(
                $(#[doc = $doc])*
                #[$sig]
                fn $name(&self, py: Python<'_>, $($arg: $ty),*) -> PyResult<Py<PyAny>> {
                    let fut = self.$prep(py, $($arg),*)?;
                    let value = aio::block_on_interruptible(py, fut)?.map_err(to_py_err)?;
                    $conv(py, value)
                }

                $(#[doc = $doc])*
                #[$sig]
                fn $name_async<'py>(&self, py: Python<'py>, $($arg: $ty),*) -> PyResult<Bound<'py, PyAny>> {
                    let fut = self.$prep(py, $($arg),*)?;
                    aio::awaitable(py, self.after_pending(fut), $conv)
                }
            )*

            $($also)*
        }
    };
}

impl Client {
    fn core(&self) -> CoreClient {
        CoreClient::clone(&self.inner)
    }

    fn wrap(result: ironhub::Result<CoreClient>) -> PyResult<Client> {
        let inner = result.map_err(to_py_err)?;
        let slots = Arc::new(Slots::default());
        handlers::install_state_tracking(&inner, &slots).map_err(to_py_err)?;
        Ok(Client { inner: ManuallyDrop::new(inner), slots, pending: Pending::default(), completions: Default::default() })
    }

    /// `fut`, completing no earlier than the handler changes the asyncio setters started before
    /// it (both run at once): an awaited call after `client.on_x = h` finds `h` subscribed.
    fn after_pending<T: Send>(&self, fut: impl Future<Output = T> + Send + 'static) -> impl Future<Output = T> + Send + 'static {
        let pending = self.pending.outstanding();
        async move {
            match pending {
                Some(pending) => futures::future::join(pending, fut).await.1,
                None => fut.await,
            }
        }
    }

    fn prepare_connect(&self, _py: Python<'_>) -> PyResult<impl Future<Output = ironhub::Result<()>> + Send + 'static> {
        let c = self.core();
        Ok(async move {
            match c.connect().await {
                // azure-iot-device: `disconnect()` (e.g. from `on_connection_state_change`) while
                // `connect()` is in progress ends that connect normally: the caller asked for it.
                Err(Error::OperationCancelled) => Ok(()),
                other => other,
            }
        })
    }
    fn prepare_disconnect(&self, _py: Python<'_>) -> PyResult<impl Future<Output = ironhub::Result<()>> + Send + 'static> {
        let c = self.core();
        Ok(async move { c.disconnect().await })
    }
    fn prepare_shutdown(&self, _py: Python<'_>) -> PyResult<impl Future<Output = ironhub::Result<()>> + Send + 'static> {
        let c = self.core();
        Ok(async move { c.shutdown().await })
    }
    fn prepare_update_sastoken(&self, _py: Python<'_>, sastoken: String) -> PyResult<impl Future<Output = ironhub::Result<()>> + Send + 'static> {
        let c = self.core();
        Ok(async move { c.update_sastoken(&sastoken).await })
    }
    fn prepare_send_message(&self, py: Python<'_>, message: Bound<'_, PyAny>) -> PyResult<impl Future<Output = ironhub::Result<()>> + Send + 'static> {
        let message = outgoing_message(&message).map_err(|e| encoding_error(py, e))?;
        // Queued now, in call order (pipelining); the future resolves at PUBACK. Queueing takes
        // only the core's short internal locks, which no thread holds while waiting for the GIL,
        // so it runs with the GIL held: releasing it here let another thread take it at every send
        // of a burst (two context switches per message).
        Ok(self.inner.send_message_pipelined(&message))
    }
    fn prepare_send_message_to_output(&self, py: Python<'_>, message: Bound<'_, PyAny>, output_name: String) -> PyResult<impl Future<Output = ironhub::Result<()>> + Send + 'static> {
        let message = outgoing_message(&message).map_err(|e| encoding_error(py, e))?;
        let c = self.core();
        Ok(async move { c.send_message_to_output(&message, &output_name).await })
    }
    /// `messages`: any iterable of messages or payloads, converted in one pass (no Python list).
    fn prepare_send_messages(&self, py: Python<'_>, messages: Bound<'_, PyAny>) -> PyResult<impl Future<Output = ironhub::Result<()>> + Send + 'static> {
        let messages = messages
            .try_iter()?
            .map(|m| outgoing_message(&m?))
            .collect::<PyResult<Vec<Message>>>()
            .map_err(|e| encoding_error(py, e))?;
        let c = self.core();
        Ok(async move { c.send_messages(&messages).await })
    }
    fn prepare_send_method_response(&self, _py: Python<'_>, method_response: Bound<'_, PyAny>) -> PyResult<impl Future<Output = ironhub::Result<()>> + Send + 'static> {
        let response = method_response_from_py(&method_response)?;
        let c = self.core();
        Ok(async move { c.send_method_response(&response).await })
    }
    fn prepare_get_twin(&self, _py: Python<'_>) -> PyResult<impl Future<Output = ironhub::Result<Value>> + Send + 'static> {
        let c = self.core();
        Ok(async move { c.get_twin().await })
    }
    fn prepare_patch_twin_reported_properties(&self, py: Python<'_>, reported_properties_patch: Bound<'_, PyAny>) -> PyResult<impl Future<Output = ironhub::Result<()>> + Send + 'static> {
        let patch = to_json(&reported_properties_patch).map_err(|e| encoding_error(py, e))?;
        if !patch.is_object() {
            return Err(PyTypeError::new_err("reported_properties_patch must be a dict"));
        }
        let c = self.core();
        Ok(async move { c.patch_twin_reported_properties(&patch).await })
    }
    fn prepare_invoke_method(&self, _py: Python<'_>, method_params: Bound<'_, PyAny>, device_id: String, module_id: Option<String>) -> PyResult<impl Future<Output = ironhub::Result<Value>> + Send + 'static> {
        let params = to_json(&method_params)?;
        let c = self.core();
        Ok(async move { c.invoke_method(&params, &device_id, module_id.as_deref()).await })
    }
    fn prepare_receive_message(&self, _py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<impl Future<Output = ironhub::Result<Option<Message>>> + Send + 'static> {
        let wait = receive_wait(block, timeout)?;
        let c = self.core();
        Ok(async move { c.receive_message(wait).await })
    }
    fn prepare_receive_message_on_input(&self, _py: Python<'_>, input_name: String, block: bool, timeout: Option<f64>) -> PyResult<impl Future<Output = ironhub::Result<Option<Message>>> + Send + 'static> {
        let wait = receive_wait(block, timeout)?;
        let c = self.core();
        Ok(async move { c.receive_message_on_input(&input_name, wait).await })
    }
    fn prepare_receive_method_request(&self, _py: Python<'_>, method_name: Option<String>, block: bool, timeout: Option<f64>) -> PyResult<impl Future<Output = ironhub::Result<Option<MethodRequest>>> + Send + 'static> {
        let wait = receive_wait(block, timeout)?;
        let c = self.core();
        Ok(async move { c.receive_method_request(method_name.as_deref(), wait).await })
    }
    fn prepare_receive_twin_desired_properties_patch(&self, _py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<impl Future<Output = ironhub::Result<Option<Value>>> + Send + 'static> {
        let wait = receive_wait(block, timeout)?;
        let c = self.core();
        Ok(async move { c.receive_twin_desired_properties_patch(wait).await })
    }
}

operations! {
    /// Connects (returns at CONNACK).
    fn connect / connect_async = prepare_connect() [pyo3(signature = ())] => unit;
    /// Disconnects; in-flight operations end with OperationCancelled.
    fn disconnect / disconnect_async = prepare_disconnect() [pyo3(signature = ())] => unit;
    /// Stops the client for good.
    fn shutdown / shutdown_async = prepare_shutdown() [pyo3(signature = ())] => unit;
    /// Replaces the SAS token and re-authorizes.
    fn update_sastoken / update_sastoken_async = prepare_update_sastoken(sastoken: String)
        [pyo3(signature = (sastoken))] => unit;
    /// Sends a message to a module output; completes at PUBACK.
    fn send_message_to_output / send_message_to_output_async =
        prepare_send_message_to_output(message: Bound<'_, PyAny>, output_name: String)
        [pyo3(signature = (message, output_name))] => unit;
    /// Sends a method response (an `ironhub.models.MethodResponse`).
    fn send_method_response / send_method_response_async =
        prepare_send_method_response(method_response: Bound<'_, PyAny>)
        [pyo3(signature = (method_response))] => unit;
    /// The twin as a dict.
    fn get_twin / get_twin_async = prepare_get_twin() [pyo3(signature = ())] => json;
    /// Patches reported properties (a dict).
    fn patch_twin_reported_properties / patch_twin_reported_properties_async =
        prepare_patch_twin_reported_properties(reported_properties_patch: Bound<'_, PyAny>)
        [pyo3(signature = (reported_properties_patch))] => unit;
    /// Invokes a direct method through the Edge hub; returns {"status", "payload"}.
    fn invoke_method / invoke_method_async =
        prepare_invoke_method(method_params: Bound<'_, PyAny>, device_id: String, module_id: Option<String>)
        [pyo3(signature = (method_params, device_id, module_id=None))] => json;
    /// Deprecated receive API (devices): the next C2D message or None.
    fn receive_message / receive_message_async = prepare_receive_message(block: bool, timeout: Option<f64>)
        [pyo3(signature = (block=true, timeout=None))] => optional_message;
    /// Deprecated receive API (modules): the next message on `input_name` or None.
    fn receive_message_on_input / receive_message_on_input_async =
        prepare_receive_message_on_input(input_name: String, block: bool, timeout: Option<f64>)
        [pyo3(signature = (input_name, block=true, timeout=None))] => optional_message;
    /// Deprecated receive API: the next method request or None.
    fn receive_method_request / receive_method_request_async =
        prepare_receive_method_request(method_name: Option<String>, block: bool, timeout: Option<f64>)
        [pyo3(signature = (method_name=None, block=true, timeout=None))] => optional_request;
    /// Deprecated receive API: the next desired properties patch or None.
    fn receive_twin_desired_properties_patch / receive_twin_desired_properties_patch_async =
        prepare_receive_twin_desired_properties_patch(block: bool, timeout: Option<f64>)
        [pyo3(signature = (block=true, timeout=None))] => optional_json;

@also {
    /// Sends a message (an `ironhub.models.Message`); returns at PUBACK. The hot path of most
    /// applications: the message is converted with the GIL, then one release of the GIL queues it
    /// and waits for its PUBACK on this thread (no task, no thread hop).
    #[pyo3(signature = (message))]
    fn send_message(&self, py: Python<'_>, message: Bound<'_, PyAny>) -> PyResult<()> {
        let message = outgoing_message(&message).map_err(|e| encoding_error(py, e))?;
        aio::wait(py, || self.inner.send_message_pipelined(&message))?.map_err(to_py_err)
    }

    /// Sends a message; the awaitable completes at PUBACK. The message is queued now, so sends
    /// awaited together are pipelined in call order; their completions reach the event loop in
    /// batches (`aio::LoopCompletions`).
    #[pyo3(signature = (message))]
    fn send_message_async<'py>(&self, py: Python<'py>, message: Bound<'_, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let fut = self.prepare_send_message(py, message)?;
        aio::batched_awaitable(py, &self.completions, self.after_pending(fut))
    }

    /// Sends messages (any iterable of messages or payloads) pipelined; returns at every PUBACK,
    /// raises the first failure.
    #[pyo3(signature = (messages))]
    fn send_messages(&self, py: Python<'_>, messages: Bound<'_, PyAny>) -> PyResult<()> {
        let fut = self.prepare_send_messages(py, messages)?;
        aio::block_on_interruptible(py, fut)?.map_err(to_py_err)
    }

    /// Sends messages pipelined; the awaitable completes at every PUBACK (the first failure
    /// raised), resolved like `send_message_async`'s.
    #[pyo3(signature = (messages))]
    fn send_messages_async<'py>(&self, py: Python<'py>, messages: Bound<'_, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let fut = self.prepare_send_messages(py, messages)?;
        aio::batched_awaitable(py, &self.completions, self.after_pending(fut))
    }

    /// Creates a client from a device or module connection string (`kwargs`: the factory's
    /// keyword options; `refused`: keywords this factory does not take).
    #[staticmethod]
    #[pyo3(signature = (connection_string, kwargs, refused))]
    fn create_from_connection_string(
        connection_string: &str,
        kwargs: Option<&Bound<'_, PyDict>>,
        refused: Vec<String>,
    ) -> PyResult<Client> {
        let opts = options::from_kwargs(kwargs, &refused)?;
        Self::wrap(CoreClient::create_from_connection_string(connection_string, opts))
    }

    /// Creates a client from a SAS token string (not renewable).
    #[staticmethod]
    #[pyo3(signature = (sastoken, kwargs, refused))]
    fn create_from_sastoken(sastoken: &str, kwargs: Option<&Bound<'_, PyDict>>, refused: Vec<String>) -> PyResult<Client> {
        let opts = options::from_kwargs(kwargs, &refused)?;
        Self::wrap(CoreClient::create_from_sastoken(sastoken, opts))
    }

    /// Creates a device client that signs its SAS tokens with `symmetric_key`.
    #[staticmethod]
    #[pyo3(signature = (symmetric_key, hostname, device_id, kwargs, refused))]
    fn create_from_symmetric_key(
        symmetric_key: &str,
        hostname: &str,
        device_id: &str,
        kwargs: Option<&Bound<'_, PyDict>>,
        refused: Vec<String>,
    ) -> PyResult<Client> {
        let opts = options::from_kwargs(kwargs, &refused)?;
        Self::wrap(CoreClient::create_from_symmetric_key(symmetric_key, hostname, device_id, opts))
    }

    /// Creates a client that authenticates with an X.509 certificate (an `X509` object).
    #[staticmethod]
    #[pyo3(signature = (x509, hostname, device_id, module_id, kwargs, refused))]
    fn create_from_x509_certificate(
        x509: &Bound<'_, PyAny>,
        hostname: &str,
        device_id: &str,
        module_id: Option<&str>,
        kwargs: Option<&Bound<'_, PyDict>>,
        refused: Vec<String>,
    ) -> PyResult<Client> {
        let opts = options::from_kwargs(kwargs, &refused)?;
        let attr = |n: &str| x509.getattr(n).map_err(|_| PyTypeError::new_err("x509 must be an X509 object"));
        let cert: String = attr("certificate_file")?.extract()?;
        let key: String = attr("key_file")?.extract()?;
        let pass: Option<String> = attr("pass_phrase")?.extract()?;
        let x = ironhub::X509::new(cert, key, pass);
        Self::wrap(CoreClient::create_from_x509_certificate(x, hostname, device_id, module_id, opts))
    }

    /// Creates a module client from the IoT Edge environment. An environment that is missing or
    /// incomplete is an `OSError`, as azure-iot-device raises it.
    #[staticmethod]
    #[pyo3(signature = (kwargs, refused))]
    fn create_from_edge_environment(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>, refused: Vec<String>) -> PyResult<Client> {
        let opts = options::from_kwargs(kwargs, &refused)?;
        match py.detach(|| ironhub::blocking::Client::create_from_edge_environment(opts)) {
            Err(e) if e.kind() == ErrorKind::Client => Err(PyOSError::new_err(e.to_string())),
            result => Self::wrap(result.map(|c| c.as_async().clone())),
        }
    }

    /// Whether the client is connected now.
    #[getter]
    fn connected(&self, py: Python<'_>) -> bool {
        py.detach(|| self.inner.connected())
    }

    /// Why the connection state last changed, as azure-iot-sdk-c names it (e.g. "NO_NETWORK",
    /// "EXPIRED_SAS_TOKEN", "CLIENT_CLOSE"); None before the first change.
    #[getter]
    fn connection_state_reason(&self) -> Option<&'static str> {
        use ironhub::ConnectionReason as R;
        self.slots.reason().map(|r| match r {
            R::Ok => "OK",
            R::ExpiredSasToken => "EXPIRED_SAS_TOKEN",
            R::DeviceDisabled => "DEVICE_DISABLED",
            R::BadCredential => "BAD_CREDENTIAL",
            R::RetryExpired => "RETRY_EXPIRED",
            R::NoNetwork => "NO_NETWORK",
            R::CommunicationError => "COMMUNICATION_ERROR",
            R::NoPingResponse => "NO_PING_RESPONSE",
            R::ClientClose => "CLIENT_CLOSE",
        })
    }

    /// The device id of the identity.
    #[getter]
    fn device_id(&self) -> String {
        self.inner.identity().device_id.clone()
    }

    /// The module id of the identity (None for a device).
    #[getter]
    fn module_id(&self) -> Option<String> {
        self.inner.identity().module_id.clone()
    }

    /// The hub host name of the identity.
    #[getter]
    fn hostname(&self) -> String {
        self.inner.identity().hostname.clone()
    }

    /// Sets (callable) or clears (None) the handler `kind` (one of `HANDLER_NAMES`); returns once
    /// the core has (un)subscribed and the old handler no longer runs. With `background=True`
    /// (the asyncio clients) it returns at once: the handler is recorded now, the subscription is
    /// made in the background, and the next `*_async` operation completes only after it.
    #[pyo3(signature = (kind, handler, background=false))]
    fn set_handler(&self, py: Python<'_>, kind: &str, handler: Option<Py<PyAny>>, background: bool) -> PyResult<()> {
        handlers::set(py, &self.inner, &self.slots, &self.pending, kind, handler, background)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.slots.traverse(&visit)
    }

    fn __clear__(&self) {
        // Dropping Python objects needs the GIL, which the collector holds while calling this.
        drop(self.slots.clear());
    }

    fn __repr__(&self) -> String {
        let id = self.inner.identity();
        match &id.module_id {
            Some(m) => format!("<ironhub._native.Client {}/{}>", id.device_id, m),
            None => format!("<ironhub._native.Client {}>", id.device_id),
        }
    }
}
}
