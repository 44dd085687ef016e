"""What the synchronous and the asyncio clients share: the ``create_from_*`` factories, the
``connected`` property and the handler properties. The operations live in ``sync_clients``
and ``aio``. (The rule that an application uses either handlers or the deprecated
``receive_*`` APIs, never both, is enforced by the core.)
"""

import warnings
from typing import Any, Callable, Dict, Optional, Type, TypeVar

from . import _native
from .models import X509

Handler = Optional[Callable[..., Any]]
C = TypeVar("C", bound="ClientBase")

# Factory keywords each factory refuses (the full list lives in the native module).
_NOT_FOR_CONNECTION_STRING = ("gateway_hostname",)
_NOT_FOR_SASTOKEN = ("sastoken_ttl",)
_NOT_FOR_SYMMETRIC_KEY = ()
_NOT_FOR_X509 = ("sastoken_ttl",)
_NOT_FOR_EDGE = ("server_verification_cert", "gateway_hostname")

class ClientBase:
    """State and API shared by every client. Not instantiated directly: use a
    ``create_from_*`` classmethod."""

    _is_module = False
    # The handlers set, as the application gave them. Read-only here: a client gets a dict of its
    # own when a handler is first set, so the many telemetry-only clients of a process carry none.
    _handlers: Dict[str, Handler] = {}

    def __init__(self, native: "_native.Client") -> None:
        """Wraps a native client; applications use the ``create_from_*`` classmethods."""
        self._native = native

    # -- factories -----------------------------------------------------------------------

    @classmethod
    def create_from_connection_string(cls: Type[C], connection_string: str, **kwargs: Any) -> C:
        """Creates a client from a device or module connection string.

        Keywords: ``server_verification_cert``, ``websockets``, ``cipher``, ``product_info``,
        ``proxy_options``, ``sastoken_ttl``, ``keep_alive``, ``auto_connect``,
        ``connection_retry``, ``connection_retry_interval``, ``ensure_desired_properties``, and
        ironhub's ``mqtt_port``, ``https_port``, ``operation_timeout``, ``max_queued_messages``,
        ``max_queued_bytes``.

        :raises TypeError: unknown keyword, or a keyword value of the wrong type.
        :raises ValueError: invalid connection string (an ``x509=true`` one needs
            ``create_from_x509_certificate``) or keyword value.
        """
        return cls(
            _native.Client.create_from_connection_string(
                connection_string, kwargs, _NOT_FOR_CONNECTION_STRING
            )
        )

    @classmethod
    def create_from_sastoken(cls: Type[C], sastoken: str, **kwargs: Any) -> C:
        """Creates a client from a SAS token string. The token is not renewable: the client
        calls ``on_new_sastoken_required`` 120 s before it expires, and the application
        answers with ``update_sastoken``.

        :raises TypeError: unknown keyword (``sastoken_ttl`` is refused here).
        :raises ValueError: malformed or expired token, or a token for the wrong kind of
            identity (a module's token for a device client and vice versa).
        """
        native = _native.Client.create_from_sastoken(sastoken, kwargs, _NOT_FOR_SASTOKEN)
        if (native.module_id is not None) != cls._is_module:
            native.shutdown()
            raise ValueError(
                "Provided SasToken is for a {}".format("device" if cls._is_module else "module")
            )
        return cls(native)

    # -- state ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the client is connected right now (read-only)."""
        return self._native.connected

    # -- handlers ------------------------------------------------------------------------

    def _adapt_handler(self, value: Handler) -> Handler:
        """Hook for the asyncio clients (their coroutine handlers run on the app's loop)."""
        return value

    def _install_handler(self, name: str, value: Handler) -> None:
        """Hands the handler to the native client; returns once it is (un)subscribed."""
        self._native.set_handler(name, value)

    def _set_handler(self, name: str, value: Handler) -> None:
        if value is not None and not callable(value):
            raise TypeError("handler must be callable or None")
        self._install_handler(name, self._adapt_handler(value))
        if "_handlers" not in vars(self):
            self._handlers = {}
        self._handlers[name] = value

    @property
    def connection_state_reason(self) -> Optional[str]:
        """ironhub: why the connection state last changed, as azure-iot-sdk-c names it
        (``"OK"``, ``"NO_NETWORK"``, ``"EXPIRED_SAS_TOKEN"``, ``"DEVICE_DISABLED"``,
        ``"BAD_CREDENTIAL"``, ``"RETRY_EXPIRED"``, ``"COMMUNICATION_ERROR"``,
        ``"NO_PING_RESPONSE"``, ``"CLIENT_CLOSE"``); ``None`` before the first change."""
        return self._native.connection_state_reason

    @property
    def on_message_received(self) -> Handler:
        """Called with each received ``Message`` (cloud-to-device messages for a device,
        input messages for a module). Setting it subscribes, connecting if needed and
        ``auto_connect`` is on; ``None`` unsubscribes."""
        return self._handlers.get("message")

    @on_message_received.setter
    def on_message_received(self, value: Handler) -> None:
        self._set_handler("message", value)

    @property
    def on_method_request_received(self) -> Handler:
        """Called with each ``MethodRequest``; answer it with ``send_method_response``."""
        return self._handlers.get("method_request")

    @on_method_request_received.setter
    def on_method_request_received(self, value: Handler) -> None:
        self._set_handler("method_request", value)

    @property
    def on_twin_desired_properties_patch_received(self) -> Handler:
        """Called with each desired properties patch (a dict carrying ``$version``)."""
        return self._handlers.get("twin_desired_properties_patch")

    @on_twin_desired_properties_patch_received.setter
    def on_twin_desired_properties_patch_received(self, value: Handler) -> None:
        self._set_handler("twin_desired_properties_patch", value)

    @property
    def on_connection_state_change(self) -> Handler:
        """Called with no argument whenever the connection state changes."""
        return self._handlers.get("connection_state_change")

    @on_connection_state_change.setter
    def on_connection_state_change(self, value: Handler) -> None:
        self._set_handler("connection_state_change", value)

    @property
    def on_new_sastoken_required(self) -> Handler:
        """Called with no argument 120 s before a user-supplied SAS token expires."""
        return self._handlers.get("new_sastoken_required")

    @on_new_sastoken_required.setter
    def on_new_sastoken_required(self, value: Handler) -> None:
        self._set_handler("new_sastoken_required", value)

    @property
    def on_background_exception(self) -> Handler:
        """Called with the exception object when something fails in the background."""
        return self._handlers.get("background_exception")

    @on_background_exception.setter
    def on_background_exception(self, value: Handler) -> None:
        self._set_handler("background_exception", value)


