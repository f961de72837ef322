"""Database backends. Each lives in its own module and is imported only when used, so a command
against SQLite never pays for importing psycopg."""

from __future__ import annotations

from dbledger.backends.base import Backend
from dbledger.config import DEFAULT_LOCK_TIMEOUT, Database


def open_backend(database: Database, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Backend:
    """Connect to ``database`` with the backend for its dialect."""
    if database.dialect == "postgresql":
        from dbledger.backends.postgres import PostgresBackend

        return PostgresBackend(database)
    from dbledger.backends.sqlite import SqliteBackend

    return SqliteBackend(database, busy_timeout=lock_timeout)


__all__ = ["Backend", "open_backend"]
