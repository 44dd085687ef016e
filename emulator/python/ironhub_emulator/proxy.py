"""Owns the port-mapping HTTP CONNECT proxy of the free-ports mode.

azure-iot-device always connects to port 8883 (443 with websockets) and has no port setting, but
it does take `proxy_options`: pointed at this proxy, its `CONNECT host:8883` is tunnelled to the
emulator's MQTT port and `CONNECT host:443` to its HTTPS port. TLS stays end to end (the SDK
still verifies the emulator's certificate). Only the hub's own names are tunnelled.
"""

import socket
import threading
from typing import Dict, Iterable, List, Optional, Tuple

_MAX_HEADER_BYTES = 8192


class PortMapProxy:
    """A threaded CONNECT proxy on 127.0.0.1 mapping {requested port: local port} for `hosts`."""

    def __init__(self, hosts: Iterable[str], port_map: Dict[int, int], target_host: str = "127.0.0.1") -> None:
        self._hosts = {h.lower() for h in hosts}
        self._port_map = dict(port_map)
        self._target_host = target_host
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: List[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="iothub-proxy", daemon=True)
        self._acceptor.start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for s in self._open:
                _close_quietly(s)
            self._open.clear()
        self._acceptor.join(5)

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._open.append(s)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(30)
        try:
            head, rest = _read_head(client)
            target = self._target(head)
            if target is None:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                _close_quietly(client)
                return
            upstream = socket.create_connection(target, timeout=10)
        except (OSError, ValueError):
            try:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            _close_quietly(client)
            return
        self._track(upstream)
        client.settimeout(None)
        upstream.settimeout(None)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        downstream = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        downstream.start()
        _pump(client, upstream)
        downstream.join()
        with self._lock:
            for s in (client, upstream):
                if s in self._open:
                    self._open.remove(s)
                _close_quietly(s)

    def _target(self, head: bytes) -> Optional[Tuple[str, int]]:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(request_line) != 3 or request_line[0].upper() != "CONNECT":
            return None
        host, sep, port = request_line[1].rpartition(":")
        if not sep or not port.isdigit():
            return None
        mapped = self._port_map.get(int(port))
        if mapped is None or host.strip("[]").lower() not in self._hosts:
            return None
        return (self._target_host, mapped)


def _read_head(s: socket.socket) -> Tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise ValueError("connection closed before the CONNECT request ended")
        data += chunk
        if len(data) > _MAX_HEADER_BYTES:
            raise ValueError("CONNECT request too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copies until `source` ends, then half-closes `sink` so the other direction can finish."""
    try:
        while True:
            chunk = source.recv(65536)
            if not chunk:
                break
            sink.sendall(chunk)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _close_quietly(s: socket.socket) -> None:
    try:
        s.close()
    except OSError:
        pass
