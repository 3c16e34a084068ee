"""A cap on requests in flight, so database connections can never run out mid-request."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

# A request holds its database connection across several worker-thread hops. With more
# requests in flight than pooled connections, every worker thread could wait for a connection
# held by a request that waits for a thread: a stall until the pool times out. Requests past
# the cap wait here, holding nothing. Keep it below the pool size (core/db.py) minus the
# connections the background services use (bridge writer, rollout driver, retention). Few
# in flight also beats many on a small box: measured with bench/api_latency.py (32 clients,
# 2 cores), a cap of 8 gave 169 req/s and p99 about 320 ms; 32 gave 124 req/s and p99 920 ms,
# the worker threads mostly fighting over the GIL.
MAX_REQUESTS_IN_FLIGHT = 8
# Server-sent event streams stay open for minutes and hold no database connection while they
# wait (their poller reads once for every subscriber), nor does a model upload while its file
# streams in: they take no slot.
LONG_LIVED_PREFIXES = ("/live/", "/models/upload")


class RequestLimit:
    """ASGI middleware: at most `limit` HTTP requests run at once; the rest queue in order."""

    def __init__(self, app: ASGIApp, *, limit: int = MAX_REQUESTS_IN_FLIGHT) -> None:
        self.app = app
        self.limit = limit
        self._slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(LONG_LIVED_PREFIXES):
            await self.app(scope, receive, send)
            return
        if self._slots is None:  # created on the server's own event loop
            self._slots = asyncio.Semaphore(self.limit)
        async with self._slots:
            await self.app(scope, receive, send)
