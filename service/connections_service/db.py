"""The service's SQL: constant statements with bound parameters, a connection pool, and the two
database errors the API turns into client errors.

Every function takes a connection from the pool; the write functions run in a transaction of
their own (a savepoint when one is already open), so a refused write leaves the connection usable,
for instance for a retry with another generated id.
"""

from __future__ import annotations

import math
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from connections_service.models import AuditLog, Connection, Organization

__all__ = [
    "DEFAULT_WAIT",
    "DuplicateId",
    "UnknownOrganization",
    "connect_timeout",
    "create_connection",
    "create_organization",
    "delete_connection",
    "get_connection",
    "list_audit_logs",
    "list_connections",
    "open_pool",
]

# Enough for the thread pool FastAPI runs sync endpoints in, small enough that many replicas fit
# under PostgreSQL's default max_connections (100).
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
POOL_OPEN_TIMEOUT = 30.0
# Seconds a request waits for a connection before its 503 (DATABASE_WAIT).
DEFAULT_WAIT = 3.0

_INSERT_ORGANIZATION = """
INSERT INTO organizations (id, name) VALUES (%s, %s)
RETURNING id, name, created_at
"""

_INSERT_CONNECTION = """
INSERT INTO platform_connections
    (id, organization_id, platform_type, platform_user_id, display_name, status)
VALUES (%s, %s, %s, %s, %s, %s)
RETURNING id, organization_id, platform_type, platform_user_id, display_name, status,
          created_at, updated_at
"""

_SELECT_CONNECTION = """
SELECT id, organization_id, platform_type, platform_user_id, display_name, status,
       created_at, updated_at
FROM platform_connections WHERE id = %s
"""

_SELECT_CONNECTIONS = """
SELECT id, organization_id, platform_type, platform_user_id, display_name, status,
       created_at, updated_at
FROM platform_connections WHERE organization_id = %s
ORDER BY created_at, id
"""

# The audit trigger (migrations 001 and 004) writes the audit row in the same transaction.
_DELETE_CONNECTION = "DELETE FROM platform_connections WHERE id = %s"

_SELECT_AUDIT_LOGS = """
SELECT id, organization_id, platform_connection_id, event_type, resource_type, resource_id,
       event_data, created_at
FROM audit_logs WHERE resource_id = %s
ORDER BY created_at, id
"""

# The name PostgreSQL gives the foreign key (migration 001, recreated by 003).
_ORGANIZATION_FKEY = "platform_connections_organization_id_fkey"


class DuplicateId(Exception):
    """A row with this id exists already."""

    def __init__(self, kind: str, id: str) -> None:
        self.kind = kind
        self.id = id
        super().__init__(f"{kind} {id!r} already exists")


class UnknownOrganization(Exception):
    """The organization a new connection names does not exist."""

    def __init__(self, organization_id: str) -> None:
        self.organization_id = organization_id
        super().__init__(f"organization {organization_id!r} does not exist")


def connect_timeout(wait: float) -> int:
    """The connect timeout for a request wait of ``wait`` seconds: libpq counts whole seconds,
    at least 2."""
    return max(2, math.ceil(wait))


def open_pool(database_url: str, wait: float = DEFAULT_WAIT) -> ConnectionPool:
    """A pool with its first connection made (raises PoolTimeout when the database stays out of
    reach). A request waits at most ``wait`` seconds for a connection. Close it with
    ``pool.close()``."""
    pool = ConnectionPool(
        database_url,
        min_size=POOL_MIN_SIZE,
        max_size=POOL_MAX_SIZE,
        # An address that drops packets would otherwise hold each attempt for the system's TCP
        # timeout (minutes).
        kwargs={"application_name": "connections-service", "connect_timeout": connect_timeout(wait)},
        name="connections-service",
        timeout=wait,
        # The pool retries a lost connection with a growing backoff (1, 2, 4... s) for as long
        # as this; past it, the next request starts a fresh attempt at once. Retrying only as
        # long as a request waits keeps recovery within seconds of the database's return.
        reconnect_timeout=wait,
        check=lambda conn: _check(pool, conn),
        open=False,
    )
    pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT)
    return pool


def _check(pool: ConnectionPool, conn: psycopg.Connection[Any]) -> None:
    """Check each connection as it leaves the pool (one empty round trip), so a dead one is
    replaced instead of failing the request. One dead connection usually means all of them died
    (a database restart, a failover): check the others at once, rather than one per request with
    the pool's backoff in between, which outlasts the request's wait."""
    try:
        ConnectionPool.check_connection(conn)
    except psycopg.Error:
        pool.check()
        raise


def create_organization(conn: psycopg.Connection[Any], id: str, name: str) -> Organization:
    """Insert an organization; DuplicateId when the id is taken."""
    try:
        with conn.transaction(), conn.cursor(row_factory=class_row(Organization)) as cur:
            row = cur.execute(_INSERT_ORGANIZATION, (id, name)).fetchone()
    except psycopg.errors.UniqueViolation:
        raise DuplicateId("organization", id) from None
    assert row is not None  # INSERT ... RETURNING returns the row it inserted
    return row


def create_connection(
    conn: psycopg.Connection[Any],
    *,
    id: str,
    organization_id: str,
    platform_type: str,
    platform_user_id: str,
    display_name: str,
    status: str,
) -> Connection:
    """Insert a connection; DuplicateId when the id is taken, UnknownOrganization when the
    organization does not exist."""
    values = (id, organization_id, platform_type, platform_user_id, display_name, status)
    try:
        with conn.transaction(), conn.cursor(row_factory=class_row(Connection)) as cur:
            row = cur.execute(_INSERT_CONNECTION, values).fetchone()
    except psycopg.errors.UniqueViolation:
        raise DuplicateId("connection", id) from None
    except psycopg.errors.ForeignKeyViolation as exc:
        if exc.diag.constraint_name != _ORGANIZATION_FKEY:
            raise
        raise UnknownOrganization(organization_id) from None
    assert row is not None
    return row


def get_connection(conn: psycopg.Connection[Any], id: str) -> Connection | None:
    with conn.cursor(row_factory=class_row(Connection)) as cur:
        return cur.execute(_SELECT_CONNECTION, (id,)).fetchone()


def list_connections(conn: psycopg.Connection[Any], organization_id: str) -> list[Connection]:
    """The organization's connections, oldest first (empty for an unknown organization)."""
    with conn.cursor(row_factory=class_row(Connection)) as cur:
        return cur.execute(_SELECT_CONNECTIONS, (organization_id,)).fetchall()


def delete_connection(conn: psycopg.Connection[Any], id: str) -> bool:
    """Delete a connection and, through the trigger, audit it. False when there was none."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_DELETE_CONNECTION, (id,))
        return cur.rowcount > 0


def list_audit_logs(conn: psycopg.Connection[Any], resource_id: str) -> list[AuditLog]:
    """The audit trail of one resource, oldest first."""
    with conn.cursor(row_factory=class_row(AuditLog)) as cur:
        return cur.execute(_SELECT_AUDIT_LOGS, (resource_id,)).fetchall()
