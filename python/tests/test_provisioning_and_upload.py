"""The wheel's ProvisioningDeviceClient (sync and asyncio) and the device client's file
upload, against the emulator's DPS and blob endpoint over real TLS."""

import asyncio
import base64
import json
import os

import pytest
import requests

import dpsctl
import ironhub
import ironhub.aio
from ironhub.exceptions import ClientError, CredentialError, ServiceError


def new_key():
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="module")
def dps(hub):
    return dpsctl.Dps(hub)


def prov_kwargs(client_kwargs):
    return {k: v for k, v in client_kwargs.items()}


def test_individual_registration_then_telemetry(hub, dps, unique_id, client_kwargs, make_client):
    key = new_key()
    dps.put_enrollment(
        unique_id, dpsctl.symmetric_key_attestation(key, new_key()), initialTwin={"properties": {"desired": {"mode": "eco"}}}
    )
    client = ironhub.ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=hub.hostname, registration_id=unique_id, id_scope=hub.id_scope, symmetric_key=key, **prov_kwargs(client_kwargs)
    )
    assert client.provisioning_payload is None
    client.provisioning_payload = {"serial": 7}
    result = client.register()
    assert isinstance(result, ironhub.RegistrationResult)
    assert result.status == "assigned" and result.operation_id
    state = result.registration_state
    assert isinstance(state, ironhub.RegistrationState)
    assert (state.device_id, state.assigned_hub, state.sub_status) == (unique_id, hub.hostname, "initialAssignment")
    assert json.loads(state.response_payload) == {"serial": 7}

    device = make_client(
        ironhub.IoTHubDeviceClient, "create_from_symmetric_key", key, state.assigned_hub, state.device_id, **client_kwargs
    )
    device.send_message("after provisioning")
    assert len(hub.telemetry(unique_id, 1)) == 1
    assert device.get_twin()["desired"]["mode"] == "eco"


def test_group_member_registers_with_asyncio(hub, dps, unique_id, client_kwargs):
    group_key = new_key()
    dps.put_group(unique_id + "-g", dpsctl.symmetric_key_attestation(group_key, new_key()))
    device_key = ironhub.derive_device_key(group_key, unique_id)
    assert device_key == dpsctl.derive_device_key(group_key, unique_id)

    async def register():
        client = ironhub.aio.ProvisioningDeviceClient.create_from_symmetric_key(
            hub.hostname, unique_id, hub.id_scope, device_key, **client_kwargs
        )
        return await client.register()

    result = asyncio.run(register())
    assert result.status == "assigned"
    assert result.registration_state.device_id == unique_id


def test_refusals_raise_what_azure_iot_device_raises(hub, dps, unique_id, client_kwargs):
    key = new_key()
    dps.put_enrollment(unique_id, dpsctl.symmetric_key_attestation(key, new_key()), provisioningStatus="disabled")
    make = ironhub.ProvisioningDeviceClient.create_from_symmetric_key
    with pytest.raises(CredentialError):
        make(hub.hostname, unique_id, hub.id_scope, new_key(), **client_kwargs).register()
    with pytest.raises(ClientError) as refused:
        make(hub.hostname, unique_id, hub.id_scope, key, **client_kwargs).register()
    assert isinstance(refused.value.__cause__, ServiceError)
    with pytest.raises(TypeError):
        make(hub.hostname, unique_id, hub.id_scope, key, product_info="x")
    with pytest.raises(ValueError):
        make(hub.hostname, "", hub.id_scope, key)
    with pytest.raises(ValueError):
        make(hub.hostname, unique_id, hub.id_scope, "not base64!")


def test_file_upload_official_calls_and_one_call_upload(hub, device_cs, unique_id, client_kwargs, make_client):
    client = make_client(ironhub.IoTHubDeviceClient, "create_from_connection_string", device_cs, **client_kwargs)
    info = client.get_storage_info_for_blob("images/cat.jpg")
    assert info["blobName"] == unique_id + "/images/cat.jpg"
    url = "https://{}/{}/{}{}".format(info["hostName"], info["containerName"], info["blobName"], info["sasToken"])
    put = requests.put(url, data=b"meow", headers={"x-ms-blob-type": "BlockBlob"}, verify=hub.ca_file, timeout=30)
    assert put.status_code == 201
    client.notify_blob_upload_status(info["correlationId"], True, 200, "done")
    with pytest.raises(ClientError):
        client.notify_blob_upload_status(info["correlationId"], True, 200, "twice")

    progress = []
    uploaded = client.upload_blob("logs/big.bin", data=bytes(3000), block_size=1000, progress=lambda s, t: progress.append((s, t)))
    assert progress == [(1000, 3000), (2000, 3000), (3000, 3000)]
    notes = hub.request("GET", "/emulator/fileNotifications", deviceId=unique_id).json()["notifications"]
    assert [(n["blobName"], n["blobSizeInBytes"]) for n in notes] == [(info["blobName"], 4), (uploaded["blobName"], 3000)]
    with pytest.raises(ValueError):
        client.upload_blob("x")

    async def via_asyncio():
        aclient = ironhub.aio.IoTHubDeviceClient.create_from_connection_string(device_cs, **client_kwargs)
        try:
            return await aclient.get_storage_info_for_blob("async.txt")
        finally:
            await aclient.shutdown()

    assert asyncio.run(via_asyncio())["blobName"] == unique_id + "/async.txt"


def test_x509_registration_then_connect(hub, dps, unique_id, client_kwargs, tmp_path, make_client):
    leaf = dpsctl.make_cert(unique_id)
    dps.put_enrollment(unique_id, dpsctl.x509_attestation(leaf.pem))
    cert_file, key_file = dpsctl.write_identity(tmp_path, "device", leaf)
    x509 = ironhub.X509(cert_file, key_file)
    make = ironhub.ProvisioningDeviceClient.create_from_x509_certificate
    with pytest.raises(TypeError):
        make(hub.hostname, unique_id, hub.id_scope, x509, sastoken_ttl=60, **client_kwargs)
    result = make(hub.hostname, unique_id, hub.id_scope, x509, **client_kwargs).register()
    assert result.registration_state.device_id == unique_id
    device = make_client(
        ironhub.IoTHubDeviceClient, "create_from_x509_certificate", x509, result.registration_state.assigned_hub, unique_id, **client_kwargs
    )
    device.connect()
    assert device.connected
