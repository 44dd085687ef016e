//! Owns starting and stopping a whole emulator: hub state, TLS material, the MQTT listener, the
//! HTTPS listener and, when configured, the IoT Edge workload API, in-process on a tokio runtime
//! (`Emulator::start`) or on a thread of its own (`BackgroundEmulator`, for sync tests, C tests
//! and other languages).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::amqp::{eventhub::EventHubEndpoint, AmqpServer};
use crate::certs::{self, CertError};
use crate::dps::Dps;
use crate::files::Files;
use crate::hub::{persist, Hub, HubConfig, HubError};
use crate::mqtt::{Broker, Timing};
use crate::workload::{self, WorkloadApi, WorkloadEndpoints};

/// Where and how to run. `Default` is what tests want: `localhost`, ephemeral loopback ports,
/// state in memory, a generated policy key.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub hostname: String,
    pub mqtt_addr: SocketAddr,
    /// More addresses the MQTT listener binds, on `mqtt_addr`'s port (the server certificate names
    /// them too). Loopback gives one destination address:port only ~28,000 ephemeral source ports,
    /// so 50,000 clients on one host need a second address (127.0.0.2, ...), reached with
    /// `GatewayHostName=` in their connection strings.
    pub mqtt_extra_ips: Vec<IpAddr>,
    pub https_addr: SocketAddr,
    /// The AMQP listener (IoT Hub's 5671): TLS, SASL, `$cbs`, the Event Hub-compatible endpoint.
    pub amqp_addr: SocketAddr,
    /// Bounds on AMQP peers (frame size, idle timeout, connections, sessions, links).
    pub amqp_limits: crate::amqp::AmqpLimits,
    /// Partitions of the Event Hub-compatible endpoint (IoT Hub's default is 4).
    pub partition_count: u32,
    pub state_dir: Option<PathBuf>,
    pub policy_key: Option<String>,
    pub ca_cert_file: Option<PathBuf>,
    /// Serve the IoT Edge workload API on this Unix socket (`IOTEDGE_WORKLOADURI=unix://...`).
    pub workload_socket: Option<PathBuf>,
    /// Serve the IoT Edge workload API over plain HTTP on this address too (`http://host:port`;
    /// port 0 = any free port). It signs tokens for any module without asking who calls: keep it on loopback.
    pub workload_addr: Option<SocketAddr>,
    /// Latency and jitter added before every hub → device answer (twin responses, method
    /// requests, C2D and input deliveries); zero by default.
    pub timing: Timing,
    /// How long accepted telemetry is kept (in `state.db` with a state directory); `None`: one day.
    pub retention: Option<std::time::Duration>,
    /// IoT Hub's limits of this tier (`--throttle s1`); `None`: no throttling.
    pub throttle: Option<crate::hub::throttle::Tier>,
    /// Bounds on HTTPS peers (connections at once, request read timeouts).
    pub http_limits: crate::http::HttpLimits,
    /// MQTT and AMQP connections held at once; past it a new one is closed at once. `None`: what
    /// the open files limit leaves after the HTTPS cap and a reserve (a connection past that limit
    /// would sit unaccepted in the kernel's queue while its client waits).
    pub max_tls_connections: Option<usize>,
    /// Keep the registry, twins, device-bound messages and telemetry in memory only: no `state.db`,
    /// so no commit to disk before each acknowledgement. The CA, the server certificate and
    /// `hub.json` still go to `state_dir`. For benchmarks, which compare clients and must not
    /// measure the disk's flush latency (one per acknowledged telemetry message with a store).
    pub memory_only: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        EmulatorConfig {
            hostname: "localhost".into(),
            mqtt_addr: loopback,
            mqtt_extra_ips: Vec::new(),
            https_addr: loopback,
            amqp_addr: loopback,
            amqp_limits: crate::amqp::AmqpLimits::default(),
            partition_count: 4,
            state_dir: None,
            policy_key: None,
            ca_cert_file: None,
            workload_socket: None,
            workload_addr: None,
            timing: Timing::default(),
            retention: None,
            throttle: None,
            http_limits: crate::http::HttpLimits::default(),
            max_tls_connections: None,
            memory_only: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(transparent)]
    Certificates(#[from] CertError),
    #[error("hub state: {0}")]
    Hub(#[from] HubError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the emulator thread stopped before it started")]
    ThreadGone,
}

pub struct Emulator;

/// What a client or test needs to reach a started emulator; both ways of running one
/// ([`RunningEmulator`], [`BackgroundEmulator`]) hand it out by `Deref`.
#[derive(Clone)]
pub struct EmulatorHandle {
    hostname: String,
    mqtt_port: u16,
    https_port: u16,
    amqp_port: u16,
    ca_pem: String,
    service_connection_string: String,
    hub: Arc<Hub>,
    broker: Arc<Broker>,
    workload: WorkloadEndpoints,
    dps: Arc<Dps>,
    files: Arc<Files>,
    amqp: Arc<AmqpServer>,
}

/// A started emulator. Dropping it stops the listeners; `shutdown` does so and waits.
pub struct RunningEmulator {
    handle: EmulatorHandle,
    tasks: Vec<JoinHandle<()>>,
}

const HUB_FILE: &str = "hub.json";

/// Pending connections a listener queues before `accept` (the kernel caps it at `net.core.somaxconn`).
/// tokio's `TcpListener::bind` asks for 1,024; a reconnect storm of tens of thousands of clients
/// after a restart overflows that, and an overflowed queue drops handshakes (clients then wait
/// for SYN retransmits, seconds each).
const LISTEN_BACKLOG: u32 = 8192;

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, EmulatorError> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| EmulatorError::Bind { what, addr, source })
}

