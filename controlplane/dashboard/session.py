"""Per-session CSRF token and one-shot flash messages, both in cookies.

The CSRF token is random per browser session, kept in a cookie that JavaScript may read and
sent back in every form (`csrf` field) or fetch (`X-CSRF-Token` header); a request from
another site cannot read the cookie, so it cannot send the matching value. The auth cookie
is also `SameSite=Strict`: two independent locks.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import quote, unquote

from fastapi import Request
from fastapi.responses import Response

CSRF_COOKIE = "edgefleet_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
FLASH_COOKIE = "edgefleet_flash"
SESSION_MAX_AGE_S = 30 * 24 * 3600


def csrf_token(request: Request) -> str:
    """The session's CSRF token, or a new one (set it with `keep_session`)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    return token if len(token) >= 32 else secrets.token_urlsafe(32)


def keep_session(request: Request, response: Response, token: str) -> None:
    """Store the CSRF token (when new) and drop a flash that was just shown."""
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(
            CSRF_COOKIE,
            token,
            max_age=SESSION_MAX_AGE_S,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE)


async def csrf_ok(request: Request) -> bool:
    """Whether the request carries the session's CSRF token (header or form field)."""
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD, "")
        sent = value if isinstance(value, str) else ""
    return csrf_matches(request, sent)


def csrf_matches(request: Request, sent: str) -> bool:
    """Whether `sent` is the session's CSRF token."""
    expected = request.cookies.get(CSRF_COOKIE, "")
    return len(expected) >= 32 and secrets.compare_digest(expected, sent)


def flash(response: Response, text: str, *, kind: str = "ok") -> Response:
    """Show `text` once on the next page (kind: ok or error)."""
    value = quote(json.dumps({"text": text[:500], "kind": kind}))
    response.set_cookie(FLASH_COOKIE, value, max_age=60, httponly=True, samesite="strict")
    return response


def take_flash(request: Request) -> dict[str, str] | None:
    """The flash message the last action left, if any."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(unquote(raw))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {"text": str(data.get("text", "")), "kind": str(data.get("kind", "ok"))}
