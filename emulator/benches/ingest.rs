//! Telemetry ingest throughput of the MQTT broker: one pipelining client over TLS on loopback
//! keeps up to `WINDOW` QoS 1 PUBLISHes in flight and counts PUBACKs, against an in-process
//! emulator. Run with `cargo bench -p ironhub-emulator --bench ingest`; numbers go to
//! docs/benchmarks.md.
//!
//! Env: `INGEST_MESSAGES` (default 200000), `INGEST_WINDOW` (default 4096), `INGEST_PAYLOAD`
//! bytes (default 64). The whole run is bounded by `DEADLINE`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use ironhub_emulator::{Emulator, EmulatorConfig, Identity};
use ironhub_protocol::topics::{self, PropertyBag};
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, Publish};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const DEADLINE: Duration = Duration::from_secs(120);
const MAX_PACKET: usize = 1 << 20;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    match runtime.block_on(async { tokio::time::timeout(DEADLINE, run()).await }) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("ingest: failed: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("ingest: did not finish within {DEADLINE:?}");
            std::process::exit(1);
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run() -> Result<(), BoxError> {
    let messages = env_or("INGEST_MESSAGES", 200_000);
    let window = env_or("INGEST_WINDOW", 4096).clamp(1, 65_535);
    let payload_len = env_or("INGEST_PAYLOAD", 64);

    let emulator = Emulator::start(EmulatorConfig::default()).await?;
    let id = Identity::device("bench-device");
    let key = emulator.hub().create_device(&id.device_id)?.authentication.primary_key;
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let resource = ironhub_protocol::sas::device_resource(emulator.hostname(), &id.device_id, None);
    let token = ironhub_protocol::sas::generate_token(&resource, &key, None, expiry)?;

    // TLS client trusting the emulator's CA, ring provider.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut emulator.ca_pem().as_bytes()) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", emulator.mqtt_port())).await?;
    tcp.set_nodelay(true)?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(emulator.hostname().to_owned())?, tcp)
        .await?;

    let mut connect = Connect::new(id.client_id());
    connect.keep_alive = 60;
    connect.clean_session = false;
    connect.set_login(format!("{}/{}/?api-version=2019-10-01", emulator.hostname(), id.client_id()), token);
    let mut buf = BytesMut::new();
    Packet::Connect(connect).write(&mut buf, MAX_PACKET)?;
    tls.write_all(&buf).await?;
    let mut inbox = BytesMut::with_capacity(64 * 1024);
    match read_packet(&mut tls, &mut inbox).await? {
        Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
        other => return Err(format!("unexpected answer to CONNECT: {other:?}").into()),
    }

    let bag = PropertyBag {
        content_type: Some("application/json".into()),
        content_encoding: Some("utf-8".into()),
        custom: vec![("source".into(), "bench".into())],
        ..Default::default()
    };
    let topic = topics::telemetry_topic(&id.device_id, None, &bag);
    let payload = bytes::Bytes::from(vec![b'x'; payload_len]);

    let (mut rd, mut wr) = tokio::io::split(tls);
    let in_flight = Arc::new(Semaphore::new(window));
    let started = Instant::now();

    let acks = {
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            let mut acked = 0usize;
            while acked < messages {
                match read_packet(&mut rd, &mut inbox).await? {
                    Packet::PubAck(_) => {
                        acked += 1;
                        in_flight.add_permits(1);
                    }
                    other => return Err::<(), BoxError>(format!("unexpected packet: {other:?}").into()),
                }
            }
            Ok(())
        })
    };

    let mut out = BytesMut::with_capacity(256 * 1024);
    let mut pkid: u16 = 0;
    let mut sent = 0usize;
    while sent < messages {
        // Take as many send slots as are free (at least one), then write them in one go.
        let free = in_flight.available_permits().clamp(1, messages - sent);
        in_flight.acquire_many(free as u32).await?.forget();
        out.clear();
        for _ in 0..free {
            pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
            let mut publish = Publish::from_bytes(topic.as_str(), QoS::AtLeastOnce, payload.clone());
            publish.pkid = pkid;
            Packet::Publish(publish).write(&mut out, MAX_PACKET)?;
        }
        wr.write_all(&out).await?;
        sent += free;
    }
    wr.flush().await?;
    acks.await??;
    let elapsed = started.elapsed();

    let recorded = emulator.hub().last_event_sequence();
    let rate = messages as f64 / elapsed.as_secs_f64();
    println!(
        "ingest: {messages} QoS 1 telemetry messages ({payload_len}-byte payload, {}-byte topic, window {window}) in {:.3} s = {rate:.0} msgs/s; {recorded} recorded",
        topic.len(),
        elapsed.as_secs_f64()
    );
    if (recorded as usize) < messages {
        return Err(format!("only {recorded} of {messages} messages reached the event log").into());
    }
    emulator.shutdown().await;
    Ok(())
}

async fn read_packet<R: tokio::io::AsyncRead + Unpin>(rd: &mut R, inbox: &mut BytesMut) -> Result<Packet, BoxError> {
    loop {
        match Packet::read(inbox, MAX_PACKET) {
            Ok(packet) => return Ok(packet),
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(e) => return Err(e.into()),
        }
        inbox.reserve(64 * 1024);
        if rd.read_buf(inbox).await? == 0 {
            return Err("the broker closed the connection".into());
        }
    }
}
