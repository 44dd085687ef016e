"""Test-side Device Provisioning Service helpers, independent of the code under test: the DPS
service REST API (`/enrollments`, `/enrollmentGroups`, `/registrations`) with a
`provisioningserviceowner` SAS token, the documented group-key derivation, and X.509 test
certificates (root → intermediate → device chains) made with `cryptography`."""

import base64
import datetime
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import hubctl

API_VERSION = "2021-10-01"


def derive_device_key(group_key_b64: str, registration_id: str) -> str:
    """base64(HMAC-SHA256(group key, registration id)), as the DPS documentation derives it."""
    digest = hmac.new(base64.b64decode(group_key_b64), registration_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class Dps:
    """The DPS service API of a running emulator (`hubctl.Hub`)."""

    def __init__(self, hub: "hubctl.Hub") -> None:
        cs = hubctl.parse_connection_string(hub.provisioning_service_connection_string or "")
        self.host = cs["HostName"]
        self.id_scope = hub.id_scope
        self._policy = cs["SharedAccessKeyName"]
        self._key = cs["SharedAccessKey"]
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.verify = hub.ca_file

    def request(self, method: str, path: str, body: Any = None, key: Optional[str] = None) -> requests.Response:
        token = hubctl.sas_token(self.host, key or self._key, self._policy)
        return self._session.request(
            method,
            "https://{}{}".format(self.host, path),
            params={"api-version": API_VERSION},
            headers={"Authorization": token, "Content-Type": "application/json"},
            data=None if body is None else json.dumps(body),
            timeout=30,
        )

    def _ok(self, resp: requests.Response) -> Any:
        if resp.status_code >= 300:
            raise AssertionError("{} {} -> {} {}".format(resp.request.method, resp.url, resp.status_code, resp.text))
        return resp.json() if resp.content else None

    def put_enrollment(self, registration_id: str, attestation: Dict[str, Any], **fields: Any) -> Dict[str, Any]:
        body = dict(registrationId=registration_id, attestation=attestation, **fields)
        return self._ok(self.request("PUT", "/enrollments/" + registration_id, body))

    def put_group(self, group_id: str, attestation: Dict[str, Any], **fields: Any) -> Dict[str, Any]:
        body = dict(enrollmentGroupId=group_id, attestation=attestation, **fields)
        return self._ok(self.request("PUT", "/enrollmentGroups/" + group_id, body))

    def registration(self, registration_id: str) -> Dict[str, Any]:
        return self._ok(self.request("GET", "/registrations/" + registration_id))


def symmetric_key_attestation(primary: str, secondary: str) -> Dict[str, Any]:
    return {"type": "symmetricKey", "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}}


def x509_attestation(pem: str, group: bool = False) -> Dict[str, Any]:
    field = "signingCertificates" if group else "clientCertificates"
    return {"type": "x509", "x509": {field: {"primary": {"certificate": pem}}}}


class Cert:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def make_cert(common_name: str, issuer: Optional[Cert] = None, ca: bool = False) -> Cert:
    """A certificate for `common_name`, self-signed unless `issuer` is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    signer = issuer.key if issuer else key
    return Cert(key, builder.sign(signer, hashes.SHA256()))


def write_identity(directory: Path, name: str, leaf: Cert, chain: List[Cert] = ()) -> Tuple[str, str]:
    """Writes `leaf` (followed by `chain`) and its key as PEM files; returns their paths."""
    cert_file = directory / (name + ".pem")
    key_file = directory / (name + "-key.pem")
    cert_file.write_text(leaf.pem + "".join(c.pem for c in chain))
    key_file.write_bytes(leaf.key_pem())
    return str(cert_file), str(key_file)
