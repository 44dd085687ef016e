"""Owns one emulator process: starts `ironhub-emulator serve`, waits until it writes `hub.json`
(it does so only once both listeners accept), and stops it."""

import json
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from ._binary import find_binary

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class EmulatorError(RuntimeError):
    """The emulator could not be started (bad arguments, a port in use, no binary, ...)."""


@dataclass(frozen=True)
class HubInfo:
    """What the emulator wrote to `hub.json`: everything a client needs to reach it."""

    hostname: str
    mqtt_port: int
    https_port: int
    ca_file: str
    service_connection_string: str
    state_dir: str
    #: The whole `hub.json` (newer emulators may add fields, e.g. `workloadUri`).
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @property
    def ca_pem(self) -> str:
        """The emulator CA as PEM text (what `server_verification_cert=` takes)."""
        return Path(self.ca_file).read_text()

    @classmethod
    def load(cls, state_dir: Union[str, Path]) -> "HubInfo":
        """Reads `DIR/hub.json`; raises OSError or ValueError while it is missing or partial."""
        raw = json.loads((Path(state_dir) / "hub.json").read_text())
        if not isinstance(raw, dict):
            raise ValueError("hub.json is not an object")
        return cls(
            hostname=str(raw["hostname"]),
            mqtt_port=int(raw["mqttPort"]),
            https_port=int(raw["httpsPort"]),
            ca_file=str(raw["caFile"]),
            service_connection_string=str(raw["serviceConnectionString"]),
            state_dir=str(state_dir),
            raw=raw,
        )


class Emulator:
    """An `ironhub-emulator serve` process. Use as a context manager or call start()/stop().

    `state_dir=None` runs on a fresh temporary directory removed at stop(); a given directory keeps
    the registry, the CA and the policy key across runs. Ports 0 (the default) pick free ports; the
    official azure-iot-device SDK only connects to 8883 (443 with websockets), which need root or
    CAP_NET_BIND_SERVICE. `extra_args` are passed to `serve` as they are (e.g. ["--ca-cert", path]).
    """

    def __init__(
        self,
        state_dir: Optional[Union[str, Path]] = None,
        *,
        hostname: str = "localhost",
        mqtt_port: int = 0,
        https_port: int = 0,
        bind: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        binary: Optional[str] = None,
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> None:
        for name, port in (("mqtt_port", mqtt_port), ("https_port", https_port)):
            if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
                raise ValueError("{} must be an int in 0..65535, not {!r}".format(name, port))
        if ready_timeout <= 0:
            raise ValueError("ready_timeout must be positive")
        self._given_state_dir = None if state_dir is None else Path(state_dir)
        self._hostname = hostname
        self._ports = (mqtt_port, https_port)
        self._bind = bind
        self._extra_args = [str(a) for a in extra_args]
        self._binary = binary
        self._ready_timeout = ready_timeout
        self._proc: Optional["subprocess.Popen[bytes]"] = None
        self._state_dir: Optional[Path] = None
        self._info: Optional[HubInfo] = None

    @property
    def info(self) -> HubInfo:
        if self._info is None:
            raise EmulatorError("the emulator is not running")
        return self._info

    @property
    def log_file(self) -> Optional[Path]:
        """The emulator's stdout and stderr (in the state directory)."""
        return None if self._state_dir is None else self._state_dir / "emulator.log"

    def start(self) -> HubInfo:
        if self._proc is not None:
            raise EmulatorError("already started")
        binary = find_binary(self._binary)
        if self._given_state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="ironhub-emulator-"))
        else:
            self._state_dir = self._given_state_dir
            self._state_dir.mkdir(parents=True, exist_ok=True)
        hub_json = self._state_dir / "hub.json"
        # The emulator deletes a stale hub.json too, but only once it runs: do it first so the wait
        # below can never read the previous run's file.
        if hub_json.exists():
            hub_json.unlink()
        command = [
            binary, "serve",
            "--state-dir", str(self._state_dir),
            "--hostname", self._hostname,
            "--mqtt-port", str(self._ports[0]),
            "--https-port", str(self._ports[1]),
            "--bind", self._bind,
        ] + self._extra_args
        log = open(self._state_dir / "emulator.log", "ab")
        try:
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()  # the child has its own descriptor
        deadline = time.monotonic() + self._ready_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise EmulatorError("ironhub-emulator exited with status {}: {}".format(code, self._log_tail()))
            try:
                self._info = HubInfo.load(self._state_dir)
                return self._info
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise EmulatorError("ironhub-emulator did not write hub.json within {} s".format(self._ready_timeout))
            time.sleep(0.05)

    def _log_tail(self) -> str:
        assert self._state_dir is not None
        try:
            return (self._state_dir / "emulator.log").read_text(errors="replace")[-2000:].strip()
        except OSError:
            return "(no log)"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s. Removes the state directory if it was temporary."""
        proc, self._proc, self._info = self._proc, None, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
        if self._given_state_dir is None and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None

    def __enter__(self) -> HubInfo:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
