//! Owns SASL on the AMQP listener: ANONYMOUS and MSSBCBS (the peer authenticates later through
//! `$cbs`, as the Azure SDKs do), and PLAIN with a shared access policy name and either a SAS token
//! or the policy key (`iothubowner@sas.root.<hub>` as older service clients send it), which
//! grants the connection the policy's claims at once.

use std::sync::Arc;

use fe2o3_amqp::acceptor::sasl_acceptor::{SaslAcceptor, SaslServerFrame};
use fe2o3_amqp_types::primitives::{Array, Symbol};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};

use super::cbs::{self, Claims};
use crate::hub::Hub;

pub const ANONYMOUS: &str = "ANONYMOUS";
pub const PLAIN: &str = "PLAIN";
/// The Azure SDKs' name for "anonymous now, a CBS token later".
pub const MSSBCBS: &str = "MSSBCBS";

#[derive(Clone)]
pub struct HubSasl {
    hub: Arc<Hub>,
    claims: Claims,
}

impl HubSasl {
    pub fn new(hub: Arc<Hub>, claims: Claims) -> HubSasl {
        HubSasl { hub, claims }
    }

    fn plain(&self, response: &[u8]) -> SaslCode {
        let mut parts = response.split(|b| *b == 0);
        let (Some(_authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next()) else {
            return SaslCode::Auth;
        };
        let (Ok(user), Ok(password)) = (std::str::from_utf8(authcid), std::str::from_utf8(password)) else {
            return SaslCode::Auth;
        };
        // `iothubowner@sas.root.myhub` names the policy before the '@'.
        let policy = user.split('@').next().unwrap_or_default();
        match cbs::plain_claim(&self.hub, policy, password) {
            Ok(claim) => {
                self.claims.add(claim);
                SaslCode::Ok
            }
            Err(why) => {
                log::debug!("amqp: SASL PLAIN refused: {why}");
                SaslCode::Auth
            }
        }
    }
}

fn outcome(code: SaslCode) -> SaslServerFrame {
    SaslServerFrame::Outcome(SaslOutcome { code, additional_data: None })
}

impl SaslAcceptor for HubSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![Symbol::from(MSSBCBS), Symbol::from(ANONYMOUS), Symbol::from(PLAIN)])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        match init.mechanism.as_str() {
            ANONYMOUS | MSSBCBS => outcome(SaslCode::Ok),
            PLAIN => outcome(self.plain(init.initial_response.as_ref().map(|b| b.as_slice()).unwrap_or_default())),
            _ => outcome(SaslCode::Auth),
        }
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        // No mechanism offered here sends a challenge, so a response is a protocol error.
        outcome(SaslCode::Sys)
    }
}
