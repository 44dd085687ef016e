"""The asyncio ``ProvisioningDeviceClient`` (drop-in for ``azure.iot.device.aio``'s): the same
factories and payload, with ``register()`` awaitable. The registration runs in the native core;
the event loop only waits on an executor future, so other tasks keep running."""

import asyncio

from ..provisioning import ProvisioningClientBase, RegistrationResult


class ProvisioningDeviceClient(ProvisioningClientBase):
    """Registers one device with the Device Provisioning Service (asyncio)."""

    async def register(self) -> RegistrationResult:
        raw = await asyncio.get_running_loop().run_in_executor(None, self._native.register)
        return RegistrationResult._from_native(raw)

    async def shutdown(self) -> None:
        """Nothing stays open between registrations: kept for azure-iot-device parity."""
