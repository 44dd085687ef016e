"""Device Provisioning Service: the official `ProvisioningDeviceClient` (azure-iot-device),
unchanged, registers against the emulator's DPS (same listener as the hub, on 8883 and over
WebSockets on 443), with individual and group enrollments, symmetric keys and X.509; the
assigned device then connects to the hub and sends telemetry."""

import json
import sys
from pathlib import Path

import pytest
from azure.iot.device import IoTHubDeviceClient, Message, ProvisioningDeviceClient, X509
from azure.iot.device.exceptions import ClientError, CredentialError

from helpers import decoded_body, new_key, unique, wait_events

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

import dpsctl  # noqa: E402


@pytest.fixture(scope="module")
def dps(emulator):
    return dpsctl.Dps(emulator)


def provisioning_client(clients, emulator, registration_id, key, **kwargs):
    client = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=emulator.hostname,
        registration_id=registration_id,
        id_scope=emulator.id_scope,
        symmetric_key=key,
        server_verification_cert=emulator.ca_pem,
        **kwargs,
    )
    clients.append(client)  # shut down at teardown, as the SDK's timers need
    return client


def connect_and_send(clients, emulator, client, device_id, text):
    clients.append(client)
    client.connect()
    client.send_message(Message(text))
    [event] = wait_events(emulator, device_id)
    assert decoded_body(event) == text


def test_individual_symmetric_key_with_initial_twin(emulator, dps, clients):
    registration_id = unique("reg")
    key = new_key()
    twin = {"tags": {"site": "lab"}, "properties": {"desired": {"interval": 30}}}
    dps.put_enrollment(
        registration_id, dpsctl.symmetric_key_attestation(key, new_key()), deviceId=registration_id + "-dev", initialTwin=twin
    )
    client = provisioning_client(clients, emulator, registration_id, key)
    client.provisioning_payload = {"firmware": "1.2.3"}
    result = client.register()
    assert result.status == "assigned"
    state = result.registration_state
    assert state.device_id == registration_id + "-dev"
    assert state.assigned_hub == emulator.hostname
    assert state.sub_status == "initialAssignment"
    assert json.loads(state.response_payload) == {"firmware": "1.2.3"}
    assert result.operation_id
    assert dps.registration(registration_id)["deviceId"] == state.device_id

    device = IoTHubDeviceClient.create_from_symmetric_key(
        key, state.assigned_hub, state.device_id, server_verification_cert=emulator.ca_pem
    )
    connect_and_send(clients, emulator, device, state.device_id, "provisioned ✓")
    assert device.get_twin()["desired"]["interval"] == 30
    assert emulator.get_twin(state.device_id)["tags"] == {"site": "lab"}

    # Registering again keeps the device and says so.
    again = provisioning_client(clients, emulator, registration_id, key).register()
    assert again.registration_state.sub_status == "reprovisionedToInitialAssignment"
    assert again.registration_state.device_id == state.device_id


def test_group_enrollment_with_derived_keys_over_websockets(emulator, dps, clients):
    group_key = new_key()
    dps.put_group(unique("group"), dpsctl.symmetric_key_attestation(group_key, new_key()))
    for websockets in (False, True):
        registration_id = unique("member")
        device_key = dpsctl.derive_device_key(group_key, registration_id)
        result = provisioning_client(clients, emulator, registration_id, device_key, websockets=websockets).register()
        assert result.status == "assigned"
        assert result.registration_state.device_id == registration_id
        device = IoTHubDeviceClient.create_from_symmetric_key(
            device_key, result.registration_state.assigned_hub, registration_id, server_verification_cert=emulator.ca_pem
        )
        connect_and_send(clients, emulator, device, registration_id, f"member websockets={websockets}")


def test_wrong_key_and_unknown_registration_are_credential_errors(emulator, dps, clients):
    registration_id = unique("reg")
    dps.put_enrollment(registration_id, dpsctl.symmetric_key_attestation(new_key(), new_key()))
    for rid in (registration_id, unique("nobody")):
        with pytest.raises(CredentialError):
            provisioning_client(clients, emulator, rid, new_key()).register()


def test_disabled_enrollment_is_refused(emulator, dps, clients):
    registration_id = unique("reg")
    key = new_key()
    dps.put_enrollment(registration_id, dpsctl.symmetric_key_attestation(key, new_key()), provisioningStatus="disabled")
    with pytest.raises(ClientError):
        provisioning_client(clients, emulator, registration_id, key).register()


def x509_provisioning(clients, emulator, registration_id, cert_file, key_file):
    client = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host=emulator.hostname,
        registration_id=registration_id,
        id_scope=emulator.id_scope,
        x509=X509(cert_file=cert_file, key_file=key_file),
        server_verification_cert=emulator.ca_pem,
    )
    clients.append(client)
    return client


def x509_device(clients, emulator, state, cert_file, key_file):
    return IoTHubDeviceClient.create_from_x509_certificate(
        x509=X509(cert_file=cert_file, key_file=key_file),
        hostname=state.assigned_hub,
        device_id=state.device_id,
        server_verification_cert=emulator.ca_pem,
    )


def test_x509_individual_enrollment(emulator, dps, clients, tmp_path):
    registration_id = unique("x509")
    leaf = dpsctl.make_cert(registration_id)
    dps.put_enrollment(registration_id, dpsctl.x509_attestation(leaf.pem))
    cert_file, key_file = dpsctl.write_identity(tmp_path, "device", leaf)
    result = x509_provisioning(clients, emulator, registration_id, cert_file, key_file).register()
    assert result.status == "assigned"
    device = x509_device(clients, emulator, result.registration_state, cert_file, key_file)
    connect_and_send(clients, emulator, device, registration_id, "x509 individual")

    impostor = dpsctl.make_cert(registration_id)
    other_cert, other_key = dpsctl.write_identity(tmp_path, "impostor", impostor)
    with pytest.raises(CredentialError):
        x509_provisioning(clients, emulator, registration_id, other_cert, other_key).register()


def test_x509_group_enrollment_through_an_intermediate(emulator, dps, clients, tmp_path):
    root = dpsctl.make_cert(unique("root"), ca=True)
    intermediate = dpsctl.make_cert(unique("intermediate"), issuer=root, ca=True)
    dps.put_group(unique("x509group"), dpsctl.x509_attestation(intermediate.pem, group=True))
    registration_id = unique("x509member")
    leaf = dpsctl.make_cert(registration_id, issuer=intermediate)
    cert_file, key_file = dpsctl.write_identity(tmp_path, "member", leaf, [intermediate])
    result = x509_provisioning(clients, emulator, registration_id, cert_file, key_file).register()
    assert result.status == "assigned"
    assert result.registration_state.device_id == registration_id
    device = x509_device(clients, emulator, result.registration_state, cert_file, key_file)
    connect_and_send(clients, emulator, device, registration_id, "x509 group member")

    stranger = dpsctl.make_cert(unique("x509stranger"), issuer=dpsctl.make_cert(unique("other-root"), ca=True))
    s_cert, s_key = dpsctl.write_identity(tmp_path, "stranger", stranger)
    with pytest.raises(CredentialError):
        x509_provisioning(clients, emulator, stranger.cert.subject.rfc4514_string()[3:], s_cert, s_key).register()


def test_service_api_needs_the_provisioning_policy_key(dps):
    assert dps.request("GET", "/enrollments/whoever", key=new_key()).status_code == 401
    assert dps.request("GET", "/enrollments/" + unique("none")).status_code == 404
    assert dps.request("PUT", "/enrollments/x", {"attestation": {"type": "tpm"}}).status_code == 400
