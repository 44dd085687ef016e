//! MQTT packet I/O over any byte stream, with rumqttc's maintained v4 codec
//! (`rumqttc::mqttbytes::v4::Packet::{read, write}`), never hand-parsed bytes.
//!
//! Reading is buffered: one socket read may carry many pipelined packets, or a packet may
//! span many reads (and many WebSocket frames). A packet whose announced length exceeds the
//! limit is refused from its fixed header, before its body is buffered.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use rumqttc::mqttbytes::Error as CodecError;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest accepted packet body: a 256 KB telemetry payload plus a maximal topic
/// (2-byte length + 65535 bytes of property bag) and the packet id. The telemetry limit itself
/// is enforced on the payload in `inbound`.
pub(super) const MAX_INCOMING_PACKET: usize = ironhub_protocol::limits::MAX_TELEMETRY_BYTES + 2 + 65_535 + 2;
/// What the broker itself may send: C2D/input (64 KB), method (128 KB) and twin (~100 KB
/// for a full twin) bodies plus topics; generous so a hub-side size check is the one that bites.
pub(super) const MAX_OUTGOING_PACKET: usize = 1024 * 1024;

const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum FramingError {
    #[error("malformed or oversized packet: {0}")]
    Codec(#[from] CodecError),
    #[error("connection ended in the middle of a packet")]
    Truncated,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub(crate) struct PacketReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        PacketReader { inner, buf: BytesMut::with_capacity(READ_CHUNK) }
    }

    /// The next packet, or `None` at a clean end of stream. Cancel-safe: partial input
    /// stays in the buffer, so this can sit in a `select!`.
    pub(crate) async fn read(&mut self) -> Result<Option<Packet>, FramingError> {
        loop {
            match Packet::read(&mut self.buf, MAX_INCOMING_PACKET) {
                Ok(packet) => return Ok(Some(packet)),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => return Err(e.into()),
            }
            self.buf.reserve(READ_CHUNK);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(FramingError::Truncated) };
            }
        }
    }
}

/// Appends `packet` to `out`; false if it cannot be encoded (only an oversized hub-side
/// message can do that, and it is then dropped rather than sent broken).
pub(crate) fn encode(packet: &Packet, out: &mut BytesMut) -> bool {
    match packet.write(out, MAX_OUTGOING_PACKET) {
        Ok(_) => true,
        Err(e) => {
            log::warn!("mqtt: dropping an outgoing packet: {e}");
            false
        }
    }
}
