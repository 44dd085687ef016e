"""Real proxy servers from Debian's packages (`.ci/run` installs them) for the Python suites
(python/tests and tests/compat), each started on an ephemeral loopback port with its own config
file and log, as the Rust tests' `tests/common/real_proxies.rs` does:

- `tinyproxy`: HTTP CONNECT, optional Basic auth (wrong credentials: 401, none: 407);
- `danted`: SOCKS4 and SOCKS5 without authentication;
- `microsocks`: SOCKS5 with a user name and password.

`tunnelled_to(port)` reads the daemon's own log: the proof that traffic went through it. A test
module imports the `proxies` fixture to start them and have them stopped after the test.
"""

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

START_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require(binary: str) -> str:
    for d in ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"):
        p = Path(d) / binary
        if p.exists():
            return str(p)
    found = shutil.which(binary)
    if found:
        return found
    raise RuntimeError(binary + " is not installed: .ci/run installs tinyproxy, dante-server and microsocks (apt-get)")


class RealProxy:
    """One running proxy daemon; `stop()` (or the context manager) ends it and removes its files."""

    def __init__(self, binary: str, proxy_type: str, argv_for, log_is_stderr: bool = False):
        self.binary = binary
        self.proxy_type = proxy_type
        self.dir = Path(tempfile.mkdtemp(prefix="ironhub-" + binary + "-"))
        self.log_file = self.dir / "proxy.log"
        exe = _require(binary)
        for _ in range(5):
            self.port = _free_port()
            argv = [exe] + argv_for(self.port, self.dir, self.log_file)
            stderr = open(self.log_file if log_is_stderr else self.dir / "stderr.log", "wb")
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
            stderr.close()
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.05)
            self._end()
        raise RuntimeError("{} did not start: {}".format(binary, self.log()))

    def _end(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: danted's main process also ends its children
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        self._end()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RealProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def tunnelled_to(self, port: int, wait_s: float = 5.0) -> bool:
        """Whether the daemon's log shows a tunnel to `port` (waiting: logs are written late)."""
        needle = {
            "tinyproxy": ":{} HTTP/1.".format(port),  # "Request (...): CONNECT localhost:8883 HTTP/1.1" (urllib3: 1.0)
            "microsocks": ":{}\n".format(port),  # "client[4] 127.0.0.1: connected to localhost:8883"
        }.get(self.binary, ".{}\n".format(port))  # danted: "... -> 127.0.0.1.6 127.0.0.1.8883"
        deadline = time.monotonic() + wait_s
        while True:
            if needle in self.log():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def tinyproxy(auth: Optional[Tuple[str, str]] = None, only_port: Optional[int] = None) -> RealProxy:
    """HTTP CONNECT to any port (or only to `only_port`: others get 403), Basic auth if `auth`."""

    def argv(port: int, d: Path, log: Path) -> List[str]:
        lines = [
            "Port {}".format(port),
            "Listen 127.0.0.1",
            "Timeout 60",
            'LogFile "{}"'.format(log),
            "LogLevel Connect",
            "MaxClients 50",
            "Allow 127.0.0.1",
        ]
        if auth:
            lines.append("BasicAuth {} {}".format(*auth))
        if only_port:
            lines.append("ConnectPort {}".format(only_port))
        (d / "tinyproxy.conf").write_text("\n".join(lines) + "\n")
        return ["-d", "-c", str(d / "tinyproxy.conf")]

    return RealProxy("tinyproxy", "HTTP", argv)


def danted(proxy_type: str = "SOCKS5", blocked_port: Optional[int] = None) -> RealProxy:
    """SOCKS4 and SOCKS5 without authentication; CONNECTs to `blocked_port` are refused."""

    def argv(port: int, d: Path, log: Path) -> List[str]:
        block = ""
        if blocked_port:
            block = "socks block {{ from: 0.0.0.0/0 to: 0.0.0.0/0 port = {} log: connect error }}\n".format(blocked_port)
        (d / "danted.conf").write_text(
            "logoutput: {}\ninternal: 127.0.0.1 port = {}\nexternal: 127.0.0.1\n"
            "clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n"
            "client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: error }}\n{}"
            "socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect error }}\n".format(log, port, block)
        )
        return ["-f", str(d / "danted.conf"), "-p", str(d / "danted.pid")]

    return RealProxy("danted", proxy_type, argv)


def microsocks(user: str, password: str) -> RealProxy:
    """SOCKS5 with a user name and password (it logs each tunnel on stderr)."""
    return RealProxy(
        "microsocks",
        "SOCKS5",
        lambda port, d, log: ["-i", "127.0.0.1", "-p", str(port), "-u", user, "-P", password],
        log_is_stderr=True,
    )


class Started:
    """The proxies a test starts (`proxies.tinyproxy(...)`...), all stopped after it."""

    def __init__(self):
        self._running: List[RealProxy] = []

    def _track(self, proxy: RealProxy) -> RealProxy:
        self._running.append(proxy)
        return proxy

    def tinyproxy(self, *args, **kwargs) -> RealProxy:
        return self._track(tinyproxy(*args, **kwargs))

    def danted(self, *args, **kwargs) -> RealProxy:
        return self._track(danted(*args, **kwargs))

    def microsocks(self, *args, **kwargs) -> RealProxy:
        return self._track(microsocks(*args, **kwargs))

    def stop_all(self) -> None:
        for p in self._running:
            p.stop()


@pytest.fixture
def proxies():
    started = Started()
    yield started
    started.stop_all()
