//! ironhub-protocol: the IoT Hub wire format as pure functions, shared by the client (`ironhub`) and the
//! hub (`ironhub-emulator`) so that both sides read and write exactly the same bytes.
//!
//! Nothing here does I/O. Every function is deterministic given its inputs (the caller supplies the clock),
//! which is what makes these modules easy to unit-test and fuzz.

pub mod connection_string;
pub mod encoding;
pub mod error;
pub mod hub_error;
pub mod limits;
pub mod sas;
pub mod topics;
pub mod username;

pub use error::ProtocolError;
