"""The API surface without a hub: names, exception tree, models, factory argument checking
(unknown keyword → TypeError, bad value → ValueError, as azure-iot-device), the 256 KB check
and the version."""

import base64
import re
import time
import urllib.parse
from pathlib import Path

import pytest

import ironhub
from ironhub import IoTHubDeviceClient, IoTHubModuleClient, Message, MethodRequest, MethodResponse, ProxyOptions, X509
from ironhub import exceptions
from hubctl import sas_token

KEY = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
DEVICE_CS = "HostName=hub.example.net;DeviceId=dev1;SharedAccessKey=" + KEY
MODULE_CS = DEVICE_CS + ";ModuleId=mod1"
# Unroutable on purpose: these clients are never connected.
LOCAL = {"auto_connect": False}


def make(cls, factory, *args, **kwargs):
    client = getattr(cls, factory)(*args, **kwargs)
    client.shutdown()
    return client


def test_version_matches_cargo():
    cargo = (Path(__file__).resolve().parents[2] / "Cargo.toml").read_text()
    version = re.search(r'\[workspace\.package\][^\[]*?version = "([^"]+)"', cargo).group(1)
    assert ironhub.__version__ == version


def test_public_names_and_docstrings():
    for name in ironhub.__all__:
        obj = getattr(ironhub, name)
        if name != "__version__":
            assert obj.__doc__, name
    for cls in (ironhub.IoTHubDeviceClient, ironhub.IoTHubModuleClient, ironhub.aio.IoTHubDeviceClient, ironhub.aio.IoTHubModuleClient):
        for attr in dir(cls):
            if not attr.startswith("_"):
                assert getattr(cls, attr).__doc__, "{}.{}".format(cls.__name__, attr)


def test_exception_tree_matches_azure():
    assert issubclass(exceptions.ConnectionFailedError, exceptions.ClientError)
    assert issubclass(exceptions.ConnectionDroppedError, exceptions.ClientError)
    assert issubclass(exceptions.NoConnectionError, exceptions.ClientError)
    assert issubclass(exceptions.CredentialError, exceptions.ClientError)
    for top in (exceptions.OperationCancelled, exceptions.OperationTimeout, exceptions.ServiceError, exceptions.ClientError):
        assert top.__bases__ == (Exception,)
    assert sorted(exceptions.__all__) == sorted(
        ["OperationCancelled", "OperationTimeout", "ServiceError", "ClientError", "ConnectionFailedError",
         "ConnectionDroppedError", "NoConnectionError", "CredentialError"]
    )


def test_message_model():
    m = Message("hello", message_id="m1", content_encoding="utf-8", content_type="application/json", output_name="o")
    assert (m.data, m.message_id, m.content_encoding, m.content_type, m.output_name) == ("hello", "m1", "utf-8", "application/json", "o")
    assert m.custom_properties == {} and m.input_name is None and m.ack is None and m.iothub_interface_id is None
    m.set_as_security_message()
    assert m.iothub_interface_id == "urn:azureiot:Security:SecurityAgent:1"
    with pytest.raises(AttributeError):
        m.iothub_interface_id = "x"
    assert str(m) == "hello"


def test_message_size_counts_payload_and_properties():
    m = Message("x" * 100)
    base = m.get_size()
    assert base >= 100
    m.custom_properties["key"] = "value"
    assert m.get_size() == base + len("key") + len("value")
    assert Message(b"\x00" * 262144).get_size() >= 262144


def test_method_models():
    req = MethodRequest("rid1", "reboot", {"delay": 1})
    assert (req.request_id, req.name, req.payload) == ("rid1", "reboot", {"delay": 1})
    with pytest.raises(AttributeError):
        req.name = "other"
    resp = MethodResponse.create_from_method_request(req, 200, {"ok": True})
    assert (resp.request_id, resp.status, resp.payload) == ("rid1", 200, {"ok": True})
    assert MethodResponse("r", 404).payload is None


def test_x509_and_proxy_models():
    x = X509("c.pem", "k.pem", "secret")
    assert (x.certificate_file, x.key_file, x.pass_phrase) == ("c.pem", "k.pem", "secret")
    assert "secret" not in repr(x)
    p = ProxyOptions("SOCKS5", "proxy.local", "1080", "u", "p")
    assert (p.proxy_type, p.proxy_address, p.proxy_port, p.proxy_username, p.proxy_password) == ("SOCKS5", "proxy.local", 1080, "u", "p")
    with pytest.raises(ValueError):
        ProxyOptions("FTP", "proxy.local", 21)


