"""Registry, telemetry, routing and C2D through the official SDKs."""

from azure.iot.device import Message

from helpers import (
    Inbox,
    control,
    create_device,
    create_module,
    decoded_body,
    device_client,
    module_client,
    unique,
    wait_events,
)

TRICKY = {
    "ünïcødé ✓": "välue ✓ 温度",
    "a&b": "1&2=3",
    "with space": "x y z",
    "eq=key": "=",
}


def test_device_and_module_creation(registry, emulator):
    device_id, _ = create_device(registry, emulator)
    module_id, _ = create_module(registry, emulator, device_id)

    device = registry.get_device(device_id)
    assert device.device_id == device_id
    assert device.status == "enabled"
    assert device.authentication.type == "sas"
    assert device.authentication.symmetric_key.primary_key
    assert device.etag

    module = registry.get_module(device_id, module_id)
    assert module.module_id == module_id
    assert module.device_id == device_id
    assert [m.module_id for m in registry.get_modules(device_id)] == [module_id]


def test_telemetry_with_system_and_custom_properties(registry, emulator, clients):
    device_id, cs = create_device(registry, emulator)
    client = device_client(clients, emulator, cs)
    client.connect()

    message = Message('{"temperature": 21.5, "note": "héllo & bye"}')
    message.message_id = "mid 1&2=3"
    message.correlation_id = "cid/ünï"
    message.content_type = "application/json"
    message.content_encoding = "utf-8"
    message.custom_properties.update(TRICKY)
    client.send_message(message)

    [event] = wait_events(emulator, device_id)
    assert decoded_body(event) == '{"temperature": 21.5, "note": "héllo & bye"}'
    assert event["moduleId"] is None
    system = event["systemProperties"]
    assert system["messageId"] == "mid 1&2=3"
    assert system["correlationId"] == "cid/ünï"
    assert system["contentType"] == "application/json"
    assert system["contentEncoding"] == "utf-8"
    assert event["properties"] == TRICKY


def test_module_output_routed_to_another_module_input(registry, emulator, clients):
    device_id, _ = create_device(registry, emulator)
    producer_id, producer_cs = create_module(registry, emulator, device_id)
    consumer_id, consumer_cs = create_module(registry, emulator, device_id)
    route = f'FROM /messages/modules/{producer_id}/outputs/out1 INTO BrokeredEndpoint("/modules/{consumer_id}/inputs/in1")'
    control(emulator, "PUT", "routes", json={"routes": {unique("route"): route}})

    consumer = module_client(clients, emulator, consumer_cs)
    inbox = Inbox()
    consumer.on_message_received = inbox
    consumer.connect()

    producer = module_client(clients, emulator, producer_cs)
    producer.connect()
    message = Message("routed body ✓")
    message.message_id = "routed-1"
    message.custom_properties.update(TRICKY)
    producer.send_message_to_output(message, "out1")

    received = inbox.get()
    assert received.input_name == "in1"
    assert received.data == "routed body ✓".encode()
    assert received.message_id == "routed-1"
    for key, value in TRICKY.items():
        assert received.custom_properties[key] == value
    assert received.custom_properties["$.cdid"] == device_id
    assert received.custom_properties["$.cmid"] == producer_id

    # The output is in the event log too, with its output name.
    [event] = wait_events(emulator, device_id, producer_id)
    assert event["outputName"] == "out1"


def test_c2d_with_properties(registry, emulator, clients):
    device_id, cs = create_device(registry, emulator)
    client = device_client(clients, emulator, cs)
    inbox = Inbox()
    client.on_message_received = inbox
    client.connect()

    sent = control(
        emulator,
        "POST",
        f"devices/{device_id}/messages/devicebound",
        json={
            "bodyText": "hello device ✓",
            "messageId": "c2d 1",
            "correlationId": "corr&1",
            "contentType": "text/plain",
            "properties": TRICKY,
        },
    )
    assert sent["delivered"] is True
    received = inbox.get()
    assert received.data == "hello device ✓".encode()
    assert received.message_id == "c2d 1"
    assert received.correlation_id == "corr&1"
    assert received.content_type == "text/plain"
    for key, value in TRICKY.items():
        assert received.custom_properties[key] == value


def test_c2d_queued_while_offline_is_delivered_after_connect(registry, emulator, clients):
    device_id, cs = create_device(registry, emulator)
    client = device_client(clients, emulator, cs)
    inbox = Inbox()
    client.on_message_received = inbox  # connects and subscribes
    client.disconnect()

    for i in range(3):
        sent = control(emulator, "POST", f"devices/{device_id}/messages/devicebound", json={"bodyText": f"queued {i}"})
        assert sent["delivered"] is False
    client.connect()  # the session remembers the subscription: no new SUBSCRIBE needed
    assert [inbox.get().data for _ in range(3)] == [b"queued 0", b"queued 1", b"queued 2"]
