"""Resumable HTTP downloads into a partial file, and where file:// URLs and plain paths point."""

from __future__ import annotations

import errno
import hashlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

from models import files
from models.errors import DownloadError
from models.files import Progress

_LOGGER = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 30.0
# Statuses that say "not now" rather than "never": a retry may get the file.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def local_source(url: str) -> Path | None:
    """The path for file:// URLs and plain paths, None for http(s)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    if len(parsed.scheme) <= 1:  # no scheme (or a Windows drive letter)
        return Path(url)
    raise DownloadError(f"cannot fetch {url!r}: only http, https, file URLs and paths work")


def _hash_prefix(path: Path) -> tuple[hashlib._Hash, int]:
    digest, done = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(files.HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
    return digest, done


def download(
    url: str,
    partial: Path,
    size: int,
    headers: Mapping[str, str],
    progress: Progress | None,
) -> str:
    """Download into `partial`, resuming it; the sha256 of the whole file.

    An OSError writing `partial` propagates for the caller to word (a full disk deletes it).
    """
    import httpx  # the agent extra; a build machine without it can still import the store

    offset = partial.stat().st_size if partial.exists() else 0
    if offset > size:
        partial.unlink()
        offset = 0
    digest, offset = _hash_prefix(partial) if offset else (hashlib.sha256(), 0)
    done = offset
    if offset == size:
        return digest.hexdigest()
    request_headers = {**headers, "Accept-Encoding": "identity"}
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    try:
        with httpx.Client(follow_redirects=True, timeout=HTTP_TIMEOUT_S) as client:
            with client.stream("GET", url, headers=request_headers) as resp:
                start = _resume_offset(url, resp.status_code, resp.headers, offset, partial)
                if start == 0 and offset:
                    _LOGGER.info("%s ignored Range: downloading from the start", url)
                    digest, done = hashlib.sha256(), 0
                with partial.open("ab" if start else "wb") as f:
                    for chunk in resp.iter_bytes():  # as received: a drop loses nothing
                        if done + len(chunk) > size:
                            partial.unlink()
                            raise DownloadError(f"{url}: server sent more than {size} bytes")
                        done = files.write_hashed(f, chunk, digest, done, size, progress)
                    files.sync_file(f)
    except httpx.HTTPError as exc:
        raise DownloadError(
            f"download of {url} stopped at {done} of {size} bytes ({exc}); run again to resume",
            transient=True,
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:  # a full disk should not stay full for a resume
            partial.unlink(missing_ok=True)
        raise
    if done != size:
        raise DownloadError(
            f"download of {url} ended at {done} of {size} bytes; run again to resume",
            transient=True,
        )
    return digest.hexdigest()


def _resume_offset(
    url: str, resp_status: int, headers: Mapping[str, str], offset: int, partial: Path
) -> int:
    """Where the response body starts: `offset` for a matching 206, 0 for a 200."""
    if resp_status == 200:
        return 0
    if resp_status in (206, 416) and offset:
        match = re.match(r"bytes (\d+)-", headers.get("content-range", ""))
        if resp_status == 206 and match and int(match.group(1)) == offset:
            return offset
        partial.unlink()  # the server's file is not the one our partial came from
        raise DownloadError(
            f"{url}: server cannot resume at byte {offset} (HTTP {resp_status}); "
            "the partial download was deleted, run again",
            transient=True,
        )
    hint = {401: "check the credentials", 403: "check the credentials", 404: "check the URL"}
    raise DownloadError(
        f"GET {url}: HTTP {resp_status}; {hint.get(resp_status, 'try again later')}",
        transient=resp_status in TRANSIENT_STATUSES,
    )
