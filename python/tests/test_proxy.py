"""`proxy_options`: the MQTT connection goes through an HTTP CONNECT proxy (a small one run
by the test on loopback, which records what it tunnelled)."""

import socket
import threading

from ironhub import IoTHubDeviceClient, ProxyOptions


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on 127.0.0.1:0 that pipes bytes both ways."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self._stop = threading.Event()
        self._conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            self._conns.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode()
        self.requests.append(request_line)
        method, target, _ = request_line.split(" ", 2)
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            client.close()
            return
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection(("127.0.0.1", int(port)))
        self._conns.append(upstream)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        rest = head.split(b"\r\n\r\n", 1)[1]
        if rest:
            upstream.sendall(rest)
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        for c in self._conns:
            c.close()
        self.sock.close()


def test_telemetry_through_http_proxy(make_client, hub, device_cs, unique_id, client_kwargs):
    proxy = ConnectProxy()
    try:
        c = make_client(
            IoTHubDeviceClient,
            "create_from_connection_string",
            device_cs,
            proxy_options=ProxyOptions("HTTP", "127.0.0.1", proxy.port),
            **client_kwargs,
        )
        c.send_message("through the proxy")
        assert hub.telemetry(unique_id, 1)[0]["body"] == "through the proxy"
        assert proxy.requests and proxy.requests[0].startswith("CONNECT {}:{}".format(hub.hostname, hub.mqtt_port))
    finally:
        proxy.close()
