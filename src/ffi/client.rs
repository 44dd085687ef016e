//! `ironhub_client`: the five factories, lifecycle, telemetry (blocking and async), twin,
//! method responses and invoke_method, each a call of the core's blocking `Client`.
//!
//! The handle also counts async sends whose completion callback has not run yet, so that
//! `ironhub_client_free` returns only after every one of them ran (the caller may then release
//! their user_data): the core delivers them all, with `OperationCancelled` on shutdown.

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::boundary::{arg_ref, arg_str, ffi_fallible, ffi_panic_boundary, opt_str, FfiError, Out};
use super::handlers::{in_callback_of, CallbackScope, UserData};
use super::handles::{export_string, Registry};
use super::ironhub_result;
use super::message::ironhub_message;
use super::options::{ironhub_options, options_or_default};
use crate::blocking::Client;
use crate::error::Result;
use crate::message::{MethodResponse, X509};

/// A device or module client. Any number of threads may call its functions at once (from
/// callbacks too), except `ironhub_client_free`, which must be the handle's last call: no other
/// call may run during or after it. Strings it returns are the caller's (`ironhub_string_free`);
/// string, JSON and message arguments are read during the call only (copied where kept), so they
/// need not outlive it.
pub struct ironhub_client {
    pub(crate) client: Client,
    /// Tells this client's callbacks apart on the thread running them (`CallbackScope`).
    pub(crate) id: u64,
    pending_sends: Arc<PendingSends>,
}

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// Completion callback of `ironhub_client_send_message_async`: runs exactly once, on a
/// dispatcher thread (one at a time with the client's other callbacks), with `IRONHUB_OK` at
/// PUBACK or the error (`IRONHUB_ERROR_OPERATION_CANCELLED` when the client is disconnected, shut
/// down or freed first, or when the connection drops with `connection_retry` off). It may call any function of the client except `ironhub_client_free`
/// (`IRONHUB_ERROR_IN_CALLBACK`). `ironhub_client_free` returns only after every owed completion
/// ran, so `user_data` may be released then.
pub type ironhub_send_callback = Option<extern "C" fn(user_data: *mut c_void, result: ironhub_result)>;

/// Number of async sends whose callback has not run yet.
#[derive(Default)]
struct PendingSends {
    count: Mutex<usize>,
    drained: Condvar,
}

impl PendingSends {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn start(&self) {
        *self.lock() += 1;
    }
    fn finish(&self) {
        let mut n = self.lock();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.drained.notify_all();
        }
    }
    /// Waits for the callbacks still owed, bounded so that a core bug cannot hang `free` forever.
    fn wait_drained(&self, bound: Duration) {
        let n = self.lock();
        let (n, timeout) = self.drained.wait_timeout_while(n, bound, |n| *n > 0).unwrap_or_else(|p| p.into_inner());
        if timeout.timed_out() {
            log::error!("ironhub_client_free: {} send callback(s) did not complete in time", *n);
        }
    }
}

/// The C callback owed for one async send. Calling it is tied to this value: if the core ever
/// dropped the completion without running it, `Drop` still reports `OPERATION_CANCELLED`, so the
/// "exactly once" promise does not hang on a core bug.
struct SendCompletion {
    cb: extern "C" fn(*mut c_void, ironhub_result),
    user_data: UserData,
    client_id: u64,
    pending: Arc<PendingSends>,
    done: bool,
}

impl SendCompletion {
    fn complete(mut self, code: ironhub_result) {
        self.deliver(code);
    }
    fn deliver(&mut self, code: ironhub_result) {
        if !std::mem::replace(&mut self.done, true) {
            let _scope = CallbackScope::enter(self.client_id);
            (self.cb)(self.user_data.get(), code);
            self.pending.finish();
        }
    }
}

impl Drop for SendCompletion {
    fn drop(&mut self) {
        self.deliver(ironhub_result::IRONHUB_ERROR_OPERATION_CANCELLED);
    }
}

static CLIENTS: Registry = Registry::new();

/// Hands a new client to C through `out`.
fn export_client(made: Result<Client>, out: Out<*mut ironhub_client>) -> Result<(), FfiError> {
    let client = made?;
    let id = NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed);
    out.write(CLIENTS.export(ironhub_client { client, id, pending_sends: Arc::default() }));
    Ok(())
}

