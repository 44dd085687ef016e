"""Type stubs of ``ironhub._native``, the PyO3 module over the Rust core. Checked against
the built module by ``python -m mypy.stubtest ironhub._native``."""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, final

__all__ = [
    "__version__",
    "OperationCancelled",
    "OperationTimeout",
    "ServiceError",
    "ClientError",
    "ConnectionFailedError",
    "ConnectionDroppedError",
    "NoConnectionError",
    "CredentialError",
    "Client",
    "ProvisioningClient",
    "derive_device_key",
    "get_storage_info_for_blob",
    "notify_blob_upload_status",
    "upload_blob",
    "message_size",
    "reset_log_cache",
    "HANDLER_NAMES",
]

__version__: str
HANDLER_NAMES: List[str]

class OperationCancelled(Exception): ...
class OperationTimeout(Exception): ...
class ServiceError(Exception): ...
class ClientError(Exception): ...
class ConnectionFailedError(ClientError): ...
class ConnectionDroppedError(ClientError): ...
class NoConnectionError(ClientError): ...
class CredentialError(ClientError): ...

def message_size(message: Any) -> int: ...
def reset_log_cache() -> None: ...

@final
class Client:
    @staticmethod
    def create_from_connection_string(
        connection_string: str, kwargs: Optional[Dict[str, Any]], refused: Sequence[str]
    ) -> Client: ...
    @staticmethod
    def create_from_sastoken(
        sastoken: str, kwargs: Optional[Dict[str, Any]], refused: Sequence[str]
    ) -> Client: ...
    @staticmethod
    def create_from_symmetric_key(
        symmetric_key: str,
        hostname: str,
        device_id: str,
        kwargs: Optional[Dict[str, Any]],
        refused: Sequence[str],
    ) -> Client: ...
    @staticmethod
    def create_from_x509_certificate(
        x509: Any,
        hostname: str,
        device_id: str,
        module_id: Optional[str],
        kwargs: Optional[Dict[str, Any]],
        refused: Sequence[str],
    ) -> Client: ...
    @staticmethod
    def create_from_edge_environment(
        kwargs: Optional[Dict[str, Any]], refused: Sequence[str]
    ) -> Client: ...
    @property
    def connected(self) -> bool: ...
    @property
    def device_id(self) -> str: ...
    @property
    def module_id(self) -> Optional[str]: ...
    @property
    def hostname(self) -> str: ...
    def connect(self) -> None: ...
    def disconnect(self) -> None: ...
    def shutdown(self) -> None: ...
    def update_sastoken(self, sastoken: Any) -> None: ...
    def send_message(self, message: Any) -> None: ...
    def send_message_to_output(self, message: Any, output_name: Any) -> None: ...
    def send_messages(self, messages: Any) -> None: ...
    def send_method_response(self, response: Any) -> None: ...
    def get_twin(self) -> Any: ...
    def patch_twin_reported_properties(self, patch: Any) -> None: ...
    def invoke_method(
        self, method_params: Any, device_id: Any, module_id: Optional[Any] = None
    ) -> Any: ...
    def receive_message(self, block: bool = True, timeout: Optional[float] = None) -> Any: ...
    def receive_message_on_input(
        self, input_name: Any, block: bool = True, timeout: Optional[float] = None
    ) -> Any: ...
    def receive_method_request(
        self, method_name: Optional[Any] = None, block: bool = True, timeout: Optional[float] = None
    ) -> Any: ...
    def receive_twin_desired_properties_patch(
        self, block: bool = True, timeout: Optional[float] = None
    ) -> Any: ...
    def set_handler(self, kind: str, handler: Optional[Callable[..., Any]]) -> None: ...
    def start(
        self,
        op: str,
        args: Tuple[Any, ...],
        done: Callable[[Optional[BaseException], Any], None],
    ) -> None: ...

@final
class ProvisioningClient:
    @staticmethod
    def create_from_symmetric_key(
        provisioning_host: str,
        registration_id: str,
        id_scope: str,
        symmetric_key: str,
        kwargs: Optional[Dict[str, Any]],
        refused: Sequence[str],
    ) -> "ProvisioningClient": ...
    @staticmethod
    def create_from_x509_certificate(
        provisioning_host: str,
        registration_id: str,
        id_scope: str,
        x509: Any,
        kwargs: Optional[Dict[str, Any]],
        refused: Sequence[str],
    ) -> "ProvisioningClient": ...
    @property
    def provisioning_payload(self) -> Any: ...
    @provisioning_payload.setter
    def provisioning_payload(self, value: Any) -> None: ...
    def register(self) -> Dict[str, Any]: ...

def derive_device_key(group_symmetric_key: str, registration_id: str) -> str: ...
def get_storage_info_for_blob(client: Client, blob_name: str) -> Dict[str, Any]: ...
def notify_blob_upload_status(
    client: Client, correlation_id: str, is_success: bool, status_code: int, status_description: str
) -> None: ...
def upload_blob(
    client: Client,
    blob_name: str,
    path: Optional[str] = None,
    data: Optional[bytes] = None,
    block_size: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Dict[str, Any]: ...
