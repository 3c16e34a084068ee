"""`edgefleet-cp agent-releases` and `devices settings` as HTTP clients of a real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controlplane.fleet.cli import parse_since
from controlplane.signing_key import load_signing_identity
from models.agent_release import build_release
from tests.controlplane.console.test_console import as_json, run, server  # noqa: F401

REPO = Path(__file__).resolve().parents[3]


def test_since_durations() -> None:
    assert [parse_since(t) for t in ("90", "30s", "10m", "2h", "1d")] == [
        90.0,
        30.0,
        600.0,
        7200.0,
        86400.0,
    ]


def test_release_import_list_and_agent_rollout(
    server: dict[str, Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = load_signing_identity(server["settings"]).private_key
    build_release(REPO, server["tmp"] / "rel", "2.0.0", key)
    assert run(capsys, "login", server["url"], "--token", server["admin"])[0] == 0
    imported = as_json(capsys, "agent-releases", "import", str(server["tmp"] / "rel"))
    assert imported["version"] == "2.0.0"
    assert [r["version"] for r in as_json(capsys, "agent-releases", "list")] == ["2.0.0"]
    code, out, err = run(
        capsys, "rollouts", "create", "--agent", "2.0.0", "--soak", "60", "--devices", "dev-a"
    )
    assert code == 0, err
    code, _out, err = run(capsys, "rollouts", "create", "--agent", "9.9.9")
    assert code != 0 and "not in the registry" in err


def test_device_settings_set_show_and_clear(
    server: dict[str, Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(capsys, "login", server["url"], "--token", server["admin"])[0] == 0
    shown = as_json(
        capsys, "devices", "settings", "dev-a", "--keep-alive", "30", "--api-key", "s3cret-key"
    )
    assert shown["settings"]["keep_alive_s"] == 30 and shown["desired_version"] == 1
    assert len(shown["settings"]["api_key_sha256"]) == 64  # only the digest is sent
    assert as_json(capsys, "devices", "settings", "dev-a")["settings"]["keep_alive_s"] == 30
    assert as_json(capsys, "devices", "settings", "dev-a", "--clear")["settings"] is None
    code, _out, err = run(capsys, "devices", "settings", "dev-a", "--parallel", "1000")
    assert code != 0 and "parallel" in err
    code, _out, err = run(capsys, "devices", "settings", "dev-nope", "--keep-alive", "5")
    assert code != 0 and "404" in err
