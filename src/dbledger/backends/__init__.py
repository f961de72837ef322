"""Database backends, one module each, found by dialect in one registry and imported only when
used, so a command against SQLite never pays for importing psycopg. A third database is one
module (a ``Backend`` subclass and its dialect) plus an entry here."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from dbledger.backends.base import Backend
from dbledger.config import DEFAULT_LEASE_TTL, DEFAULT_LOCK_TIMEOUT, DEFAULT_WAITS, Database, WaitPolicy
from dbledger.ledger import DEFAULT_LEDGER, LedgerNames
from dbledger.pgversions import support_warning
from dbledger.placeholders import Placeholder

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
    waits: WaitPolicy = DEFAULT_WAITS,
    lock_mode: str = "auto",
    lease_ttl: float = DEFAULT_LEASE_TTL,
    on_note: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    placeholders: Mapping[str, Placeholder] | None = None,
) -> Backend:
    """Connect to ``database`` with the backend for its dialect; the ledger lives at ``names``.
    ``waits``: what migration statements may wait for locks; ``lock_mode``: how runs exclude
    one another (dbledger.config.LOCK_MODES). ``on_warning`` is told of a server dbledger does
    not support (a PostgreSQL version outside dbledger.pgversions' range). ``placeholders``:
    the project's ``[tool.dbledger.placeholders]``, for every section run through it."""
    module, name = REGISTRY[database.dialect]
    backend: type[Backend] = getattr(importlib.import_module(module), name)
    opened = backend(database, names, lock_timeout=lock_timeout, connect_timeout=connect_timeout)
    if on_busy is not None:
        opened.on_busy = on_busy
    opened.waits = waits
    opened.placeholders = placeholders or {}
    opened.lock_mode = lock_mode
    opened.lease_ttl = lease_ttl
    if on_note is not None:
        opened.on_note = on_note
    server = opened.server()
    warning = None if server is None else support_warning(server.version, server.where)
    if warning is not None and on_warning is not None:
        on_warning(warning)
    return opened


__all__ = ["REGISTRY", "Backend", "open_backend"]