/// Client from a device or module connection string (`HostName=...;DeviceId=...[;ModuleId=...]
/// ;SharedAccessKey=...` or `;SharedAccessSignature=...`). `opts` may be NULL for defaults;
/// `gateway_hostname` is refused (use `GatewayHostName=` in the string).
#[no_mangle]
pub extern "C" fn ironhub_client_create_from_connection_string(
    cs: *const c_char,
    opts: *const ironhub_options,
    out: *mut *mut ironhub_client,
) -> ironhub_result {
    ffi_fallible! {
        let cs = arg_str(cs, "cs")?;
        let out = Out::new(out, "out")?;
        export_client(Client::create_from_connection_string(cs, options_or_default(opts)), out)
    }
}

/// Client from a SAS token (`SharedAccessSignature sr=...&sig=...&se=...`). The token is not
/// renewable: `on_new_sastoken_required` fires 120 s before it expires; answer with
/// `ironhub_client_update_sastoken`. The `sastoken_ttl` option is refused.
#[no_mangle]
pub extern "C" fn ironhub_client_create_from_sastoken(
    token: *const c_char,
    opts: *const ironhub_options,
    out: *mut *mut ironhub_client,
) -> ironhub_result {
    ffi_fallible! {
        let token = arg_str(token, "token")?;
        let out = Out::new(out, "out")?;
        export_client(Client::create_from_sastoken(token, options_or_default(opts)), out)
    }
}

/// Device client from a base64 symmetric key, the hub host name and the device id.
#[no_mangle]
pub extern "C" fn ironhub_client_create_from_symmetric_key(
    key: *const c_char,
    hostname: *const c_char,
    device_id: *const c_char,
    opts: *const ironhub_options,
    out: *mut *mut ironhub_client,
) -> ironhub_result {
    ffi_fallible! {
        let key = arg_str(key, "key")?;
        let hostname = arg_str(hostname, "hostname")?;
        let device_id = arg_str(device_id, "device_id")?;
        let out = Out::new(out, "out")?;
        export_client(Client::create_from_symmetric_key(key, hostname, device_id, options_or_default(opts)), out)
    }
}

/// Device (module_id NULL) or module client authenticated by an X.509 certificate: PEM file
/// paths of the certificate (chain) and its key; `pass_phrase` may be NULL.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn ironhub_client_create_from_x509_certificate(
    cert_file: *const c_char,
    key_file: *const c_char,
    pass_phrase: *const c_char,
    hostname: *const c_char,
    device_id: *const c_char,
    module_id: *const c_char,
    opts: *const ironhub_options,
    out: *mut *mut ironhub_client,
) -> ironhub_result {
    ffi_fallible! {
        let x509 = X509::new(
            arg_str(cert_file, "cert_file")?,
            arg_str(key_file, "key_file")?,
            opt_str(pass_phrase, "pass_phrase")?.map(str::to_owned),
        );
        let hostname = arg_str(hostname, "hostname")?;
        let device_id = arg_str(device_id, "device_id")?;
        let module_id = opt_str(module_id, "module_id")?;
        let out = Out::new(out, "out")?;
        export_client(
            Client::create_from_x509_certificate(x509, hostname, device_id, module_id, options_or_default(opts)),
            out,
        )
    }
}

/// Module client from the IoT Edge environment (`IOTEDGE_*` variables and the workload API, or
/// the development fallback `EdgeHubConnectionString` + `EdgeModuleCACertificateFile`).
/// `server_verification_cert` and `gateway_hostname` options are refused.
#[no_mangle]
pub extern "C" fn ironhub_client_create_from_edge_environment(
    opts: *const ironhub_options,
    out: *mut *mut ironhub_client,
) -> ironhub_result {
    ffi_fallible! {
        let out = Out::new(out, "out")?;
        let options = options_or_default(opts);
        #[cfg(feature = "edge")]
        let client = Client::create_from_edge_environment(options);
        // A firmware build without the `edge` feature keeps the symbol (one header for every build).
        #[cfg(not(feature = "edge"))]
        let client = {
            drop(options);
            Err(crate::Error::Client("IoT Edge needs ironhub's `edge` feature, which this build leaves out".into()))
        };
        export_client(client, out)
    }
}

