//! `ironhub-emulator healthcheck`: is the emulator serving the state directory DIR up and answering?
//!
//! What a container HEALTHCHECK (or a CI script) runs, so it needs nothing but the binary: it reads
//! `DIR/hub.json`, calls the control API over HTTPS (trusting only the emulator's CA, with a service
//! SAS token signed by the policy key from the service connection string) and opens a TCP
//! connection to the MQTT port. Exit status 0 when both answer, 1 otherwise, with one line saying
//! why; the key and the token are never printed.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use ironhub_protocol::connection_string::ConnectionString;
use ironhub_protocol::sas;
use serde::Deserialize;

#[derive(Args)]
pub struct HealthcheckArgs {
    /// The state directory the emulator was started with (its hub.json is read).
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,

    /// Address to reach the listeners on (the emulator's --bind, or loopback when it binds all).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    address: IpAddr,

    /// Seconds to wait for each answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    timeout: u64,
}

/// The part of hub.json the check needs (other helpers may add fields: they are ignored).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HubJson {
    hostname: String,
    mqtt_port: u16,
    https_port: u16,
    ca_file: PathBuf,
    service_connection_string: String,
}

/// Runs the check and returns the process exit status.
pub fn run(args: HealthcheckArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unhealthy: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(check(&args)) {
        Ok(summary) => {
            println!("healthy: {summary}");
            0
        }
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            1
        }
    }
}

async fn check(args: &HealthcheckArgs) -> Result<String, String> {
    let hub = read_hub_json(&args.state_dir)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let https = SocketAddr::new(args.address, hub.https_port);
    check_control_api(&hub, https, timeout).await?;
    let mqtt = SocketAddr::new(args.address, hub.mqtt_port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(mqtt)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("MQTT port {mqtt}: {e}")),
        Err(_) => return Err(format!("MQTT port {mqtt}: no answer in {} s", timeout.as_secs())),
    }
    Ok(format!("control API on {https} answered, MQTT port {mqtt} accepts"))
}

fn read_hub_json(state_dir: &Path) -> Result<HubJson, String> {
    let path = state_dir.join("hub.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e} (not started yet?)", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `GET /emulator/routes`: needs TLS, the service API's SAS check and the hub itself to answer.
async fn check_control_api(hub: &HubJson, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let ca_pem = std::fs::read(&hub.ca_file).map_err(|e| format!("{}: {e}", hub.ca_file.display()))?;
    let ca = reqwest::Certificate::from_pem(&ca_pem).map_err(|e| format!("{}: {e}", hub.ca_file.display()))?;
    let cs = ConnectionString::parse(&hub.service_connection_string)
        .map_err(|e| format!("serviceConnectionString in hub.json: {e}"))?;
    let (Some(policy), Some(key)) = (cs.shared_access_key_name.as_deref(), cs.shared_access_key.as_deref()) else {
        return Err("serviceConnectionString in hub.json names no policy".into());
    };
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 300;
    let token = sas::generate_token(&hub.hostname, key, Some(policy), expiry)
        .map_err(|_| "the policy key in hub.json is not valid base64".to_string())?;
    // The certificate names the hub's hostname, which need not resolve here (a container's
    // --hostname): connect to `addr` and still verify the name.
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve(&hub.hostname, addr)
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("HTTPS client: {e}"))?;
    let url = format!("https://{}:{}/emulator/routes?api-version=2021-04-12", hub.hostname, hub.https_port);
    let response = client
        .get(&url)
        .header("Authorization", token)
        .send()
        .await
        .map_err(|e| format!("control API on {addr}: {}", without_url(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("control API on {addr} answered {status}"));
    }
    Ok(())
}

/// reqwest errors print their URL; ours has no secret in it, but the source chain says more.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() { "timed out".to_string() } else { "request failed".to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
