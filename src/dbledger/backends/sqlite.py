"""SQLite through the standard library.

Two locks. A run that writes holds an exclusive ``flock`` on ``<database>.dbledger-lock`` (SQLite
has no advisory locks; the file also says who holds it), so a second runner waits instead of
finding a ``transaction:false`` migration half-done. Each migration then runs in ``BEGIN
IMMEDIATE``, which takes the database's write lock at once (waiting up to the busy timeout) against
the application's own writers, and the runner re-reads the ledger inside that transaction. SQLite
has transactional DDL, so a migration and its ledger row commit or roll back together.

The connection is opened in autocommit mode (``isolation_level=None``): the sqlite3 module's implicit
transactions would otherwise commit before DDL on some versions and hide our ``BEGIN``.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import TYPE_CHECKING

from dbledger.backends.base import (
    COMMIT_STATEMENT,
    Backend,
    Statement,
    StatementError,
    poll_intervals,
    statement_at,
)
from dbledger.config import DEFAULT_LOCK_TIMEOUT, Database
from dbledger.errors import ConfigError, DatabaseUnavailable, DbledgerError, LockTimeout, foreign_ledger
from dbledger.ledger import DBLEDGER_VERSION, HISTORY_TABLE, LEDGER_TABLE, SCHEMA_TABLE, Action, State, actor
from dbledger.migrations import Section
from dbledger.plan import APPLIED_STATES, LedgerRow

if TYPE_CHECKING:
    from dbledger.schema import SchemaModel

_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

_CREATE_LEDGER = f"""
CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    migration_name VARCHAR(255) UNIQUE NOT NULL,
    applied_at TEXT NOT NULL DEFAULT ({_NOW}),
    checksum VARCHAR(64),
    execution_time_ms INTEGER,
    success BOOLEAN NOT NULL DEFAULT 1,
    error_message TEXT,
    version TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'applied'
        CHECK (state IN ('applied', 'baseline', 'failed', 'dirty')),
    applied_by TEXT,
    dbledger_version TEXT
);
CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL DEFAULT ({_NOW}),
    action TEXT NOT NULL,
    migration_name VARCHAR(255),
    checksum VARCHAR(64),
    execution_time_ms INTEGER,
    error_message TEXT,
    detail TEXT,
    actor TEXT,
    dbledger_version TEXT
);
"""

_RECORD = f"""
INSERT INTO {LEDGER_TABLE} (migration_name, version, state, checksum, execution_time_ms, success,
                            error_message, applied_by, dbledger_version)
VALUES (:name, :version, :state, :checksum, :ms, :success, :error, :actor, :tool)
ON CONFLICT (migration_name) DO UPDATE SET
    version = excluded.version, state = excluded.state, checksum = excluded.checksum,
    execution_time_ms = excluded.execution_time_ms, success = excluded.success,
    error_message = excluded.error_message, applied_by = excluded.applied_by,
    dbledger_version = excluded.dbledger_version, applied_at = {_NOW}
