//! The handler types of the public API and the per-client handler table. Handlers are looked up
//! when a dispatched job *starts* (never captured when the event arrives), so a handler replaced
//! or cleared in between never runs; `dispatch::SerialQueue::wait_quiet` covers the one that is
//! already running.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::message::{ConnectionStateChange, Message, MethodRequest};

/// `on_message_received(message)`: C2D messages (devices) or input messages (modules, with `input_name`).
pub type MessageHandler = Arc<dyn Fn(Message) + Send + Sync>;
/// `on_method_request_received(method_request)`; answer with `send_method_response`, now or later.
pub type MethodRequestHandler = Arc<dyn Fn(MethodRequest) + Send + Sync>;
/// `on_twin_desired_properties_patch_received(patch)`: the patch with `$version`, or the whole
/// desired document after a reconnect when `ensure_desired_properties` found it moved.
pub type TwinPatchHandler = Arc<dyn Fn(Value) + Send + Sync>;
/// `on_connection_state_change()`, with the new state and its reason.
pub type ConnectionStateHandler = Arc<dyn Fn(ConnectionStateChange) + Send + Sync>;
/// `on_new_sastoken_required()`: a given SAS token expires in 120 s; call `update_sastoken`.
pub type SasTokenRequiredHandler = Arc<dyn Fn() + Send + Sync>;
/// `on_background_exception(exc)`: an error no caller was waiting for.
pub type BackgroundExceptionHandler = Arc<dyn Fn(Error) + Send + Sync>;
/// Completion callback of `send_message_with_callback`: runs exactly once, on the dispatcher.
pub type SendCallback = Box<dyn FnOnce(Result<()>) + Send + 'static>;
/// Future of a pipelined send: resolves at PUBACK (or with the error).
pub type SendFuture = Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;

/// The handlers one client has set.
#[derive(Default)]
pub(crate) struct Handlers {
    pub message: Option<MessageHandler>,
    pub method: Option<MethodRequestHandler>,
    pub twin_patch: Option<TwinPatchHandler>,
    pub connection_state: Option<ConnectionStateHandler>,
    pub sastoken: Option<SasTokenRequiredHandler>,
    pub background: Option<BackgroundExceptionHandler>,
}
