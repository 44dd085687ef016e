"""`proxy_options` through real proxy servers (tinyproxy, danted, microsocks: see
tests/support/real_proxies.py) with the wheel: MQTT over TCP and WebSockets, the Edge
`invoke_method` over HTTPS, and the failures. Each success is checked in the proxy's own log;
each refusal is ConnectionFailedError without the proxy password in it."""

import sys
from pathlib import Path

import pytest

from ironhub import IoTHubDeviceClient, IoTHubModuleClient, MethodResponse, ProxyOptions
from ironhub.exceptions import ConnectionFailedError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support"))
from real_proxies import proxies  # noqa: E402,F401 (the fixture)

PASSWORD = "pr0xy-s3cret"



def options(proxy, user=None, password=None):
    return ProxyOptions(proxy.proxy_type, "127.0.0.1", proxy.port, user, password)


@pytest.mark.parametrize("websockets", [False, True], ids=["tcp", "websockets"])
def test_telemetry_through_tinyproxy_with_basic_auth(make_client, hub, proxies, device_cs, unique_id, client_kwargs, websockets):
    proxy = proxies.tinyproxy(auth=("alice", PASSWORD))
    c = make_client(
        IoTHubDeviceClient,
        "create_from_connection_string",
        device_cs,
        proxy_options=options(proxy, "alice", PASSWORD),
        websockets=websockets,
        **client_kwargs,
    )
    c.send_message("through tinyproxy")
    assert hub.telemetry(unique_id, 1)[0]["body"] == "through tinyproxy"
    assert proxy.tunnelled_to(hub.https_port if websockets else hub.mqtt_port), proxy.log()


def refusing(proxies, kind):
    """A proxy of `kind` and options with a wrong password for it."""
    if kind == "tinyproxy":
        return options(proxies.tinyproxy(auth=("alice", PASSWORD)), "alice", "wrong-" + PASSWORD)
    return options(proxies.microsocks("bob", PASSWORD), "bob", "wrong-" + PASSWORD)


@pytest.mark.parametrize("kind", ["tinyproxy", "microsocks"])
def test_refusing_proxy_is_connection_failed(make_client, proxies, device_cs, client_kwargs, kind):
    c = make_client(
        IoTHubDeviceClient,
        "create_from_connection_string",
        device_cs,
        proxy_options=refusing(proxies, kind),
        connection_retry=False,
        **client_kwargs,
    )
    with pytest.raises(ConnectionFailedError) as info:
        c.connect()
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize("websockets", [False, True], ids=["tcp", "websockets"])
def test_telemetry_through_socks5(make_client, hub, proxies, device_cs, unique_id, client_kwargs, websockets):
    for proxy, user, password in [
        (proxies.danted("SOCKS5"), None, None),
        (proxies.microsocks("bob", PASSWORD), "bob", PASSWORD),
    ]:
        c = make_client(
            IoTHubDeviceClient,
            "create_from_connection_string",
            device_cs,
            proxy_options=options(proxy, user, password),
            websockets=websockets,
            **client_kwargs,
        )
        c.send_message("through " + proxy.binary)
        c.shutdown()
        assert proxy.tunnelled_to(hub.https_port if websockets else hub.mqtt_port), proxy.log()
    assert len(hub.telemetry(unique_id, 2)) >= 2


def edge_caller(make_client, hub, unique_id, client_kwargs, proxy_options):
    """A module of an IoT Edge device calling through its gateway, via the proxy; it never
    connects MQTT, so the proxy sees only the HTTPS call."""
    edge_id = unique_id + "-edge"
    hub.create_device(edge_id, iot_edge=True)
    cs = hub.device_connection_string(edge_id, "caller") + ";GatewayHostName=localhost"
    return make_client(IoTHubModuleClient, "create_from_connection_string", cs, proxy_options=proxy_options, **client_kwargs)


def test_invoke_method_through_http_and_socks_proxies(make_client, hub, proxies, unique_id, client_kwargs):
    target = make_client(IoTHubDeviceClient, "create_from_connection_string", hub.device_connection_string(unique_id), **client_kwargs)
    target.on_method_request_received = lambda req: target.send_method_response(
        MethodResponse.create_from_method_request(req, 200, {"echo": req.payload})
    )
    params = {"methodName": "echo", "payload": 5, "responseTimeoutInSeconds": 10}
    for proxy, user, password in [
        (proxies.tinyproxy(auth=("alice", PASSWORD)), "alice", PASSWORD),
        (proxies.danted("SOCKS5"), None, None),
        (proxies.microsocks("bob", PASSWORD), "bob", PASSWORD),
    ]:
        caller = edge_caller(make_client, hub, unique_id + proxy.binary, client_kwargs, options(proxy, user, password))
        assert caller.invoke_method(params, unique_id) == {"status": 200, "payload": {"echo": 5}}
        assert proxy.tunnelled_to(hub.https_port), proxy.log()


@pytest.mark.parametrize("kind", ["tinyproxy", "microsocks"])
def test_invoke_method_through_a_refusing_proxy_is_connection_failed(make_client, hub, proxies, unique_id, client_kwargs, kind):
    caller = edge_caller(make_client, hub, unique_id, client_kwargs, refusing(proxies, kind))
    with pytest.raises(ConnectionFailedError) as info:
        caller.invoke_method({"methodName": "m", "payload": None, "responseTimeoutInSeconds": 5}, unique_id)
    assert PASSWORD not in str(info.value)


def test_unknown_cipher_is_value_error_naming_it(client_kwargs, device_cs):
    kw = dict(client_kwargs, cipher="ECDHE-ECDSA-AES128-GCM-SHA256:NOT-A-CIPHER")
    with pytest.raises(ValueError, match="NOT-A-CIPHER"):
        IoTHubDeviceClient.create_from_connection_string(device_cs, **kw)
