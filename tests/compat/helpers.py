"""Test helpers: unique identities, the emulator's control API (through hubctl), and
waiting on SDK handler callbacks."""

import base64
import os
import queue
import time
import uuid

from azure.iot.device import X509, IoTHubDeviceClient, IoTHubModuleClient

WAIT_SECONDS = 15


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_key():
    return base64.b64encode(os.urandom(32)).decode()


def control(emulator, method, path, json=None, params=None):
    """Calls the emulator's control API (`/emulator/...`) with a service token."""
    response = emulator.request(
        method, "/emulator/" + path.lstrip("/"), body=json, timeout=WAIT_SECONDS + 5, **(params or {})
    )
    response.raise_for_status()
    return response.json()


def wait_events(emulator, device_id, module_id=None, after=0, count=1):
    """At least `count` telemetry events of an identity, long-polling the event log."""
    deadline = time.monotonic() + WAIT_SECONDS
    params = {"deviceId": device_id, "after": after, "timeoutSeconds": 2}
    if module_id:
        params["moduleId"] = module_id
    events = []
    while time.monotonic() < deadline:
        events = control(emulator, "GET", "events", params=params)["events"]
        if module_id is None:
            events = [e for e in events if e["moduleId"] is None]
        if len(events) >= count:
            return events
    raise AssertionError(f"only {len(events)} of {count} events from {device_id}/{module_id}")


def create_device(registry, emulator, device_id=None):
    """A SAS device; returns (device_id, device connection string)."""
    device_id = device_id or unique("dev")
    key = new_key()
    registry.create_device_with_sas(device_id, key, new_key(), "enabled")
    return device_id, f"HostName={emulator.hostname};DeviceId={device_id};SharedAccessKey={key}"


def create_module(registry, emulator, device_id, module_id=None):
    module_id = module_id or unique("mod")
    key = new_key()
    registry.create_module_with_sas(device_id, module_id, None, key, new_key())
    cs = f"HostName={emulator.hostname};DeviceId={device_id};ModuleId={module_id};SharedAccessKey={key}"
    return module_id, cs


def device_client(clients, emulator, connection_string, **kwargs):
    client = IoTHubDeviceClient.create_from_connection_string(
        connection_string, server_verification_cert=emulator.ca_pem, **kwargs
    )
    clients.append(client)
    return client


def x509_client(clients, emulator, device_id, cert_file, key_file, pass_phrase=None):
    """An X.509 device client (no retries, so a refused certificate fails the first connect)."""
    client = IoTHubDeviceClient.create_from_x509_certificate(
        x509=X509(cert_file=str(cert_file), key_file=str(key_file), pass_phrase=pass_phrase),
        hostname=emulator.hostname,
        device_id=device_id,
        server_verification_cert=emulator.ca_pem,
        connection_retry=False,
    )
    clients.append(client)
    return client


def module_client(clients, emulator, connection_string, **kwargs):
    client = IoTHubModuleClient.create_from_connection_string(
        connection_string, server_verification_cert=emulator.ca_pem, **kwargs
    )
    clients.append(client)
    return client


class Inbox:
    """A handler that records what it is called with, and a bounded wait for it."""

    def __init__(self):
        self._queue = queue.Queue()

    def __call__(self, item):
        self._queue.put(item)

    def get(self, timeout=WAIT_SECONDS):
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the handler was not called within {timeout}s") from None

    def empty_for(self, seconds):
        try:
            item = self._queue.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected handler call with {item!r}")


def decoded_body(event):
    return base64.b64decode(event["body"]).decode("utf-8")
