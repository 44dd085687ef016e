"""The exception surface of ironhub, with the names, hierarchy and meanings of
``azure.iot.device.exceptions``.

The classes are defined by the native module (so Rust can raise them directly) and
re-exported here::

    Exception
    ├─ OperationCancelled
    ├─ OperationTimeout
    ├─ ServiceError
    └─ ClientError
       ├─ ConnectionFailedError
       ├─ ConnectionDroppedError
       ├─ NoConnectionError
       └─ CredentialError

Bad arguments raise the built-in ``ValueError`` / ``TypeError``.
"""

from ._native import (
    ClientError,
    ConnectionDroppedError,
    ConnectionFailedError,
    CredentialError,
    NoConnectionError,
    OperationCancelled,
    OperationTimeout,
    ServiceError,
)

__all__ = [
    "OperationCancelled",
    "OperationTimeout",
    "ServiceError",
    "ClientError",
    "ConnectionFailedError",
    "ConnectionDroppedError",
    "NoConnectionError",
    "CredentialError",
]
