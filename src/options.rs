//! Client options: every keyword argument of python-surface.md with its default and its
//! validation, plus ironhub's own bounds (`operation_timeout`) and ports (`mqtt_port`,
//! `https_port`) so tests can point a client at an emulator on ephemeral ports.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Proxy kind of `ProxyOptions(proxy_type=...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyType {
    Http,
    Socks4,
    Socks5,
}

impl ProxyType {
    /// Parses "HTTP", "SOCKS4", "SOCKS5" (case-insensitive), as the Python SDK accepts them.
    pub fn parse(s: &str) -> Result<ProxyType> {
        match s.to_ascii_uppercase().as_str() {
            "HTTP" => Ok(ProxyType::Http),
            "SOCKS4" => Ok(ProxyType::Socks4),
            "SOCKS5" => Ok(ProxyType::Socks5),
            _ => Err(Error::invalid(format!(
                "invalid proxy type {s:?}: expected HTTP, SOCKS4 or SOCKS5"
            ))),
        }
    }
}

/// `ProxyOptions(proxy_type, proxy_addr, proxy_port, proxy_username=None, proxy_password=None)`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyOptions {
    pub proxy_type: ProxyType,
    pub proxy_addr: String,
    pub proxy_port: u16,
    pub proxy_username: Option<String>,
    pub proxy_password: Option<String>,
}

impl std::fmt::Debug for ProxyOptions {
    // The password is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("proxy_type", &self.proxy_type)
            .field("proxy_addr", &self.proxy_addr)
            .field("proxy_port", &self.proxy_port)
            .field("proxy_username", &self.proxy_username)
            .field("proxy_password", &self.proxy_password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Keyword options of every `create_from_*` factory.
///
/// Fields that some factories refuse (`sastoken_ttl`, `gateway_hostname`,
/// `server_verification_cert`) are `Option` so the factory can tell "set" from "default".
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// PEM text of trusted root(s); `None` → the public web PKI roots.
    pub server_verification_cert: Option<String>,
    /// Host actually connected to; username and SAS resource still use the hub hostname.
    pub gateway_hostname: Option<String>,
    /// MQTT over WebSockets (`wss://host:https_port/$iothub/websocket`).
    pub websockets: bool,
    /// OpenSSL-style cipher list (`:`-separated); empty = rustls defaults.
    pub cipher: String,
    /// Appended to the user agent; a `dtmi:` value is a Plug and Play model id instead.
    pub product_info: String,
    pub proxy_options: Option<ProxyOptions>,
    /// Lifetime of generated SAS tokens in seconds; `None` = 3600.
    pub sastoken_ttl: Option<u64>,
    /// MQTT keep-alive in seconds, 1..=1740.
    pub keep_alive: u64,
    pub auto_connect: bool,
    pub connection_retry: bool,
    /// Seconds between reconnect attempts (> 0); the actual wait backs off exponentially
    /// from this value up to `max(interval, 60 s)`... never below the interval.
    pub connection_retry_interval: u64,
    pub ensure_desired_properties: bool,
    /// ironhub: bound on every blocking operation (default 240 s).
    pub operation_timeout: Duration,
    /// ironhub: MQTT/TLS port (default 8883).
    pub mqtt_port: u16,
    /// ironhub: HTTPS/WebSocket port (default 443).
    pub https_port: u16,
    /// ironhub: upper bound of the reconnect backoff (exponential from `connection_retry_interval`,
    /// full jitter); default 60 s.
    pub retry_max_delay: Duration,
    /// ironhub: stop reconnecting after an outage this long (connection state reason
    /// `RetryExpired`); `None` = retry forever (default).
    pub retry_give_up_after: Option<Duration>,
    /// ironhub: telemetry messages queued or in flight at once; one more is `Error::QueueFull`.
    pub max_queued_messages: usize,
    /// ironhub: bytes (topic + payload) of telemetry queued or in flight at once.
    pub max_queued_bytes: usize,
    /// ironhub: a directory for the persistent offline queue. With it, telemetry sent while the
    /// client is not connected is appended to `<dir>/<client id>.queue` (characters other than
    /// ASCII letters, digits and `-` become `_`: `dev1/mod1` → `dev1_mod1.queue`), fsync'd, and
    /// the send returns `Ok` at once; a torn last record (crash mid-append) is ignored at load.
    /// The queue survives a crash or kill -9: the next client created with the same directory and
    /// identity connects by itself (`auto_connect`) and sends it, in order, then empties the file.
    /// Delivery is at least once (a crash between the hub's PUBACK and the file's rewrite resends
    /// those). Bounded by `max_queued_messages` / `max_queued_bytes` (`Error::QueueFull`).
    /// `None` = in memory only.
    pub offline_store: Option<PathBuf>,
}

pub const DEFAULT_SASTOKEN_TTL: u64 = ironhub_protocol::sas::DEFAULT_TTL_SECS;
pub const MAX_KEEP_ALIVE: u64 = ironhub_protocol::limits::MAX_KEEP_ALIVE_SECS;
pub const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(60);
/// A small device: a few minutes of one message a second, buffered.
pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 1_000;
/// Room for 16 messages of the maximum size, or a thousand small ones.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            server_verification_cert: None,
            gateway_hostname: None,
            websockets: false,
            cipher: String::new(),
            product_info: String::new(),
            proxy_options: None,
            sastoken_ttl: None,
            keep_alive: 60,
            auto_connect: true,
            connection_retry: true,
            connection_retry_interval: 10,
            ensure_desired_properties: true,
            operation_timeout: Duration::from_secs(240),
            mqtt_port: 8883,
            https_port: 443,
            retry_max_delay: DEFAULT_RETRY_MAX_DELAY,
            retry_give_up_after: None,
            max_queued_messages: DEFAULT_MAX_QUEUED_MESSAGES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            offline_store: None,
        }
    }
}

