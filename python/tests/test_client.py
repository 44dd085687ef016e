"""The sync clients against the emulator: every factory, operation and handler, the
deprecated receive APIs, errors from the hub, and use after shutdown."""

import json
import logging
import threading
import time

import pytest

import ironhub

from ironhub import IoTHubDeviceClient, IoTHubModuleClient, Message, MethodResponse
from ironhub import exceptions
from hubctl import parse_connection_string, sas_token

WAIT = 15  # seconds any single delivery may take before a test fails


def wait_for(predicate, timeout=WAIT, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# -- connection -----------------------------------------------------------------------------


def test_connect_disconnect_and_state_handler(make_client, device_cs, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    changes = []
    c.on_connection_state_change = lambda: changes.append(c.connected)
    assert c.connected is False
    c.connect()
    assert c.connected is True
    assert wait_for(lambda: True in changes)
    c.disconnect()
    assert c.connected is False
    assert wait_for(lambda: changes and changes[-1] is False)


def test_bad_credentials_is_credential_error(make_client, hub, unique_id, client_kwargs):
    hub.create_device(unique_id)
    wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXkhIQ=="
    cs = "HostName={};DeviceId={};SharedAccessKey={}".format(hub.hostname, unique_id, wrong_key)
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", cs, connection_retry=False, **client_kwargs)
    with pytest.raises(exceptions.CredentialError) as info:
        c.connect()
    assert wrong_key not in str(info.value)
    assert c.connected is False


def test_unknown_device_is_credential_error(make_client, hub, client_kwargs):
    cs = "HostName={};DeviceId=never-registered;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0".format(hub.hostname)
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", cs, **client_kwargs)
    with pytest.raises(exceptions.CredentialError):
        c.connect()


def test_nothing_listening_is_connection_failed(make_client, device_cs, client_kwargs):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    free_port = s.getsockname()[1]
    s.close()
    kw = dict(client_kwargs, mqtt_port=free_port)
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **kw)
    with pytest.raises(exceptions.ConnectionFailedError):
        c.connect()


def test_untrusted_hub_is_connection_failed(make_client, device_cs, client_kwargs):
    kw = dict(client_kwargs)
    del kw["server_verification_cert"]  # the public roots do not include the emulator's CA
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **kw)
    with pytest.raises(exceptions.ConnectionFailedError):
        c.connect()


