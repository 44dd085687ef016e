"""Owns the machine-wide lock on IoT Hub's real ports (8883, 443).

The official azure-iot-device SDK only connects to those, so every suite on a machine that runs an
emulator there takes this exclusive flock for as long as it does (the same file the ironhub
repository's own suites use), instead of failing on "address in use".
"""

import contextlib
import os
import threading
import time
from typing import Iterator

PRIVILEGED_PORTS_LOCK = "/tmp/ironhub-privileged-ports.lock"
SDK_MQTT_PORT = 8883
SDK_HTTPS_PORT = 443

# flock() taken twice in one process through two descriptors blocks the second taker forever.
_held_here = threading.Lock()


@contextlib.contextmanager
def sdk_ports_lock(wait_s: float = 900.0) -> Iterator[None]:
    """Holds the exclusive lock while in the block; raises TimeoutError after `wait_s`, and
    RuntimeError at once when this process holds it already (it would wait for itself)."""
    import fcntl  # POSIX only; imported here so the rest of the package works elsewhere

    if not _held_here.acquire(blocking=False):
        raise RuntimeError(
            "this process already runs an emulator on 8883/443 (it holds {}); a second one needs free "
            "ports (pytest: --iothub-ports=free)".format(PRIVILEGED_PORTS_LOCK)
        )
    try:
        fd = os.open(PRIVILEGED_PORTS_LOCK, os.O_CREAT | os.O_RDWR, 0o666)
    except BaseException:
        _held_here.release()
        raise
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
        _held_here.release()
