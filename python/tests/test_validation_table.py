"""The cross-surface validation table (tests/validation_cases.json) through the Python API: each
value goes where a Python user gives it and must be accepted or refused exactly as the table
says (and as the Rust, C and Go surfaces do). "invalid_argument" is ValueError, or the exact
exception the table pins for Python (TypeError where azure-iot-device's keyword rules say so)."""

import json
from pathlib import Path

import pytest

from ironhub import IoTHubDeviceClient, Message, ProxyOptions, X509
from ironhub.exceptions import NoConnectionError

TABLE = json.loads((Path(__file__).resolve().parents[2] / "tests" / "validation_cases.json").read_text())
OFFLINE_CS = "HostName=127.0.0.1;DeviceId=validation;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg=="


def send_offline(message):
    """Validation comes before the network: an accepted message ends in NoConnectionError."""
    client = IoTHubDeviceClient.create_from_connection_string(OFFLINE_CS, auto_connect=False)
    try:
        client.send_message(message)
    except NoConnectionError:
        pass
    finally:
        client.shutdown()


def apply(rule, value):
    if rule == "expiry_time_utc":
        m = Message("x")
        m.expiry_time_utc = value
        send_offline(m)
    elif rule == "property_key":
        m = Message("x")
        m.custom_properties[value] = "v"
        send_offline(m)
    elif rule == "proxy_type":
        proxy = ProxyOptions(value, "127.0.0.1", 3128)
        IoTHubDeviceClient.create_from_connection_string(OFFLINE_CS, proxy_options=proxy, auto_connect=False).shutdown()
    elif rule == "x509_sastoken_ttl":
        x509 = X509("/nonexistent/cert.pem", "/nonexistent/key.pem")
        IoTHubDeviceClient.create_from_x509_certificate(x509, "hub.example", "dev", sastoken_ttl=int(value))
    elif rule == "sastoken_sastoken_ttl":
        IoTHubDeviceClient.create_from_sastoken("SharedAccessSignature sr=x", sastoken_ttl=int(value))
    elif rule == "keep_alive":
        IoTHubDeviceClient.create_from_connection_string(OFFLINE_CS, keep_alive=int(value), auto_connect=False).shutdown()
    elif rule == "cipher":
        IoTHubDeviceClient.create_from_connection_string(OFFLINE_CS, cipher=value, auto_connect=False).shutdown()
    elif rule in ("max_queued_messages", "max_queued_bytes"):
        kwargs = {rule: int(value)}
        IoTHubDeviceClient.create_from_connection_string(OFFLINE_CS, auto_connect=False, **kwargs).shutdown()
    else:
        raise AssertionError("unknown rule " + rule)


@pytest.mark.parametrize("case", TABLE["cases"], ids=lambda c: "{}={!r}".format(c["rule"], c["value"]))
def test_case(case):
    if case["expect"] == "ok":
        apply(case["rule"], case["value"])
        return
    assert case["expect"] == "invalid_argument"
    expected = {"TypeError": TypeError}.get(case.get("python", ""), ValueError)
    with pytest.raises(expected) as info:
        apply(case["rule"], case["value"])
    assert type(info.value) is expected
    if "contains" in case:
        assert case["contains"] in str(info.value)
