//! Identity and credentials: who a client is (`Identity`), how it proves it (`Credential`), and
//! the `Authenticator` that turns a credential into the MQTT password (a SAS token), knows when
//! it must be renewed, and renews it (key-based and Edge credentials by themselves; a given
//! token only through `update_sastoken`).

#[cfg(feature = "edge")]
pub mod edge;
pub mod private_key;

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use ironhub_protocol::sas::{self, SasResource, SasToken};

use crate::error::{Error, Result};
use crate::message::X509;

/// A renewable token is replaced this many seconds before it expires.
pub const RENEW_BEFORE_EXPIRY_SECS: u64 = sas::RENEWAL_MARGIN_SECS;

/// The identity a client connects as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The hub host name (`HostName=`): username and SAS resource always use it.
    pub hostname: String,
    pub device_id: String,
    pub module_id: Option<String>,
}

impl Identity {
    /// MQTT client id: `{deviceId}` or `{deviceId}/{moduleId}`.
    pub fn client_id(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{}", self.device_id, m),
            None => self.device_id.clone(),
        }
    }

    /// SAS resource (not encoded).
    pub fn sas_resource(&self) -> String {
        sas::device_resource(&self.hostname, &self.device_id, self.module_id.as_deref())
    }
}

/// How a client proves its identity.
#[derive(Clone)]
pub(crate) enum Credential {
    /// Shared access key: tokens generated and renewed by the client.
    SymmetricKey { key: String },
    /// A token given by the application; renewed only by `update_sastoken`.
    SasToken,
    /// Client certificate; the MQTT password is empty.
    X509(X509),
    /// IoT Edge workload API signs every token (renewable).
    #[cfg(feature = "edge")]
    Edge(edge::Workload),
}

/// A token currently in use (its text is a secret: never logged).
#[derive(Clone)]
pub(crate) struct CurrentToken {
    pub token: String,
    pub expiry: u64,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) struct Authenticator {
    identity: Identity,
    credential: Credential,
    ttl: u64,
    current: Mutex<Option<CurrentToken>>,
}

impl Authenticator {
    pub fn new(identity: Identity, credential: Credential, ttl: u64) -> Authenticator {
        Authenticator { identity, credential, ttl, current: Mutex::new(None) }
    }

    /// Seconds before expiry at which the token is replaced: 120 s, or half the lifetime of
    /// tokens shorter than 4 minutes (so a short `sastoken_ttl` renews instead of looping).
    pub fn renewal_margin(&self) -> u64 {
        if self.is_renewable() {
            RENEW_BEFORE_EXPIRY_SECS.min(self.ttl / 2)
        } else {
            RENEW_BEFORE_EXPIRY_SECS
        }
    }

