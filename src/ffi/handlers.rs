//! The six handler registrations. Each wraps a C function pointer and its `user_data` in a core
//! handler; the core runs handlers on its dispatcher (never on the network loop, one at a time per
//! client) and guarantees that once a setter returns, the previous handler is not running and
//! never runs again. Passing a NULL callback clears (and, for receive handlers, unsubscribes).
//!
//! Values lent to a callback (strings, the message) live on the dispatcher's stack for the
//! duration of the call only.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use super::boundary::{arg_ref, ffi_fallible};
use super::client::ironhub_client;
use super::error_map::result_code;
use super::message::ironhub_message;
use super::{ironhub_connection_reason, ironhub_result};
use crate::message::{ConnectionReason, ConnectionStateChange, Message, MethodRequest};

/// `user_data` of a callback, carried to the dispatcher thread. The C caller promises it may be
/// used from there (that is what registering a callback means).
#[derive(Clone, Copy)]
pub(crate) struct UserData(pub(crate) *mut c_void);

// SAFETY: the pointer is only handed back to the C callback it was registered with; the C API
// documents that callbacks run on a dispatcher thread.
unsafe impl Send for UserData {}
// SAFETY: as above; the library never dereferences it.
unsafe impl Sync for UserData {}

impl UserData {
    /// A method (not field access) so closures capture the whole `Send` wrapper.
    pub(crate) fn get(self) -> *mut c_void {
        self.0
    }
}

