//! Fault tests of the client engine: a real client over real TLS to the in-process emulator,
//! through the fault-injection proxy (`common::fault_proxy`), each bounded in time, each
//! counting outcomes against the emulator's own record of accepted telemetry.
//!
//! - telemetry through ≥ 20 cuts and one emulator restart: lost = 0 among sends reported OK,
//!   duplicates counted and bounded by the in-flight window, failures only of documented kinds;
//! - a black-holed link is found and replaced within 2 × keep-alive;
//! - a workload-API outage during an Edge token renewal: PUBACKs and pings go on;
//! - twin requests in flight and C2D across SAS renewals (key renewal and `update_sastoken`);
//! - kill -9 with `offline_store`: what a killed process accepted is sent by the next one, once.
//!
//! The figures each test prints (`FAULTS ...` lines, run with `--nocapture`) are the ones
//! `docs/reliability.md` quotes.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fault_proxy::{Cut, FaultProxy};
use common::Collector;
use futures::stream::{FuturesUnordered, StreamExt};
use ironhub::blocking::SyncWait;
use ironhub::{Client, ClientOptions, ConnectionStateChange, ErrorKind, Message};
use ironhub_emulator::hub::{EventFilter, Hub};
use ironhub_emulator::{Emulator, EmulatorConfig};
use serde_json::json;

/// Runs `fut`, failing the test (not hanging it) past `secs`.
async fn bounded<T>(what: &str, secs: u64, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {secs} s"),
    }
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ironhub-faults-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An emulator whose MQTT port is reached through a fault proxy.
struct Faulty {
    env: common::Env,
    proxy: FaultProxy,
}

impl Faulty {
    async fn start(config: EmulatorConfig) -> Faulty {
        let env = common::start_with(config).await;
        let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], env.emu.mqtt_port()))).await.unwrap();
        Faulty { env, proxy }
    }

    /// Client options that go through the proxy.
    fn options(&self) -> ClientOptions {
        ClientOptions { mqtt_port: self.proxy.port(), ..self.env.options() }
    }

    fn device_client(&self, id: &str, options: ClientOptions) -> Client {
        Client::create_from_connection_string(&self.env.device(id), options).expect("device client")
    }
}

/// Message ids (the bodies) the hub recorded for a device, with how often each was recorded.
fn recorded_ids(hub: &Hub, device_id: &str, into: &mut HashMap<u64, usize>) {
    let filter = EventFilter { device_id: Some(device_id.into()), module_id: None };
    for e in hub.events_after(&filter, 0) {
        if let Some(id) = std::str::from_utf8(&e.record.body).ok().and_then(|s| s.parse().ok()) {
            *into.entry(id).or_default() += 1;
        }
    }
}

/// Connection state changes with the instant each was seen.
fn watch_states(client: &Client) -> Arc<Mutex<Vec<(Instant, ConnectionStateChange)>>> {
    let states = Arc::new(Mutex::new(Vec::new()));
    let seen = states.clone();
    client
        .on_connection_state_change(Some(Arc::new(move |c| seen.lock().unwrap().push((Instant::now(), c)))))
        .unwrap();
    states
}

/// How many times the client reported itself connected.
fn connections(states: &Mutex<Vec<(Instant, ConnectionStateChange)>>) -> usize {
    states.lock().unwrap().iter().filter(|(_, c)| c.connected).count()
}

/// The error kinds a telemetry send may end with while the network and the hub fail under it.
fn documented_send_failure(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::OperationTimeout | ErrorKind::ConnectionDropped | ErrorKind::ConnectionFailed | ErrorKind::Client
    )
}

