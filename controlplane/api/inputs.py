"""Input no endpoint accepts: NUL characters in the path, the query or a JSON body, and JSON
bodies larger than any endpoint needs.

PostgreSQL cannot store NUL in text, and no name, label, id or time needs one, so requests
carrying one are answered 422 before any route or database sees them; an oversized JSON body
is answered 413 before it is parsed.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.api.errors import error_body

# A JSON `\u0000` escape not itself escaped (an even run of backslashes before it).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_MESSAGE = "NUL characters are not accepted in paths, query parameters or JSON bodies"
MAX_JSON_BODY_BYTES = 1 << 20  # the largest real body (a rollout naming devices) is far less


def has_nul(scope: Scope, body: bytes = b"") -> bool:
    """True when the request's path, query string or JSON body carries a NUL character."""
    query: bytes = scope.get("query_string", b"")
    return (
        "\x00" in scope.get("path", "")
        or b"\x00" in query
        or b"%00" in query
        or b"%00" in scope.get("raw_path", b"")
        or _JSON_NUL.search(body) is not None
    )


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return b"json" in value.lower()
    return False


class CleanInput:
    """ASGI middleware: 422 for requests that carry NUL, 413 for oversized JSON bodies, both
    in the API's error shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if has_nul(scope):
            await _refuse(send, 422, "validation_error", _MESSAGE)
            return
        if not _is_json(scope):
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > MAX_JSON_BODY_BYTES:
            await _refuse(send, 413, "too_large", _too_large())
            return
        size = 0
        chunks: list[bytes] = []
        first: Message = {"type": "http.request", "body": b"", "more_body": False}
        while True:  # the route reads the whole JSON body anyway
            message = await receive()
            if message["type"] != "http.request":
                first = message
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_JSON_BODY_BYTES:
                await _refuse(send, 413, "too_large", _too_large())
                return
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        if _JSON_NUL.search(first.get("body", b"")):
            await _refuse(send, 422, "validation_error", _MESSAGE)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return first

        await self.app(scope, replay, send)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _too_large() -> str:
    return f"JSON bodies are limited to {MAX_JSON_BODY_BYTES} bytes"


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
