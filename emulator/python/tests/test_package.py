"""The installed wheel itself: the binary on PATH, `python -m`, the Emulator and IoTHub API's
errors, the free-ports proxy. Runs in the fresh virtual environment .ci/run builds (only the
wheel, azure-iot-device and pytest installed), on free ports."""

import shutil
import signal
import socket
import ssl
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from ironhub_emulator import Emulator, EmulatorError, HubError, find_binary
from ironhub_emulator.pytest_plugin import running_iothub


def test_the_package_under_test_is_the_installed_wheel():
    import ironhub_emulator

    installed = {Path(sysconfig.get_path("purelib")).resolve(), Path(sysconfig.get_path("platlib")).resolve()}
    assert Path(ironhub_emulator.__file__).resolve().parents[1] in installed


def test_the_wheel_puts_the_binary_in_the_environment_scripts():
    installed = Path(sysconfig.get_path("scripts")) / "ironhub-emulator"
    assert installed.is_file()
    assert Path(find_binary()) == installed
    assert shutil.which("ironhub-emulator", path=str(installed.parent)) == str(installed)
    version = subprocess.run([str(installed), "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("ironhub-emulator ")


def _python_m(*args):
    return subprocess.run([sys.executable, "-m", "ironhub_emulator", *args], capture_output=True, text=True, timeout=30)


def test_python_dash_m_runs_the_binary():
    ok = _python_m("serve", "--help")
    assert ok.returncode == 0 and "--state-dir" in ok.stdout
    bad = _python_m("serve", "--no-such-flag")
    assert bad.returncode == 2 and "--no-such-flag" in bad.stderr


def test_a_missing_binary_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("IRONHUB_EMULATOR", str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError, match=r"\$IRONHUB_EMULATOR"):
        find_binary()
    with pytest.raises(FileNotFoundError):
        Emulator(tmp_path / "hub").start()


def test_an_emulator_that_cannot_start_says_why(tmp_path):
    with pytest.raises(EmulatorError, match="exited with status 2.*--bogus"):
        Emulator(tmp_path / "hub", extra_args=["--bogus"]).start()
    with pytest.raises(ValueError, match="mqtt_port"):
        Emulator(tmp_path / "hub", mqtt_port=70000)


def test_state_survives_a_restart(tmp_path):
    state = tmp_path / "hub"
    with Emulator(state) as first:
        ca, service = first.ca_pem, first.service_connection_string
        assert first.hostname == "localhost" and first.mqtt_port > 0 and first.https_port > 0
    with Emulator(state) as second:
        assert (second.ca_pem, second.service_connection_string.split(";")[-1]) == (ca, service.split(";")[-1])


def test_hub_errors_carry_status_and_code(tmp_path):
    with running_iothub(tmp_path / "hub", "free") as hub:
        device = hub.create_device("dev-1")
        assert device.device_id == "dev-1" and device.startswith("HostName=localhost;DeviceId=dev-1;SharedAccessKey=")
        with pytest.raises(HubError) as exists:
            hub.create_device("dev-1")
        assert (exists.value.status, exists.value.error_code) == (409, 409001)
        with pytest.raises(HubError) as offline:
            hub.invoke_method("dev-1", "reboot", response_timeout=5)
        assert (offline.value.status, offline.value.error_code) == (404, 404103)
        with pytest.raises(AssertionError, match="0 of 1 telemetry messages from dev-1"):
            hub.wait_for_telemetry("dev-1", timeout_s=1)
        with pytest.raises(TypeError, match="body must be str or bytes"):
            hub.send_c2d_message("dev-1", 42)
        with pytest.raises(TypeError, match="unknown message property 'messageid'"):
            hub.send_c2d_message("dev-1", "x", messageid="1")
        with pytest.raises(ValueError, match="non-empty"):
            hub.get_twin("")
        assert hub.send_c2d_message("dev-1", b"\x00\x01", message_id="m1") == {"delivered": False, "pendingCount": 1}


def _connect_through(proxy, target):
    s = socket.create_connection(proxy, timeout=10)
    s.sendall("CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\n".format(target, target).encode())
    status = s.recv(4096).split(b"\r\n", 1)[0]
    return s, status


def test_the_free_ports_proxy_maps_only_the_hub_and_its_ports(tmp_path):
    with running_iothub(tmp_path / "hub", "free") as hub:
        assert hub.proxy_address is not None
        for refused in ("example.com:8883", "localhost:22", "localhost:notaport"):
            s, status = _connect_through(hub.proxy_address, refused)
            s.close()
            assert status == b"HTTP/1.1 403 Forbidden", refused
        # What answers through the tunnels is the emulator itself: its certificate, for its name.
        tls = ssl.create_default_context(cafile=hub.ca_file)
        for mapped in ("localhost:8883", "LOCALHOST:443", "127.0.0.1:8883"):
            s, status = _connect_through(hub.proxy_address, mapped)
            assert status == b"HTTP/1.1 200 Connection established", mapped
            with tls.wrap_socket(s, server_hostname="localhost") as tunnelled:
                assert tunnelled.version() is not None


def test_a_second_emulator_on_the_sdk_ports_fails_at_once_instead_of_waiting_for_itself(tmp_path):
    from ironhub_emulator.ports import sdk_ports_lock

    with sdk_ports_lock():
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="--iothub-ports=free"):
            with running_iothub(tmp_path / "hub", "sdk"):
                pass
        assert time.monotonic() - started < 5


def test_python_dash_m_serves_until_sigterm_and_the_healthcheck_follows(tmp_path):
    state = tmp_path / "hub"
    proc = subprocess.Popen([sys.executable, "-m", "ironhub_emulator", "serve", "--state-dir", str(state),
                             "--mqtt-port", "0", "--https-port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (state / "hub.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        up = _python_m("healthcheck", "--state-dir", str(state))
        assert up.returncode == 0 and up.stdout.startswith("healthy:"), up
    finally:
        proc.send_signal(signal.SIGTERM)  # the python process became the emulator (exec): it gets the signal
        assert proc.wait(20) == 0
    down = _python_m("healthcheck", "--state-dir", str(state))
    assert down.returncode == 1 and down.stderr.startswith("unhealthy:"), down
