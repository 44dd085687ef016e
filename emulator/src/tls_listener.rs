//! Owns the accept loop of the emulator's TLS listeners (MQTT on 8883, AMQP on 5671) and the cap
//! on the connections they hold at once: every accepted socket gets its own task and a bounded TLS
//! handshake, so a slow or silent client never holds up the next one, and a failed accept (EMFILE,
//! ECONNABORTED) never stops the loop.
//!
//! The cap exists because a connection past the process's open files limit is worse than a refused
//! one: `accept` fails with EMFILE, the connection stays in the kernel's queue, complete as far as
//! the client knows, and the client waits for a TLS answer or CONNACK that never comes (what a
//! 50,000-client run saw at 20,000, the hard limit of its machine). Within the cap, a client over
//! it is accepted and closed at once, so it fails fast and retries.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Descriptors kept out of the cap for everything else the emulator opens: HTTPS connections (they
/// have their own cap, added on top), the state database, logs, the workload socket.
const RESERVED_DESCRIPTORS: usize = 256;

/// How many TLS connections (MQTT and AMQP together) the listeners hold at once; shared by them.
#[derive(Clone)]
pub struct ConnectionCap {
    size: usize,
    permits: Arc<Semaphore>,
}

impl ConnectionCap {
    /// `configured`, or what the open files limit leaves once `other_connections` (the HTTPS cap)
    /// and a reserve are set aside.
    pub fn new(configured: Option<usize>, other_connections: usize) -> ConnectionCap {
        let size = configured
            .unwrap_or_else(|| open_files_limit().saturating_sub(other_connections + RESERVED_DESCRIPTORS).max(64));
        ConnectionCap { size, permits: Arc::new(Semaphore::new(size.min(Semaphore::MAX_PERMITS))) }
    }

    pub fn size(&self) -> usize {
        self.size
    }
}

fn open_files_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX / 2;
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX / 2)
}

/// Accepts until the listener task is aborted; `serve` gets each established TLS stream while a
/// permit of `cap` is free (the permit is held until `serve` returns).
pub async fn serve<F, Fut>(
    what: &'static str,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake: Duration,
    cap: ConnectionCap,
    serve: F,
) where
    F: Fn(TlsStream<TcpStream>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut refusing = false;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("{what}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = cap.permits.clone().try_acquire_owned() else {
            // Closed at once (the client sees the connection end during its handshake), logged
            // once per stretch of refusals rather than per client.
            if !refusing {
                log::warn!("{what}: at the cap of {} TLS connections held at once; closing new ones until one ends", cap.size);
                refusing = true;
            }
            drop(tcp);
            continue;
        };
        refusing = false;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let serve = serve.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve(tls).await,
                Ok(Err(e)) => log::debug!("{what}: TLS handshake with {peer} failed: {e}"),
                Err(_) => log::debug!("{what}: TLS handshake with {peer} timed out"),
            }
        });
    }
}
