"""Owns one emulator process and talks to it like an operator would: the HTTPS service API
(devices, modules, twins, methods) with a service SAS token, and the emulator's control API
(recorded events, cloud-to-device messages, module inputs, routes, forced disconnects).

The one place every Python suite (python/tests, tests/compat) and benches/run
start and drive the emulator from. The official SDK only connects to 8883/443, so suites that
need those ports take `privileged_ports()` for as long as they use them.
"""

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
EMULATOR_BIN = Path(
    os.environ.get("IRONHUB_EMULATOR", str(REPO_ROOT / "target" / "debug" / "ironhub-emulator"))
)
READY_TIMEOUT_S = 60.0

sys.path.insert(0, str(REPO_ROOT / "emulator" / "python"))
from ironhub_emulator.ports import PRIVILEGED_PORTS_LOCK, sdk_ports_lock  # noqa: E402,F401


def ensure_emulator_binary() -> None:
    """Builds the emulator unless a binary was named with $IRONHUB_EMULATOR (a no-op when the
    workspace build already made it)."""
    if "IRONHUB_EMULATOR" not in os.environ:
        subprocess.run(["cargo", "build", "-q", "-p", "ironhub-emulator"], cwd=REPO_ROOT, check=True)


def privileged_ports(wait_s: float = 900):
    """Holds the machine-wide lock on ports 8883/443 (an exclusive flock) while in the block.
    The emulator's Python package owns that convention (its pytest plugin takes the same lock)."""
    return sdk_ports_lock(wait_s)


