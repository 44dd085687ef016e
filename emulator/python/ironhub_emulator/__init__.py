"""ironhub-emulator: a local Azure IoT Hub for tests and CI, as a Python package.

`Emulator` runs the `ironhub-emulator` binary installed with this wheel and waits for its
`hub.json`; `IoTHub` drives a running one (devices, twins, direct methods, telemetry read back,
cloud-to-device messages); the pytest plugin (`ironhub_emulator.pytest_plugin`, loaded
automatically) provides the `iothub` and `fresh_iothub` fixtures.
"""

from ._binary import find_binary
from .process import Emulator, EmulatorError, HubInfo
from .service import ConnectionString, HubError, IoTHub, MethodResult, TelemetryMessage

__all__ = [
    "ConnectionString",
    "Emulator",
    "EmulatorError",
    "HubError",
    "HubInfo",
    "IoTHub",
    "MethodResult",
    "TelemetryMessage",
    "find_binary",
]
