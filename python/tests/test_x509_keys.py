"""X.509 identities through the wheel against the emulator: `X509(cert_file, key_file, pass_phrase)`
with keys the openssl CLI encrypted (PKCS#8 and legacy PEM, RSA and EC); wrong, missing and damaged
keys give a ValueError naming the file (never the pass phrase); CA-signed devices whose certificate
file holds leaf + intermediate connect once the hub trusts the root (`/certificates/{name}`), and
X.509 devices upload files (the client certificate on the HTTPS calls)."""

import logging

import pytest

from ironhub import X509, IoTHubDeviceClient, Message
from ironhub import exceptions
from x509keys import (
    KEY_CASES,
    PASS_PHRASE,
    REFUSED_CASES,
    Chain,
    create_ca_device,
    damaged_copy,
    encrypted_keys,
    sha256_thumbprint,
    trusted_chain,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return encrypted_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def chain(tmp_path_factory, hub):
    return trusted_chain(hub, tmp_path_factory.mktemp("chain"), "pychain")


def x509_client(make_client, hub, client_kwargs, device_id, cert, key, pass_phrase):
    x509 = X509(cert_file=str(cert), key_file=str(key), pass_phrase=pass_phrase)
    return make_client(IoTHubDeviceClient, "create_from_x509_certificate", x509, hub.hostname, device_id, **client_kwargs)


@pytest.mark.parametrize("case", KEY_CASES)
def test_encrypted_key_connects(case, keys, make_client, hub, unique_id, client_kwargs):
    cert, key = keys[case]
    hub.create_device(unique_id, x509_thumbprint=sha256_thumbprint(cert))
    c = x509_client(make_client, hub, client_kwargs, unique_id, cert, key, PASS_PHRASE)
    c.send_message(Message("key " + case))
    assert hub.telemetry(unique_id, 1)[0]["body"] == "key " + case


@pytest.mark.parametrize("case", KEY_CASES)
@pytest.mark.parametrize("pass_phrase,expected", [("not-the-pass-phrase", "wrong pass phrase"), (None, "no pass phrase")])
def test_wrong_or_missing_pass_phrase(case, pass_phrase, expected, keys, make_client, hub, client_kwargs, caplog):
    cert, key = keys[case]
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ValueError) as raised:
        x509_client(make_client, hub, client_kwargs, "nobody", cert, key, pass_phrase)
    text = str(raised.value)
    assert key.name in text and expected in text, text
    for secret in ("not-the-pass-phrase", PASS_PHRASE):
        assert secret not in text and secret not in caplog.text


def test_damaged_key(keys, make_client, hub, client_kwargs):
    cert, key = keys["rsa-legacy-aes128"]
    damaged = damaged_copy(key)
    with pytest.raises(ValueError, match="damaged_rsa_legacy_aes128.pem"):
        x509_client(make_client, hub, client_kwargs, "nobody", cert, damaged, PASS_PHRASE)


def test_ca_signed_device_with_intermediate(chain, make_client, hub, unique_id, client_kwargs):
    create_ca_device(hub, unique_id)
    cert, key = chain.issue(unique_id)
    c = x509_client(make_client, hub, client_kwargs, unique_id, cert, key, PASS_PHRASE)
    c.send_message(Message("through the chain"))
    assert hub.telemetry(unique_id, 1)[0]["body"] == "through the chain"


@pytest.mark.parametrize("why", REFUSED_CASES)
def test_ca_signed_device_refused(why, chain, tmp_path, make_client, hub, unique_id, client_kwargs):
    create_ca_device(hub, unique_id)
    cert, key = chain.refused_case(why, unique_id, tmp_path)
    c = x509_client(make_client, hub, client_kwargs, unique_id, cert, key, PASS_PHRASE)
    with pytest.raises(exceptions.CredentialError):
        c.connect()


def test_x509_device_file_upload(keys, chain, make_client, hub, unique_id, client_kwargs):
    cert, key = keys["ec-legacy-des3"]
    hub.create_device(unique_id, x509_thumbprint=sha256_thumbprint(cert))
    c = x509_client(make_client, hub, client_kwargs, unique_id, cert, key, PASS_PHRASE)
    info = c.get_storage_info_for_blob("x509.txt")
    assert info["blobName"] == unique_id + "/x509.txt"
    c.notify_blob_upload_status(info["correlationId"], True, 200, "uploaded")
    notes = hub.request("GET", "/emulator/fileNotifications", deviceId=unique_id).json()["notifications"]
    assert [n["correlationId"] for n in notes] == [info["correlationId"]]

    ca_device = unique_id + "-ca"
    create_ca_device(hub, ca_device)
    ca_cert, ca_key = chain.issue(ca_device)
    ca_client = x509_client(make_client, hub, client_kwargs, ca_device, ca_cert, ca_key, PASS_PHRASE)
    assert ca_client.get_storage_info_for_blob("chain.txt")["blobName"] == ca_device + "/chain.txt"

    stranger = x509_client(make_client, hub, client_kwargs, ca_device, cert, key, PASS_PHRASE)
    with pytest.raises(exceptions.CredentialError):
        stranger.get_storage_info_for_blob("nope.txt")
