"""Direct methods to devices and modules through IoTHubRegistryManager."""

import pytest
from azure.iot.device import MethodResponse
from azure.iot.hub.models import CloudToDeviceMethod
from msrest.exceptions import HttpOperationError

from helpers import create_device, create_module, device_client, module_client


def echo_handler(client, status):
    def handle(request):
        payload = {"method": request.name, "echo": request.payload}
        client.send_method_response(MethodResponse.create_from_method_request(request, status, payload))

    return handle


def method(name, payload, response_timeout=10, connect_timeout=0):
    return CloudToDeviceMethod(
        method_name=name,
        payload=payload,
        response_timeout_in_seconds=response_timeout,
        connect_timeout_in_seconds=connect_timeout,
    )


def test_device_method_round_trip(registry, emulator, clients):
    device_id, cs = create_device(registry, emulator)
    client = device_client(clients, emulator, cs)
    client.on_method_request_received = echo_handler(client, 201)
    client.connect()

    payload = {"delay": 3, "text": "ünï & =", "list": [1, 2]}
    result = registry.invoke_device_method(device_id, method("reboot", payload))
    assert result.status == 201
    assert result.payload == {"method": "reboot", "echo": payload}


def test_module_method_round_trip(registry, emulator, clients):
    device_id, _ = create_device(registry, emulator)
    module_id, cs = create_module(registry, emulator, device_id)
    client = module_client(clients, emulator, cs)
    client.on_method_request_received = echo_handler(client, 200)
    client.connect()

    result = registry.invoke_device_module_method(device_id, module_id, method("configure", "plain string"))
    assert result.status == 200
    assert result.payload == {"method": "configure", "echo": "plain string"}


def test_method_to_offline_device_is_404(registry, emulator, clients):
    device_id, cs = create_device(registry, emulator)
    with pytest.raises(HttpOperationError) as offline:
        registry.invoke_device_method(device_id, method("reboot", None))
    assert offline.value.response.status_code == 404

    # Connected but without a method handler (not subscribed): still not reachable.
    client = device_client(clients, emulator, cs)
    client.connect()
    with pytest.raises(HttpOperationError) as unsubscribed:
        registry.invoke_device_method(device_id, method("reboot", None))
    assert unsubscribed.value.response.status_code == 404