@pytest.mark.parametrize("cls", [IoTHubDeviceClient, IoTHubModuleClient])
def test_unknown_kwarg_is_type_error(cls):
    with pytest.raises(TypeError, match="Unsupported keyword argument: 'bogus'"):
        cls.create_from_connection_string(DEVICE_CS, bogus=1)


@pytest.mark.parametrize(
    "factory,args,refused",
    [
        ("create_from_connection_string", (DEVICE_CS,), "gateway_hostname"),
        ("create_from_sastoken", None, "sastoken_ttl"),
        ("create_from_x509_certificate", (X509("c", "k"), "h.example", "d"), "sastoken_ttl"),
    ],
)
def test_refused_kwargs_are_type_errors(factory, args, refused):
    if args is None:
        args = (sas_token("hub.example.net/devices/dev1", KEY),)
    with pytest.raises(TypeError):
        getattr(IoTHubDeviceClient, factory)(*args, **{refused: "x"})


def test_edge_factory_refuses_cert_and_gateway():
    for kw in ("server_verification_cert", "gateway_hostname"):
        with pytest.raises(TypeError):
            IoTHubModuleClient.create_from_edge_environment(**{kw: "x"})


def test_edge_environment_missing(monkeypatch):
    for var in ("IOTEDGE_IOTHUBHOSTNAME", "IOTEDGE_DEVICEID", "IOTEDGE_MODULEID", "IOTEDGE_GATEWAYHOSTNAME",
                "IOTEDGE_MODULEGENERATIONID", "IOTEDGE_WORKLOADURI", "IOTEDGE_APIVERSION",
                "EdgeHubConnectionString", "EdgeModuleCACertificateFile"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises((OSError, ValueError, exceptions.ClientError)):
        IoTHubModuleClient.create_from_edge_environment()


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        ({"keep_alive": 0}, ValueError),
        ({"keep_alive": 1741}, ValueError),
        ({"keep_alive": -5}, ValueError),
        ({"keep_alive": "abc"}, TypeError),
        ({"keep_alive": None}, TypeError),
        ({"connection_retry_interval": 0}, ValueError),
        ({"connection_retry_interval": "x"}, TypeError),
        ({"cipher": 5}, TypeError),
        ({"mqtt_port": 70000}, ValueError),
        ({"operation_timeout": 0}, ValueError),
        ({"proxy_options": "socks://x"}, TypeError),
    ],
)
def test_bad_kwarg_values(kwargs, exc):
    with pytest.raises(exc):
        IoTHubDeviceClient.create_from_connection_string(DEVICE_CS, **kwargs)


def test_good_kwargs_are_accepted():
    c = make(
        IoTHubDeviceClient,
        "create_from_connection_string",
        DEVICE_CS,
        server_verification_cert=None,
        websockets=True,
        cipher=["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"],
        product_info="my-product/1.0",
        proxy_options=ProxyOptions("HTTP", "proxy.local", 8080),
        sastoken_ttl=7200,
        keep_alive="30",
        auto_connect=False,
        connection_retry=False,
        connection_retry_interval=5,
        ensure_desired_properties=False,
    )
    assert c.connected is False


@pytest.mark.parametrize(
    "cs",
    [
        "",
        "garbage",
        "HostName=h;DeviceId=d",
        "HostName=h;DeviceId=d;SharedAccessKey=" + KEY + ";Bogus=1",
        "HostName=h;HostName=h;DeviceId=d;SharedAccessKey=" + KEY,
        "HostName=h;DeviceId=d;SharedAccessKey=!!notbase64!!",
        "HostName=h;DeviceId=d;SharedAccessKey=" + KEY + ";x509=true",
        "HostName=h;DeviceId=d;x509=true",
    ],
)
def test_bad_connection_strings_are_value_errors(cs):
    with pytest.raises(ValueError):
        IoTHubDeviceClient.create_from_connection_string(cs)


