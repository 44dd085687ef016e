"""The synchronous clients ``IoTHubDeviceClient`` and ``IoTHubModuleClient`` (drop-ins for
``azure.iot.device``'s). Every operation is one call into the native client, which releases
the GIL while it waits and bounds the wait (``operation_timeout``); handlers are called by
the native dispatcher thread, never the network loop, and an exception a handler raises is
logged under the ``ironhub`` logger.
"""

from typing import Any, Callable, Dict, List, Optional, Union

from . import _native

from ._base import ClientBase, DeviceFactories, ModuleFactories, _deprecated
from .models import Message, MethodRequest, MethodResponse


class _SyncOperations(ClientBase):
    """The blocking operations both sync clients have."""

    def connect(self) -> None:
        """Connects to the hub; returns once the hub has accepted the connection.

        :raises CredentialError: the hub refused the credentials.
        :raises ConnectionFailedError: the hub could not be reached.
        :raises ConnectionDroppedError: the connection dropped while connecting.
        :raises OperationTimeout: the hub did not answer in time.
        :raises ClientError: any other failure, or the client was shut down.
        """
        self._native.connect()

    def disconnect(self) -> None:
        """Disconnects from the hub; in-flight operations fail with ``OperationCancelled``."""
        self._native.disconnect()

    def shutdown(self) -> None:
        """Stops the client for good; every later call raises ``ClientError``."""
        self._native.shutdown()

    def update_sastoken(self, sastoken: str) -> None:
        """Replaces the SAS token of a client made by ``create_from_sastoken`` and
        re-authorizes the connection.

        :raises ClientError: the client was not created from a SAS token.
        :raises ValueError: malformed or expired token, or one for another hub or identity.
        """
        self._native.update_sastoken(sastoken)

    def send_message(self, message: Union[Message, Any]) -> None:
        """Sends telemetry; returns once the hub acknowledged it. A value that is not a
        ``Message`` is sent as ``Message(value)``.

        :raises ValueError: the message is larger than 256 KB.
        :raises NoConnectionError: not connected and ``auto_connect`` is off.
        :raises ClientError: (and subclasses) connection failures.
        """
        self._native.send_message(message)

    def send_messages(self, messages: List[Union[Message, Any]]) -> None:
        """ironhub: sends several messages pipelined (all in flight at once) and returns once
        the hub acknowledged every one; raises the first failure."""
        self._native.send_messages(messages)

    def send_method_response(self, method_response: MethodResponse) -> None:
        """Sends the response to a method request; returns once the hub acknowledged it."""
        self._native.send_method_response(method_response)

    def get_twin(self) -> Dict[str, Any]:
        """Fetches the twin: ``{"desired": {..., "$version": N}, "reported": {...}}``."""
        return self._native.get_twin()

    def patch_twin_reported_properties(self, reported_properties_patch: Dict[str, Any]) -> None:
        """Updates reported properties; a failure status from the hub raises ``ClientError``
        whose ``__cause__`` is a ``ServiceError``."""
        self._native.patch_twin_reported_properties(reported_properties_patch)

    def receive_method_request(
        self, method_name: Optional[str] = None, block: bool = True, timeout: Optional[float] = None
    ) -> Optional[MethodRequest]:
        """Deprecated since azure-iot-device 2.3.0: use ``on_method_request_received``.
        Returns the next request (for ``method_name``, or any not claimed by name), or
        ``None`` if none came before ``timeout`` (at once when ``block`` is false)."""
        _deprecated("receive_method_request", "on_method_request_received")
        return self._native.receive_method_request(method_name, block, timeout)

    def receive_twin_desired_properties_patch(
        self, block: bool = True, timeout: Optional[float] = None
    ) -> Optional[Dict[str, Any]]:
        """Deprecated since azure-iot-device 2.3.0: use
        ``on_twin_desired_properties_patch_received``. Returns the next patch or ``None``."""
        _deprecated("receive_twin_desired_properties_patch", "on_twin_desired_properties_patch_received")
        return self._native.receive_twin_desired_properties_patch(block, timeout)


class IoTHubDeviceClient(DeviceFactories, _SyncOperations):
    """A synchronous device client (drop-in for ``azure.iot.device.IoTHubDeviceClient``)."""

    def receive_message(self, block: bool = True, timeout: Optional[float] = None) -> Optional[Message]:
        """Deprecated since azure-iot-device 2.3.0: use ``on_message_received``. Returns the
        next cloud-to-device message, or ``None``."""
        _deprecated("receive_message", "on_message_received")
        return self._native.receive_message(block, timeout)

    def get_storage_info_for_blob(self, blob_name: str) -> Dict[str, Any]:
        """Where to upload ``blob_name``: ``correlationId``, ``hostName``, ``containerName``,
        ``blobName``, ``sasToken``."""
        return _native.get_storage_info_for_blob(self._native, blob_name)

    def notify_blob_upload_status(
        self, correlation_id: str, is_success: bool, status_code: int, status_description: str
    ) -> None:
        """Tells the hub how the upload of ``correlation_id`` ended."""
        _native.notify_blob_upload_status(self._native, correlation_id, is_success, status_code, status_description)

    def upload_blob(
        self,
        blob_name: str,
        path: Optional[str] = None,
        data: Optional[bytes] = None,
        block_size: Optional[int] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> Dict[str, Any]:
        """ironhub: uploads a file (``path``) or ``data`` in one call: storage info, blocks
        (each retried on failure, ``progress(sent, total)`` after each), notification."""
        return _native.upload_blob(self._native, blob_name, path, data, block_size, progress)


class IoTHubModuleClient(ModuleFactories, _SyncOperations):
    """A synchronous module client (drop-in for ``azure.iot.device.IoTHubModuleClient``)."""

    def send_message_to_output(self, message: Union[Message, Any], output_name: str) -> None:
        """Sends ``message`` to the module output ``output_name``; returns once acknowledged."""
        self._native.send_message_to_output(message, output_name)

    def invoke_method(
        self, method_params: Dict[str, Any], device_id: str, module_id: Optional[str] = None
    ) -> Dict[str, Any]:
        """Invokes a direct method on a device or module through the Edge hub (module
        clients created from the Edge environment only). ``method_params`` holds
        ``methodName``, ``payload``, ``responseTimeoutInSeconds``, ``connectTimeoutInSeconds``.
        Returns ``{"status": int, "payload": ...}``."""
        return self._native.invoke_method(method_params, device_id, module_id)

    def receive_message_on_input(
        self, input_name: str, block: bool = True, timeout: Optional[float] = None
    ) -> Optional[Message]:
        """Deprecated since azure-iot-device 2.3.0: use ``on_message_received``. Returns the
        next message that arrived on ``input_name``, or ``None``."""
        _deprecated("receive_message_on_input", "on_message_received")
        return self._native.receive_message_on_input(input_name, block, timeout)
