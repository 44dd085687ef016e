"""Code written for azure-iot-device runs unchanged on ironhub: each script under
tests/samples/ (shaped like the official sync samples) runs as written with
`azure.iot.device`, and again with only its import line switched to `ironhub`, against the
emulator on 8883/443. Both runs must do the same observable things."""

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

# The first test also waits for the privileged-ports lock (another suite may hold it).
pytestmark = [pytest.mark.compat, pytest.mark.timeout(600)]

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
LIBS = ("azure.iot.device", "ironhub")


def sample_copy(name, lib, tmp_path):
    text = (SAMPLES / name).read_text()
    assert "from azure.iot.device import" in text
    if lib == "ironhub":
        text = text.replace("from azure.iot.device import", "from ironhub import")
    path = tmp_path / "{}-{}".format(lib.split(".")[0], name)
    path.write_text(text)
    return path


class Run:
    """A sample running in a subprocess; `ready()` waits for its READY line."""

    def __init__(self, script, env):
        self.proc = subprocess.Popen(
            [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "READY" in line:  # a handler thread may print on the same line
                self._ready.set()

    def ready(self, timeout=30):
        assert self._ready.wait(timeout), "\n".join(self.lines)
        time.sleep(0.3)  # the subscription is acknowledged before READY; leave the hub a beat

    def finish(self, timeout=60):
        """Waits for the exit (status 0) and returns the printed lines, sorted: handlers print
        from another thread than READY, so their relative order is not part of the contract."""
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        assert rc == 0, "\n".join(self.lines)
        return sorted(self.lines)


def env_for(hub, device_cs=None, module_cs=None):
    env = dict(os.environ, IOTHUB_CA_CERT=hub.ca_file, SAMPLE_TIMEOUT="30")
    if device_cs:
        env["IOTHUB_DEVICE_CONNECTION_STRING"] = device_cs
    if module_cs:
        env["IOTHUB_MODULE_CONNECTION_STRING"] = module_cs
    return env


def new_id(lib):
    return "sample-{}-{}".format(lib.split(".")[0], uuid.uuid4().hex[:8])


def run_send_message(hub, lib, tmp_path):
    device_id = new_id(lib)
    Run(sample_copy("send_message.py", lib, tmp_path), env_for(hub, hub.device_connection_string(device_id))).finish()
    return [(e["body"], e["properties"], e["systemProperties"].get("correlationId")) for e in hub.telemetry(device_id, 3)]


def run_receive_message(hub, lib, tmp_path):
    device_id = new_id(lib)
    run = Run(sample_copy("receive_message.py", lib, tmp_path), env_for(hub, hub.device_connection_string(device_id)))
    run.ready()
    hub.send_c2d(device_id, "hello sample", {"color": "blue"})
    return run.finish()


def run_receive_direct_method(hub, lib, tmp_path):
    device_id = new_id(lib)
    run = Run(sample_copy("receive_direct_method.py", lib, tmp_path), env_for(hub, hub.device_connection_string(device_id)))
    run.ready()
    result = hub.invoke_method(device_id, "method1", {"arg": 1})
    return result, run.finish()


def run_twin_patch(hub, lib, tmp_path):
    device_id = new_id(lib)
    run = Run(
        sample_copy("receive_twin_desired_properties_patch.py", lib, tmp_path),
        env_for(hub, hub.device_connection_string(device_id)),
    )
    run.ready()
    hub.patch_desired(device_id, {"sample": "value"})
    # Whether the full desired document fetched right after connecting ({'$version': 1}) or
    # the patch arrives first is a race in both SDKs; the patch itself must be printed.
    return sorted({line for line in run.finish() if "sample" in line})


def run_update_reported(hub, lib, tmp_path):
    device_id = new_id(lib)
    lines = Run(
        sample_copy("update_twin_reported_properties.py", lib, tmp_path),
        env_for(hub, hub.device_connection_string(device_id)),
    ).finish()
    temperature = hub.get_twin(device_id)["properties"]["reported"]["temperature"]
    assert "Twin reported temperature is {}".format(temperature) in lines
    return [line.split(" ")[0] for line in lines], isinstance(temperature, float)


def run_module_input_output(hub, lib, tmp_path):
    device_id = new_id(lib)
    hub.create_device(device_id)
    module_cs = hub.device_connection_string(device_id, "filter")
    run = Run(sample_copy("module_input_output.py", lib, tmp_path), env_for(hub, module_cs=module_cs))
    run.ready()
    hub.send_input(device_id, "filter", "input1", "sensor reading", {"unit": "C"})
    lines = run.finish()
    events = hub.telemetry(device_id, 2)
    return lines, [(e["body"], e["properties"].get("unit")) for e in events]


@pytest.mark.parametrize(
    "scenario",
    [run_send_message, run_receive_message, run_receive_direct_method, run_twin_patch, run_update_reported, run_module_input_output],
    ids=lambda s: s.__name__[4:],
)
def test_sample_runs_unchanged(privileged_hub, scenario, tmp_path):
    official = scenario(privileged_hub, LIBS[0], tmp_path)
    ours = scenario(privileged_hub, LIBS[1], tmp_path)
    assert official == ours
