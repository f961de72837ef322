"""The contract every database backend fulfils. The core never imports a driver; it talks to
one of these. Each method's docstring says when the core calls it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from dbledger.dryrun import Annotator
    from dbledger.schema import SchemaModel

from dbledger.ledger import Action, State
from dbledger.migrations import Section
from dbledger.plan import LedgerRow


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a section, with the file line it starts on."""

    sql: str
    line: int


# Stands for the end of a migration's transaction in errors raised at COMMIT (line 0: not a line
# of the file).
COMMIT_STATEMENT = Statement(sql="COMMIT", line=0)


_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)


def statement_at(text: str, start: int, end: int, first_line: int) -> Statement | None:
    """The statement in ``text[start:end]`` without leading whitespace and comments, with the
    file line of its first token (``text`` starts on ``first_line``); None if it is all comments."""
    body = text[start:end]
    skip = _LEADING_NOISE.match(body)
    offset = skip.end() if skip else 0
    sql = body[offset:].strip().rstrip(";").rstrip()  # one form for every backend: no terminator
    if not sql:
        return None
    return Statement(sql=sql, line=first_line + text.count("\n", 0, start + offset))


class StatementError(Exception):
    """Raised by ``execute`` when the database rejects a statement; the runner records it."""

    def __init__(self, message: str, *, sqlstate: str | None, statement: Statement) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.statement = statement


class Backend(ABC):
    """One open connection to one database, and everything dbledger asks of it."""

    dialect: ClassVar[str]

    @abstractmethod
    def read_ledger(self) -> list[LedgerRow] | None:
        """Called by every command, first and possibly before any lock, and again inside the
        migration's transaction: the ledger's rows, or None when the ledger table does not exist
        yet. Must not create anything, and must leave an open transaction usable."""

    @abstractmethod
    def ensure_ledger(self) -> None:
        """Called under the migration lock, inside a transaction, before the first write:
        create the ledger tables when they are missing. Idempotent."""

    @abstractmethod
    def user_tables(self) -> list[str]:
        """Called when the ledger table is missing, before the first migration: the tables that
        already exist (a database built without dbledger), dbledger's own left out."""

    @abstractmethod
    def schema_signature(self) -> frozenset[tuple[str, str, str]]:
        """Called when a database without a ledger must be matched against the migrations:
        ``(kind, name, definition)`` for every user object (columns with types, constraints,
        indexes, functions, triggers, views), dbledger's own tables left out. Two databases with
        equal signatures have the same schema for the purpose of ``baseline``."""

    @abstractmethod
    def scratch(self) -> AbstractContextManager[Backend]:
        """An empty database of the same kind (a temporary database on the same server, or an
        in-memory SQLite database) for replaying migrations; dropped on exit. Raises
        DbledgerError when it cannot be created (e.g. no CREATEDB privilege)."""

    @abstractmethod
    def migration_lock(
        self, timeout: float, on_wait: Callable[[str], None] | None = None
    ) -> AbstractContextManager[None]:
        """Held around a whole run that writes (``up``, ``repair``, ``baseline``). Waits at most
        ``timeout`` seconds, then raises LockTimeout naming the holder where it can. When the
        lock is busy at the first try, calls ``on_wait`` once with a description of the holder."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Wraps one migration together with its ledger row; also serialises writers on
        backends without a run-level lock. Commits on exit, rolls back on an exception. A
        database error raised by the commit itself (a deferred constraint) is raised as a
        StatementError for ``COMMIT_STATEMENT``."""

    @abstractmethod
    def split(self, section: Section) -> list[Statement]:
        """Called before a section runs: its statements in order, each with its file line."""

    @abstractmethod
    def execute(self, statement: Statement) -> None:
        """Run one statement in the current transaction, or on its own outside any (for
        ``transaction:false``). Raises StatementError with the database's words."""

    @abstractmethod
    def record(
        self,
        *,
        name: str,
        version: int,
        state: State,
        checksum: str | None,
        execution_time_ms: int | None,
        error_message: str | None,
    ) -> None:
        """Insert or replace the ledger row of ``name``. Called inside the migration's own
        transaction on success, and in a fresh one after a failure rolled back."""

    @abstractmethod
    def accept_checksum(self, name: str, checksum: str) -> None:
        """Called by ``repair``: store ``checksum`` for an applied migration whose file changed,
        keeping when and how it was applied."""

    @abstractmethod
    def forget(self, name: str) -> None:
        """Delete the ledger row of ``name`` (``repair`` of a failed or dirty row, ``down``)."""

    @abstractmethod
    def log(
        self,
        action: Action,
        name: str | None,
        *,
        checksum: str | None = None,
        execution_time_ms: int | None = None,
        error_message: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Append one row to the history table, in the same transaction as the change it
        describes."""

    @abstractmethod
    def history(self) -> list[dict[str, object]]:
        """Every history row, oldest first (for ``status --history`` and tests)."""

    @abstractmethod
    def save_schema(self, action: str, name: str | None, fingerprint: str, model: str) -> None:
        """Called inside a transaction after a successful ``up``, ``down`` or ``baseline``:
        remember the schema the run left (creating the table on first use)."""

    @abstractmethod
    def latest_schema(self) -> tuple[str, str] | None:
        """The fingerprint and stored model of the newest recorded schema, or None."""

    @abstractmethod
    def introspect(self) -> SchemaModel:
        """Called by ``drift`` and ``dump``: the live schema as a normalised model, dbledger's own
        tables left out. Reads only."""

    def annotator(self, *, calibrate: bool = False) -> Annotator | None:
        """Called by dry runs, and before each migration runs to record its estimate: what
        analyses this database's statements (locks, rewrites, sizes, estimates), or None when the
        backend has no analysis. ``calibrate``: scale estimates by how earlier migrations on this
        database compared with theirs."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Called once when the command is done, also after an error."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def poll_intervals(start: float = 0.05, cap: float = 1.0) -> Iterator[float]:
    """Back-off for lock polling: quick at first (the usual wait is one short migration), then
    at most once a second so hundreds of waiting replicas do not hammer the server."""
    delay = start
    while True:
        yield delay
        delay = min(cap, delay * 2)
