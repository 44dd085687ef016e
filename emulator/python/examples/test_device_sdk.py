"""Example: tests of device code written with the official azure-iot-device SDK, run against a
local IoT Hub. The only change from tests against a real hub is the `iothub` fixture (no conftest
needed: the plugin comes with the ironhub-emulator wheel) and `server_verification_cert`.

The emulator listens on 8883/443 (the SDK's ports) by default: run as root, or see
test_any_port_mode.py for the unprivileged `--iothub-ports=free` mode.
"""

import json
import queue

from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse


def connect(iothub, connection_string):
    client = IoTHubDeviceClient.create_from_connection_string(connection_string, server_verification_cert=iothub.ca_pem)
    client.connect()
    return client


def test_telemetry_reaches_the_hub(iothub):
    device = iothub.create_device()
    client = connect(iothub, device)
    try:
        message = Message(json.dumps({"temperature": 21.5}), content_encoding="utf-8", content_type="application/json")
        message.custom_properties["alert"] = "false"
        client.send_message(message)
    finally:
        client.shutdown()

    [received] = iothub.wait_for_telemetry(device.device_id)
    assert received.json() == {"temperature": 21.5}
    assert received.properties == {"alert": "false"}
    assert received.system_properties["contentType"] == "application/json"


def test_cloud_to_device_message(iothub):
    device = iothub.create_device()
    client = connect(iothub, device)
    received = queue.Queue()
    client.on_message_received = received.put
    try:
        iothub.send_c2d_message(device.device_id, "reboot at noon", properties={"priority": "high"}, message_id="c2d-1")
        message = received.get(timeout=15)
    finally:
        client.shutdown()

    assert message.data == b"reboot at noon"
    assert message.custom_properties["priority"] == "high"
    assert message.message_id == "c2d-1"


def test_direct_method(iothub):
    device = iothub.create_device()
    client = connect(iothub, device)

    def on_method(request):
        answer = {"rebooting": True, "delay": request.payload["delay"]}
        client.send_method_response(MethodResponse.create_from_method_request(request, 200, answer))

    client.on_method_request_received = on_method
    try:
        result = iothub.invoke_method(device.device_id, "reboot", {"delay": 5}, response_timeout=15)
    finally:
        client.shutdown()

    assert result.status == 200
    assert result.payload == {"rebooting": True, "delay": 5}


def test_twin_reported_and_desired_properties(iothub):
    device = iothub.create_device()
    client = connect(iothub, device)
    patches = queue.Queue()
    client.on_twin_desired_properties_patch_received = patches.put
    try:
        client.patch_twin_reported_properties({"firmware": "1.2.3"})
        iothub.update_desired_properties(device.device_id, {"telemetryInterval": 30})
        patch = patches.get(timeout=15)
        twin_seen_by_device = client.get_twin()
    finally:
        client.shutdown()

    assert patch["telemetryInterval"] == 30
    assert twin_seen_by_device["desired"]["telemetryInterval"] == 30
    assert iothub.get_twin(device.device_id)["properties"]["reported"]["firmware"] == "1.2.3"
