"""The `cipher` keyword on the wire, through the wheel: a list of TLS 1.2 suites means a TLS 1.2
connection, a list of TLS 1.3 suites means TLS 1.3. A TLS relay in front of the emulator (its
own CA, which the client trusts) records the version and suite of every handshake it accepts."""

import asyncio
import datetime
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ironhub import IoTHubDeviceClient


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject_key, subject, issuer_key, issuer, ca):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class RecordingTlsRelay:
    """Accepts TLS on a loopback port with an ECDSA certificate of its own CA, records
    (version, cipher) of each handshake, and forwards the bytes over TLS to the emulator."""

    def __init__(self, tmp_path, upstream_port, upstream_ca_file):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _issue(ca_key, _name("relay CA"), ca_key, _name("relay CA"), ca=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(key, _name("localhost"), ca_key, ca.subject, ca=False)
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        (tmp_path / "relay.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / "relay.key").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        self._server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_tls.load_cert_chain(tmp_path / "relay.pem", tmp_path / "relay.key")
        self._upstream_tls = ssl.create_default_context(cafile=upstream_ca_file)
        self._upstream_port = upstream_port
        self.handshakes = []
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        assert started.wait(10), "the relay did not start"

    def _run(self, started):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=self._server_tls)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()

    async def _relay(self, client_reader, client_writer):
        tls = client_writer.get_extra_info("ssl_object")
        self.handshakes.append((tls.version(), tls.cipher()[0]))
        hub_reader, hub_writer = await asyncio.open_connection(
            "127.0.0.1", self._upstream_port, ssl=self._upstream_tls, server_hostname="localhost"
        )

        async def pipe(reader, writer):
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, hub_writer), pipe(hub_reader, client_writer))

    async def _shutdown(self):
        self._server.close()
        tunnels = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tunnels:
            t.cancel()
        await asyncio.gather(*tunnels, return_exceptions=True)

    def close(self):
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.mark.parametrize(
    "cipher, negotiated",
    [
        ("ECDHE-ECDSA-AES128-GCM-SHA256", ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")),
        ("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384", ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305")),
        ("TLS_AES_256_GCM_SHA384", ("TLSv1.3", "TLS_AES_256_GCM_SHA384")),
    ],
    ids=["tls12", "tls12-list", "tls13"],
)
def test_the_cipher_list_decides_the_negotiated_version(
    make_client, hub, tmp_path, device_cs, unique_id, client_kwargs, cipher, negotiated
):
    relay = RecordingTlsRelay(tmp_path, hub.mqtt_port, hub.ca_file)
    try:
        kw = dict(client_kwargs, cipher=cipher, mqtt_port=relay.port, server_verification_cert=relay.ca_pem)
        c = make_client(IoTHubDeviceClient, "create_from_connection_string", device_cs, **kw)
        c.send_message("over " + negotiated[1])
        assert hub.telemetry(unique_id, 1)[0]["body"] == "over " + negotiated[1]
        assert relay.handshakes and set(relay.handshakes) == {negotiated}, relay.handshakes
    finally:
        relay.close()
