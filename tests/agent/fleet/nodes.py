"""Building blocks of the fleet-side tests: one enrolled device, its node, a desired model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.fleet.daemon import NodeOptions
from agent.fleet.enroll import Enrollment
from agent.model_loading import EngineFactory
from models.keys import public_key_b64
from models.protocol import ArtifactAccess, DesiredModel, DesiredState, MqttAccess
from tests.e2e.fakes import fake_engines, pick_first, publish_fake_model

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