const MESSAGES: u64 = 10_000;
/// Pipelined sends the application keeps outstanding at once.
const WINDOW: usize = 100;
/// Publishes the client keeps unacknowledged at once (the engine's `MAX_IN_FLIGHT`): what one
/// disruption can repeat at most.
const CLIENT_IN_FLIGHT: usize = 64;
const CUTS: usize = 22;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_through_cuts_and_an_emulator_restart() {
    let state_dir = scratch_dir("restart");
    let config = EmulatorConfig { state_dir: Some(state_dir.clone()), ..Default::default() };
    let Faulty { env, proxy } = Faulty::start(config).await;
    let options = ClientOptions {
        mqtt_port: proxy.port(),
        operation_timeout: Duration::from_secs(30),
        ..env.options()
    };
    let client = Client::create_from_connection_string(&env.device("chaos"), options).unwrap();
    let states = watch_states(&client);
    client.connect().await.expect("first connect");
    let ok_count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();

    // The chaos side: a cut every MESSAGES / (CUTS + 2) successful sends, RST and FIN in turn, and
    // halfway an emulator restart (same ports, same state dir) instead of a cut.
    let https_port = env.emu.https_port();
    let mqtt_port = env.emu.mqtt_port();
    let progress = ok_count.clone();
    let proxy = Arc::new(proxy);
    let chaos_proxy = proxy.clone();
    let chaos_states = states.clone();
    let common::Env { emu, service: _ } = env;
    let mut emu = Some(emu);
    let hub_dir = state_dir.clone();
    let chaos = tokio::spawn(async move {
        let mut old_hub_ids = HashMap::new();
        let mut restarted_at = None;
        let mut links_seen = 0;
        // Two steps of margin at the end: the last disruption comes well before the last send.
        let step = MESSAGES / (CUTS as u64 + 4);
        for i in 0..=CUTS {
            let threshold = step * (i as u64 + 1);
            // Each disruption hits a link opened since the previous one (not one still being set up).
            while progress.load(std::sync::atomic::Ordering::SeqCst) < threshold || connections(&chaos_states) <= links_seen {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            links_seen = connections(&chaos_states);
            if i == CUTS / 2 {
                // Restart: everything the old hub accepted is in its event log, read once it stopped
                // (and must still be there after the restart).
                let old_emu = emu.take().expect("running emulator");
                let old_hub = old_emu.hub().clone();
                old_emu.shutdown().await;
                recorded_ids(&old_hub, "chaos", &mut old_hub_ids);
                let config = EmulatorConfig {
                    state_dir: Some(hub_dir.clone()),
                    mqtt_addr: ([127, 0, 0, 1], mqtt_port).into(),
                    https_addr: ([127, 0, 0, 1], https_port).into(),
                    ..Default::default()
                };
                for _ in 0..50 {
                    match Emulator::start(config.clone()).await {
                        Ok(e) => {
                            emu = Some(e);
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                assert!(emu.is_some(), "the emulator restarts on the same ports");
                restarted_at = Some(Instant::now());
            } else {
                chaos_proxy.cut(if i % 2 == 0 { Cut::Reset } else { Cut::Fin });
            }
        }
        (emu.expect("running emulator"), old_hub_ids, restarted_at)
    });

    // The application side: MESSAGES pipelined sends, at most WINDOW outstanding, every outcome kept.
    let mut outcomes: HashMap<u64, Result<(), ironhub::Error>> = HashMap::new();
    let sending = async {
        let mut pending = FuturesUnordered::new();
        let mut next = 0u64;
        while next < MESSAGES || !pending.is_empty() {
            while next < MESSAGES && pending.len() < WINDOW {
                let id = next;
                let send = client.send_message_pipelined(&Message::new(id.to_string()));
                pending.push(async move { (id, send.await) });
                next += 1;
            }
            if let Some((id, outcome)) = pending.next().await {
                if outcome.is_ok() {
                    ok_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                outcomes.insert(id, outcome);
            }
        }
    };
    bounded("10,000 sends through the faults", 240, sending).await;
    let send_time = started.elapsed();
    let (emu, old_hub_ids, restarted_at) = bounded("the chaos side ends", 30, chaos).await.unwrap();
    // Let the last retransmissions land before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The emulator keeps accepted telemetry across a restart (its store), so the restarted hub's
    // log holds the old hub's records too: count from it alone, and check it forgot none of them.
    let mut recorded = HashMap::new();
    recorded_ids(emu.hub(), "chaos", &mut recorded);
    let forgotten = old_hub_ids.iter().filter(|(id, n)| recorded.get(*id).copied().unwrap_or(0) < **n).count();
    assert_eq!(forgotten, 0, "messages the hub accepted before its restart are missing after it");

    let ok: Vec<u64> = outcomes.iter().filter(|(_, o)| o.is_ok()).map(|(id, _)| *id).collect();
    let lost: Vec<u64> = ok.iter().copied().filter(|id| !recorded.contains_key(id)).collect();
    let duplicates: usize = recorded.values().map(|n| n - 1).sum();
    let failures: Vec<(u64, ErrorKind, String)> = outcomes
        .iter()
        .filter_map(|(id, o)| o.as_ref().err().map(|e| (*id, e.kind(), e.to_string())))
        .collect();
    // State changes reach the handler through the dispatcher: give the last one a moment.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while connections(&states) < CUTS + 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let reconnects = connections(&states).saturating_sub(1);
    println!(
        "FAULTS telemetry: {MESSAGES} sends in {:.1} s, window {WINDOW}, {} cuts + 1 restart ({}), ok {}, failed {}, \
         recorded {}, lost {}, duplicates {}, reconnects {reconnects}, proxy connections {}",
        send_time.as_secs_f64(),
        CUTS,
        if restarted_at.is_some() { "done" } else { "missing" },
        ok.len(),
        failures.len(),
        recorded.len(),
        lost.len(),
        duplicates,
        proxy.accepted(),
    );
    let mut kinds: HashMap<ErrorKind, usize> = HashMap::new();
    for (_, k, _) in &failures {
        *kinds.entry(*k).or_default() += 1;
    }
    println!("FAULTS telemetry failure kinds: {kinds:?}; first: {:?}", failures.first());
    assert_eq!(outcomes.len() as u64, MESSAGES, "every send has an outcome");
    assert!(lost.is_empty(), "sends reported OK that the hub never recorded: {} (first {:?})", lost.len(), &lost[..lost.len().min(10)]);
    assert!(failures.iter().all(|(_, k, _)| documented_send_failure(*k)), "undocumented failures: {failures:?}");
    // Each disruption can repeat at most the publishes in flight at that moment.
    let disruptions = CUTS + 1;
    assert!(
        duplicates <= CLIENT_IN_FLIGHT.min(WINDOW) * disruptions,
        "duplicates {duplicates} exceed the in-flight window ({CLIENT_IN_FLIGHT}) × {disruptions} disruptions"
    );
    assert!(reconnects > CUTS, "the client reconnected after every disruption ({reconnects} reconnects)");
    client.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// A link that goes silent (a NAT timeout, a dead peer) is found by the keep-alive and replaced
/// within 2 × keep-alive; a send made into the silence is delivered on the new link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_link_is_replaced_within_two_keep_alives() {
    const KEEP_ALIVE: u64 = 3;
    let f = Faulty::start(EmulatorConfig::default()).await;
    let client = f.device_client("silent", ClientOptions { keep_alive: KEEP_ALIVE, ..f.options() });
    let states = watch_states(&client);
    client.connect().await.unwrap();
    // The first "connected" reaches the handler through the dispatcher: wait for it, so it is not
    // mistaken for the replacement link.
    bounded("the first connected event", 10, async {
        while connections(&states) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let links_before = f.proxy.accepted();

    // Only the current link goes dark: new links get through.
    let t0 = Instant::now();
    f.proxy.black_hole();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let send = client.send_message_pipelined(&Message::new("into the silence"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.proxy.heal();

    let replaced = bounded("replacement of the black-holed link", 4 * KEEP_ALIVE + 10, async {
        loop {
            let seen = states.lock().unwrap().clone();
            let down = seen.iter().position(|(t, c)| *t > t0 && !c.connected);
            let up = down.and_then(|d| seen[d..].iter().find(|(_, c)| c.connected).map(|(t, _)| *t));
            let down = down.map(|d| seen[d].0);
            if let (Some(down), Some(up)) = (down, up) {
                return (down - t0, up - t0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    println!(
        "FAULTS black hole: keep_alive {KEEP_ALIVE} s, dead link found after {:.2} s, replaced after {:.2} s",
        replaced.0.as_secs_f64(),
        replaced.1.as_secs_f64()
    );
    assert!(f.proxy.accepted() > links_before, "a new link was opened");
    assert!(
        replaced.1 <= Duration::from_secs(2 * KEEP_ALIVE),
        "replaced after {:?}, more than 2 × keep-alive",
        replaced.1
    );
    bounded("the send made into the silence", 30, send).await.expect("delivered on the new link");
    assert_eq!(f.env.wait_events("silent", 1).await.len(), 1);
    client.shutdown().await.unwrap();
}

static EDGE_ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The workload API (behind its own fault proxy) freezes exactly when the token is due for
/// renewal: the MQTT link must go on (pings, PUBACKs) on the still-valid token, and renew once
/// the API answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_outage_during_edge_renewal_does_not_stop_the_link() {
    const TTL: u64 = 16;
    let _env_lock = EDGE_ENV.lock().await;
    let config = EmulatorConfig { workload_addr: Some(([127, 0, 0, 1], 0).into()), ..Default::default() };
    let f = Faulty::start(config).await;
    f.env.module("edgeFaultDev", "renewer");
    let workload = FaultProxy::start(f.env.emu.workload().tcp.expect("TCP workload API")).await.unwrap();
    let mut vars = f.env.emu.edge_environment("edgeFaultDev", "renewer");
    for (name, value) in &mut vars {
        if name == "IOTEDGE_WORKLOADURI" {
            *value = format!("http://{}", workload.addr());
        }
    }
    for (name, value) in &vars {
        std::env::set_var(name, value);
    }
    let options = ClientOptions {
        server_verification_cert: None,
        sastoken_ttl: Some(TTL),
        keep_alive: 2,
        ..f.options()
    };
    let edge = Client::create_from_edge_environment(options).await;
    for (name, _) in &vars {
        std::env::remove_var(name);
    }
    let edge = edge.expect("edge module from the environment");
    let states = watch_states(&edge);
    edge.connect().await.expect("connect with a workload-signed token");
    let t0 = Instant::now();

    // Renewal is due at TTL/2 = 8 s: the workload API stalls from 6 s to 13 s (the token itself
    // stays valid until 16 s), while a message is sent every 500 ms, each bounded to 3 s.
    let mut slow = Vec::new();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(14) {
        let e = t0.elapsed();
        if e >= Duration::from_secs(6) && e < Duration::from_secs(13) {
            workload.stall();
        } else {
            workload.heal();
        }
        let sent = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(3), edge.send_message(&Message::new(n.to_string()))).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(err)) => slow.push(format!("send {n} at {:.1} s failed: {err}", sent.duration_since(t0).as_secs_f64())),
            Err(_) => slow.push(format!("send {n} at {:.1} s took over 3 s", sent.duration_since(t0).as_secs_f64())),
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    workload.heal();
    // After the outage the token is renewed (before its 16 s expiry) and the link stays up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = bounded("send after the outage", 20, edge.send_message(&Message::new("after"))).await;
    let drops: Vec<_> = states.lock().unwrap().iter().filter(|(_, c)| !c.connected).map(|(t, c)| (t.duration_since(t0), c.reason)).collect();
    println!("FAULTS edge outage: {n} sends, {} slow or failed, drops {drops:?}, after: {after:?}", slow.len());
    assert!(slow.is_empty(), "sends stalled during the workload-API outage: {slow:?}");
    assert!(drops.is_empty(), "the link dropped: {drops:?}");
    after.expect("send after the outage, on a renewed token");
    edge.shutdown().await.unwrap();
}

/// Keeps `parallel` get_twin + patch_twin_reported_properties loops busy until `stop`.
async fn twin_traffic(client: &Client, until: Instant) -> (usize, Vec<String>) {
    let mut ok = 0;
    let mut failed = Vec::new();
    let mut i = 0u64;
    while Instant::now() < until {
        let patch = json!({"tick": i});
        let (a, b, c) = tokio::join!(
            client.get_twin(),
            client.patch_twin_reported_properties(&patch),
            client.get_twin(),
        );
        for (what, r) in [("get", a.map(|_| ())), ("patch", b), ("get", c.map(|_| ()))] {
            match r {
                Ok(()) => ok += 1,
                Err(e) => failed.push(format!("{what} #{i}: {e}")),
            }
        }
        i += 1;
    }
    (ok, failed)
}

/// Twin requests in flight and C2D delivered across key-based SAS renewals (4 s tokens: a renewal
/// every ~2 s); desired-properties changes made during the run, some in a renewal's gap, reach the
/// handler (the last one at least: a resync may fold several into one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_requests_and_c2d_survive_key_renewals() {
    let f = Faulty::start(EmulatorConfig::default()).await;
    let options = ClientOptions { sastoken_ttl: Some(4), operation_timeout: Duration::from_secs(10), ..f.options() };
    let client = f.device_client("renewTwin", options);
    let c2d = Collector::<String>::new();
    let sink = c2d.clone();
    client.on_message_received(Some(Arc::new(move |m| sink.push(String::from_utf8_lossy(&m.data).into_owned())))).await.unwrap();
    let desired = Collector::<serde_json::Value>::new();
    let sink = desired.clone();
    client.on_twin_desired_properties_patch_received(Some(Arc::new(move |p| sink.push(p)))).await.unwrap();
    let links_before = f.proxy.accepted();

    let until = Instant::now() + Duration::from_secs(10);
    let service = async {
        for i in 0..10 {
            f.env.c2d("renewTwin", json!({"bodyText": format!("c2d {i}")})).await;
            // A desired change every ~0.9 s: some land while a renewal swaps links.
            f.env.service.update_twin("renewTwin", None, &json!({"properties": {"desired": {"mark": i}}}), None).await.unwrap();
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
    };
    let ((ok, failed), ()) = bounded("twin traffic across renewals", 60, async { tokio::join!(twin_traffic(&client, until), service) }).await;
    let got = c2d.wait_for(10, 20).await;
    let patches = desired.wait_for(10, 10).await;
    let renewals = f.proxy.accepted() - links_before;
    println!("FAULTS key renewal: {renewals} links, twin ok {ok}, failed {}, c2d {}/10, desired patches {}", failed.len(), got.len(), patches.len());
    assert!(renewals >= 3, "the tokens were renewed (new links: {renewals})");
    assert!(failed.is_empty(), "twin requests failed across renewals: {failed:?}");
    let mut got = got;
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 10, "every C2D message arrived: {got:?}");
    // Every change reached the handler, as a patch or in the resync after a renewal.
    let marks: std::collections::BTreeSet<i64> = patches.iter().filter_map(|p| p["mark"].as_i64()).collect();
    assert!(marks.contains(&9), "the last desired change reached the handler: {marks:?}");
    client.shutdown().await.unwrap();
}

/// The same across `update_sastoken`: the application swaps tokens while twin requests are in
/// flight and C2D messages arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_requests_and_c2d_survive_update_sastoken() {
    let f = Faulty::start(EmulatorConfig::default()).await;
    let cs = f.env.device("tokenTwin");
    let key = cs.split(';').find_map(|kv| kv.strip_prefix("SharedAccessKey=")).unwrap().to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let token = |expiry: u64| ironhub_protocol::sas::generate_token("localhost/devices/tokenTwin", &key, None, expiry).unwrap();
    let options = ClientOptions { operation_timeout: Duration::from_secs(10), ..f.options() };
    let client = Client::create_from_sastoken(&token(now + 3600), options).unwrap();
    let c2d = Collector::<String>::new();
    let sink = c2d.clone();
    client.on_message_received(Some(Arc::new(move |m| sink.push(String::from_utf8_lossy(&m.data).into_owned())))).await.unwrap();

    let until = Instant::now() + Duration::from_secs(8);
    let updates = async {
        let mut results = Vec::new();
        for i in 0..6u64 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            f.env.c2d("tokenTwin", json!({"bodyText": format!("c2d {i}")})).await;
            results.push(client.update_sastoken(&token(now + 3600 + i + 1)).await);
        }
        results
    };
    let ((ok, failed), results) = bounded("twin traffic across update_sastoken", 60, async { tokio::join!(twin_traffic(&client, until), updates) }).await;
    let got = c2d.wait_for(6, 20).await;
    println!("FAULTS update_sastoken: twin ok {ok}, failed {}, c2d {}/6, updates {results:?}", failed.len(), got.len());
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert!(failed.is_empty(), "twin requests failed across update_sastoken: {failed:?}");
    let mut got = got;
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 6, "every C2D message arrived: {got:?}");
    client.shutdown().await.unwrap();
}

const CHILD_VAR: &str = "IRONHUB_FAULTS_CHILD";

/// The child process of `offline_store_survives_kill_9`: a client with an offline store that
/// sends `count` messages (ids `first..first+count`), reporting each accepted one on stdout, then
/// lingers `linger_s` seconds (to be killed, or to let its store drain) before shutting down.
/// Ignored in normal runs; without the variable it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run only as the child process of offline_store_survives_kill_9"]
async fn offline_store_child() {
    let Ok(spec) = std::env::var(CHILD_VAR) else { return };
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let options = ClientOptions {
        server_verification_cert: Some(spec["ca"].as_str().unwrap().to_string()),
        mqtt_port: spec["port"].as_u64().unwrap() as u16,
        https_port: spec["port"].as_u64().unwrap() as u16,
        connection_retry_interval: 1,
        operation_timeout: Duration::from_secs(20),
        offline_store: Some(PathBuf::from(spec["store"].as_str().unwrap())),
        ..ClientOptions::default()
    };
    let client = Client::create_from_connection_string(spec["cs"].as_str().unwrap(), options).unwrap();
    let first = spec["first"].as_u64().unwrap();
    for id in first..first + spec["count"].as_u64().unwrap() {
        client.send_message(&Message::new(id.to_string())).await.expect("accepted while offline");
        println!("ACCEPTED {id}");
    }
    println!("READY");
    tokio::time::sleep(Duration::from_secs(spec["linger_s"].as_u64().unwrap())).await;
    client.shutdown().await.unwrap();
}

/// Runs this test binary as `offline_store_child` with `spec`; returns the child and its stdout lines.
fn spawn_child(spec: serde_json::Value) -> (std::process::Child, std::io::Lines<std::io::BufReader<std::process::ChildStdout>>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "offline_store_child", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_VAR, spec.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("child process starts");
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Telemetry a process accepted while offline survives its kill -9: the next process with the
/// same store sends it, exactly once, and a third start sends nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_store_survives_kill_9() {
    const COUNT: u64 = 50;
    let f = Faulty::start(EmulatorConfig::default()).await;
    let cs = f.env.device("offlineDev");
    let store = scratch_dir("offline-store");
    // Offline = the hub's address refuses connections: a port nothing listens on.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let spec = |port: u16, count: u64, linger_s: u64| {
        json!({"cs": cs, "ca": f.env.emu.ca_pem(), "port": port, "store": store, "first": 0, "count": count, "linger_s": linger_s})
    };

    let (mut first, mut lines) = spawn_child(spec(dead_port, COUNT, 60));
    let accepted = tokio::task::spawn_blocking(move || {
        let mut accepted = 0;
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            // libtest's "test offline_store_child ... " may precede the first line.
            if line.contains("ACCEPTED ") {
                accepted += 1;
            }
            if line.ends_with("READY") {
                break;
            }
        }
        accepted
    });
    let accepted = bounded("the offline child accepts its messages", 60, accepted).await.unwrap();
    first.kill().expect("SIGKILL");
    let status = first.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    assert_eq!(accepted, COUNT, "every send was accepted while offline");
    assert!(f.env.events("offlineDev", 0, 0).await.is_empty(), "nothing reached the hub while offline");

    // The next process, online (through the proxy), with the same store and nothing new to send.
    let (mut second, _lines) = spawn_child(spec(f.proxy.port(), 0, 6));
    let events = f.env.wait_events("offlineDev", COUNT as usize).await;
    let second_status = bounded("the second process ends", 30, tokio::task::spawn_blocking(move || second.wait())).await.unwrap().unwrap();
    // A third start: the store is empty now, nothing is sent again.
    let (mut third, _lines) = spawn_child(spec(f.proxy.port(), 0, 3));
    let third_status = bounded("the third process ends", 30, tokio::task::spawn_blocking(move || third.wait())).await.unwrap().unwrap();
    let mut recorded = HashMap::new();
    recorded_ids(f.env.emu.hub(), "offlineDev", &mut recorded);
    let duplicates: usize = recorded.values().map(|n| n - 1).sum();
    println!(
        "FAULTS offline store: {accepted} accepted offline, killed ({status:?}); after restart recorded {} of {COUNT} \
         (events seen {}), duplicates {duplicates}; exits {second_status:?} {third_status:?}",
        recorded.len(),
        events.len()
    );
    assert!(second_status.success() && third_status.success());
    assert_eq!(recorded.len() as u64, COUNT, "every accepted message reached the hub: {recorded:?}");
    assert_eq!(duplicates, 0, "sent once: {recorded:?}");
    let _ = std::fs::remove_dir_all(&store);
}

/// A send still waiting for its PUBACK when the connection drops, with `connection_retry` off, is
/// `OperationCancelled` from the Rust API too (the client will not reconnect to complete it), as
/// the C, Python and Go layers report it (`Error::for_send`); the next send reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retry_a_send_cut_by_a_drop_is_cancelled() {
    let f = Faulty::start(EmulatorConfig::default()).await;
    let opts = ClientOptions { connection_retry: false, operation_timeout: Duration::from_secs(30), ..f.options() };
    let client = f.device_client("cutNoRetry", opts);
    bounded("connect", 30, client.connect()).await.unwrap();
    bounded("a first send", 30, client.send_message(&Message::new("before"))).await.unwrap();
    // The PUBACK can never come: the path is frozen, then reset under the pending send.
    f.proxy.stall();
    let pending = tokio::spawn({
        let c = client.clone();
        async move { c.send_message(&Message::new("cut")).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.proxy.cut(Cut::Reset);
    let r = bounded("the cut send ends", 20, pending).await.unwrap();
    let e = r.expect_err("a send cut by a drop does not succeed");
    assert_eq!(e.kind(), ErrorKind::OperationCancelled, "{e}");
    f.proxy.heal();
    bounded("a send after the drop", 30, client.send_message(&Message::new("after"))).await.unwrap();
    client.shutdown().await.unwrap();
}

/// Blocking sync senders read their own PUBACKs from the connection (`transport/reader.rs`: half
/// spinning, half in ppoll); the connection is cut under them (RST and FIN in turn) while they do. Every send reported OK is at
/// the hub, no message is recorded more than twice (QoS 1's one re-send after a cut), every
/// failure is of a documented kind, and no sender hangs: the threads end within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_while_sync_callers_read_their_pubacks_lose_nothing_and_hang_nothing() {
    const THREADS: u64 = 4;
    const EACH: u64 = 400;
    const CUTS: usize = 12;
    let f = Faulty::start(EmulatorConfig::default()).await;
    let options = ClientOptions { operation_timeout: Duration::from_secs(20), ..f.options() };
    let client = f.device_client("sync-cuts", options);
    let states = watch_states(&client);
    client.connect().await.unwrap();
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let (bc, progress) = (ironhub::blocking::Client::from_async(client.clone()), progress.clone());
            std::thread::spawn(move || {
                ironhub::blocking::set_sync_wait(if t % 2 == 0 { SyncWait::Spin } else { SyncWait::Poll });
                (0..EACH)
                    .map(|i| {
                        let id = t * EACH + i;
                        let r = bc.send_message(&Message::new(id.to_string()));
                        progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        (id, r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let step = THREADS * EACH / (CUTS as u64 + 3);
    let mut links_seen = 0;
    for i in 0..CUTS {
        bounded("the next cut's turn", 60, async {
            while progress.load(std::sync::atomic::Ordering::SeqCst) < step * (i as u64 + 1) || connections(&states) <= links_seen {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        links_seen = connections(&states);
        f.proxy.cut(if i % 2 == 0 { Cut::Reset } else { Cut::Fin });
    }
    let outcomes = bounded(
        "the sync senders",
        120,
        tokio::task::spawn_blocking(move || senders.into_iter().flat_map(|s| s.join().expect("sender thread")).collect::<Vec<_>>()),
    )
    .await
    .unwrap();
    let mut recorded = HashMap::new();
    recorded_ids(f.env.emu.hub(), "sync-cuts", &mut recorded);
    let ok: Vec<u64> = outcomes.iter().filter(|(_, r)| r.is_ok()).map(|(id, _)| *id).collect();
    let lost: Vec<u64> = ok.iter().copied().filter(|id| !recorded.contains_key(id)).collect();
    let failures: Vec<String> = outcomes.iter().filter_map(|(id, r)| r.as_ref().err().map(|e| format!("{id}: {e}"))).collect();
    let odd = outcomes.iter().filter(|(_, r)| r.as_ref().is_err_and(|e| !documented_send_failure(e.kind()))).count();
    let dups = recorded.values().filter(|n| **n > 1).count();
    println!(
        "FAULTS sync readers: {} sends on {THREADS} threads through {CUTS} cuts: {} ok, {} failed, lost {}, duplicated {dups}, links {}",
        outcomes.len(),
        ok.len(),
        failures.len(),
        lost.len(),
        connections(&states)
    );
    assert!(lost.is_empty(), "sends reported OK but not at the hub: {lost:?}");
    assert_eq!(odd, 0, "undocumented failures: {failures:?}");
    assert!(recorded.values().all(|n| *n <= 2), "a message recorded more than twice");
    assert!(connections(&states) > CUTS, "every cut was followed by a reconnect");
    client.shutdown().await.unwrap();
}

/// The keep-alive watchdog still sees a black-holed link while a blocking sync caller waits on it
/// (and polls the socket itself for its PUBACK): the dead link is found within 2 × keep-alive
/// (`NO_PING_RESPONSE`), and the send is delivered on the replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_is_found_while_a_sync_caller_waits_for_its_puback() {
    const KEEP_ALIVE: u64 = 2;
    let f = Faulty::start(EmulatorConfig::default()).await;
    let client = f.device_client("sync-silent", ClientOptions { keep_alive: KEEP_ALIVE, ..f.options() });
    let states = common::Collector::<ConnectionStateChange>::new();
    let s = states.clone();
    client.on_connection_state_change(Some(Arc::new(move |c| s.push(c)))).unwrap();
    client.connect().await.unwrap();
    states.wait_for(1, 10).await;
    // A few sync sends first: the spin budget is then tuned to this link's round trips.
    let bc = ironhub::blocking::Client::from_async(client.clone());
    for i in 0..20 {
        bc.send_message(&Message::new(format!("warm {i}"))).unwrap();
    }
    f.proxy.black_hole();
    let cut = Instant::now();
    // One caller spinning on the socket, one in ppoll on it: neither may look like traffic.
    let senders: Vec<_> = [SyncWait::Spin, SyncWait::Poll]
        .into_iter()
        .map(|way| {
            let bc = bc.clone();
            std::thread::spawn(move || {
                ironhub::blocking::set_sync_wait(way);
                let r = bc.send_message(&Message::new(format!("into the silence {way:?}")));
                (r, cut.elapsed())
            })
        })
        .collect();
    let down = states.wait_for(2, 15).await;
    let noticed = cut.elapsed();
    assert!(down.len() >= 2 && !down[1].connected, "{down:?}");
    assert_eq!(down[1].reason, ironhub::ConnectionReason::NoPingResponse, "{down:?}");
    assert!(noticed <= Duration::from_millis(2 * KEEP_ALIVE * 1000 + 1_500), "found after {noticed:?}");
    f.proxy.heal();
    let done = bounded(
        "the sync sends into the silence",
        40,
        tokio::task::spawn_blocking(move || senders.into_iter().map(|s| s.join().unwrap()).collect::<Vec<_>>()),
    )
    .await
    .unwrap();
    let filter = EventFilter { device_id: Some("sync-silent".into()), module_id: None };
    let events = f.env.emu.hub().events_after(&filter, 0);
    for ((r, took), way) in done.into_iter().zip(["Spin", "Poll"]) {
        r.expect("delivered on the replacement link");
        println!("FAULTS sync caller ({way}) in the silence: dead link found after {noticed:?}, send done after {took:?}");
        let body = format!("into the silence {way}");
        assert_eq!(events.iter().filter(|e| e.record.body.as_ref() == body.as_bytes()).count(), 1, "{body}: delivered once");
    }
    client.shutdown().await.unwrap();
}
