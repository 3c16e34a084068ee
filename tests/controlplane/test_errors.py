"""The control plane's one exception tree: every class in it, one handler, one CLI catch."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from fastapi.testclient import TestClient

import controlplane
from controlplane.cli import main
from controlplane.console import rollouts as console_rollouts
from controlplane.console.client import ApiClient
from controlplane.console.context import Context
from controlplane.errors import ApiError, ControlPlaneError, ModelVersionExists


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(controlplane.__path__, "controlplane."):
        if ".alembic" in info.name:
            continue
        module = importlib.import_module(info.name)
        for _name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found.append(obj)
    return found


def test_every_control_plane_exception_is_a_control_plane_error() -> None:
    classes = _exception_classes()
    assert ApiError in classes and ModelVersionExists in classes
    assert [c for c in classes if not issubclass(c, ControlPlaneError)] == []


def test_the_base_carries_status_code_and_message() -> None:
    exc = ModelVersionExists("model tiny:1 is already registered")
    assert (exc.status, exc.code, exc.message) == (409, "model_version_exists", str(exc))
    refused = ApiError(404, "not_found", "no rollout ro-x")
    assert (refused.status, refused.code, refused.message) == (404, "not_found", "no rollout ro-x")


def test_the_api_answers_a_refusal_in_the_envelope(
    cp_client: TestClient, admin_headers: dict[str, str]
) -> None:
    resp = cp_client.get("/api/v1/rollouts/ro-missing", headers=admin_headers)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"


def test_the_cli_prints_a_refusal_as_one_line(
    cp_client: TestClient,
    admin_token: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    context = Context("test", "http://testserver", admin_token)  # the console over the app
    monkeypatch.setattr(console_rollouts, "client", lambda _a: ApiClient(context, http=cp_client))
    assert main(["rollouts", "show", "ro-missing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgefleet-cp: HTTP 404 not_found: no rollout ro-missing")
    assert err.count("\n") == 1
    assert main(["rollouts", "create", "tiny:1", "--labels", "oops"]) == 2
