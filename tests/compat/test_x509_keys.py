"""The official azure.iot.device with encrypted private keys and CA chains against the emulator:
keys the openssl CLI encrypted (PKCS#8 and legacy PEM, RSA and EC) with `X509(..., pass_phrase)`,
and CA-signed devices (leaf + intermediate in the certificate file) whose root was registered
through `/certificates/{name}`; the emulator refuses chains it cannot verify."""

import ssl

import pytest
from azure.iot.device import Message
from azure.iot.device.exceptions import ClientError, CredentialError

from helpers import decoded_body, unique, wait_events, x509_client
from x509keys import (
    KEY_CASES,
    PASS_PHRASE,
    REFUSED_CASES,
    create_ca_device,
    encrypted_keys,
    sha256_thumbprint,
    trusted_chain,
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, emulator):
    return trusted_chain(emulator, tmp_path_factory.mktemp("chain"), unique("compat"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return encrypted_keys(tmp_path_factory.mktemp("keys"))


@pytest.mark.parametrize("case", KEY_CASES)
def test_encrypted_key(case, keys, registry, emulator, clients):
    device_id = unique("enckey")
    cert, key = keys[case]
    thumbprint = sha256_thumbprint(cert)
    registry.create_device_with_x509(device_id, thumbprint, thumbprint, "enabled")
    client = x509_client(clients, emulator, device_id, cert, key, PASS_PHRASE)
    client.connect()
    client.send_message(Message("signed with " + case))
    [event] = wait_events(emulator, device_id)
    assert decoded_body(event) == "signed with " + case


def test_wrong_pass_phrase_fails_in_the_sdk(keys, emulator, clients):
    # What the official SDK does with a wrong pass phrase (ironhub raises ValueError instead).
    cert, key = keys["rsa-pkcs8"]
    with pytest.raises(ssl.SSLError):
        x509_client(clients, emulator, unique("enckey"), cert, key, "not-the-pass-phrase").connect()


def test_ca_signed_device_with_intermediate(chain, emulator, clients):
    device_id = unique("cadev")
    create_ca_device(emulator, device_id)
    cert, key = chain.issue(device_id)
    client = x509_client(clients, emulator, device_id, cert, key, PASS_PHRASE)
    client.connect()
    client.send_message(Message("through the chain"))
    [event] = wait_events(emulator, device_id)
    assert decoded_body(event) == "through the chain"


@pytest.mark.parametrize("why", REFUSED_CASES)
def test_ca_signed_device_refused(why, chain, tmp_path, emulator, clients):
    device_id = unique("cadev")
    create_ca_device(emulator, device_id)
    cert, key = chain.refused_case(why, device_id, tmp_path)
    client = x509_client(clients, emulator, device_id, cert, key, PASS_PHRASE)
    with pytest.raises(CredentialError):
        client.connect()


def test_x509_device_file_upload(keys, chain, registry, emulator, clients):
    # The SDK's HTTPS calls carry the client certificate and no token, as against IoT Hub.
    device_id = unique("x509up")
    cert, key = keys["ec-legacy-des3"]
    thumbprint = sha256_thumbprint(cert)
    registry.create_device_with_x509(device_id, thumbprint, thumbprint, "enabled")
    client = x509_client(clients, emulator, device_id, cert, key, PASS_PHRASE)
    info = client.get_storage_info_for_blob("x509.txt")
    assert info["blobName"] == device_id + "/x509.txt"
    client.notify_blob_upload_status(info["correlationId"], True, 200, "uploaded")
    notes = emulator.request("GET", "/emulator/fileNotifications", deviceId=device_id).json()["notifications"]
    assert [n["correlationId"] for n in notes] == [info["correlationId"]]

    ca_device = unique("x509up-ca")
    create_ca_device(emulator, ca_device)
    ca_cert, ca_key = chain.issue(ca_device)
    ca_client = x509_client(clients, emulator, ca_device, ca_cert, ca_key, PASS_PHRASE)
    assert ca_client.get_storage_info_for_blob("chain.txt")["blobName"] == ca_device + "/chain.txt"

    # The SDK reports the hub's 401 on its HTTP calls as a ClientError caused by a ServiceError.
    stranger = x509_client(clients, emulator, ca_device, cert, key, PASS_PHRASE)
    with pytest.raises(ClientError) as raised:
        stranger.get_storage_info_for_blob("nope.txt")
    assert "401" in str(raised.value.__cause__)