"""


class SqliteBackend(Backend):
    dialect = "sqlite"

    def __init__(self, database: Database, *, busy_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        assert database.sqlite_path is not None
        self.database = database
        self.path = database.sqlite_path
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        """Opened on first use, so reading the ledger of a file that does not exist creates nothing."""
        if self._conn is None:
            parent = os.path.dirname(self.path)
            if self.path != ":memory:" and parent and not os.path.isdir(parent):
                raise ConfigError(
                    f"cannot open {self.database.display}: directory {parent!r} does not exist; "
                    "create it, or fix the path in the URL"
                )
            try:
                self._conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            except sqlite3.Error as exc:
                raise DatabaseUnavailable(f"cannot open {self.database.display}: {exc}") from None
        return self._conn

    def _exists(self) -> bool:
        return self._conn is not None or self.path == ":memory:" or os.path.exists(self.path)

    # -- ledger ---------------------------------------------------------------------------
    def read_ledger(self) -> list[LedgerRow] | None:
        if not self._exists():
            return None
        try:
            rows = self.conn.execute(
                "SELECT migration_name, version, state, checksum, applied_at, execution_time_ms,"
                f" success, error_message FROM {LEDGER_TABLE} ORDER BY id"
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            if "no such column" in str(exc):
                raise foreign_ledger(LEDGER_TABLE) from None
            raise _translate(exc, self.database.display) from exc
        except sqlite3.DatabaseError as exc:
            raise DbledgerError(f"cannot read {self.database.display}: {exc}") from None
        return [
            LedgerRow(
                name=name,
                version=int(version),
                state=state,
                checksum=checksum,
                applied_at=applied_at,
                execution_time_ms=ms,
                success=bool(success),
                error_message=error,
            )
            for name, version, state, checksum, applied_at, ms, success, error in rows
        ]

    def ensure_ledger(self) -> None:
        for statement in _CREATE_LEDGER.split(";"):
            if statement.strip():
                self.conn.execute(statement)

    def user_tables(self) -> list[str]:
        if not self._exists():
            return []
        rows = self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
            " AND name NOT LIKE 'sqlite_%' AND name NOT IN (?, ?, ?) ORDER BY name",
            (LEDGER_TABLE, HISTORY_TABLE, SCHEMA_TABLE),
        ).fetchall()
        return [name for (name,) in rows]

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
        self.conn.execute(
            _RECORD,
            {
                "name": name,
                "version": str(version),
                "state": state,
                "checksum": checksum,
                "ms": execution_time_ms,
                "success": state in APPLIED_STATES,
                "error": error_message,
                "actor": actor(),
                "tool": DBLEDGER_VERSION,
            },
        )

    def accept_checksum(self, name: str, checksum: str) -> None:
        self.conn.execute(
            f"UPDATE {LEDGER_TABLE} SET checksum = ? WHERE migration_name = ?", (checksum, name)
        )

    def forget(self, name: str) -> None:
        self.conn.execute(f"DELETE FROM {LEDGER_TABLE} WHERE migration_name = ?", (name,))

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
        self.conn.execute(
            f"INSERT INTO {HISTORY_TABLE} (action, migration_name, checksum, execution_time_ms,"
            " error_message, detail, actor, dbledger_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (action, name, checksum, execution_time_ms, error_message, detail, actor(), DBLEDGER_VERSION),
        )

    def history(self) -> list[dict[str, object]]:
        if not self._exists():
            return []
        try:
            cursor = self.conn.execute(f"SELECT * FROM {HISTORY_TABLE} ORDER BY id")
        except sqlite3.OperationalError:
            return []
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def schema_signature(self) -> frozenset[tuple[str, str, str]]:
        if not self._exists():
            return frozenset()
        rows = self.conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            " AND tbl_name NOT IN (?, ?, ?)",
            (LEDGER_TABLE, HISTORY_TABLE, SCHEMA_TABLE),
        ).fetchall()
        # sqlite_master keeps each CREATE statement as written: compare it modulo whitespace.
        return frozenset((kind, name, " ".join((text or "").split())) for kind, name, text in rows)

    def save_schema(self, action: str, name: str | None, fingerprint: str, model: str) -> None:
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            f" at TEXT NOT NULL DEFAULT ({_NOW}), action TEXT NOT NULL, migration_name VARCHAR(255),"
            " fingerprint VARCHAR(64) NOT NULL, model TEXT NOT NULL)"
        )
        self.conn.execute(
            f"INSERT INTO {SCHEMA_TABLE} (action, migration_name, fingerprint, model) VALUES (?, ?, ?, ?)",
            (action, name, fingerprint, model),
        )

    def latest_schema(self) -> tuple[str, str] | None:
        if not self._exists():
            return None
        try:
            row = self.conn.execute(
                f"SELECT fingerprint, model FROM {SCHEMA_TABLE} ORDER BY id DESC LIMIT 1"
            ).fetchone()
        except sqlite3.OperationalError:
            return None
        return None if row is None else (str(row[0]), str(row[1]))

    def introspect(self) -> SchemaModel:
        from dbledger.schema import introspect_sqlite

        if not self._exists():  # reading must not create the file
            with closing(sqlite3.connect(":memory:")) as empty:
                return introspect_sqlite(empty)
        return introspect_sqlite(self.conn)

    @contextmanager
    def scratch(self) -> Iterator[Backend]:
        memory = Database(
            url="sqlite:///:memory:",
            dialect="sqlite",
            display="scratch in-memory database",
            sqlite_path=":memory:",
        )
        with SqliteBackend(memory) as other:
            yield other

    # -- locking and transactions ---------------------------------------------------------
    @contextmanager
    def migration_lock(self, timeout: float, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        if self.path == ":memory:":  # private to this connection: nobody to wait for
            yield
            return
        lock_path = f"{self.path}.dbledger-lock"
        try:
            handle = open(lock_path, "a+")  # noqa: SIM115 -- held open for the whole run
        except OSError as exc:
            raise DatabaseUnavailable(f"cannot open the lock file {lock_path!r}: {exc.strerror}") from None
        with handle:
            deadline = time.monotonic() + timeout
            intervals = poll_intervals()
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    if on_wait is not None:
                        on_wait(holder)
                        on_wait = None
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise LockTimeout(
                            f"gave up after waiting {timeout:g} s for the migration lock on "
                            f"{self.database.display}, held by {holder}: wait for it to finish, "
                            "or raise --lock-timeout"
                        ) from None
                    time.sleep(min(next(intervals), remaining))
            handle.seek(0)
            handle.truncate()
            handle.write(f"{actor()} (dbledger)\n")
            handle.flush()
            try:
                yield
            finally:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise _translate(exc, self.database.display, self.busy_timeout) from exc
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:  # deferred foreign keys are checked here
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise StatementError(
                f"{exc}\nraised at COMMIT, the end of the migration's transaction",
                sqlstate=getattr(exc, "sqlite_errorname", None),
                statement=COMMIT_STATEMENT,
            ) from exc

    # -- running SQL ----------------------------------------------------------------------
    def split(self, section: Section) -> list[Statement]:
        return split_statements(section.sql, section.line)

    def execute(self, statement: Statement) -> None:
        try:
            self.conn.execute(statement.sql)
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorname", None)
            text = f"{code}: {exc}" if code else str(exc)
            raise StatementError(
                f"{text}\nstatement at line {statement.line}: {' '.join(statement.sql.split())[:300]}",
                sqlstate=code,
                statement=statement,
            ) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def split_statements(text: str, first_line: int) -> list[Statement]:
    """Statements of ``text`` with their file lines, cut where SQLite's own tokenizer says a
    statement is complete (``sqlite3.complete_statement`` knows strings, comments and trigger
    bodies)."""
    bounds: list[tuple[int, int]] = []
    start = 0
    position = text.find(";")
    while position != -1:
        if sqlite3.complete_statement(text[start : position + 1]):
            bounds.append((start, position + 1))
            start = position + 1
        position = text.find(";", position + 1)
    bounds.append((start, len(text)))
    found = (statement_at(text, begin, end, first_line) for begin, end in bounds)
    return [statement for statement in found if statement is not None]


def _translate(exc: sqlite3.OperationalError, display: str, timeout: float | None = None) -> DbledgerError:
    if "locked" in str(exc) or "busy" in str(exc):
        waited = f" after waiting {timeout:g} s" if timeout is not None else ""
        return LockTimeout(
            f"{display} is locked by another connection{waited}: wait for it to finish, "
            "or raise --lock-timeout"
        )
    return DbledgerError(f"{display}: {exc}")
