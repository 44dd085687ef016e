//! `ironhub._native.Client`: one core client (device or module) as a Python object. Every
//! operation is a core future: the blocking methods run it with the GIL released, and
//! `start(op, args, done)` runs it in the background and reports to `done(exc, result)` (the
//! asyncio clients resolve a future there). Arguments are converted from Python once, in
//! `prepare`, so both paths accept exactly the same values.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::time::Duration;

use ironhub::{Client as CoreClient, Message, MethodRequest};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::IntoPyObjectExt;
use serde_json::Value;

use crate::background;
use crate::convert::{
    from_json, message_from_py, message_to_py, method_request_to_py, method_response_from_py,
    to_json,
};
use crate::errors::to_py_err;
use crate::handlers::{self, log_handler_exception};
use crate::options;

/// What a finished operation hands back, before it becomes a Python value (with the GIL).
enum Done {
    Nothing,
    Json(Value),
    OptionalJson(Option<Value>),
    Message(Option<Message>),
    MethodRequest(Option<MethodRequest>),
}

type OpFuture = Pin<Box<dyn Future<Output = ironhub::Result<Done>> + Send + 'static>>;

impl Done {
    fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self {
            Done::Nothing
            | Done::OptionalJson(None)
            | Done::Message(None)
            | Done::MethodRequest(None) => py.None(),
            Done::Json(v) | Done::OptionalJson(Some(v)) => from_json(py, &v)?.unbind(),
            Done::Message(Some(m)) => message_to_py(py, &m)?.unbind(),
            Done::MethodRequest(Some(r)) => method_request_to_py(py, &r)?.unbind(),
        })
    }
}

fn unit<F>(fut: F) -> OpFuture
where
    F: Future<Output = ironhub::Result<()>> + Send + 'static,
{
    Box::pin(async move { fut.await.map(|_| Done::Nothing) })
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

fn arg<'py, T: FromPyObjectOwned<'py>>(
    args: &Bound<'py, PyTuple>,
    i: usize,
    what: &str,
) -> PyResult<T> {
    let item = args
        .get_item(i)
        .map_err(|_| PyTypeError::new_err(format!("missing argument: {what}")))?;
    item.extract::<T>().map_err(|e| {
        let e: PyErr = e.into();
        PyTypeError::new_err(format!("invalid {what}: {}", e.value(args.py())))
    })
}

fn optional_arg<'py, T: FromPyObjectOwned<'py>>(
    args: &Bound<'py, PyTuple>,
    i: usize,
    what: &str,
) -> PyResult<Option<T>> {
    if args.len() <= i {
        return Ok(None);
    }
    arg::<Option<T>>(args, i, what)
}

/// A device or module client of the native core.
#[pyclass(module = "ironhub._native", frozen)]
pub struct Client {
    /// Dropped by hand (see `Drop`): never with the GIL held.
    pub(crate) inner: ManuallyDrop<CoreClient>,
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

impl Client {
    /// Converts `args` for operation `op` and returns the core future that performs it.
    fn prepare(&self, py: Python<'_>, op: &str, args: &Bound<'_, PyTuple>) -> PyResult<OpFuture> {
        let c = CoreClient::clone(&self.inner);
        Ok(match op {
            "connect" => unit(async move { c.connect().await }),
            "disconnect" => unit(async move { c.disconnect().await }),
            "shutdown" => unit(async move { c.shutdown().await }),
            "update_sastoken" => {
                let token: String = arg(args, 0, "sastoken")?;
                unit(async move { c.update_sastoken(&token).await })
            }
            "send_message" => {
                let message = message_from_py(&args.get_item(0)?)?;
                // Queued now, in call order (pipelining); the future resolves at PUBACK.
                unit(py.detach(|| c.send_message_pipelined(&message)))
            }
            "send_message_to_output" => {
                let message = message_from_py(&args.get_item(0)?)?;
                let output: String = arg(args, 1, "output_name")?;
                unit(async move { c.send_message_to_output(&message, &output).await })
            }
            "send_messages" => {
                let list = args.get_item(0)?;
                let messages = list
                    .try_iter()?
                    .map(|m| message_from_py(&m?))
                    .collect::<PyResult<Vec<Message>>>()?;
                let futures: Vec<_> = py.detach(|| {
                    messages
                        .iter()
                        .map(|m| c.send_message_pipelined(m))
                        .collect()
                });
                unit(async move {
                    // Wait for every PUBACK, then report the first failure.
                    let mut first_error = None;
                    for f in futures {
                        if let Err(e) = f.await {
                            first_error.get_or_insert(e);
                        }
                    }
                    first_error.map_or(Ok(()), Err)
                })
            }
            "send_method_response" => {
                let response = method_response_from_py(&args.get_item(0)?)?;
                unit(async move { c.send_method_response(&response).await })
            }
            "get_twin" => Box::pin(async move { c.get_twin().await.map(Done::Json) }),
            "patch_twin_reported_properties" => {
                let patch = to_json(&args.get_item(0)?)?;
                if !patch.is_object() {
                    return Err(PyTypeError::new_err(
                        "reported_properties_patch must be a dict",
                    ));
                }
                unit(async move { c.patch_twin_reported_properties(&patch).await })
            }
            "invoke_method" => {
                let params = to_json(&args.get_item(0)?)?;
                let device_id: String = arg(args, 1, "device_id")?;
                let module_id: Option<String> = optional_arg(args, 2, "module_id")?;
                Box::pin(async move {
                    c.invoke_method(&params, &device_id, module_id.as_deref())
                        .await
                        .map(Done::Json)
                })
            }
            "receive_message" => {
                let wait = receive_wait(arg(args, 0, "block")?, optional_arg(args, 1, "timeout")?)?;
                Box::pin(async move { c.receive_message(wait).await.map(Done::Message) })
            }
            "receive_message_on_input" => {
                let input: String = arg(args, 0, "input_name")?;
                let wait = receive_wait(arg(args, 1, "block")?, optional_arg(args, 2, "timeout")?)?;
                Box::pin(async move {
                    c.receive_message_on_input(&input, wait)
                        .await
                        .map(Done::Message)
                })
            }
            "receive_method_request" => {
                let name: Option<String> = optional_arg(args, 0, "method_name")?;
                let wait = receive_wait(arg(args, 1, "block")?, optional_arg(args, 2, "timeout")?)?;
                Box::pin(async move {
                    c.receive_method_request(name.as_deref(), wait)
                        .await
                        .map(Done::MethodRequest)
                })
            }
            "receive_twin_desired_properties_patch" => {
                let wait = receive_wait(arg(args, 0, "block")?, optional_arg(args, 1, "timeout")?)?;
                Box::pin(async move {
                    c.receive_twin_desired_properties_patch(wait)
                        .await
                        .map(Done::OptionalJson)
                })
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown operation {other:?}"
                )))
            }
        })
    }

    /// Runs `op` to completion with the GIL released (Ctrl-C still interrupts it).
    fn call(&self, py: Python<'_>, op: &str, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let fut = self.prepare(py, op, args)?;
        let done = background::block_on_interruptible(py, fut)?.map_err(to_py_err)?;
        done.into_py(py)
    }

    fn wrap(result: ironhub::Result<CoreClient>) -> PyResult<Client> {
        result
            .map(|inner| Client {
                inner: ManuallyDrop::new(inner),
            })
            .map_err(to_py_err)
    }
}

