"""The cap on requests in flight: extra requests wait, none is refused or lost."""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope, Send

from controlplane.api.limits import RequestLimit


def test_requests_past_the_cap_wait_their_turn() -> None:
    running = 0
    peak = 0
    answered = 0

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    limited = RequestLimit(slow_app, limit=2)

    async def request() -> None:
        nonlocal answered
        await limited({"type": "http"}, _receive, _send)
        answered += 1

    async def main() -> None:
        await asyncio.gather(*(request() for _ in range(7)))

    asyncio.run(main())
    assert peak == 2
    assert answered == 7


async def _receive() -> dict[str, object]:
    return {"type": "http.request"}


async def _send(message: object) -> None:
    return None
