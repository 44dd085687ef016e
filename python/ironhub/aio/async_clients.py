"""The asyncio ``IoTHubDeviceClient`` and ``IoTHubModuleClient``. Each operation is the
native client's ``*_async`` method: an awaitable resolved from the core's own runtime (through
pyo3-async-runtimes), so no executor thread waits per call. Setting a handler never blocks the
event loop: the handler is recorded at once, the subscription is made in the background, and the
client's next awaited operation completes only after it. Handlers may be plain
functions or coroutine functions. A coroutine handler is started, in delivery order, on the
event loop that was running when it was set; the dispatcher does not wait for it to finish
(waiting would deadlock a loop that sets a handler while one of its coroutines is pending),
and an exception it raises is logged under the ``ironhub`` logger.
"""

import asyncio
import concurrent.futures
import functools
import logging
from typing import Any, Dict, List, Optional, Union

from .. import _native
from .._base import ClientBase, DeviceFactories, Handler, ModuleFactories, _deprecated
from ..models import Message, MethodRequest, MethodResponse

_logger = logging.getLogger("ironhub")


class _AsyncOperations(ClientBase):
    """The awaitable operations both asyncio clients have."""

    def _adapt_handler(self, value: Handler) -> Handler:
        if value is None or not asyncio.iscoroutinefunction(value):
            return value
        try:
            loop: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        coroutine_function = value

        def log_failure(fut: "concurrent.futures.Future[Any]") -> None:
            if not fut.cancelled() and fut.exception() is not None:
                _logger.error(
                    "Exception in the %s handler; the client goes on",
                    getattr(coroutine_function, "__name__", "coroutine"),
                    exc_info=fut.exception(),
                )

        @functools.wraps(coroutine_function)
        def run_on_loop(*args: Any) -> None:
            if loop is not None and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(coroutine_function(*args), loop).add_done_callback(log_failure)
            else:
                # No loop was running when the handler was set: run it here, to completion.
                asyncio.run(coroutine_function(*args))

        return run_on_loop

    def _install_handler(self, name: str, value: Handler) -> None:
        """Records the handler at once and subscribes in the background, so the event loop never
        waits for the hub; the next awaited operation of this client completes only after the
        subscription, and a failure goes to ``on_background_exception`` and the log."""
        self._native.set_handler(name, value, background=True)

    async def connect(self) -> None:
        """Connects to the hub (see ``ironhub.IoTHubDeviceClient.connect``)."""
        await self._native.connect_async()

    async def disconnect(self) -> None:
        """Disconnects; in-flight operations fail with ``OperationCancelled``."""
        await self._native.disconnect_async()

    async def shutdown(self) -> None:
        """Stops the client for good; every later call raises ``ClientError``."""
        await self._native.shutdown_async()

    async def update_sastoken(self, sastoken: str) -> None:
        """Replaces the SAS token of a ``create_from_sastoken`` client and re-authorizes."""
        await self._native.update_sastoken_async(sastoken)

    async def send_message(self, message: Union[Message, Any]) -> None:
        """Sends telemetry; completes once the hub acknowledged it. Calls awaited together
        are pipelined (all in flight at once, sent in call order)."""
        await self._native.send_message_async(message)

    async def send_messages(self, messages: List[Union[Message, Any]]) -> None:
        """ironhub: sends several messages pipelined and completes once the hub acknowledged
        every one; raises the first failure."""
        await self._native.send_messages_async(messages)

    async def send_method_response(self, method_response: MethodResponse) -> None:
        """Sends the response to a method request."""
        await self._native.send_method_response_async(method_response)

    async def get_twin(self) -> Dict[str, Any]:
        """Fetches the twin: ``{"desired": {...}, "reported": {...}}``."""
        return await self._native.get_twin_async()

    async def patch_twin_reported_properties(self, reported_properties_patch: Dict[str, Any]) -> None:
        """Updates reported properties."""
        await self._native.patch_twin_reported_properties_async(reported_properties_patch)

    async def receive_method_request(self, method_name: Optional[str] = None) -> MethodRequest:
        """Deprecated since azure-iot-device 2.3.0: waits for the next method request."""
        _deprecated("receive_method_request", "on_method_request_received")
        return await self._native.receive_method_request_async(method_name, True, None)

    async def receive_twin_desired_properties_patch(self) -> Dict[str, Any]:
        """Deprecated since azure-iot-device 2.3.0: waits for the next desired patch."""
        _deprecated("receive_twin_desired_properties_patch", "on_twin_desired_properties_patch_received")
        return await self._native.receive_twin_desired_properties_patch_async(True, None)


class IoTHubDeviceClient(DeviceFactories, _AsyncOperations):
    """An asyncio device client (drop-in for ``azure.iot.device.aio.IoTHubDeviceClient``)."""

    async def receive_message(self) -> Message:
        """Deprecated since azure-iot-device 2.3.0: waits for the next C2D message."""
        _deprecated("receive_message", "on_message_received")
        return await self._native.receive_message_async(True, None)

    async def get_storage_info_for_blob(self, blob_name: str) -> Dict[str, Any]:
        """Where to upload ``blob_name`` (see the sync client)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, _native.get_storage_info_for_blob, self._native, blob_name)

    async def notify_blob_upload_status(
        self, correlation_id: str, is_success: bool, status_code: int, status_description: str
    ) -> None:
        """Tells the hub how the upload of ``correlation_id`` ended."""
        call = functools.partial(
            _native.notify_blob_upload_status, self._native, correlation_id, is_success, status_code, status_description
        )
        await asyncio.get_running_loop().run_in_executor(None, call)


class IoTHubModuleClient(ModuleFactories, _AsyncOperations):
    """An asyncio module client (drop-in for ``azure.iot.device.aio.IoTHubModuleClient``)."""

    async def send_message_to_output(self, message: Union[Message, Any], output_name: str) -> None:
        """Sends ``message`` to the module output ``output_name``."""
        await self._native.send_message_to_output_async(message, output_name)

    async def invoke_method(
        self, method_params: Dict[str, Any], device_id: str, module_id: Optional[str] = None
    ) -> Dict[str, Any]:
        """Invokes a direct method through the Edge hub; returns ``{"status", "payload"}``."""
        return await self._native.invoke_method_async(method_params, device_id, module_id)

    async def receive_message_on_input(self, input_name: str) -> Message:
        """Deprecated since azure-iot-device 2.3.0: waits for the next message on an input."""
        _deprecated("receive_message_on_input", "on_message_received")
        return await self._native.receive_message_on_input_async(input_name, True, None)