thread_local! {
    /// Ids of the clients whose callback this thread is running now (nested when a callback of one
    /// client calls into another client whose callback runs inline, e.g. a failed async send).
    static RUNNING: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Marks the current thread as running a callback of client `id` for as long as it lives, so
/// `ironhub_client_free` called from that callback can refuse instead of waiting for itself.
pub(crate) struct CallbackScope(u64);

impl CallbackScope {
    pub(crate) fn enter(id: u64) -> Self {
        RUNNING.with(|r| r.borrow_mut().push(id));
        CallbackScope(id)
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        RUNNING.with(|r| {
            let mut r = r.borrow_mut();
            if let Some(i) = r.iter().rposition(|id| *id == self.0) {
                r.remove(i);
            }
        });
    }
}

/// True on a thread that is running one of client `id`'s callbacks.
pub(crate) fn in_callback_of(id: u64) -> bool {
    RUNNING.with(|r| r.borrow().contains(&id))
}

/// A received C2D message (device) or input message (module, with its input name, see
/// `ironhub_message_input_name`). `m` and every string read from it live until the callback
/// returns; never free it.
///
/// Rules shared by every callback typedef (docs/c-api.md, "Callbacks"):
/// - Thread: runs on one of ironhub's dispatcher threads, never on the thread that registered it
///   and never on a network thread; callbacks of one client run one at a time, in order.
/// - Arguments (pointers) are lent for the duration of the call only: copy what you keep.
/// - It may call any function of its own client (send, twin, method response, handler setters,
///   disconnect, shutdown) and of other clients, except `ironhub_client_free` of its own client,
///   which returns `IRONHUB_ERROR_IN_CALLBACK`. A blocking call made from it occupies one
///   dispatcher thread until it returns (bounded by `operation_timeout`).
/// - Once the setter with a NULL callback (or another callback), `ironhub_client_shutdown` or
///   `ironhub_client_free` has returned on a thread other than the callback's own, it is not
///   running and never runs again, so `user_data` may be released.
pub type ironhub_message_callback = Option<extern "C" fn(user_data: *mut c_void, m: *const ironhub_message)>;
/// A direct method request; answer with `ironhub_client_send_method_response(request_id, ...)`
/// now or later, from any thread (copy `request_id` to answer later). `payload_json` is JSON text
/// (`null` when none was sent). The three strings live until the callback returns.
///
/// Rules shared by every callback typedef (docs/c-api.md, "Callbacks"):
/// - Thread: runs on one of ironhub's dispatcher threads, never on the thread that registered it
///   and never on a network thread; callbacks of one client run one at a time, in order.
/// - Arguments (pointers) are lent for the duration of the call only: copy what you keep.
/// - It may call any function of its own client (send, twin, method response, handler setters,
///   disconnect, shutdown) and of other clients, except `ironhub_client_free` of its own client,
///   which returns `IRONHUB_ERROR_IN_CALLBACK`. A blocking call made from it occupies one
///   dispatcher thread until it returns (bounded by `operation_timeout`).
/// - Once the setter with a NULL callback (or another callback), `ironhub_client_shutdown` or
///   `ironhub_client_free` has returned on a thread other than the callback's own, it is not
///   running and never runs again, so `user_data` may be released.
pub type ironhub_method_callback = Option<
    extern "C" fn(
        user_data: *mut c_void,
        request_id: *const c_char,
        method_name: *const c_char,
        payload_json: *const c_char,
    ),
>;
/// A desired-properties patch as JSON text, with `$version`; `patch_json` lives until the callback
/// returns.
///
/// Rules shared by every callback typedef (docs/c-api.md, "Callbacks"):
/// - Thread: runs on one of ironhub's dispatcher threads, never on the thread that registered it
///   and never on a network thread; callbacks of one client run one at a time, in order.
/// - Arguments (pointers) are lent for the duration of the call only: copy what you keep.
/// - It may call any function of its own client (send, twin, method response, handler setters,
///   disconnect, shutdown) and of other clients, except `ironhub_client_free` of its own client,
///   which returns `IRONHUB_ERROR_IN_CALLBACK`. A blocking call made from it occupies one
///   dispatcher thread until it returns (bounded by `operation_timeout`).
/// - Once the setter with a NULL callback (or another callback), `ironhub_client_shutdown` or
///   `ironhub_client_free` has returned on a thread other than the callback's own, it is not
///   running and never runs again, so `user_data` may be released.
pub type ironhub_twin_patch_callback = Option<extern "C" fn(user_data: *mut c_void, patch_json: *const c_char)>;
/// The connection went up or down, and why.
///
/// Rules shared by every callback typedef (docs/c-api.md, "Callbacks"):
/// - Thread: runs on one of ironhub's dispatcher threads, never on the thread that registered it
///   and never on a network thread; callbacks of one client run one at a time, in order.
/// - Arguments (pointers) are lent for the duration of the call only: copy what you keep.
/// - It may call any function of its own client (send, twin, method response, handler setters,
///   disconnect, shutdown) and of other clients, except `ironhub_client_free` of its own client,
///   which returns `IRONHUB_ERROR_IN_CALLBACK`. A blocking call made from it occupies one
///   dispatcher thread until it returns (bounded by `operation_timeout`).
/// - Once the setter with a NULL callback (or another callback), `ironhub_client_shutdown` or
///   `ironhub_client_free` has returned on a thread other than the callback's own, it is not
///   running and never runs again, so `user_data` may be released.
pub type ironhub_connection_state_callback =
    Option<extern "C" fn(user_data: *mut c_void, connected: bool, reason: ironhub_connection_reason)>;
/// The SAS token given to `ironhub_client_create_from_sastoken` expires in 120 s: call
/// `ironhub_client_update_sastoken` (from the callback or any thread).
///
/// Rules shared by every callback typedef (docs/c-api.md, "Callbacks"):
/// - Thread: runs on one of ironhub's dispatcher threads, never on the thread that registered it
///   and never on a network thread; callbacks of one client run one at a time, in order.
/// - Arguments (pointers) are lent for the duration of the call only: copy what you keep.
/// - It may call any function of its own client (send, twin, method response, handler setters,
///   disconnect, shutdown) and of other clients, except `ironhub_client_free` of its own client,
///   which returns `IRONHUB_ERROR_IN_CALLBACK`. A blocking call made from it occupies one
///   dispatcher thread until it returns (bounded by `operation_timeout`).
/// - Once the setter with a NULL callback (or another callback), `ironhub_client_shutdown` or
///   `ironhub_client_free` has returned on a thread other than the callback's own, it is not
///   running and never runs again, so `user_data` may be released.
pub type ironhub_sastoken_callback = Option<extern "C" fn(user_data: *mut c_void)>;
/// An error no caller was waiting for (e.g. a failed automatic reconnect): `kind` is the result
/// code it maps to, `message` its text (lives until the callback returns; never contains secrets).
///
/// Rules shared by every callback typedef (docs/c-api.md, "Callbacks"):
/// - Thread: runs on one of ironhub's dispatcher threads, never on the thread that registered it
///   and never on a network thread; callbacks of one client run one at a time, in order.
/// - Arguments (pointers) are lent for the duration of the call only: copy what you keep.
/// - It may call any function of its own client (send, twin, method response, handler setters,
///   disconnect, shutdown) and of other clients, except `ironhub_client_free` of its own client,
///   which returns `IRONHUB_ERROR_IN_CALLBACK`. A blocking call made from it occupies one
///   dispatcher thread until it returns (bounded by `operation_timeout`).
/// - Once the setter with a NULL callback (or another callback), `ironhub_client_shutdown` or
///   `ironhub_client_free` has returned on a thread other than the callback's own, it is not
///   running and never runs again, so `user_data` may be released.
pub type ironhub_background_exception_callback =
    Option<extern "C" fn(user_data: *mut c_void, kind: ironhub_result, message: *const c_char)>;

/// A C copy of text handed to a callback (interior NULs cannot come out of serde_json; any in an
/// id from the wire are dropped rather than truncating the string).
fn lend(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

fn reason_code(r: ConnectionReason) -> ironhub_connection_reason {
    use ironhub_connection_reason as C;
    match r {
        ConnectionReason::Ok => C::IRONHUB_REASON_OK,
        ConnectionReason::ExpiredSasToken => C::IRONHUB_REASON_EXPIRED_SAS_TOKEN,
        ConnectionReason::DeviceDisabled => C::IRONHUB_REASON_DEVICE_DISABLED,
        ConnectionReason::BadCredential => C::IRONHUB_REASON_BAD_CREDENTIAL,
        ConnectionReason::RetryExpired => C::IRONHUB_REASON_RETRY_EXPIRED,
        ConnectionReason::NoNetwork => C::IRONHUB_REASON_NO_NETWORK,
        ConnectionReason::CommunicationError => C::IRONHUB_REASON_COMMUNICATION_ERROR,
        ConnectionReason::NoPingResponse => C::IRONHUB_REASON_NO_PING_RESPONSE,
        ConnectionReason::ClientClose => C::IRONHUB_REASON_CLIENT_CLOSE,
    }
}

/// Handler for C2D messages (devices) and input messages (modules). Setting one subscribes
/// (connecting first when auto_connect is on); NULL unsubscribes.
#[no_mangle]
pub extern "C" fn ironhub_client_on_message_received(
    c: *mut ironhub_client,
    cb: ironhub_message_callback,
    user_data: *mut c_void,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let (user_data, id) = (UserData(user_data), c.id);
        let handler = cb.map(|cb| -> crate::client::MessageHandler {
            Arc::new(move |m: Message| {
                let _scope = CallbackScope::enter(id);
                let lent = ironhub_message::from_message(m);
                cb(user_data.get(), &lent);
            })
        });
        Ok(c.client.on_message_received(handler)?)
    }
}

/// Handler for direct method requests. Setting one subscribes; NULL unsubscribes.
#[no_mangle]
pub extern "C" fn ironhub_client_on_method_request_received(
    c: *mut ironhub_client,
    cb: ironhub_method_callback,
    user_data: *mut c_void,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let (user_data, id) = (UserData(user_data), c.id);
        let handler = cb.map(|cb| -> crate::client::MethodRequestHandler {
            Arc::new(move |r: MethodRequest| {
                let _scope = CallbackScope::enter(id);
                let (rid, name, payload) = (lend(&r.request_id), lend(&r.name), lend(&r.payload.to_string()));
                cb(user_data.get(), rid.as_ptr(), name.as_ptr(), payload.as_ptr());
            })
        });
        Ok(c.client.on_method_request_received(handler)?)
    }
}

