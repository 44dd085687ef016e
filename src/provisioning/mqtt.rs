//! One registration exchange with DPS over MQTT (TLS on `mqtt_port`, or WebSockets on
//! `https_port`): CONNECT with the DPS username and a `registration` SAS token (or a client
//! certificate), SUBSCRIBE to the responses, PUBLISH `iotdps-register`, then
//! `iotdps-get-operationstatus` after each `retry-after` until the operation is assigned or failed.
//! The event loop is polled by this task alone and nothing else runs on it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, MqttOptions, QoS, TlsConfiguration, Transport,
};
use serde_json::{json, Value};

use super::{Attestation, RegistrationResult, Settings};
use crate::error::{Error, Result};
use ironhub_protocol::dps as wire;

/// When the service names no `retry-after` (azure-iot-device's default polling interval).
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// A `retry-after` larger than this is capped: the whole registration is bounded anyway.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);
const CONNACK_TIMEOUT_SECS: u64 = 30;

fn client_version() -> String {
    format!("ironhub/{}", env!("CARGO_PKG_VERSION"))
}

fn mqtt_options(settings: &Settings) -> Result<MqttOptions> {
    let opts = &settings.options;
    let x509 = match &settings.attestation {
        Attestation::X509(x) => Some(x),
        Attestation::SymmetricKey(_) => None,
    };
    let tls = TlsConfiguration::Rustls(crate::transport::tls::client_config(
        opts.server_verification_cert.as_deref(),
        &opts.cipher,
        x509,
    )?);
    // `gateway_hostname` (an on-premises gateway in front of DPS) is where the socket goes.
    let host = opts.gateway_hostname.as_deref().unwrap_or(&settings.provisioning_host);
    let mut mo = if opts.websockets {
        let url = format!("wss://{host}:{}/$iothub/websocket", opts.https_port);
        let mut mo = MqttOptions::new(&settings.registration_id, url, opts.https_port);
        mo.set_transport(Transport::wss_with_config(tls));
        mo
    } else {
        let mut mo = MqttOptions::new(&settings.registration_id, host, opts.mqtt_port);
        mo.set_transport(Transport::tls_with_config(tls));
        mo
    };
    mo.set_keep_alive(Duration::from_secs(opts.keep_alive)).set_clean_session(true);
    if let Some(p) = &opts.proxy_options {
        mo.set_proxy(p.to_mqtt_proxy()?);
    }
    let password = match &settings.attestation {
        Attestation::SymmetricKey(key) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let resource = wire::sas_resource(&settings.id_scope, &settings.registration_id);
            ironhub_protocol::sas::generate_token(
                &resource,
                key,
                Some(wire::REGISTRATION_KEY_NAME),
                now + opts.sastoken_ttl_secs(),
            )?
        }
        Attestation::X509(_) => String::new(),
    };
    mo.set_credentials(wire::username(&settings.id_scope, &settings.registration_id, &client_version()), password);
    Ok(mo)
}

fn connection_error(e: ConnectionError, connected: bool) -> Error {
    match e {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized) => {
            Error::Credential("the provisioning service refused the credentials".into())
        }
        ConnectionError::ConnectionRefused(code) => Error::ConnectionFailed(format!("the provisioning service refused the connection ({code:?})")),
        ConnectionError::NetworkTimeout => Error::OperationTimeout(format!("no CONNACK within {CONNACK_TIMEOUT_SECS} s")),
        // rumqttc's errors name hosts and I/O causes, never the token.
        other if connected => Error::ConnectionDropped(format!("lost the connection to the provisioning service: {other}")),
        other => Error::ConnectionFailed(format!("cannot connect to the provisioning service: {other}")),
    }
}

struct Exchange {
    client: AsyncClient,
    events: EventLoop,
    connected: bool,
    next_rid: u64,
}

