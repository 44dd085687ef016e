//! The TCP connection under every MQTT link (TCP or WebSockets): DNS resolution, then a direct
//! connect or a tunnel through the client's `proxy_options`: HTTP CONNECT (Basic auth when a
//! user is given), SOCKS4 (SOCKS4a when the host is a name, so the proxy resolves it), SOCKS5
//! with or without username/password (`tokio-socks`). TLS and the WebSocket upgrade run over
//! the returned stream, so they are the same with or without a proxy. The tunnels are the Cargo
//! feature `proxy`; a build without it refuses `proxy_options` (`validate::proxy_options`).
//!
//! A proxy that refuses is `Error::ConnectionFailed` carrying the proxy's answer; the proxy
//! password never appears in a message or a log line (only the user name may).

use std::time::Duration;

#[cfg(feature = "proxy")]
use base64::Engine as _;
#[cfg(feature = "proxy")]
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::options::{ProxyOptions, ProxyType};

/// Bound on one connection attempt, DNS and proxy handshake included: an unreachable host or a
/// proxy that never answers fails the attempt instead of hanging the reconnect loop.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(feature = "proxy")]
/// Longest HTTP CONNECT answer head read: a proxy sending more is not a proxy we can talk to.
const MAX_CONNECT_HEAD: usize = 8 * 1024;

/// A TCP stream to `host:port`, direct or through `proxy`, within [`CONNECT_TIMEOUT`].
pub async fn connect_tcp(host: &str, port: u16, proxy: Option<&ProxyOptions>) -> Result<TcpStream> {
    connect_tcp_within(host, port, proxy, CONNECT_TIMEOUT).await
}

/// As [`connect_tcp`] with an explicit bound (tests use a short one).
pub async fn connect_tcp_within(
    host: &str,
    port: u16,
    proxy: Option<&ProxyOptions>,
    bound: Duration,
) -> Result<TcpStream> {
    let attempt = async {
        match proxy {
            None => direct(host, port).await,
            Some(p) => through(p, host, port).await,
        }
    };
    match tokio::time::timeout(bound, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Error::ConnectionFailed(format!(
            "connecting to {host}:{port}{} timed out after {} s",
            via(proxy),
            bound.as_secs_f32()
        ))),
    }
}

/// " through the SOCKS5 proxy 10.0.0.1:1080" (no credentials), or "" without a proxy.
fn via(proxy: Option<&ProxyOptions>) -> String {
    proxy.map(|p| format!(" through the {} proxy {}", kind(p.proxy_type), authority(&p.proxy_addr, p.proxy_port))).unwrap_or_default()
}

fn kind(t: ProxyType) -> &'static str {
    match t {
        ProxyType::Http => "HTTP",
        ProxyType::Socks4 => "SOCKS4",
        ProxyType::Socks5 => "SOCKS5",
    }
}

/// `host:port`, with an IPv6 literal in brackets (as CONNECT and messages write it).
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Resolves `host` and connects to the first address that accepts.
async fn direct(host: &str, port: u16) -> Result<TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::ConnectionFailed(format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                // MQTT packets are small and latency matters more than batching.
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Error::ConnectionFailed(match last {
        Some(e) => format!("cannot connect to {}: {e}", authority(host, port)),
        None => format!("{host} resolves to no address"),
    }))
}

#[cfg(not(feature = "proxy"))]
async fn through(_: &ProxyOptions, _: &str, _: u16) -> Result<TcpStream> {
    Err(crate::validate::needs_feature("proxy_options", "proxy"))
}

