"""Module clients from the IoT Edge environment (the development fallback:
`EdgeHubConnectionString` + `EdgeModuleCACertificateFile`, with the emulator as Edge hub),
`invoke_method` through it, and the bounds on blocking calls (`OperationTimeout`)."""

import threading
import time

import pytest

from ironhub import IoTHubDeviceClient, IoTHubModuleClient, MethodResponse
from ironhub import exceptions
from hubctl import parse_connection_string


@pytest.fixture
def edge_env(monkeypatch, hub, unique_id):
    """Registers an Edge module and exposes it the way IoT Edge's dev tools do."""
    hub.create_device(unique_id, iot_edge=True)
    cs = hub.device_connection_string(unique_id, "edgemod") + ";GatewayHostName=" + hub.hostname
    for var in ("IOTEDGE_IOTHUBHOSTNAME", "IOTEDGE_DEVICEID", "IOTEDGE_MODULEID", "IOTEDGE_GATEWAYHOSTNAME",
                "IOTEDGE_MODULEGENERATIONID", "IOTEDGE_WORKLOADURI", "IOTEDGE_APIVERSION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("EdgeHubConnectionString", cs)
    monkeypatch.setenv("EdgeModuleCACertificateFile", hub.ca_file)
    return unique_id


def test_edge_module_invokes_a_device_method(make_client, hub, edge_env, client_kwargs):
    kw = {k: v for k, v in client_kwargs.items() if k != "server_verification_cert"}
    module = make_client(IoTHubModuleClient, "create_from_edge_environment", **kw)
    module.send_message("from the edge")
    assert hub.telemetry(edge_env, 1)[0]["body"] == "from the edge"

    target_id = edge_env + "-target"
    device = make_client(IoTHubDeviceClient, "create_from_connection_string", hub.device_connection_string(target_id), **client_kwargs)
    device.on_method_request_received = lambda req: device.send_method_response(
        MethodResponse.create_from_method_request(req, 200, {"called": req.name, "with": req.payload})
    )
    result = module.invoke_method(
        {"methodName": "lights", "payload": {"on": True}, "responseTimeoutInSeconds": 10, "connectTimeoutInSeconds": 0},
        target_id,
    )
    assert result == {"status": 200, "payload": {"called": "lights", "with": {"on": True}}}


def test_edge_invoke_on_offline_device_is_client_error_caused_by_service_error(make_client, hub, edge_env, client_kwargs):
    kw = {k: v for k, v in client_kwargs.items() if k != "server_verification_cert"}
    module = make_client(IoTHubModuleClient, "create_from_edge_environment", **kw)
    offline = edge_env + "-offline"
    hub.create_device(offline)
    with pytest.raises(exceptions.ClientError) as info:
        module.invoke_method({"methodName": "m", "payload": None, "responseTimeoutInSeconds": 5}, offline)
    assert isinstance(info.value.__cause__, exceptions.ServiceError)


def test_silent_hub_is_operation_timeout(make_client, device_cs, client_kwargs, silent_hub_port):
    """A listener that accepts and never answers: the call ends within its bound."""
    kw = dict(client_kwargs, mqtt_port=silent_hub_port, operation_timeout=2, connection_retry=False)
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **kw)
    started = time.monotonic()
    with pytest.raises((exceptions.OperationTimeout, exceptions.ConnectionFailedError)):
        c.connect()
    assert time.monotonic() - started < 30


def test_shutdown_ends_a_blocked_receive(make_client, device_cs, client_kwargs):
    """A receive_* call blocked without timeout must not outlive the client (as in
    azure-iot-device, a mere disconnect leaves the inbox wait in place)."""
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    c.connect()
    outcome = []

    def receive():
        try:
            outcome.append(c.receive_message(block=True))
        except Exception as e:  # noqa: BLE001 - the outcome is what is checked
            outcome.append(e)

    t = threading.Thread(target=receive)
    t.start()
    time.sleep(0.5)
    c.shutdown()
    t.join(10)
    assert not t.is_alive(), "receive_message still blocked after shutdown"
    assert outcome[0] is None or isinstance(outcome[0], (exceptions.OperationCancelled, exceptions.ClientError))
