"""Fixtures of the ironhub Python suite: one emulator per session on ephemeral ports
(started by `hubctl.Hub`), unique identities per test, and client factories that point
ironhub at the emulator through its ironhub-only `mqtt_port`/`https_port` keywords."""

import itertools
import os
import socket
import sys
import threading
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support"))

import hubctl  # noqa: E402
from hubctl import Hub  # noqa: E402

_counter = itertools.count()


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """The emulator, started once for the session on ephemeral ports."""
    hubctl.ensure_emulator_binary()
    h = Hub(tmp_path_factory.mktemp("hub"))
    yield h
    h.stop()


@pytest.fixture
def unique_id(request):
    """A device id unique to this test (readable in the emulator's log)."""
    name = request.node.name.replace("[", "-").replace("]", "")[:40]
    return "{}-{}-{}".format(name, next(_counter), uuid.uuid4().hex[:6])


@pytest.fixture
def client_kwargs(hub):
    """The keywords that point an ironhub client at the emulator."""
    return {
        "server_verification_cert": hub.ca_pem,
        "mqtt_port": hub.mqtt_port,
        "https_port": hub.https_port,
        "operation_timeout": 20,
    }


@pytest.fixture
def device_cs(hub, unique_id):
    """A freshly registered device's connection string."""
    return hub.device_connection_string(unique_id)


@pytest.fixture
def module_cs(hub, unique_id):
    """A freshly registered module's connection string (device `unique_id`, module `mod1`)."""
    hub.create_device(unique_id)
    return hub.device_connection_string(unique_id, "mod1")


@pytest.fixture
def make_client():
    """Builds clients with any factory and shuts every one of them down after the test."""
    made = []

    def make(cls, factory="create_from_connection_string", *args, **kwargs):
        client = getattr(cls, factory)(*args, **kwargs)
        made.append(client)
        return client

    yield make
    for c in made:
        try:
            c.shutdown()
        except Exception:
            pass


if os.environ.get("IRONHUB_TEST_LOG"):
    import logging

    logging.basicConfig(level=logging.DEBUG)


@pytest.fixture(scope="session")
def privileged_hub(tmp_path_factory):
    """An emulator on the real ports 8883/443, which the official SDK insists on. Another
    suite uses those ports too: an exclusive lock on /tmp/ironhub-privileged-ports.lock is held
    for the whole session."""
    with hubctl.privileged_ports():
        h = hubctl.start_privileged_hub(tmp_path_factory.mktemp("privileged-hub"))
        try:
            yield h
        finally:
            h.stop()


@pytest.fixture
def silent_hub_port():
    """A loopback port whose listener accepts connections and never answers (a stalled hub)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield server.getsockname()[1]
    stop.set()
    t.join(5)
    for s in accepted:
        s.close()
    server.close()
