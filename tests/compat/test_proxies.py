"""The official azure-iot-device through real proxies (tinyproxy for HTTP CONNECT, danted and
microsocks for SOCKS5; tests/support/real_proxies.py) against the emulator: the same scenarios as
ironhub's own proxy suites (tests/proxies.rs, python/tests/test_proxies.py). Each success is
checked in the proxy's log (tunnels to 8883 or 443); each refusal fails the connect with a
ClientError: azure-iot-device raises ClientError itself ("raised due to proxy connections"),
ironhub its subclass ConnectionFailedError, so code catching ClientError works with both."""

import sys
from pathlib import Path

import pytest
from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, MethodResponse, ProxyOptions
from azure.iot.device.exceptions import ClientError

from helpers import create_device, decoded_body, device_client, unique, wait_events

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from real_proxies import proxies  # noqa: E402,F401 (the fixture)

PASSWORD = "pr0xy-s3cret"


def scenarios(proxies):
    """(proxy, its ProxyOptions) for every kind azure-iot-device can use with these daemons."""
    tiny = proxies.tinyproxy(auth=("alice", PASSWORD))
    danted = proxies.danted("SOCKS5")
    micro = proxies.microsocks("bob", PASSWORD)
    return [
        (tiny, ProxyOptions("HTTP", "127.0.0.1", tiny.port, "alice", PASSWORD)),
        (danted, ProxyOptions("SOCKS5", "127.0.0.1", danted.port)),
        (micro, ProxyOptions("SOCKS5", "127.0.0.1", micro.port, "bob", PASSWORD)),
    ]


@pytest.mark.parametrize("websockets", [False, True], ids=["tcp", "websockets"])
def test_telemetry_through_http_and_socks5_proxies(registry, emulator, clients, proxies, websockets):
    for n, (proxy, options) in enumerate(scenarios(proxies)):
        device_id, cs = create_device(registry, emulator)
        client = device_client(clients, emulator, cs, proxy_options=options, websockets=websockets)
        client.connect()
        client.send_message("through " + proxy.binary)
        [event] = wait_events(emulator, device_id)
        assert decoded_body(event) == "through " + proxy.binary
        assert proxy.tunnelled_to(emulator.https_port if websockets else emulator.mqtt_port), proxy.log()


@pytest.mark.parametrize("kind", ["tinyproxy", "microsocks"])
def test_refusing_proxy_fails_the_connect(registry, emulator, clients, proxies, kind):
    if kind == "tinyproxy":
        proxy = proxies.tinyproxy(auth=("alice", PASSWORD))
        options = ProxyOptions("HTTP", "127.0.0.1", proxy.port, "alice", "wrong")
    else:
        proxy = proxies.microsocks("bob", PASSWORD)
        options = ProxyOptions("SOCKS5", "127.0.0.1", proxy.port, "bob", "wrong")
    _, cs = create_device(registry, emulator)
    client = device_client(clients, emulator, cs, proxy_options=options, connection_retry=False)
    with pytest.raises(ClientError):
        client.connect()


def test_edge_invoke_method_through_http_and_socks5_proxies(registry, emulator, clients, proxies, monkeypatch):
    target_id, target_cs = create_device(registry, emulator)
    target = device_client(clients, emulator, target_cs)
    target.on_method_request_received = lambda req: target.send_method_response(
        MethodResponse.create_from_method_request(req, 200, {"echo": req.payload})
    )
    target.connect()
    edge_id = unique("edge")
    emulator.create_device(edge_id, iot_edge=True)
    cs = emulator.device_connection_string(edge_id, "caller") + ";GatewayHostName=" + emulator.hostname
    # azure-iot-device's development fallback for Edge modules (no workload API needed).
    monkeypatch.setenv("EdgeHubConnectionString", cs)
    monkeypatch.setenv("EdgeModuleCACertificateFile", emulator.ca_file)
    for proxy, options in scenarios(proxies):
        caller = IoTHubModuleClient.create_from_edge_environment(proxy_options=options)
        clients.append(caller)
        params = {"methodName": "echo", "payload": 3, "responseTimeoutInSeconds": 10}
        assert caller.invoke_method(params, target_id) == {"status": 200, "payload": {"echo": 3}}
        assert proxy.tunnelled_to(emulator.https_port), proxy.log()