impl ClientOptions {
    /// Checks every value; the factories call it, wrappers may call it early.
    pub fn validate(&self) -> Result<()> {
        if self.keep_alive == 0 || self.keep_alive > MAX_KEEP_ALIVE {
            return Err(Error::invalid(format!(
                "keep_alive must be between 1 and {MAX_KEEP_ALIVE} seconds, got {}",
                self.keep_alive
            )));
        }
        if self.connection_retry_interval == 0 {
            return Err(Error::invalid("connection_retry_interval must be greater than 0"));
        }
        if self.sastoken_ttl == Some(0) {
            return Err(Error::invalid("sastoken_ttl must be greater than 0"));
        }
        if self.operation_timeout.is_zero() {
            return Err(Error::invalid("operation_timeout must be greater than 0"));
        }
        if self.retry_max_delay.is_zero() {
            return Err(Error::invalid("retry_max_delay must be greater than 0"));
        }
        if self.retry_give_up_after.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid("retry_give_up_after must be greater than 0"));
        }
        if self.max_queued_messages == 0 {
            return Err(Error::invalid("max_queued_messages must be greater than 0"));
        }
        if self.max_queued_bytes == 0 {
            return Err(Error::invalid("max_queued_bytes must be greater than 0"));
        }
        if self.mqtt_port == 0 || self.https_port == 0 {
            return Err(Error::invalid("ports must be non-zero"));
        }
        if let Some(g) = &self.gateway_hostname {
            if g.trim().is_empty() {
                return Err(Error::invalid("gateway_hostname must not be empty"));
            }
        }
        if let Some(p) = &self.proxy_options {
            crate::validate::proxy_options(p)?;
        }
        crate::validate::websockets(self.websockets)?;
        crate::validate::cipher(&self.cipher)?;
        Ok(())
    }

    pub(crate) fn sastoken_ttl_secs(&self) -> u64 {
        self.sastoken_ttl.unwrap_or(DEFAULT_SASTOKEN_TTL)
    }
}
