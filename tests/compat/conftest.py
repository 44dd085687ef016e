"""Runs the official Azure IoT Python SDKs (azure-iot-device 2.14.0, azure-iot-hub 2.7.0),
unchanged, against the emulator binary on IoT Hub's real ports (MQTT 8883, HTTPS 443).

The session takes an exclusive lock on /tmp/ironhub-privileged-ports.lock (other suites use
those ports too), builds and starts `target/debug/ironhub-emulator serve`, waits for its
hub.json, points `requests` at the emulator's CA, and tears everything down at the end.
Set IRONHUB_EMULATOR_BIN to use a prebuilt binary instead of `cargo build`.
"""

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK_FILE = "/tmp/ironhub-privileged-ports.lock"
LOCK_WAIT_SECONDS = 900
START_WAIT_SECONDS = 30


class Emulator:
    """What a test needs to know about the running emulator (from its hub.json)."""

    def __init__(self, state_dir, info):
        self.state_dir = state_dir
        self.hostname = info["hostname"]
        self.https_port = info["httpsPort"]
        self.mqtt_port = info["mqttPort"]
        self.ca_file = info["caFile"]
        self.service_connection_string = info["serviceConnectionString"]
        with open(self.ca_file) as f:
            self.ca_pem = f.read()


_state = {}


def _acquire_port_lock():
    # Taken before any test runs (not inside a fixture) so that waiting for another suite
    # does not count against the first test's timeout.
    fd = os.open(LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o666)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"{LOCK_FILE} is held by another suite for over {LOCK_WAIT_SECONDS}s")
            time.sleep(0.5)


def _emulator_binary():
    given = os.environ.get("IRONHUB_EMULATOR_BIN")
    if given:
        return given
    subprocess.run(["cargo", "build", "-q", "-p", "ironhub-emulator"], cwd=ROOT, check=True)
    return str(ROOT / "target" / "debug" / "ironhub-emulator")


def _start_emulator(binary):
    state_dir = tempfile.mkdtemp(prefix="ironhub-compat-")
    log = open(os.path.join(state_dir, "emulator.log"), "wb")
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
    process = subprocess.Popen(
        [binary, "serve", "--state-dir", state_dir, "--mqtt-port", "8883", "--https-port", "443"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    hub_file = os.path.join(state_dir, "hub.json")
    deadline = time.monotonic() + START_WAIT_SECONDS
    while not os.path.exists(hub_file):
        if process.poll() is not None:
            log.close()
            with open(os.path.join(state_dir, "emulator.log")) as f:
                raise RuntimeError(f"the emulator exited with {process.returncode}:\n{f.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"no {hub_file} within {START_WAIT_SECONDS}s")
        time.sleep(0.1)
    with open(hub_file) as f:
        info = json.load(f)
    return process, log, Emulator(state_dir, info)


def pytest_sessionstart(session):
    _state["lock"] = _acquire_port_lock()
    process, log, emulator = _start_emulator(_emulator_binary())
    _state.update(process=process, log=log, emulator=emulator)
    os.environ["REQUESTS_CA_BUNDLE"] = emulator.ca_file


def pytest_sessionfinish(session, exitstatus):
    process = _state.get("process")
    if process is not None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _state["log"].close()
        emulator = _state["emulator"]
        if exitstatus == 0:
            shutil.rmtree(emulator.state_dir, ignore_errors=True)
        else:
            print(f"\nemulator state and log kept in {emulator.state_dir}")
    lock = _state.get("lock")
    if lock is not None:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)


@pytest.fixture(scope="session")
def emulator():
    return _state["emulator"]


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
