"""The official Event Hubs consumer (azure-eventhub, its pure-Python AMQP stack) reads device and
module telemetry from the emulator's Event Hub-compatible endpoint (AMQP over TLS on 5671, with the
`eventHubConnectionString` of hub.json), as a real backend reads IoT Hub: sent by the official
azure-iot-device and by ironhub, in order per partition, with every property, from the earliest
event and from a sequence number, and once per consumer group."""

import threading
import time
from collections import defaultdict

import ironhub
from azure.eventhub import EventHubConsumerClient, TransportType
from azure.iot.device import Message

from helpers import control, create_device, create_module, device_client, unique

PROPS = {"kind": "reading", "ünï": "välue & co"}


def consumer(emulator, group="$Default", **kwargs):
    return EventHubConsumerClient.from_connection_string(
        emulator.event_hub_connection_string, consumer_group=group, connection_verify=emulator.ca_file, **kwargs
    )


def receive(emulator, ours, want, group="$Default", timeout=60, **receive_kwargs):
    """Receives until `want` of our events (device id in `ours`) arrived; (partition, event) pairs."""
    got = []
    done = threading.Event()
    client = consumer(emulator, group, **receive_kwargs.pop("client_kwargs", {}))

    def on_event(ctx, event):
        if event is None:
            return
        if event.system_properties.get(b"iothub-connection-device-id", b"").decode() in ours:
            got.append((ctx.partition_id, event))
            if len(got) >= want:
                done.set()

    receive_kwargs.setdefault("starting_position", "-1")
    worker = threading.Thread(
        target=client.receive, kwargs=dict(on_event=on_event, max_wait_time=2, **receive_kwargs), daemon=True
    )
    worker.start()
    done.wait(timeout)
    client.close()
    worker.join(15)
    assert len(got) >= want, f"received {len(got)} of {want} events"
    return got


def make_message(message_class, i, sender_id):
    """Message i of a sender, built with either SDK's Message class (same surface)."""
    sdk = "azure-iot-device" if message_class is Message else "ironhub"
    m = message_class('{"n": %d, "from": "%s"}' % (i, sdk))
    m.message_id = f"{sender_id}-{i}"
    m.correlation_id = f"corr-{i}"
    m.content_type = "application/json"
    m.content_encoding = "utf-8"
    m.custom_properties.update(PROPS)
    m.custom_properties["n"] = str(i)
    return m


def official_message(i, device_id):
    return make_message(Message, i, device_id)


def official_device_sends(registry, emulator, clients, prefix, count):
    """A new device of the official SDK sends `count` messages; its id."""
    device_id, cs = create_device(registry, emulator, unique(prefix))
    client = device_client(clients, emulator, cs)
    client.connect()
    for i in range(count):
        client.send_message(official_message(i, device_id))
    return device_id


def send_from_all(registry, emulator, clients, count):
    """count messages each from an official device, an ironhub device and an ironhub module."""
    official_id, official_cs = create_device(registry, emulator, unique("eh-official"))
    ironhub_id, ironhub_cs = create_device(registry, emulator, unique("eh-ironhub"))
    module_id, module_cs = create_module(registry, emulator, ironhub_id)
    official = device_client(clients, emulator, official_cs)
    official.connect()
    ours = ironhub.IoTHubDeviceClient.create_from_connection_string(ironhub_cs, server_verification_cert=emulator.ca_pem)
    module = ironhub.IoTHubModuleClient.create_from_connection_string(module_cs, server_verification_cert=emulator.ca_pem)
    clients.extend([ours, module])
    ours.connect()
    module.connect()
    for i in range(count):
        official.send_message(official_message(i, official_id))
        ours.send_message(make_message(ironhub.Message, i, ironhub_id))
        module.send_message(make_message(ironhub.Message, i, f"{ironhub_id}-{module_id}"))
    return official_id, ironhub_id, module_id


