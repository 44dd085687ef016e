"""The ironhub-only queue bound keywords (`max_queued_messages`, `max_queued_bytes`, issue 9):
every factory of the sync and aio clients takes them with the core's validation, a pipelined aio
burst larger than the default bound succeeds entirely once the bound is raised (each message
recorded once by the hub), and with the default bound the excess is a ClientError at once."""

import asyncio
import time

import pytest

import ironhub
import ironhub.aio
from ironhub import X509, exceptions

OFFLINE_CS = "HostName=127.0.0.1;DeviceId=bounds;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg=="
MODULE_CS = OFFLINE_CS + ";ModuleId=m1"
KEY = "MDEyMzQ1Njc4OWFiY2RlZg=="
BURST = 3000


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


def test_aio_burst_past_the_default_bound_fails_at_once_with_client_error(hub, device_cs, unique_id, client_kwargs):
    client = ironhub.aio.IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
    started = time.monotonic()
    outcomes = asyncio.run(asyncio.wait_for(burst(client), 120))
    took = time.monotonic() - started
    refused = [o for o in outcomes if o is not None]
    sent = [i for i, o in enumerate(outcomes) if o is None]
    assert refused, "a burst of 3,000 never reached the default bound of 1,000"
    for e in refused:
        assert isinstance(e, exceptions.ClientError) and "max_queued_messages" in str(e), repr(e)
    # operation_timeout is 20 s: refusals that waited for room would take about that long.
    assert took < 15, took
    bodies = sorted(e["body"] for e in hub.telemetry(unique_id, len(sent), timeout_s=60))
    assert bodies == sorted("burst-{}".format(i) for i in sent)  # the refused never reached the hub
