"""Example: tests that run in either port mode. `**iothub.device_client_kwargs` is
`server_verification_cert=...` plus, with `--iothub-ports=free` (no root needed, parallel
sessions allowed), `proxy_options=` a local proxy that maps the SDK's fixed ports 8883/443 to the
emulator's free ones.

    pytest --iothub-ports=free examples/test_any_port_mode.py
"""

from azure.iot.device import IoTHubModuleClient, Message, MethodResponse


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


def test_module_direct_method(iothub):
    device = iothub.create_device()
    module = iothub.create_module(device.device_id, "controller")
    client = IoTHubModuleClient.create_from_connection_string(module, **iothub.device_client_kwargs)

    def on_method(request):
        client.send_method_response(MethodResponse.create_from_method_request(request, 202, {"accepted": request.name}))

    client.on_method_request_received = on_method
    try:
        result = iothub.invoke_method(device.device_id, "start", module_id="controller", response_timeout=15)
    finally:
        client.shutdown()

    assert (result.status, result.payload) == (202, {"accepted": "start"})
