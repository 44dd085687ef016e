//! Owns Edge hub routes: parsing the route language we support and matching a message against
//! the table to find where copies go.
//!
//! Grammar: `FROM <source> [WHERE <condition>] INTO <sink>` where source is `/messages/*`,
//! `/messages/modules/{m}/*` or `/messages/modules/{m}/outputs/{o|*}` and sink is
//! `BrokeredEndpoint("/modules/{m2}/inputs/{i}")` or `$upstream`. Keywords are case-insensitive.
//! The condition is IoT Hub's routing query: application properties by name, system properties
//! as `$contentType`, `$contentEncoding`, `$messageId`, `$correlationId`, `$userId`, `$to`,
//! `$expiryTimeUtc`, `$connectionDeviceId`, `$connectionModuleId`, `$outputName`, and `$body.x`
//! for a JSON body (`$contentType` `application/json`, `$contentEncoding` UTF-8), with
//! `= != <> < > <= >=`, AND, OR, NOT, parentheses and `IS_DEFINED(...)`.

use std::collections::BTreeMap;

use ironhub_protocol::topics::PropertyBag;
use serde_json::{Map, Value};

use crate::Identity;

use super::error::HubError;
use super::query::Condition;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteSource {
    AllMessages,
    /// `output: None` means any output of that module (`outputs/*` or `/*`).
    ModuleOutput { module_id: String, output: Option<String> },
}

/// Where a routed copy goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    ModuleInput { device_id: String, module_id: String, input_name: String },
    Upstream,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Sink {
    ModuleInput { module_id: String, input_name: String },
    Upstream,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub text: String,
    source: RouteSource,
    condition: Option<Condition>,
    sink: Sink,
}

/// A message as route conditions see it (see the module comment).
pub fn message_document(from: &Identity, properties: &PropertyBag, body: &[u8]) -> Value {
    let mut doc = Map::new();
    for (k, v) in &properties.custom {
        doc.insert(k.clone(), Value::String(v.clone()));
    }
    let system = [
        ("$contentType", &properties.content_type),
        ("$contentEncoding", &properties.content_encoding),
        ("$messageId", &properties.message_id),
        ("$correlationId", &properties.correlation_id),
        ("$userId", &properties.user_id),
        ("$to", &properties.to),
        ("$expiryTimeUtc", &properties.expiry_time_utc),
        ("$outputName", &properties.output_name),
    ];
    for (k, v) in system {
        if let Some(v) = v {
            doc.insert(k.into(), Value::String(v.clone()));
        }
    }
    doc.insert("$connectionDeviceId".into(), Value::String(from.device_id.clone()));
    if let Some(m) = &from.module_id {
        doc.insert("$connectionModuleId".into(), Value::String(m.clone()));
    }
    // IoT Hub routes on the body only when the message says it is JSON in UTF-8 (utf-16/32 exist
    // too, but no client sends them).
    let json = properties.content_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("application/json"));
    let utf8 = properties.content_encoding.as_deref().is_some_and(|e| e.eq_ignore_ascii_case("utf-8"));
    if json && utf8 {
        if let Ok(body) = serde_json::from_slice::<Value>(body) {
            doc.insert("$body".into(), body);
        }
    }
    Value::Object(doc)
}

fn route_error(text: &str, why: &str) -> HubError {
    HubError::invalid(format!("Route '{text}' is invalid: {why}"))
}

/// Splits `s` at the first case-insensitive whole-word `keyword`.
fn split_keyword<'a>(s: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let lower = s.to_ascii_lowercase();
    let mut start = 0;
    while let Some(pos) = lower[start..].find(keyword) {
        let at = start + pos;
        let end = at + keyword.len();
        let before_ok = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let after_ok = end == lower.len() || lower.as_bytes()[end].is_ascii_whitespace();
        if before_ok && after_ok {
            return Some((&s[..at], &s[end..]));
        }
        start = end;
    }
    None
}

impl Route {
    pub fn parse(text: &str) -> Result<Route, HubError> {
        let trimmed = text.trim();
        let rest = split_keyword(trimmed, "from")
            .filter(|(before, _)| before.trim().is_empty())
            .map(|(_, after)| after)
            .ok_or_else(|| route_error(text, "it must start with FROM"))?;
        let (source, sink) = split_keyword(rest, "into").ok_or_else(|| route_error(text, "INTO is missing"))?;
        let (source, condition) = match split_keyword(source, "where") {
            Some((source, condition)) => {
                let condition = Condition::parse(condition).map_err(|e| route_error(text, &e.message))?;
                (source, Some(condition))
            }
            None => (source, None),
        };
        Ok(Route {
            text: text.to_owned(),
            source: parse_source(text, source.trim())?,
            condition,
            sink: parse_sink(text, sink.trim())?,
        })
    }