def test_shutdown_then_every_call_is_client_error(make_client, device_cs, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    c.connect()
    c.shutdown()
    assert c.connected is False
    with pytest.raises(exceptions.ClientError):
        c.send_message("late")
    with pytest.raises(exceptions.ClientError):
        c.connect()


# -- telemetry ------------------------------------------------------------------------------


def test_telemetry_with_properties(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    m = Message('{"temp": 21.5}', message_id="mid-1", content_encoding="utf-8", content_type="application/json")
    m.correlation_id = "cid-1"
    m.custom_properties["alert"] = "true"
    m.custom_properties["n"] = 7  # non-str values go out as str(), like azure-iot-device
    c.send_message(m)  # auto-connects
    c.send_message("plain text")  # non-Message → Message(value)
    events = hub.telemetry(unique_id, 2)
    assert [e["body"] for e in events] == ['{"temp": 21.5}', "plain text"]
    first = events[0]
    assert first["properties"]["alert"] == "true"
    assert first["properties"]["n"] == "7"
    assert first["systemProperties"]["messageId"] == "mid-1"
    assert first["systemProperties"]["correlationId"] == "cid-1"
    assert first["systemProperties"]["contentType"] == "application/json"
    assert first["systemProperties"]["contentEncoding"] == "utf-8"


def test_pipelined_send_messages(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    c.send_messages([Message("m{}".format(i)) for i in range(20)])
    events = hub.telemetry(unique_id, 20)
    assert [e["body"] for e in events] == ["m{}".format(i) for i in range(20)]


def test_security_message_interface_id(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    m = Message("sec")
    m.set_as_security_message()
    c.send_message(m)
    (event,) = hub.telemetry(unique_id, 1)
    assert event["systemProperties"].get("interfaceId") == "urn:azureiot:Security:SecurityAgent:1"


# -- cloud-to-device ------------------------------------------------------------------------


def test_c2d_handler(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    got = []
    threads = []

    def on_message(msg):
        threads.append(threading.current_thread().name)
        got.append(msg)

    c.on_message_received = on_message  # subscribes, auto-connecting
    assert c.connected
    hub.send_c2d(unique_id, "hello device", {"k": "v"}, messageId="c2d-1", correlationId="corr")
    assert wait_for(lambda: got)
    msg = got[0]
    assert msg.data == b"hello device"
    assert msg.custom_properties["k"] == "v"
    assert msg.message_id == "c2d-1"
    assert msg.correlation_id == "corr"
    assert threads[0] != threading.main_thread().name
    c.on_message_received = None  # unsubscribes
    assert c.on_message_received is None


def test_handler_exception_is_logged_and_client_goes_on(make_client, hub, device_cs, unique_id, client_kwargs, caplog):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    got = []

    def on_message(msg):
        got.append(msg.data)
        if msg.data == b"boom":
            raise RuntimeError("handler failure on purpose")

    with caplog.at_level(logging.ERROR, logger="ironhub"):
        c.on_message_received = on_message
        hub.send_c2d(unique_id, "boom")
        hub.send_c2d(unique_id, "after")
        assert wait_for(lambda: got == [b"boom", b"after"])
    records = [r for r in caplog.records if r.name.startswith("ironhub") and r.exc_info]
    assert any("handler failure on purpose" in str(r.exc_info[1]) for r in records)
    c.send_message("still alive")
    assert hub.telemetry(unique_id, 1)


def test_deprecated_receive_message(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    assert c.receive_message(block=False) is None  # enables C2D, connecting
    assert c.receive_message(timeout=0.2) is None
    hub.send_c2d(unique_id, "queued")
    msg = c.receive_message(timeout=WAIT)
    assert msg is not None and msg.data == b"queued"
    with pytest.raises(exceptions.ClientError):
        c.on_message_received = lambda m: None  # mixing APIs and handlers


# -- module inputs and outputs --------------------------------------------------------------


def test_module_output_routed_to_input(make_client, hub, unique_id, client_kwargs):
    hub.create_device(unique_id)
    sender_cs = hub.device_connection_string(unique_id, "sender")
    receiver_cs = hub.device_connection_string(unique_id, "receiver")
    hub.set_routes(
        {
            "r-" + unique_id: 'FROM /messages/modules/sender/outputs/out1 INTO BrokeredEndpoint("/modules/receiver/inputs/in1")'
        }
    )
    sender = make_client(IoTHubModuleClient, "create_from_connection_string", sender_cs, **client_kwargs)
    receiver = make_client(IoTHubModuleClient, "create_from_connection_string", receiver_cs, **client_kwargs)
    got = []
    receiver.on_message_received = got.append
    m = Message("routed")
    m.custom_properties["p"] = "1"
    sender.send_message_to_output(m, "out1")
    assert wait_for(lambda: got)
    assert got[0].data == b"routed"
    assert got[0].input_name == "in1"
    assert got[0].custom_properties["p"] == "1"


def test_module_input_deprecated_receive(make_client, hub, module_cs, unique_id, client_kwargs):
    c = make_client(IoTHubModuleClient, "create_from_connection_string", module_cs, **client_kwargs)
    assert c.receive_message_on_input("in2", block=False) is None
    hub.send_input(unique_id, "mod1", "in2", "to input")
    msg = c.receive_message_on_input("in2", timeout=WAIT)
    assert msg is not None and msg.data == b"to input" and msg.input_name == "in2"


def test_module_input_handler(make_client, hub, module_cs, unique_id, client_kwargs):
    c = make_client(IoTHubModuleClient, "create_from_connection_string", module_cs, **client_kwargs)
    got = []
    c.on_message_received = got.append
    hub.send_input(unique_id, "mod1", "in9", "via control api", {"a": "b"})
    assert wait_for(lambda: got)
    assert got[0].input_name == "in9" and got[0].custom_properties["a"] == "b"


def test_module_telemetry(make_client, hub, module_cs, unique_id, client_kwargs):
    c = make_client(IoTHubModuleClient, "create_from_connection_string", module_cs, **client_kwargs)
    c.send_message("from module")
    (event,) = hub.telemetry(unique_id, 1)
    assert event["body"] == "from module"
    assert event.get("moduleId") == "mod1"


def test_invoke_method_needs_edge(make_client, module_cs, client_kwargs):
    c = make_client(IoTHubModuleClient, "create_from_connection_string", module_cs, **client_kwargs)
    with pytest.raises(exceptions.ClientError):
        c.invoke_method({"methodName": "m", "payload": None}, "some-device")


# -- direct methods -------------------------------------------------------------------------


def test_method_handler_round_trip(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)

    def on_method(req):
        c.send_method_response(MethodResponse.create_from_method_request(req, 201, {"echo": req.payload, "name": req.name}))

    c.on_method_request_received = on_method
    result = hub.invoke_method(unique_id, "reboot", {"delay": 3})
    assert result["httpStatus"] == 200
    assert result["body"] == {"status": 201, "payload": {"echo": {"delay": 3}, "name": "reboot"}}


def test_deprecated_receive_method_request(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    assert c.receive_method_request("ping", block=False) is None
    answer = {}
    t = threading.Thread(target=lambda: answer.update(hub.invoke_method(unique_id, "ping", "x")))
    t.start()
    req = c.receive_method_request("ping", timeout=WAIT)
    assert req is not None and req.name == "ping" and req.payload == "x"
    c.send_method_response(MethodResponse(req.request_id, 200, None))
    t.join(WAIT)
    assert answer["body"] == {"status": 200, "payload": None}


def test_unanswered_method_times_out_at_the_hub(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    c.on_method_request_received = lambda req: None
    result = hub.invoke_method(unique_id, "ignored", response_timeout=5)
    assert result["httpStatus"] == 504


# -- twin -----------------------------------------------------------------------------------


def test_twin_get_and_reported_patch(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    twin = c.get_twin()
    assert "$version" in twin["desired"] and "$version" in twin["reported"]
    v0 = twin["reported"]["$version"]
    c.patch_twin_reported_properties({"fw": "1.2.3", "nested": {"a": 1}})
    twin = c.get_twin()
    assert twin["reported"]["fw"] == "1.2.3"
    assert twin["reported"]["nested"] == {"a": 1}
    assert twin["reported"]["$version"] == v0 + 1
    assert hub.get_twin(unique_id)["properties"]["reported"]["fw"] == "1.2.3"


def test_reported_patch_refused_by_hub_is_client_error_caused_by_service_error(make_client, device_cs, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    too_deep = {}
    node = too_deep
    for _ in range(12):
        node["d"] = {}
        node = node["d"]
    with pytest.raises(exceptions.ClientError) as info:
        c.patch_twin_reported_properties(too_deep)
    assert isinstance(info.value.__cause__, exceptions.ServiceError)


def test_reported_patch_must_be_json(make_client, device_cs, client_kwargs):
    # azure-iot-device: ClientError caused by the TypeError json.dumps raised.
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    with pytest.raises(ironhub.exceptions.ClientError) as info:
        c.patch_twin_reported_properties({"x": object()})
    assert isinstance(info.value.__cause__, TypeError)


def test_desired_patch_handler(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    patches = []
    c.on_twin_desired_properties_patch_received = patches.append
    hub.patch_desired(unique_id, {"interval": 5})
    assert wait_for(lambda: any(p.get("interval") == 5 for p in patches))
    assert all("$version" in p for p in patches)


def test_ensure_desired_properties_after_reconnect(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(
        IoTHubDeviceClient, "create_from_connection_string", device_cs, connection_retry_interval=1, **client_kwargs
    )
    patches = []
    c.on_twin_desired_properties_patch_received = patches.append
    c.disconnect()
    hub.patch_desired(unique_id, {"while_offline": True})  # nobody is subscribed: not pushed
    c.connect()
    # After the reconnect the client fetched the twin and delivered the whole desired document.
    assert wait_for(lambda: any(p.get("while_offline") is True for p in patches))


def test_deprecated_receive_twin_patch(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(
        IoTHubDeviceClient, "create_from_connection_string", device_cs, ensure_desired_properties=False, **client_kwargs
    )
    assert c.receive_twin_desired_properties_patch(block=False) is None
    hub.patch_desired(unique_id, {"mode": "eco"})
    patch = c.receive_twin_desired_properties_patch(timeout=WAIT)
    assert patch is not None and patch["mode"] == "eco"


# -- reconnect ------------------------------------------------------------------------------


def test_reconnects_after_hub_drops_the_connection(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(
        IoTHubDeviceClient, "create_from_connection_string", device_cs, connection_retry_interval=1, **client_kwargs
    )
    states = []
    c.on_connection_state_change = lambda: states.append(c.connected)
    c.connect()
    hub.disconnect(unique_id)
    assert wait_for(lambda: False in states)
    assert wait_for(lambda: c.connected)
    c.send_message("after reconnect")
    assert hub.telemetry(unique_id, 1)


# -- other factories ------------------------------------------------------------------------


def test_symmetric_key_factory(make_client, hub, device_cs, unique_id, client_kwargs):
    key = parse_connection_string(device_cs)["SharedAccessKey"]
    c = make_client(IoTHubDeviceClient, "create_from_symmetric_key", key, hub.hostname, unique_id, **client_kwargs)
    c.send_message("via symmetric key")
    assert hub.telemetry(unique_id, 1)[0]["body"] == "via symmetric key"


def test_sastoken_factory_and_update(make_client, hub, device_cs, unique_id, client_kwargs):
    key = parse_connection_string(device_cs)["SharedAccessKey"]
    resource = "{}/devices/{}".format(hub.hostname, unique_id)
    c = make_client(IoTHubDeviceClient, "create_from_sastoken", sas_token(resource, key, ttl=600), **client_kwargs)
    c.connect()
    c.update_sastoken(sas_token(resource, key, ttl=1200))
    c.send_message("after token update")
    assert hub.telemetry(unique_id, 1)
    with pytest.raises(ValueError):
        c.update_sastoken(sas_token("{}/devices/someone-else".format(hub.hostname), key))


def test_update_sastoken_needs_a_sastoken_client(make_client, device_cs, hub, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    key = parse_connection_string(device_cs)["SharedAccessKey"]
    with pytest.raises(exceptions.ClientError):
        c.update_sastoken(sas_token("{}/devices/x".format(hub.hostname), key))


def test_x509_self_signed(make_client, hub, unique_id, client_kwargs, tmp_path):
    import hashlib
    import subprocess

    key, cert = tmp_path / "dev.key", tmp_path / "dev.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=" + unique_id],
        check=True, capture_output=True,
    )
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True, capture_output=True).stdout
    hub.create_device(unique_id, x509_thumbprint=hashlib.sha256(der).hexdigest().upper())
    from ironhub import X509

    c = make_client(IoTHubDeviceClient, "create_from_x509_certificate", X509(str(cert), str(key)), hub.hostname, unique_id, **client_kwargs)
    c.send_message("via x509")
    assert hub.telemetry(unique_id, 1)[0]["body"] == "via x509"


def test_websockets(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, websockets=True, **client_kwargs)
    c.send_message("over websockets")
    assert hub.telemetry(unique_id, 1)[0]["body"] == "over websockets"


def test_gil_is_released_during_blocking_calls(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    try:
        before = len(ticks)
        # receive blocks for 0.5 s in native code; the other thread must keep running.
        assert c.receive_twin_desired_properties_patch(timeout=0.5) is None
        assert len(ticks) - before > 50
    finally:
        stop.set()
        t.join()


def test_new_sastoken_required_fires_before_expiry(make_client, hub, device_cs, unique_id, client_kwargs):
    key = parse_connection_string(device_cs)["SharedAccessKey"]
    resource = "{}/devices/{}".format(hub.hostname, unique_id)
    # Expires in 124 s: the renewal point (120 s before expiry) is 4 s away.
    c = make_client(IoTHubDeviceClient, "create_from_sastoken", sas_token(resource, key, ttl=124), **client_kwargs)
    renewed = []

    def on_new_sastoken_required():
        c.update_sastoken(sas_token(resource, key, ttl=3600))  # the app's answer, from the handler
        renewed.append(True)

    c.on_new_sastoken_required = on_new_sastoken_required
    c.connect()
    assert wait_for(lambda: renewed, timeout=20)
    c.send_message("after renewal")
    assert hub.telemetry(unique_id, 1)[0]["body"] == "after renewal"


def test_background_exception_handler_is_settable(make_client, device_cs, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    seen = []
    c.on_background_exception = seen.append
    assert c.on_background_exception == seen.append
    c.on_background_exception = None
    assert c.on_background_exception is None


def test_dropping_a_connected_client_shuts_it_down(hub, device_cs, unique_id, client_kwargs):
    import gc

    c = IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
    c.connect()
    assert wait_for(lambda: hub.get_twin(unique_id)["connectionState"] == "Connected")
    del c
    gc.collect()
    assert wait_for(lambda: hub.get_twin(unique_id)["connectionState"] == "Disconnected")
    # The process goes on; a new client of the same identity connects.
    c2 = IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
    try:
        c2.connect()
        assert c2.connected
    finally:
        c2.shutdown()


def test_blocking_call_is_interruptible(make_client, device_cs, client_kwargs):
    """A Python signal handler (Ctrl-C's, here SIGUSR1's) runs while a call blocks in native
    code, and its exception ends the call."""
    import os
    import signal

    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    c.connect()

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGUSR1, interrupt)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            c.receive_message(block=True)
        assert time.monotonic() - started < 5
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, old)
    c.send_message("still usable after the interrupt")


def test_send_message_to_output_checks_the_name(make_client, module_cs, client_kwargs):
    c = make_client(IoTHubModuleClient, "create_from_connection_string", module_cs, **client_kwargs)
    with pytest.raises(ValueError):
        c.send_message_to_output("x", "")
    with pytest.raises(TypeError):
        c.send_message_to_output("x", None)
