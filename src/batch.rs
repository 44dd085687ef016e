//! `send_messages`: a pipelined batch of telemetry, owned by the core so every surface (Python's
//! `send_messages`, C, Go) gets the same semantics: every message is validated before any is
//! queued, all are queued in order without waiting for earlier PUBACKs, and the call returns
//! once every PUBACK (or failure) is in, with the first failure.

use crate::client::Client;
use crate::error::Result;
use crate::message::Message;

impl Client {
    /// Sends `messages` in order, pipelined; returns when all are acknowledged, or the first error
    /// (after waiting for the others, so none is left in flight unseen). Nothing is queued when
    /// any message is invalid.
    pub async fn send_messages(&self, messages: &[Message]) -> Result<()> {
        messages.iter().try_for_each(crate::validate::message)?;
        let futures: Vec<_> = messages.iter().map(|m| self.send_message_pipelined(m)).collect();
        let mut first_error = None;
        for f in futures {
            if let Err(e) = f.await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl crate::blocking::Client {
    /// Blocking form of [`Client::send_messages`].
    pub fn send_messages(&self, messages: &[Message]) -> Result<()> {
        let c = self.as_async().clone();
        let m = messages.to_vec();
        crate::runtime::block_on(async move { c.send_messages(&m).await })
    }
}
