//! The synchronous facade: every async operation of [`crate::Client`] as a blocking call, run on
//! ironhub's one shared runtime (created lazily; any number of clients share it). Safe to call
//! from any thread, including handlers (they run on dispatcher threads, not on the runtime).

#[cfg(feature = "service")]
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::client::{
    BackgroundExceptionHandler, ConnectionStateHandler, MessageHandler, MethodRequestHandler, SasTokenRequiredHandler,
    SendCallback, SendFuture, TwinPatchHandler,
};
use crate::error::Result;
use crate::message::{Message, MethodRequest, MethodResponse, X509};
use crate::options::ClientOptions;
use crate::runtime::block_on;
use crate::Identity;

/// How a blocking send waits for its PUBACK after writing the only publish in flight from its own
/// thread (`docs/architecture.md`, "The sync caller reads its own PUBACK").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncWait {
    /// Park at once; the network loop reads the PUBACK and wakes the thread.
    Park,
    /// Re-read the socket for a short budget, then park.
    Spin,
    /// Block in ppoll(2) on the socket, then park.
    Poll,
    /// The way that has been quickest lately on that connection (the default).
    Adaptive,
}

/// Sets how this thread's blocking sends wait for their PUBACK (a tuning and diagnostic knob;
/// `IRONHUB_SYNC_WAIT=park|spin|poll|adaptive` sets the process default, adaptive otherwise).
pub fn set_sync_wait(wait: SyncWait) {
    use crate::transport::reader::{set_way, Mode};
    set_way(match wait {
        SyncWait::Park => Some(Mode::Park),
        SyncWait::Spin => Some(Mode::Spin),
        SyncWait::Poll => Some(Mode::Poll),
        SyncWait::Adaptive => None,
    });
}

/// Blocking device/module client (cheap to clone; clones are the same client).
#[derive(Clone, Debug)]
pub struct Client {
    inner: crate::Client,
}

macro_rules! blocking {
    ($self:ident, |$c:ident| $body:expr) => {{
        let $c = $self.inner.clone();
        block_on(async move { $body.await })
    }};
}

impl Client {
    /// Wraps an async client.
    pub fn from_async(inner: crate::Client) -> Client {
        Client { inner }
    }

    /// The async client behind this one.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    pub fn create_from_connection_string(connection_string: &str, options: ClientOptions) -> Result<Client> {
        crate::Client::create_from_connection_string(connection_string, options).map(Client::from_async)
    }

    pub fn create_from_sastoken(sastoken: &str, options: ClientOptions) -> Result<Client> {
        crate::Client::create_from_sastoken(sastoken, options).map(Client::from_async)
    }

    pub fn create_from_symmetric_key(symmetric_key: &str, hostname: &str, device_id: &str, options: ClientOptions) -> Result<Client> {
        crate::Client::create_from_symmetric_key(symmetric_key, hostname, device_id, options).map(Client::from_async)
    }

    pub fn create_from_x509_certificate(
        x509: X509,
        hostname: &str,
        device_id: &str,
        module_id: Option<&str>,
        options: ClientOptions,
    ) -> Result<Client> {
        crate::Client::create_from_x509_certificate(x509, hostname, device_id, module_id, options).map(Client::from_async)
    }

    #[cfg(feature = "edge")]
    pub fn create_from_edge_environment(options: ClientOptions) -> Result<Client> {
        block_on(crate::Client::create_from_edge_environment(options)).map(Client::from_async)
    }

    pub fn identity(&self) -> &Identity {
        self.inner.identity()
    }

    pub fn is_module(&self) -> bool {
        self.inner.is_module()
    }

    pub fn options(&self) -> &ClientOptions {
        self.inner.options()
    }

    pub fn connected(&self) -> bool {
        self.inner.connected()
    }

    pub fn connect(&self) -> Result<()> {
        blocking!(self, |c| c.connect())
    }

    pub fn disconnect(&self) -> Result<()> {
        blocking!(self, |c| c.disconnect())
    }

    pub fn shutdown(&self) -> Result<()> {
        blocking!(self, |c| c.shutdown())
    }

    pub fn update_sastoken(&self, sastoken: &str) -> Result<()> {
        let t = sastoken.to_string();
        blocking!(self, |c| c.update_sastoken(&t))
    }

    /// Validates and queues on the calling thread, then parks it until the PUBACK: the network
    /// loop completes the send and wakes this thread directly (no runtime task in between).
    pub fn send_message(&self, message: &Message) -> Result<()> {
        crate::runtime::wait(self.inner.send_message(message))
    }

    pub fn send_message_to_output(&self, message: &Message, output_name: &str) -> Result<()> {
        crate::runtime::wait(self.inner.send_message_to_output(message, output_name))
    }

    /// Queues without waiting; the returned future (await it, or `wait_send`) yields the PUBACK outcome.
    pub fn send_message_pipelined(&self, message: &Message) -> SendFuture {
        self.inner.send_message_pipelined(message)
    }

    /// Blocks on a future returned by `send_message_pipelined`.
    pub fn wait_send(fut: SendFuture) -> Result<()> {
        crate::runtime::wait(fut)
    }

    pub fn send_message_with_callback(&self, message: &Message, output_name: Option<&str>, callback: SendCallback) {
        self.inner.send_message_with_callback(message, output_name, callback)
    }

    pub fn get_twin(&self) -> Result<Value> {
        blocking!(self, |c| c.get_twin())
    }

    pub fn patch_twin_reported_properties(&self, patch: &Value) -> Result<()> {
        let p = patch.clone();
        blocking!(self, |c| c.patch_twin_reported_properties(&p))
    }

    pub fn send_method_response(&self, response: &MethodResponse) -> Result<()> {
        let r = response.clone();
        blocking!(self, |c| c.send_method_response(&r))
    }

    pub fn invoke_method(&self, method_params: &Value, device_id: &str, module_id: Option<&str>) -> Result<Value> {
        let (p, d, m) = (method_params.clone(), device_id.to_string(), module_id.map(str::to_string));
        blocking!(self, |c| c.invoke_method(&p, &d, m.as_deref()))
    }

    pub fn on_message_received(&self, handler: Option<MessageHandler>) -> Result<()> {
        blocking!(self, |c| c.on_message_received(handler))
    }

    pub fn on_method_request_received(&self, handler: Option<MethodRequestHandler>) -> Result<()> {
        blocking!(self, |c| c.on_method_request_received(handler))
    }

    pub fn on_twin_desired_properties_patch_received(&self, handler: Option<TwinPatchHandler>) -> Result<()> {
        blocking!(self, |c| c.on_twin_desired_properties_patch_received(handler))
    }

    pub fn on_connection_state_change(&self, handler: Option<ConnectionStateHandler>) -> Result<()> {
        self.inner.on_connection_state_change(handler)
    }

    pub fn on_new_sastoken_required(&self, handler: Option<SasTokenRequiredHandler>) -> Result<()> {
        self.inner.on_new_sastoken_required(handler)
    }

    pub fn on_background_exception(&self, handler: Option<BackgroundExceptionHandler>) -> Result<()> {
        self.inner.on_background_exception(handler)
    }

    /// `receive_message(block=True, timeout=None)`: `timeout` `Some(ZERO)` = block=False.
    pub fn receive_message(&self, timeout: Option<Duration>) -> Result<Option<Message>> {
        blocking!(self, |c| c.receive_message(timeout))
    }

    pub fn receive_message_on_input(&self, input_name: &str, timeout: Option<Duration>) -> Result<Option<Message>> {
        let i = input_name.to_string();
        blocking!(self, |c| c.receive_message_on_input(&i, timeout))
    }

    pub fn receive_method_request(&self, method_name: Option<&str>, timeout: Option<Duration>) -> Result<Option<MethodRequest>> {
        let n = method_name.map(str::to_string);
        blocking!(self, |c| c.receive_method_request(n.as_deref(), timeout))
    }

    pub fn receive_twin_desired_properties_patch(&self, timeout: Option<Duration>) -> Result<Option<Value>> {
        blocking!(self, |c| c.receive_twin_desired_properties_patch(timeout))
    }
}

