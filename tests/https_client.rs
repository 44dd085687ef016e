//! The HTTPS client under file upload, the Edge `invoke_method` call and the service client
//! (src/transport/http.rs), driven through the service client against the emulator's real HTTPS
//! endpoint with the fault proxy of tests/common in between, which counts the TCP connections
//! and breaks them on command: calls share one kept-alive connection, a connection the server
//! closed while idle is replaced without failing the call, and a silent or stalled link fails
//! the call within its bound, without the SAS token in the error.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fault_proxy::{Cut, FaultProxy};
use ironhub::service::{ServiceClient, ServiceOptions};
use ironhub::ErrorKind;

/// The emulator's service connection string with its HostName's port replaced by `port`.
fn via_port(connection_string: &str, port: u16) -> String {
    connection_string
        .split(';')
        .map(|part| match part.strip_prefix("HostName=") {
            Some(host) => format!("HostName={}:{port}", host.rsplit_once(':').map_or(host, |(h, _)| h)),
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// An emulator with `device`, and a service client that reaches its HTTPS port through a fault
/// proxy, each call bounded by `timeout`.
async fn service_through_proxy(device: &str, timeout: Duration) -> (common::Env, ServiceClient, FaultProxy) {
    let env = common::start().await;
    env.device(device);
    let upstream: SocketAddr = ([127, 0, 0, 1], env.emu.https_port()).into();
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let cs = via_port(env.emu.service_connection_string(), proxy.port());
    let options = ServiceOptions { ca_pem: Some(env.emu.ca_pem().to_string()), timeout };
    let service = ServiceClient::from_connection_string(&cs, options).unwrap();
    (env, service, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_calls_share_one_kept_alive_connection() {
    let (_env, service, proxy) = service_through_proxy("reused", Duration::from_secs(10)).await;
    for _ in 0..5 {
        let twin = service.get_twin("reused", None).await.expect("get_twin");
        assert_eq!(twin["deviceId"], "reused");
    }
    assert_eq!(proxy.accepted(), 1, "five calls should take one TLS connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_while_idle_is_replaced_without_failing_the_call() {
    let (_env, service, proxy) = service_through_proxy("replaced", Duration::from_secs(10)).await;
    service.get_twin("replaced", None).await.expect("first call");
    for (round, how) in [Cut::Fin, Cut::Reset].into_iter().enumerate() {
        proxy.cut(how);
        // Let the close reach the idle connection, as when a server's keep-alive timer ends it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let twin = service.get_twin("replaced", None).await.unwrap_or_else(|e| panic!("after {how:?}: {e}"));
        assert_eq!(twin["deviceId"], "replaced");
        assert_eq!(proxy.accepted(), round + 2, "after {how:?} the call should open a new connection");
    }
}

/// The proxy swallows everything: no TLS handshake completes, the call fails at its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_fails_the_call_within_its_bound() {
    let (_env, service, proxy) = service_through_proxy("silent", Duration::from_millis(800)).await;
    proxy.black_hole();
    let started = Instant::now();
    let e = service.get_twin("silent", None).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), ErrorKind::OperationTimeout, "{e}");
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(5), "took {took:?}");
    assert!(!e.to_string().contains("SharedAccessSignature") && !e.to_string().contains("sig="), "{e}");
}

/// A kept-alive connection that stops moving bytes (a frozen path) fails the next call at its
/// bound; once the path works again, the following call goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_kept_alive_connection_fails_the_call_within_its_bound() {
    let (_env, service, proxy) = service_through_proxy("stalled", Duration::from_millis(800)).await;
    service.get_twin("stalled", None).await.expect("first call");
    proxy.stall();
    let started = Instant::now();
    let e = service.get_twin("stalled", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OperationTimeout, "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    proxy.heal();
    proxy.cut(Cut::Reset);
    service.get_twin("stalled", None).await.expect("a call after the path healed");
}
