"""FastAPI (and any Starlette application): version and health endpoints, and a lifespan that
migrates before the application accepts traffic.

    from dbledger.integrations.fastapi import bearer_token, ledger_router, migrating_lifespan

    app = FastAPI(lifespan=migrating_lifespan(DATABASE_URL, "migrations"))
    app.include_router(
        ledger_router(DATABASE_URL, "migrations", version_access=bearer_token(os.environ["VERSION_TOKEN"]))
    )

Health, open to all (probes have no credentials):

- ``GET /health/live``, liveness: 200 while the process answers. It never touches the database,
  and it runs on the event loop, not in the thread pool, so it answers even while every worker
  thread waits for a database that is gone: an outage must not get every replica restarted.
- ``GET /health/ready``, readiness, and ``GET /health`` (the same, as it always was): 200 when
  this code can serve on this database (``ok``; ``warning`` with the findings that do not stop
  it, such as a hand-made index or the database being ahead of this code; ``running`` while a
  ``transaction:false`` migration is at work); 503 (``unhealthy``) with one line per migration or
  schema object at fault, or (``unavailable``, with ``Retry-After``) with the kind of outage.
  ``HealthPolicy`` (the router's ``unhealthy_drift`` and ``ledger_ahead``) draws the line.

``GET /api/db/version``, behind the ``version_access`` dependency the application supplies: the
ledger as ``dbledger status --json`` shows it, without the database's location or the folder's
path. None ever answers 500: what dbledger cannot read is a 503 saying why, and the full message
goes to the ``dbledger`` log.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from dbledger.api import Status, migrate, status
from dbledger.config import DEFAULT_LOCK_TIMEOUT
from dbledger.integrations.views import (
    DRIFT_THRESHOLDS,
    LEDGER_AHEAD,
    DriftThreshold,
    HealthPolicy,
    LedgerAhead,
    health_body,
    health_reasons,
    liveness_body,
    unavailable_body,
    version_body,
)

__all__ = [
    "DRIFT_THRESHOLDS",
    "LEDGER_AHEAD",
    "DriftThreshold",
    "HealthPolicy",
    "LedgerAhead",
    "bearer_token",
    "health_reasons",
    "ledger_router",
    "migrating_lifespan",
    "open_access",
]

PathLike = str | os.PathLike[str]

# Seconds the endpoints wait for a new connection: a probe must answer before its own timeout
# (Kubernetes' default is 1 s; most set a few), and libpq waits at least 2.
HEALTH_CONNECT_TIMEOUT = 3


class DriftCounts(BaseModel):
    """How many schema differences of each severity the live schema has."""

    breaking: int
    risky: int
    slow: int
    harmless: int


class Health(BaseModel):
    """The body of readiness (``/health``, ``/health/ready``). ``reasons``: why not ready (empty
    when ready); ``warnings``: findings that leave it ready; ``running``: migrations at work.
    An ``unavailable`` body has ``status`` and ``reasons`` only."""

    status: Literal["ok", "warning", "running", "unhealthy", "unavailable"]
    version: int | str | None = None
    reasons: list[str]
    warnings: list[str] = []
    running: list[str] = []
    drift: DriftCounts | None = None


class Liveness(BaseModel):
    status: Literal["alive"]


class LedgerEntry(BaseModel):
    name: str
    version: int | str
    state: str
    checksum: str | None
    applied_at: str | None
    applied_order: int | None
    execution_time_ms: int | None
    error_message: str | None


class Modified(LedgerEntry):
    checksum_on_disk: str


class Renamed(LedgerEntry):
    renamed_to: str


class Pending(BaseModel):
    name: str
    version: int | str
    checksum: str
    transaction: bool


class OutOfOrder(BaseModel):
    name: str
    version: int | str


class SchemaDifference(BaseModel):
    kind: str
    name: str
    message: str
    details: str | None
    change: Literal["missing", "extra", "changed"]
    attribute: str | None
    severity: Literal["harmless", "slow", "risky", "breaking"]


class Fingerprints(BaseModel):
    expected: str
    found: str
    drifted: bool
    differences: list[SchemaDifference] | None = None  # when drifted


class DatabaseVersion(BaseModel):
    """The body of the version endpoint (the ledger as ``dbledger status --json`` shows it)."""

    model_config = ConfigDict(populate_by_name=True)

    ledger_exists: bool
    ledger_format: int | None
    version: int | str | None
    applied: list[LedgerEntry]
    applied_in_version_order: bool
    pending: list[Pending]
    running: list[LedgerEntry]
    failed: list[LedgerEntry]
    modified: list[Modified]
    renamed: list[Renamed]
    missing: list[LedgerEntry]
    out_of_order: list[OutOfOrder]
    dirty: list[LedgerEntry]
    problems: list[str]
    # "schema" in the body; the attribute is renamed because BaseModel has a method of that name.
    schema_: Fingerprints | None = Field(default=None, alias="schema")
    history: dict[str, Any] | None


class Refusal(BaseModel):
    detail: str


# Module level: FastAPI resolves a dependency's (postponed) annotations in the module's namespace.
_BEARER = HTTPBearer(auto_error=False, description="the token the application was given")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]

# Probes and clients may ask again soon: an outage or a migration in progress passes.
_RETRY = {"Retry-After": "5"}

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Health, "description": "dbledger could not read the database or the files"}
}


_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {
        "model": Health,
        "description": "not ready (unhealthy, one reason per line), or the state could not be read "
        "(unavailable, with Retry-After)",
    }
}
_READINESS = (
    "Readiness: 200 when this code can serve on this database (ok, warning, running), 503 when it "
    "cannot (unhealthy) or the database cannot be read (unavailable)."
)


def bearer_token(token: str | None) -> Callable[..., None]:
    """A dependency admitting only requests with ``Authorization: Bearer <token>``, compared in
    constant time. An empty or missing ``token`` admits no one: the endpoint is closed until the
    application is given one, rather than open by accident."""
    expected = (token or "").encode("utf-8")

    def require_token(credentials: BearerCredentials) -> None:
        if not expected:
            reason = "this endpoint is closed: the application has no token configured for it"
        elif credentials is None:
            reason = "this endpoint needs 'Authorization: Bearer <token>'"
        # Header values arrive decoded as latin-1; compare bytes, which takes any character.
        elif hmac.compare_digest(credentials.credentials.encode("latin-1", "replace"), expected):
            return
        else:
            reason = "the bearer token is not the one this endpoint accepts"
        raise HTTPException(401, reason, headers={"WWW-Authenticate": "Bearer"})

    return require_token


def open_access() -> None:
    """A ``version_access`` that admits everyone (a service on a private network)."""


def ledger_router(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    version_access: Callable[..., Any],
    ledger_table: str | None = None,
    connect_timeout: int = HEALTH_CONNECT_TIMEOUT,
    version_path: str = "/api/db/version",
    health_path: str = "/health",
    unhealthy_drift: DriftThreshold = "breaking",
    ledger_ahead: LedgerAhead = "warning",
) -> APIRouter:
    """A router with the version and health endpoints for one database and migrations folder
    (and ledger table, default as the command line resolves it). ``version_access`` is the
    dependency that guards the version endpoint: ``bearer_token(...)``, one of the
    application's own, or ``open_access`` to say in so many words that it is public.

    ``health_path`` is readiness; ``{health_path}/live`` and ``{health_path}/ready`` are liveness
    and readiness. ``unhealthy_drift`` (a severity, or ``"never"``) and ``ledger_ahead``
    (``"warning"`` or ``"unhealthy"``) say what makes readiness 503: see ``HealthPolicy``. A
    value outside those is a ``ConfigError`` naming it, raised here, at startup."""
    policy = HealthPolicy(unhealthy_drift, ledger_ahead)
    router = APIRouter(tags=["database"])

    def read(endpoint: str) -> Status | JSONResponse:
        try:
            return status(
                database_url,
                directory,
                check_schema=True,
                ledger_table=ledger_table,
                connect_timeout=connect_timeout,
            )
        except Exception as exc:  # a ledger row no dbledger wrote, a driver's surprise: still a 503
            return JSONResponse(unavailable_body(exc, endpoint), status_code=503, headers=_RETRY)

    def ready(endpoint: str) -> JSONResponse:
        state = read(endpoint)
        if isinstance(state, JSONResponse):
            return state
        code, body = health_body(state, policy)
        return JSONResponse(body, status_code=code)

    @router.get(
        version_path,
        response_model=DatabaseVersion,
        responses={401: {"model": Refusal, "description": "refused by the access check"}, **_UNAVAILABLE},
        dependencies=[Depends(version_access)],
    )
    def db_version() -> JSONResponse:
        state = read(version_path)
        return state if isinstance(state, JSONResponse) else JSONResponse(version_body(state))

    @router.get(
        f"{health_path.rstrip('/')}/live",
        response_model=Liveness,
        description="Liveness: 200 while the process answers; the database is never read.",
    )
    async def health_live() -> JSONResponse:  # on the event loop: no worker thread needed
        return JSONResponse(liveness_body())

    @router.get(
        f"{health_path.rstrip('/')}/ready",
        response_model=Health,
        responses=_NOT_READY,
        description=_READINESS,
    )
    def health_ready() -> JSONResponse:
        return ready(f"{health_path.rstrip('/')}/ready")

    @router.get(health_path, response_model=Health, responses=_NOT_READY, description=_READINESS)
    def health() -> JSONResponse:
        return ready(health_path)

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
