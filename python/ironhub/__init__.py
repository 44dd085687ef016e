"""ironhub: an Azure IoT Hub device and module client with a Rust core, a drop-in for
``azure.iot.device`` (replace the import; ``ironhub.aio`` mirrors ``azure.iot.device.aio``).

ironhub-only additions: the ``mqtt_port``, ``https_port``, ``operation_timeout``,
``max_queued_messages`` and ``max_queued_bytes`` factory keywords, and pipelined ``send_messages``.

Logging: the Rust core logs through Python's ``logging`` under the ``ironhub`` logger
(``ironhub.<module>`` children). Levels are cached on first use; after changing them call
``ironhub.reset_log_cache()``.
"""

from . import aio, exceptions
from ._native import __version__, reset_log_cache
from .models import Message, MethodRequest, MethodResponse, ProxyOptions, X509
from .provisioning import ProvisioningDeviceClient, RegistrationResult, RegistrationState, derive_device_key
from .sync_clients import IoTHubDeviceClient, IoTHubModuleClient

__all__ = [
    "IoTHubDeviceClient",
    "IoTHubModuleClient",
    "ProvisioningDeviceClient",
    "RegistrationResult",
    "RegistrationState",
    "derive_device_key",
    "Message",
    "MethodRequest",
    "MethodResponse",
    "X509",
    "ProxyOptions",
    "exceptions",
    "aio",
    "__version__",
    "reset_log_cache",
]
