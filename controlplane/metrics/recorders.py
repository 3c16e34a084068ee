"""Latency recorders: API requests by route template, database writes by statement kind."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from sqlalchemy import event
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Seconds; API answers should sit well under 0.2 s, writes under 0.05 s.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_WRITES = ("INSERT", "UPDATE", "DELETE")
_STARTS = "edgefleet_metrics_starts"
UNMATCHED = "unmatched"  # a path no route serves: one label value, not one per path


class ControlPlaneMetrics:
    """The registry of one app and the histograms fed while it runs."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "edgefleet_cp_http_request_duration_seconds",
            "API and dashboard request latency by route template",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.db_write_seconds = Histogram(
            "edgefleet_cp_db_write_duration_seconds",
            "Time the database took to run one INSERT, UPDATE or DELETE",
            ["statement"],
            buckets=WRITE_BUCKETS,
            registry=self.registry,
        )

    def watch_engine(self, engine: Engine) -> None:
        """Time every write statement `engine` runs."""

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Any, _c: Any, statement: str, *_args: Any) -> None:
            conn.info.setdefault(_STARTS, []).append(time.perf_counter())

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Any, _c: Any, statement: str, *_args: Any) -> None:
            starts = conn.info.get(_STARTS)
            if not starts:
                return
            began = starts.pop()
            kind = statement.lstrip()[:6].upper()
            if kind in _WRITES:
                self.db_write_seconds.labels(kind.lower()).observe(time.perf_counter() - began)

        @event.listens_for(engine, "handle_error")
        def _failed(context: Any) -> None:
            conn = context.connection
            if conn is not None and conn.info.get(_STARTS):
                conn.info[_STARTS].pop()


class RequestTimer:
    """ASGI middleware: observe each HTTP request's latency under its route template."""

    def __init__(self, app: ASGIApp, metrics: ControlPlaneMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            self.metrics.request_seconds.labels(
                scope["method"], route_template(scope), f"{status // 100}xx"
            ).observe(time.perf_counter() - began)


def route_template(scope: Scope) -> str:
    """`/api/v1/rollouts/{rollout_id}` for the route that served the request."""
    if "route" not in scope:  # a Mount (static files) has an endpoint but no route
        return f"{scope.get('root_path', '')}/{{path}}" if "endpoint" in scope else UNMATCHED
    # Nested routers keep only their own part of the template, so the template is rebuilt
    # from the concrete path and the parameters the router matched.
    path = str(scope.get("path", ""))
    segments = path.split("/")
    params: dict[str, Any] = scope.get("path_params") or {}
    for name, value in params.items():
        text = str(value)
        if "/" in text.strip("/"):
            head, sep, tail = path.rpartition(text.strip("/"))
            path = f"{head}{{{name}}}{tail}" if sep else path
            segments = path.split("/")
            continue
        for i in range(len(segments) - 1, -1, -1):
            if segments[i] == text.strip("/"):
                segments[i] = f"{{{name}}}"
                path = "/".join(segments)
                break
    return path
