//! The fault-injection proxy on its own, over plain loopback TCP to a small echo server: it
//! forwards both ways, cuts with RST or FIN, stalls without losing bytes, black-holes (reads,
//! never answers, never reaches upstream) and heals.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::fault_proxy::{Cut, FaultProxy, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const QUIET: Duration = Duration::from_millis(300);

/// An echo server that counts the connections it accepted.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn read_exact_within(s: &mut TcpStream, n: usize, within: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n];
    match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

async fn roundtrip(s: &mut TcpStream, data: &[u8]) -> Option<Vec<u8>> {
    s.write_all(data).await.ok()?;
    read_exact_within(s, data.len(), Duration::from_secs(5)).await
}

#[tokio::test]
async fn forwards_both_ways() {
    let (upstream, accepted) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"hello").await.as_deref(), Some(&b"hello"[..]));
    let big = vec![7u8; 200_000];
    assert_eq!(roundtrip(&mut s, &big).await, Some(big));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(proxy.accepted(), 1);
    assert!(proxy.forwarded_bytes() >= 400_010);
}

#[tokio::test]
async fn cut_with_reset_or_fin_closes_every_connection_and_new_ones_still_work() {
    let (upstream, _) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
    roundtrip(&mut a, b"a").await.unwrap();
    roundtrip(&mut b, b"b").await.unwrap();

    proxy.cut(Cut::Reset);
    let mut buf = [0u8; 8];
    for s in [&mut a, &mut b] {
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("cut is prompt");
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    }

    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(roundtrip(&mut c, b"again").await.as_deref(), Some(&b"again"[..]));
    proxy.cut(Cut::Fin);
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.expect("cut is prompt").unwrap();
    assert_eq!(n, 0, "an orderly close reads as end of stream");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(proxy.open_connections(), 0);
}

/// A proxy in front of an echo server, and one link through it that has carried bytes.
async fn proxied_link() -> (FaultProxy, TcpStream, Arc<AtomicUsize>) {
    let (upstream, accepted) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    roundtrip(&mut s, b"warm").await.unwrap();
    (proxy, s, accepted)
}

#[tokio::test]
async fn stall_holds_bytes_without_closing_and_heal_delivers_them() {
    let (proxy, mut s, _) = proxied_link().await;

    proxy.stall();
    assert_eq!(proxy.mode(), Mode::Stall);
    s.write_all(b"held back").await.unwrap();
    assert!(read_exact_within(&mut s, 9, QUIET).await.is_none(), "nothing moves while stalled");
    assert_eq!(proxy.open_connections(), 1, "the socket stays open");

    proxy.heal();
    assert_eq!(read_exact_within(&mut s, 9, Duration::from_secs(5)).await.as_deref(), Some(&b"held back"[..]));
}

#[tokio::test]
async fn black_hole_reads_and_drops_and_new_links_never_reach_upstream() {
    let (proxy, mut old, accepted) = proxied_link().await;

    proxy.black_hole();
    old.write_all(b"into the void").await.unwrap();
    assert!(read_exact_within(&mut old, 1, QUIET).await.is_none(), "no answer on an open link");
    let mut fresh = TcpStream::connect(proxy.addr()).await.expect("still accepts");
    fresh.write_all(b"hello?").await.unwrap();
    assert!(read_exact_within(&mut fresh, 1, QUIET).await.is_none(), "no answer on a new link");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the new link never reached upstream");
    assert_eq!(proxy.discarded_bytes(), 19);

    proxy.heal();
    assert!(read_exact_within(&mut old, 1, QUIET).await.is_none(), "black-holed bytes stay lost");
    let mut healed = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(roundtrip(&mut healed, b"back").await.as_deref(), Some(&b"back"[..]));
    // A cut still reaches a link accepted while black-holed.
    proxy.cut(Cut::Fin);
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), fresh.read(&mut buf)).await.expect("cut is prompt").unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn an_upstream_that_is_down_resets_the_client_and_a_new_upstream_takes_over() {
    let (upstream, _) = echo_server().await;
    // A port nothing listens on: bind, note, close.
    let dead = TcpListener::bind(("127.0.0.1", 0)).await.unwrap().local_addr().unwrap();
    let proxy = FaultProxy::start(dead).await.unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("prompt");
    assert!(matches!(r, Ok(0)) || r.unwrap_err().kind() == std::io::ErrorKind::ConnectionReset);
    proxy.set_upstream(upstream);
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"up").await.as_deref(), Some(&b"up"[..]));
}
