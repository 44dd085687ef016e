//! The `ironhub-emulator` command line: `serve` runs a local IoT Hub until Ctrl-C or SIGTERM.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use std::time::Duration;

use ironhub_emulator::hub::throttle::Tier;
use ironhub_emulator::mqtt::Timing;
use ironhub_emulator::{Emulator, EmulatorConfig};

mod healthcheck;

#[derive(Parser)]
#[command(
    name = "ironhub-emulator",
    version,
    about = "A local Azure IoT Hub: MQTT (8883) and HTTPS (443) the official SDKs run against unchanged",
    long_about = "A local Azure IoT Hub.\n\n\
        Serves the device side (MQTT 3.1.1 over TLS, and over WebSockets at /$iothub/websocket), the \
        service REST API (registry, twins, direct methods, query) and a control API under /emulator/. \
        Logging is controlled with RUST_LOG (default: info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the emulator until Ctrl-C or SIGTERM. Writes DIR/hub.json once both listeners accept.
    Serve(ServeArgs),
    /// Exit 0 when the emulator of DIR answers on its control API and MQTT port, else 1 (for
    /// container HEALTHCHECKs and CI scripts).
    Healthcheck(healthcheck::HealthcheckArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Directory holding the persisted state (state.db: registry, twins, routes, policy key,
    /// pending C2D, retained telemetry),
    /// the CA (ca.pem, ca-key.pem) and hub.json ({hostname, mqttPort, httpsPort, caFile,
    /// serviceConnectionString}), created if missing.
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,

    /// Hub hostname: what clients connect to, sign SAS tokens for, and the server certificate names.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    hostname: String,

    /// MQTT-over-TLS port; 0 picks a free port (see hub.json).
    #[arg(long, value_name = "PORT", default_value_t = 8883)]
    mqtt_port: u16,

    /// HTTPS port (service API, control API, MQTT over WebSockets); 0 picks a free port.
    #[arg(long, value_name = "PORT", default_value_t = 443)]
    https_port: u16,

    /// AMQP-over-TLS port (Event Hub-compatible endpoint, service AMQP); 0 picks a free port.
    /// Default: IoT Hub's 5671 when --https-port is 443, else a free port (so emulators on free
    /// ports never collide on it).
    #[arg(long, value_name = "PORT")]
    amqp_port: Option<u16>,

    /// Partitions of the Event Hub-compatible endpoint.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    partitions: u32,

    /// Address the listeners bind to.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,

    /// Another address the MQTT listener binds too, on the same port (repeatable; the server
    /// certificate names it). One loopback address:port leaves clients only ~28,000 ephemeral
    /// source ports: more clients on one host connect to 127.0.0.2, ... (`GatewayHostName=`).
    #[arg(long, value_name = "IP")]
    mqtt_also_bind: Vec<IpAddr>,

    /// Base64 key of the shared access policies (iothubowner, service, registryRead,
    /// registryReadWrite, device). Default: the persisted key, or a new random one.
    #[arg(long, value_name = "BASE64", value_parser = parse_key)]
    policy_key: Option<String>,

    /// PEM file of CA certificates that devices with certificateAuthority authentication chain to
    /// (besides those registered at runtime through the service API's /certificates/{name}).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,

    /// Serve the IoT Edge workload API (trust bundle, module token signing) on this Unix socket,
    /// for modules started with IOTEDGE_WORKLOADURI=unix://PATH.
    #[arg(long, value_name = "PATH")]
    workload_socket: Option<PathBuf>,

    /// Keep the registry, twins, C2D queues and telemetry in memory only (no state.db, so nothing
    /// survives a restart): no commit to disk before each acknowledgement. The CA and hub.json
    /// still go to --state-dir. For benchmarks, which measure clients rather than the disk.
    #[arg(long)]
    memory_only: bool,

    /// Serve the IoT Edge workload API over plain HTTP on this port of --bind too (0 = any free
    /// port; see hub.json). It signs tokens for any module without asking who calls.
    #[arg(long, value_name = "PORT")]
    workload_port: Option<u16>,

    /// Milliseconds added before every hub -> device answer (twin responses, direct-method
    /// requests, C2D and module-input deliveries), to surface races instant answers hide.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,

    /// Up to this many more milliseconds, at random, per answer.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    jitter_ms: u64,

    /// How long accepted telemetry is kept for GET /emulator/events (IoT Hub's default: 1 day):
    /// seconds, or a number with s, m, h or d.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_duration)]
    retention: Duration,

    /// Throttle as IoT Hub's tier does for one unit (only `s1`): D2C sends 100/s (PUBACKs wait),
    /// twin reads 100/s and updates 50/s (status 429), direct methods 160 KB/s (HTTP 429).
    #[arg(long, value_name = "TIER")]
    throttle: Option<Tier>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => s.split_at(at),
        None => (s, "s"),
    };
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 3600, 90m, 12h or 1d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| format!("{s:?} is too long"))
}

fn parse_key(s: &str) -> Result<String, String> {
    ironhub_protocol::sas::decode_key(s).map(|_| s.to_owned()).map_err(|_| "not a valid base64 key".to_owned())
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One descriptor per connected client: the soft RLIMIT_NOFILE (often 1,024) would cap the hub far
/// below the tens of thousands of clients it can hold, so it is raised to the hard limit, as servers do.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                log::warn!("emulator: cannot raise the open files limit to {}", limit.rlim_max);
            }
        }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    raise_open_files_limit();
    let args = match Cli::parse().command {
        Command::Serve(args) => args,
        Command::Healthcheck(args) => std::process::exit(healthcheck::run(args)),
    };
    let config = EmulatorConfig {
        hostname: args.hostname,
        mqtt_addr: SocketAddr::new(args.bind, args.mqtt_port),
        mqtt_extra_ips: args.mqtt_also_bind,
        https_addr: SocketAddr::new(args.bind, args.https_port),
        amqp_addr: SocketAddr::new(args.bind, args.amqp_port.unwrap_or(if args.https_port == 443 { 5671 } else { 0 })),
        partition_count: args.partitions,
        state_dir: Some(args.state_dir),
        memory_only: args.memory_only,
        policy_key: args.policy_key,
        ca_cert_file: args.ca_cert,
        workload_socket: args.workload_socket,
        workload_addr: args.workload_port.map(|port| SocketAddr::new(args.bind, port)),
        retention: Some(args.retention),
        throttle: args.throttle,
        timing: Timing { latency: Duration::from_millis(args.latency_ms), jitter: Duration::from_millis(args.jitter_ms) },
        ..Default::default()
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ironhub-emulator: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        match Emulator::start(config).await {
            Ok(running) => {
                wait_for_stop().await;
                log::info!("emulator: stopping");
                running.shutdown().await;
                0
            }
            Err(e) => {
                eprintln!("ironhub-emulator: {e}");
                1
            }
        }
    });
    std::process::exit(code);
}