class DeviceFactories(ClientBase):
    """Factories only device clients have."""

    _is_module = False

    @classmethod
    def create_from_symmetric_key(
        cls: Type[C], symmetric_key: str, hostname: str, device_id: str, **kwargs: Any
    ) -> C:
        """Creates a device client that signs its own SAS tokens with ``symmetric_key``."""
        return cls(
            _native.Client.create_from_symmetric_key(
                symmetric_key, hostname, device_id, kwargs, _NOT_FOR_SYMMETRIC_KEY
            )
        )

    @classmethod
    def create_from_x509_certificate(
        cls: Type[C], x509: X509, hostname: str, device_id: str, **kwargs: Any
    ) -> C:
        """Creates a device client that authenticates with an X.509 client certificate."""
        return cls(
            _native.Client.create_from_x509_certificate(
                x509, hostname, device_id, None, kwargs, _NOT_FOR_X509
            )
        )


class ModuleFactories(ClientBase):
    """Factories only module clients have."""

    _is_module = True

    @classmethod
    def create_from_x509_certificate(  # type: ignore[override]
        cls: Type[C], x509: X509, hostname: str, device_id: str, module_id: str, **kwargs: Any
    ) -> C:
        """Creates a module client that authenticates with an X.509 client certificate."""
        return cls(
            _native.Client.create_from_x509_certificate(
                x509, hostname, device_id, module_id, kwargs, _NOT_FOR_X509
            )
        )

    @classmethod
    def create_from_edge_environment(cls: Type[C], **kwargs: Any) -> C:
        """Creates a module client from the IoT Edge environment (``IOTEDGE_*`` variables, or
        ``EdgeHubConnectionString`` + ``EdgeModuleCACertificateFile`` for development).

        :raises OSError: the environment is not configured.
        """
        return cls(_native.Client.create_from_edge_environment(kwargs, _NOT_FOR_EDGE))


def _deprecated(name: str, instead: str) -> None:
    """The warning azure-iot-device's deprecated ``receive_*`` APIs give."""
    warnings.warn(
        "{} is deprecated since azure-iot-device 2.3.0: use {}".format(name, instead),
        DeprecationWarning,
        stacklevel=3,
    )
