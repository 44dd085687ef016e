"""The Python layer's own behaviours from issue 10: garbage collection of a client whose handler
captures it, azure-iot-device's error parity (ClientError caused by TypeError, OSError for a
missing Edge environment, connect() unaffected by a disconnect() from the state handler),
DeprecationWarning from receive_*, connection_state_reason, asyncio operations on the core's
runtime, and the core's rules reaching Python (proxy type case, security marker)."""

import asyncio
import gc
import threading
import time
import weakref

import pytest

import ironhub
from ironhub import IoTHubDeviceClient, IoTHubModuleClient, Message, ProxyOptions, _native
from ironhub.aio import IoTHubDeviceClient as AioDeviceClient
from ironhub.exceptions import ClientError

OFFLINE_CS = "HostName=127.0.0.1;DeviceId=parity;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg=="


def offline():
    return IoTHubDeviceClient.create_from_connection_string(OFFLINE_CS, auto_connect=False)


def test_a_client_whose_handler_captures_it_is_collected():
    client = offline()
    client.on_connection_state_change = lambda: client.connected  # a cycle through the native client
    client.on_background_exception = lambda e: print(client, e)
    ref = weakref.ref(client)
    del client
    for _ in range(3):
        gc.collect()
    assert ref() is None, "the cycle through the native client's handlers was not collected"


@pytest.mark.parametrize("operation", ["send_message", "patch_twin_reported_properties"])
def test_unencodable_objects_are_client_error_caused_by_type_error(operation):
    client = offline()
    try:
        arg = object() if operation == "send_message" else {"a": object()}
        with pytest.raises(ClientError) as info:
            getattr(client, operation)(arg)
        assert isinstance(info.value.__cause__, TypeError)
    finally:
        client.shutdown()


def test_missing_edge_environment_is_os_error(monkeypatch):
    for name in ["IOTEDGE_WORKLOADURI", "IOTEDGE_DEVICEID", "IOTEDGE_MODULEID", "IOTEDGE_IOTHUBHOSTNAME",
                 "IOTEDGE_GATEWAYHOSTNAME", "IOTEDGE_APIVERSION", "IOTEDGE_MODULEGENERATIONID",
                 "EdgeHubConnectionString", "EdgeModuleCACertificateFile"]:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(OSError) as info:
        IoTHubModuleClient.create_from_edge_environment()
    assert not isinstance(info.value, ClientError)


def test_proxy_type_is_case_insensitive_and_socks_is_accepted():
    for kind in ["HTTP", "http", "Socks4", "socks5"]:
        assert ProxyOptions(kind, "127.0.0.1", 1080).proxy_type == kind
    with pytest.raises(ValueError):
        ProxyOptions("SOCKS6", "127.0.0.1", 1080)


def test_security_marker_is_the_core_one():
    m = Message("x")
    m.set_as_security_message()
    assert m.iothub_interface_id == _native.SECURITY_MESSAGE_INTERFACE_ID == "urn:azureiot:Security:SecurityAgent:1"


def test_receive_apis_warn_deprecation(make_client, device_cs, client_kwargs):
    client = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    with pytest.warns(DeprecationWarning, match="receive_message"):
        assert client.receive_message(block=False) is None
    with pytest.warns(DeprecationWarning, match="receive_twin_desired_properties_patch"):
        assert client.receive_twin_desired_properties_patch(block=False) is None


def test_connection_state_reason(make_client, device_cs, client_kwargs):
    client = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    assert client.connection_state_reason is None
    changes = []
    client.on_connection_state_change = lambda: changes.append((client.connected, client.connection_state_reason))
    client.connect()
    deadline = time.monotonic() + 10
    while not changes and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.connection_state_reason == "OK"
    client.disconnect()
    deadline = time.monotonic() + 10
    while len(changes) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.connection_state_reason == "CLIENT_CLOSE"
    assert changes[-1] == (False, "CLIENT_CLOSE")


def test_disconnect_from_the_state_handler_during_the_first_connect_does_not_fail_connect(
    make_client, device_cs, client_kwargs
):
    # The race (the handler's disconnect against connect's own completion) is lost in about half
    # of the attempts without the fix: 20 attempts make the old code fail (seen: 3 runs of 3).
    for _ in range(20):
        client = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)

        def on_state(c=client):
            if c.connected:
                c.disconnect()

        client.on_connection_state_change = on_state
        client.connect()  # must return normally, as azure-iot-device's does
        client.shutdown()


def test_asyncio_operations_run_on_the_core_runtime_without_a_second_one(device_cs, client_kwargs):
    async def scenario():
        client = AioDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
        await client.connect()
        await asyncio.gather(*(client.send_message("m{}".format(i)) for i in range(20)))
        await client.send_messages(["a", "b"])
        twin = await client.get_twin()
        assert "desired" in twin
        await client.shutdown()

    asyncio.run(scenario())
    names = [t.name for t in threading.enumerate()]
    assert not any(n.startswith("ironhub-py-completion") for n in names), names


def test_sends_pending_when_the_connection_drops_without_retry_are_cancelled(hub, client_kwargs, unique_id):
    """azure-iot-device: with connection_retry=False, a send pending when the connection drops
    raises OperationCancelled (not ConnectionDroppedError)."""
    from ironhub.exceptions import OperationCancelled

    async def attempt(device):
        client = AioDeviceClient.create_from_connection_string(
            hub.device_connection_string(device), connection_retry=False, **client_kwargs
        )
        await client.connect()
        sends = [asyncio.ensure_future(client.send_message("x" * 1000)) for _ in range(400)]
        await asyncio.sleep(0.01)
        hub.disconnect(device)
        results = await asyncio.gather(*sends, return_exceptions=True)
        await client.shutdown()
        return [r for r in results if r is not None]

    for i in range(5):  # the drop has to catch some sends in flight; it usually does at once
        failures = asyncio.run(attempt("{}-{}".format(unique_id, i)))
        if failures:
            break
    assert failures, "no send was pending when the connection dropped, in 5 attempts"
    assert all(type(f) is OperationCancelled for f in failures), {type(f).__name__ for f in failures}