/// Blocking service client.
#[cfg(feature = "service")]
#[derive(Clone, Debug)]
pub struct ServiceClient {
    inner: Arc<crate::service::ServiceClient>,
}

#[cfg(feature = "service")]
impl ServiceClient {
    pub fn from_connection_string(connection_string: &str, options: crate::service::ServiceOptions) -> Result<ServiceClient> {
        crate::service::ServiceClient::from_connection_string(connection_string, options)
            .map(|s| ServiceClient { inner: Arc::new(s) })
    }

    pub fn get_twin(&self, device_id: &str, module_id: Option<&str>) -> Result<Value> {
        let (s, d, m) = (self.inner.clone(), device_id.to_string(), module_id.map(str::to_string));
        block_on(async move { s.get_twin(&d, m.as_deref()).await })
    }

    pub fn update_twin(&self, device_id: &str, module_id: Option<&str>, patch: &Value, etag: Option<&str>) -> Result<Value> {
        let (s, d, m, p, e) = (self.inner.clone(), device_id.to_string(), module_id.map(str::to_string), patch.clone(), etag.map(str::to_string));
        block_on(async move { s.update_twin(&d, m.as_deref(), &p, e.as_deref()).await })
    }

    pub fn replace_twin(&self, device_id: &str, module_id: Option<&str>, twin: &Value, etag: Option<&str>) -> Result<Value> {
        let (s, d, m, t, e) = (self.inner.clone(), device_id.to_string(), module_id.map(str::to_string), twin.clone(), etag.map(str::to_string));
        block_on(async move { s.replace_twin(&d, m.as_deref(), &t, e.as_deref()).await })
    }

    pub fn invoke_method(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        request: &crate::service::DirectMethodRequest,
    ) -> Result<crate::service::DirectMethodResult> {
        let (s, d, m, r) = (self.inner.clone(), device_id.to_string(), module_id.map(str::to_string), request.clone());
        block_on(async move { s.invoke_method(&d, m.as_deref(), &r).await })
    }

    /// Any other call (`/emulator/...` control API, registry): method, path with query, JSON body.
    pub fn request(&self, method: &str, path_and_query: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let (s, m, p, b) = (self.inner.clone(), method.to_string(), path_and_query.to_string(), body.cloned());
        block_on(async move { s.request(&m, &p, b.as_ref()).await })
    }
}
