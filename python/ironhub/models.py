"""Value objects of the client API: ``Message``, ``MethodRequest``, ``MethodResponse``,
``X509`` and ``ProxyOptions``, shaped like their ``azure.iot.device`` namesakes so code
written for that SDK keeps working. They hold data only; the native core converts them
when they are sent.
"""

from typing import Any, Dict, Optional

from . import _native

# The interface id IoT Hub reserves for Azure Security Center for IoT messages (the core's).
_SECURITY_MESSAGE_INTERFACE_ID = _native.SECURITY_MESSAGE_INTERFACE_ID


class Message:
    """A message to or from IoT Hub.

    :ivar data: the payload (``str``, ``bytes``, ``bytearray``, ``int``, ``float`` or ``None``
        when sent; always ``bytes`` when received).
    :ivar custom_properties: application properties, string keys and values.
    :ivar message_id: user-settable id for request-reply patterns.
    :ivar expiry_time_utc: expiry of the message (ISO 8601, UTC).
    :ivar correlation_id: in a reply, usually the ``message_id`` of the request.
    :ivar user_id: the origin of the message.
    :ivar content_encoding: encoding of the data, e.g. ``"utf-8"``.
    :ivar content_type: content type of the data, e.g. ``"application/json"``.
    :ivar output_name: the module output the message is sent to.
    :ivar input_name: the module input the message was received on.
    :ivar ack: the feedback the sender of a cloud-to-device message asked for.
    """

    def __init__(
        self,
        data: Any,
        message_id: Optional[str] = None,
        content_encoding: Optional[str] = None,
        content_type: Optional[str] = None,
        output_name: Optional[str] = None,
    ) -> None:
        """Creates a message with ``data`` as payload and the given system properties."""
        self.data = data
        self.custom_properties: Dict[str, str] = {}
        self.message_id = message_id
        self.expiry_time_utc: Optional[str] = None
        self.correlation_id: Optional[str] = None
        self.user_id: Optional[str] = None
        self.content_encoding = content_encoding
        self.content_type = content_type
        self.output_name = output_name
        self.input_name: Optional[str] = None
        self.ack: Optional[str] = None
        self._iothub_interface_id: Optional[str] = None

    @property
    def iothub_interface_id(self) -> Optional[str]:
        """The interface id of the message (set by :meth:`set_as_security_message`)."""
        return self._iothub_interface_id

    def set_as_security_message(self) -> None:
        """Marks the message as an Azure Security Center for IoT security message."""
        self._iothub_interface_id = _SECURITY_MESSAGE_INTERFACE_ID

    def get_size(self) -> int:
        """Size in bytes of the message as IoT Hub counts it against its 256 KB limit
        (payload plus properties), computed by the native core."""
        return _native.message_size(self)

    def __str__(self) -> str:
        """The payload as text, like azure-iot-device's ``str(message)``."""
        return str(self.data)

    def __repr__(self) -> str:
        return "Message(data={!r}, message_id={!r})".format(self.data, self.message_id)


class MethodRequest:
    """A direct method invocation received from the hub (read-only)."""

    def __init__(self, request_id: str, name: str, payload: Any) -> None:
        """Creates a request; the client builds these from what the hub sends."""
        self._request_id = request_id
        self._name = name
        self._payload = payload

    @property
    def request_id(self) -> str:
        """The request id, to be echoed in the :class:`MethodResponse`."""
        return self._request_id

    @property
    def name(self) -> str:
        """The name of the invoked method."""
        return self._name

    @property
    def payload(self) -> Any:
        """The JSON payload of the request, decoded."""
        return self._payload

    def __repr__(self) -> str:
        return "MethodRequest(request_id={!r}, name={!r})".format(self._request_id, self._name)


class MethodResponse:
    """The answer to a :class:`MethodRequest`.

    :ivar request_id: the id of the request being answered.
    :ivar status: the status code of the method's execution.
    :ivar payload: any JSON-serializable value, or ``None``.
    """

    def __init__(self, request_id: str, status: int, payload: Any = None) -> None:
        """Creates a response to the request with id ``request_id``."""
        self.request_id = request_id
        self.status = status
        self.payload = payload

    @classmethod
    def create_from_method_request(
        cls, method_request: MethodRequest, status: int, payload: Any = None
    ) -> "MethodResponse":
        """Creates the response to ``method_request``."""
        return cls(request_id=method_request.request_id, status=status, payload=payload)

    def __repr__(self) -> str:
        return "MethodResponse(request_id={!r}, status={!r})".format(self.request_id, self.status)


class X509:
    """An X.509 client certificate: paths to the PEM certificate (chain) and private key."""

    def __init__(self, cert_file: str, key_file: str, pass_phrase: Optional[str] = None) -> None:
        """``cert_file`` and ``key_file`` are file paths; ``pass_phrase`` decrypts the key."""
        self._cert_file = cert_file
        self._key_file = key_file
        self._pass_phrase = pass_phrase

    @property
    def certificate_file(self) -> str:
        """Path of the certificate (or chain) file."""
        return self._cert_file

    @property
    def key_file(self) -> str:
        """Path of the private key file."""
        return self._key_file

    @property
    def pass_phrase(self) -> Optional[str]:
        """Pass phrase of the private key, if it is encrypted."""
        return self._pass_phrase

    def __repr__(self) -> str:
        # The pass phrase is a secret: never in a repr.
        return "X509(cert_file={!r}, key_file={!r})".format(self._cert_file, self._key_file)


class ProxyOptions:
    """How to reach the hub through a proxy (the MQTT connection is tunnelled)."""

    def __init__(
        self,
        proxy_type: str,
        proxy_addr: str,
        proxy_port: int,
        proxy_username: Optional[str] = None,
        proxy_password: Optional[str] = None,
    ) -> None:
        """``proxy_type`` is ``"HTTP"``, ``"SOCKS4"`` or ``"SOCKS5"``, in any case (else
        ``ValueError``): the core's rule, the same in every ironhub surface."""
        _native.check_proxy_type(proxy_type)
        self._proxy_type = proxy_type
        self._proxy_addr = proxy_addr
        self._proxy_port = int(proxy_port)
        self._proxy_username = proxy_username
        self._proxy_password = proxy_password

    @property
    def proxy_type(self) -> str:
        """``"HTTP"``, ``"SOCKS4"`` or ``"SOCKS5"``."""
        return self._proxy_type

    @property
    def proxy_address(self) -> str:
        """Host name or IP address of the proxy."""
        return self._proxy_addr

    @property
    def proxy_port(self) -> int:
        """Port of the proxy."""
        return self._proxy_port

    @property
    def proxy_username(self) -> Optional[str]:
        """User name for the proxy, if it needs one."""
        return self._proxy_username

    @property
    def proxy_password(self) -> Optional[str]:
        """Password for the proxy, if it needs one."""
        return self._proxy_password

    def __repr__(self) -> str:
        return "ProxyOptions(proxy_type={!r}, proxy_addr={!r}, proxy_port={!r})".format(
            self._proxy_type, self._proxy_addr, self._proxy_port
        )
