//! Owns the emulator's control API under `/emulator/...` (service SAS auth, ServiceConnect):
//! the telemetry event log with long-polling, C2D and module-input injection, routes, connection
//! drops for fault injection, and the Event Hub-compatible endpoint's consumer groups and the
//! message routes that send twin change events to it.
//! Documented in emulator/README.md.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::Method;
use ironhub_protocol::limits;
use ironhub_protocol::topics::PropertyBag;
use serde_json::{json, Value};

use super::request::ApiRequest;
use super::response::{self, Reply};
use super::service::method_not_allowed;
use super::Context;
use crate::hub::error::{self, HubError};
use crate::hub::{DeviceBoundMessage, EventFilter, Right};
use crate::Identity;

/// Long-polls are capped so a forgotten client cannot hold a connection for ever.
const MAX_POLL_SECONDS: u64 = 300;

/// Dispatches one control call. `None` when the path is not under `/emulator`.
pub async fn route(ctx: &Context, req: &ApiRequest) -> Option<Result<Reply, HubError>> {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let rest = match seg.as_slice() {
        ["emulator", rest @ ..] => rest,
        _ => return None,
    };
    if let Err(e) = ctx.hub.authorize_service(req.authorization(), &[Right::ServiceConnect]) {
        return Some(Err(e));
    }
    let post = req.method == Method::POST;
    let result = match rest {
        ["events"] if req.method == Method::GET => events(ctx, req).await,
        ["devices", d, "messages", "devicebound"] if post => c2d(ctx, req, d),
        ["devices", d, "modules", m, "inputs", input] if post => module_input(ctx, req, d, m, input),
        ["routes"] => routes(ctx, req),
        ["consumerGroups"] if req.method == Method::GET => consumer_groups(ctx),
        ["messageRoutes"] if req.method == Method::GET => Ok(response::ok(&json!({"routes": ctx.hub.message_routes()}))),
        ["messageRoutes", name] => message_route(ctx, req, name),
        ["consumerGroups", name] => consumer_group(ctx, req, name),
        ["devices", d, "disconnect"] if post => disconnect(ctx, Identity::device(*d)),
        ["devices", d, "modules", m, "disconnect"] if post => disconnect(ctx, Identity::module(*d, *m)),
        ["events"] | ["devices", ..] => Err(method_not_allowed(req)),
        _ => Err(HubError::new(error::NOT_FOUND, format!("No control API at /{}", req.segments.join("/")))),
    };
    Some(result)
}

async fn events(ctx: &Context, req: &ApiRequest) -> Result<Reply, HubError> {
    let filter = EventFilter { device_id: req.query.get("deviceId").cloned(), module_id: req.query.get("moduleId").cloned() };
    if filter.module_id.is_some() && filter.device_id.is_none() {
        return Err(HubError::invalid("moduleId needs deviceId"));
    }
    let after = req.query_u64("after")?.unwrap_or(0);
    let timeout = req.query_u64("timeoutSeconds")?.unwrap_or(0).min(MAX_POLL_SECONDS);
    let found = ctx.hub.wait_for_events(&filter, after, Duration::from_secs(timeout)).await;
    let events: Vec<Value> = found.iter().map(|e| e.to_json()).collect();
    Ok(response::ok(&json!({"events": events, "lastSequenceNumber": ctx.hub.last_event_sequence()})))
}

fn optional_string(body: &Value, field: &str) -> Result<Option<String>, HubError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(HubError::invalid(format!("{field} must be a string"))),
    }
}

/// The message body shared by C2D and module-input injection.
fn device_bound_message(req: &ApiRequest) -> Result<DeviceBoundMessage, HubError> {
    let body = req.json()?;
    if !body.is_object() {
        return Err(HubError::invalid("The body must be a JSON object"));
    }
    let payload = match (optional_string(&body, "body")?, optional_string(&body, "bodyText")?) {
        (Some(_), Some(_)) => return Err(HubError::invalid("Give body or bodyText, not both")),
        (Some(b64), None) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| HubError::invalid("body must be base64; use bodyText for text"))?,
        (None, Some(text)) => text.into_bytes(),
        (None, None) => Vec::new(),
    };
    let custom = match body.get("properties") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
            .collect(),
        Some(_) => return Err(HubError::invalid("properties must be a JSON object")),
    };
    let properties = PropertyBag {
        message_id: optional_string(&body, "messageId")?,
        correlation_id: optional_string(&body, "correlationId")?,
        user_id: optional_string(&body, "userId")?,
        content_type: optional_string(&body, "contentType")?,
        content_encoding: optional_string(&body, "contentEncoding")?,
        expiry_time_utc: optional_string(&body, "expiryTimeUtc")?,
        custom,
        ..Default::default()
    };
    Ok(DeviceBoundMessage { body: Bytes::from(payload), properties })
}

