//! The ironhub Rust side of `benches/run` until the engine's programs in `benches/rust/` take over:
//! the same command line and measurements as the C programs (see `benches/c/bench_common.h`),
//! through the public blocking API (`send_message`, `get_twin`) and pipelined sends
//! (`send_message_pipelined`). Prints one JSON object per measurement:
//! `{"name": ..., "value": ..., "unit": ...}`.
//!
//! Env: `BENCH_CS` (device connection string), `BENCH_CA` (the hub's root PEM file),
//! `BENCH_MQTT_PORT` (default 8883). Built by `cargo build --profile bench --bench ironhub_send`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ironhub::blocking::Client;
use ironhub::{ClientOptions, Message};

fn emit(name: &str, value: f64, unit: &str) {
    println!("{}", ironhub::serde_json::json!({"name": name, "value": value, "unit": unit}));
}

fn emit_percentiles(prefix: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    for p in [50, 90, 99] {
        let at = ((samples.len() - 1) as f64 * p as f64 / 100.0) as usize;
        emit(&format!("{prefix}_p{p}"), samples[at], "us");
    }
}

/// `/proc/self/status` field in KiB (VmRSS) or count (Threads).
fn proc_status(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// CPU time of this process (user + system, µs) and its context switches, every thread counted:
/// `getrusage(RUSAGE_SELF)`, as `benches/c/bench_common.h` measures the C sides (the switches in
/// `/proc/self/status` are the main thread's alone, which hid the runtime worker's wake-ups).
fn usage() -> (f64, f64) {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    (us(ru.ru_utime) + us(ru.ru_stime), (ru.ru_nvcsw + ru.ru_nivcsw) as f64)
}

fn emit_rate(prefix: &str, n: usize, started: Instant, u0: (f64, f64)) {
    let secs = started.elapsed().as_secs_f64();
    let u1 = usage();
    emit(prefix, n as f64 / secs, "msg/s");
    emit(&format!("{prefix}_cpu"), (u1.0 - u0.0) / n as f64, "us/msg");
    emit(&format!("{prefix}_ctxsw"), (u1.1 - u0.1) / n as f64, "switches/msg");
}

fn client(cs: &str, ca: &str) -> Client {
    client_with(cs, ca, ClientOptions::default())
}

fn client_with(cs: &str, ca: &str, options: ClientOptions) -> Client {
    let options = ClientOptions {
        server_verification_cert: Some(ca.to_string()),
        mqtt_port: std::env::var("BENCH_MQTT_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8883),
        ..options
    };
    Client::create_from_connection_string(cs, options).expect("create")
}

/// Pipelined modes queue `n` sends at once: the queue bounds are raised to hold them (as the C and
/// Python programs do), so a send fails only if the engine refuses it, not the default bound of 1,000.
fn pipelined_options(mode: &str, args: &[String]) -> ClientOptions {
    let num = |i: usize| args.get(i).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    let (n, size) = match mode {
        "burst" => (num(1), num(2)),
        "window" => (num(1), num(3)),
        _ => return ClientOptions::default(),
    };
    ClientOptions {
        max_queued_messages: n.max(ironhub::options::DEFAULT_MAX_QUEUED_MESSAGES),
        max_queued_bytes: (n * (size + 256)).max(ironhub::options::DEFAULT_MAX_QUEUED_BYTES),
        ..ClientOptions::default()
    }
}

/// `n` sends through `send_message_pipelined`, at most `window` outstanding (waited oldest first).
fn pipelined(c: &Client, name: &str, n: usize, window: usize, size: usize) {
    let msg = Message::new(vec![b'x'; size]);
    let (u0, started) = (usage(), Instant::now());
    let mut pending = VecDeque::with_capacity(window.min(n));
    let mut failed = 0usize;
    for _ in 0..n {
        if pending.len() >= window {
            failed += Client::wait_send(pending.pop_front().unwrap()).is_err() as usize;
        }
        pending.push_back(c.send_message_pipelined(&msg));
    }
    for f in pending {
        failed += Client::wait_send(f).is_err() as usize;
    }
    emit_rate(name, n, started, u0);
    emit(&format!("{name}_failed"), failed as f64, "sends");
}

/// One descriptor per client: the soft limit (often 1,024) is raised to the hard one.
fn raise_fd_limit() {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Connects every connection string of `list` (one a line) in this process, one after another, and
/// reports RSS and threads added per client. A connect that fails is reported on stderr (which
/// client, after how long, why) and tried again up to twice: `clients_N_retried` counts them, and
/// the program fails if one never connects.
fn clients(list: &str, ca: &str) {
    raise_fd_limit();
    let list = std::fs::read_to_string(list).expect("read the connection string list");
    let css: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    // The shared runtime and dispatcher pool are created once per process: not per client.
    let warm = client(css[0], ca);
    warm.connect().expect("connect");
    warm.shutdown().ok();
    let (rss0, threads0, started) = (proc_status("VmRSS:"), proc_status("Threads:"), Instant::now());
    let mut retried = 0usize;
    let mut clients = Vec::with_capacity(css.len());
    for (i, cs) in css.iter().enumerate() {
        let c = client(cs, ca);
        let mut attempt = 0;
        loop {
            let t = Instant::now();
            match c.connect() {
                Ok(()) => break,
                Err(e) if attempt < 2 => {
                    eprintln!("client {i} of {}: connect failed after {:.1} s: {e}; again", css.len(), t.elapsed().as_secs_f64());
                    attempt += 1;
                    retried += 1;
                }
                Err(e) => {
                    eprintln!("client {i} of {}: connect failed after {:.1} s: {e}; giving up", css.len(), t.elapsed().as_secs_f64());
                    std::process::exit(1);
                }
            }
        }
        clients.push(c);
    }
    let secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let n = clients.len();
    emit(&format!("clients_{n}_connect"), secs, "s");
    emit(&format!("clients_{n}_rss"), (proc_status("VmRSS:") - rss0) / n as f64, "KiB/client");
    emit(&format!("clients_{n}_threads"), proc_status("Threads:") - threads0, "threads");
    emit(&format!("clients_{n}_retried"), retried as f64, "connects");
    // Tens of thousands of polite DISCONNECTs one after another take longer than the measurement:
    // the process ends and the hub sees the sockets close.
    std::process::exit(0);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let ca = std::fs::read_to_string(std::env::var("BENCH_CA").expect("set BENCH_CA")).expect("read BENCH_CA");
    let num = |i: usize| -> usize { args.get(i).and_then(|v| v.parse().ok()).expect("numeric argument") };
    let mode = args.first().map(String::as_str).unwrap_or("");

    if mode == "clients" {
        return clients(&args[1], &ca);
    }

    let cs = std::env::var("BENCH_CS").expect("set BENCH_CS");
    let started = Instant::now();
    let c = client_with(&cs, &ca, pipelined_options(mode, &args));
    c.connect().expect("connect");
    let connect_ms = started.elapsed().as_secs_f64() * 1e3;
    match mode {
        "connect" => emit("connect", connect_ms, "ms"),
        "sync" => {
            let (n, size) = (num(1), num(2));
            let msg = Message::new(vec![b'x'; size]);
            let name = format!("sync_send_{size}B");
            let mut lat = Vec::with_capacity(n);
            let (u0, started) = (usage(), Instant::now());
            for _ in 0..n {
                let s = Instant::now();
                c.send_message(&msg).expect("send");
                lat.push(s.elapsed().as_secs_f64() * 1e6);
            }
            emit_rate(&name, n, started, u0);
            emit_percentiles(&name, lat);
        }
        "burst" => pipelined(&c, &format!("burst_{}", num(1)), num(1), num(1), num(2)),
        "window" => pipelined(&c, &format!("window_{}", num(2)), num(1), num(2), num(3)),
        "twin" => {
            let lat = (0..num(1))
                .map(|_| {
                    let s = Instant::now();
                    c.get_twin().expect("get_twin");
                    s.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            emit_percentiles("twin_get", lat);
        }
        other => {
            eprintln!("unknown mode {other:?}: see benches/c/bench_common.h");
            std::process::exit(2);
        }
    }
    c.shutdown().ok();
}