def start_privileged_hub(state_dir: Path, hostname: str = "localhost", extra_args: Sequence[str] = ()) -> "Hub":
    """An emulator on IoT Hub's real ports. Call inside `privileged_ports()`; the previous
    holder's emulator may still be releasing the ports, so starting is retried for a while."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return Hub(state_dir, mqtt_port=8883, https_port=443, hostname=hostname, extra_args=extra_args)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def parse_connection_string(cs: str) -> Dict[str, str]:
    """Splits `K=V;K=V` (on the first `=` of each segment, as the hub does)."""
    return dict(seg.split("=", 1) for seg in cs.split(";") if seg)


def sas_token(resource: str, key_b64: str, policy: Optional[str] = None, ttl: int = 3600) -> str:
    """A SAS token per wire-protocol.md (test-side, independent of the code under test)."""
    expiry = int(time.time()) + ttl
    sr = urllib.parse.quote(resource, safe="")
    digest = hmac.new(
        base64.b64decode(key_b64), "{}\n{}".format(sr, expiry).encode(), hashlib.sha256
    ).digest()
    sig = urllib.parse.quote(base64.b64encode(digest).decode(), safe="")
    token = "SharedAccessSignature sr={}&sig={}&se={}".format(sr, sig, expiry)
    if policy:
        token += "&skn=" + policy
    return token


class Hub:
    """A running emulator and the operator-side calls the tests need."""

    def __init__(
        self, state_dir: Path, mqtt_port: int = 0, https_port: int = 0, hostname: str = "localhost", extra_args: Sequence[str] = ()
    ) -> None:
        """`extra_args`: more `ironhub-emulator serve` options (e.g. `--mqtt-also-bind 127.0.0.2`)."""
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        hub_json = self.state_dir / "hub.json"
        if hub_json.exists():
            hub_json.unlink()
        if not EMULATOR_BIN.exists():
            raise RuntimeError(
                "emulator binary missing: run `cargo build -p ironhub-emulator` ({})".format(
                    EMULATOR_BIN
                )
            )
        self._log = open(self.state_dir / "emulator.log", "wb")
        self.proc = subprocess.Popen(
            [
                str(EMULATOR_BIN),
                "serve",
                "--state-dir",
                str(self.state_dir),
                "--mqtt-port",
                str(mqtt_port),
                "--https-port",
                str(https_port),
                "--hostname",
                hostname,
                *extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        info = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()
                tail = (self.state_dir / "emulator.log").read_text(errors="replace")[-2000:]
                raise RuntimeError("emulator exited with {}: {}".format(self.proc.returncode, tail))
            try:
                info = json.loads(hub_json.read_text())
                break
            except (OSError, ValueError):
                time.sleep(0.05)
        if info is None:
            self.stop()
            raise RuntimeError("emulator did not write hub.json in time")
        self.hostname: str = info["hostname"]
        self.mqtt_port: int = int(info["mqttPort"])
        self.https_port: int = int(info["httpsPort"])
        # The AMQP listener and the Event Hub-compatible endpoint (absent from older emulators).
        self.amqp_port: Optional[int] = info.get("amqpPort")
        self.event_hub_connection_string: Optional[str] = info.get("eventHubConnectionString")
        self.ca_file: str = info["caFile"]
        self.ca_pem: str = Path(self.ca_file).read_text()
        self.service_connection_string: str = info["serviceConnectionString"]
        # Device Provisioning Service on the same listeners (absent from emulators that predate it).
        self.id_scope: Optional[str] = info.get("idScope")
        self.provisioning_service_connection_string: Optional[str] = info.get("provisioningServiceConnectionString")
        cs = parse_connection_string(self.service_connection_string)
        self._policy = cs["SharedAccessKeyName"]
        self._policy_key = cs["SharedAccessKey"]
        self._session = requests.Session()
        # The environment may name another CA bundle (REQUESTS_CA_BUNDLE) or a proxy: ignore both.
        self._session.trust_env = False
        self._session.verify = self.ca_file

    # -- process -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops the emulator (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    # -- HTTP plumbing -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.https_port == 443:
            return "https://{}".format(self.hostname)
        return "https://{}:{}".format(self.hostname, self.https_port)

    def _auth(self) -> Dict[str, str]:
        return {
            "Authorization": sas_token(self.hostname, self._policy_key, self._policy),
            "Content-Type": "application/json; charset=utf-8",
        }

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30, **params: Any):
        params.setdefault("api-version", "2021-04-12")
        resp = self._session.request(
            method,
            self.base_url + path,
            params=params,
            headers=self._auth(),
            data=None if body is None else json.dumps(body),
            timeout=timeout,
        )
        return resp

    def _ok(self, resp) -> Any:
        if resp.status_code >= 300:
            raise AssertionError(
                "{} {} -> {} {}".format(resp.request.method, resp.url, resp.status_code, resp.text)
            )
        return resp.json() if resp.content else None

    # -- registry ------------------------------------------------------------------------

    def create_device(
        self, device_id: str, status: str = "enabled", x509_thumbprint: Optional[str] = None, iot_edge: bool = False
    ) -> Dict[str, Any]:
        """Creates a device (SAS keys generated by the hub unless a thumbprint is given); `iot_edge`
        makes it an IoT Edge device, whose modules may call the Edge hub's method endpoint."""
        if x509_thumbprint:
            auth = {
                "type": "selfSigned",
                "x509Thumbprint": {"primaryThumbprint": x509_thumbprint, "secondaryThumbprint": x509_thumbprint},
            }
        else:
            auth = {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}
        body = {"deviceId": device_id, "status": status, "authentication": auth, "capabilities": {"iotEdge": iot_edge}}
        return self._ok(self.request("PUT", "/devices/" + urllib.parse.quote(device_id, safe=""), body))

    def create_module(self, device_id: str, module_id: str) -> Dict[str, Any]:
        body = {
            "deviceId": device_id,
            "moduleId": module_id,
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}},
        }
        path = "/devices/{}/modules/{}".format(device_id, module_id)
        return self._ok(self.request("PUT", path, body))

    def set_device_status(self, device_id: str, status: str) -> Dict[str, Any]:
        dev = self._ok(self.request("GET", "/devices/" + device_id))
        dev["status"] = status
        resp = self._session.request(
            "PUT",
            self.base_url + "/devices/" + device_id,
            params={"api-version": "2021-04-12"},
            headers=dict(self._auth(), **{"If-Match": '"*"'}),
            data=json.dumps(dev),
            timeout=30,
        )
        return self._ok(resp)

    def device_connection_string(self, device_id: str, module_id: Optional[str] = None) -> str:
        """Creates the identity (device, or module on an existing device) and returns its
        connection string."""
        if module_id is None:
            ident = self.create_device(device_id)
        else:
            ident = self.create_module(device_id, module_id)
        key = ident["authentication"]["symmetricKey"]["primaryKey"]
        cs = "HostName={};DeviceId={}".format(self.hostname, device_id)
        if module_id is not None:
            cs += ";ModuleId={}".format(module_id)
        return cs + ";SharedAccessKey={}".format(key)

    # -- twins and methods ---------------------------------------------------------------

    @staticmethod
    def _twin_path(device_id: str, module_id: Optional[str]) -> str:
        path = "/twins/" + device_id
        if module_id:
            path += "/modules/" + module_id
        return path

    def get_twin(self, device_id: str, module_id: Optional[str] = None) -> Dict[str, Any]:
        return self._ok(self.request("GET", self._twin_path(device_id, module_id)))

    def patch_desired(self, device_id: str, desired: Dict[str, Any], module_id: Optional[str] = None) -> Dict[str, Any]:
        body = {"properties": {"desired": desired}}
        return self._ok(self.request("PATCH", self._twin_path(device_id, module_id), body))

    def invoke_method(
        self,
        device_id: str,
        name: str,
        payload: Any = None,
        module_id: Optional[str] = None,
        response_timeout: int = 10,
        connect_timeout: int = 0,
    ) -> Dict[str, Any]:
        """Invokes a direct method; returns {"httpStatus", "body"}."""
        body = {
            "methodName": name,
            "payload": payload,
            "responseTimeoutInSeconds": response_timeout,
            "connectTimeoutInSeconds": connect_timeout,
        }
        resp = self.request(
            "POST",
            self._twin_path(device_id, module_id) + "/methods",
            body,
            timeout=response_timeout + connect_timeout + 15,
        )
        return {"httpStatus": resp.status_code, "body": resp.json() if resp.content else None}

    # -- control API ---------------------------------------------------------------------

    def events(self, device_id: str, after: int = 0, timeout_s: float = 0) -> List[Dict[str, Any]]:
        """Telemetry the hub recorded for `device_id` (and its modules) after sequence number
        `after`, long-polling up to `timeout_s` for at least one."""
        resp = self.request(
            "GET",
            "/emulator/events",
            deviceId=device_id,
            after=after,
            timeoutSeconds=int(timeout_s),
            timeout=timeout_s + 30,
        )
        return self._ok(resp)["events"]

    def telemetry(self, device_id: str, count: int, timeout_s: float = 20) -> List[Dict[str, Any]]:
        """Waits until `count` telemetry events are recorded for `device_id`, and returns all of
        them (bodies decoded to text when they are UTF-8). Fails if fewer arrive in time."""
        deadline = time.monotonic() + timeout_s
        got: List[Dict[str, Any]] = []
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("{} telemetry events for {} after {} s, expected {}: {}".format(
                    len(got), device_id, timeout_s, count, got))
            after = got[-1]["sequenceNumber"] if got else 0
            got.extend(self.events(device_id, after=after, timeout_s=min(5, max(1, remaining))))
        time.sleep(0.2)  # anything beyond `count` that was on its way is reported too
        if got:
            got.extend(self.events(device_id, after=got[-1]["sequenceNumber"]))
        for e in got:
            raw = base64.b64decode(e["body"])
            try:
                e["body"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                e["body"] = raw
        return got

    def send_c2d(self, device_id: str, body_text: str, properties: Optional[Dict[str, str]] = None, **system: Any) -> Any:
        """Queues a cloud-to-device message (system properties as camelCase keys, e.g.
        messageId, correlationId, contentType)."""
        body: Dict[str, Any] = {"bodyText": body_text, "properties": properties or {}}
        body.update(system)
        return self._ok(self.request("POST", "/emulator/devices/{}/messages/devicebound".format(device_id), body))

    def send_input(self, device_id: str, module_id: str, input_name: str, body_text: str, properties: Optional[Dict[str, str]] = None, **system: Any) -> Any:
        body: Dict[str, Any] = {"bodyText": body_text, "properties": properties or {}}
        body.update(system)
        path = "/emulator/devices/{}/modules/{}/inputs/{}".format(device_id, module_id, input_name)
        return self._ok(self.request("POST", path, body))

    def set_routes(self, routes: Dict[str, str]) -> Any:
        return self._ok(self.request("PUT", "/emulator/routes", {"routes": routes}))

    def disconnect(self, device_id: str, module_id: Optional[str] = None) -> Any:
        path = "/emulator/devices/" + device_id
        if module_id:
            path += "/modules/" + module_id
        return self._ok(self.request("POST", path + "/disconnect"))
