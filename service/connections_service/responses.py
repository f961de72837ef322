"""Every answer that is not a success: the exception handlers, and the same statuses declared
for the OpenAPI document, so generated clients know each one.

    400  the body is not JSON the service can read          (FastAPI's own)
    404  no such connection                                 (the endpoints)
    405  wrong method; ``Allow`` names every method of the path
    409  the id is taken                                    (the endpoints)
    413  the body is larger than ``body_limit.MAX_BODY_BYTES``
    422  a field is wrong; the body names it and quotes at most ``EXCERPT_LENGTH`` characters of it
    503  the database is out of reach or refused; ``Retry-After`` says when to try again

A 422 quotes what the client sent, and that can be anything JSON can carry: a lone surrogate
(which UTF-8 cannot encode), NaN or Infinity (which strict JSON cannot write), a field of
megabytes. Each quoted value is made safe and short before the body is written.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from dbledger.redaction import redact

__all__ = [
    "BODY_ERRORS",
    "CONFLICT",
    "EXCERPT_LENGTH",
    "NOT_FOUND",
    "TOO_LARGE",
    "UNAVAILABLE",
    "Problem",
    "database_unavailable",
    "excerpt",
    "http_error",
    "validation_failed",
]

logger = logging.getLogger("connections_service")

# Enough of a value to recognise it; a 422 is never larger than the request by much.
EXCERPT_LENGTH = 64
# Integers JSON readers agree on (JavaScript's safe range); larger ones are quoted as text.
_SAFE_INTEGER = 2**53
_MESSAGE_LENGTH = 300


class Problem(BaseModel):
    """The body of every error but 422: what went wrong, and what to do about it."""

    detail: str


def _declare(code: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem, "description": description}}


NOT_FOUND = _declare(404, "no connection has this id")
CONFLICT = _declare(409, "a row with this id exists already")
UNAVAILABLE = _declare(503, "the database is out of reach or refused; retry after Retry-After seconds")
# The body limit applies to every request, a GET's too.
TOO_LARGE = _declare(413, "the body is larger than the service accepts")
BODY_ERRORS = {
    **_declare(400, "the body cannot be parsed (too deeply nested, a number of thousands of digits)"),
    **TOO_LARGE,
}


def _text(value: str, limit: int = EXCERPT_LENGTH) -> str:
    """``value`` cut to ``limit`` characters, with lone surrogates written as ``\\udXXX``."""
    if len(value) > limit:
        value = value[:limit] + "…"
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def excerpt(value: Any) -> Any:
    """A short, safely encodable stand-in for any value a JSON body can hold."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < _SAFE_INTEGER else _text(str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else _text(json.dumps(value))  # "NaN", "Infinity"
    if isinstance(value, bytes):
        return _text(value[: EXCERPT_LENGTH * 4].decode("utf-8", "backslashreplace"))
    if isinstance(value, str):
        return _text(value)
    # An object or an array: the start of its JSON text. Bodies are small (MAX_BODY_BYTES).
    return _text(json.dumps(value, ensure_ascii=False, default=str))


def _error(error: dict[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = {
        "type": _text(str(error.get("type", "invalid"))),
        # An unknown field's name is the client's text too.
        "loc": [part if isinstance(part, int) else _text(str(part)) for part in error.get("loc", ())],
        # Messages are the validators' own, but one may quote the input (a JSON decode error).
        "msg": _text(str(error.get("msg", "")), _MESSAGE_LENGTH),
    }
    if "input" in error:
        safe["input"] = excerpt(error["input"])
    context = error.get("ctx")
    if isinstance(context, dict):
        safe["ctx"] = {
            _text(str(key)): excerpt(value if isinstance(value, int | float | str | None) else str(value))
            for key, value in context.items()
        }
    return safe


async def validation_failed(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 body, with every quoted value made safe (``excerpt``)."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": [_error(dict(error)) for error in exc.errors()]}, status_code=422)


def _methods_of(app: FastAPI, path: str) -> set[str]:
    """The methods the OpenAPI document gives the path ``path`` matches."""
    methods: set[str] = set()
    for template, operations in app.openapi()["paths"].items():
        pattern, _, _ = compile_path(template)
        if pattern.match(path):
            methods |= {method.upper() for method in operations}
    return methods


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an HTTP error, except that a 405 lists every method of the path, as
    the OpenAPI document has them (Starlette names those of the first route it tried only)."""
    assert isinstance(exc, HTTPException)
    # The document's paths are the application's own, without the prefix it may be mounted under.
    path = request.url.path.removeprefix(request.scope.get("root_path", ""))
    if exc.status_code == 405 and (methods := _methods_of(request.app, path)):
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
    return await http_exception_handler(request, exc)


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database is the server's trouble but not a bug: 503, so clients and load balancers
    retry, instead of a 500. The client hears what kind of trouble; the log has the message,
    which may name the host."""
    wait = request.app.state.wait
    if isinstance(exc, PoolTimeout):
        reason = f"no database connection within {wait:g} s"
    elif isinstance(exc, psycopg.OperationalError):
        reason = "the connection to the database failed"
    else:
        sqlstate = getattr(exc, "sqlstate", None) or "unknown"
        reason = f"the database refused the request (SQLSTATE {sqlstate})"
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # A driver's message: masked by structure, and by value for the passwords dbledger knows.
    logger.warning(
        "%s %s: %s: %s", request.method, request.url.path, reason, redact(first_line, secrets=True)
    )
    return JSONResponse(
        {"detail": f"database unavailable: {reason}; try again shortly"},
        status_code=503,
        headers={"Retry-After": str(math.ceil(wait))},
    )
