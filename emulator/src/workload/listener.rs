//! Owns the workload API's listeners: plain HTTP/1.1 (hyper) over a Unix socket, as iotedged
//! serves modules, or over TCP (`http://host:port`, as on hosts without Unix sockets). No TLS:
//! the socket is local, and what it hands out is the trust bundle needed to verify TLS.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::api::WorkloadApi;

/// A client that connects and never sends a request head is cut off after this long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Something that hands out connections: a Unix or a TCP listener.
pub trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_io(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Listener for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept_io(&self) -> io::Result<Self::Io> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept_io(&self) -> io::Result<Self::Io> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Accepts connections until this future is dropped (aborted); each connection gets its own
/// task, and dropping the loop ends them all with it.
pub async fn serve<L: Listener>(listener: L, api: Arc<WorkloadApi>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow with every module ever seen.
        while connections.try_join_next().is_some() {}
        let io = match listener.accept_io().await {
            Ok(io) => io,
            Err(e) => {
                log::warn!("workload: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let api = api.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, std::convert::Infallible>(api.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(io), service);
            if let Err(e) = conn.await {
                log::debug!("workload: connection ended: {e}");
            }
        });
    }
}
