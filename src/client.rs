//! The async client: one type for device and module identities (`Client`), its factories
//! (`create_from_*`), operations, handlers and the deprecated receive inboxes. The engine behind
//! it lives in `session` (state, operations) and `transport::mqtt` (the network loop); this
//! module only builds identities and forwards.
//!
//! Every operation may be called from any thread, including from inside any of the client's
//! handlers (see `in_handler`): nothing waits for the handler that called it.
//!
//! Futures may be awaited on any tokio runtime (or none, through `blocking`): the network work
//! itself runs on ironhub's shared runtime.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::auth::{self, Authenticator, Credential, Identity};
use crate::error::{Error, Result};
use crate::message::{Message, MethodRequest, MethodResponse, X509};
use crate::options::ClientOptions;
use crate::session::Session;

pub use crate::handlers::{
    BackgroundExceptionHandler, ConnectionStateHandler, MessageHandler, MethodRequestHandler, SasTokenRequiredHandler,
    SendCallback, SendFuture, TwinPatchHandler,
};

/// An IoT Hub device or module client (cheap to clone; all clones are the same client).
/// Dropping the last clone shuts the client down (in-flight work ends with `OperationCancelled`).
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

/// Owner of the session: its drop is "the application let go of the client".
struct Handle {
    session: Arc<Session>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.session.shutdown_now();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("identity", self.identity()).finish()
    }
}

