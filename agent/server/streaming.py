"""Streaming a Generation to the client, and stopping it when the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from agent.generation import Generation

T = TypeVar("T")
TEXT_SLOT = "\x00"  # where a chunk's text goes in a text_event template


def text_event(template: Any, *, before: str = "", after: str = "") -> Callable[[str], bytes]:
    """Encoder for events that differ only in their text, `template` serialized once.

    `template` holds TEXT_SLOT exactly once where the text goes; per batch of tokens only the
    text is JSON-encoded and spliced in, instead of dumping the whole event again.
    """
    prefix, suffix = json.dumps(template).split(json.dumps(TEXT_SLOT))
    prefix, suffix = before + prefix, suffix + after

    def encode(text: str) -> bytes:
        return (prefix + json.dumps(text) + suffix).encode()

    return encode


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class TokenStreamResponse(StreamingResponse):
    """Writes each body part as it comes; a client disconnect cancels the generation.

    Parts are built per batch of tokens (the Generation hands over everything that arrived
    since the last write), so a slow reader gets fewer, larger writes instead of a backlog.
    """

    def __init__(
        self,
        parts: AsyncIterator[bytes],
        generation: Generation,
        media_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(parts, status_code=200, headers=headers, media_type=media_type)
        self.parts = parts
        self.generation = generation

    def _on_watcher_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            self.generation.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI: headers, then parts; a watcher cancels the engine on disconnect."""
        watcher = asyncio.create_task(_wait_for_disconnect(receive))
        watcher.add_done_callback(self._on_watcher_done)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async for part in self.parts:
                if watcher.done():
                    break  # the engine was told to stop; nobody reads the rest
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if self.generation.completion is None:
                self.generation.cancel()


async def until_disconnect(
    request: Request, work: Awaitable[T], on_disconnect: Callable[[], None]
) -> T:
    """Await `work`; if the client disconnects first, call `on_disconnect` and keep waiting."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_wait_for_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if watcher in done:
            on_disconnect()
        return await task
    finally:
        if not watcher.done():
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
