"""Which agent settings the control plane may change on a running node, and how each applies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.fleet.remote_settings import Setting, SettingRefused, log_level_setting
from agent.keepalive import FOREVER
from agent.runtime import ModelRuntime


@dataclass
class NodeKnobs:
    """The node's own values that settings change (read where they are used, each time)."""

    telemetry_interval_s: float
    parallel: int = 0  # request slots of the next model load (0: as many as memory allows)
    api_key_sha256: str = ""


def node_settings(
    runtime: ModelRuntime, knobs: NodeKnobs, set_api_key: Callable[[str], None] | None
) -> dict[str, Setting]:
    """The settings of one node: keep_alive, telemetry interval, log level, parallel, API key."""

    def keep_alive() -> float:
        value = runtime.default_keep_alive
        return -1.0 if value == FOREVER else value

    def set_keep_alive(value: float) -> None:
        runtime.default_keep_alive = FOREVER if value < 0 else value

    def set_parallel(value: int) -> None:  # at the next load (rollout, restart-engine, reload)
        knobs.parallel = value

    def set_interval(value: float) -> None:
        knobs.telemetry_interval_s = value

    def check_key(_value: str) -> None:
        if set_api_key is None:
            raise SettingRefused("api_key_sha256: this agent serves no REST API to key")

    def set_key(value: str) -> None:
        check_key(value)
        assert set_api_key is not None
        set_api_key(value)
        knobs.api_key_sha256 = value

    return {
        "parallel": Setting(current=lambda: knobs.parallel, apply=set_parallel),
        "keep_alive_s": Setting(current=keep_alive, apply=set_keep_alive),
        "telemetry_interval_s": Setting(
            current=lambda: knobs.telemetry_interval_s, apply=set_interval
        ),
        "log_level": log_level_setting(),
        "api_key_sha256": Setting(
            current=lambda: knobs.api_key_sha256, apply=set_key, check=check_key
        ),
    }
