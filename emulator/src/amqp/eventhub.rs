//! Owns the Event Hub-compatible endpoint: its name, partitions and consumer groups, the
//! `$management` node (`com.microsoft:eventhub` and `com.microsoft:partition` READ, as the Event
//! Hubs SDKs ask) and the receiver links on `<entity>/ConsumerGroups/<group>/Partitions/<n>`,
//! which start where the `apache.org:selector-filter:string` filter says and then deliver events
//! as the hub accepts them, as far as the link's credit goes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::acceptor::LinkEndpoint;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp_types::definitions::AmqpError;
use fe2o3_amqp_types::messaging::{
    annotations::OwnedKey, ApplicationProperties, Data, Message, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp_types::performatives::Attach;
use fe2o3_amqp_types::primitives::{Binary, OrderedMap, SimpleValue, Symbol, Timestamp, Value};

use super::node::{self, AmqpMessage};
use super::Connection;
use crate::hub::auth::Right;
use crate::hub::{Hub, StoredEvent};

pub const MANAGEMENT: &str = "$management";
pub const DEFAULT_CONSUMER_GROUP: &str = "$Default";
/// IoT Hub's AMQP port, left out of connection strings.
pub const AMQPS_PORT: u16 = 5671;
const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
/// Events read from the log at a time by one receiver link.
const BATCH: usize = 256;

pub struct EventHubEndpoint {
    hub: Arc<Hub>,
    /// The Event Hub-compatible name (`EntityPath`): the hub's name.
    pub entity: String,
    consumer_groups: Mutex<BTreeSet<String>>,
    created_ms: i64,
}

impl EventHubEndpoint {
    pub fn new(hub: Arc<Hub>) -> Arc<EventHubEndpoint> {
        let groups = BTreeSet::from([DEFAULT_CONSUMER_GROUP.to_owned()]);
        // IoT Hub names the endpoint after the hub.
        let entity = hub.hub_name().to_owned();
        Arc::new(EventHubEndpoint { hub, entity, consumer_groups: Mutex::new(groups), created_ms: crate::hub::now_ms() })
    }

    /// The Event Hub-compatible connection string, signed with the `iothubowner` policy.
    pub fn connection_string(&self, host: &str, port: u16) -> String {
        let endpoint = if port == AMQPS_PORT { host.to_owned() } else { format!("{host}:{port}") };
        format!(
            "Endpoint=sb://{endpoint}/;SharedAccessKeyName=iothubowner;SharedAccessKey={};EntityPath={}",
            self.hub.policy_key(),
            self.entity
        )
    }

    pub fn partition_count(&self) -> u32 {
        self.hub.partition_count()
    }

    pub fn consumer_groups(&self) -> Vec<String> {
        self.consumer_groups.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// Adds a consumer group (IoT Hub's names: letters, digits, `.`, `_`, `-`, up to 50). True when new.
    pub fn create_consumer_group(&self, name: &str) -> Result<bool, String> {
        let valid = !name.is_empty()
            && name.len() <= 50
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(format!("'{name}' is not a valid consumer group name (letters, digits, '.', '_', '-'; 1 to 50)"));
        }
        Ok(self.consumer_groups.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned()))
    }

    pub fn delete_consumer_group(&self, name: &str) -> bool {
        name != DEFAULT_CONSUMER_GROUP && self.consumer_groups.lock().unwrap_or_else(|p| p.into_inner()).remove(name)
    }

    fn has_consumer_group(&self, name: &str) -> bool {
        self.consumer_groups.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|g| g.eq_ignore_ascii_case(name))
    }

    /// `<entity>/ConsumerGroups/<group>/Partitions/<n>` → the partition, or why not.
    fn resolve(&self, path: &str) -> Result<u32, (AmqpError, String)> {
        let not_found = || (AmqpError::NotFound, format!("The messaging entity '{path}' could not be found."));
        let parts: Vec<&str> = path.split('/').collect();
        let [entity, cg, group, partitions, n] = parts.as_slice() else { return Err(not_found()) };
        if !entity.eq_ignore_ascii_case(&self.entity)
            || !cg.eq_ignore_ascii_case("ConsumerGroups")
            || !partitions.eq_ignore_ascii_case("Partitions")
            || !self.has_consumer_group(group)
        {
            return Err(not_found());
        }
        match n.parse::<u32>() {
            Ok(p) if p < self.partition_count() => Ok(p),
            _ => Err(not_found()),
        }
    }
}