macro_rules! tuple {
    ($py:expr $(, $x:expr)*) => {
        PyTuple::new($py, [$($x.into_bound_py_any($py)?),*])?
    };
}

#[pymethods]
impl Client {
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
        Self::wrap(CoreClient::create_from_connection_string(
            connection_string,
            opts,
        ))
    }

    /// Creates a client from a SAS token string (not renewable).
    #[staticmethod]
    #[pyo3(signature = (sastoken, kwargs, refused))]
    fn create_from_sastoken(
        sastoken: &str,
        kwargs: Option<&Bound<'_, PyDict>>,
        refused: Vec<String>,
    ) -> PyResult<Client> {
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
        Self::wrap(CoreClient::create_from_symmetric_key(
            symmetric_key,
            hostname,
            device_id,
            opts,
        ))
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
        let attr = |n: &str| {
            x509.getattr(n)
                .map_err(|_| PyTypeError::new_err("x509 must be an X509 object"))
        };
        let cert: String = attr("certificate_file")?.extract()?;
        let key: String = attr("key_file")?.extract()?;
        let pass: Option<String> = attr("pass_phrase")?.extract()?;
        let x = ironhub::X509::new(cert, key, pass);
        Self::wrap(CoreClient::create_from_x509_certificate(
            x, hostname, device_id, module_id, opts,
        ))
    }

    /// Creates a module client from the IoT Edge environment.
    #[staticmethod]
    #[pyo3(signature = (kwargs, refused))]
    fn create_from_edge_environment(
        py: Python<'_>,
        kwargs: Option<&Bound<'_, PyDict>>,
        refused: Vec<String>,
    ) -> PyResult<Client> {
        let opts = options::from_kwargs(kwargs, &refused)?;
        let result = py.detach(|| ironhub::blocking::Client::create_from_edge_environment(opts));
        Self::wrap(result.map(|c| c.as_async().clone()))
    }

    /// Whether the client is connected now.
    #[getter]
    fn connected(&self, py: Python<'_>) -> bool {
        py.detach(|| self.inner.connected())
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

    /// Connects (blocks until CONNACK).
    fn connect(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, "connect", &PyTuple::empty(py)).map(drop)
    }

    /// Disconnects; in-flight operations end with OperationCancelled.
    fn disconnect(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, "disconnect", &PyTuple::empty(py)).map(drop)
    }

    /// Stops the client for good.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, "shutdown", &PyTuple::empty(py)).map(drop)
    }

    /// Replaces the SAS token and re-authorizes.
    fn update_sastoken(&self, py: Python<'_>, sastoken: Bound<'_, PyAny>) -> PyResult<()> {
        self.call(py, "update_sastoken", &tuple!(py, sastoken))
            .map(drop)
    }

    /// Sends a message (an `ironhub.models.Message`); blocks until PUBACK.
    fn send_message(&self, py: Python<'_>, message: Bound<'_, PyAny>) -> PyResult<()> {
        self.call(py, "send_message", &tuple!(py, message))
            .map(drop)
    }

    /// Sends a message to a module output; blocks until PUBACK.
    fn send_message_to_output(
        &self,
        py: Python<'_>,
        message: Bound<'_, PyAny>,
        output_name: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.call(
            py,
            "send_message_to_output",
            &tuple!(py, message, output_name),
        )
        .map(drop)
    }

    /// Sends messages pipelined; blocks until every PUBACK, raises the first failure.
    fn send_messages(&self, py: Python<'_>, messages: Bound<'_, PyAny>) -> PyResult<()> {
        self.call(py, "send_messages", &tuple!(py, messages))
            .map(drop)
    }

    /// Sends a method response (an `ironhub.models.MethodResponse`).
    fn send_method_response(&self, py: Python<'_>, response: Bound<'_, PyAny>) -> PyResult<()> {
        self.call(py, "send_method_response", &tuple!(py, response))
            .map(drop)
    }

    /// Returns the twin as a dict.
    fn get_twin(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.call(py, "get_twin", &PyTuple::empty(py))
    }

    /// Patches reported properties.
    fn patch_twin_reported_properties(
        &self,
        py: Python<'_>,
        patch: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.call(py, "patch_twin_reported_properties", &tuple!(py, patch))
            .map(drop)
    }

    /// Invokes a direct method through the Edge hub; returns {"status", "payload"}.
    #[pyo3(signature = (method_params, device_id, module_id=None))]
    fn invoke_method(
        &self,
        py: Python<'_>,
        method_params: Bound<'_, PyAny>,
        device_id: Bound<'_, PyAny>,
        module_id: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.call(
            py,
            "invoke_method",
            &tuple!(py, method_params, device_id, module_id),
        )
    }

    /// Deprecated receive API (devices): the next C2D message or None.
    #[pyo3(signature = (block=true, timeout=None))]
    fn receive_message(
        &self,
        py: Python<'_>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        self.call(py, "receive_message", &tuple!(py, block, timeout))
    }

    /// Deprecated receive API (modules): the next message on `input_name` or None.
    #[pyo3(signature = (input_name, block=true, timeout=None))]
    fn receive_message_on_input(
        &self,
        py: Python<'_>,
        input_name: Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        self.call(
            py,
            "receive_message_on_input",
            &tuple!(py, input_name, block, timeout),
        )
    }

    /// Deprecated receive API: the next method request or None.
    #[pyo3(signature = (method_name=None, block=true, timeout=None))]
    fn receive_method_request(
        &self,
        py: Python<'_>,
        method_name: Option<Bound<'_, PyAny>>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        self.call(
            py,
            "receive_method_request",
            &tuple!(py, method_name, block, timeout),
        )
    }

    /// Deprecated receive API: the next desired properties patch or None.
    #[pyo3(signature = (block=true, timeout=None))]
    fn receive_twin_desired_properties_patch(
        &self,
        py: Python<'_>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        self.call(
            py,
            "receive_twin_desired_properties_patch",
            &tuple!(py, block, timeout),
        )
    }

    /// Sets (callable) or clears (None) the handler `kind` (one of `HANDLER_NAMES`).
    #[pyo3(signature = (kind, handler))]
    fn set_handler(&self, py: Python<'_>, kind: &str, handler: Option<Py<PyAny>>) -> PyResult<()> {
        handlers::set(py, &self.inner, kind, handler)
    }

    /// Starts operation `op` (a method name of this class) with `args` in the background and
    /// returns at once; `done(exc, result)` is called later, on an ironhub thread, with the
    /// GIL taken. Used by the asyncio clients.
    fn start(
        &self,
        py: Python<'_>,
        op: &str,
        args: &Bound<'_, PyTuple>,
        done: Py<PyAny>,
    ) -> PyResult<()> {
        let fut = self.prepare(py, op, args)?;
        background::spawn(fut, move |outcome| {
            Python::attach(|py| {
                let (exc, value) = match outcome.map_err(to_py_err).and_then(|d| d.into_py(py)) {
                    Ok(v) => (py.None(), v),
                    Err(e) => (e.into_value(py).into_any(), py.None()),
                };
                if let Err(err) = done.call1(py, (exc, value)) {
                    log_handler_exception(py, "operation completion", err);
                }
            })
        });
        Ok(())
    }

    fn __repr__(&self) -> String {
        let id = self.inner.identity();
        match &id.module_id {
            Some(m) => format!("<ironhub._native.Client {}/{}>", id.device_id, m),
            None => format!("<ironhub._native.Client {}>", id.device_id),
        }
    }
}
