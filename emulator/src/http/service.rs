//! Owns the IoT Hub service REST API (service-api.md's table): registry CRUD, bulk, query,
//! twins, direct methods (also as the Edge hub serves them to modules) and statistics.
//! Each call checks the policy right IoT Hub requires before touching the hub.

use std::time::Duration;

use http::{HeaderValue, Method};
use serde_json::{json, Value};

use super::request::ApiRequest;
use super::response::{self, Reply};
use super::Context;
use crate::hub::error::{self, HubError};
use crate::hub::Right::{RegistryRead, RegistryWrite, ServiceConnect};
use crate::hub::{Right, TwinError};
use crate::mqtt::MethodError;
use crate::Identity;
use ironhub_protocol::limits;

fn authorize(ctx: &Context, req: &ApiRequest, any_of: &[Right]) -> Result<(), HubError> {
    ctx.hub.authorize_service(req.authorization(), any_of)
}

pub fn method_not_allowed(req: &ApiRequest) -> HubError {
    HubError::new(error::METHOD_NOT_ALLOWED, format!("{} is not supported on this resource", req.method))
}

/// Dispatches one service API call. `None` when the path is not a service API path.
pub async fn route(ctx: &Context, req: &ApiRequest) -> Option<Result<Reply, HubError>> {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let result = match seg.as_slice() {
        ["devices"] => devices(ctx, req),
        ["devices", "query"] if req.method == Method::POST => query(ctx, req),
        ["devices", id] => device(ctx, req, id),
        ["devices", id, "modules"] => modules(ctx, req, id),
        ["devices", id, "modules", mid] => module(ctx, req, id, mid),
        ["twins", id] => twin(ctx, req, Identity::device(*id)),
        ["twins", id, "modules", mid] => twin(ctx, req, Identity::module(*id, *mid)),
        ["twins", id, "methods"] => invoke_method(ctx, req, Identity::device(*id)).await,
        ["twins", id, "modules", mid, "methods"] => invoke_method(ctx, req, Identity::module(*id, *mid)).await,
        ["certificates"] => certificates(ctx, req),
        ["certificates", name] => certificate(ctx, req, name),
        ["certificates", name, action] if req.method == Method::POST => certificate_action(ctx, req, name, action),
        ["statistics", "devices"] => statistics(ctx, req, &[RegistryRead], |h| h.statistics_devices()),
        ["statistics", "service"] => statistics(ctx, req, &[ServiceConnect, RegistryRead], |h| h.statistics_service()),
        _ => return None,
    };
    Some(result)
}

fn devices(ctx: &Context, req: &ApiRequest) -> Result<Reply, HubError> {
    match req.method {
        Method::GET => {
            authorize(ctx, req, &[RegistryRead])?;
            let top = req.query_u64("top")?.map(|t| t as usize);
            let list: Vec<Value> = ctx.hub.list_devices(top).iter().map(|d| d.to_json()).collect();
            Ok(response::ok(&Value::Array(list)))
        }
        Method::POST => {
            authorize(ctx, req, &[RegistryWrite])?;
            let body = req.json()?;
            let ops = body.as_array().ok_or_else(|| HubError::invalid("A bulk registry body must be a JSON array"))?;
            let result = ctx.hub.bulk(ops)?;
            for op in ops.iter().filter(|op| op.get("importMode").and_then(Value::as_str).is_some_and(|m| m.starts_with("delete"))) {
                if let Some(id) = op.get("id").and_then(Value::as_str) {
                    ctx.broker.disconnect(&Identity::device(id));
                }
            }
            let status = if result.is_successful() { http::StatusCode::OK } else { http::StatusCode::BAD_REQUEST };
            Ok(response::json_with_status(status, &result.to_json()))
        }
        _ => Err(method_not_allowed(req)),
    }
}

