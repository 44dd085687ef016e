"""File upload with the official flow, unchanged: azure-iot-device's `get_storage_info_for_blob`,
an upload with azure-storage-blob (Put Blob, and Put Block + Put Block List when chunked) to the
emulator's blob endpoint, then `notify_blob_upload_status`; the hub raises the file-upload
notification. A wrong or expired SAS is refused as Azure Storage refuses it."""

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.storage.blob import BlobClient

from helpers import control, create_device, device_client


def blob_url(info, sas=None):
    return "https://{}/{}/{}{}".format(info["hostName"], info["containerName"], info["blobName"], sas or info["sasToken"])


def blob_client(emulator, url, **kwargs):
    return BlobClient.from_blob_url(url, connection_verify=emulator.ca_file, **kwargs)


def notifications(emulator, device_id):
    return control(emulator, "GET", "fileNotifications", params={"deviceId": device_id})["notifications"]


@pytest.mark.parametrize("chunked", [False, True])
def test_official_upload_flow(registry, emulator, clients, chunked):
    device_id, cs = create_device(registry, emulator)
    client = device_client(clients, emulator, cs)
    info = client.get_storage_info_for_blob("logs/today.txt")
    assert info["blobName"] == device_id + "/logs/today.txt"
    assert info["correlationId"] and info["sasToken"].startswith("?")

    data = bytes(range(256)) * 40  # 10 KiB
    options = {"max_single_put_size": 1024, "max_block_size": 1024} if chunked else {}
    blob = blob_client(emulator, blob_url(info), **options)
    blob.upload_blob(data)
    assert blob.download_blob().readall() == data

    client.notify_blob_upload_status(info["correlationId"], True, 200, "uploaded")
    [note] = notifications(emulator, device_id)
    assert note["blobName"] == info["blobName"]
    assert note["blobSizeInBytes"] == len(data)
    assert note["blobUri"].endswith("/" + info["containerName"] + "/" + info["blobName"])


def test_failed_upload_raises_no_notification_and_unknown_correlation_is_an_error(registry, emulator, clients):
    device_id, cs = create_device(registry, emulator)
    client = device_client(clients, emulator, cs)
    info = client.get_storage_info_for_blob("never.bin")
    client.notify_blob_upload_status(info["correlationId"], False, 500, "disk full")
    assert notifications(emulator, device_id) == []
    with pytest.raises(Exception):
        client.notify_blob_upload_status(info["correlationId"], True, 200, "twice")


def test_wrong_sas_is_403(registry, emulator, clients):
    device_id, cs = create_device(registry, emulator)
    client = device_client(clients, emulator, cs)
    info = client.get_storage_info_for_blob("secret.txt")
    other = client.get_storage_info_for_blob("other.txt")
    tampered = info["sasToken"].replace("se=", "se=1")  # a later expiry the signature does not cover
    for url in (blob_url(info, tampered), blob_url(info, other["sasToken"]), blob_url(info, "?sv=2018-03-28")):
        with pytest.raises((ClientAuthenticationError, HttpResponseError)) as refused:
            blob_client(emulator, url).upload_blob(b"x")
        assert refused.value.status_code == 403
        assert refused.value.error_code == "AuthenticationFailed"
