"""Single-range HTTP responses for artifact files (resumable downloads)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from controlplane.errors import ApiError

CHUNK_BYTES = 1 << 20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive for one `bytes=` range; None to send the whole file.

    Raises ApiError 416 when the range cannot be satisfied. Several ranges are answered
    with the whole file, which RFC 9110 allows.
    """
    match = _RANGE.match(header.strip())
    if match is None:
        if header.strip().startswith("bytes=") and "," in header:
            return None
        raise _unsatisfiable(header, size)
    first_s, last_s = match.groups()
    if not first_s and not last_s:
        raise _unsatisfiable(header, size)
    if not first_s:  # suffix: the last N bytes
        length = int(last_s)
        if length == 0 or size == 0:
            raise _unsatisfiable(header, size)
        return max(0, size - length), size - 1
    first = int(first_s)
    last = min(int(last_s), size - 1) if last_s else size - 1
    if first >= size or (last_s and int(last_s) < first):
        raise _unsatisfiable(header, size)
    return first, last


def _unsatisfiable(header: str, size: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"range {header!r} does not fit a file of {size} bytes",
        {"Content-Range": f"bytes */{size}"},
    )


def _read(path: Path, first: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(first)
        while length > 0:
            chunk = fh.read(min(CHUNK_BYTES, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


class _ClosingStream(StreamingResponse):
    """A streamed body that calls `on_close` once it ends, however it ends (sent, client gone)."""

    def __init__(self, *args: Any, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def ranged_file(
    request: Request,
    path: Path,
    *,
    etag: str,
    media_type: str = "application/octet-stream",
    on_close: Callable[[], None] = lambda: None,
) -> Response:
    """200 with the file, 206 with the requested range, or 416; ETag is the sha256.

    `on_close` is called when the answer is done: after the body is streamed (or the client
    left), or at once for an answer without one.
    """
    try:
        response = _answer(request, path, etag=etag, media_type=media_type, on_close=on_close)
    except BaseException:
        on_close()
        raise
    if not isinstance(response, _ClosingStream):
        on_close()
    return response


def _answer(
    request: Request, path: Path, *, etag: str, media_type: str, on_close: Callable[[], None]
) -> Response:
    size = path.stat().st_size
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{etag}"'}
    if request.headers.get("if-none-match", "").strip('" ') == etag:
        return Response(status_code=304, headers=headers)
    span = None
    header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if header and (if_range is None or if_range.strip('" ') == etag):
        span = parse_range(header, size)
    if span is None:
        headers["Content-Length"] = str(size)
        return _ClosingStream(
            _read(path, 0, size), media_type=media_type, headers=headers, on_close=on_close
        )
    first, last = span
    headers["Content-Length"] = str(last - first + 1)
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return _ClosingStream(
        _read(path, first, last - first + 1),
        status_code=206,
        media_type=media_type,
        headers=headers,
        on_close=on_close,
    )
