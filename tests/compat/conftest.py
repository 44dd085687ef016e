"""Runs the official Azure IoT Python SDKs (azure-iot-device 2.14.0, azure-iot-hub 2.7.0),
unchanged, against the emulator binary on IoT Hub's real ports (MQTT 8883, HTTPS 443).

The session takes the machine-wide lock on those ports (other suites use them too), starts
`ironhub-emulator serve` through the shared `tests/support/hubctl.py`, points `requests` (which
azure-iot-hub uses) at the emulator's CA, and tears everything down at the end. Set
IRONHUB_EMULATOR to use a prebuilt binary instead of `cargo build`.
"""

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

import hubctl  # noqa: E402

_state = {}


def pytest_sessionstart(session):
    # Taken before any test runs (not inside a fixture) so that waiting for another suite
    # does not count against the first test's timeout.
    hubctl.ensure_emulator_binary()
    stack = contextlib.ExitStack()
    stack.enter_context(hubctl.privileged_ports())
    _state["stack"] = stack
    hub = hubctl.start_privileged_hub(Path(tempfile.mkdtemp(prefix="ironhub-compat-")))
    stack.callback(hub.stop)
    _state["hub"] = hub
    os.environ["REQUESTS_CA_BUNDLE"] = hub.ca_file


def pytest_sessionfinish(session, exitstatus):
    stack = _state.get("stack")
    if stack is None:
        return
    stack.close()  # stops the emulator, then releases the ports
    hub = _state.get("hub")
    if hub is not None:
        if exitstatus == 0:
            shutil.rmtree(hub.state_dir, ignore_errors=True)
        else:
            print(f"\nemulator state and log kept in {hub.state_dir}")


@pytest.fixture(scope="session")
def emulator():
    return _state["hub"]


@pytest.fixture(scope="session")
def registry(emulator):
    from azure.iot.hub import IoTHubRegistryManager

    return IoTHubRegistryManager.from_connection_string(emulator.service_connection_string)


@pytest.fixture
def clients():
    """Device/module clients a test opens; shut down afterwards whatever happened."""
    opened = []
    yield opened
    for client in opened:
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001 - teardown must reach every client
            pass
