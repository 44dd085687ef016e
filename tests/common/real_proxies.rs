//! Real proxy servers from Debian's packages (which `.ci/run` installs), each started by a test on
//! an ephemeral loopback port with its own config file and log, and stopped when dropped:
//! `tinyproxy` (HTTP CONNECT, optional Basic auth), `danted` (SOCKS4 and SOCKS5 without
//! authentication: its `username` method needs system accounts) and `microsocks` (SOCKS5 with a
//! user name and password). Each one's log is how a test proves the traffic went through it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ironhub::{ProxyOptions, ProxyType};

static NEXT: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
pub struct RealProxy {
    child: Child,
    pub port: u16,
    pub kind: ProxyType,
    binary: &'static str,
    log: PathBuf,
    dir: PathBuf,
}

/// A port the kernel just handed out (and took back) on loopback: free unless raced, which
/// `start` retries.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn require(binary: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = PathBuf::from(dir).join(binary);
        if p.exists() {
            return p;
        }
    }
    panic!("{binary} is not installed: .ci/run installs tinyproxy, dante-server and microsocks (apt-get)");
}

impl RealProxy {
    /// Starts a daemon on a free port: `config(port, dir, log)` writes what it needs and gives its arguments.
    fn start(
        kind: ProxyType,
        binary: &'static str,
        config: impl Fn(u16, &Path, &Path) -> Vec<String>,
        log_is_stderr: bool,
    ) -> RealProxy {
        let exe = require(binary);
        let dir = std::env::temp_dir()
            .join(format!("ironhub-{binary}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("proxy.log");
        for _ in 0..5 {
            let port = free_port();
            let args = config(port, &dir, &log);
            let stdout = Stdio::from(std::fs::File::create(dir.join("stdout.log")).unwrap());
            let stderr = Stdio::from(std::fs::File::create(if log_is_stderr { log.clone() } else { dir.join("stderr.log") }).unwrap());
            let mut child = Command::new(&exe).args(&args).stdout(stdout).stderr(stderr).spawn().unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: the port was taken or the config refused; try again
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return RealProxy { child, port, kind, binary, log, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let stderr = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
        // (for microsocks, the log is its stderr)
        panic!("{binary} did not start: {stderr}{}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    /// A daemon that reads a config file: `text(port, log)` is its content, `args(conf)` the
    /// command line naming it.
    fn start_configured(
        kind: ProxyType,
        binary: &'static str,
        text: impl Fn(u16, &Path) -> String,
        args: impl Fn(&Path, &Path) -> Vec<String>,
    ) -> RealProxy {
        RealProxy::start(
            kind,
            binary,
            |port, dir, log| {
                let conf = dir.join(format!("{binary}.conf"));
                std::fs::write(&conf, text(port, log)).unwrap();
                args(&conf, dir)
            },
            false,
        )
    }

    /// tinyproxy: CONNECT to any port, or only to `only_port` (every other CONNECT is refused
    /// with 403); Basic auth when `auth` is given (wrong credentials: 401, none: 407).
    pub fn tinyproxy(auth: Option<(&str, &str)>, only_port: Option<u16>) -> RealProxy {
        let auth = auth.map(|(u, p)| format!("BasicAuth {u} {p}\n")).unwrap_or_default();
        let connect_port = only_port.map(|p| format!("ConnectPort {p}\n")).unwrap_or_default();
        let text = move |port: u16, log: &Path| {
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Connect\n\
                 MaxClients 50\nAllow 127.0.0.1\n{auth}{connect_port}",
                log.display()
            )
        };
        let args = |conf: &Path, _: &Path| vec!["-d".into(), "-c".into(), conf.display().to_string()];
        RealProxy::start_configured(ProxyType::Http, "tinyproxy", text, args)
    }

    /// danted: SOCKS4 and SOCKS5 without authentication; CONNECTs to `blocked_port` are refused
    /// by a `socks block` rule.
    pub fn danted(kind: ProxyType, blocked_port: Option<u16>) -> RealProxy {
        let block = blocked_port
            .map(|p| format!("socks block {{ from: 0.0.0.0/0 to: 0.0.0.0/0 port = {p} log: connect error }}\n"))
            .unwrap_or_default();
        let text = move |port: u16, log: &Path| {
            format!(
                "logoutput: {}\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
                 clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
                 client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: error }}\n{block}\
                 socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect error }}\n",
                log.display()
            )
        };
        let args = |conf: &Path, dir: &Path| {
            vec!["-f".into(), conf.display().to_string(), "-p".into(), dir.join("danted.pid").display().to_string()]
        };
        RealProxy::start_configured(kind, "danted", text, args)
    }

    /// microsocks: SOCKS5 with a user name and password (it logs each tunnel on stderr).
    pub fn microsocks(user: &str, password: &str) -> RealProxy {
        let (user, password) = (user.to_string(), password.to_string());
        RealProxy::start(
            ProxyType::Socks5,
            "microsocks",
            move |port, _, _| {
                ["-i", "127.0.0.1", "-p", &port.to_string(), "-u", &user, "-P", &password].map(str::to_string).to_vec()
            },
            true,
        )
    }

    /// Options for a client going through this proxy.
    pub fn options(&self, user: Option<&str>, password: Option<&str>) -> ProxyOptions {
        ProxyOptions {
            proxy_type: self.kind,
            proxy_addr: "127.0.0.1".into(),
            proxy_port: self.port,
            proxy_username: user.map(str::to_string),
            proxy_password: password.map(str::to_string),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 5 s: daemons write their logs asynchronously) for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tunnel to `port` on loopback shows in the log, in this daemon's words.
    pub fn assert_tunnelled_to(&self, port: u16) {
        let needle = match self.binary {
            // `Request (file descriptor 5): CONNECT localhost:12345 HTTP/1.1`
            "tinyproxy" => format!(":{port} HTTP/1."),
            // `client[4] 127.0.0.1: connected to localhost:12345`
            "microsocks" => format!(":{port}\n"),
            // danted: `pass(2): tcp/connect [: 127.0.0.1.5 127.0.0.1.1080 -> 127.0.0.1.6 127.0.0.1.12345`
            _ => format!(".{port}\n"),
        };
        let log = self.wait_log(&needle);
        assert!(log.contains(&needle), "no tunnel to port {port} in the proxy's log ({needle:?}):\n{log}");
    }
}

impl Drop for RealProxy {
    fn drop(&mut self) {
        // SIGTERM, so danted's mother process also ends the children it forked.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