impl Client {
    fn from_parts(identity: Identity, auth: Authenticator, options: ClientOptions) -> Result<Client> {
        options.validate()?;
        let session = Session::new(identity, auth, options)?;
        Ok(Client { handle: Arc::new(Handle { session }) })
    }

    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.handle.session
    }

    /// `create_from_connection_string(cs, **kw)`: device or module (per `ModuleId=`), symmetric key
    /// or `SharedAccessSignature=`. `x509=true` → use `create_from_x509_certificate`; the gateway
    /// comes from `GatewayHostName=`, so the `gateway_hostname` option is refused.
    pub fn create_from_connection_string(connection_string: &str, mut options: ClientOptions) -> Result<Client> {
        let cs = ironhub_protocol::connection_string::ConnectionString::parse(connection_string)?;
        if cs.x509 {
            return Err(Error::invalid(
                "x509 connection strings are not supported here: use create_from_x509_certificate",
            ));
        }
        if options.gateway_hostname.is_some() {
            return Err(Error::invalid("gateway_hostname is not allowed: use GatewayHostName= in the connection string"));
        }
        let Some(device_id) = cs.device_id.clone().filter(|d| !d.is_empty()) else {
            return Err(Error::invalid("Invalid Connection String - a device connection string needs DeviceId"));
        };
        let identity = Identity { hostname: cs.host_name.clone(), device_id, module_id: cs.module_id.clone() };
        options.gateway_hostname = cs.gateway_host_name.clone();
        let auth = if let Some(sig) = &cs.shared_access_signature {
            if options.sastoken_ttl.is_some() {
                return Err(Error::invalid("sastoken_ttl is not allowed with a SharedAccessSignature"));
            }
            Authenticator::from_token(identity.clone(), sig)?
        } else {
            let key = cs.shared_access_key.clone().unwrap_or_default();
            ironhub_protocol::sas::decode_key(&key)?;
            let ttl = options.sastoken_ttl_secs();
            Authenticator::new(identity.clone(), Credential::SymmetricKey { key }, ttl)
        };
        Client::from_parts(identity, auth, options)
    }

    /// `create_from_sastoken(token, **kw)`: the token is not renewable (`on_new_sastoken_required`
    /// fires 120 s before expiry; call `update_sastoken`). `sastoken_ttl` is refused.
    pub fn create_from_sastoken(sastoken: &str, options: ClientOptions) -> Result<Client> {
        if options.sastoken_ttl.is_some() {
            return Err(Error::invalid("sastoken_ttl is not allowed with create_from_sastoken"));
        }
        let identity = auth::identity_from_token(sastoken)?;
        let auth = Authenticator::from_token(identity.clone(), sastoken)?;
        Client::from_parts(identity, auth, options)
    }

    /// `create_from_symmetric_key(symmetric_key, hostname, device_id, **kw)` (device identities).
    pub fn create_from_symmetric_key(
        symmetric_key: &str,
        hostname: &str,
        device_id: &str,
        options: ClientOptions,
    ) -> Result<Client> {
        require("hostname", hostname)?;
        require("device_id", device_id)?;
        ironhub_protocol::sas::decode_key(symmetric_key)?;
        let identity = Identity { hostname: hostname.to_string(), device_id: device_id.to_string(), module_id: None };
        let ttl = options.sastoken_ttl_secs();
        let auth = Authenticator::new(identity.clone(), Credential::SymmetricKey { key: symmetric_key.to_string() }, ttl);
        Client::from_parts(identity, auth, options)
    }

    /// `create_from_x509_certificate(x509, hostname, device_id[, module_id], **kw)`.
    pub fn create_from_x509_certificate(
        x509: X509,
        hostname: &str,
        device_id: &str,
        module_id: Option<&str>,
        options: ClientOptions,
    ) -> Result<Client> {
        require("hostname", hostname)?;
        require("device_id", device_id)?;
        if let Some(m) = module_id {
            require("module_id", m)?;
        }
        crate::validate::sastoken_ttl_refused(&options, "an X.509 certificate")?;
        // Read the files now: a bad path or key is a bad argument, not a later connection failure.
        crate::transport::tls::load_client_identity(&x509)?;
        let identity = Identity {
            hostname: hostname.to_string(),
            device_id: device_id.to_string(),
            module_id: module_id.map(str::to_string),
        };
        let auth = Authenticator::new(identity.clone(), Credential::X509(x509), 0);
        Client::from_parts(identity, auth, options)
    }

    /// `create_from_edge_environment(**kw)` (modules in IoT Edge): identity, gateway, trust bundle
    /// and token signing from the Edge environment. `server_verification_cert` and
    /// `gateway_hostname` are refused.
    #[cfg(feature = "edge")]
    pub async fn create_from_edge_environment(mut options: ClientOptions) -> Result<Client> {
        if options.server_verification_cert.is_some() || options.gateway_hostname.is_some() {
            return Err(Error::invalid(
                "server_verification_cert and gateway_hostname are not allowed with create_from_edge_environment",
            ));
        }
        let env = crate::runtime::handle()
            .spawn(auth::edge::from_environment())
            .await
            .map_err(|_| Error::Client("IoT Edge environment lookup was interrupted".into()))??;
        options.server_verification_cert = Some(env.server_verification_cert);
        options.gateway_hostname = Some(env.gateway_hostname);
        let ttl = options.sastoken_ttl_secs();
        let auth = Authenticator::new(env.identity.clone(), env.credential, ttl);
        let client = Client::from_parts(env.identity, auth, options)?;
        client.session().set_edge(true);
        Ok(client)
    }

    /// Who this client is.
    pub fn identity(&self) -> &Identity {
        &self.session().identity
    }

    /// True for a module identity.
    pub fn is_module(&self) -> bool {
        self.identity().module_id.is_some()
    }

    /// The options the client was created with.
    pub fn options(&self) -> &ClientOptions {
        &self.session().options
    }

    /// True on a thread currently running one of this client's handlers (or callbacks), and in a
    /// blocking call made from one. `ironhub_client_free` uses it to refuse a free from a callback.
    pub fn in_handler(&self) -> bool {
        self.session().in_handler()
    }

    /// `connected`: true while an MQTT connection is up.
    pub fn connected(&self) -> bool {
        self.session().is_connected()
    }

    /// Connects (CONNACK). Errors: Credential, ConnectionFailed, OperationTimeout (no CONNACK in 60 s), ShutDown.
    pub async fn connect(&self) -> Result<()> {
        self.session().clone().run(|s| async move { s.connect().await }).await
    }

    /// Disconnects; in-flight operations end with `OperationCancelled`.
    pub async fn disconnect(&self) -> Result<()> {
        self.session().clone().run(|s| async move { s.disconnect().await }).await
    }

    /// Disconnects and stops everything; afterwards every call fails with `ShutDown`. Once it
    /// returns no handler of the client runs again, except the one that called it, if any (a
    /// handler may call it: it returns without waiting for that handler).
    pub async fn shutdown(&self) -> Result<()> {
        self.session().clone().run(|s| async move { s.shutdown().await }).await
    }

    /// Replaces the SAS token of a `create_from_sastoken` client and re-authenticates if connected.
    pub async fn update_sastoken(&self, sastoken: &str) -> Result<()> {
        let token = sastoken.to_string();
        self.session().clone().run(move |s| async move { s.update_sastoken(&token).await }).await
    }

    /// Sends telemetry and waits for its PUBACK (a message with `output_name` set goes to that output).
    pub async fn send_message(&self, message: &Message) -> Result<()> {
        self.send_message_pipelined(message).await
    }

    /// `send_message_to_output(message, output_name)`.
    pub async fn send_message_to_output(&self, message: &Message, output_name: &str) -> Result<()> {
        require("output_name", output_name)?;
        let mut m = message.clone();
        m.output_name = Some(output_name.to_string());
        self.send_message_pipelined(&m).await
    }

    /// Pipelined send: validates and (when connected) queues the message at once, in call order,
    /// without waiting for earlier PUBACKs; the future resolves at this message's PUBACK.
    pub fn send_message_pipelined(&self, message: &Message) -> SendFuture {
        if let Err(e) = crate::validate::message(message) {
            return Box::pin(std::future::ready(Err(e)));
        }
        self.session().clone().send_pipelined(message)
    }

    /// Callback form of the pipelined send (for the C ABI): `callback` runs exactly once, on the
    /// client's dispatcher, with the outcome, also when the client is disconnected, shut down or
    /// dropped first (`OperationCancelled`). `output_name` overrides the message's.
    pub fn send_message_with_callback(&self, message: &Message, output_name: Option<&str>, callback: SendCallback) {
        let mut m = message.clone();
        if let Some(o) = output_name {
            m.output_name = Some(o.to_string());
        }
        if let Err(e) = crate::validate::message(&m) {
            return callback(Err(e));
        }
        self.session().clone().send_with_callback(&m, callback)
    }

    /// `get_twin()` → `{"desired": {..., "$version": N}, "reported": {..., "$version": M}}`.
    pub async fn get_twin(&self) -> Result<Value> {
        self.session().clone().run(|s| async move { s.get_twin().await }).await
    }

    /// `patch_twin_reported_properties(patch)`; status ≥ 300 → `Error::ServiceFailure`.
    pub async fn patch_twin_reported_properties(&self, patch: &Value) -> Result<()> {
        let patch = patch.clone();
        self.session().clone().run(move |s| async move { s.patch_reported(&patch).await }).await
    }

    /// Answers a method request (any thread, any time after it arrived).
    pub async fn send_method_response(&self, response: &MethodResponse) -> Result<()> {
        let r = response.clone();
        self.session().clone().run(move |s| async move { s.send_method_response(&r).await }).await
    }

    /// `invoke_method(method_params, device_id, module_id=None)` through the Edge hub (Edge modules
    /// only): `method_params` = `{"methodName", "payload", "responseTimeoutInSeconds", "connectTimeoutInSeconds"}`;
    /// returns `{"status": int, "payload": ...}`.
    pub async fn invoke_method(&self, method_params: &Value, device_id: &str, module_id: Option<&str>) -> Result<Value> {
        let (p, d, m) = (method_params.clone(), device_id.to_string(), module_id.map(str::to_string));
        self.session().clone().run(move |s| async move { s.invoke_method(&p, &d, m.as_deref()).await }).await
    }

    /// Sets or clears `on_message_received`; setting subscribes (auto-connecting), clearing unsubscribes.
    /// Once this returns with `None`, the old handler is not running and never runs again.
    pub async fn on_message_received(&self, handler: Option<MessageHandler>) -> Result<()> {
        self.session().clone().run(move |s| async move { s.set_message_handler(handler).await }).await
    }

    /// Sets or clears `on_method_request_received` (subscribes / unsubscribes).
    pub async fn on_method_request_received(&self, handler: Option<MethodRequestHandler>) -> Result<()> {
        self.session().clone().run(move |s| async move { s.set_method_handler(handler).await }).await
    }

    /// Sets or clears `on_twin_desired_properties_patch_received` (subscribes / unsubscribes).
    pub async fn on_twin_desired_properties_patch_received(&self, handler: Option<TwinPatchHandler>) -> Result<()> {
        self.session().clone().run(move |s| async move { s.set_twin_patch_handler(handler).await }).await
    }

    /// Sets or clears `on_connection_state_change`.
    pub fn on_connection_state_change(&self, handler: Option<ConnectionStateHandler>) -> Result<()> {
        self.session().set_connection_state_handler(handler)
    }

    /// Sets or clears `on_new_sastoken_required`.
    pub fn on_new_sastoken_required(&self, handler: Option<SasTokenRequiredHandler>) -> Result<()> {
        self.session().set_sastoken_handler(handler)
    }

    /// Sets or clears `on_background_exception`.
    pub fn on_background_exception(&self, handler: Option<BackgroundExceptionHandler>) -> Result<()> {
        self.session().set_background_exception_handler(handler)
    }

    /// Deprecated `receive_message(block, timeout)` (devices: C2D). `timeout`: `Some(ZERO)` = don't
    /// block, `None` = until a message arrives (or the client is shut down: `ShutDown`).
    pub async fn receive_message(&self, timeout: Option<Duration>) -> Result<Option<Message>> {
        self.session().clone().run(move |s| async move { s.receive_message(None, timeout).await }).await
    }

    /// Deprecated `receive_message_on_input(input_name, block, timeout)` (modules).
    pub async fn receive_message_on_input(&self, input_name: &str, timeout: Option<Duration>) -> Result<Option<Message>> {
        require("input_name", input_name)?;
        let input = input_name.to_string();
        self.session().clone().run(move |s| async move { s.receive_message(Some(input), timeout).await }).await
    }

    /// Deprecated `receive_method_request(method_name=None, block, timeout)`.
    pub async fn receive_method_request(
        &self,
        method_name: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Option<MethodRequest>> {
        let name = method_name.map(str::to_string);
        self.session().clone().run(move |s| async move { s.receive_method_request(name, timeout).await }).await
    }

    /// Deprecated `receive_twin_desired_properties_patch(block, timeout)`.
    pub async fn receive_twin_desired_properties_patch(&self, timeout: Option<Duration>) -> Result<Option<Value>> {
        self.session().clone().run(move |s| async move { s.receive_twin_patch(timeout).await }).await
    }
}

fn require(name: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(format!("{name} must not be empty")));
    }
    Ok(())
}
