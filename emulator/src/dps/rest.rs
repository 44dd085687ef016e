//! Owns the DPS service REST API on the emulator's HTTPS listener, as the Azure service shapes
//! it (`?api-version=2021-10-01`): `PUT/GET/DELETE /enrollments/{registrationId}`,
//! `/enrollmentGroups/{enrollmentGroupId}` and `GET/DELETE /registrations/{registrationId}`,
//! authorised with a `provisioningserviceowner` SAS token. Errors use DPS's flat error shape.

use http::{Method, StatusCode};
use serde_json::Value;

use super::enrollments::Kind;
use super::{error_body, Dps};
use crate::http::request::ApiRequest;
use crate::http::response::{self, Reply};

fn error(status: u16, message: impl Into<String>) -> Reply {
    let code = u32::from(status) * 1000 + if status == 401 { 2 } else { 0 };
    response::json_with_status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), &error_body(code, message))
}

/// Dispatches one DPS service call; `None` when the path is not a DPS service path.
pub fn route(dps: &Dps, req: &ApiRequest) -> Option<Reply> {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let (target, id) = match seg.as_slice() {
        ["enrollments", id] => (Some(Kind::Individual), *id),
        ["enrollmentGroups", id] => (Some(Kind::Group), *id),
        ["registrations", id] => (None, *id),
        _ => return None,
    };
    if let Err(why) = dps.authorize_service(req.authorization()) {
        return Some(error(401, format!("Unauthorized: {why}")));
    }
    let reply = match target {
        Some(kind) => enrollment(dps, req, kind, id),
        None => registration(dps, req, id),
    };
    Some(reply)
}

fn enrollment(dps: &Dps, req: &ApiRequest, kind: Kind, id: &str) -> Reply {
    let not_found = || error(404, format!("No {} '{id}'", if kind == Kind::Individual { "enrollment" } else { "enrollment group" }));
    match req.method {
        Method::GET => dps.get_enrollment(kind, id).map(|e| response::ok(&e)).unwrap_or_else(not_found),
        Method::PUT => {
            let body = match serde_json::from_slice::<Value>(&req.body) {
                Ok(body) => body,
                Err(e) => return error(400, format!("The body is not valid JSON: {e}")),
            };
            match dps.put_enrollment(kind, id, &body, req.if_match()) {
                Ok(stored) => response::ok(&stored),
                Err((status, message)) => error(status, message),
            }
        }
        Method::DELETE => match dps.delete_enrollment(kind, id, req.if_match()) {
            Ok(()) => response::no_content(),
            Err((status, message)) => error(status, message),
        },
        _ => error(405, format!("{} is not supported on this resource", req.method)),
    }
}

fn registration(dps: &Dps, req: &ApiRequest, id: &str) -> Reply {
    match req.method {
        Method::GET => dps.get_registration(id).map(|r| response::ok(&r)).unwrap_or_else(|| error(404, format!("No registration '{id}'"))),
        Method::DELETE if dps.delete_registration(id) => response::no_content(),
        Method::DELETE => error(404, format!("No registration '{id}'")),
        _ => error(405, format!("{} is not supported on this resource", req.method)),
    }
}
