//! Owns Claims-Based Security: the `$cbs` node's `put-token` operation, which checks a SAS token
//! (a hub shared access policy; audience the hub, `amqps://<hub>/...` or the Event Hub-compatible
//! `sb://<hub>/<entity>`), and the claims a connection holds once a token was accepted. Error
//! texts never contain a token, signature or key.

use std::sync::{Arc, Mutex};

use fe2o3_amqp::link::Receiver;
use fe2o3_amqp_types::messaging::{AmqpValue, Body};
use fe2o3_amqp_types::primitives::Value;
use ironhub_protocol::sas::SasToken;

use super::node::{self, AmqpMessage};
use super::Connection;
use crate::hub::auth::{host_matches, policy_rights, unix_now, Right};
use crate::hub::Hub;

pub const ADDRESS: &str = "$cbs";

/// What one accepted token lets the connection do, until it expires.
#[derive(Clone, Debug)]
pub struct Claim {
    /// The audience's path below the hub host (`""`: the whole hub).
    pub scope: String,
    pub rights: &'static [Right],
    /// Unix seconds; `u64::MAX` for a policy key given in SASL PLAIN.
    pub expiry: u64,
}

/// A connection's claims (shared with its SASL exchange, which may add one).
#[derive(Clone, Default)]
pub struct Claims(Arc<Mutex<Vec<Claim>>>);

impl Claims {
    pub fn add(&self, claim: Claim) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(claim);
    }

    /// True when an unexpired claim with `right` covers `path` (a link's address path).
    pub fn allows(&self, path: &str, right: Right) -> bool {
        let now = unix_now();
        let path = path.trim_matches('/');
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|c| {
            c.expiry > now
                && c.rights.contains(&right)
                && (c.scope.is_empty()
                    || path.eq_ignore_ascii_case(&c.scope)
                    || path.to_ascii_lowercase().starts_with(&format!("{}/", c.scope.to_ascii_lowercase())))
        })
    }
}

/// `sb://host/path`, `amqps://host/path` or `host/path` → (host, path).
fn split_audience(audience: &str) -> (&str, &str) {
    let rest = audience.split_once("://").map_or(audience, |(_, r)| r);
    match rest.split_once('/') {
        Some((host, path)) => (host, path.trim_matches('/')),
        None => (rest, ""),
    }
}

/// Checks a policy token for `audience` (the put-token `name`); the claim it grants.
pub fn check_token(hub: &Hub, audience: &str, token: &str) -> Result<Claim, String> {
    let token = SasToken::parse(token).map_err(|e| e.to_string())?;
    let (host, scope) = split_audience(&token.resource);
    let (audience_host, audience_path) = split_audience(audience);
    if !host_matches(hub.hostname(), host) || !host_matches(hub.hostname(), audience_host) {
        return Err("the token was issued for another hub".into());
    }
    if !audience_path.trim_matches('/').to_ascii_lowercase().starts_with(&scope.to_ascii_lowercase()) {
        return Err("the token's resource does not cover the audience".into());
    }
    let policy = token.key_name.as_deref().ok_or("the token names no shared access policy (skn)")?;
    let rights = policy_rights(policy).ok_or_else(|| format!("unknown shared access policy '{policy}'"))?;
    if !token.verify(hub.policy_key()) && !signed_with_key_text(&token, hub.policy_key()) {
        return Err("the signature does not match the policy key".into());
    }
    if token.is_expired_at(unix_now()) {
        return Err("the token has expired".into());
    }
    Ok(Claim { scope: scope.to_owned(), rights, expiry: token.expiry })
}

/// Service Bus and Event Hubs clients use the key's base64 text itself as the HMAC key (IoT Hub
/// clients decode it first); both are the policy's key.
fn signed_with_key_text(token: &SasToken, key: &str) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(&token.signature) else { return false };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) else { return false };
    mac.update(format!("{}\n{}", token.encoded_resource, token.expiry).as_bytes());
    mac.verify_slice(&signature).is_ok()
}

/// SASL PLAIN: `password` is a SAS token for the hub or the policy's key itself.
pub fn plain_claim(hub: &Hub, policy: &str, password: &str) -> Result<Claim, String> {
    let rights = policy_rights(policy).ok_or_else(|| format!("unknown shared access policy '{policy}'"))?;
    if password.trim_start().starts_with("SharedAccessSignature") {
        // The token names its own policy (`skn`), which is what it grants.
        return check_token(hub, hub.hostname(), password);
    }
    if password == hub.policy_key() {
        Ok(Claim { scope: String::new(), rights, expiry: u64::MAX })
    } else {
        Err("the password is neither a valid token nor the policy key".into())
    }
}

/// Serves the `$cbs` request link: each `put-token` gets a 200 and a claim, or a 401.
pub async fn serve_requests(conn: Arc<Connection>, receiver: Receiver) {
    node::serve_requests(conn, ADDRESS, receiver, |conn, request| {
        let (status, description) = put_token(conn, request);
        node::answer(request, status, &description, Value::Null)
    })
    .await
}

fn put_token(conn: &Connection, request: &AmqpMessage) -> (i32, String) {
    if node::app_property(request, "operation").as_deref() != Some("put-token") {
        return (400, "Bad request: the only $cbs operation is put-token".into());
    }
    let audience = node::app_property(request, "name").unwrap_or_default();
    let token = match &request.body {
        Body::Value(AmqpValue(Value::String(token))) => token.as_str(),
        _ => return (400, "Bad request: the token must be an AMQP string value".into()),
    };
    match check_token(conn.server.hub(), &audience, token) {
        Ok(claim) => {
            conn.claims.add(claim);
            (200, "OK".into())
        }
        Err(why) => {
            log::debug!("amqp: put-token refused: {why}");
            (401, format!("Unauthorized: {why}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences() {
        assert_eq!(split_audience("sb://h/hub/"), ("h", "hub"));
        assert_eq!(split_audience("h"), ("h", ""));
        assert_eq!(split_audience("amqps://h:5671/messages/devicebound"), ("h:5671", "messages/devicebound"));
    }

    #[test]
    fn claims_cover_their_scope_only() {
        let claims = Claims::default();
        claims.add(Claim { scope: "hub".into(), rights: &[Right::ServiceConnect], expiry: u64::MAX });
        assert!(claims.allows("hub/ConsumerGroups/$Default/Partitions/0", Right::ServiceConnect));
        assert!(claims.allows("HUB", Right::ServiceConnect));
        assert!(!claims.allows("hubx/ConsumerGroups/$Default/Partitions/0", Right::ServiceConnect));
        assert!(!claims.allows("hub", Right::RegistryRead));
        claims.add(Claim { scope: String::new(), rights: &[Right::RegistryRead], expiry: 1 });
        assert!(!claims.allows("x", Right::RegistryRead), "expired");
    }
}
