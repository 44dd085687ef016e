"""Service-side C2D over AMQP: azure-iot-hub's `IoTHubRegistryManager.send_c2d_message` (uamqp:
TLS on 5671 or WebSockets on 443, CBS put-token, the `/messages/devicebound` link), unchanged, delivers to a device of
the official azure-iot-device and to an ironhub device, with its system and application
properties; an unknown device is refused.

uamqp trusts only `certifi.where()` and azure-iot-hub offers no way to pass a CA, so the test
points certifi at a bundle that adds the emulator's CA (as one would for any private CA)."""

import time
import uuid

import pytest
from azure.iot.device import IoTHubDeviceClient

from helpers import Inbox, create_device, device_client

PROPERTIES = {
    "contentType": "application/json",
    "contentEncoding": "utf-8",
    "correlationId": "cid-amqp",
    "k": "v w",
    "ünïcødé ✓": "välue ✓",
}


@pytest.fixture(params=["Amqp", "AmqpOverWebsocket"])
def amqp_registry(request, emulator, monkeypatch, tmp_path):
    """The registry manager whose C2D client speaks AMQP on 5671, or over WebSockets on 443."""
    import certifi
    from azure.iot.hub import IoTHubRegistryManager
    from uamqp import TransportType

    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_text(open(certifi.where()).read() + "\n" + emulator.ca_pem)
    monkeypatch.setattr(certifi, "where", lambda: str(bundle))
    transport = getattr(TransportType, request.param)
    registry = IoTHubRegistryManager.from_connection_string(emulator.service_connection_string, transport_type=transport)
    yield registry
    registry.amqp_svc_client.disconnect_sync()


def _send_and_receive(amqp_registry, client, device_id):
    inbox = Inbox()
    client.on_message_received = inbox
    client.connect()
    message_id = str(uuid.uuid4())
    expiry_ms = int((time.time() + 600) * 1000)
    properties = dict(PROPERTIES, messageId=message_id, expiryTimeUtc=expiry_ms)
    amqp_registry.send_c2d_message(device_id, '{"cmd": "reboot"}', properties=properties)
    received = inbox.get()
    assert received.data == b'{"cmd": "reboot"}'
    assert received.message_id == message_id
    assert received.correlation_id == "cid-amqp"
    assert received.content_type == "application/json"
    assert received.content_encoding == "utf-8"
    assert received.custom_properties["k"] == "v w"
    assert received.custom_properties["ünïcødé ✓"] == "välue ✓"
    assert received.expiry_time_utc.startswith(time.strftime("%Y-%m-%dT%H", time.gmtime(expiry_ms / 1000)))
    return received


def test_send_c2d_message_reaches_an_official_sdk_device(amqp_registry, registry, emulator, clients):
    device_id, cs = create_device(registry, emulator)
    client = device_client(clients, emulator, cs)
    assert isinstance(client, IoTHubDeviceClient)
    _send_and_receive(amqp_registry, client, device_id)


def test_send_c2d_message_reaches_an_ironhub_device(amqp_registry, registry, emulator, clients):
    import ironhub

    device_id, cs = create_device(registry, emulator)
    client = ironhub.IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=emulator.ca_pem)
    clients.append(client)
    _send_and_receive(amqp_registry, client, device_id)


def test_send_c2d_message_to_an_unknown_device_fails(amqp_registry):
    with pytest.raises(Exception, match="C2D message send failure"):
        amqp_registry.send_c2d_message(f"nobody-{uuid.uuid4().hex[:8]}", "x")

