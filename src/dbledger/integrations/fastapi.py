"""FastAPI (and any Starlette application): version and health endpoints, and a lifespan that
migrates before the application accepts traffic.

    from dbledger.integrations.fastapi import ledger_router, migrating_lifespan

    app = FastAPI(lifespan=migrating_lifespan(DATABASE_URL, "migrations"))
    app.include_router(ledger_router(DATABASE_URL, "migrations"))

``GET /api/db/version``: the schema version, applied migrations with times and checksums, and
pending, failed, modified, missing ones. ``GET /health``: 200 when the database answers and the
ledger is clean (nothing failed, dirty, modified, missing or pending); 503 with the reasons.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from dbledger.api import Status, migrate, status
from dbledger.config import DEFAULT_LOCK_TIMEOUT
from dbledger.errors import DbledgerError

PathLike = str | os.PathLike[str]


def health_reasons(state: Status) -> list[str]:
    """Why a service on this database should not be called healthy; empty when it should."""
    reasons = list(state.problems)
    reasons += [
        f"migration '{m.name}' is pending: the database is behind this service's migrations"
        for m in state.plan.pending
        if m.name not in state.plan.rows  # a failed one is already explained by its problem line
    ]
    return reasons


def ledger_router(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    ledger_table: str | None = None,
    version_path: str = "/api/db/version",
    health_path: str = "/health",
) -> APIRouter:
    """A router with the version and health endpoints for one database and migrations folder
    (and ledger table, default as the command line resolves it)."""
    router = APIRouter()

    @router.get(version_path, tags=["database"])
    def db_version() -> dict[str, Any]:
        return status(database_url, directory, check_schema=True, ledger_table=ledger_table).to_dict()

    @router.get(health_path, tags=["database"])
    def health() -> JSONResponse:
        try:
            state = status(database_url, directory, check_schema=True, ledger_table=ledger_table)
        except DbledgerError as exc:
            return JSONResponse({"status": "unavailable", "reasons": [exc.message]}, status_code=503)
        reasons = health_reasons(state)
        body: dict[str, Any] = {
            "status": "unhealthy" if reasons else "ok",
            "version": state.version,
            "reasons": reasons,
        }
        return JSONResponse(body, status_code=503 if reasons else 200)

    return router


def migrating_lifespan(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    ledger_table: str | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan for ``FastAPI(lifespan=...)`` that migrates at startup. A failure raises, and
    the ASGI server aborts startup before accepting connections (uvicorn binds its socket after
    the lifespan started)."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await run_in_threadpool(
            migrate, database_url, directory, ledger_table=ledger_table, lock_timeout=lock_timeout
        )
        yield

    return lifespan