/// The service connection string names the HTTPS port unless it is IoT Hub's 443.
fn service_host(hostname: &str, https_port: u16) -> String {
    if https_port == 443 {
        hostname.to_owned()
    } else {
        format!("{hostname}:{https_port}")
    }
}

impl Emulator {
    pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator, EmulatorError> {
        let state_dir = config.state_dir.as_deref();
        if let Some(dir) = state_dir {
            std::fs::create_dir_all(dir)?;
            // hub.json announces a running emulator: a stale one must not be read as ours.
            let _ = std::fs::remove_file(dir.join(HUB_FILE));
        }
        let ca_roots = match &config.ca_cert_file {
            Some(path) => certs::ca_roots_from_file(path)?,
            None => Vec::new(),
        };
        let hub = Arc::new(Hub::new(HubConfig {
            hostname: config.hostname.clone(),
            state_dir: if config.memory_only { None } else { config.state_dir.clone() },
            policy_key: config.policy_key.clone(),
            retention: config.retention,
            throttle: config.throttle,
            ca_roots,
            partition_count: config.partition_count,
        })?);
        let broker = Broker::with_timing(hub.clone(), config.timing);
        let dps = Dps::new(hub.clone(), if config.memory_only { None } else { state_dir })?;
        broker.attach_dps(dps.clone());
        let extra_names: Vec<String> = config.mqtt_extra_ips.iter().map(IpAddr::to_string).collect();
        let identity = certs::server_identity(state_dir, &config.hostname, &extra_names)?;
        let acceptor = TlsAcceptor::from(certs::server_config(&identity)?);

        let mqtt_listener = bind("MQTT", config.mqtt_addr).await?;
        let https_listener = bind("HTTPS", config.https_addr).await?;
        let mqtt_port = mqtt_listener.local_addr()?.port();
        let mut mqtt_listeners = vec![mqtt_listener];
        for ip in &config.mqtt_extra_ips {
            mqtt_listeners.push(bind("MQTT", SocketAddr::new(*ip, mqtt_port)).await?);
        }
        let https_port = https_listener.local_addr()?.port();
        let amqp_listener = bind("AMQP", config.amqp_addr).await?;
        let amqp_port = amqp_listener.local_addr()?.port();
        let mut workload = WorkloadEndpoints::default();
        let workload_listener = match config.workload_addr {
            Some(addr) => {
                let listener = bind("workload API", addr).await?;
                workload.tcp = Some(listener.local_addr()?);
                Some(listener)
            }
            None => None,
        };

        let mut tasks = Vec::new();
        let workload_api = Arc::new(WorkloadApi::new(hub.clone(), identity.ca_pem.clone()));
        if let Some(path) = &config.workload_socket {
            // Bound last of all listeners: nothing can fail after it and leave the socket file behind.
            tasks.push(workload::serve_socket(path, workload_api.clone())?);
            workload.socket = Some(path.clone());
        }
        if let Some(listener) = workload_listener {
            tasks.push(tokio::spawn(workload::serve(listener, workload_api)));
        }
        let files = Files::new(service_host(&config.hostname, https_port), state_dir);
        let eventhub = EventHubEndpoint::new(hub.clone());
        let amqp = AmqpServer::new(hub.clone(), broker.clone(), config.amqp_limits, eventhub);
        let ctx = Arc::new(crate::http::Context {
            hub: hub.clone(),
            broker: broker.clone(),
            dps: dps.clone(),
            files: files.clone(),
            amqp: amqp.clone(),
            limits: config.http_limits,
        });
        let cap = crate::tls_listener::ConnectionCap::new(config.max_tls_connections, config.http_limits.max_connections);
        log::info!("emulator: holds up to {} MQTT and AMQP connections at once", cap.size());
        for listener in mqtt_listeners {
            tasks.push(tokio::spawn(broker.clone().serve_tls(listener, acceptor.clone(), cap.clone())));
        }
        tasks.push(tokio::spawn(amqp.clone().serve_tls(amqp_listener, acceptor.clone(), cap)));
        tasks.push(tokio::spawn(crate::http::serve(https_listener, acceptor, ctx)));
        let service_connection_string = hub.service_connection_string(&service_host(&config.hostname, https_port));
        let running = RunningEmulator {
            handle: EmulatorHandle {
                hostname: config.hostname.clone(),
                mqtt_port,
                https_port,
                amqp_port,
                ca_pem: identity.ca_pem,
                service_connection_string,
                hub,
                broker,
                workload,
                dps,
                files,
                amqp,
            },
            tasks,
        };
        if let Some(dir) = state_dir {
            running.write_hub_file(dir)?;
        }
        log::info!("emulator: {} serving MQTT on {mqtt_port}, HTTPS on {https_port} and AMQP on {amqp_port}", running.hostname);
        if let Some(uri) = running.workload.uri() {
            log::info!("emulator: IoT Edge workload API at {uri}");
        }
        Ok(running)
    }
}

