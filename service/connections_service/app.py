"""The HTTP API. ``create_app`` builds the application for one database and migrations folder:

    POST   /api/organizations              201 (409 duplicate id)
    POST   /api/connections                201 (409 duplicate id, 422 unknown organization_id)
    GET    /api/connections?organization_id=   (required: one organization's connections)
    GET    /api/connections/{id}           404 when unknown
    DELETE /api/connections/{id}           204, 404 when unknown
    GET    /api/audit-logs?resource_id=
    GET    /api/db/version, GET /health    dbledger's ledger router

Endpoints are plain functions (FastAPI runs them in its thread pool) over a psycopg connection
pool that the lifespan opens and closes. The application does not migrate: ``__main__`` has done
that before the application exists.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool, PoolTimeout

from connections_service import db, ids
from connections_service.models import (
    ID_PATTERN,
    AuditLog,
    Connection,
    ConnectionCreate,
    Organization,
    OrganizationCreate,
)
from dbledger.integrations.fastapi import ledger_router
from dbledger.redaction import redact

__all__ = ["create_app"]

logger = logging.getLogger("connections_service")

# A generated connection id can collide with one another replica generated in the same
# millisecond; each retry takes a later millisecond.
GENERATED_ID_ATTEMPTS = 5

router = APIRouter()


def _pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


Pool = Annotated[ConnectionPool, Depends(_pool)]
ConnectionId = Annotated[str, Path(pattern=ID_PATTERN)]


@router.post("/api/organizations", status_code=201, tags=["organizations"])
def create_organization(body: OrganizationCreate, pool: Pool) -> Organization:
    with pool.connection() as conn:
        try:
            return db.create_organization(conn, body.id or ids.organization_id(), body.name)
        except db.DuplicateId as exc:
            raise HTTPException(409, str(exc)) from None


@router.post("/api/connections", status_code=201, tags=["connections"])
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


@router.get("/api/connections/{connection_id}", tags=["connections"])
def get_connection(connection_id: ConnectionId, pool: Pool) -> Connection:
    with pool.connection() as conn:
        found = db.get_connection(conn, connection_id)
    if found is None:
        raise HTTPException(404, f"connection {connection_id!r} not found")
    return found


@router.delete("/api/connections/{connection_id}", status_code=204, tags=["connections"])
def delete_connection(connection_id: ConnectionId, pool: Pool) -> Response:
    with pool.connection() as conn:
        deleted = db.delete_connection(conn, connection_id)
    if not deleted:
        raise HTTPException(404, f"connection {connection_id!r} not found")
    return Response(status_code=204)


@router.get("/api/audit-logs", tags=["audit"])
def list_audit_logs(
    resource_id: Annotated[str, Query(min_length=1, max_length=255)], pool: Pool
) -> list[AuditLog]:
    with pool.connection() as conn:
        return db.list_audit_logs(conn, resource_id)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A lost database is the server's trouble but not a bug: 503, so clients and load
    balancers retry elsewhere, instead of a bare 500."""
    message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    logger.warning("%s %s: database unavailable: %s", request.method, request.url.path, message)
    return JSONResponse({"detail": f"database unavailable: {message}"}, status_code=503)


def create_app(database_url: str, directory: str | os.PathLike[str]) -> FastAPI:
    """The application for the database at ``database_url``, whose migrations are in
    ``directory`` (the version and health endpoints compare the two)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await run_in_threadpool(db.open_pool, database_url)
        app.state.pool = pool
        try:
            yield
        finally:
            await run_in_threadpool(pool.close)

    app = FastAPI(title="connections-service", lifespan=lifespan)
    app.include_router(ledger_router(database_url, directory))
    app.include_router(router)
    app.add_exception_handler(psycopg.OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    return app