pub fn is_partition_address(path: &str) -> bool {
    path.split('/').nth(1).is_some_and(|s| s.eq_ignore_ascii_case("ConsumerGroups"))
}

/// Where a receiver starts, from its selector filter.
#[derive(Clone, Debug, PartialEq)]
pub enum StartPosition {
    /// After this hub-wide sequence number (the offset); 0: from the start.
    AfterOffset(u64),
    /// The first event whose partition sequence number is above (or at) this.
    SequenceNumber { value: i64, inclusive: bool },
    /// The first event enqueued after (or at) this Unix time in ms.
    EnqueuedTime { ms: i64, inclusive: bool },
    /// Only events accepted from now on.
    Latest,
}

/// Parses `amqp.annotation.x-opt-offset > '123'` and its siblings (`>=`, `=`, sequence number,
/// enqueued time in ms, `-1` for the start and `@latest`).
pub fn parse_selector(selector: &str) -> Result<StartPosition, String> {
    let bad = || format!("unsupported selector filter: {selector}");
    let s = selector.trim();
    let rest = s.strip_prefix("amqp.annotation.").ok_or_else(bad)?;
    let (name, rest) = rest.split_once(char::is_whitespace).ok_or_else(bad)?;
    let rest = rest.trim_start();
    let (op, value) = if let Some(v) = rest.strip_prefix(">=") {
        (">=", v)
    } else if let Some(v) = rest.strip_prefix('>') {
        (">", v)
    } else if let Some(v) = rest.strip_prefix('=') {
        ("=", v)
    } else {
        return Err(bad());
    };
    let value = value.trim().trim_matches('\'');
    let inclusive = op != ">";
    match name {
        "x-opt-offset" => match value {
            "@latest" => Ok(StartPosition::Latest),
            "-1" => Ok(StartPosition::AfterOffset(0)),
            v => {
                let offset: u64 = v.parse().map_err(|_| bad())?;
                Ok(StartPosition::AfterOffset(if inclusive { offset.saturating_sub(1) } else { offset }))
            }
        },
        "x-opt-sequence-number" => Ok(StartPosition::SequenceNumber { value: value.parse().map_err(|_| bad())?, inclusive }),
        "x-opt-enqueued-time" => Ok(StartPosition::EnqueuedTime { ms: value.parse().map_err(|_| bad())?, inclusive }),
        _ => Err(bad()),
    }
}

