"""The HTTP API. ``create_app`` builds the application for one database and migrations folder:

    POST   /api/organizations              201 (409 duplicate id)
    POST   /api/connections                201 (409 duplicate id, 422 unknown organization_id)
    GET    /api/connections?organization_id=   (required: one organization's connections)
    GET    /api/connections/{id}           404 when unknown
    DELETE /api/connections/{id}           204, 404 when unknown
    GET    /api/audit-logs?resource_id=
    GET    /health/live                    dbledger's ledger router, open to probes: liveness (no database)
    GET    /health/ready, /health          readiness: 200 (ok, warning, running) or 503 with reasons
    GET    /api/db/version                 the same router, behind ``Authorization: Bearer <token>``

Endpoints are plain functions (FastAPI runs them in its thread pool) over a psycopg connection
pool that the lifespan opens and closes. The application does not migrate: ``__main__`` has done
that before the application exists. Every error status is in ``responses`` and declared in the
OpenAPI document; none is a 500.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from connections_service import db, ids
from connections_service.body_limit import BodyLimit
from connections_service.models import (
    ID_PATTERN,
    AuditLog,
    Connection,
    ConnectionCreate,
    Organization,
    OrganizationCreate,
    Text,
)
from connections_service.responses import (
    BODY_ERRORS,
    CONFLICT,
    NOT_FOUND,
    TOO_LARGE,
    UNAVAILABLE,
    database_unavailable,
    http_error,
    validation_failed,
)
from dbledger.integrations.fastapi import HealthPolicy, bearer_token, ledger_router

__all__ = ["create_app"]

# A generated connection id can collide with one another replica generated in the same
# millisecond; each retry takes a later millisecond.
GENERATED_ID_ATTEMPTS = 5

router = APIRouter(responses={**UNAVAILABLE, **TOO_LARGE})


def _pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


Pool = Annotated[ConnectionPool, Depends(_pool)]
ConnectionId = Annotated[str, Path(pattern=ID_PATTERN)]


@router.post(
    "/api/organizations", status_code=201, tags=["organizations"], responses={**CONFLICT, **BODY_ERRORS}
)
def create_organization(body: OrganizationCreate, pool: Pool) -> Organization:
    with pool.connection() as conn:
        try:
            return db.create_organization(conn, body.id or ids.organization_id(), body.name)
        except db.DuplicateId as exc:
            raise HTTPException(409, str(exc)) from None


@router.post("/api/connections", status_code=201, tags=["connections"], responses={**CONFLICT, **BODY_ERRORS})
def create_connection(body: ConnectionCreate, pool: Pool) -> Connection:
    with pool.connection() as conn:
        try:
            return _insert_connection(conn, body)
        except db.DuplicateId as exc:
            raise HTTPException(409, str(exc)) from None
        except db.UnknownOrganization as exc:
            # The same body as any other validation error, so clients handle one shape of 422.
            raise RequestValidationError(
                [
                    {
                        "type": "unknown_organization",
                        "loc": ("body", "organization_id"),
                        "msg": f"{exc}: create it first with POST /api/organizations",
                        "input": exc.organization_id,
                    }
                ]
            ) from None


def _insert_connection(conn: psycopg.Connection[Any], body: ConnectionCreate) -> Connection:
    fields = body.model_dump(exclude={"id"})
    if body.id is not None:
        return db.create_connection(conn, id=body.id, **fields)
    for _ in range(GENERATED_ID_ATTEMPTS - 1):
        try:
            return db.create_connection(conn, id=ids.connection_id(body.platform_type), **fields)
        except db.DuplicateId:
            continue
    return db.create_connection(conn, id=ids.connection_id(body.platform_type), **fields)


@router.get("/api/connections", tags=["connections"])
def list_connections(
    organization_id: Annotated[str, Query(pattern=ID_PATTERN)], pool: Pool
) -> list[Connection]:
    with pool.connection() as conn:
        return db.list_connections(conn, organization_id)


@router.get("/api/connections/{connection_id}", tags=["connections"], responses=NOT_FOUND)
def get_connection(connection_id: ConnectionId, pool: Pool) -> Connection:
    with pool.connection() as conn:
        found = db.get_connection(conn, connection_id)
    if found is None:
        raise HTTPException(404, f"connection {connection_id!r} not found")
    return found


@router.delete("/api/connections/{connection_id}", status_code=204, tags=["connections"], responses=NOT_FOUND)
def delete_connection(connection_id: ConnectionId, pool: Pool) -> Response:
    with pool.connection() as conn:
        deleted = db.delete_connection(conn, connection_id)
    if not deleted:
        raise HTTPException(404, f"connection {connection_id!r} not found")
    return Response(status_code=204)


@router.get("/api/audit-logs", tags=["audit"])
def list_audit_logs(resource_id: Annotated[Text, Query()], pool: Pool) -> list[AuditLog]:
    with pool.connection() as conn:
        return db.list_audit_logs(conn, resource_id)


def create_app(
    database_url: str,
    directory: str | os.PathLike[str],
    *,
    wait: float = db.DEFAULT_WAIT,
    version_token: str | None = None,
    health: HealthPolicy | None = None,
) -> FastAPI:
    """The application for the database at ``database_url``, whose migrations are in
    ``directory`` (the version and health endpoints compare the two). A request waits at most
    ``wait`` seconds for the database before its 503. ``GET /api/db/version`` admits requests
    bearing ``version_token``, and none without one. ``health`` says what makes readiness 503
    (default: ``HealthPolicy()``)."""
    health = health or HealthPolicy()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await run_in_threadpool(db.open_pool, database_url, wait)
        app.state.pool = pool
        try:
            yield
        finally:
            await run_in_threadpool(pool.close)

    # No redirect for a trailing slash: its Location would be built from the client's Host header.
    app = FastAPI(title="connections-service", lifespan=lifespan, redirect_slashes=False)
    app.state.wait = wait
    app.add_middleware(BodyLimit)
    app.include_router(
        ledger_router(
            database_url,
            directory,
            version_access=bearer_token(version_token),
            connect_timeout=db.connect_timeout(wait),
            unhealthy_drift=health.unhealthy_drift,
            ledger_ahead=health.ledger_ahead,
        )
    )
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # Everything the database can answer with but the two conflicts db.py turns into 409/422.
    app.add_exception_handler(psycopg.Error, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_unavailable)
    return app