def test_errors_never_echo_the_key():
    cs = "HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0LWtleQ==notbase64"
    with pytest.raises(ValueError) as info:
        IoTHubDeviceClient.create_from_connection_string(cs)
    assert "c2VjcmV0LWtleQ" not in str(info.value)


def test_sastoken_factory_checks_the_token():
    with pytest.raises(ValueError):
        IoTHubDeviceClient.create_from_sastoken("not a token")
    expired = "SharedAccessSignature sr={}&sig=abc&se={}".format(
        urllib.parse.quote("hub.example.net/devices/dev1", safe=""), int(time.time()) - 10
    )
    with pytest.raises(ValueError):
        IoTHubDeviceClient.create_from_sastoken(expired)
    module_token = sas_token("hub.example.net/devices/dev1/modules/m1", KEY)
    with pytest.raises(ValueError):
        IoTHubDeviceClient.create_from_sastoken(module_token)
    with pytest.raises(ValueError):
        IoTHubModuleClient.create_from_sastoken(sas_token("hub.example.net/devices/dev1", KEY))
    c = make(IoTHubModuleClient, "create_from_sastoken", module_token)
    assert isinstance(c, IoTHubModuleClient)


def test_symmetric_key_factory():
    with pytest.raises(ValueError):
        IoTHubDeviceClient.create_from_symmetric_key("!!bad!!", "hub.example.net", "dev1")
    with pytest.raises(ValueError):
        IoTHubDeviceClient.create_from_symmetric_key(KEY, "", "dev1")
    assert not hasattr(IoTHubModuleClient, "create_from_symmetric_key")
    make(IoTHubDeviceClient, "create_from_symmetric_key", KEY, "hub.example.net", "dev1", auto_connect=False)


def test_x509_factory_reads_files_now(tmp_path):
    with pytest.raises(ValueError):
        IoTHubDeviceClient.create_from_x509_certificate(X509(str(tmp_path / "nope.pem"), str(tmp_path / "nope.key")), "h.example", "d")
    with pytest.raises(TypeError):
        IoTHubModuleClient.create_from_x509_certificate(X509("c", "k"), "h.example", "d")  # module_id missing


def test_oversized_message_is_value_error_before_any_network():
    c = IoTHubDeviceClient.create_from_connection_string(DEVICE_CS, auto_connect=False)
    try:
        with pytest.raises(ValueError):
            c.send_message(Message(b"x" * (262144 + 1)))
        with pytest.raises(ValueError):
            c.send_message("y" * 300000)  # a non-Message is wrapped, then checked
    finally:
        c.shutdown()


def test_no_connection_error_when_auto_connect_off():
    c = IoTHubDeviceClient.create_from_connection_string(DEVICE_CS, auto_connect=False)
    try:
        with pytest.raises(exceptions.NoConnectionError):
            c.send_message("hi")
        with pytest.raises(exceptions.NoConnectionError):
            c.get_twin()
    finally:
        c.shutdown()


def test_use_after_shutdown_is_client_error():
    c = IoTHubDeviceClient.create_from_connection_string(DEVICE_CS, auto_connect=False)
    c.shutdown()
    for call in (c.connect, lambda: c.send_message("x"), c.get_twin, lambda: c.patch_twin_reported_properties({"a": 1}),
                 lambda: c.receive_message(block=False), lambda: c.send_method_response(MethodResponse("r", 200))):
        with pytest.raises(exceptions.ClientError):
            call()
    with pytest.raises(exceptions.ClientError):
        c.on_message_received = lambda m: None


def test_handler_must_be_callable():
    c = IoTHubDeviceClient.create_from_connection_string(DEVICE_CS, auto_connect=False)
    try:
        with pytest.raises(TypeError):
            c.on_connection_state_change = 42
        c.on_connection_state_change = lambda: None
        assert callable(c.on_connection_state_change)
        c.on_connection_state_change = None
        assert c.on_connection_state_change is None
    finally:
        c.shutdown()


def test_bad_message_data_type():
    c = IoTHubDeviceClient.create_from_connection_string(DEVICE_CS, auto_connect=False)
    try:
        # azure-iot-device: ClientError caused by the payload's TypeError.
        with pytest.raises(exceptions.ClientError) as info:
            c.send_message(Message({"a": 1}))
        assert isinstance(info.value.__cause__, TypeError)
    finally:
        c.shutdown()