def test_telemetry_from_both_sdks_in_order_with_every_property(registry, emulator, clients):
    count = 5
    official_id, ironhub_id, module_id = send_from_all(registry, emulator, clients, count)
    got = receive(emulator, {official_id, ironhub_id}, 3 * count)

    by_partition = defaultdict(list)
    by_sender = defaultdict(list)
    for partition, event in got:
        by_partition[partition].append(event)
        props = event.system_properties
        device = props[b"iothub-connection-device-id"].decode()
        module = props.get(b"iothub-connection-module-id", b"").decode() or None
        by_sender[(device, module)].append((partition, event))
        assert props[b"iothub-message-source"] == b"Telemetry"
        assert props[b"iothub-enqueuedtime"] is not None
        assert b'"type":"sas"' in props[b"iothub-connection-auth-method"]
        assert event.enqueued_time is not None and event.offset is not None
        assert event.content_type == "application/json"
        assert props[b"content-encoding"] == b"utf-8"
        assert props[b"correlation-id"].startswith(b"corr-")
        n = int(event.properties[b"n"])
        assert event.properties[b"kind"] == b"reading"
        assert event.properties["ünï".encode()] == "välue & co".encode()
        assert props[b"message-id"] == f"{device if module is None else device + '-' + module}-{n}".encode()
        sdk = "azure-iot-device" if device == official_id else "ironhub"
        assert event.body_as_json() == {"n": n, "from": sdk}

    assert set(by_sender) == {(official_id, None), (ironhub_id, None), (ironhub_id, module_id)}
    for sender, events in by_sender.items():
        assert [int(e.properties[b"n"]) for _, e in events] == list(range(count)), sender
        assert len({p for p, _ in events}) == 1, "a device's events stay in one partition"
    assert by_sender[(ironhub_id, None)][0][0] == by_sender[(ironhub_id, module_id)][0][0], "modules go with their device"
    for partition, events in by_partition.items():
        seqs = [e.sequence_number for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), partition
        offsets = [int(e.offset) for e in events]
        assert offsets == sorted(offsets), partition


def test_reading_from_a_sequence_number_and_partition_properties(registry, emulator, clients):
    device_id = official_device_sends(registry, emulator, clients, "eh-seq", 4)
    first = receive(emulator, {device_id}, 4)
    partition = first[0][0]
    second = [e for p, e in first if int(e.properties[b"n"]) == 1][0]

    with consumer(emulator) as c:
        info = c.get_partition_properties(partition)
        assert info["last_enqueued_sequence_number"] >= first[-1][1].sequence_number
        assert not info["is_empty"]
        assert len(c.get_partition_ids()) == 4

    after = receive(
        emulator, {device_id}, 2, partition_id=partition, starting_position=second.sequence_number
    )
    assert [int(e.properties[b"n"]) for _, e in after] == [2, 3], "exclusive of the starting sequence number"
    inclusive = receive(
        emulator,
        {device_id},
        3,
        partition_id=partition,
        starting_position=second.sequence_number,
        starting_position_inclusive=True,
    )
    assert [int(e.properties[b"n"]) for _, e in inclusive] == [1, 2, 3]


def test_two_consumer_groups_each_see_every_event(registry, emulator, clients):
    group = unique("analytics").replace("_", "-")
    control(emulator, "PUT", f"consumerGroups/{group}")
    device_id = official_device_sends(registry, emulator, clients, "eh-groups", 3)
    default = receive(emulator, {device_id}, 3)
    other = receive(emulator, {device_id}, 3, group=group)
    assert [e.sequence_number for _, e in default] == [e.sequence_number for _, e in other]


def test_amqp_over_websockets_on_443(registry, emulator, clients):
    device_id = official_device_sends(registry, emulator, clients, "eh-ws", 1)
    got = receive(emulator, {device_id}, 1, client_kwargs={"transport_type": TransportType.AmqpOverWebsocket})
    assert got[0][1].properties[b"n"] == b"0"


def test_a_wrong_key_is_refused(emulator):
    bad = emulator.event_hub_connection_string.replace("SharedAccessKey=", "SharedAccessKey=x")
    client = EventHubConsumerClient.from_connection_string(
        bad, consumer_group="$Default", connection_verify=emulator.ca_file, retry_total=0
    )
    started = time.monotonic()
    try:
        client.get_partition_ids()
        raise AssertionError("a wrong key must be refused")
    except Exception as e:  # noqa: BLE001 - the SDK raises its own AuthenticationError
        assert "401" in str(e) or "auth" in str(e).lower(), e
    finally:
        client.close()
    assert time.monotonic() - started < 30