    fn matches(&self, from: &Identity, output_name: Option<&str>, message: &Value) -> bool {
        self.source_matches(from, output_name) && self.condition.as_ref().is_none_or(|c| c.matches(message))
    }

    fn source_matches(&self, from: &Identity, output_name: Option<&str>) -> bool {
        match &self.source {
            RouteSource::AllMessages => true,
            RouteSource::ModuleOutput { module_id, output } => {
                from.module_id.as_deref() == Some(module_id.as_str())
                    && output.as_deref().is_none_or(|o| output_name == Some(o))
            }
        }
    }

    fn target(&self, from: &Identity) -> RouteTarget {
        match &self.sink {
            Sink::Upstream => RouteTarget::Upstream,
            Sink::ModuleInput { module_id, input_name } => RouteTarget::ModuleInput {
                device_id: from.device_id.clone(),
                module_id: module_id.clone(),
                input_name: input_name.clone(),
            },
        }
    }
}

fn segment_ok(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.chars().any(char::is_whitespace)
}

fn parse_source(text: &str, source: &str) -> Result<RouteSource, HubError> {
    if source == "/messages/*" {
        return Ok(RouteSource::AllMessages);
    }
    let rest = source
        .strip_prefix("/messages/modules/")
        .ok_or_else(|| route_error(text, "the source must be /messages/* or /messages/modules/{module}/outputs/{output}"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [m, "*"] if segment_ok(m) => Ok(RouteSource::ModuleOutput { module_id: (*m).into(), output: None }),
        [m, "outputs", "*"] if segment_ok(m) => Ok(RouteSource::ModuleOutput { module_id: (*m).into(), output: None }),
        [m, "outputs", o] if segment_ok(m) && segment_ok(o) => {
            Ok(RouteSource::ModuleOutput { module_id: (*m).into(), output: Some((*o).into()) })
        }
        _ => Err(route_error(text, "the source must be /messages/modules/{module}/outputs/{output or *}")),
    }
}

fn parse_sink(text: &str, sink: &str) -> Result<Sink, HubError> {
    if sink.eq_ignore_ascii_case("$upstream") {
        return Ok(Sink::Upstream);
    }
    let inner = sink
        .strip_prefix("BrokeredEndpoint(")
        .and_then(|s| s.strip_suffix(')'))
        .map(|s| s.trim().trim_matches('"'))
        .ok_or_else(|| route_error(text, "the sink must be $upstream or BrokeredEndpoint(\"/modules/{module}/inputs/{input}\")"))?;
    let parts: Vec<&str> = inner.split('/').collect();
    match parts.as_slice() {
        ["", "modules", m, "inputs", i] if segment_ok(m) && segment_ok(i) => {
            Ok(Sink::ModuleInput { module_id: (*m).into(), input_name: (*i).into() })
        }
        _ => Err(route_error(text, "the endpoint must be \"/modules/{module}/inputs/{input}\"")),
    }
}

/// Named routes, as a deployment manifest holds them.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: BTreeMap<String, Route>,
}

impl RouteTable {
    /// Merges named routes into the table; `None` removes that name. All-or-nothing.
    pub fn merge(&mut self, changes: Vec<(String, Option<String>)>) -> Result<(), HubError> {
        let mut next = self.routes.clone();
        for (name, text) in changes {
            match text {
                Some(text) => {
                    next.insert(name, Route::parse(&text)?);
                }
                None => {
                    next.remove(&name);
                }
            }
        }
        self.routes = next;
        Ok(())
    }

    pub fn texts(&self) -> BTreeMap<String, String> {
        self.routes.iter().map(|(n, r)| (n.clone(), r.text.clone())).collect()
    }

    /// Every distinct target of every route matching the message, in route-name order.
    pub fn targets(&self, from: &Identity, properties: &PropertyBag, body: &[u8]) -> Vec<RouteTarget> {
        let output_name = properties.output_name.as_deref();
        // Built only when some route has a condition to evaluate.
        let message = if self.routes.values().any(|r| r.condition.is_some()) {
            message_document(from, properties, body)
        } else {
            Value::Null
        };
        let mut out: Vec<RouteTarget> = Vec::new();
        for route in self.routes.values().filter(|r| r.matches(from, output_name, &message)) {
            let target = route.target(from);
            if !out.contains(&target) {
                out.push(target);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str)]) -> RouteTable {
        let mut t = RouteTable::default();
        t.merge(routes.iter().map(|(n, r)| (n.to_string(), Some(r.to_string()))).collect()).unwrap();
        t
    }

