"""A limit on request bodies: the largest valid one is about 1.5 KB (five fields of at most 255
characters), so anything over ``MAX_BODY_BYTES`` is refused with 413 before it is parsed or
held in memory. uvicorn sets no such limit.

A declared ``Content-Length`` over the limit is refused at once; a body sent in chunks is
counted as it arrives and refused when it passes the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_BODY_BYTES", "BodyLimit"]

MAX_BODY_BYTES = 64 * 1024


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes, the most this service accepts"


class BodyLimit:
    """ASGI middleware refusing request bodies larger than ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"detail": _too_large(self.limit)}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the endpoint's body reading, so the application's own
                    # exception handling answers it like any other HTTP error.
                    raise HTTPException(413, _too_large(self.limit))
            return message

        await self.app(scope, counted, send)