fn query(ctx: &Context, req: &ApiRequest) -> Result<Reply, HubError> {
    authorize(ctx, req, &[RegistryRead, ServiceConnect])?;
    let body = req.json()?;
    let text = body.get("query").and_then(Value::as_str).ok_or_else(|| HubError::invalid("The body must be {\"query\": \"SELECT ...\"}"))?;
    let twins = ctx.hub.query(text)?;
    // Paging as IoT Hub does it: `x-ms-max-item-count` per page, the next page's start in
    // `x-ms-continuation` (here simply an offset).
    let start: usize = req.header("x-ms-continuation").and_then(|c| c.parse().ok()).unwrap_or(0);
    let page_size: usize = req.header("x-ms-max-item-count").and_then(|c| c.parse().ok()).filter(|n| *n > 0).unwrap_or(usize::MAX);
    let end = start.saturating_add(page_size).min(twins.len());
    let page: Vec<Value> = twins.get(start..end).map(<[Value]>::to_vec).unwrap_or_default();
    let mut reply = response::ok(&Value::Array(page));
    reply.headers_mut().insert("x-ms-item-type", HeaderValue::from_static("twin"));
    if end < twins.len() {
        reply.headers_mut().insert("x-ms-continuation", HeaderValue::from(end));
    }
    Ok(reply)
}

fn device(ctx: &Context, req: &ApiRequest, id: &str) -> Result<Reply, HubError> {
    match req.method {
        Method::GET => {
            authorize(ctx, req, &[RegistryRead])?;
            Ok(response::ok_with_etag(&ctx.hub.get_device(id)?.to_json()))
        }
        Method::PUT => {
            authorize(ctx, req, &[RegistryWrite])?;
            let record = ctx.hub.put_device(id, &req.json()?, req.if_match())?;
            if !record.enabled {
                // A disabled device may not stay connected.
                ctx.broker.disconnect(&Identity::device(id));
            }
            Ok(response::ok_with_etag(&record.to_json()))
        }
        Method::DELETE => {
            authorize(ctx, req, &[RegistryWrite])?;
            let modules = ctx.hub.list_modules(id).unwrap_or_default();
            ctx.hub.delete_device(id, req.if_match())?;
            ctx.broker.disconnect(&Identity::device(id));
            for m in modules {
                ctx.broker.disconnect(&Identity::module(id, m.module_id));
            }
            Ok(response::no_content())
        }
        _ => Err(method_not_allowed(req)),
    }
}

/// GET `/certificates`: the registered CA certificates (`{"value": [...]}`).
fn certificates(ctx: &Context, req: &ApiRequest) -> Result<Reply, HubError> {
    if req.method != Method::GET {
        return Err(method_not_allowed(req));
    }
    authorize(ctx, req, &[RegistryRead])?;
    Ok(response::ok(&ctx.hub.list_certificates()))
}

/// `/certificates/{name}`: a CA certificate device chains may end at once `isVerified`.
fn certificate(ctx: &Context, req: &ApiRequest, name: &str) -> Result<Reply, HubError> {
    match req.method {
        Method::GET => {
            authorize(ctx, req, &[RegistryRead])?;
            Ok(response::ok_with_etag(&ctx.hub.get_certificate(name)?))
        }
        Method::PUT => {
            authorize(ctx, req, &[RegistryWrite])?;
            Ok(response::ok_with_etag(&ctx.hub.put_certificate(name, &req.json()?, req.if_match())?))
        }
        Method::DELETE => {
            authorize(ctx, req, &[RegistryWrite])?;
            ctx.hub.delete_certificate(name, req.if_match())?;
            Ok(response::no_content())
        }
        _ => Err(method_not_allowed(req)),
    }
}

/// `POST /certificates/{name}/generateVerificationCode` and `/verify`: IoT Hub's proof of possession.
fn certificate_action(ctx: &Context, req: &ApiRequest, name: &str, action: &str) -> Result<Reply, HubError> {
    authorize(ctx, req, &[RegistryWrite])?;
    let description = match action {
        "generateVerificationCode" => ctx.hub.generate_certificate_verification_code(name, req.if_match())?,
        "verify" => ctx.hub.verify_certificate(name, req.if_match(), &req.json()?)?,
        _ => return Err(HubError::new(error::NOT_FOUND, format!("No certificate operation '{action}'"))),
    };
    Ok(response::ok_with_etag(&description))
}

fn modules(ctx: &Context, req: &ApiRequest, id: &str) -> Result<Reply, HubError> {
    if req.method != Method::GET {
        return Err(method_not_allowed(req));
    }
    authorize(ctx, req, &[RegistryRead])?;
    let list: Vec<Value> = ctx.hub.list_modules(id)?.iter().map(|m| m.to_json()).collect();
    Ok(response::ok(&Value::Array(list)))
}

