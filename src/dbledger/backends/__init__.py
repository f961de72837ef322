"""Database backends, one module each, found by dialect in one registry and imported only when
used, so a command against SQLite never pays for importing psycopg. A third database is one
module (a ``Backend`` subclass and its dialect) plus an entry here."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from dbledger.backends.base import Backend
from dbledger.config import DEFAULT_LOCK_TIMEOUT, Database
from dbledger.ledger import DEFAULT_LEDGER, LedgerNames

# dialect -> (module, class)
REGISTRY = {
    "postgresql": ("dbledger.backends.postgres", "PostgresBackend"),
    "sqlite": ("dbledger.backends.sqlite", "SqliteBackend"),
}


def open_backend(
    database: Database,
    names: LedgerNames = DEFAULT_LEDGER,
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    connect_timeout: float | None = None,
    on_busy: Callable[[str], None] | None = None,
) -> Backend:
    """Connect to ``database`` with the backend for its dialect; the ledger lives at ``names``."""
    module, name = REGISTRY[database.dialect]
    backend: type[Backend] = getattr(importlib.import_module(module), name)
    opened = backend(database, names, lock_timeout=lock_timeout, connect_timeout=connect_timeout)
    if on_busy is not None:
        opened.on_busy = on_busy
    return opened


__all__ = ["REGISTRY", "Backend", "open_backend"]
