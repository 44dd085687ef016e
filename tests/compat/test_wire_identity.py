"""Wire identity: the same messages sent by azure-iot-device and by ironhub (through
`examples/wire_probe.rs`) are recorded identically by the hub: system properties, custom
properties with unicode, `&`, `=`, `/` and spaces, output names, bodies."""

import json
import os
import subprocess
import tempfile
from pathlib import Path

from azure.iot.device import Message

from helpers import create_device, create_module, device_client, module_client, wait_events

ROOT = Path(__file__).resolve().parents[2]

MESSAGES = [
    {"data": "plain"},
    {
        "data": '{"temperature": 21.5}',
        "message_id": "mid 1/2&x=y",
        "correlation_id": "cid-ü",
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "properties": {
            "ünïcødé ✓": "välue ✓ 温度",
            "a&b": "1&2=3",
            "with space": "x y z",
            "eq=key": "=",
            "slash/key": "a/b/c",
            "percent%": "100%",
        },
    },
    {"data": "empty props", "properties": {"k": ""}},
]

MODULE_MESSAGES = [dict(m, output_name=name) for m, name in zip(MESSAGES, ["out1", "out 2/ü", "out1"])]


def _probe_binary():
    given = os.environ.get("IRONHUB_WIRE_PROBE_BIN")
    if given:
        return given
    subprocess.run(["cargo", "build", "-q", "-p", "ironhub", "--example", "wire_probe"], cwd=ROOT, check=True)
    return str(ROOT / "target" / "debug" / "examples" / "wire_probe")


def _send_with_ironhub(emulator, connection_string, messages):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(messages, f)
    try:
        subprocess.run(
            [_probe_binary(), connection_string, emulator.ca_file, str(emulator.mqtt_port), f.name],
            check=True,
            timeout=120,
        )
    finally:
        os.unlink(f.name)


def _send_with_sdk(client, messages, module):
    client.connect()
    for item in messages:
        m = Message(item["data"])
        for attr in ("message_id", "correlation_id", "user_id", "content_type", "content_encoding"):
            if attr in item:
                setattr(m, attr, item[attr])
        m.custom_properties.update(item.get("properties", {}))
        if module:
            client.send_message_to_output(m, item["output_name"])
        else:
            client.send_message(m)


def _normalized(events):
    """What must be identical: everything but identity, sequence and time."""
    out = []
    for e in events:
        system = {k: v for k, v in e["systemProperties"].items() if k != "enqueuedTimeUtc"}
        out.append({"body": e["body"], "outputName": e["outputName"], "properties": e["properties"], "system": system})
    return out


def test_device_telemetry_is_recorded_identically(registry, emulator, clients):
    py_id, py_cs = create_device(registry, emulator)
    rs_id, rs_cs = create_device(registry, emulator)
    _send_with_sdk(device_client(clients, emulator, py_cs), MESSAGES, module=False)
    _send_with_ironhub(emulator, rs_cs, MESSAGES)
    py = _normalized(wait_events(emulator, py_id, count=len(MESSAGES)))
    rs = _normalized(wait_events(emulator, rs_id, count=len(MESSAGES)))
    assert py == rs
    assert py[1]["properties"]["a&b"] == "1&2=3"


def test_module_output_telemetry_is_recorded_identically(registry, emulator, clients):
    device_id, _ = create_device(registry, emulator)
    py_mod, py_cs = create_module(registry, emulator, device_id)
    rs_mod, rs_cs = create_module(registry, emulator, device_id)
    _send_with_sdk(module_client(clients, emulator, py_cs), MODULE_MESSAGES, module=True)
    _send_with_ironhub(emulator, rs_cs, MODULE_MESSAGES)
    py = _normalized(wait_events(emulator, device_id, module_id=py_mod, count=len(MESSAGES)))
    rs = _normalized(wait_events(emulator, device_id, module_id=rs_mod, count=len(MESSAGES)))
    assert py == rs
    assert [e["outputName"] for e in rs] == ["out1", "out 2/ü", "out1"]
