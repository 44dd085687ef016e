//! One HTTP/1.1 client connection (hyper's) over any byte stream: TLS to the hub or blob storage
//! (`transport::http`), a Unix socket or TCP to the IoT Edge workload API (`auth::edge`). The
//! stream is a trait object, so hyper's client connection code is compiled once for all of them
//! rather than once per stream type (each copy was tens of KB of libironhub.so).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream an HTTP/1.1 exchange runs over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// An HTTP/1.1 connection: the handle requests go through and the task doing its I/O, which ends
/// with the handle, so a connection dropped mid-request (a timeout) or evicted from a pool is
/// closed rather than left waiting on a dead link.
pub(crate) struct Connection {
    pub sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The HTTP/1.1 handshake over `io` (nothing is sent yet: hyper's handshake only sets up).
pub(crate) async fn handshake(io: Box<dyn Io>) -> hyper::Result<Connection> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Connection { sender, driver })
}

/// The whole body of an answer, at most `limit` bytes: a peer sending more is cut off rather than
/// filling memory.
pub(crate) async fn read_body(
    body: hyper::body::Incoming,
    limit: usize,
) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
    Ok(Limited::new(body, limit).collect().await?.to_bytes())
}
