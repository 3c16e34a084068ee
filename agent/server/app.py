"""Builds the agent's FastAPI app: OpenAI and Ollama routes, health, readiness, metrics."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent import __version__
from agent.runtime import ModelRuntime, Readiness
from agent.server import (
    ollama_api,
    ollama_manage,
    ollama_models,
    openai_api,
    responses_api,
)
from agent.server.deps import MetricsDep, RuntimeDep
from agent.server.errors import ApiError, error_response, install_error_handlers, is_ollama
from agent.server.limits import RequestGuard, RequestLimits
from agent.server.metrics import ServingMetrics
from agent.server.openapi import describe_errors

_OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class AccessMiddleware:
    """Checks the API key (when one is set) and counts answers per API and status."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, metrics: ServingMetrics) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.metrics = metrics

    def _allowed(self, scope: Scope) -> bool:
        """The request carries the key: the control plane's rotated one if set, else ours."""
        given: bytes = dict(scope["headers"]).get(b"authorization", b"")
        state = getattr(scope.get("app"), "state", None)
        rotated: str | None = getattr(state, "api_key_sha256", None)
        if rotated:  # remote settings: only the digest travels, never the key
            token = given.removeprefix(b"Bearer ")
            digest = hashlib.sha256(token).hexdigest().encode()
            return given.startswith(b"Bearer ") and hmac.compare_digest(digest, rotated.encode())
        return self.expected is None or hmac.compare_digest(given, self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "websocket":  # the Responses API's WebSocket mode needs the key too
            if scope["path"] not in _OPEN_PATHS and not self._allowed(scope):
                await send({"type": "websocket.close", "code": 1008, "reason": "wrong API key"})
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        api = "ollama" if is_ollama(path) else "openai" if path.startswith("/v1/") else "agent"
        if path not in _OPEN_PATHS:
            if not self._allowed(scope):
                err = ApiError(
                    401,
                    "missing or wrong API key: send 'Authorization: Bearer <key>'",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                self.metrics.count_request(api, 401)
                await error_response(path, err)(scope, receive, send)
                return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.count_request(api, message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)


def create_app(
    runtime: ModelRuntime,
    *,
    api_key: str | None = None,
    metrics: ServingMetrics | None = None,
    limits: RequestLimits | None = None,
) -> FastAPI:
    """The app over `runtime`; state lives on app.state, nothing global."""
    metrics = metrics or ServingMetrics()
    limits = limits or RequestLimits()
    if runtime.observer is None:
        runtime.observer = metrics
    app = FastAPI(title="EdgeFleet agent", version=__version__, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.state.limits = limits
    install_error_handlers(app)
    app.include_router(openai_api.router)
    app.include_router(ollama_api.router)
    app.include_router(ollama_models.router)
    app.include_router(ollama_manage.router)
    app.include_router(ollama_manage.root_router)
    app.include_router(responses_api.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up and answering."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=None)
    async def readyz(runtime: RuntimeDep) -> Any:
        """200 when a request can be served now (or after an idle reload), else 503."""
        state = runtime.readiness
        known = runtime.known
        body = {
            "status": state.value,
            "model": known.ref if known else None,
            "error": runtime.load_error,
        }
        if state in (Readiness.READY, Readiness.IDLE):
            return body
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def prometheus(runtime: RuntimeDep, metrics: MetricsDep) -> PlainTextResponse:
        """Prometheus text exposition."""
        return PlainTextResponse(
            metrics.render(runtime), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    describe_errors(app, api_key=api_key is not None)
    # Outermost last: CORS answers preflights before the API key is asked for, and the
    # guard's 403 and 413 are counted like every other answer.
    app.add_middleware(RequestGuard, limits=limits)
    app.add_middleware(AccessMiddleware, api_key=api_key, metrics=metrics)
    if limits.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(limits.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    return app