    #[test]
    fn module_output_to_module_input() {
        let t = table(&[
            ("r1", r#"FROM /messages/modules/filter/outputs/out1 INTO BrokeredEndpoint("/modules/sink/inputs/in1")"#),
            ("r2", "from /messages/modules/filter/outputs/* into $upstream"),
            ("r3", r#"FROM /messages/* INTO BrokeredEndpoint("/modules/all/inputs/every")"#),
        ]);
        let filter = Identity::module("edge", "filter");
        let out = |name: &str| PropertyBag { output_name: Some(name.into()), ..Default::default() };
        assert_eq!(
            t.targets(&filter, &out("out1"), b""),
            vec![
                RouteTarget::ModuleInput { device_id: "edge".into(), module_id: "sink".into(), input_name: "in1".into() },
                RouteTarget::Upstream,
                RouteTarget::ModuleInput { device_id: "edge".into(), module_id: "all".into(), input_name: "every".into() },
            ]
        );
        assert_eq!(t.targets(&filter, &out("out2"), b"").len(), 2);
        assert_eq!(t.targets(&Identity::device("edge"), &PropertyBag::default(), b"").len(), 1);
        assert_eq!(t.targets(&Identity::module("edge", "other"), &out("out1"), b"").len(), 1);
    }

    #[test]
    fn where_conditions_on_properties_system_properties_and_json_bodies() {
        let t = table(&[
            ("alert", r#"FROM /messages/* WHERE level = 'critical' AND $body.temp > 30 INTO BrokeredEndpoint("/modules/a/inputs/hot")"#),
            ("json", r#"FROM /messages/* where $contentType = 'application/json' into BrokeredEndpoint("/modules/a/inputs/json")"#),
            ("devices", "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream"),
        ]);
        let json = |level: &str| PropertyBag {
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            custom: vec![("level".into(), level.into())],
            ..Default::default()
        };
        // Targets come in route-name order: alert, devices, json.
        let input = |i: &str| RouteTarget::ModuleInput { device_id: "d".into(), module_id: "a".into(), input_name: i.into() };
        let dev = Identity::device("d");
        assert_eq!(t.targets(&dev, &json("critical"), br#"{"temp": 31.5}"#), vec![input("hot"), RouteTarget::Upstream, input("json")]);
        assert_eq!(t.targets(&dev, &json("critical"), br#"{"temp": 30}"#), vec![RouteTarget::Upstream, input("json")]);
        assert_eq!(t.targets(&dev, &json("info"), br#"{"temp": 99}"#), vec![RouteTarget::Upstream, input("json")]);
        // Not declared as UTF-8 JSON: the body is opaque and $body.temp is undefined.
        let mut opaque = json("critical");
        opaque.content_encoding = None;
        assert_eq!(t.targets(&dev, &opaque, br#"{"temp": 99}"#), vec![RouteTarget::Upstream, input("json")]);
        assert_eq!(t.targets(&Identity::module("d", "m"), &PropertyBag::default(), b""), vec![]);
    }

    #[test]
    fn bad_routes_are_clear_400s_and_change_nothing() {
        for bad in [
            "",
            "SELECT * FROM devices",
            "FROM /messages/* INTO",
            "FROM /messages/modules/a/outputs/o WHERE x = INTO $upstream",
            "FROM /messages/* WHERE (a = 1 INTO $upstream",
            "FROM /messages/modules//outputs/o INTO $upstream",
            r#"FROM /messages/* INTO BrokeredEndpoint("/devices/x")"#,
            "FROM /other INTO $upstream",
        ] {
            let mut t = table(&[("keep", "FROM /messages/* INTO $upstream")]);
            let err = t.merge(vec![("keep".into(), None), ("n".into(), Some(bad.into()))]).unwrap_err();
            assert_eq!(err.code, 400004, "{bad}");
            assert!(err.message.contains("Route"), "{}", err.message);
            assert_eq!(t.texts().len(), 1);
        }
    }

    #[test]
    fn none_removes_a_route() {
        let mut t = table(&[("a", "FROM /messages/* INTO $upstream")]);
        t.merge(vec![("a".into(), None)]).unwrap();
        assert!(t.texts().is_empty());
    }
}
