"""X.509 material for the Python suites (ironhub's and the official SDK's), written by the `openssl`
CLI exactly as a user would write it: private keys encrypted every way OpenSSL does (PKCS#8
`ENCRYPTED PRIVATE KEY` and the legacy `Proc-Type: 4,ENCRYPTED` PEM, RSA and EC), and CA chains
(root -> intermediate -> device) whose root the hub trusts through its `/certificates` API."""

import hashlib
import subprocess
from pathlib import Path
from typing import Dict, Tuple

PASS_PHRASE = "correct-horse-42"
# The key formats `encrypted_keys` writes.
KEY_CASES = ["rsa-pkcs8", "ec-pkcs8-aes256", "rsa-legacy-aes128", "ec-legacy-des3"]
# Why a CA-signed device must be refused (see Chain.refused_case).
REFUSED_CASES = ["no-intermediate", "expired", "other-device-cn", "untrusted-root"]


def openssl(cwd: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=str(cwd), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError("openssl {}: {}".format(" ".join(args), done.stderr))


def sha256_thumbprint(cert_file: Path) -> str:
    der = subprocess.run(
        ["openssl", "x509", "-in", str(cert_file), "-outform", "DER"], check=True, capture_output=True, timeout=60
    ).stdout
    return hashlib.sha256(der).hexdigest().upper()


def encrypted_keys(directory: Path, cn: str = "keys") -> Dict[str, Tuple[Path, Path]]:
    """{case name: (certificate file, key file encrypted with PASS_PHRASE)} for each key format."""
    p = "pass:" + PASS_PHRASE
    openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-keyout", "rsa_pkcs8.pem", "-passout", p,
            "-out", "rsa.crt", "-subj", "/CN=" + cn, "-days", "2")
    openssl(directory, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes256", "-pass", p,
            "-out", "ec_pkcs8.pem")
    openssl(directory, "req", "-x509", "-new", "-key", "ec_pkcs8.pem", "-passin", p, "-out", "ec.crt",
            "-subj", "/CN=" + cn, "-days", "2")
    openssl(directory, "rsa", "-in", "rsa_pkcs8.pem", "-passin", p, "-aes128", "-traditional", "-passout", p,
            "-out", "rsa_legacy_aes128.pem")
    openssl(directory, "ec", "-in", "ec_pkcs8.pem", "-passin", p, "-des3", "-passout", p, "-out", "ec_legacy_des3.pem")
    rsa, ec = directory / "rsa.crt", directory / "ec.crt"
    return {
        "rsa-pkcs8": (rsa, directory / "rsa_pkcs8.pem"),
        "ec-pkcs8-aes256": (ec, directory / "ec_pkcs8.pem"),
        "rsa-legacy-aes128": (rsa, directory / "rsa_legacy_aes128.pem"),
        "ec-legacy-des3": (ec, directory / "ec_legacy_des3.pem"),
    }


def damaged_copy(key_file: Path) -> Path:
    """The key with one line of its encrypted body reversed."""
    lines = key_file.read_text().splitlines()
    middle = len(lines) // 2
    lines[middle] = lines[middle][::-1]
    damaged = key_file.with_name("damaged_" + key_file.name)
    damaged.write_text("\n".join(lines) + "\n")
    return damaged


_CA_EXT = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n"
_LEAF_EXT = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"


class Chain:
    """A root and an intermediate CA under `directory`; `issue` makes device certificates."""

    def __init__(self, directory: Path, name: str) -> None:
        self.dir = directory
        self.name = name
        (directory / "ca.ext").write_text(_CA_EXT)
        (directory / "leaf.ext").write_text(_LEAF_EXT)
        openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", name + "-root.key",
                "-out", name + "-root.crt", "-subj", "/CN={} root".format(name), "-days", "2",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + "-int.key",
                "-out", name + "-int.csr", "-subj", "/CN={} intermediate".format(name))
        openssl(directory, "x509", "-req", "-in", name + "-int.csr", "-CA", name + "-root.crt", "-CAkey",
                name + "-root.key", "-CAcreateserial", "-out", name + "-int.crt", "-days", "2", "-extfile", "ca.ext")
        self.root_pem = (directory / (name + "-root.crt")).read_text()
        self.intermediate_pem = (directory / (name + "-int.crt")).read_text()

    def issue(self, cn: str, days: int = 2, with_intermediate: bool = True) -> Tuple[str, str]:
        """(certificate file: leaf [+ intermediate], key file encrypted with PASS_PHRASE); `days` < 0 is expired."""
        stem = "{}-{}-{}".format(self.name, cn, days)
        openssl(self.dir, "req", "-newkey", "rsa:2048", "-keyout", stem + ".key", "-passout", "pass:" + PASS_PHRASE,
                "-out", stem + ".csr", "-subj", "/CN=" + cn)
        openssl(self.dir, "x509", "-req", "-in", stem + ".csr", "-CA", self.name + "-int.crt", "-CAkey",
                self.name + "-int.key", "-CAcreateserial", "-out", stem + ".leaf", "-days", str(days),
                "-extfile", "leaf.ext")
        chain_file = self.dir / (stem + (".chain.pem" if with_intermediate else ".leaf.pem"))
        chain_file.write_text((self.dir / (stem + ".leaf")).read_text() + (self.intermediate_pem if with_intermediate else ""))
        return str(chain_file), str(self.dir / (stem + ".key"))

    def refused_case(self, why: str, device_id: str, scratch: Path) -> Tuple[str, str]:
        """Certificate and key for `device_id` that a hub trusting this chain's root must refuse."""
        if why == "no-intermediate":
            return self.issue(device_id, with_intermediate=False)
        if why == "expired":
            return self.issue(device_id, days=-1)
        if why == "other-device-cn":
            return self.issue(device_id + "-other")
        if why == "untrusted-root":
            return Chain(scratch, "stranger").issue(device_id)
        raise ValueError(why)


def register_root(hub, name: str, root_pem: str, verified: bool = True) -> dict:
    """Registers a new CA certificate with the hub (PUT /certificates/{name}, no If-Match: create)."""
    body = {"properties": {"certificate": root_pem, "isVerified": verified}}
    resp = hub.request("PUT", "/certificates/" + name, body)
    if resp.status_code != 200:
        raise AssertionError("PUT /certificates/{} -> {} {}".format(name, resp.status_code, resp.text))
    return resp.json()


def trusted_chain(hub, directory: Path, name: str) -> Chain:
    """A chain whose root `hub` trusts (registered and verified as certificate `{name}-root`)."""
    chain = Chain(directory, name)
    register_root(hub, name + "-root", chain.root_pem)
    return chain


def create_ca_device(hub, device_id: str) -> None:
    body = {"deviceId": device_id, "status": "enabled", "authentication": {"type": "certificateAuthority"}}
    resp = hub.request("PUT", "/devices/" + device_id, body)
    if resp.status_code != 200:
        raise AssertionError("PUT /devices/{} -> {} {}".format(device_id, resp.status_code, resp.text))