/// The selector of an attach's source filter, if it has one.
fn selector(attach: &Attach) -> Option<String> {
    let filter = attach.source.as_ref()?.filter.as_ref()?;
    let value = filter.iter().find(|(k, _)| k.as_str() == SELECTOR_FILTER).map(|(_, v)| v)?;
    match value {
        Value::Described(d) => match &d.value {
            Value::String(s) => Some(s.clone()),
            _ => None,
        },
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

impl StartPosition {
    /// Whether `event` is at or after this position (for the positions that are not offsets).
    fn admits(&self, event: &StoredEvent) -> bool {
        match *self {
            StartPosition::AfterOffset(after) => event.sequence_number > after,
            StartPosition::SequenceNumber { value, inclusive } => {
                let seq = event.partition_sequence as i64;
                seq > value || (inclusive && seq == value)
            }
            StartPosition::EnqueuedTime { ms, inclusive } => event.enqueued_ms > ms || (inclusive && event.enqueued_ms == ms),
            StartPosition::Latest => false,
        }
    }
}

/// Serves one partition receiver: refuses it without a claim or for an unknown entity, then sends
/// from its start position on, waiting for new events when it has sent them all.
pub async fn serve_partition(conn: Arc<Connection>, attach: &Attach, path: &str, mut sender: Sender) {
    if !conn.claims.allows(path, Right::ServiceConnect) {
        return super::refuse_unauthorized(LinkEndpoint::Sender(sender), path).await;
    }
    let endpoint = conn.server.eventhub().clone();
    let partition = match endpoint.resolve(path) {
        Ok(p) => p,
        Err((condition, description)) => return super::refuse(LinkEndpoint::Sender(sender), condition, description).await,
    };
    let start = match selector(attach).map(|s| parse_selector(&s)).transpose() {
        Ok(start) => start.unwrap_or(StartPosition::AfterOffset(0)),
        Err(why) => return super::refuse(LinkEndpoint::Sender(sender), AmqpError::InvalidField, why).await,
    };
    let hub = conn.server.hub().clone();
    let mut signal = hub.subscribe_events();
    // The hub-wide sequence number delivered last; `None` until the start position is found.
    let mut cursor = match start {
        StartPosition::AfterOffset(after) => Some(after),
        StartPosition::Latest => Some(hub.last_event_sequence()),
        _ => None,
    };
    loop {
        signal.borrow_and_update();
        if cursor.is_none() {
            cursor = hub.partition_find(partition, |e| start.admits(e)).map(|e| e.sequence_number - 1);
        }
        let (batch, read_to) = match cursor {
            Some(after) => hub.partition_events_after(partition, after, BATCH),
            None => (Vec::new(), 0),
        };
        for event in &batch {
            // `send` waits for credit: the consumer's flow control paces us.
            if sender.send(event_message(event)).await.is_err() {
                return;
            }
            cursor = Some(event.sequence_number);
        }
        if !batch.is_empty() {
            continue;
        }
        if cursor.is_some_and(|after| read_to > after) {
            // Stored rows of other partitions only: read on past them.
            cursor = Some(read_to);
            continue;
        }
        tokio::select! {
            changed = signal.changed() => if changed.is_err() { break },
            _ = sender.on_detach() => return,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sender.close()).await;
}

fn annotation(annotations: &mut MessageAnnotations, key: &str, value: Value) {
    annotations.0.insert(OwnedKey::Symbol(Symbol::from(key)), value);
}

/// An event as IoT Hub's Event Hub-compatible endpoint delivers it.
pub fn event_message(event: &StoredEvent) -> Message<Data> {
    let r = &event.record;
    let p = &r.properties;
    let mut annotations = MessageAnnotations::default();
    annotation(&mut annotations, "x-opt-sequence-number", Value::Long(event.partition_sequence as i64));
    annotation(&mut annotations, "x-opt-offset", Value::String(event.sequence_number.to_string()));
    annotation(&mut annotations, "x-opt-enqueued-time", Value::Timestamp(Timestamp::from_milliseconds(event.enqueued_ms)));
    annotation(&mut annotations, "iothub-connection-device-id", Value::String(r.device_id.clone()));
    if let Some(m) = &r.module_id {
        annotation(&mut annotations, "iothub-connection-module-id", Value::String(m.clone()));
    }
    let scope = if r.module_id.is_some() { "module" } else { "device" };
    annotation(
        &mut annotations,
        "iothub-connection-auth-method",
        Value::String(format!(r#"{{"scope":"{scope}","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}}"#)),
    );
    annotation(&mut annotations, "iothub-enqueuedtime", Value::Timestamp(Timestamp::from_milliseconds(event.enqueued_ms)));
    annotation(&mut annotations, "iothub-message-source", Value::String(event.source.as_str().to_owned()));
    if let Some(interface) = &p.interface_id {
        annotation(&mut annotations, "iothub-interface-id", Value::String(interface.clone()));
    }
    let properties = Properties {
        message_id: p.message_id.clone().map(MessageId::String),
        correlation_id: p.correlation_id.clone().map(MessageId::String),
        user_id: p.user_id.as_ref().map(|u| Binary::from(u.as_bytes().to_vec())),
        content_type: p.content_type.as_deref().map(Symbol::from),
        content_encoding: p.content_encoding.as_deref().map(Symbol::from),
        ..Default::default()
    };
    let mut application = ApplicationProperties::default();
    for (k, v) in &p.custom {
        application.0.insert(k.clone(), SimpleValue::String(v.clone()));
    }
    Message::builder()
        .message_annotations(annotations)
        .properties(properties)
        .application_properties(application)
        .body(Data(Binary::from(r.body.to_vec())))
        .build()
}

/// Serves `$management` requests: READ of the entity and of one partition.
pub async fn serve_management(conn: Arc<Connection>, receiver: Receiver) {
    node::serve_requests(conn, MANAGEMENT, receiver, management).await
}

fn string_map(entries: Vec<(&str, Value)>) -> Value {
    let mut map = OrderedMap::new();
    for (k, v) in entries {
        map.insert(Value::String(k.to_owned()), v);
    }
    Value::Map(map)
}

/// A management request may carry its own token (`security_token`) instead of a CBS claim.
fn management_allowed(conn: &Connection, request: &AmqpMessage, entity: &str) -> bool {
    if conn.claims.allows(entity, Right::ServiceConnect) {
        return true;
    }
    match node::app_property(request, "security_token") {
        Some(token) => {
            let audience = format!("sb://{}/{entity}", conn.server.hub().hostname());
            super::cbs::check_token(conn.server.hub(), &audience, &token).is_ok_and(|c| c.rights.contains(&Right::ServiceConnect))
        }
        None => false,
    }
}

fn management(conn: &Connection, request: &AmqpMessage) -> AmqpMessage {
    let endpoint = conn.server.eventhub();
    let operation = node::app_property(request, "operation").unwrap_or_default();
    let kind = node::app_property(request, "type").unwrap_or_default();
    let name = node::app_property(request, "name").unwrap_or_default();
    if operation != "READ" {
        return node::answer(request, 400, &format!("Bad request: unsupported operation '{operation}'"), Value::Null);
    }
    if !name.eq_ignore_ascii_case(&endpoint.entity) {
        return node::answer(request, 404, &format!("The messaging entity '{name}' could not be found."), Value::Null);
    }
    if !management_allowed(conn, request, &endpoint.entity) {
        return node::answer(request, 401, "Unauthorized: put a token on $cbs or send security_token", Value::Null);
    }
    let count = endpoint.partition_count();
    match kind.as_str() {
        "com.microsoft:eventhub" => {
            let ids = (0..count).map(|p| Value::String(p.to_string())).collect::<Vec<_>>();
            let body = string_map(vec![
                ("name", Value::String(endpoint.entity.clone())),
                ("type", Value::String(kind.clone())),
                ("created_at", Value::Timestamp(Timestamp::from_milliseconds(endpoint.created_ms))),
                ("partition_count", Value::Int(count as i32)),
                ("partition_ids", Value::Array(ids.into())),
            ]);
            node::answer(request, 200, "OK", body)
        }
        "com.microsoft:partition" => {
            let partition = node::app_property(request, "partition").unwrap_or_default();
            let Some(p) = partition.parse::<u32>().ok().filter(|p| *p < count) else {
                return node::answer(request, 404, &format!("The partition '{partition}' could not be found."), Value::Null);
            };
            let info = conn.server.hub().partition_info(p);
            let (last_seq, last_offset, last_ms) = match info.last {
                Some((seq, offset, ms)) => (seq as i64, offset.to_string(), ms),
                None => (-1, "-1".to_owned(), 0),
            };
            let body = string_map(vec![
                ("name", Value::String(endpoint.entity.clone())),
                ("type", Value::String(kind.clone())),
                ("partition", Value::String(partition.clone())),
                ("begin_sequence_number", Value::Long(info.begin_sequence_number as i64)),
                ("last_enqueued_sequence_number", Value::Long(last_seq)),
                ("last_enqueued_offset", Value::String(last_offset)),
                ("last_enqueued_time_utc", Value::Timestamp(Timestamp::from_milliseconds(last_ms))),
                ("is_partition_empty", Value::Bool(info.last.is_none())),
            ]);
            node::answer(request, 200, "OK", body)
        }
        other => node::answer(request, 400, &format!("Bad request: unsupported type '{other}'"), Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let p = |s: &str| parse_selector(s).unwrap();
        assert_eq!(p("amqp.annotation.x-opt-offset > '-1'"), StartPosition::AfterOffset(0));
        assert_eq!(p("amqp.annotation.x-opt-offset > '17'"), StartPosition::AfterOffset(17));
        assert_eq!(p("amqp.annotation.x-opt-offset >= '17'"), StartPosition::AfterOffset(16));
        assert_eq!(p("amqp.annotation.x-opt-offset > '@latest'"), StartPosition::Latest);
        assert_eq!(p("amqp.annotation.x-opt-sequence-number >= '5'"), StartPosition::SequenceNumber { value: 5, inclusive: true });
        assert_eq!(p("amqp.annotation.x-opt-sequence-number > '5'"), StartPosition::SequenceNumber { value: 5, inclusive: false });
        assert_eq!(p("amqp.annotation.x-opt-enqueued-time > '1700000000000'"), StartPosition::EnqueuedTime { ms: 1_700_000_000_000, inclusive: false });
        assert!(parse_selector("amqp.annotation.x-opt-offset < '5'").is_err());
        assert!(parse_selector("DROP TABLE").is_err());
        assert!(parse_selector("amqp.annotation.x-opt-sequence-number > 'x'").is_err());
    }
}
