//! Micro-benchmarks of the client engine against an in-process `ironhub-emulator` over loopback TLS.
//! Prints one JSON object per measurement on stdout (`{"name":..., "value":..., "unit":...}`), the
//! format `benches/run` collects.
//!
//! CPU and context switches are counted for the client's threads only (the caller, `ironhub-*`):
//! the emulator runs in the same process on threads of its own, read from /proc/self/task.
//! RSS per client is measured in a child process (this program re-run with `--clients N`) that
//! holds only clients, so the emulator's own per-connection memory is not counted.
//!
//! `cargo bench --bench engine` (all), or `cargo bench --bench engine -- sync pipelined rss` to pick.

use std::time::{Duration, Instant};

use ironhub::service::{DirectMethodRequest, ServiceClient, ServiceOptions};
use ironhub::{ClientOptions, Message, MethodResponse};
use ironhub_emulator::{BackgroundEmulator, EmulatorConfig};

fn emit(name: &str, value: f64, unit: &str) {
    println!("{}", serde_json::json!({ "name": name, "value": (value * 100.0).round() / 100.0, "unit": unit }));
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// CPU time (µs) and context switches of this process's threads whose name marks them as the
/// client's: the caller (`main`) and ironhub's runtime and dispatcher threads.
fn client_thread_usage() -> (f64, u64) {
    let ticks = 100.0; // USER_HZ on Linux
    let (mut cpu, mut switches) = (0.0, 0u64);
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return (0.0, 0) };
    for t in dir.flatten() {
        let p = t.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        // The caller is the main thread (its task id is the process id).
        let main = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) == Some(std::process::id());
        if !(main || comm.starts_with("ironhub-net") || comm.starts_with("ironhub-disp")) {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(p.join("stat")) {
            // Fields after the `(comm)`: utime is the 14th field overall, stime the 15th.
            let rest = &stat[stat.rfind(')').map(|i| i + 2).unwrap_or(0)..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() > 13 {
                let u: f64 = f[11].parse().unwrap_or(0.0);
                let s: f64 = f[12].parse().unwrap_or(0.0);
                cpu += (u + s) / ticks * 1e6;
            }
        }
        if let Ok(status) = std::fs::read_to_string(p.join("status")) {
            for line in status.lines() {
                if line.starts_with("voluntary_ctxt_switches") || line.starts_with("nonvoluntary_ctxt_switches") {
                    switches += line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                }
            }
        }
    }
    (cpu, switches)
}

/// Latencies of `n` calls of `call`, sorted, after `warm_up` untimed ones.
fn timed(n: usize, warm_up: usize, mut call: impl FnMut()) -> Vec<Duration> {
    for _ in 0..warm_up {
        call();
    }
    let mut lat: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            call();
            t.elapsed()
        })
        .collect();
    lat.sort();
    lat
}

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn raise_fd_limit() {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

struct Bench {
    emu: BackgroundEmulator,
    service: ServiceClient,
}

impl Bench {
    fn options(&self) -> ClientOptions {
        ClientOptions {
            server_verification_cert: Some(self.emu.ca_pem().to_string()),
            mqtt_port: self.emu.mqtt_port(),
            https_port: self.emu.https_port(),
            operation_timeout: Duration::from_secs(120),
            max_queued_messages: 50_000,
            max_queued_bytes: 64 * 1024 * 1024,
            ..Default::default()
        }
    }

    fn device(&self, id: &str) -> String {
        let _ = self.emu.hub().create_device(id);
        self.emu.hub().device_connection_string(id, None).expect("device connection string")
    }

    fn blocking_client(&self, id: &str) -> ironhub::blocking::Client {
        let c = ironhub::blocking::Client::create_from_connection_string(&self.device(id), self.options()).expect("client");
        c.connect().expect("connect");
        c
    }
}

fn sync_send(b: &Bench) {
    let c = b.blocking_client("bench-sync");
    let m = Message::new(vec![b'x'; 200]);
    timed(500, 0, || c.send_message(&m).expect("warm-up send"));
    let n = 5_000;
    let (cpu0, sw0) = client_thread_usage();
    let t0 = Instant::now();
    let lat = timed(n, 0, || c.send_message(&m).expect("send"));
    let total = t0.elapsed();
    let (cpu1, sw1) = client_thread_usage();
    emit("rust_sync_send_rate", n as f64 / total.as_secs_f64(), "msg/s");
    emit("rust_sync_send_p50", percentile(&lat, 0.5), "us");
    emit("rust_sync_send_p99", percentile(&lat, 0.99), "us");
    emit("rust_sync_send_cpu_per_msg", (cpu1 - cpu0) / n as f64, "us");
    emit("rust_sync_send_ctx_switches_per_msg", (sw1 - sw0) as f64 / n as f64, "switches");
    let _ = c.shutdown();
}

fn pipelined(b: &Bench) {
    let c = b.blocking_client("bench-pipelined");
    let n = 20_000;
    let m = Message::new(vec![b'x'; 200]);
    let t0 = Instant::now();
    let futs: Vec<_> = (0..n).map(|_| c.send_message_pipelined(&m)).collect();
    // Awaited on a runtime of the bench's own: the futures' timers need a tokio context.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let results = rt.block_on(futures::future::join_all(futs));
    let total = t0.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("pipelined: first failure: {e}");
    }
    emit("rust_pipelined_20000_rate", n as f64 / total.as_secs_f64(), "msg/s");
    emit("rust_pipelined_20000_failed", failed as f64, "sends");

    // The same burst, its outcomes taken in call order (as a firmware loop would): most are known
    // by the time they are awaited, so this measures the engine without `join_all`'s per-future
    // wake-ups and timers on the bench's thread (half of that thread's samples in the profile).
    let t0 = Instant::now();
    let futs: Vec<_> = (0..n).map(|_| c.send_message_pipelined(&m)).collect();
    let failed = rt.block_on(async {
        let mut failed = 0;
        for f in futs {
            failed += usize::from(f.await.is_err());
        }
        failed
    });
    let total = t0.elapsed();
    emit("rust_pipelined_20000_in_order_rate", n as f64 / total.as_secs_f64(), "msg/s");
    emit("rust_pipelined_20000_in_order_failed", failed as f64, "sends");
    let _ = c.shutdown();
}

