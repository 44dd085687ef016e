//! What the emulator fuzz targets share: one single-threaded runtime with a paused clock (long
//! polls and timeouts inside the emulator then cost no wall time), one in-memory hub with a
//! device `fuzz`, and the credentials a fuzz input may ask to have spliced in, so the fuzzer
//! explores what an authenticated client can reach without needing a valid token in its corpus
//! (a token in a seed would expire).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use ironhub_emulator::hub::{Hub, HubConfig};
use ironhub_emulator::mqtt::Broker;
use ironhub_protocol::connection_string::ConnectionString;
use ironhub_protocol::sas;
use rumqttc::mqttbytes::v4::{Connect, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

pub const HOST: &str = "localhost";
pub const DEVICE: &str = "fuzz";
/// Bound on one input's run in (paused, auto-advancing) emulator time: above the emulator's own
/// longest legitimate wait (a 300 s events long-poll or method timeout), so only a real hang trips it.
pub const INPUT_BUDGET: Duration = Duration::from_secs(900);

pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub hub: Arc<Hub>,
    pub broker: Arc<Broker>,
    /// An MQTT CONNECT of device `fuzz` with a valid SAS token.
    pub connect: Vec<u8>,
    /// `SharedAccessSignature ...` of the hub's `iothubowner` policy.
    pub service_authorization: String,
}

fn far_expiry() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 365 * 24 * 3600
}

pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        let (hub, broker) = runtime.block_on(async {
            let hub = Arc::new(
                Hub::new(HubConfig { hostname: HOST.into(), state_dir: None, retention: None, throttle: None, policy_key: None, ca_roots: Vec::new(), partition_count: 0 }).unwrap(),
            );
            hub.create_device(DEVICE).unwrap();
            let broker = Broker::new(hub.clone());
            (hub, broker)
        });
        let device = ConnectionString::parse(&hub.device_connection_string(DEVICE, None).unwrap()).unwrap();
        let device_key = device.shared_access_key.unwrap();
        let token = sas::generate_token(&format!("{HOST}/devices/{DEVICE}"), &device_key, None, far_expiry()).unwrap();
        let mut connect = Connect::new(DEVICE);
        connect.keep_alive = 60;
        connect.set_login(format!("{HOST}/{DEVICE}/?api-version=2021-04-12"), token);
        let mut bytes = BytesMut::new();
        Packet::Connect(connect).write(&mut bytes, 1 << 20).unwrap();

        let service = ConnectionString::parse(&hub.service_connection_string(HOST)).unwrap();
        let key_name = service.shared_access_key_name.unwrap();
        let service_token = sas::generate_token(HOST, &service.shared_access_key.unwrap(), Some(&key_name), far_expiry()).unwrap();
        Harness { runtime, hub, broker, connect: bytes.to_vec(), service_authorization: service_token }
    })
}

/// Plays `input` as one client connection to the server `serve` starts on the other end of an
/// in-memory stream: writes it, half-closes, reads the answer to its end, then waits for the server
/// side to finish; returns what the server answered. A panic on the server side is re-raised (a
/// finding); so is a hang past [`INPUT_BUDGET`] of emulator time.
pub fn play_connection<F>(input: &[u8], serve: impl FnOnce(DuplexStream) -> F) -> Vec<u8>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    harness().runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(serve(server));
        let mut answer = Vec::new();
        let exchange = async {
            client.write_all(input).await?;
            client.shutdown().await?;
            client.read_to_end(&mut answer).await
        };
        let _ = tokio::time::timeout(INPUT_BUDGET, exchange).await;
        drop(client);
        let served = tokio::time::timeout(INPUT_BUDGET, serving).await.expect("the server ends a connection whose client went away");
        if let Err(e) = served {
            std::panic::resume_unwind(e.into_panic());
        }
        answer
    })
}

/// Proves once per fuzzing process that the spliced CONNECT is accepted: a CONNECT followed by a
/// QoS 1 telemetry PUBLISH must reach the hub's event log. Without this, a change to the
/// emulator's authentication would silently leave the fuzzer outside the session.
pub fn assert_connect_is_accepted() {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        let h = harness();
        let before = h.hub.last_event_sequence();
        let mut input = h.connect.clone();
        let mut publish = rumqttc::mqttbytes::v4::Publish::new(
            format!("devices/{DEVICE}/messages/events/"),
            rumqttc::mqttbytes::QoS::AtLeastOnce,
            b"self-check".to_vec(),
        );
        publish.pkid = 1;
        let mut bytes = BytesMut::new();
        Packet::Publish(publish).write(&mut bytes, 1 << 20).unwrap();
        input.extend_from_slice(&bytes);
        play_connection(&input, |server| h.broker.clone().serve_connection(server, Vec::new()));
        assert!(h.hub.last_event_sequence() > before, "the fuzz harness's CONNECT was refused: fix src/lib.rs");
    });
}