impl EmulatorHandle {
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn mqtt_port(&self) -> u16 {
        self.mqtt_port
    }

    pub fn https_port(&self) -> u16 {
        self.https_port
    }

    /// The AMQP listener's port (IoT Hub's 5671).
    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    /// The AMQP server (also reached over WebSockets on the HTTPS port).
    pub fn amqp(&self) -> &Arc<AmqpServer> {
        &self.amqp
    }

    /// `Endpoint=sb://host[:port]/;SharedAccessKeyName=iothubowner;SharedAccessKey=...;EntityPath=<hub>`:
    /// what an Event Hubs consumer reads telemetry with. The port is left out when it is 5671.
    pub fn event_hub_connection_string(&self) -> String {
        self.amqp.eventhub().connection_string(&self.hostname, self.amqp_port)
    }

    /// The emulator's CA certificate: what clients trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// `HostName=host[:port];SharedAccessKeyName=iothubowner;SharedAccessKey=...`.
    pub fn service_connection_string(&self) -> &str {
        &self.service_connection_string
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The Device Provisioning Service served on the same listeners.
    pub fn dps(&self) -> &Arc<Dps> {
        &self.dps
    }

    /// File upload: pending uploads, blobs and upload notifications.
    pub fn files(&self) -> &Arc<Files> {
        &self.files
    }

    /// The DPS ID scope devices register with.
    pub fn id_scope(&self) -> String {
        self.dps.id_scope()
    }

    /// `HostName=host[:port];SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=...`.
    pub fn provisioning_service_connection_string(&self) -> String {
        self.dps.service_connection_string(&service_host(&self.hostname, self.https_port))
    }

    /// Where the IoT Edge workload API listens (empty unless configured).
    pub fn workload(&self) -> &WorkloadEndpoints {
        &self.workload
    }

    /// The `IOTEDGE_*` variables IoT Edge would start `device_id`/`module_id` with (see
    /// [`workload::edge_environment`]), e.g. to set before `create_from_edge_environment`.
    pub fn edge_environment(&self, device_id: &str, module_id: &str) -> Vec<(String, String)> {
        workload::edge_environment(&self.hub, &self.workload, device_id, module_id)
    }

}

impl std::ops::Deref for RunningEmulator {
    type Target = EmulatorHandle;
    fn deref(&self) -> &EmulatorHandle {
        &self.handle
    }
}

impl RunningEmulator {
    /// `hub.json`, written last (atomically) so whoever waits for it finds both ports open.
    fn write_hub_file(&self, dir: &Path) -> Result<(), EmulatorError> {
        let mut info = json!({
            "hostname": self.hostname,
            "mqttPort": self.mqtt_port,
            "httpsPort": self.https_port,
            "amqpPort": self.amqp_port,
            "eventHubConnectionString": self.event_hub_connection_string(),
            "caFile": dir.join("ca.pem"),
            "serviceConnectionString": self.service_connection_string,
            "idScope": self.id_scope(),
            "provisioningServiceConnectionString": self.provisioning_service_connection_string(),
        });
        if let Some(uri) = self.workload.uri() {
            info["workloadUri"] = json!(uri);
        }
        if let Some(uri) = self.workload.http_uri() {
            info["workloadHttpUri"] = json!(uri);
        }
        persist::write_atomic(&dir.join(HUB_FILE), serde_json::to_string_pretty(&info).unwrap_or_default().as_bytes())?;
        Ok(())
    }

