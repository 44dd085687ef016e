//! MQTT over WebSockets (`wss://host/$iothub/websocket`, subprotocol `mqtt`): the upgraded
//! connection presented as a plain byte stream, so the same session code serves it.
//!
//! MQTT packets and WebSocket binary messages are independent: one message may hold several
//! packets or a part of one. Reading hands out message bytes as they come; the MQTT framing
//! layer reassembles packets. Each write becomes one binary message.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The largest WebSocket frame or message accepted: one MQTT packet at the limit with its header.
const MAX_WS_MESSAGE: usize = super::framing::MAX_INCOMING_PACKET + 5;

pub(crate) struct WsByteStream<S> {
    ws: WebSocketStream<S>,
    /// Unread rest of the last binary message.
    pending: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsByteStream<S> {
    /// Wraps a connection whose HTTP upgrade (101) was already answered.
    /// Frames and messages are bounded by the MQTT packet limit from the first byte on (before
    /// CONNECT too): tungstenite's defaults (16 MB frames, 64 MB messages) would let any peer
    /// make the hub buffer that much per connection.
    pub(super) async fn server(upgraded: S) -> Self {
        Self::server_with_limit(upgraded, MAX_WS_MESSAGE).await
    }

    /// The same for another protocol over WebSockets (AMQP), bounded by that protocol's limit.
    pub(crate) async fn server_with_limit(upgraded: S, max_message: usize) -> Self {
        let config = WebSocketConfig::default().max_frame_size(Some(max_message)).max_message_size(Some(max_message));
        WsByteStream { ws: WebSocketStream::from_raw_socket(upgraded, Role::Server, Some(config)).await, pending: Bytes::new() }
    }
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsByteStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match ready!(self.ws.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                // Close frame or end of stream: a clean EOF for the MQTT layer.
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                // tungstenite answers pings itself; pongs carry nothing for MQTT.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "text frame on an MQTT WebSocket")))
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsByteStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.ws.poll_ready_unpin(cx)).map_err(ws_error)?;
        self.ws.start_send_unpin(Message::Binary(Bytes::copy_from_slice(data))).map_err(ws_error)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_close_unpin(cx).map_err(ws_error)
    }
}
