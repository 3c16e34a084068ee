"""The control plane's OpenAPI document says what it sends: schemathesis against the app.

No 5xx, every answer documented and shaped as documented, on SQLite with an enrolled device
and an admin token. Bounded (MAX_EXAMPLES per operation) so CI stays fast.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from sqlmodel import Session

from controlplane import crud
from controlplane.core.config import Settings
from controlplane.db_models import Role
from controlplane.main import create_app
from tests.controlplane.helpers import enroll
from tests.support.openapi import bounded, call_and_validate

# Per operation; EDGEFLEET_FUZZ_EXAMPLES=500 makes a longer run (the 5 minutes).
MAX_EXAMPLES = int(os.environ.get("EDGEFLEET_FUZZ_EXAMPLES", "25"))

# The app is built at import (schemathesis reads its document then); the fixture below starts
# it (migrations, signing key) and removes its data directory afterwards.
DATA_DIR = Path(tempfile.mkdtemp(prefix="edgefleet-openapi-"))
# EDGEFLEET_FUZZ_DATABASE_URL runs it on another (empty, migrated on start) database.
APP = create_app(
    Settings(
        data_dir=DATA_DIR,
        mqtt_cp_password="openapi-test",
        database_url=os.environ.get("EDGEFLEET_FUZZ_DATABASE_URL", ""),
        public_url="http://testserver",
    )
)
HEADERS: dict[str, str] = {}
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP).exclude(
    # These revoke the token the run uses; tests/controlplane/api/test_tokens.py covers them.
    path_regex=r"^/api/v1/(tokens/\{token_id\}(/rotate)?|me/rotate)$",
    method=["DELETE", "POST"],
)


@pytest.fixture(scope="module", autouse=True)
def started_app() -> Iterator[None]:
    """The app started, with an admin token and one enrolled device."""
    with TestClient(APP) as client:
        with Session(APP.state.engine) as session:
            _token, secret = crud.create_api_token(session, name="fuzz", role=Role.admin)
        HEADERS["Authorization"] = f"Bearer {secret}"
        enroll(client, HEADERS, labels={"site": "lab"})
        yield
    shutil.rmtree(DATA_DIR, ignore_errors=True)


@schema.parametrize()
@bounded(MAX_EXAMPLES)
def test_control_plane_api_conforms_to_its_openapi(case: Any) -> None:
    # A schema-valid request can be refused with a documented 4xx: an id that names nothing,
    # a model that is not registered.
    call_and_validate(case, headers=HEADERS)