impl Exchange {
    async fn next(&mut self) -> Result<Incoming> {
        loop {
            match self.events.poll().await {
                Ok(Event::Incoming(packet)) => {
                    self.connected |= matches!(packet, Incoming::ConnAck(_));
                    return Ok(packet);
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => return Err(connection_error(e, self.connected)),
            }
        }
    }

    /// Publishes to `topic` (built from a fresh request id) and waits for the response with that id.
    async fn request(&mut self, topic: impl FnOnce(&str) -> String, body: Vec<u8>) -> Result<(wire::Response, Value)> {
        self.next_rid += 1;
        let rid = self.next_rid.to_string();
        self.client
            .publish(topic(&rid), QoS::AtLeastOnce, false, body)
            .await
            .map_err(|e| Error::ConnectionDropped(format!("cannot queue the request: {e}")))?;
        loop {
            if let Incoming::Publish(p) = self.next().await? {
                let Some(response) = wire::parse_response_topic(&p.topic) else { continue };
                if response.request_id == rid {
                    let body = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    return Ok((response, body));
                }
            }
        }
    }
}

fn service_message(body: &Value) -> String {
    let code = body.get("errorCode").map(|c| c.to_string());
    let message = body.get("message").and_then(Value::as_str).unwrap_or("no details");
    match code {
        Some(code) => format!("{code}: {message}"),
        None => message.to_owned(),
    }
}

pub(super) async fn register(settings: &Settings, payload: Option<Value>) -> Result<RegistrationResult> {
    let (client, mut events) = AsyncClient::new(mqtt_options(settings)?, 10);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_connection_timeout(CONNACK_TIMEOUT_SECS);
    events.set_network_options(net);
    let mut exchange = Exchange { client, events, connected: false, next_rid: 0 };
    let result = run(&mut exchange, settings, payload).await;
    // Best effort: the service drops idle registrations anyway.
    if exchange.client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(event) = exchange.events.poll().await {
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    result
}

async fn run(exchange: &mut Exchange, settings: &Settings, payload: Option<Value>) -> Result<RegistrationResult> {
    exchange
        .client
        .subscribe(wire::RESPONSE_FILTER, QoS::AtLeastOnce)
        .await
        .map_err(|e| Error::ConnectionFailed(format!("cannot queue the subscription: {e}")))?;
    loop {
        match exchange.next().await? {
            Incoming::SubAck(ack) if ack.return_codes.iter().all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)) => break,
            Incoming::SubAck(_) => return Err(Error::Client("the provisioning service refused the response subscription".into())),
            _ => {}
        }
    }
    let body = json!({"registrationId": settings.registration_id, "payload": payload});
    let (mut response, mut answer) =
        exchange.request(wire::register_topic, serde_json::to_vec(&body).unwrap_or_default()).await?;
    let mut operation_id: Option<String> = None;
    loop {
        let wait = response.retry_after.map(Duration::from_secs).unwrap_or(DEFAULT_POLL_INTERVAL).min(MAX_POLL_INTERVAL);
        let status = response.status;
        if (300..429).contains(&status) {
            return Err(Error::ServiceFailure { status, message: service_message(&answer) });
        }
        // 429 and server errors: the same request again after `retry-after`.
        if status < 429 {
            match answer.get("status").and_then(Value::as_str) {
                Some("assigned") => return Ok(RegistrationResult::from_json(&answer)),
                Some("failed") => {
                    let message = answer.pointer("/registrationState/errorMessage").and_then(Value::as_str).unwrap_or("registration failed");
                    return Err(Error::ServiceFailure { status, message: message.to_owned() });
                }
                Some("assigning") => operation_id = answer.get("operationId").and_then(Value::as_str).map(str::to_owned),
                other => return Err(Error::Client(format!("the provisioning service answered an unknown status {other:?}"))),
            }
        }
        sleep_polling(exchange, wait).await?;
        (response, answer) = match &operation_id {
            Some(op) => exchange.request(|rid| wire::operation_status_topic(rid, op), Vec::new()).await?,
            None => exchange.request(wire::register_topic, serde_json::to_vec(&body).unwrap_or_default()).await?,
        };
    }
}

/// Waits `wait` while still polling the event loop (keep-alive, a dropped connection).
async fn sleep_polling(exchange: &mut Exchange, wait: Duration) -> Result<()> {
    let sleep = tokio::time::sleep(wait);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return Ok(()),
            next = exchange.next() => { next?; }
        }
    }
}
