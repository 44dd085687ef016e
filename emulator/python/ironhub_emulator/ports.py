"""Owns the machine-wide lock on IoT Hub's real ports (8883, 443).

The official azure-iot-device SDK only connects to those, so every suite on a machine that runs an
emulator there takes this exclusive flock for as long as it does (the same file the ironhub
repository's own suites use), instead of failing on "address in use".
"""

import contextlib
import os
import time
from typing import Iterator

PRIVILEGED_PORTS_LOCK = "/tmp/ironhub-privileged-ports.lock"
SDK_MQTT_PORT = 8883
SDK_HTTPS_PORT = 443


@contextlib.contextmanager
def sdk_ports_lock(wait_s: float = 900.0) -> Iterator[None]:
    """Holds the exclusive lock while in the block; raises TimeoutError after `wait_s`."""
    import fcntl  # POSIX only; imported here so the rest of the package works elsewhere

    fd = os.open(PRIVILEGED_PORTS_LOCK, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("{} held by another process for over {} s".format(PRIVILEGED_PORTS_LOCK, wait_s))
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
