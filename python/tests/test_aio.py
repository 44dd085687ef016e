"""The asyncio clients (`ironhub.aio`) against the emulator: awaitable operations, coroutine
and plain handlers, pipelined sends, errors and use after shutdown."""

import asyncio
import time

import pytest

import ironhub.aio
from ironhub import exceptions
from ironhub.aio import IoTHubDeviceClient, IoTHubModuleClient, Message, MethodResponse

WAIT = 15


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def until(predicate, timeout=WAIT):
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


def test_aio_surface_mirrors_azure():
    from azure.iot.device import aio as azure_aio

    for name in ("IoTHubDeviceClient", "IoTHubModuleClient"):
        ours, theirs = getattr(ironhub.aio, name), getattr(azure_aio, name)
        public = {n for n in dir(theirs) if not n.startswith("_")}
        # Blob upload is optional for ironhub (python-surface.md).
        public -= {"get_storage_info_for_blob", "notify_blob_upload_status"}
        missing = {n for n in public if not hasattr(ours, n)}
        assert not missing, missing
        for n in public:
            if asyncio.iscoroutinefunction(getattr(theirs, n)):
                assert asyncio.iscoroutinefunction(getattr(ours, n)), n


def test_sync_surface_mirrors_azure():
    import azure.iot.device as azure
    import ironhub

    for name in ("IoTHubDeviceClient", "IoTHubModuleClient"):
        ours, theirs = getattr(ironhub, name), getattr(azure, name)
        public = {n for n in dir(theirs) if not n.startswith("_")}
        public -= {"get_storage_info_for_blob", "notify_blob_upload_status"}
        assert not {n for n in public if not hasattr(ours, n)}


def test_aio_telemetry_twin_and_shutdown(hub, device_cs, unique_id, client_kwargs):
    async def scenario():
        c = IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
        await c.connect()
        assert c.connected
        m = Message("async hello")
        m.custom_properties["via"] = "aio"
        await c.send_message(m)
        await c.patch_twin_reported_properties({"async": True})
        twin = await c.get_twin()
        assert twin["reported"]["async"] is True
        await c.disconnect()
        assert not c.connected
        await c.shutdown()
        with pytest.raises(exceptions.ClientError):
            await c.send_message("late")

    run(scenario())
    (event,) = hub.telemetry(unique_id, 1)
    assert event["body"] == "async hello" and event["properties"]["via"] == "aio"


def test_aio_pipelined_sends(hub, device_cs, unique_id, client_kwargs):
    async def scenario():
        c = IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
        try:
            await c.connect()
            await asyncio.gather(*(c.send_message("g{}".format(i)) for i in range(25)))
            await c.send_messages([Message("b{}".format(i)) for i in range(25)])
        finally:
            await c.shutdown()

    run(scenario())
    bodies = [e["body"] for e in hub.telemetry(unique_id, 50)]
    assert bodies[:25] == ["g{}".format(i) for i in range(25)]  # queued in call order
    assert bodies[25:] == ["b{}".format(i) for i in range(25)]


def test_aio_coroutine_method_handler(hub, device_cs, unique_id, client_kwargs):
    async def scenario():
        c = IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
        loop = asyncio.get_running_loop()
        seen_loops = []

        async def on_method(req):
            seen_loops.append(asyncio.get_running_loop())
            await c.send_method_response(MethodResponse.create_from_method_request(req, 200, {"got": req.payload}))

        c.on_method_request_received = on_method
        try:
            # Invoked at once: the setter returned before the subscription was made, so the
            # service asks the hub to wait for the device (connectTimeoutInSeconds), as an app
            # calling a device that is just coming online does.
            result = await loop.run_in_executor(None, lambda: hub.invoke_method(unique_id, "m", 5, connect_timeout=20))
            assert result["body"] == {"status": 200, "payload": {"got": 5}}
            assert seen_loops == [loop]
        finally:
            await c.shutdown()

    run(scenario())


def test_aio_c2d_plain_handler_and_bad_credentials(hub, device_cs, unique_id, client_kwargs):
    async def scenario():
        c = IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
        got = []
        c.on_message_received = got.append
        try:
            await asyncio.get_running_loop().run_in_executor(None, hub.send_c2d, unique_id, "c2d async")
            assert await until(lambda: got)
            assert got[0].data == b"c2d async"
        finally:
            await c.shutdown()
        bad = "HostName={};DeviceId={};SharedAccessKey=YmFkYmFkYmFkYmFkYmFkYmFkYmFkYmFkYmFkYmFkYmE=".format(hub.hostname, unique_id)
        c2 = IoTHubDeviceClient.create_from_connection_string(bad, **client_kwargs)
        try:
            with pytest.raises(exceptions.CredentialError):
                await c2.connect()
        finally:
            await c2.shutdown()

    run(scenario())


def test_aio_module_receive_on_input(hub, module_cs, unique_id, client_kwargs):
    async def scenario():
        c = IoTHubModuleClient.create_from_connection_string(module_cs, **client_kwargs)
        try:
            waiter = asyncio.ensure_future(c.receive_message_on_input("in1"))
            await asyncio.sleep(0.5)
            await asyncio.get_running_loop().run_in_executor(None, hub.send_input, unique_id, "mod1", "in1", "async input")
            msg = await asyncio.wait_for(waiter, WAIT)
            assert msg.data == b"async input" and msg.input_name == "in1"
        finally:
            await c.shutdown()

    run(scenario())


