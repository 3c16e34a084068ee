"""Errors in the calling API's own shape: OpenAI `{"error": {...}}`, Ollama `{"error": "..."}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.chat import ChatTemplateError
from agent.errors import AgentError, ContextOverflow, EngineError
from agent.runtime import NoModel, QueueFull

_LOGGER = logging.getLogger(__name__)

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}


class ApiError(Exception):
    """An error with an HTTP status, raised by routes and rendered per API."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers


class ModelNotFound(ApiError):
    """The request names a model this agent does not serve."""

    def __init__(self, name: str, served: str | None) -> None:
        hint = f"this agent serves {served!r}" if served else "no model is configured"
        super().__init__(404, f"model {name!r} not found; {hint}", code="model_not_found")


def is_ollama(path: str) -> bool:
    """Ollama's routes live under /api/."""
    return path.startswith("/api/")


def error_response(path: str, err: ApiError) -> JSONResponse:
    """The JSON body for `err` in the shape of the API `path` belongs to."""
    body: dict[str, Any]
    if is_ollama(path):
        body = {"error": err.message}
    else:
        kind = _OPENAI_TYPES.get(err.status, "server_error" if err.status >= 500 else "api_error")
        body = {
            "error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}
        }
    return JSONResponse(body, status_code=err.status, headers=err.headers)


def from_agent_error(exc: AgentError) -> ApiError:
    """Translate an agent error into an HTTP status and message."""
    if isinstance(exc, ContextOverflow):
        return ApiError(400, str(exc), code="context_length_exceeded", param="messages")
    if isinstance(exc, QueueFull):
        retry = {"Retry-After": str(exc.retry_after_s)}
        return ApiError(503, str(exc), code="queue_full", headers=retry)
    if isinstance(exc, NoModel):
        return ApiError(503, str(exc), code="model_not_loaded", headers={"Retry-After": "5"})
    if isinstance(exc, ChatTemplateError):
        return ApiError(400, str(exc), code="chat_template_error")
    if isinstance(exc, EngineError):
        return ApiError(500, f"the engine failed: {exc}", code="engine_error")
    return ApiError(500, str(exc), code="agent_error")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    problems = []
    param = None
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        param = param or where or None
        if error.get("type") == "extra_forbidden":
            # Refused, never ignored: the client would believe the field took effect.
            problems.append(f"{where}: not supported by this agent (see docs/agent.md)")
        else:
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(problems), param


def install_error_handlers(app: FastAPI) -> None:
    """Replace FastAPI's default handlers so no route answers `{"detail": ...}` or a traceback."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(request.url.path, exc)

    async def on_agent_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AgentError)
        return error_response(request.url.path, from_agent_error(exc))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = _validation_message(exc)
        return error_response(request.url.path, ApiError(400, message, param=param))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        path = request.url.path
        if exc.status_code == 404:
            message = f"no route {request.method} {path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {path}"
        else:
            message = str(exc.detail)
        headers = dict(exc.headers) if exc.headers else None
        return error_response(path, ApiError(exc.status_code, message, headers=headers))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        _LOGGER.exception("unexpected error on %s %s", request.method, request.url.path)
        message = f"internal error ({type(exc).__name__}); see the agent's log"
        return error_response(request.url.path, ApiError(500, message, code="internal_error"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(AgentError, on_agent_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
