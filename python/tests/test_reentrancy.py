"""Re-entrancy (issue 8, invariant 2) through the wheel: every client operation called from
inside every kind of handler (message, method request, desired patch, connection state change),
on several clients at once: set and clear handlers, send, twin get and patch, method response,
disconnect and shutdown. Every call must return (pytest-timeout bounds the test), and another
client keeps sending meanwhile: its sends are counted, so a pinned worker shows up."""

import threading
import time

import pytest

from ironhub import IoTHubDeviceClient, MethodResponse

CLIENTS = 4

pytestmark = pytest.mark.timeout(150)


class Reentrant:
    """One client whose handlers each run the whole operation set."""

    def __init__(self, client):
        self.client = client
        self.errors = []
        self.counts = {"message": 0, "method": 0, "patch": 0, "state": 0}
        self.disconnected_in_handler = threading.Event()
        self.shut_down_in_handler = threading.Event()
        client.on_message_received = self.on_message
        client.on_method_request_received = self.on_method
        client.on_twin_desired_properties_patch_received = self.on_patch
        client.on_connection_state_change = self.on_state

    def operations(self, where):
        c = self.client
        try:
            c.on_message_received = lambda m: None  # replace from inside a handler (issue 8's first hang)
            c.on_message_received = self.on_message
            c.on_connection_state_change = None
            c.on_connection_state_change = self.on_state
            c.send_message("from the {} handler".format(where))
            c.get_twin()
            c.patch_twin_reported_properties({"reentered": where})
        except Exception as e:  # reported by the test, not swallowed
            self.errors.append((where, repr(e)))

    def on_message(self, message):
        if message.data == b"disconnect":
            self.client.disconnect()
            self.disconnected_in_handler.set()
        elif message.data == b"shutdown":
            self.client.shutdown()
            self.shut_down_in_handler.set()
        else:
            self.operations("message")
        self.counts["message"] += 1

    def on_method(self, request):
        self.operations("method")
        self.client.send_method_response(MethodResponse.create_from_method_request(request, 200, {"ok": True}))
        self.counts["method"] += 1

    def on_patch(self, patch):
        self.operations("patch")
        self.counts["patch"] += 1

    def on_state(self):
        if self.client.connected and self.counts["state"] == 0:
            self.counts["state"] += 1
            self.operations("connection_state_change")


def wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_every_operation_from_every_handler_on_many_clients(hub, client_kwargs, unique_id):
    canary = IoTHubDeviceClient.create_from_connection_string(hub.device_connection_string(unique_id), **client_kwargs)
    canary.connect()
    sent, failed, stop = [time.monotonic()], [], threading.Event()

    def keep_sending():
        while not stop.is_set():
            try:
                canary.send_message("canary")
                sent.append(time.monotonic())
            except Exception as e:
                failed.append(repr(e))
            time.sleep(0.02)

    clients = []
    for i in range(CLIENTS):
        device = "{}-re{}".format(unique_id, i)
        c = IoTHubDeviceClient.create_from_connection_string(hub.device_connection_string(device), **client_kwargs)
        clients.append((device, Reentrant(c)))

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    try:

        def drive(device, r):
            hub.send_c2d(device, "hello")
            hub.patch_desired(device, {"round": 1})
            result = hub.invoke_method(device, "reenter", {}, response_timeout=60)
            assert result["httpStatus"] == 200 and result["body"]["status"] == 200, result
            wait_for(lambda: r.counts["message"] >= 1 and r.counts["patch"] >= 1)
            hub.send_c2d(device, "disconnect")
            assert r.disconnected_in_handler.wait(30)
            r.client.connect()
            hub.send_c2d(device, "shutdown")
            assert r.shut_down_in_handler.wait(30)

        driver_errors = []

        def guarded(device, r):
            try:
                drive(device, r)
            except BaseException as e:  # reported below, with the handlers' own errors
                driver_errors.append((device, repr(e)))

        drivers = [threading.Thread(target=guarded, args=pair) for pair in clients]
        for t in drivers:
            t.start()
        for t in drivers:
            t.join(120)
            assert not t.is_alive(), "a driver hung"
        sent.append(time.monotonic())
        sends_during, longest_gap = len(sent) - 2, max(b - a for a, b in zip(sent, sent[1:]))
    finally:
        stop.set()
        sender.join(30)
        canary.shutdown()

    handler_errors = [(device, r.errors) for device, r in clients if r.errors]
    assert handler_errors == [] and driver_errors == [], (handler_errors, driver_errors)
    for device, r in clients:
        assert r.counts["message"] >= 3 and r.counts["method"] == 1 and r.counts["patch"] >= 1, (device, r.counts)
    assert failed == []
    # Every canary send takes a round trip; a pinned worker would stall it for operation_timeout.
    assert sends_during >= 1 and longest_gap < 2.0, "the canary stalled: {} sends, longest gap {:.2f}s".format(
        sends_during, longest_gap
    )
