"""The ironhub-only queue bound keywords (`max_queued_messages`, `max_queued_bytes`, issue 9):
every factory of the sync and aio clients takes them with the core's validation, a pipelined aio
burst larger than the default bound succeeds entirely once the bound is raised (each message
recorded once by the hub), and with the link held (a stalling relay) the send past the default
bound is a ClientError at once."""

import asyncio
import socket
import threading
import time

import pytest

import ironhub
import ironhub.aio
from ironhub import X509, exceptions

OFFLINE_CS = "HostName=127.0.0.1;DeviceId=bounds;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg=="
MODULE_CS = OFFLINE_CS + ";ModuleId=m1"
KEY = "MDEyMzQ1Njc4OWFiY2RlZg=="
BURST = 3000
DEFAULT_BOUND = 1000  # the core's default max_queued_messages


def factories():
    """(name, call with keywords) for every factory of the four client classes."""
    out = []
    for pkg in (ironhub, ironhub.aio):
        dev, mod = pkg.IoTHubDeviceClient, pkg.IoTHubModuleClient
        tag = pkg.__name__
        out += [
            (tag + ".device.connection_string",
             lambda kw, c=dev: c.create_from_connection_string(OFFLINE_CS, auto_connect=False, **kw)),
            (tag + ".device.sastoken",
             lambda kw, c=dev: c.create_from_sastoken("SharedAccessSignature sr=x", auto_connect=False, **kw)),
            (tag + ".device.symmetric_key",
             lambda kw, c=dev: c.create_from_symmetric_key(KEY, "127.0.0.1", "bounds", auto_connect=False, **kw)),
            (tag + ".device.x509",
             lambda kw, c=dev: c.create_from_x509_certificate(
                 X509("/nonexistent/c.pem", "/nonexistent/k.pem"), "127.0.0.1", "bounds", auto_connect=False, **kw)),
            (tag + ".module.connection_string",
             lambda kw, c=mod: c.create_from_connection_string(MODULE_CS, auto_connect=False, **kw)),
            (tag + ".module.sastoken",
             lambda kw, c=mod: c.create_from_sastoken("SharedAccessSignature sr=x", auto_connect=False, **kw)),
            (tag + ".module.x509",
             lambda kw, c=mod: c.create_from_x509_certificate(
                 X509("/nonexistent/c.pem", "/nonexistent/k.pem"), "127.0.0.1", "bounds", "m1",
                 auto_connect=False, **kw)),
            (tag + ".module.edge_environment",
             lambda kw, c=mod: c.create_from_edge_environment(auto_connect=False, **kw)),
        ]
    return out


FACTORIES = factories()


@pytest.mark.parametrize("name", ["max_queued_messages", "max_queued_bytes"])
@pytest.mark.parametrize("bad,error", [
    (True, TypeError), (False, TypeError), ("100", TypeError), (100.0, TypeError), (None, TypeError),
    (0, ValueError), (-5, ValueError),
])
@pytest.mark.parametrize("factory", [f for _, f in FACTORIES], ids=[n for n, _ in FACTORIES])
def test_bad_values_are_refused_by_every_factory(factory, name, bad, error):
    with pytest.raises(error, match=name):
        factory({name: bad})


def test_good_values_are_accepted():
    client = ironhub.IoTHubDeviceClient.create_from_connection_string(
        OFFLINE_CS, auto_connect=False, max_queued_messages=20000, max_queued_bytes=64 * 1024 * 1024
    )
    client.shutdown()


async def burst(client):
    """BURST sends queued at once (pipelined); the outcome of each, exceptions included."""
    await client.connect()
    try:
        return await asyncio.gather(
            *(client.send_message("burst-{}".format(i)) for i in range(BURST)), return_exceptions=True
        )
    finally:
        await client.shutdown()


def test_aio_burst_past_the_default_bound_succeeds_with_the_bound_raised(hub, device_cs, unique_id, client_kwargs):
    client = ironhub.aio.IoTHubDeviceClient.create_from_connection_string(
        device_cs, max_queued_messages=5000, **client_kwargs
    )
    outcomes = asyncio.run(asyncio.wait_for(burst(client), 120))
    failures = [o for o in outcomes if o is not None]
    assert failures == []
    bodies = [e["body"] for e in hub.telemetry(unique_id, BURST, timeout_s=60)]
    assert sorted(bodies) == sorted("burst-{}".format(i) for i in range(BURST))  # each exactly once


class StallingRelay:
    """A real TCP relay on a loopback port in front of the hub's MQTT port (TLS passes through
    untouched). `stall()` stops moving bytes both ways with every socket kept open (a frozen
    path: nothing is lost, no PUBACK comes back); `heal()` moves them again."""

    def __init__(self, upstream_port):
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._moving = threading.Event()
        self._moving.set()
        self._sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self):
        self._moving.clear()

    def heal(self):
        self._moving.set()

    def close(self):
        self._moving.set()
        for s in [self._listener] + self._sockets:
            s.close()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                self._moving.wait()
                data = src.recv(65536)
                if not data:
                    break
                self._moving.wait()  # a stall that began during the read holds these bytes
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


@pytest.fixture
def relay(hub):
    r = StallingRelay(hub.mqtt_port)
    yield r
    r.close()


def test_a_send_past_the_default_bound_is_refused_at_once_while_the_link_is_held(
    hub, device_cs, unique_id, client_kwargs, relay
):
    """The bound is reached by construction: with the link held (no PUBACK comes, nothing drains),
    exactly the default 1,000 sends are accepted and the next one is a ClientError at once; once
    released, each accepted message reaches the hub exactly once and the refused one never."""
    client = ironhub.aio.IoTHubDeviceClient.create_from_connection_string(
        device_cs, **dict(client_kwargs, mqtt_port=relay.port)
    )

    async def run():
        await client.connect()
        relay.stall()
        try:
            # Tasks start in creation order, so the last one finds the other 1,000 queued.
            accepted = [asyncio.ensure_future(client.send_message("held-{}".format(i))) for i in range(DEFAULT_BOUND)]
            refused = asyncio.ensure_future(client.send_message("refused"))
            started = time.monotonic()
            with pytest.raises(exceptions.ClientError, match="max_queued_messages"):
                await asyncio.wait_for(refused, 10)
            took = time.monotonic() - started
            assert not any(t.done() for t in accepted), "a held send completed"
            relay.heal()
            outcomes = await asyncio.gather(*accepted, return_exceptions=True)
            return took, outcomes
        finally:
            relay.heal()
            await client.shutdown()

    took, outcomes = asyncio.run(asyncio.wait_for(run(), 120))
    # operation_timeout is 20 s: a refusal that waited for room would take about that long.
    assert took < 2, took
    assert [o for o in outcomes if o is not None] == []
    bodies = sorted(e["body"] for e in hub.telemetry(unique_id, DEFAULT_BOUND, timeout_s=60))
    assert bodies == sorted("held-{}".format(i) for i in range(DEFAULT_BOUND))  # once each, "refused" never
