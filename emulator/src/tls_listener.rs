//! Owns the accept loop of the emulator's TLS listeners (MQTT on 8883, AMQP on 5671): every
//! accepted socket gets its own task and a bounded TLS handshake, so a slow or silent client
//! never holds up the next one, and a failed accept (EMFILE, ECONNABORTED) never stops the loop.

use std::future::Future;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Accepts until the listener task is aborted; `serve` gets each established TLS stream.
pub async fn serve<F, Fut>(what: &'static str, listener: TcpListener, acceptor: TlsAcceptor, handshake: Duration, serve: F)
where
    F: Fn(TlsStream<TcpStream>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("{what}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let serve = serve.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve(tls).await,
                Ok(Err(e)) => log::debug!("{what}: TLS handshake with {peer} failed: {e}"),
                Err(_) => log::debug!("{what}: TLS handshake with {peer} timed out"),
            }
        });
    }
}