/// Shuts the client down and frees it. Returns after every async send callback ran and with no
/// handler running or left to run, so user_data may be released; `c` is invalid afterwards.
///
/// - NULL: `IRONHUB_OK`, nothing done.
/// - From inside one of this client's callbacks: `IRONHUB_ERROR_IN_CALLBACK`, nothing done (it
///   would wait for that very callback); free it from another thread once the callback returned.
/// - A handle that is not a live client of this library (e.g. already freed) is undefined
///   behaviour: free each client exactly once. The library detects some such calls and returns
///   `IRONHUB_ERROR_INVALID_ARGUMENT`, but cannot once the address was reused.
/// - No other call may use `c` while this one runs or after it returned.
#[no_mangle]
pub extern "C" fn ironhub_client_free(c: *mut ironhub_client) -> ironhub_result {
    ffi_fallible! {
        if c.is_null() {
            return Ok(());
        }
        if !CLIENTS.contains(c) {
            return Err(FfiError::invalid("`c` is not a live client (freed already?)"));
        }
        let live = arg_ref(c, "c")?;
        // Ours covers C callbacks (send completions too); the core's covers a blocking call made
        // from inside any of the client's handlers.
        if in_callback_of(live.id) || live.client.as_async().in_handler() {
            return Err(FfiError::new(
                ironhub_result::IRONHUB_ERROR_IN_CALLBACK,
                "ironhub_client_free was called from one of this client's callbacks",
            ));
        }
        let Some(handle) = CLIENTS.reclaim(c) else { return Ok(()) };
        let bound = handle.client.options().operation_timeout + Duration::from_secs(5);
        // The core's shutdown clears every handler inside the dispatcher's exclusive section, so
        // none is running or will run once it returns. An error only means it was already shut
        // down (handlers cleared then); dropping the last core handle below clears them again.
        let _ = handle.client.shutdown();
        handle.pending_sends.wait_drained(bound);
        drop(handle);
        Ok(())
    }
}

/// Connects and returns at CONNACK.
#[no_mangle]
pub extern "C" fn ironhub_client_connect(c: *mut ironhub_client) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        Ok(c.client.connect()?)
    }
}

/// Disconnects; in-flight operations end with `IRONHUB_ERROR_OPERATION_CANCELLED`.
#[no_mangle]
pub extern "C" fn ironhub_client_disconnect(c: *mut ironhub_client) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        Ok(c.client.disconnect()?)
    }
}

/// Disconnects and stops the client for good: every later call fails with
/// `IRONHUB_ERROR_SHUT_DOWN`. The handle still has to be freed.
#[no_mangle]
pub extern "C" fn ironhub_client_shutdown(c: *mut ironhub_client) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        Ok(c.client.shutdown()?)
    }
}

/// True while an MQTT connection is up (false for NULL).
#[no_mangle]
pub extern "C" fn ironhub_client_connected(c: *const ironhub_client) -> bool {
    ffi_panic_boundary! {
        arg_ref(c, "c").is_ok_and(|c| c.client.connected())
    }
}

/// Replaces the SAS token of a client made by `ironhub_client_create_from_sastoken` (same hub,
/// device and module; not expired) and re-authenticates if connected.
#[no_mangle]
pub extern "C" fn ironhub_client_update_sastoken(c: *mut ironhub_client, token: *const c_char) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        Ok(c.client.update_sastoken(arg_str(token, "token")?)?)
    }
}

/// The message to send, borrowed for the call: the core encodes it when queueing, so no copy is
/// made here (the sync send is the firmware's hot path).
fn outgoing<'a>(m: *const ironhub_message) -> Result<&'a crate::message::Message, FfiError> {
    Ok(&arg_ref(m, "m")?.inner)
}

/// Sends telemetry and returns at PUBACK. The message is copied: free it whenever you like. A send
/// cut by a drop is `IRONHUB_ERROR_OPERATION_CANCELLED` with `connection_retry` off (the client will
/// not reconnect to finish it), as azure-iot-device's `OperationCancelled`.
#[no_mangle]
pub extern "C" fn ironhub_client_send_message(c: *mut ironhub_client, m: *const ironhub_message) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let message = outgoing(m)?;
        Ok(c.client.send_message(message)?)
    }
}

/// Sends a module's message to output `output_name` and returns at PUBACK.
#[no_mangle]
pub extern "C" fn ironhub_client_send_message_to_output(
    c: *mut ironhub_client,
    m: *const ironhub_message,
    output_name: *const c_char,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let output_name = arg_str(output_name, "output_name")?;
        let message = outgoing(m)?;
        Ok(c.client.send_message_to_output(message, output_name)?)
    }
}

