"""The send path's per-call work: a value that is not a ``Message`` is sent as ``Message(value)``
(azure-iot-device's rule) without that Python object being made, by every send call (sync,
asyncio, ``send_messages`` with any iterable); and what reaches the hub is the same either way."""

import asyncio

import pytest

import ironhub.models
from ironhub import IoTHubDeviceClient, Message
from ironhub import aio


class TaggedMessage(Message):
    """A subclass still goes through the attribute conversion (its properties are sent)."""

    def __init__(self, data):
        super().__init__(data, content_type="application/json")
        self.custom_properties["tag"] = "sub"


class ComputedContentType(Message):
    """A subclass may define properties: it is read through the attribute protocol."""

    @property
    def content_type(self):
        return "text/plain"

    @content_type.setter
    def content_type(self, value):
        pass


@pytest.fixture
def message_inits(monkeypatch):
    """Counts the ``Message`` objects made while the test runs."""
    made = []
    original = ironhub.models.Message.__init__

    def counting_init(self, *args, **kwargs):
        made.append(args[0] if args else kwargs.get("data"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(ironhub.models.Message, "__init__", counting_init)
    return made


def test_sync_sends_of_plain_values_make_no_message(make_client, hub, device_cs, unique_id, client_kwargs, message_inits):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    c.send_message("text")
    c.send_message(b"raw")
    c.send_message(42)
    c.send_message(None)
    c.send_messages(x for x in ("g1", 2.5, bytearray(b"g3")))  # any iterable, as before
    assert message_inits == []
    events = hub.telemetry(unique_id, 7)
    assert [e["body"] for e in events] == ["text", "raw", "42", "", "g1", "2.5", "g3"]
    assert all(e["properties"] == {} for e in events)


def test_asyncio_sends_of_plain_values_make_no_message(hub, device_cs, unique_id, client_kwargs, message_inits):
    async def main():
        c = aio.IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
        try:
            await asyncio.gather(*(c.send_message("a{}".format(i)) for i in range(3)))
            await c.send_messages(["b0", b"b1"])
        finally:
            await c.shutdown()

    asyncio.run(main())
    assert message_inits == []
    events = hub.telemetry(unique_id, 5)
    assert sorted(e["body"] for e in events[:3]) == ["a0", "a1", "a2"]
    assert [e["body"] for e in events[3:]] == ["b0", "b1"]


def test_messages_and_subclasses_keep_their_properties(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    m = Message("m", message_id="id-1")
    m.custom_properties["k"] = "v"
    s = Message("s")
    s.set_as_security_message()
    c.send_messages([m, TaggedMessage("{}"), "plain", ComputedContentType("c"), s])
    events = hub.telemetry(unique_id, 5)
    assert [e["body"] for e in events] == ["m", "{}", "plain", "c", "s"]
    assert events[3]["systemProperties"]["contentType"] == "text/plain"
    assert events[4]["systemProperties"]["interfaceId"] == ironhub.models._SECURITY_MESSAGE_INTERFACE_ID
    assert events[0]["properties"] == {"k": "v"}
    assert events[0]["systemProperties"]["messageId"] == "id-1"
    assert events[1]["properties"] == {"tag": "sub"}
    assert events[1]["systemProperties"]["contentType"] == "application/json"


def test_unencodable_values_are_refused_before_anything_is_sent(make_client, hub, device_cs, unique_id, client_kwargs):
    c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    with pytest.raises(ironhub.exceptions.ClientError) as err:
        c.send_message(object())
    assert isinstance(err.value.__cause__, TypeError)
    with pytest.raises(ironhub.exceptions.ClientError):
        c.send_messages(["fine", {"a": 1}])  # one bad value: none of the batch is queued
    with pytest.raises(TypeError):
        c.send_messages(5)  # not iterable, as `[... for m in 5]` refused it
    c.send_message("after")
    assert [e["body"] for e in hub.telemetry(unique_id, 1)] == ["after"]


def test_asyncio_sends_resolve_after_idle_gaps_and_on_a_new_loop(hub, device_cs, unique_id, client_kwargs):
    """The sends of a client on a loop are polled by one driver that ends when none is left and is
    started again by the next send; a new event loop gets a sink (and driver) of its own."""
    c = aio.IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)

    async def rounds(tag):
        for r in range(3):
            await asyncio.gather(*(c.send_message("{}{}-{}".format(tag, r, i)) for i in range(50)))
            await asyncio.sleep(0.1)  # the driver goes idle between rounds
        cancelled = asyncio.ensure_future(c.send_message("{}-cancelled".format(tag)))
        await asyncio.sleep(0)
        cancelled.cancel()  # an awaiter that gave up: the batch resolves the others regardless
        await asyncio.gather(*(c.send_message("{}x-{}".format(tag, i)) for i in range(10)))

    try:
        asyncio.run(rounds("a"))
        asyncio.run(rounds("b"))
    finally:
        asyncio.run(c.shutdown())
    bodies = [e["body"] for e in hub.telemetry(unique_id, 2 * 160, timeout_s=30)]
    for tag in "ab":
        expected = {"{}{}-{}".format(tag, r, i) for r in range(3) for i in range(50)}
        expected |= {"{}x-{}".format(tag, i) for i in range(10)}
        assert expected <= set(bodies)


EXIT_SCRIPT = """
import asyncio, sys
from ironhub import aio

async def main():
    c = aio.IoTHubDeviceClient.create_from_connection_string(
        sys.argv[1], server_verification_cert=open(sys.argv[2]).read(), mqtt_port=int(sys.argv[3]),
        max_queued_messages=5000)
    await c.connect()
    await asyncio.gather(*(c.send_message("g{}".format(i)) for i in range(1000)))
    await c.send_messages(["b{}".format(i) for i in range(1000)])
    if sys.argv[4] == "shutdown":
        await c.get_twin()
        await c.shutdown()

asyncio.run(main())  # and the process exits at once, while the core's threads still run
"""


def test_process_exits_cleanly_right_after_pipelined_sends(hub, unique_id, tmp_path):
    """The last results of a burst (or of an awaited `shutdown()`) reach the loop from a runtime
    thread; one still handing them over when the interpreter shuts down must not call into it
    (that aborted the process)."""
    import subprocess
    import sys

    script = tmp_path / "burst_then_exit.py"
    script.write_text(EXIT_SCRIPT)
    ca = tmp_path / "ca.pem"
    ca.write_text(hub.ca_pem)
    cs = hub.device_connection_string(unique_id)
    for ending in ("exit", "shutdown") * 4:  # racy before the fix: about 1 run in 4 aborted
        run = subprocess.run([sys.executable, str(script), cs, str(ca), str(hub.mqtt_port), ending],
                             cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, (ending, run.stderr[-2000:])
