"""What the agent's HTTP API accepts: body and prompt size caps, browser origins, clean text."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.server.errors import ApiError, error_response

MAX_BODY_BYTES = 8 << 20
# Above any context the agent serves (about 4 characters a token), and tokenized in about a
# second: a bigger prompt could only overflow after holding the engine that long.
MAX_PROMPT_CHARS = 1_000_000
# Largest integer sampling values an engine's C API takes (max_tokens, top_k, num_predict).
MAX_INT_PARAM = 2**31 - 1
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class RequestLimits:
    """The caps and the browser origins one app enforces."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_prompt_chars: int = MAX_PROMPT_CHARS
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Any) -> RequestLimits:
        """The limits an AgentSettings asks for."""
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_prompt_chars=settings.max_prompt_chars,
            cors_origins=tuple(settings.cors_origins),
        )

    def allows_origin(self, origin: str) -> bool:
        """Whether a web page from `origin` may call the API."""
        return "*" in self.cors_origins or origin in self.cors_origins

    def check_prompt(self, texts: Iterable[str | None], param: str) -> None:
        """400 when the prompt text is over the cap: checked before it is tokenized."""
        chars = sum(len(t) for t in texts if t)
        if chars > self.max_prompt_chars:
            raise ApiError(
                400,
                f"the prompt has {chars} characters, more than this agent's limit of "
                f"{self.max_prompt_chars} (max_prompt_chars); send a shorter one",
                code="prompt_too_large",
                param=param,
            )


def _lone_surrogate_free(value: Any) -> Any:
    """Raise when a string (also inside lists and dicts) cannot be encoded as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                "text contains a lone UTF-16 surrogate (e.g. \\ud800), which is not valid "
                "Unicode; send well-formed text"
            ) from None
    elif isinstance(value, (list, tuple)):
        for item in value:
            _lone_surrogate_free(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _lone_surrogate_free(key)
            _lone_surrogate_free(item)
    return value


class RequestBody(BaseModel):
    """Base of request bodies: types as documented (no "1" for 1), strings valid Unicode."""

    model_config = ConfigDict(strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        return _lone_surrogate_free(value)


class RequestGuard:
    """Refuses other web pages' writes, caps the body, and reads POST bodies as JSON.

    A browser sends `Origin` with every cross-origin write; one not in `cors_origins` gets 403,
    so a page cannot drive the agent with a "simple request" (`text/plain`, no preflight).
    Without `Origin` (curl, SDKs) the body is read as JSON whatever its Content-Type says, as
    Ollama does for `curl URL -d '{...}'`. A body over `max_body_bytes` gets 413 unread.
    """

    def __init__(self, app: ASGIApp, *, limits: RequestLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http" or scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1")
        if origin and not self.limits.allows_origin(origin):
            err = ApiError(
                403,
                f"requests from web pages at {origin} are not allowed; add the origin to the "
                "agent's cors_origins setting to allow them",
                code="origin_not_allowed",
            )
            await error_response(path, err)(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            await error_response(path, self._too_large())(scope, receive, send)
            return
        body = await self._read_body(receive)
        if body is None:
            await error_response(path, self._too_large())(scope, receive, send)
            return
        scope = {**scope, "headers": _as_json(scope["headers"], len(body))}
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self) -> ApiError:
        limit = self.limits.max_body_bytes
        return ApiError(
            413,
            f"request body is over this agent's limit of {limit} bytes (max_body_bytes)",
            code="request_too_large",
        )

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the cap."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; the app sees an empty body and answers nobody
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)


def _as_json(headers: Sequence[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in headers if k not in (b"content-type", b"content-length")]
    return [*kept, (b"content-type", b"application/json"), (b"content-length", b"%d" % length)]


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over the buffered body once, then waits on the client as before."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
