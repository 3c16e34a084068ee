"""What a simulated agent does with a desired state: the executor's events, with faults.

`RolloutBehaviour` is an `on_desired` hook for `FleetSimulator`: it reports the same event
sequence as the real executor (agent/fleet/rollout.py) without downloading anything, and injects
failures, health-check misses and slow downloads at the rates it is given.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping

from agent.fleet.rollout_events import RolloutReporter
from agent.fleetsim.device import Degradation, SimulatedDevice
from models.protocol import ActiveModel, DesiredState

DEFAULT_VARIANT = "gguf-q4_0"
DEFAULT_ENGINE = "fake"


class RolloutBehaviour:
    """A fake agent's answer to a desired state, with injected faults."""

    def __init__(
        self,
        fail_p: float = 0.0,
        health_fail_p: float = 0.0,
        download_s: tuple[float, float] = (0.2, 1.0),
        *,
        rng: random.Random | None = None,
        degrade: Mapping[str, Degradation] | None = None,
    ) -> None:
        self.fail_p, self.health_fail_p, self.download_s = fail_p, health_fail_p, download_s
        self._rng = rng or random.Random()
        # `name:version` -> how that model serves once active (it passes its health check)
        self.degrade = dict(degrade or {})

    async def __call__(self, device: SimulatedDevice, desired: DesiredState) -> None:
        """Carry out `desired` on `device`: events, then the new state (or the old model)."""
        if desired.version <= device.desired_version or not desired.models:
            return
        target = desired.models[0]
        ref = f"{target.name}:{target.version}"
        current = device.active
        if current is not None and (current.name, current.version) == (target.name, target.version):
            device.desired_version = desired.version  # already serving it (a revert, say)
            device.publish_state()
            return

        event = RolloutReporter(device.publish_event, desired.version, target)  # the agent's own

        event("accepted")
        event("downloading")
        await asyncio.sleep(self._rng.uniform(*self.download_s))
        event("verifying")
        event("loading")
        event("health_check")
        if self._rng.random() < self.fail_p:
            event("failed", "injected failure")
        elif self._rng.random() < self.health_fail_p:
            event("rolled_back", "health check failed: injected")
        else:
            event("active")
            active = ActiveModel(
                name=target.name,
                version=target.version,
                variant=DEFAULT_VARIANT,
                engine=DEFAULT_ENGINE,
            )
            device.degradation = self.degrade.get(ref, Degradation())
            device.set_active(active, desired_version=desired.version)
            return
        device.desired_version = desired.version
        device.publish_state()