fn round_trips(b: &Bench) {
    let c = b.blocking_client("bench-rtt");
    let lat = timed(500, 50, || {
        c.get_twin().expect("get_twin");
    });
    emit("rust_get_twin_p50", percentile(&lat, 0.5), "us");
    emit("rust_get_twin_p99", percentile(&lat, 0.99), "us");

    let responder = c.clone();
    c.on_method_request_received(Some(std::sync::Arc::new(move |req| {
        let _ = responder.send_method_response(&MethodResponse::create_from_method_request(&req, 200, None));
    })))
    .expect("method handler");
    let req = DirectMethodRequest {
        method_name: "ping".into(),
        payload: serde_json::Value::Null,
        response_timeout_in_seconds: 30,
        connect_timeout_in_seconds: 0,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let lat = timed(200, 50, || {
        rt.block_on(b.service.invoke_method("bench-rtt", None, &req)).expect("invoke");
    });
    emit("rust_method_round_trip_p50", percentile(&lat, 0.5), "us");
    emit("rust_method_round_trip_p99", percentile(&lat, 0.99), "us");
    let _ = c.shutdown();
}

/// Runs this program again as `--clients N` and reads the RSS per client it reports.
fn rss(b: &Bench, counts: &[usize]) {
    let ca = std::env::temp_dir().join(format!("ironhub-bench-ca-{}.pem", std::process::id()));
    let list = std::env::temp_dir().join(format!("ironhub-bench-devices-{}.txt", std::process::id()));
    std::fs::write(&ca, b.emu.ca_pem()).expect("write CA");
    for &n in counts {
        let strings: Vec<String> = (0..=n).map(|i| b.device(&format!("bench-rss-{i}"))).collect();
        std::fs::write(&list, strings.join("\n")).expect("write device list");
        let out = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args(["--clients", &n.to_string(), "--port", &b.emu.mqtt_port().to_string()])
            .arg("--ca")
            .arg(&ca)
            .arg("--conn")
            .arg(&list)
            .output()
            .expect("run the client process");
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim().parse::<f64>() {
            Ok(kb) => emit(&format!("rust_rss_per_client_{n}"), kb, "KB"),
            Err(_) => eprintln!("rss child for {n} clients failed: {}{}", text, String::from_utf8_lossy(&out.stderr)),
        }
    }
    let _ = std::fs::remove_file(ca);
    let _ = std::fs::remove_file(list);
}

/// The child of `rss`: connects one client to warm up, then `n` more (connection strings from the
/// file `list`, one a line), and prints the RSS growth per client in KB.
fn rss_child(n: usize, port: u16, ca: &str, list: &str) {
    let strings: Vec<String> = std::fs::read_to_string(list).expect("device list").lines().map(String::from).collect();
    raise_fd_limit();
    let ca_pem = std::fs::read_to_string(ca).expect("CA");
    let opts = ClientOptions {
        server_verification_cert: Some(ca_pem),
        mqtt_port: port,
        operation_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    // Warm up the runtime, TLS and allocator with one client first.
    let first = ironhub::blocking::Client::create_from_connection_string(&strings[0], opts.clone()).expect("client");
    first.connect().expect("connect");
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kb();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let clients: Vec<ironhub::Client> = rt.block_on(async move {
        let mut all = Vec::with_capacity(n);
        let mut pending = Vec::new();
        for cs in &strings[1..=n] {
            let c = ironhub::Client::create_from_connection_string(cs, opts.clone()).expect("client");
            let c2 = c.clone();
            pending.push(async move { c2.connect().await });
            all.push(c);
            if pending.len() == 200 {
                for r in futures::future::join_all(std::mem::take(&mut pending)).await {
                    r.expect("connect");
                }
            }
        }
        for r in futures::future::join_all(pending).await {
            r.expect("connect");
        }
        all
    });
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kb();
    println!("{:.1}", (after.saturating_sub(before)) as f64 / n as f64);
    drop(clients);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--clients") {
        let get = |flag: &str| args.iter().position(|a| a == flag).map(|i| args[i + 1].clone()).expect(flag);
        rss_child(args[i + 1].parse().expect("count"), get("--port").parse().expect("port"), &get("--ca"), &get("--conn"));
        return;
    }
    let picked: Vec<&str> = args.iter().skip(1).filter(|a| !a.starts_with('-')).map(String::as_str).collect();
    let want = |name: &str| picked.is_empty() || picked.contains(&name);
    raise_fd_limit();
    let emu = BackgroundEmulator::start(EmulatorConfig::default()).expect("emulator");
    let service = ServiceClient::from_connection_string(
        emu.service_connection_string(),
        ServiceOptions { ca_pem: Some(emu.ca_pem().to_string()), timeout: Duration::from_secs(30) },
    )
    .expect("service client");
    let b = Bench { emu, service };
    if want("sync") {
        sync_send(&b);
    }
    if want("pipelined") {
        pipelined(&b);
    }
    if want("rtt") {
        round_trips(&b);
    }
    if want("rss") {
        let counts: Vec<usize> = std::env::var("IRONHUB_BENCH_CLIENTS")
            .unwrap_or_else(|_| "1000".into())
            .split(',')
            .filter_map(|s| s.parse().ok())
            .collect();
        rss(&b, &counts);
    }
}