/// Handler for desired-properties patches. Setting one subscribes; NULL unsubscribes.
#[no_mangle]
pub extern "C" fn ironhub_client_on_twin_desired_properties_patch_received(
    c: *mut ironhub_client,
    cb: ironhub_twin_patch_callback,
    user_data: *mut c_void,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let (user_data, id) = (UserData(user_data), c.id);
        let handler = cb.map(|cb| -> crate::client::TwinPatchHandler {
            Arc::new(move |patch: serde_json::Value| {
                let _scope = CallbackScope::enter(id);
                let patch = lend(&patch.to_string());
                cb(user_data.get(), patch.as_ptr());
            })
        });
        Ok(c.client.on_twin_desired_properties_patch_received(handler)?)
    }
}

/// Handler for connection state changes (with the reason azure-iot-sdk-c would give).
#[no_mangle]
pub extern "C" fn ironhub_client_on_connection_state_change(
    c: *mut ironhub_client,
    cb: ironhub_connection_state_callback,
    user_data: *mut c_void,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let (user_data, id) = (UserData(user_data), c.id);
        let handler = cb.map(|cb| -> crate::client::ConnectionStateHandler {
            Arc::new(move |change: ConnectionStateChange| {
                let _scope = CallbackScope::enter(id);
                cb(user_data.get(), change.connected, reason_code(change.reason))
            })
        });
        Ok(c.client.on_connection_state_change(handler)?)
    }
}

/// Handler called 120 s before a user-supplied SAS token expires.
#[no_mangle]
pub extern "C" fn ironhub_client_on_new_sastoken_required(
    c: *mut ironhub_client,
    cb: ironhub_sastoken_callback,
    user_data: *mut c_void,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let (user_data, id) = (UserData(user_data), c.id);
        let handler = cb.map(|cb| -> crate::client::SasTokenRequiredHandler { Arc::new(move || {
            let _scope = CallbackScope::enter(id);
            cb(user_data.get())
        }) });
        Ok(c.client.on_new_sastoken_required(handler)?)
    }
}

/// Handler for background errors: `kind` is the result code the error maps to, `message` its text.
#[no_mangle]
pub extern "C" fn ironhub_client_on_background_exception(
    c: *mut ironhub_client,
    cb: ironhub_background_exception_callback,
    user_data: *mut c_void,
) -> ironhub_result {
    ffi_fallible! {
        let c = arg_ref(c, "c")?;
        let (user_data, id) = (UserData(user_data), c.id);
        let handler = cb.map(|cb| -> crate::client::BackgroundExceptionHandler {
            Arc::new(move |e: crate::error::Error| {
                let _scope = CallbackScope::enter(id);
                let text = lend(&e.to_string());
                cb(user_data.get(), result_code(e.kind()), text.as_ptr());
            })
        });
        Ok(c.client.on_background_exception(handler)?)
    }
}
