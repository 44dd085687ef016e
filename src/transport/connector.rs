//! Opening one MQTT connection, outside the network loop (issue 8, invariant 1): DNS and the TCP
//! connection (direct or through the proxy), TLS, the WebSocket upgrade when asked, then CONNECT
//! and the hub's CONNACK. The result is a [`Stream`] the loop owns, so it can end every connection
//! with an MQTT DISCONNECT and a TLS `close_notify`.

use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
#[cfg(feature = "websocket")]
use futures::{SinkExt, StreamExt};
use rumqttc::mqttbytes::v4::{ConnAck, Connect, Login, Packet};
use rumqttc::ConnectReturnCode;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
#[cfg(feature = "websocket")]
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
#[cfg(feature = "websocket")]
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
#[cfg(feature = "websocket")]
use tokio_tungstenite::tungstenite::Message as WsMessage;
#[cfg(feature = "websocket")]
use tokio_tungstenite::WebSocketStream;

use crate::error::Error;
use crate::options::ClientOptions;

/// Room reserved in the read buffer before each read: a PUBACK, a ping response, a small C2D
/// message fit; larger packets grow it, and it shrinks back once they are consumed.
pub(crate) const READ_CHUNK: usize = 2 * 1024;

/// Why a connection attempt failed (the loop maps it to an error and a connection reason).
#[derive(Debug)]
pub(crate) enum ConnectFailure {
    /// The hub answered CONNACK with this code.
    Refused(ConnectReturnCode),
    /// No CONNACK in time.
    Timeout,
    /// DNS, TCP, proxy, TLS, WebSocket or MQTT framing failed.
    Io(String),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Refused(c) => write!(f, "the hub refused the connection ({c:?})"),
            ConnectFailure::Timeout => write!(f, "no CONNACK in time"),
            ConnectFailure::Io(e) => f.write_str(e),
        }
    }
}

fn io(e: impl std::fmt::Display) -> ConnectFailure {
    ConnectFailure::Io(e.to_string())
}

/// A TCP stream whose writes never raise SIGPIPE. tokio's vectored write is `writev`, which has
/// no MSG_NOSIGNAL: writing the goodbye to a peer that already closed would kill a C host
/// program that does not ignore SIGPIPE. Plain writes go through `send(MSG_NOSIGNAL)`; leaving
/// `poll_write_vectored` to its default makes rustls use them.
pub(crate) struct Tcp(pub(crate) TcpStream);

