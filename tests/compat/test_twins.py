"""Twins: service updates with ETags, desired patches, reported properties, and
ensure_desired_properties across a reconnect."""

import pytest
from azure.iot.hub.models import Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from helpers import Inbox, create_device, device_client


def desired(props):
    return Twin(properties=TwinProperties(desired=props))


def test_update_twin_with_etag_and_stale_etag(registry, emulator):
    device_id, _ = create_device(registry, emulator)
    twin = registry.get_twin(device_id)
    version = twin.properties.desired["$version"]

    updated = registry.update_twin(device_id, desired({"rate": 5, "mode": "eco"}), twin.etag)
    assert updated.properties.desired["rate"] == 5
    assert updated.properties.desired["$version"] == version + 1
    assert updated.etag != twin.etag

    with pytest.raises(HttpOperationError) as stale:
        registry.update_twin(device_id, desired({"rate": 6}), twin.etag)
    assert stale.value.response.status_code == 412
    assert registry.get_twin(device_id).properties.desired["rate"] == 5

    # "*" is unconditional; a null deletes the key.
    after = registry.update_twin(device_id, desired({"mode": None, "rate": 7}), "*")
    assert "mode" not in after.properties.desired
    assert after.properties.desired["rate"] == 7


def test_desired_patch_delivered_and_reported_visible(registry, emulator, clients):
    device_id, cs = create_device(registry, emulator)
    client = device_client(clients, emulator, cs)
    patches = Inbox()
    client.on_twin_desired_properties_patch_received = patches
    client.connect()

    # The handler's ensure_desired_properties GET may deliver the current desired first.
    twin = registry.get_twin(device_id)
    registry.update_twin(device_id, desired({"interval": 30, "label": "ünï & ="}), twin.etag)
    patch = patches.get()
    while "interval" not in patch:
        patch = patches.get()
    assert patch["interval"] == 30
    assert patch["label"] == "ünï & ="
    assert patch["$version"] == registry.get_twin(device_id).properties.desired["$version"]

    reported_before = client.get_twin()["reported"]["$version"]
    client.patch_twin_reported_properties({"firmware": "1.2.3", "nested": {"ok": True}})
    service_view = registry.get_twin(device_id).properties.reported
    assert service_view["firmware"] == "1.2.3"
    assert service_view["nested"] == {"ok": True}
    assert service_view["$version"] == reported_before + 1

    client.patch_twin_reported_properties({"firmware": None})
    device_view = client.get_twin()
    assert "firmware" not in device_view["reported"]
    assert device_view["reported"]["$version"] == reported_before + 2


def test_ensure_desired_properties_after_offline_change(registry, emulator, clients):
    device_id, cs = create_device(registry, emulator)
    registry.update_twin(device_id, desired({"before": 1}), "*")
    client = device_client(clients, emulator, cs)
    patches = Inbox()
    client.on_twin_desired_properties_patch_received = patches
    client.connect()
    # On connect the SDK GETs the twin (without subscribing to twin responses first) and
    # hands the full desired state to the handler.
    first = patches.get()
    assert first["before"] == 1

    client.disconnect()
    registry.update_twin(device_id, desired({"while_offline": "yes"}), "*")
    expected_version = registry.get_twin(device_id).properties.desired["$version"]
    patches.empty_for(0.5)
    client.connect()

    synthesized = patches.get()
    # A full desired document (not just the change), as fetched by the SDK's twin GET.
    assert synthesized["while_offline"] == "yes"
    assert synthesized["before"] == 1
    assert synthesized["$version"] == expected_version
