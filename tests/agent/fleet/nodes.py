"""Building blocks of the fleet-side tests: one enrolled device, its node, a desired model,
and a rollout rig (one device's executor on real files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.fleet.daemon import NodeOptions
from agent.fleet.enroll import Enrollment
from agent.fleet.rollout import ExecutorDeps, RolloutExecutor
from agent.fleet.slots import SlotStore
from agent.model_loading import EngineFactory
from agent.runtime import ModelRuntime
from models.keys import public_key_b64
from models.protocol import ArtifactAccess, DesiredModel, DesiredState, MqttAccess, RolloutEvent
from models.store import ArtifactStore
from tests.e2e.fakes import FakeEngineFactory, fake_engines, pick_first, publish_fake_model

DEVICE = "dev-1"
DEVICE_PASSWORD = "p"
CONTROL_PLANE_PASSWORD = "cp-pw"


def enrollment(key: Ed25519PrivateKey) -> Enrollment:
    """DEVICE's credentials for a broker on port 1 (tests set the real one), trusting `key`."""
    return Enrollment(
        device_id=DEVICE,
        mqtt=MqttAccess(
            host="127.0.0.1",
            port=1,
            username=DEVICE,
            password=DEVICE_PASSWORD,
            client_id=DEVICE,
        ),
        artifacts=ArtifactAccess(base_url="http://x", token="t"),
        signing_public_key=public_key_b64(key),
    )


def node_options(
    data_dir: Path, *, engine_factory: EngineFactory | None = None, **options: Any
) -> NodeOptions:
    """Fake engines (unless given), no telemetry loop, no memory check; `options` set the rest."""
    return NodeOptions(
        data_dir=data_dir,
        engine_factory=engine_factory or fake_engines(),
        select=pick_first,
        telemetry_interval_s=0,
        check_memory=False,
        **options,
    )


def desired_fake_model(tmp_path: Path, key: Ed25519PrivateKey, version: int) -> DesiredState:
    """Desired state: the fake model "tiny" 1.0, published under tmp_path and signed by key."""
    model_dir = publish_fake_model(tmp_path / "registry", key, "1.0")
    manifest_url = (model_dir / "manifest.json").as_uri()
    return DesiredState(
        version=version,
        models=[DesiredModel(name="tiny", version="1.0", manifest_url=manifest_url)],
    )


class Rig:
    """One device's executor with everything on disk under tmp_path."""

    def __init__(self, tmp_path: Path, key: Ed25519PrivateKey, **deps: object) -> None:
        self.key = key
        self.registry = tmp_path / "registry"
        self.data = tmp_path / "device"
        self.events: list[RolloutEvent] = []
        self.engines: FakeEngineFactory = deps.pop("engines", fake_engines())  # type: ignore[assignment]
        self.runtime = ModelRuntime()
        self.executor = self.make_executor(**deps)

    def make_executor(self, **extra: object) -> RolloutExecutor:
        deps = ExecutorDeps(
            slots=SlotStore(self.data / "slots"),
            store=ArtifactStore(self.data / "store"),
            runtime=self.runtime,
            select=pick_first,
            engine_factory=self.engines,
            emit=self.events.append,
            trusted_keys=[self.key.public_key()],
            data_dir=self.data,
        )
        for name, value in extra.items():
            setattr(deps, name, value)
        return RolloutExecutor(deps)

    def publish(self, version: str, **kw: object) -> DesiredModel:
        model_dir = publish_fake_model(self.registry, self.key, version, **kw)  # type: ignore[arg-type]
        url = (model_dir / "manifest.json").as_uri()
        return DesiredModel(name="tiny", version=version, manifest_url=url, rollout_id="r1")

    def apply(self, version: int, model: DesiredModel) -> bool:
        return self.executor.apply(DesiredState(version=version, models=[model]))

    def kinds(self, desired_version: int) -> list[str]:
        return [e.kind for e in self.events if e.desired_version == desired_version]

    def serving(self) -> str | None:
        active = self.runtime.active
        return active.ref if active else None