thread_local! {
    /// This thread is a sync caller reading its PUBACK (`reader::LinkReader`): `Tcp` reads the
    /// socket directly instead of waiting for the runtime's reactor to report it readable.
    static DIRECT_READ: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (a poll of a TLS read on this thread) with direct socket reads: a caller spinning for
/// its PUBACK must see the bytes as soon as the kernel has them, not after a runtime worker has
/// woken from epoll to mark the socket readable (the wake-up the spin is there to avoid).
pub(crate) fn direct_read<T>(f: impl FnOnce() -> T) -> T {
    DIRECT_READ.with(|d| d.set(true));
    let r = f();
    DIRECT_READ.with(|d| d.set(false));
    r
}

impl tokio::io::AsyncRead for Tcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if DIRECT_READ.with(|d| d.get()) {
            use std::io::Read;
            // The socket is non-blocking (tokio's): WouldBlock falls through to tokio's read,
            // which registers the waker (the loop's) for readiness.
            let sock = socket2::SockRef::from(&self.0);
            loop {
                match (&*sock).read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Tcp {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The halves of a TLS connection once split: the network loop reads, callers and the loop write.
pub(crate) type TlsReadHalf = ReadHalf<TlsStream<Tcp>>;
pub(crate) type TlsWriteHalf = WriteHalf<TlsStream<Tcp>>;

/// The byte stream under an MQTT connection: TLS, or WebSocket binary messages over TLS.
pub(crate) enum Stream {
    Tls(Box<TlsStream<Tcp>>),
    #[cfg(feature = "websocket")]
    Ws(Box<WebSocketStream<TlsStream<Tcp>>>),
}

impl Stream {
    /// Reads what is available into `buf`; 0 means the peer closed. Cancel-safe (the loop
    /// selects on it).
    pub async fn read(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Stream::Tls(s) => {
                buf.reserve(READ_CHUNK);
                s.read_buf(buf).await
            }
            #[cfg(feature = "websocket")]
            Stream::Ws(s) => loop {
                match s.next().await {
                    None | Some(Ok(WsMessage::Close(_))) => return Ok(0),
                    Some(Ok(WsMessage::Binary(b))) => {
                        buf.extend_from_slice(&b);
                        if !b.is_empty() {
                            return Ok(b.len());
                        }
                    }
                    Some(Ok(_)) => {} // ping/pong/text: tungstenite answers pings itself
                    Some(Err(e)) => return Err(std::io::Error::other(e)),
                }
            },
        }
    }

    /// Writes all of `data` (one TLS write, or one WebSocket message) and flushes.
    pub async fn write_all(&mut self, data: Bytes) -> std::io::Result<()> {
        match self {
            Stream::Tls(s) => {
                s.write_all(&data).await?;
                s.flush().await
            }
            #[cfg(feature = "websocket")]
            Stream::Ws(s) => s.send(WsMessage::Binary(data)).await.map_err(std::io::Error::other),
        }
    }

    /// A TLS stream split into its read half (`reader::LinkReader`), its write half
    /// (`writer::LinkWriter`) and its socket's descriptor; a WebSocket stream is given back whole.
    pub fn split(self) -> Result<(TlsReadHalf, TlsWriteHalf, RawFd), Stream> {
        match self {
            Stream::Tls(s) => {
                let fd = s.get_ref().0 .0.as_raw_fd();
                let (r, w) = tokio::io::split(*s);
                Ok((r, w, fd))
            }
            #[cfg(feature = "websocket")]
            ws @ Stream::Ws(_) => Err(ws),
        }
    }

    /// Ends the connection politely: a WebSocket close frame, then the TLS `close_notify`.
    pub async fn close(&mut self) {
        match self {
            Stream::Tls(s) => {
                let _ = s.shutdown().await;
            }
            #[cfg(feature = "websocket")]
            Stream::Ws(s) => {
                let _ = SinkExt::close(s.as_mut()).await;
                let _ = s.get_mut().shutdown().await;
            }
        }
    }
}

/// What a connection attempt needs.
pub(crate) struct ConnectParams {
    pub host: String,
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub options: ClientOptions,
    pub tls: std::sync::Arc<rustls::ClientConfig>,
    /// Largest packet accepted from the hub.
    pub max_incoming: usize,
}

/// Opens a connection and completes the MQTT handshake, within `CONNACK_TIMEOUT` overall.
/// Returns the stream and whatever the hub sent after its CONNACK (already read).
pub(crate) async fn connect(p: &ConnectParams, timeout: Duration) -> Result<(Stream, BytesMut), ConnectFailure> {
    match tokio::time::timeout(timeout, open(p)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectFailure::Timeout),
    }
}

async fn open(p: &ConnectParams) -> Result<(Stream, BytesMut), ConnectFailure> {
    let opts = &p.options;
    let port = if opts.websockets { opts.https_port } else { opts.mqtt_port };
    let tcp = crate::transport::proxy::connect_tcp(&p.host, port, opts.proxy_options.as_ref()).await.map_err(|e| match e {
        Error::ConnectionFailed(m) => ConnectFailure::Io(m),
        other => io(other),
    })?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(p.host.clone()).map_err(|_| io(format!("invalid host name {:?}", p.host)))?;
    let tls = tokio_rustls::TlsConnector::from(p.tls.clone()).connect(name, Tcp(tcp)).await.map_err(|e| io(format!("TLS: {e}")))?;
    #[cfg(feature = "websocket")]
    let mut stream = if opts.websockets {
        let url = format!("wss://{}:{}/$iothub/websocket", p.host, port);
        let mut request = url.into_client_request().map_err(io)?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", http::HeaderValue::from_static("mqtt"));
        let config = WebSocketConfig::default()
            .max_frame_size(Some(p.max_incoming + 5))
            .max_message_size(Some(p.max_incoming + 5));
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, tls, Some(config))
            .await
            .map_err(|e| io(format!("WebSocket upgrade: {e}")))?;
        Stream::Ws(Box::new(ws))
    } else {
        Stream::Tls(Box::new(tls))
    };
    #[cfg(not(feature = "websocket"))]
    let mut stream = Stream::Tls(Box::new(tls));

    let mut connect = Connect::new(p.client_id.clone());
    connect.keep_alive = opts.keep_alive.min(u16::MAX as u64) as u16;
    connect.clean_session = false;
    connect.login = Some(Login::new(p.username.clone(), p.password.clone()));
    let mut out = BytesMut::new();
    connect.write(&mut out).map_err(|e| io(format!("CONNECT: {e:?}")))?;
    stream.write_all(out.freeze()).await.map_err(io)?;

    let mut buf = BytesMut::new();
    loop {
        match Packet::read(&mut buf, p.max_incoming) {
            Ok(Packet::ConnAck(ConnAck { code: ConnectReturnCode::Success, .. })) => return Ok((stream, buf)),
            Ok(Packet::ConnAck(ConnAck { code, .. })) => {
                stream.close().await;
                return Err(ConnectFailure::Refused(code));
            }
            Ok(other) => return Err(io(format!("expected CONNACK, got {other:?}"))),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(io(format!("malformed CONNACK: {e:?}"))),
        }
        if stream.read(&mut buf).await.map_err(io)? == 0 {
            return Err(io("the hub closed the connection before its CONNACK"));
        }
    }
}
