"""Owns the operator's side of a running emulator: the IoT Hub service REST API (devices, modules,
twins, direct methods) and the emulator's control API (telemetry the hub received, cloud-to-device
messages, module inputs, routes, forced disconnects), over HTTPS with a service SAS token.

Standard library only, so the wheel drags no HTTP client into a user's test environment.
"""

import base64
import hashlib
import hmac
import http.client
import json
import ssl
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union, cast

from .process import HubInfo

API_VERSION = "2021-04-12"
SAS_TTL_S = 3600


class HubError(Exception):
    """The hub answered an error: `status` (HTTP), `error_code` (e.g. 404001) and its message."""

    def __init__(self, method: str, path: str, status: int, error_code: Optional[int], message: str) -> None:
        super().__init__("{} {} -> {} {}: {}".format(method, path, status, error_code or "", message))
        self.status = status
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True)
class TelemetryMessage:
    """A device-to-cloud message as the hub recorded it."""

    sequence_number: int
    device_id: str
    module_id: Optional[str]
    output_name: Optional[str]
    body: bytes
    properties: Dict[str, str] = field(default_factory=dict)
    system_properties: Dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class MethodResult:
    """A direct method's answer: the status and payload the device responded with."""

    status: int
    payload: Any


class ConnectionString(str):
    """A device or module connection string (a plain `str` for every API) that also says whose."""

    device_id: str
    module_id: Optional[str]

    def __new__(cls, value: str, device_id: str, module_id: Optional[str]) -> "ConnectionString":
        self = super().__new__(cls, value)
        self.device_id = device_id
        self.module_id = module_id
        return self


def service_sas_token(hostname: str, policy: str, key_b64: str, ttl_s: int = SAS_TTL_S) -> str:
    """A service SAS token for `hostname` signed with a shared access policy key."""
    expiry = int(time.time()) + ttl_s
    resource = urllib.parse.quote(hostname, safe="")
    digest = hmac.new(base64.b64decode(key_b64), "{}\n{}".format(resource, expiry).encode(), hashlib.sha256)
    signature = urllib.parse.quote(base64.b64encode(digest.digest()).decode(), safe="")
    return "SharedAccessSignature sr={}&sig={}&se={}&skn={}".format(resource, signature, expiry, policy)


def _quote(segment: str) -> str:
    if not isinstance(segment, str) or not segment:
        raise ValueError("identifiers must be non-empty strings, not {!r}".format(segment))
    return urllib.parse.quote(segment, safe="")


def _message_body(body: Union[str, bytes], properties: Optional[Dict[str, str]], system: Dict[str, Any]) -> Dict[str, Any]:
    if isinstance(body, str):
        out: Dict[str, Any] = {"bodyText": body}
    elif isinstance(body, (bytes, bytearray)):
        out = {"body": base64.b64encode(bytes(body)).decode()}
    else:
        raise TypeError("body must be str or bytes, not {}".format(type(body).__name__))
    out["properties"] = dict(properties or {})
    names = {"message_id": "messageId", "correlation_id": "correlationId", "user_id": "userId",
             "content_type": "contentType", "content_encoding": "contentEncoding", "expiry_time_utc": "expiryTimeUtc"}
    for key, value in system.items():
        if key not in names:
            raise TypeError("unknown message property {!r} (known: {})".format(key, ", ".join(sorted(names))))
        if value is not None:
            out[names[key]] = value
    return out