    /// A given SAS token credential; validates the token against the identity first.
    pub fn from_token(identity: Identity, token: &str) -> Result<Authenticator> {
        let parsed = validate_token_for(&identity, token)?;
        let auth = Authenticator::new(identity, Credential::SasToken, 0);
        *auth.lock() = Some(CurrentToken { token: token.trim().to_string(), expiry: parsed.expiry });
        Ok(auth)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CurrentToken>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// Key-based and Edge credentials make their own tokens; a given token does not.
    pub fn is_renewable(&self) -> bool {
        match self.credential {
            Credential::SymmetricKey { .. } => true,
            #[cfg(feature = "edge")]
            Credential::Edge(_) => true,
            _ => false,
        }
    }

    pub fn is_sastoken(&self) -> bool {
        matches!(self.credential, Credential::SasToken)
    }

    /// The password for the next CONNECT (None for X.509). A renewable credential makes a new
    /// token when none exists, when `fresh` is asked for, or when the current one is within the
    /// renewal margin.
    pub async fn password(&self, fresh: bool) -> Result<Option<CurrentToken>> {
        if matches!(self.credential, Credential::X509(_)) {
            return Ok(None);
        }
        let now = unix_now();
        if let Some(cur) = self.lock().clone() {
            let due = cur.expiry <= now + self.renewal_margin();
            if !self.is_renewable() || (!fresh && !due) {
                return Ok(Some(cur));
            }
        }
        let expiry = now + self.ttl;
        let resource = self.identity.sas_resource();
        let token = match &self.credential {
            Credential::SymmetricKey { key } => sas::generate_token(&resource, key, None, expiry)?,
            #[cfg(feature = "edge")]
            Credential::Edge(w) => {
                let to_sign = sas::string_to_sign(&sas::encode_resource(&resource), expiry);
                let signature = w.sign(&to_sign).await?;
                sas::format_token(&resource, &signature, None, expiry)
            }
            _ => return Err(Error::Credential("no SAS token available".into())),
        };
        let cur = CurrentToken { token, expiry };
        *self.lock() = Some(cur.clone());
        Ok(Some(cur))
    }

    /// Expiry of the token in use (None for X.509 or before the first token).
    pub fn current_expiry(&self) -> Option<u64> {
        self.lock().as_ref().map(|c| c.expiry)
    }

    /// `update_sastoken`: only for a given-token credential; must name the same resource, not expired.
    pub fn update_token(&self, token: &str) -> Result<()> {
        if !self.is_sastoken() {
            return Err(Error::Client(
                "update_sastoken is only for clients created with create_from_sastoken".into(),
            ));
        }
        let parsed = validate_token_for(&self.identity, token)?;
        *self.lock() = Some(CurrentToken { token: token.trim().to_string(), expiry: parsed.expiry });
        Ok(())
    }
}

/// Parses a token and checks that it names `identity` (host case-insensitively) and is unexpired.
pub(crate) fn validate_token_for(identity: &Identity, token: &str) -> Result<SasToken> {
    let parsed = SasToken::parse(token)?;
    let resource = SasResource::parse(&parsed.resource)?;
    let same = match &resource {
        SasResource::Device { host, device_id } => {
            identity.module_id.is_none() && *device_id == identity.device_id && host.eq_ignore_ascii_case(&identity.hostname)
        }
        SasResource::Module { host, device_id, module_id } => {
            identity.module_id.as_deref() == Some(module_id.as_str())
                && *device_id == identity.device_id
                && host.eq_ignore_ascii_case(&identity.hostname)
        }
        SasResource::Hub { .. } => false,
    };
    if !same {
        return Err(Error::invalid("the SAS token does not name this client's hub, device and module"));
    }
    if parsed.is_expired_at(unix_now()) {
        return Err(Error::invalid("the SAS token has expired"));
    }
    Ok(parsed)
}

/// Identity named by a token (for `create_from_sastoken`).
pub(crate) fn identity_from_token(token: &str) -> Result<Identity> {
    let parsed = SasToken::parse(token)?;
    match SasResource::parse(&parsed.resource)? {
        SasResource::Device { host, device_id } => Ok(Identity { hostname: host, device_id, module_id: None }),
        SasResource::Module { host, device_id, module_id } => {
            Ok(Identity { hostname: host, device_id, module_id: Some(module_id) })
        }
        SasResource::Hub { .. } => Err(Error::invalid("a device or module SAS token is required, not a service token")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn ident(module: Option<&str>) -> Identity {
        Identity { hostname: "Hub.Example".into(), device_id: "d1".into(), module_id: module.map(str::to_string) }
    }

    fn token(resource: &str, expiry: u64) -> String {
        sas::generate_token(resource, KEY, None, expiry).unwrap()
    }

    #[test]
    fn tokens_must_name_this_identity_and_be_unexpired() {
        let later = unix_now() + 3600;
        assert!(validate_token_for(&ident(None), &token("hub.example/devices/d1", later)).is_ok(), "host is case-insensitive");
        assert!(validate_token_for(&ident(Some("m")), &token("hub.example/devices/d1/modules/m", later)).is_ok());
        for bad in [
            token("other.example/devices/d1", later),
            token("hub.example/devices/d2", later),
            token("hub.example/devices/d1/modules/m", later),
            token("hub.example", later),
            token("hub.example/devices/d1", unix_now() - 1),
        ] {
            let e = validate_token_for(&ident(None), &bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
            assert!(!e.to_string().contains("sig="), "{e}");
        }
    }

    #[test]
    fn identity_comes_from_the_token_resource() {
        let id = identity_from_token(&token("h/devices/d/modules/m", unix_now() + 60)).unwrap();
        assert_eq!(id, Identity { hostname: "h".into(), device_id: "d".into(), module_id: Some("m".into()) });
        assert!(identity_from_token(&token("h", unix_now() + 60)).is_err());
    }

    #[tokio::test]
    async fn key_based_tokens_renew_inside_the_margin_only() {
        let a = Authenticator::new(ident(None), Credential::SymmetricKey { key: KEY.into() }, 3600);
        assert_eq!(a.renewal_margin(), RENEW_BEFORE_EXPIRY_SECS);
        let first = a.password(false).await.unwrap().unwrap();
        assert!(first.expiry >= unix_now() + 3599);
        let again = a.password(false).await.unwrap().unwrap();
        assert_eq!(first.token, again.token, "not renewed before the margin");
        let short = Authenticator::new(ident(None), Credential::SymmetricKey { key: KEY.into() }, 10);
        assert_eq!(short.renewal_margin(), 5, "short tokens renew at half-life");
        let given = Authenticator::from_token(ident(None), &token("hub.example/devices/d1", unix_now() + 30)).unwrap();
        assert!(!given.is_renewable());
        let t = given.password(true).await.unwrap().unwrap();
        assert_eq!(t.expiry, given.current_expiry().unwrap(), "a given token is never replaced by the client");
    }
}
