"""The asyncio ``IoTHubDeviceClient`` and ``IoTHubModuleClient``. Each operation starts in
the native core and completes an ``asyncio`` future from an ironhub thread through
``loop.call_soon_threadsafe``; no executor thread waits per call. Handlers may be plain
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
from .._base import ClientBase, DeviceFactories, Handler, ModuleFactories, as_message
from ..models import Message, MethodRequest, MethodResponse

_logger = logging.getLogger("ironhub")


def _settle(fut: "asyncio.Future[Any]", exc: Optional[BaseException], result: Any) -> None:
    if fut.cancelled():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class _AsyncOperations(ClientBase):
    """The awaitable operations both asyncio clients have."""

    async def _run(self, op: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def done(exc: Optional[BaseException], result: Any) -> None:
            loop.call_soon_threadsafe(_settle, fut, exc, result)

        self._native.start(op, args, done)
        return await fut

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

    async def connect(self) -> None:
        """Connects to the hub (see ``ironhub.IoTHubDeviceClient.connect``)."""
        await self._run("connect")

    async def disconnect(self) -> None:
        """Disconnects; in-flight operations fail with ``OperationCancelled``."""
        await self._run("disconnect")

    async def shutdown(self) -> None:
        """Stops the client for good; every later call raises ``ClientError``."""
        await self._run("shutdown")

    async def update_sastoken(self, sastoken: str) -> None:
        """Replaces the SAS token of a ``create_from_sastoken`` client and re-authorizes."""
        await self._run("update_sastoken", sastoken)

    async def send_message(self, message: Union[Message, Any]) -> None:
        """Sends telemetry; completes once the hub acknowledged it. Calls awaited together
        are pipelined (all in flight at once, sent in call order)."""
        await self._run("send_message", as_message(message))

    async def send_messages(self, messages: List[Union[Message, Any]]) -> None:
        """ironhub: sends several messages pipelined and completes once the hub acknowledged
        every one; raises the first failure."""
        await self._run("send_messages", [as_message(m) for m in messages])

    async def send_method_response(self, method_response: MethodResponse) -> None:
        """Sends the response to a method request."""
        await self._run("send_method_response", method_response)

    async def get_twin(self) -> Dict[str, Any]:
        """Fetches the twin: ``{"desired": {...}, "reported": {...}}``."""
        return await self._run("get_twin")

    async def patch_twin_reported_properties(self, reported_properties_patch: Dict[str, Any]) -> None:
        """Updates reported properties."""
        await self._run("patch_twin_reported_properties", reported_properties_patch)

    async def receive_method_request(self, method_name: Optional[str] = None) -> MethodRequest:
        """Deprecated since azure-iot-device 2.3.0: waits for the next method request."""
        return await self._run("receive_method_request", method_name, True, None)

    async def receive_twin_desired_properties_patch(self) -> Dict[str, Any]:
        """Deprecated since azure-iot-device 2.3.0: waits for the next desired patch."""
        return await self._run("receive_twin_desired_properties_patch", True, None)


class IoTHubDeviceClient(DeviceFactories, _AsyncOperations):
    """An asyncio device client (drop-in for ``azure.iot.device.aio.IoTHubDeviceClient``)."""

    async def receive_message(self) -> Message:
        """Deprecated since azure-iot-device 2.3.0: waits for the next C2D message."""
        return await self._run("receive_message", True, None)

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
        await self._run("send_message_to_output", as_message(message), output_name)

    async def invoke_method(
        self, method_params: Dict[str, Any], device_id: str, module_id: Optional[str] = None
    ) -> Dict[str, Any]:
        """Invokes a direct method through the Edge hub; returns ``{"status", "payload"}``."""
        return await self._run("invoke_method", method_params, device_id, module_id)

    async def receive_message_on_input(self, input_name: str) -> Message:
        """Deprecated since azure-iot-device 2.3.0: waits for the next message on an input."""
        return await self._run("receive_message_on_input", input_name, True, None)
