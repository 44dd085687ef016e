"""Example: tests that run in either port mode. `**iothub.device_client_kwargs` is
`server_verification_cert=...` plus, with `--iothub-ports=free` (no root needed, parallel
sessions allowed), `proxy_options=` a local proxy that maps the SDK's fixed ports 8883/443 to the
emulator's free ones.

    pytest --iothub-ports=free examples/test_any_port_mode.py
"""

from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message


def test_module_output_over_websockets(iothub):
    device = iothub.create_device()
    module = iothub.create_module(device.device_id, "filter")
    client = IoTHubModuleClient.create_from_connection_string(module, websockets=True, **iothub.device_client_kwargs)
    client.connect()
    try:
        client.send_message_to_output(Message("filtered"), "alerts")
    finally:
        client.shutdown()

    [received] = iothub.wait_for_telemetry(device.device_id, module_id="filter")
    assert (received.text, received.module_id, received.output_name) == ("filtered", "filter", "alerts")


def test_device_sees_forced_disconnect_and_reconnects(iothub):
    device = iothub.create_device()
    client = IoTHubDeviceClient.create_from_connection_string(device, **iothub.device_client_kwargs)
    client.connect()
    try:
        assert iothub.disconnect(device.device_id) is True
        client.send_message("after the drop")  # the SDK reconnects on its own, then sends
    finally:
        client.shutdown()

    assert [m.text for m in iothub.wait_for_telemetry(device.device_id)] == ["after the drop"]
