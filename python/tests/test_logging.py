"""Rust log records reach Python's `logging` under the `ironhub` logger, without secrets."""

import logging

import ironhub

from ironhub import IoTHubDeviceClient
from hubctl import parse_connection_string


def test_rust_logs_reach_python_logging(caplog, hub, device_cs, client_kwargs):
    caplog.set_level(logging.DEBUG)
    ironhub.reset_log_cache()  # levels are cached on first use
    c = IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
    try:
        c.connect()
        c.send_message("logged")
    finally:
        c.shutdown()
    ours = [r for r in caplog.records if r.name == "ironhub" or r.name.startswith("ironhub.")]
    assert ours, "no record from the Rust core reached Python logging"
    key = parse_connection_string(device_cs)["SharedAccessKey"]
    for r in caplog.records:
        text = r.getMessage()
        assert key not in text
        assert "sig=" not in text
