"""``ProvisioningDeviceClient`` (a drop-in for ``azure.iot.device``'s) and its models
``RegistrationResult`` / ``RegistrationState``: register a device with the Device
Provisioning Service, then connect to the hub it was assigned
(``result.registration_state.assigned_hub`` / ``device_id``). Also ``derive_device_key``
(ironhub): a symmetric-key group enrollment member's key.
"""

import json
from typing import Any, Dict, Optional

from . import _native
from .models import X509

# Keywords of the hub client that mean nothing to a registration (azure-iot-device refuses them).
_NOT_FOR_PROVISIONING = [
    "product_info",
    "auto_connect",
    "connection_retry",
    "connection_retry_interval",
    "ensure_desired_properties",
]


def derive_device_key(group_symmetric_key: str, registration_id: str) -> str:
    """base64(HMAC-SHA256(group key, registration id)), the documented DPS derivation."""
    return _native.derive_device_key(group_symmetric_key, registration_id)


class RegistrationState:
    """Where the device was assigned (``registration_state`` of a result)."""

    def __init__(
        self,
        device_id: Optional[str] = None,
        assigned_hub: Optional[str] = None,
        sub_status: Optional[str] = None,
        created_date_time: Optional[str] = None,
        last_update_date_time: Optional[str] = None,
        etag: Optional[str] = None,
        payload: Any = None,
    ) -> None:
        self._device_id = device_id
        self._assigned_hub = assigned_hub
        self._sub_status = sub_status
        self._created_date_time = created_date_time
        self._last_update_date_time = last_update_date_time
        self._etag = etag
        self._response_payload = payload

    @property
    def device_id(self) -> Optional[str]:
        return self._device_id

    @property
    def assigned_hub(self) -> Optional[str]:
        return self._assigned_hub

    @property
    def sub_status(self) -> Optional[str]:
        return self._sub_status

    @property
    def created_date_time(self) -> Optional[str]:
        return self._created_date_time

    @property
    def last_update_date_time(self) -> Optional[str]:
        return self._last_update_date_time

    @property
    def etag(self) -> Optional[str]:
        return self._etag

    @property
    def response_payload(self) -> str:
        """The payload the service returned, as a JSON string (as azure-iot-device gives it)."""
        return json.dumps(self._response_payload, sort_keys=True)

    def __str__(self) -> str:
        return "\n".join([str(self.device_id), str(self.assigned_hub), str(self.sub_status), self.response_payload])


class RegistrationResult:
    """What ``register()`` returns; ``status`` is ``"assigned"`` on success."""

    def __init__(self, operation_id: Optional[str], status: Optional[str], registration_state: Optional[RegistrationState] = None) -> None:
        self._operation_id = operation_id
        self._status = status
        self._registration_state = registration_state

    @property
    def operation_id(self) -> Optional[str]:
        return self._operation_id

    @property
    def status(self) -> Optional[str]:
        return self._status

    @property
    def registration_state(self) -> Optional[RegistrationState]:
        return self._registration_state

    def __str__(self) -> str:
        return "\n".join([str(self.registration_state), str(self.status)])

    @classmethod
    def _from_native(cls, raw: Dict[str, Any]) -> "RegistrationResult":
        state = raw.get("registrationState")
        return cls(
            raw.get("operationId"),
            raw.get("status"),
            None
            if state is None
            else RegistrationState(
                device_id=state.get("deviceId"),
                assigned_hub=state.get("assignedHub"),
                sub_status=state.get("substatus"),
                created_date_time=state.get("createdDateTimeUtc"),
                last_update_date_time=state.get("lastUpdatedDateTimeUtc"),
                etag=state.get("etag"),
                payload=state.get("payload"),
            ),
        )


class ProvisioningClientBase:
    """Factories and ``provisioning_payload``, shared by the sync and asyncio clients."""

    def __init__(self, native: "_native.ProvisioningClient") -> None:
        self._native = native

    @classmethod
    def create_from_symmetric_key(
        cls, provisioning_host: str, registration_id: str, id_scope: str, symmetric_key: str, **kwargs: Any
    ) -> Any:
        """A client attested by a symmetric key (an individual enrollment's, or a group
        member's from ``derive_device_key``)."""
        return cls(
            _native.ProvisioningClient.create_from_symmetric_key(
                provisioning_host, registration_id, id_scope, symmetric_key, kwargs, _NOT_FOR_PROVISIONING
            )
        )

    @classmethod
    def create_from_x509_certificate(
        cls, provisioning_host: str, registration_id: str, id_scope: str, x509: X509, **kwargs: Any
    ) -> Any:
        """A client attested by an X.509 certificate whose common name is ``registration_id``."""
        return cls(
            _native.ProvisioningClient.create_from_x509_certificate(
                provisioning_host, registration_id, id_scope, x509, kwargs, _NOT_FOR_PROVISIONING + ["sastoken_ttl"]
            )
        )

    @property
    def provisioning_payload(self) -> Any:
        return self._native.provisioning_payload

    @provisioning_payload.setter
    def provisioning_payload(self, value: Any) -> None:
        self._native.provisioning_payload = value


class ProvisioningDeviceClient(ProvisioningClientBase):
    """Registers one device with the Device Provisioning Service (blocking calls)."""

    def register(self) -> RegistrationResult:
        """Connects, registers, polls with the service's ``retry-after`` and disconnects.
        Raises CredentialError, ConnectionFailedError, ConnectionDroppedError,
        OperationTimeout, or ClientError (caused by ServiceError) when the service refuses."""
        return RegistrationResult._from_native(self._native.register())

    def shutdown(self) -> None:
        """Nothing stays open between registrations: kept for azure-iot-device parity."""
