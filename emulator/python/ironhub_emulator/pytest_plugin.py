"""The pytest plugin (entry point `pytest11`): fixtures that run a local IoT Hub for a test session
(`iothub`) or for one test (`fresh_iothub`) and hand out an `IoTHub` to drive it.

Two port modes (`--iothub-ports`, or `iothub_ports = ...` in the ini file):
- `sdk` (default): the emulator listens on 8883 and 443, the only ports azure-iot-device connects
  to, so existing tests need nothing but `server_verification_cert=iothub.ca_pem`. Needs root or
  CAP_NET_BIND_SERVICE; one emulator per machine at a time (a machine-wide lock serialises them).
- `free`: free ports, reached by the SDK through `proxy_options=iothub.proxy_options` (a local
  CONNECT proxy that maps 8883/443 to them); no privileges, any number in parallel (pytest-xdist).
`**iothub.device_client_kwargs` gives the right arguments in both modes.
"""

import contextlib
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

from .ports import SDK_HTTPS_PORT, SDK_MQTT_PORT, sdk_ports_lock
from .process import Emulator, EmulatorError
from .proxy import PortMapProxy
from .service import IoTHub

PORT_MODES = ("sdk", "free")
# A previous holder of the lock may still be closing its listeners when we get it.
SDK_PORTS_RETRY_S = 30.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iothub", "ironhub-emulator: a local Azure IoT Hub")
    group.addoption(
        "--iothub-ports", choices=PORT_MODES, default=None,
        help="sdk: listen on 8883/443 (what azure-iot-device connects to; default); "
             "free: free ports, reached through iothub.proxy_options",
    )
    group.addoption("--iothub-emulator", metavar="PATH", default=None,
                    help="emulator binary to run (default: the one installed with the wheel, or $IRONHUB_EMULATOR)")
    parser.addini("iothub_ports", "default for --iothub-ports (sdk or free)", default="sdk")


def _port_mode(config: pytest.Config) -> str:
    mode = config.getoption("iothub_ports") or config.getini("iothub_ports")
    if mode not in PORT_MODES:
        raise pytest.UsageError("iothub_ports must be one of {}, not {!r}".format(", ".join(PORT_MODES), mode))
    return str(mode)


def pytest_report_header(config: pytest.Config) -> str:
    return "ironhub-emulator: ports={}".format(_port_mode(config))


def _start_on_sdk_ports(state_dir: Path, binary: Optional[str]) -> Emulator:
    deadline = time.monotonic() + SDK_PORTS_RETRY_S
    while True:
        emulator = Emulator(state_dir, mqtt_port=SDK_MQTT_PORT, https_port=SDK_HTTPS_PORT, binary=binary)
        try:
            emulator.start()
            return emulator
        except EmulatorError as e:
            if "ermission denied" in str(e):
                raise EmulatorError(
                    "{}\nPorts 8883/443 need root, `setcap cap_net_bind_service=+ep` on the binary or "
                    "`sysctl net.ipv4.ip_unprivileged_port_start=443`; or run with --iothub-ports=free "
                    "and pass proxy_options=iothub.proxy_options to the SDK.".format(e)
                ) from None
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@contextlib.contextmanager
def running_iothub(state_dir: Path, ports: str = "free", binary: Optional[str] = None) -> Iterator[IoTHub]:
    """An emulator for the length of the block, in port mode `ports` ("sdk" or "free")."""
    if ports == "sdk":
        with sdk_ports_lock():
            emulator = _start_on_sdk_ports(state_dir, binary)
            try:
                yield IoTHub(emulator.info)
            finally:
                emulator.stop()
    elif ports == "free":
        emulator = Emulator(state_dir, binary=binary)
        info = emulator.start()
        try:
            hosts = {info.hostname, "localhost", "127.0.0.1"}
            proxy = PortMapProxy(hosts, {SDK_MQTT_PORT: info.mqtt_port, SDK_HTTPS_PORT: info.https_port})
        except BaseException:
            emulator.stop()
            raise
        try:
            yield IoTHub(info, proxy=("127.0.0.1", proxy.port))
        finally:
            proxy.close()
            emulator.stop()
    else:
        raise ValueError("ports must be one of {}, not {!r}".format(", ".join(PORT_MODES), ports))


@pytest.fixture(scope="session")
def iothub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IoTHub]:
    """One emulator for the whole session (use a new device per test: `iothub.create_device()`)."""
    config = request.config
    with running_iothub(tmp_path_factory.mktemp("iothub"), _port_mode(config), config.getoption("iothub_emulator")) as hub:
        yield hub


@pytest.fixture
def fresh_iothub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IoTHub]:
    """An emulator of this test alone: empty registry, new policy key and CA."""
    config = request.config
    with running_iothub(tmp_path / "iothub", _port_mode(config), config.getoption("iothub_emulator")) as hub:
        yield hub
