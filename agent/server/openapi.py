"""The agent's OpenAPI document, corrected to say what the agent really sends.

FastAPI documents a 422 `{"detail": [...]}` for every route with a body; the agent answers
400 in the API's own error shape instead (agent/server/errors.py), and also 403, 413, 404
and 503. Streaming routes send SSE or NDJSON besides JSON.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_NULLABLE_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}]}
_ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": _NULLABLE_STRING,
                    "code": _NULLABLE_STRING,
                },
            }
        },
    },
    "OllamaError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
}
_DESCRIPTIONS = {
    400: "Malformed or out-of-range request (invalid JSON, bad field, prompt too large)",
    401: "Missing or wrong API key",
    403: "A web page from an origin not in cors_origins",
    404: "The request names a model this agent does not serve",
    413: "Request body over max_body_bytes",
    500: "Engine or internal error",
    503: "No model loaded yet, or the queue is full (see Retry-After)",
}
# Before OpenAPI 3.2, the `schema` of text/event-stream describes one event.
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string", "description": "a JSON chunk, or [DONE]"}},
}
_NDJSON = {"type": "string", "description": "one JSON object a line; the last has done=true"}
_STREAMS: dict[str, tuple[str, dict[str, Any]]] = {
    "/v1/chat/completions": ("text/event-stream", _SSE_EVENT),
    "/v1/completions": ("text/event-stream", _SSE_EVENT),
    "/v1/responses": ("text/event-stream", _SSE_EVENT),
    "/api/generate": ("application/x-ndjson", _NDJSON),
    "/api/chat": ("application/x-ndjson", _NDJSON),
}
_OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def describe_errors(app: FastAPI, *, api_key: bool) -> None:
    """Make `app.openapi()` document the agent's real error answers and media types."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = _corrected(schema, api_key=api_key)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _corrected(schema: dict[str, Any], *, api_key: bool) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.update(_ERROR_SCHEMAS)
    for path, operations in schema.get("paths", {}).items():
        shape = "OllamaError" if path.startswith("/api/") else "OpenAIError"
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in _error_statuses(operation, path, api_key=api_key):
                responses.setdefault(
                    str(status),
                    {
                        "description": _DESCRIPTIONS[status],
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{shape}"}
                            }
                        },
                    },
                )
            if path in _STREAMS and "200" in responses:
                media_type, item = _STREAMS[path]
                responses["200"].setdefault("content", {})[media_type] = {"schema": item}
    return schema


def _error_statuses(operation: dict[str, Any], path: str, *, api_key: bool) -> list[int]:
    statuses = [500]
    if "parameters" in operation or "requestBody" in operation:
        statuses.append(400)
    if "requestBody" in operation:
        statuses += [403, 404, 413, 503]
    if api_key and path not in _OPEN_PATHS:
        statuses.append(401)
    return sorted(statuses)
