"""Connecting: wrong keys, MQTT over WebSockets, X.509 self-signed devices."""

import datetime
import hashlib

import pytest
from azure.iot.device import IoTHubDeviceClient, Message, X509
from azure.iot.device.exceptions import CredentialError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import create_device, decoded_body, device_client, new_key, unique, wait_events, x509_client


def test_wrong_key_is_a_credential_error(registry, emulator, clients):
    device_id, _ = create_device(registry, emulator)
    bad = f"HostName={emulator.hostname};DeviceId={device_id};SharedAccessKey={new_key()}"
    client = device_client(clients, emulator, bad, connection_retry=False)
    with pytest.raises(CredentialError):
        client.connect()


def test_unknown_device_is_a_credential_error(emulator, clients):
    cs = f"HostName={emulator.hostname};DeviceId={unique('ghost')};SharedAccessKey={new_key()}"
    client = device_client(clients, emulator, cs, connection_retry=False)
    with pytest.raises(CredentialError):
        client.connect()


def test_websockets(registry, emulator, clients):
    device_id, cs = create_device(registry, emulator)
    client = device_client(clients, emulator, cs, websockets=True)
    client.connect()
    message = Message("over websockets ✓")
    message.custom_properties["transport"] = "wss & mqtt"
    client.send_message(message)
    [event] = wait_events(emulator, device_id)
    assert decoded_body(event) == "over websockets ✓"
    assert event["properties"] == {"transport": "wss & mqtt"}
    assert client.get_twin()["desired"]["$version"] >= 1


def self_signed(device_id, directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "device.pem"
    key_file = directory / "device-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return str(cert_file), str(key_file), hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest()


def test_x509_self_signed(registry, emulator, clients, tmp_path):
    device_id = unique("x509")
    cert_file, key_file, sha1, _ = self_signed(device_id, tmp_path)
    registry.create_device_with_x509(device_id, sha1, sha1, "enabled")
    device = registry.get_device(device_id)
    assert device.authentication.type == "selfSigned"

    client = x509_client(clients, emulator, device_id, cert_file, key_file)
    client.connect()
    client.send_message(Message("signed by my own key"))
    [event] = wait_events(emulator, device_id)
    assert decoded_body(event) == "signed by my own key"


def test_x509_sha256_thumbprint_and_wrong_certificate(registry, emulator, clients, tmp_path):
    device_id = unique("x509")
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    cert_file, key_file, _, sha256 = self_signed(device_id, tmp_path / "good")
    other_cert, other_key, _, _ = self_signed(device_id, tmp_path / "bad")
    registry.create_device_with_x509(device_id, sha256.lower(), sha256.upper(), "enabled")

    client = x509_client(clients, emulator, device_id, cert_file, key_file)
    client.connect()
    client.disconnect()

    impostor = x509_client(clients, emulator, device_id, other_cert, other_key)
    with pytest.raises(CredentialError):
        impostor.connect()