fn c2d(ctx: &Context, req: &ApiRequest, device_id: &str) -> Result<Reply, HubError> {
    let mut msg = device_bound_message(req)?;
    // `iothub-ack` as the service SDKs set it: feedback on /messages/servicebound/feedback.
    msg.properties.ack = optional_string(&req.json()?, "ack")?;
    let delivered = ctx.broker.accept_c2d(device_id, msg)?;
    Ok(response::ok(&json!({"delivered": delivered, "pendingCount": ctx.hub.pending_c2d_count(device_id)})))
}

fn module_input(ctx: &Context, req: &ApiRequest, device_id: &str, module_id: &str, input: &str) -> Result<Reply, HubError> {
    let msg = device_bound_message(req)?;
    if msg.body.len() > limits::MAX_TELEMETRY_BYTES {
        return Err(HubError::new(error::MESSAGE_TOO_LARGE, "The message is over 256 KB"));
    }
    let target = Identity::module(device_id, module_id);
    ctx.hub.check_identity(&target)?;
    if !ctx.broker.takes_inputs(device_id, module_id) {
        return Err(HubError::new(error::DEVICE_NOT_ONLINE, format!("{target} is not connected and subscribed to its inputs")));
    }
    let delivered = ctx.broker.deliver_input(device_id, module_id, input, msg)?;
    Ok(response::ok(&json!({"delivered": delivered})))
}

fn routes(ctx: &Context, req: &ApiRequest) -> Result<Reply, HubError> {
    match req.method {
        Method::GET => Ok(response::ok(&json!({"routes": ctx.hub.routes()}))),
        Method::PUT => {
            let body = req.json()?;
            let routes = body
                .get("routes")
                .and_then(Value::as_object)
                .ok_or_else(|| HubError::invalid("The body must be {\"routes\": {\"name\": \"FROM ... INTO ...\"}}"))?;
            let mut changes = Vec::new();
            for (name, text) in routes {
                match text {
                    Value::String(t) => changes.push((name.clone(), Some(t.clone()))),
                    Value::Null => changes.push((name.clone(), None)),
                    _ => return Err(HubError::invalid(format!("Route '{name}' must be a string (or null to remove it)"))),
                }
            }
            Ok(response::ok(&json!({"routes": ctx.hub.merge_routes(changes)?})))
        }
        _ => Err(method_not_allowed(req)),
    }
}

/// The Event Hub-compatible endpoint's consumer groups (IoT Hub manages them through ARM).
fn consumer_groups(ctx: &Context) -> Result<Reply, HubError> {
    Ok(response::ok(&json!({"consumerGroups": ctx.amqp.eventhub().consumer_groups()})))
}

fn consumer_group(ctx: &Context, req: &ApiRequest, name: &str) -> Result<Reply, HubError> {
    let endpoint = ctx.amqp.eventhub();
    match req.method {
        Method::PUT => {
            endpoint.create_consumer_group(name).map_err(HubError::invalid)?;
            Ok(response::ok(&json!({"name": name})))
        }
        Method::DELETE if endpoint.delete_consumer_group(name) => Ok(response::no_content()),
        Method::DELETE => Err(HubError::new(error::NOT_FOUND, format!("No consumer group '{name}' (and $Default stays)"))),
        _ => Err(method_not_allowed(req)),
    }
}

/// IoT Hub message routes (ARM's `routing.routes`): `{"source": "TwinChangeEvents", "endpointNames": ["events"]}`.
fn message_route(ctx: &Context, req: &ApiRequest, name: &str) -> Result<Reply, HubError> {
    match req.method {
        Method::PUT => {
            let route = serde_json::from_value(req.json()?)
                .map_err(|e| HubError::invalid(format!("A route is {{\"source\", \"endpointNames\", \"condition\", \"isEnabled\"}}: {e}")))?;
            Ok(response::ok(&json!({"routes": ctx.hub.put_message_route(name, route)?})))
        }
        Method::DELETE if ctx.hub.delete_message_route(name) => Ok(response::no_content()),
        Method::DELETE => Err(HubError::new(error::NOT_FOUND, format!("No message route '{name}'"))),
        _ => Err(method_not_allowed(req)),
    }
}

fn disconnect(ctx: &Context, id: Identity) -> Result<Reply, HubError> {
    ctx.hub.check_identity(&id)?;
    Ok(response::ok(&json!({"disconnected": ctx.broker.disconnect(&id)})))
}
