//! The one error type of the protocol crate. Messages name what is wrong, never the secret that was
//! wrong: no key, signature or token text is ever formatted into one.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Worded as azure-iot-device words it ("Invalid Connection String - Incomplete"), so users searching
    /// for the official SDK's message find the same cause.
    #[error("Invalid Connection String - {0}")]
    InvalidConnectionString(&'static str),
    #[error("Invalid Symmetric Key")]
    InvalidSymmetricKey,
    #[error("Invalid SAS token: {0}")]
    InvalidSasToken(&'static str),
}
