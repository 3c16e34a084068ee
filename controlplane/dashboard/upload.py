"""A file the browser uploads, parsed as it streams and written straight to disk.

Starlette's form parser would spool the file in the system temp dir before any check ran;
this one writes under a directory the caller chooses (the data dir's `uploads/`), refuses
a body larger than the limit as soon as it has read that much, and keeps only the small
fields (the CSRF token, a checkbox) in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from controlplane.errors import ImportRefused

FIELD_MAX_BYTES = 4096  # a text field of the form (csrf token, checkbox)
MAX_FIELDS = 16
FORM_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers and the text fields


@dataclass
class Upload:
    """The form's text fields and the one file it carried, as stored on disk."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str = ""
    path: Path | None = None
    size: int = 0


class _Receiver:
    """Callbacks of the multipart parser; file bytes are queued for writing off the loop."""

    def __init__(self, directory: Path, file_field: str, max_bytes: int) -> None:
        self.directory = directory
        self.file_field = file_field
        self.max_bytes = max_bytes
        self.upload = Upload()
        self.pending: list[bytes] = []
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._is_file = False
        self._data = bytearray()

    def on_part_begin(self) -> None:
        self._disposition, self._name, self._is_file, self._data = b"", "", False, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _kind, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            return
        if self._name != self.file_field or self.upload.path is not None:
            raise ImportRefused(f"send one file, in the form field {self.file_field!r}")
        self._is_file = True
        self.upload.filename = Path(options[b"filename"].decode("utf-8", "replace")).name
        self.upload.path = self.directory / _safe_name(self.upload.filename)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.upload.size += end - start
            if self.upload.size > self.max_bytes:
                raise _too_large(self.max_bytes)
            self.pending.append(data[start:end])
            return
        if len(self._data) + end - start > FIELD_MAX_BYTES:
            raise ImportRefused(f"form field {self._name!r} is longer than {FIELD_MAX_BYTES} bytes")
        self._data += data[start:end]

    def on_part_end(self) -> None:
        if not self._is_file:
            if len(self.upload.fields) >= MAX_FIELDS:
                raise ImportRefused(f"the form has more than {MAX_FIELDS} fields")
            self.upload.fields[self._name] = self._data.decode("utf-8", "replace")


def _safe_name(filename: str) -> str:
    """The file name with anything but letters, digits and `.-_` dropped (a GGUF's name
    becomes its model's name, so it is kept)."""
    kept = "".join(c for c in filename if c.isalnum() or c in "._-").lstrip(".")
    return kept[-100:] or "file"


def _too_large(max_bytes: int) -> ImportRefused:
    limit = f"{max_bytes / 2**20:.0f} MiB" if max_bytes >= 2**20 else f"{max_bytes} bytes"
    return ImportRefused(
        f"the upload is larger than the {limit} this control plane accepts",
        status=413,
        code="too_large",
    )


async def receive_upload(
    request: Request, directory: Path, *, max_bytes: int, file_field: str = "file"
) -> Upload:
    """Parse a multipart/form-data request; the file goes to `directory`, at most `max_bytes`.

    ImportRefused for a request that is not such a form, and (413) past the limit; the
    caller removes `directory` (and what was written so far) in every case.
    """
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ImportRefused("send the model as a multipart/form-data upload")
    body_limit = max_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise _too_large(max_bytes)
    directory.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(directory, file_field, max_bytes)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": receiver.on_part_begin,
            "on_part_data": receiver.on_part_data,
            "on_part_end": receiver.on_part_end,
            "on_header_field": receiver.on_header_field,
            "on_header_value": receiver.on_header_value,
            "on_header_end": receiver.on_header_end,
            "on_headers_finished": receiver.on_headers_finished,
        },
    )
    received = 0
    out: BinaryIO | None = None
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise _too_large(max_bytes)
            parser.write(chunk)
            if receiver.pending:
                if out is None:
                    assert receiver.upload.path is not None
                    out = receiver.upload.path.open("wb")
                data, receiver.pending = b"".join(receiver.pending), []
                await run_in_threadpool(out.write, data)
        parser.finalize()
    except MultipartParseError as exc:
        raise ImportRefused(f"the upload is not a well-formed form ({exc})") from exc
    finally:
        if out is not None:
            out.close()
    if receiver.upload.path is None:
        raise ImportRefused(f"the form has no file in its {file_field!r} field")
    if out is None:  # an empty file
        receiver.upload.path.touch()
    return receiver.upload
