//! One registration exchange with DPS over MQTT (TLS on `mqtt_port`, or WebSockets on
//! `https_port`), on the hub link's own connector (`transport::connector`: DNS, the proxy tunnel of
//! any type, TLS, the WebSocket upgrade, CONNECT/CONNACK) and MQTT codec (rumqttc's `mqttbytes`):
//! CONNECT with the DPS username and a `registration` SAS token (or a client certificate),
//! SUBSCRIBE to the responses, PUBLISH `iotdps-register`, then `iotdps-get-operationstatus` after
//! each `retry-after` until the operation is assigned or failed. This task alone reads and writes
//! the connection, pinging within `keep_alive` while it waits.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use rumqttc::{ConnectReturnCode, SubscribeReasonCode};
use serde_json::{json, Value};

use super::{Attestation, RegistrationResult, Settings};
use crate::error::{Error, Result};
use crate::transport::connector::{self, ConnectFailure, ConnectParams, Stream};
use ironhub_protocol::dps as wire;

/// When the service names no `retry-after` (azure-iot-device's default polling interval).
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// A `retry-after` larger than this is capped: the whole registration is bounded anyway.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);
const CONNACK_TIMEOUT_SECS: u64 = 30;
/// DPS answers are a few KB of JSON; anything near this is not DPS.
const MAX_INCOMING: usize = 256 * 1024;

fn client_version() -> String {
    format!("ironhub/{}", env!("CARGO_PKG_VERSION"))
}

fn connect_params(settings: &Settings) -> Result<ConnectParams> {
    let opts = &settings.options;
    let x509 = match &settings.attestation {
        Attestation::X509(x) => Some(x),
        Attestation::SymmetricKey(_) => None,
    };
    let tls = crate::transport::tls::client_config(opts.server_verification_cert.as_deref(), &opts.cipher, x509)?;
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
    Ok(ConnectParams {
        // `gateway_hostname` (an on-premises gateway in front of DPS) is where the socket goes.
        host: opts.gateway_hostname.clone().unwrap_or_else(|| settings.provisioning_host.clone()),
        client_id: settings.registration_id.clone(),
        username: wire::username(&settings.id_scope, &settings.registration_id, &client_version()),
        password,
        options: opts.clone(),
        tls,
        max_incoming: MAX_INCOMING,
    })
}

fn connect_error(e: ConnectFailure) -> Error {
    match e {
        ConnectFailure::Refused(ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized) => {
            Error::Credential("the provisioning service refused the credentials".into())
        }
        ConnectFailure::Refused(code) => Error::ConnectionFailed(format!("the provisioning service refused the connection ({code:?})")),
        ConnectFailure::Timeout => Error::OperationTimeout(format!("no CONNACK within {CONNACK_TIMEOUT_SECS} s")),
        // The connector's errors name hosts, proxies and I/O causes, never the token.
        ConnectFailure::Io(m) => Error::ConnectionFailed(format!("cannot connect to the provisioning service: {m}")),
    }
}

fn dropped(e: impl std::fmt::Display) -> Error {
    Error::ConnectionDropped(format!("lost the connection to the provisioning service: {e}"))
}

struct Exchange {
    stream: Stream,
    /// Bytes read and not yet parsed (the connector hands over what followed the CONNACK).
    read: BytesMut,
    keep_alive: Duration,
    last_write: Instant,
    next_pkid: u16,
    next_rid: u64,
}

impl Exchange {
    async fn write(&mut self, packet: Packet) -> Result<()> {
        let mut out = BytesMut::new();
        packet
            .write(&mut out, MAX_INCOMING)
            .map_err(|e| Error::Client(format!("cannot encode the MQTT packet: {e:?}")))?;
        self.stream.write_all(out.freeze()).await.map_err(dropped)?;
        self.last_write = Instant::now();
        Ok(())
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.next_pkid
    }

    /// The next packet from the service, or None once `until` passes first; acknowledges its
    /// QoS 1 publishes and pings when `keep_alive` passes without a write. Only the read is ever
    /// cancelled (it is cancel-safe), never a write half done.
    async fn next(&mut self, until: Option<Instant>) -> Result<Option<Packet>> {
        loop {
            match Packet::read(&mut self.read, MAX_INCOMING) {
                Ok(Packet::Publish(p)) => {
                    if p.qos != QoS::AtMostOnce {
                        self.write(Packet::PubAck(PubAck::new(p.pkid))).await?;
                    }
                    return Ok(Some(Packet::Publish(p)));
                }
                Ok(packet) => return Ok(Some(packet)),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(dropped(format!("malformed packet: {e:?}"))),
            }
            let ping_at = self.last_write + self.keep_alive;
            let wake = until.map_or(ping_at, |u| u.min(ping_at));
            tokio::select! {
                n = self.stream.read(&mut self.read) => {
                    if n.map_err(dropped)? == 0 {
                        return Err(dropped("the service closed the connection"));
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    if until.is_some_and(|u| Instant::now() >= u) {
                        return Ok(None);
                    }
                    self.write(Packet::PingReq).await?;
                }
            }
        }
    }

    /// Publishes to `topic` (built from a fresh request id) and waits for the response with that id.
    async fn request(&mut self, topic: impl FnOnce(&str) -> String, body: Vec<u8>) -> Result<(wire::Response, Value)> {
        self.next_rid += 1;
        let rid = self.next_rid.to_string();
        let mut publish = Publish::new(topic(&rid), QoS::AtLeastOnce, body);
        publish.pkid = self.pkid();
        self.write(Packet::Publish(publish)).await?;
        loop {
            if let Some(Packet::Publish(p)) = self.next(None).await? {
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
    let params = connect_params(settings)?;
    let (stream, read) =
        connector::connect(&params, Duration::from_secs(CONNACK_TIMEOUT_SECS)).await.map_err(connect_error)?;
    let keep_alive = Duration::from_secs(settings.options.keep_alive);
    let mut exchange = Exchange { stream, read, keep_alive, last_write: Instant::now(), next_pkid: 0, next_rid: 0 };
    let result = run(&mut exchange, settings, payload).await;
    // Best effort, bounded: the service drops idle registrations anyway.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = exchange.write(Packet::Disconnect).await;
        exchange.stream.close().await;
    })
    .await;
    result
}

async fn run(exchange: &mut Exchange, settings: &Settings, payload: Option<Value>) -> Result<RegistrationResult> {
    let mut subscribe = Subscribe::new(wire::RESPONSE_FILTER, QoS::AtLeastOnce);
    subscribe.pkid = exchange.pkid();
    exchange.write(Packet::Subscribe(subscribe)).await?;
    loop {
        match exchange.next(None).await? {
            Some(Packet::SubAck(ack)) if ack.return_codes.iter().all(|c| !matches!(c, SubscribeReasonCode::Failure)) => break,
            Some(Packet::SubAck(_)) => return Err(Error::Client("the provisioning service refused the response subscription".into())),
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

/// Waits `wait` while still reading the connection (keep-alive, a dropped connection).
async fn sleep_polling(exchange: &mut Exchange, wait: Duration) -> Result<()> {
    let until = Instant::now() + wait;
    while exchange.next(Some(until)).await?.is_some() {}
    Ok(())
}