    /// Stops the listeners (HTTPS connections go with them) and drops every live MQTT
    /// connection, so clients see the hub go away as they would a real restart.
    fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(path) = &self.workload.socket {
            // A socket file nobody listens on would only make the next start check for liveness.
            let _ = std::fs::remove_file(path);
        }
        for id in self.hub.connected_identities() {
            self.broker.disconnect(&id);
        }
        // Everything accepted is committed; a restart on the same state directory may open it now.
        self.hub.close_store();
    }

    /// Stops everything and waits for the listener tasks to end. State is already on disk.
    pub async fn shutdown(mut self) {
        self.stop();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An emulator on its own thread and runtime, until dropped.
pub struct BackgroundEmulator {
    handle: EmulatorHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundEmulator {
    pub fn start(config: EmulatorConfig) -> Result<Self, EmulatorError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("ironhub-emulator".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(EmulatorError::Io(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                match Emulator::start(config).await {
                    Ok(running) => {
                        let _ = ready_tx.send(Ok(running.handle.clone()));
                        let _ = stop_rx.await;
                        running.shutdown().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
            // Connection tasks still running die with the runtime here.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
        })?;
        let handle = ready_rx.recv().map_err(|_| EmulatorError::ThreadGone)??;
        Ok(BackgroundEmulator {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl std::ops::Deref for BackgroundEmulator {
    type Target = EmulatorHandle;
    fn deref(&self) -> &EmulatorHandle {
        &self.handle
    }
}

impl Drop for BackgroundEmulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
