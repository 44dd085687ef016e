"""asyncio clients, mirroring ``azure.iot.device.aio``: the same classes and method names,
with every operation awaitable. Operations run in the native core's background and resolve
an asyncio future, so many of them can be in flight at once (``send_messages``, or
``asyncio.gather`` over ``send_message`` calls, pipelines telemetry)."""

from ..models import Message, MethodRequest, MethodResponse, ProxyOptions, X509
from ..provisioning import RegistrationResult, RegistrationState
from .async_clients import IoTHubDeviceClient, IoTHubModuleClient
from .provisioning import ProvisioningDeviceClient

__all__ = [
    "IoTHubDeviceClient",
    "IoTHubModuleClient",
    "ProvisioningDeviceClient",
    "RegistrationResult",
    "RegistrationState",
    "Message",
    "MethodRequest",
    "MethodResponse",
    "X509",
    "ProxyOptions",
]
