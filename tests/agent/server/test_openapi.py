"""The agent's OpenAPI document says what the agent sends: schemathesis over the fake engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis

from agent.engines.fake import FakeBehaviour, fake_model
from agent.runtime import ModelRuntime
from agent.server.app import create_app
from agent.server.serve import RunningServer
from tests.support.openapi import bounded, call_and_validate

# Bounded so the whole run stays under a minute on a shared 2-core machine.
MAX_EXAMPLES = 30


# The app is built at import (schemathesis reads its document then); the fixture below puts
# the fake model into its runtime for the run and takes it out after.
RUNTIME = ModelRuntime(max_waiting=4)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(RUNTIME))


@pytest.fixture(scope="module", autouse=True)
def fake_model_loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The fake engine serves the schemathesis run."""
    path = tmp_path_factory.mktemp("openapi") / "fake.gguf"
    RUNTIME.load_with(lambda: fake_model(path, FakeBehaviour()))
    yield
    RUNTIME.clear()


@schema.parametrize()
@bounded(MAX_EXAMPLES)
def test_agent_api_conforms_to_its_openapi(case: Any) -> None:
    # A schema-valid request can be refused with a documented 400: the prompt plus max_tokens
    # must fit the loaded model's context, n must be 1, a rendered prompt must not be empty.
    call_and_validate(case)


def test_openapi_documents_400_in_each_api_shape_and_no_422(server: RunningServer) -> None:
    doc = httpx.get(server.url + "/openapi.json").json()
    assert "422" not in str(doc["paths"])

    def error_ref(responses: dict[str, Any], status: str) -> str:
        return str(responses[status]["content"]["application/json"]["schema"]["$ref"])

    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert error_ref(chat, "400") == "#/components/schemas/OpenAIError"
    assert {"400", "403", "404", "413", "503"} <= set(chat)
    assert "text/event-stream" in chat["200"]["content"]
    ollama = doc["paths"]["/api/chat"]["post"]["responses"]
    assert error_ref(ollama, "400") == "#/components/schemas/OllamaError"
    assert "application/x-ndjson" in ollama["200"]["content"]
