"""The operator CLI as an HTTP client: log in from another directory with a URL and a token,
then every operator command goes through the API (roles, errors, audit) of a real server."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from controlplane import crud
from controlplane.cli import main
from controlplane.core.db import make_engine
from controlplane.db_models import Role
from controlplane.ingest_counters import save_counts
from controlplane.signing_key import load_signing_identity
from tests.controlplane.helpers import make_model_dir
from tests.controlplane.live import sqlite_control_plane
from tests.controlplane.rollouts.conftest import add_device
from tests.support.mosquitto import free_port


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A control plane on uvicorn with two devices, an admin and a viewer token; the CLI
    runs in an empty directory with only a context file."""
    with sqlite_control_plane(tmp_path, monkeypatch) as running:
        with Session(running.engine) as session:
            _a, admin = crud.create_api_token(session, name="ada", role=Role.admin)
            _v, viewer = crud.create_api_token(session, name="vic", role=Role.viewer)
            add_device(session, "dev-a", labels={"site": "a"})
            add_device(session, "dev-b", labels={"site": "b"})
        laptop = tmp_path / "laptop"
        laptop.mkdir()
        monkeypatch.chdir(laptop)
        for name in ("EDGEFLEET_CP_DATA_DIR", "EDGEFLEET_CP_DATABASE_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("EDGEFLEET_CP_CONTEXT_FILE", str(laptop / "contexts.json"))
        yield {
            "url": running.url,
            "admin": admin,
            "viewer": viewer,
            "settings": running.settings,
            "contexts": laptop / "contexts.json",
            "tmp": tmp_path,
        }


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--output", "json")
    assert code == 0, err
    return json.loads(out)


def test_login_and_operator_commands(
    server: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "login", server["url"], "--token", server["admin"])
    assert code == 0 and "as ada (admin)" in out, err
    assert stat.S_IMODE(os.stat(server["contexts"]).st_mode) == 0o600
    assert server["admin"] in server["contexts"].read_text()

    assert [d["id"] for d in as_json(capsys, "devices", "--labels", "site=a")] == ["dev-a"]
    labelled = as_json(capsys, "devices", "label", "--selector", "site=b", "ring=canary")
    assert labelled[0]["labels"] == {"site": "b", "ring": "canary"}
    assert as_json(capsys, "devices", "label", "dev-a", "--remove", "site")[0]["labels"] == {}
    assert run(capsys, "devices")[1].splitlines()[0].split() == [
        "ID",
        "NAME",
        "CLASS",
        "ONLINE",
        "MODEL",
        "LABELS",
    ]

    token = as_json(capsys, "enroll-token", "--labels", "site=lab", "--ttl", "30m")
    assert token["token"].startswith("eft_") and token["labels"] == {"site": "lab"}
    code, _out, err = run(capsys, "enroll-token", "--ttl", "soon")
    assert code == 2 and "--ttl" in err

    key = load_signing_identity(server["settings"]).private_key
    model_dir = make_model_dir(server["tmp"] / "src", key, version="2.0")
    code, out, _err = run(capsys, "models", "import", str(model_dir))
    assert code == 0 and "imported tiny:2.0" in out
    code, _out, err = run(capsys, "models", "import", str(model_dir))
    assert code == 2 and "HTTP 409" in err and "already registered" in err
    assert as_json(capsys, "models", "list")[0]["versions"] == ["2.0"]

    created = as_json(
        capsys,
        "rollouts",
        "create",
        "tiny:2.0",
        "--waves",
        "1,100%",
        "--labels",
        "ring=canary",
        "--require-approval",
    )
    rid = created["id"]
    assert [r["id"] for r in as_json(capsys, "rollouts", "list")] == [rid]
    shown = as_json(capsys, "rollouts", "show", rid)
    assert shown["model"] == "tiny:2.0" and "devices" in shown
    code, out, _err = run(capsys, "rollouts", "pause", rid)
    assert code == 0 and out.strip() == f"{rid} paused"
    code, _out, err = run(capsys, "rollouts", "approve", rid)
    assert code == 2 and "no wave waits for approval" in err
    assert run(capsys, "rollouts", "abort", rid, "--reason", "wrong ring")[0] == 0
    code, _out, err = run(capsys, "rollouts", "pause", rid)
    assert code == 2 and "HTTP 409 conflict" in err and "aborted" in err
    code, _out, err = run(capsys, "rollouts", "show", "ro-nope")
    assert code == 2 and "HTTP 404" in err

    made = as_json(capsys, "tokens", "create", "ci", "--role", "operator", "--days", "7")
    assert made["token"].startswith("efo_")
    assert {t["name"] for t in as_json(capsys, "tokens")} >= {"ada", "vic", "ci"}
    entries = as_json(capsys, "audit", "--limit", "100")["items"]
    actions = [e["action"] for e in entries]
    assert {
        "create_rollout",
        "pause_rollout",
        "abort_rollout",
        "update_device",
        "create_enrollment_token",
        "import_model_dir",
        "create_token",
    } <= set(actions)
    assert all(e["actor"] == "ada" for e in entries)


def test_refusals_say_what_to_do(
    server: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run(capsys, "devices")
    assert code == 2 and "edgefleet-cp login" in err  # no context yet
    code, _out, err = run(capsys, "login", server["url"], "--token", "efo_wrong")
    assert code == 2 and "HTTP 401" in err and "login" in err
    assert not server["contexts"].exists()  # a refused token is not saved

    assert run(capsys, "login", server["url"], "--token", server["viewer"], "--name", "ro")[0] == 0
    assert len(as_json(capsys, "devices")) == 2  # a viewer can read
    code, _out, err = run(capsys, "devices", "revoke", "dev-a")
    assert code == 2 and "HTTP 403" in err and "operator role" in err
    code, _out, err = run(capsys, "audit")
    assert code == 2 and "HTTP 403" in err

    assert run(capsys, "login", server["url"], "--token", server["admin"], "--name", "rw")[0] == 0
    code, out, _err = run(capsys, "contexts")
    assert "* rw" in out.replace("*  ", "* ") and "ro" in out
    assert run(capsys, "--context", "ro", "devices", "revoke", "dev-a")[0] == 2
    assert run(capsys, "devices", "revoke", "dev-a")[0] == 0  # current context: rw

    code, _out, err = run(capsys, "login", f"http://127.0.0.1:{free_port()}", "--token", "x")
    assert code == 2 and "cannot reach the control plane" in err


def test_devices_drops_lists_what_the_ingest_dropped(
    server: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(server["settings"].database_url)
    save_counts(engine, Counter({("dev-a", "throttled"): 600, ("dev-b", "invalid"): 2}))
    engine.dispose()
    assert run(capsys, "login", server["url"], "--token", server["viewer"])[0] == 0
    code, out, _err = run(capsys, "devices", "drops")
    assert code == 0
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["DEVICE", "REASON", "COUNT"],
        ["dev-a", "throttled", "600"],
        ["dev-b", "invalid", "2"],
    ]
    only_b = as_json(capsys, "devices", "drops", "dev-b")
    assert [(r["device_id"], r["counter"], r["count"]) for r in only_b] == [("dev-b", "invalid", 2)]