class IoTHub:
    """Service-side calls against one running emulator (what a backend or a test needs)."""

    def __init__(self, info: HubInfo, proxy: Optional[Tuple[str, int]] = None) -> None:
        self.info = info
        cs = dict(seg.split("=", 1) for seg in info.service_connection_string.split(";") if seg)
        self._policy = cs["SharedAccessKeyName"]
        self._policy_key = cs["SharedAccessKey"]
        self._tls = ssl.create_default_context(cafile=info.ca_file)
        self._proxy = proxy

    # -- what clients need ---------------------------------------------------------------

    @property
    def hostname(self) -> str:
        return self.info.hostname

    @property
    def mqtt_port(self) -> int:
        return self.info.mqtt_port

    @property
    def https_port(self) -> int:
        return self.info.https_port

    @property
    def service_connection_string(self) -> str:
        return self.info.service_connection_string

    @property
    def ca_file(self) -> str:
        return self.info.ca_file

    @property
    def ca_pem(self) -> str:
        return self.info.ca_pem

    @property
    def proxy_address(self) -> Optional[Tuple[str, int]]:
        """(host, port) of the HTTP CONNECT proxy that maps 8883/443 to the emulator's free ports
        (pytest `--iothub-ports=free`), or None when it listens on 8883/443 itself."""
        return self._proxy

    @property
    def proxy_options(self) -> Any:
        """That proxy as an `azure.iot.device.ProxyOptions` (None when there is none)."""
        if self._proxy is None:
            return None
        from azure.iot.device import ProxyOptions  # the official SDK is the user's dependency, not ours

        return ProxyOptions("HTTP", self._proxy[0], self._proxy[1])  # type: ignore[no-untyped-call]

    @property
    def device_client_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for `IoTHubDeviceClient/IoTHubModuleClient.create_from_*` that make
        the official SDK trust and reach this emulator in either port mode."""
        kwargs: Dict[str, Any] = {"server_verification_cert": self.ca_pem}
        if self._proxy is not None:
            kwargs["proxy_options"] = self.proxy_options
        return kwargs

    # -- HTTP plumbing -------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 30.0,
                headers: Optional[Dict[str, str]] = None, **query: Any) -> Any:
        """One call to the service or control API; returns the decoded JSON answer (None when
        empty) and raises HubError for a status of 300 or more."""
        query.setdefault("api-version", API_VERSION)
        url = path + "?" + urllib.parse.urlencode(query)
        sent_headers = {
            "Authorization": service_sas_token(self.hostname, self._policy, self._policy_key),
            "Content-Type": "application/json; charset=utf-8",
        }
        sent_headers.update(headers or {})
        data = None if body is None else json.dumps(body).encode()
        # http.client, not urllib: no proxy from the environment must come between a test and its hub.
        conn = http.client.HTTPSConnection(self.hostname, self.https_port, context=self._tls, timeout=timeout)
        try:
            conn.request(method, url, body=data, headers=sent_headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        if response.status >= 300:
            code, message = _error_details(raw)
            raise HubError(method, path, response.status, code, message)
        return json.loads(raw) if raw else None

    # -- registry ------------------------------------------------------------------------

    def create_device(self, device_id: Optional[str] = None, *, status: str = "enabled") -> ConnectionString:
        """Registers a device with SAS keys generated by the hub and returns its connection
        string. Without `device_id` a unique one is made up: the result's `.device_id` says which."""
        device_id = device_id or "device-" + uuid.uuid4().hex[:12]
        body = {"deviceId": device_id, "status": status,
                "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}}
        created = self.request("PUT", "/devices/" + _quote(device_id), body)
        return self._connection_string(device_id, None, created)

    def create_module(self, device_id: str, module_id: str) -> ConnectionString:
        """Registers a module on an existing device and returns its connection string."""
        body = {"deviceId": device_id, "moduleId": module_id,
                "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}}
        created = self.request("PUT", "/devices/{}/modules/{}".format(_quote(device_id), _quote(module_id)), body)
        return self._connection_string(device_id, module_id, created)

    def _connection_string(self, device_id: str, module_id: Optional[str], identity: Dict[str, Any]) -> ConnectionString:
        key = identity["authentication"]["symmetricKey"]["primaryKey"]
        cs = "HostName={};DeviceId={}".format(self.hostname, device_id)
        if module_id is not None:
            cs += ";ModuleId={}".format(module_id)
        return ConnectionString(cs + ";SharedAccessKey={}".format(key), device_id, module_id)

    def get_device(self, device_id: str) -> Dict[str, Any]:
        return cast(Dict[str, Any], self.request("GET", "/devices/" + _quote(device_id)))

    def delete_device(self, device_id: str) -> None:
        self.request("DELETE", "/devices/" + _quote(device_id), headers={"If-Match": '"*"'})

    # -- twins and direct methods --------------------------------------------------------

    @staticmethod
    def _twin_path(device_id: str, module_id: Optional[str]) -> str:
        path = "/twins/" + _quote(device_id)
        return path if module_id is None else path + "/modules/" + _quote(module_id)

    def get_twin(self, device_id: str, module_id: Optional[str] = None) -> Dict[str, Any]:
        return cast(Dict[str, Any], self.request("GET", self._twin_path(device_id, module_id)))

    def update_desired_properties(self, device_id: str, desired: Dict[str, Any],
                                  module_id: Optional[str] = None) -> Dict[str, Any]:
        """Merges `desired` into the twin's desired properties (None deletes a key); a connected
        device gets the patch. Returns the twin."""
        if not isinstance(desired, dict):
            raise TypeError("desired must be a dict")
        body = {"properties": {"desired": desired}}
        return cast(Dict[str, Any], self.request("PATCH", self._twin_path(device_id, module_id), body))

    def invoke_method(self, device_id: str, method_name: str, payload: Any = None, *,
                      module_id: Optional[str] = None, response_timeout: int = 30,
                      connect_timeout: int = 0) -> MethodResult:
        """Invokes a direct method and returns the device's answer. A device that is offline
        (404103) or does not answer in time (504101) raises HubError."""
        body = {"methodName": method_name, "payload": payload,
                "responseTimeoutInSeconds": response_timeout, "connectTimeoutInSeconds": connect_timeout}
        answer = self.request("POST", self._twin_path(device_id, module_id) + "/methods", body,
                              timeout=response_timeout + connect_timeout + 15)
        return MethodResult(status=int(answer["status"]), payload=answer.get("payload"))

    # -- control API: messages -----------------------------------------------------------

    def send_c2d_message(self, device_id: str, body: Union[str, bytes], properties: Optional[Dict[str, str]] = None,
                         **system: Any) -> Dict[str, Any]:
        """Sends a cloud-to-device message (queued until the device subscribes). `system` takes
        message_id, correlation_id, user_id, content_type, content_encoding, expiry_time_utc.
        Returns {"delivered": bool, "pendingCount": n}."""
        path = "/emulator/devices/{}/messages/devicebound".format(_quote(device_id))
        return cast(Dict[str, Any], self.request("POST", path, _message_body(body, properties, system)))

    def send_to_module_input(self, device_id: str, module_id: str, input_name: str, body: Union[str, bytes],
                             properties: Optional[Dict[str, str]] = None, **system: Any) -> Any:
        """Delivers a message on a connected module's input (as the Edge hub would)."""
        path = "/emulator/devices/{}/modules/{}/inputs/{}".format(_quote(device_id), _quote(module_id), _quote(input_name))
        return self.request("POST", path, _message_body(body, properties, system))

    def telemetry(self, device_id: Optional[str] = None, *, module_id: Optional[str] = None,
                  after: int = 0, wait_s: float = 0) -> List[TelemetryMessage]:
        """The device-to-cloud messages recorded after sequence number `after` (all devices when
        `device_id` is None; a device's own and its modules' without `module_id`), waiting up to
        `wait_s` seconds for the first one."""
        query: Dict[str, Any] = {"after": after, "timeoutSeconds": int(wait_s)}
        if device_id is not None:
            query["deviceId"] = device_id
        if module_id is not None:
            query["moduleId"] = module_id
        answer = self.request("GET", "/emulator/events", timeout=wait_s + 30, **query)
        return [_telemetry_message(e) for e in answer["events"]]

    def wait_for_telemetry(self, device_id: str, count: int = 1, *, module_id: Optional[str] = None,
                           after: int = 0, timeout_s: float = 20.0) -> List[TelemetryMessage]:
        """Waits until at least `count` messages from `device_id` are recorded after `after`
        and returns them; raises AssertionError (a test failure) if they do not come in time."""
        if count < 1:
            raise ValueError("count must be at least 1")
        deadline = time.monotonic() + timeout_s
        got: List[TelemetryMessage] = []
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("{} of {} telemetry messages from {} arrived within {} s: {}".format(
                    len(got), count, device_id, timeout_s, [m.body for m in got]))
            cursor = got[-1].sequence_number if got else after
            got.extend(self.telemetry(device_id, module_id=module_id, after=cursor, wait_s=min(5.0, max(1.0, remaining))))
        return got

    # -- control API: routing and faults -------------------------------------------------

    def set_routes(self, routes: Dict[str, Optional[str]]) -> Dict[str, Any]:
        """Merges Edge hub routes (`{"name": "FROM ... INTO ..."}`, None removes one)."""
        return cast(Dict[str, Any], self.request("PUT", "/emulator/routes", {"routes": routes}))

    def disconnect(self, device_id: str, module_id: Optional[str] = None) -> bool:
        """Drops that identity's MQTT connection (fault injection); False when it was offline."""
        path = "/emulator/devices/" + _quote(device_id)
        if module_id is not None:
            path += "/modules/" + _quote(module_id)
        return bool(self.request("POST", path + "/disconnect")["disconnected"])


def _error_details(raw: bytes) -> "tuple[Optional[int], str]":
    # The hub wraps its error JSON in a string: {"Message": "{\"errorCode\":404001,...}"}.
    try:
        outer = json.loads(raw)
        inner = json.loads(outer["Message"]) if isinstance(outer.get("Message"), str) else outer
        return int(inner.get("errorCode")), str(inner.get("message", ""))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None, raw.decode("utf-8", "replace")[:500]


def _telemetry_message(event: Dict[str, Any]) -> TelemetryMessage:
    return TelemetryMessage(
        sequence_number=int(event["sequenceNumber"]),
        device_id=event["deviceId"],
        module_id=event.get("moduleId"),
        output_name=event.get("outputName"),
        body=base64.b64decode(event.get("body") or ""),
        properties=dict(event.get("properties") or {}),
        system_properties=dict(event.get("systemProperties") or {}),
    )