#[cfg(feature = "proxy")]
async fn through(p: &ProxyOptions, host: &str, port: u16) -> Result<TcpStream> {
    let proxy_name = authority(&p.proxy_addr, p.proxy_port);
    let socket = direct(&p.proxy_addr, p.proxy_port).await.map_err(|e| match e {
        Error::ConnectionFailed(m) => Error::ConnectionFailed(format!("{} proxy unreachable: {m}", kind(p.proxy_type))),
        other => other,
    })?;
    let refused = |answer: String| {
        Error::ConnectionFailed(format!(
            "the {} proxy {proxy_name} refused the tunnel to {}: {answer}",
            kind(p.proxy_type),
            authority(host, port)
        ))
    };
    // tokio-socks takes a name as SOCKS4a / SOCKS5 domain target and an IP literal as an address.
    let target = (host.trim_start_matches('[').trim_end_matches(']'), port);
    let user = p.proxy_username.as_deref().filter(|u| !u.is_empty());
    match p.proxy_type {
        ProxyType::Http => http_connect(socket, host, port, user.map(|u| (u, p.proxy_password.as_deref().unwrap_or(""))))
            .await
            .map_err(refused),
        ProxyType::Socks4 => {
            let s = match user {
                Some(u) => tokio_socks::tcp::Socks4Stream::connect_with_userid_and_socket(socket, target, u).await,
                None => tokio_socks::tcp::Socks4Stream::connect_with_socket(socket, target).await,
            };
            s.map(|s| s.into_inner()).map_err(|e| refused(e.to_string()))
        }
        ProxyType::Socks5 => {
            let s = match user {
                Some(u) => {
                    let pw = p.proxy_password.as_deref().unwrap_or("");
                    tokio_socks::tcp::Socks5Stream::connect_with_password_and_socket(socket, target, u, pw).await
                }
                None => tokio_socks::tcp::Socks5Stream::connect_with_socket(socket, target).await,
            };
            // tokio-socks's messages name the failure (auth, ruleset, refused), never the password.
            s.map(|s| s.into_inner()).map_err(|e| refused(e.to_string()))
        }
    }
}

#[cfg(feature = "proxy")]
/// Sends `CONNECT host:port` and reads the answer head; anything but 2xx is the error text
/// (status line only: the body of a proxy's error page is not worth a message).
async fn http_connect(
    mut socket: TcpStream,
    host: &str,
    port: u16,
    auth: Option<(&str, &str)>,
) -> std::result::Result<TcpStream, String> {
    let target = authority(host, port);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, password)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).await.map_err(|e| format!("sending CONNECT failed: {e}"))?;
    // One byte at a time: the tunnel's first bytes (the server's, after ours) must stay in the
    // socket, and the head is a few hundred bytes once per connection.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_HEAD {
            return Err(format!("answer head longer than {MAX_CONNECT_HEAD} bytes"));
        }
        let mut byte = [0u8; 1];
        match socket.read(&mut byte).await {
            Ok(0) => return Err("the proxy closed the connection without an answer".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("reading the CONNECT answer failed: {e}")),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err("the CONNECT answer is not HTTP".into()),
    }
    let code = response.code.unwrap_or(0);
    if (200..300).contains(&code) {
        Ok(socket)
    } else {
        Err(format!("HTTP {code} {}", response.reason.unwrap_or("")).trim_end().to_string())
    }
}

#[cfg(test)]
mod tests {
    //! The handshakes against tiny proxies of the test's own, which record what they were asked
    //! and then echo the tunnel; tests/proxies.rs runs the same paths through real proxy servers.
    use super::*;
    use tokio::net::TcpListener;

    fn proxy(t: ProxyType, port: u16, user: Option<&str>, pw: Option<&str>) -> ProxyOptions {
        ProxyOptions {
            proxy_type: t,
            proxy_addr: "127.0.0.1".into(),
            proxy_port: port,
            proxy_username: user.map(str::to_string),
            proxy_password: pw.map(str::to_string),
        }
    }

    async fn read_until(s: &mut TcpStream, end: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        while !got.ends_with(end) {
            let mut b = [0u8; 1];
            if s.read(&mut b).await.unwrap() == 0 {
                break;
            }
            got.push(b[0]);
        }
        got
    }

    /// A one-shot proxy: `handshake` reads the request and answers it, returning what it saw and
    /// whether the tunnel is open; an open tunnel then echoes.
    async fn tiny_proxy<F, Fut>(handshake: F) -> (u16, tokio::sync::oneshot::Receiver<Vec<u8>>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = (TcpStream, Vec<u8>, bool)> + Send,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (mut s, seen, open) = handshake(s).await;
            let _ = tx.send(seen);
            if open {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        (port, rx)
    }

    /// An HTTP CONNECT proxy answering `status`.
    async fn connect_proxy(status: &'static str) -> (u16, tokio::sync::oneshot::Receiver<Vec<u8>>) {
        tiny_proxy(move |mut s| async move {
            let head = read_until(&mut s, b"\r\n\r\n").await;
            s.write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes()).await.unwrap();
            (s, head, status.starts_with("200"))
        })
        .await
    }

