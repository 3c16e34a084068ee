"""The API's one error shape, `{"error": {"code": ..., "message": ...}}`, for every status."""

from __future__ import annotations

import logging
import traceback
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from controlplane.errors import ControlPlaneError

_LOGGER = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "validation_error",
    429: "too_many_requests",
}


class ErrorDetail(BaseModel):
    """What went wrong: a stable code and a message that says what to do."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """The envelope of every error answer."""

    error: ErrorDetail


# Documented on every route (api/main.py): any 4xx answer carries the envelope, 422 included.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "refused; the body says why and what to do"},
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "a service this needs (MQTT) is not available"},
}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The error envelope."""
    return {"error": {"code": code, "message": message}}


def _reply(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


async def _control_plane_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ControlPlaneError)
    return _reply(exc.status, exc.code, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return _reply(exc.status_code, code, message, headers or None)


def _allowed_methods(request: Request) -> list[str]:
    # Starlette names only the first route that matched the path; a path served by several
    # routes (GET and POST /tokens) allows the methods of all of them.
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _child = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return _reply(422, "validation_error", "; ".join(parts) or "invalid request")


def _database_failure(request: Request, exc: Exception) -> tuple[str, str, str, object]:
    """Method, path, the driver error's class and its SQLSTATE: what may be logged of a
    database error (its message and statement can quote stored values and credentials)."""
    orig = getattr(exc, "orig", None)
    return (
        request.method,
        request.url.path,
        type(orig or exc).__name__,
        getattr(orig, "sqlstate", None),
    )


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # A value the database cannot store that validation let through.
    _LOGGER.warning(
        "database refused a value on %s %s: %s (SQLSTATE %s)", *_database_failure(request, exc)
    )
    return _reply(
        422,
        "validation_error",
        "a value is out of the range the database can store; check numbers, dates and text",
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, SQLAlchemyError):
        _LOGGER.error(
            "database error on %s %s: %s (SQLSTATE %s)\n%s",
            *_database_failure(request, exc),
            "".join(traceback.format_tb(exc.__traceback__)),
        )
    else:
        _LOGGER.exception("unhandled error on %s %s", request.method, request.url.path)
    return _reply(500, "internal_error", "internal error; the control plane log has the details")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error the app can raise through the one envelope."""
    app.add_exception_handler(ControlPlaneError, _control_plane_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(Exception, _unexpected)