fn module(ctx: &Context, req: &ApiRequest, id: &str, mid: &str) -> Result<Reply, HubError> {
    match req.method {
        Method::GET => {
            authorize(ctx, req, &[RegistryRead])?;
            Ok(response::ok_with_etag(&ctx.hub.get_module(id, mid)?.to_json()))
        }
        Method::PUT => {
            authorize(ctx, req, &[RegistryWrite])?;
            Ok(response::ok_with_etag(&ctx.hub.put_module(id, mid, &req.json()?, req.if_match())?.to_json()))
        }
        Method::DELETE => {
            authorize(ctx, req, &[RegistryWrite])?;
            ctx.hub.delete_module(id, mid, req.if_match())?;
            ctx.broker.disconnect(&Identity::module(id, mid));
            Ok(response::no_content())
        }
        _ => Err(method_not_allowed(req)),
    }
}

fn twin(ctx: &Context, req: &ApiRequest, id: Identity) -> Result<Reply, TwinError> {
    let replace = match req.method {
        Method::GET => {
            authorize(ctx, req, &[RegistryRead, ServiceConnect])?;
            return Ok(response::ok_with_etag(&ctx.hub.get_twin(&id)?));
        }
        Method::PATCH => false,
        Method::PUT => true,
        _ => return Err(method_not_allowed(req)),
    };
    authorize(ctx, req, &[ServiceConnect])?;
    let (twin, notification) = ctx.hub.update_twin(&id, &req.json()?, req.if_match(), replace)?;
    if let Some(n) = notification {
        let _ = ctx.broker.notify_desired(&id, &n.body, n.version);
    }
    Ok(response::ok_with_etag(&twin))
}

/// Reads a timeout field in seconds: `default` when absent, an error outside `range`.
fn seconds(body: &Value, field: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> Result<Duration, HubError> {
    let value = match body.get(field) {
        None | Some(Value::Null) => default,
        Some(v) => v.as_u64().ok_or_else(|| HubError::invalid(format!("{field} must be a whole number of seconds")))?,
    };
    if !range.contains(&value) {
        return Err(HubError::invalid(format!("{field} must be between {} and {}", range.start(), range.end())));
    }
    Ok(Duration::from_secs(value))
}

async fn invoke_method(ctx: &Context, req: &ApiRequest, target: Identity) -> Result<Reply, HubError> {
    if req.method != Method::POST {
        return Err(method_not_allowed(req));
    }
    match req.header("x-ms-edge-moduleid") {
        // The Edge hub serves modules on its own device the same call, with their own tokens.
        Some(caller) => {
            ctx.hub.authorize_edge_module(req.authorization(), caller)?;
        }
        None => authorize(ctx, req, &[ServiceConnect])?,
    }
    let body = req.json()?;
    let name = body
        .get("methodName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| HubError::invalid("methodName is required"))?;
    let payload = body.get("payload").cloned().unwrap_or(Value::Null);
    let payload_size = serde_json::to_vec(&payload).map(|v| v.len()).unwrap_or(0);
    if payload_size > limits::MAX_METHOD_PAYLOAD_BYTES {
        return Err(HubError::new(
            error::MESSAGE_TOO_LARGE,
            format!("The method payload is {payload_size} bytes; the limit is {}", limits::MAX_METHOD_PAYLOAD_BYTES),
        ));
    }
    ctx.hub.check_throttle(crate::hub::throttle::Operation::Method { payload_bytes: payload_size })?;
    let response_timeout = seconds(&body, "responseTimeoutInSeconds", 30, 5..=300)?;
    let connect_timeout = seconds(&body, "connectTimeoutInSeconds", 0, 0..=300)?;
    ctx.hub.check_identity(&target)?;
    match ctx.broker.invoke_method(&target, name, payload, connect_timeout, response_timeout).await {
        Ok(result) => Ok(response::ok(&json!({"status": result.status, "payload": result.payload}))),
        Err(MethodError::NotOnline) => Err(HubError::new(error::DEVICE_NOT_ONLINE, format!("{target} is not online"))),
        Err(MethodError::Timeout) => Err(HubError::new(
            error::GATEWAY_TIMEOUT,
            format!("{target} did not answer method '{name}' within {}s", response_timeout.as_secs()),
        )),
    }
}

fn statistics(ctx: &Context, req: &ApiRequest, any_of: &[Right], read: impl Fn(&crate::hub::Hub) -> Value) -> Result<Reply, HubError> {
    if req.method != Method::GET {
        return Err(method_not_allowed(req));
    }
    authorize(ctx, req, any_of)?;
    Ok(response::ok(&read(&ctx.hub)))
}