    async fn round_trip(mut s: TcpStream) {
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn direct_connect_resolves_names() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (_s, accepted) = tokio::join!(connect_tcp("localhost", port, None), l.accept());
        assert_eq!(accepted.unwrap().1.ip(), std::net::Ipv4Addr::LOCALHOST);
    }

    #[tokio::test]
    async fn http_connect_tunnels_with_basic_auth() {
        let (pport, head) = connect_proxy("200 Connection established").await;
        let p = proxy(ProxyType::Http, pport, Some("user"), Some("s3cret"));
        round_trip(connect_tcp("localhost", 8883, Some(&p)).await.unwrap()).await;
        let head = String::from_utf8(head.await.unwrap()).unwrap();
        assert!(head.starts_with("CONNECT localhost:8883 HTTP/1.1\r\nHost: localhost:8883\r\n"), "{head}");
        // base64("user:s3cret")
        assert!(head.contains("Proxy-Authorization: Basic dXNlcjpzM2NyZXQ=\r\n"), "{head}");
    }

    #[tokio::test]
    async fn http_proxy_refusal_is_connection_failed_with_its_answer_and_no_password() {
        let (pport, _head) = connect_proxy("407 Proxy Authentication Required").await;
        let p = proxy(ProxyType::Http, pport, Some("user"), Some("s3cret"));
        let e = connect_tcp("localhost", 1, Some(&p)).await.unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ConnectionFailed);
        let text = e.to_string();
        assert!(text.contains("HTTP 407 Proxy Authentication Required"), "{text}");
        assert!(!text.contains("s3cret") && !text.contains("dXNlcjpzM2NyZXQ="), "{text}");
    }

    /// SOCKS4a (which the Debian proxies of tests/proxies.rs lack): a host name goes to the proxy
    /// after the user id, behind the address 0.0.0.x; an address goes as plain SOCKS4.
    #[tokio::test]
    async fn socks4_sends_names_as_socks4a_and_addresses_as_socks4() {
        let socks4_server = || {
            tiny_proxy(|mut s| async move {
                let mut fixed = [0u8; 8]; // VN, CD, DSTPORT, DSTIP
                s.read_exact(&mut fixed).await.unwrap();
                let mut seen = fixed.to_vec();
                seen.extend(read_until(&mut s, b"\0").await); // USERID
                if fixed[4..7] == [0, 0, 0] && fixed[7] != 0 {
                    seen.extend(read_until(&mut s, b"\0").await); // SOCKS4a: the host name
                }
                s.write_all(&[0, 0x5a, 0, 0, 0, 0, 0, 0]).await.unwrap(); // granted
                (s, seen, true)
            })
        };
        let (pport, seen) = socks4_server().await;
        let p = proxy(ProxyType::Socks4, pport, Some("dev"), None);
        round_trip(connect_tcp("hub.example", 8883, Some(&p)).await.unwrap()).await;
        let seen = seen.await.unwrap();
        assert_eq!(&seen[..4], &[4, 1, 0x22, 0xb3], "version 4, CONNECT, port 8883");
        assert_eq!(&seen[4..7], &[0, 0, 0], "SOCKS4a marker address");
        assert_eq!(&seen[8..], b"dev\0hub.example\0");

        let (pport, seen) = socks4_server().await;
        round_trip(connect_tcp("127.0.0.1", 8883, Some(&proxy(ProxyType::Socks4, pport, None, None))).await.unwrap()).await;
        assert_eq!(seen.await.unwrap(), [4, 1, 0x22, 0xb3, 127, 0, 0, 1, 0]);
    }

    #[tokio::test]
    async fn an_unreachable_proxy_is_connection_failed() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = connect_tcp("localhost", 1, Some(&proxy(ProxyType::Socks5, port, None, None))).await.unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ConnectionFailed);
        assert!(e.to_string().contains("SOCKS5 proxy unreachable"), "{e}");
    }

    #[tokio::test]
    async fn a_silent_proxy_fails_within_the_bound() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        // Accepts (the kernel does) and never answers.
        let p = proxy(ProxyType::Http, port, None, None);
        let e = connect_tcp_within("localhost", 1, Some(&p), Duration::from_millis(300)).await.unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ConnectionFailed);
        assert!(e.to_string().contains("timed out"), "{e}");
        drop(l);
    }

    #[test]
    fn ipv6_literals_get_brackets() {
        assert_eq!(authority("::1", 8883), "[::1]:8883");
        assert_eq!(authority("hub", 443), "hub:443");
    }
}