/// Queues telemetry and returns at once (`output_name` may be NULL). On `IRONHUB_OK`, `cb` runs
/// exactly once later, on a dispatcher thread, with the outcome (e.g. `IRONHUB_ERROR_MESSAGE_TOO_LARGE`,
/// or `IRONHUB_ERROR_OPERATION_CANCELLED` on disconnect, shutdown, free, or a drop with
/// `connection_retry` off); on any other result
/// (bad arguments) it never runs.
#[no_mangle]
pub extern "C" fn ironhub_client_send_message_async(
    c: *mut ironhub_client,
    m: *const ironhub_message,
    output_name: *const c_char,
    cb: ironhub_send_callback,
    user_data: *mut c_void,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let output_name = opt_str(output_name, "output_name")?;
        let cb = cb.ok_or_else(|| FfiError::null("cb"))?;
        let message = outgoing(m)?;
        // Refused here, so the callback runs only for messages the core accepted (on its dispatcher).
        crate::validate::message(message)?;
        let completion = SendCompletion {
            cb,
            user_data: UserData(user_data),
            client_id: c.id,
            pending: c.pending_sends.clone(),
            done: false,
        };
        completion.pending.start();
        c.client.send_message_with_callback(
            message,
            output_name,
            Box::new(move |outcome| {
                completion.complete(match outcome {
                    Ok(()) => ironhub_result::IRONHUB_OK,
                    Err(e) => FfiError::from(e).code,
                })
            }),
        );
        Ok(())
    }
}

/// Parses a JSON argument.
fn arg_json(ptr: *const c_char, name: &str) -> Result<Value, FfiError> {
    serde_json::from_str(arg_str(ptr, name)?).map_err(|e| FfiError::invalid(format!("`{name}` is not valid JSON: {e}")))
}

/// The twin as JSON `{"desired": {..., "$version": N}, "reported": {..., "$version": M}}` in
/// `*twin_json` (free it with `ironhub_string_free`).
#[no_mangle]
pub extern "C" fn ironhub_client_get_twin(c: *mut ironhub_client, twin_json: *mut *mut c_char) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let out = Out::new(twin_json, "twin_json")?;
        let twin = c.client.get_twin()?;
        out.write(export_string(twin.to_string()));
        Ok(())
    }
}

/// Sends a reported-properties patch (a JSON object) and returns when the hub accepted it.
#[no_mangle]
pub extern "C" fn ironhub_client_patch_twin_reported_properties(
    c: *mut ironhub_client,
    patch_json: *const c_char,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let patch = arg_json(patch_json, "patch_json")?;
        if !patch.is_object() {
            return Err(FfiError::invalid("`patch_json` must be a JSON object"));
        }
        Ok(c.client.patch_twin_reported_properties(&patch)?)
    }
}

/// Answers method request `request_id` with `status` and `payload_json` (NULL sends `null`).
/// Allowed from the method callback or any thread later.
#[no_mangle]
pub extern "C" fn ironhub_client_send_method_response(
    c: *mut ironhub_client,
    request_id: *const c_char,
    status: i32,
    payload_json: *const c_char,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let request_id = arg_str(request_id, "request_id")?;
        let payload = if payload_json.is_null() { None } else { Some(arg_json(payload_json, "payload_json")?) };
        let response = MethodResponse::new(request_id, status, payload);
        Ok(c.client.send_method_response(&response)?)
    }
}

/// Invokes a direct method on another device or module through the Edge hub (modules from the
/// Edge environment). `method_params_json`: `{"methodName", "payload",
/// "responseTimeoutInSeconds", "connectTimeoutInSeconds"}`. `*result_json` receives
/// `{"status": int, "payload": ...}` (free with `ironhub_string_free`).
#[no_mangle]
pub extern "C" fn ironhub_client_invoke_method(
    c: *mut ironhub_client,
    device_id: *const c_char,
    module_id: *const c_char,
    method_params_json: *const c_char,
    result_json: *mut *mut c_char,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let device_id = arg_str(device_id, "device_id")?;
        let module_id = opt_str(module_id, "module_id")?;
        let params = arg_json(method_params_json, "method_params_json")?;
        let out = Out::new(result_json, "result_json")?;
        let result = c.client.invoke_method(&params, device_id, module_id)?;
        out.write(export_string(result.to_string()));
        Ok(())
    }
}
