"""asyncio clients, mirroring ``azure.iot.device.aio``: the same classes and method names,
with every operation awaitable. Operations run in the native core's background and resolve
an asyncio future, so many of them can be in flight at once (``send_messages``, or
``asyncio.gather`` over ``send_message`` calls, pipelines telemetry)."""

from ..models import Message, MethodRequest, MethodResponse, ProxyOptions, X509
from .async_clients import IoTHubDeviceClient, IoTHubModuleClient

__all__ = [
    "IoTHubDeviceClient",
    "IoTHubModuleClient",
    "Message",
    "MethodRequest",
    "MethodResponse",
    "X509",
    "ProxyOptions",
]