def test_aio_desired_patch_coroutine_handler(hub, device_cs, unique_id, client_kwargs):
    async def scenario():
        c = IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
        patches = []

        async def on_patch(patch):
            patches.append(patch)

        c.on_twin_desired_properties_patch_received = on_patch
        try:
            await asyncio.get_running_loop().run_in_executor(None, hub.patch_desired, unique_id, {"x": 1})
            assert await until(lambda: any(p.get("x") == 1 for p in patches))
        finally:
            await c.shutdown()

    run(scenario())


def test_aio_coroutine_handler_exception_is_logged(hub, device_cs, unique_id, client_kwargs, caplog):
    import logging

    async def scenario():
        c = IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
        got = []

        async def on_message(msg):
            got.append(msg.data)
            if msg.data == b"boom":
                raise RuntimeError("async handler failure on purpose")

        c.on_message_received = on_message
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, hub.send_c2d, unique_id, "boom")
            await loop.run_in_executor(None, hub.send_c2d, unique_id, "next")
            assert await until(lambda: got == [b"boom", b"next"])
            # Setting a handler from the loop while coroutine handlers exist must not deadlock.
            c.on_message_received = None
        finally:
            await c.shutdown()

    with caplog.at_level(logging.ERROR, logger="ironhub"):
        run(scenario())
    assert any(r.exc_info and "async handler failure on purpose" in str(r.exc_info[1]) for r in caplog.records)


def test_aio_deprecated_receive_apis(hub, device_cs, unique_id, client_kwargs):
    async def scenario():
        c = IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
        loop = asyncio.get_running_loop()
        try:
            c2d_waiter = asyncio.ensure_future(c.receive_message())
            method_waiter = asyncio.ensure_future(c.receive_method_request("ping"))
            patch_waiter = asyncio.ensure_future(c.receive_twin_desired_properties_patch())
            await asyncio.sleep(1.0)  # the three inboxes subscribe (auto-connect)
            await loop.run_in_executor(None, hub.send_c2d, unique_id, "c2d for inbox")
            await loop.run_in_executor(None, hub.patch_desired, unique_id, {"inbox": 1})
            invoke = loop.run_in_executor(None, lambda: hub.invoke_method(unique_id, "ping", 1))
            msg = await asyncio.wait_for(c2d_waiter, WAIT)
            req = await asyncio.wait_for(method_waiter, WAIT)
            await c.send_method_response(MethodResponse(req.request_id, 200, "pong"))
            patch = await asyncio.wait_for(patch_waiter, WAIT)
            assert msg.data == b"c2d for inbox"
            assert (await invoke)["body"] == {"status": 200, "payload": "pong"}
            assert "$version" in patch
        finally:
            await c.shutdown()

    run(scenario())


def test_aio_handler_setter_returns_at_once_and_the_loop_ticks_over_a_stalled_link(device_cs, client_kwargs, silent_hub_port):
    """The setter records the handler and returns; the subscription (here: a connect to a hub
    that accepts and never answers) goes on in the background, its failure reported as a
    background exception, while the event loop keeps running."""
    kw = dict(client_kwargs, mqtt_port=silent_hub_port, operation_timeout=2, connection_retry=False)

    async def scenario():
        c = IoTHubDeviceClient.create_from_connection_string(device_cs, **kw)
        background = []
        c.on_background_exception = background.append
        ticks = []

        async def ticker():
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticking = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.05)
        try:
            started = time.monotonic()
            c.on_method_request_received = lambda req: None
            c.on_message_received = lambda msg: None
            setter_took = time.monotonic() - started
            assert c.on_method_request_received is not None
            # The next awaited call completes only after the subscriptions (failed: bounded by
            # operation_timeout) and itself fails the same way.
            with pytest.raises((exceptions.OperationTimeout, exceptions.ConnectionFailedError)):
                await c.get_twin()
            assert await until(lambda: len(background) >= 1)
        finally:
            ticking.cancel()
            await c.shutdown()
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        return setter_took, max(gaps), background

    setter_took, longest_gap, background = run(scenario())
    assert setter_took < 0.2, "the setters blocked the loop for {:.2f} s".format(setter_took)
    assert longest_gap < 0.5, "the loop stalled for {:.2f} s".format(longest_gap)
    assert all(isinstance(e, exceptions.ClientError) or isinstance(e, exceptions.OperationTimeout) for e in background)


def test_aio_handler_set_then_method_invoked_at_once_is_answered(hub, device_cs, unique_id, client_kwargs):
    """Set a handler, then (the setter having returned at once) a method is invoked at once: the
    handler was recorded before the setter returned, so the request finds it. The next awaited
    call completes only once the subscription is made: a method invoked after it with no
    connectTimeout at all is answered too."""

    async def scenario():
        c = IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
        loop = asyncio.get_running_loop()
        answered = []

        def on_method(req):
            answered.append(req.name)
            asyncio.run_coroutine_threadsafe(
                c.send_method_response(MethodResponse.create_from_method_request(req, 200, req.name)), loop
            )

        try:
            c.on_method_request_received = on_method
            first = await loop.run_in_executor(None, lambda: hub.invoke_method(unique_id, "first", connect_timeout=20))
            assert first["body"] == {"status": 200, "payload": "first"}, first
            # A fresh subscription (clear, set again), then any awaited call, then no grace at all.
            for i in range(5):
                c.on_method_request_received = None
                c.on_method_request_received = on_method
                await c.patch_twin_reported_properties({"round": i})
                again = await loop.run_in_executor(None, lambda: hub.invoke_method(unique_id, "again{}".format(i)))
                assert again["body"] == {"status": 200, "payload": "again{}".format(i)}, again
        finally:
            await c.shutdown()
        return answered

    assert run(scenario()) == ["first"] + ["again{}".format(i) for i in range(5)]
