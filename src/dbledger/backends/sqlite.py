"""SQLite through the standard library.

Two locks. A run that writes holds an exclusive ``flock`` on ``<database>.dbledger-lock`` (SQLite
has no advisory locks; the file also says who holds it), so a second runner waits instead of
finding a ``transaction:false`` migration half-done. Each migration then runs in ``BEGIN
IMMEDIATE``, which takes the database's write lock at once (waiting up to the busy timeout) against
the application's own writers. SQLite has transactional DDL, so a migration and its ledger rows
commit or roll back together.

The connection is opened in autocommit mode (``isolation_level=None``): the sqlite3 module's
implicit transactions would otherwise commit before DDL on some versions and hide our ``BEGIN``.
It is opened on first use, so reading the ledger of a file that does not exist creates nothing,
and opened afresh before each migration but the first, so no migration inherits another's
``PRAGMA`` settings, temporary tables or attached databases.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from io import TextIOWrapper
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from dbledger.backends.base import HISTORY_COLUMNS, VERSION_AND_LEDGER, Backend, LedgerSQL, Params, Query
from dbledger.config import DEFAULT_LOCK_TIMEOUT, Database
from dbledger.contracts import Statement, WaitLimits
from dbledger.errors import ConfigError, DatabaseError, DatabaseUnavailable, DbledgerError, LockTimeout
from dbledger.ledger import DBLEDGER_VERSION, DEFAULT_LEDGER, LEDGER_VERSION, LedgerNames, actor
from dbledger.redaction import redact

if TYPE_CHECKING:
    from dbledger.backup import Backup
    from dbledger.schema import SchemaModel

_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
# sqlite3 error codes that mean "another connection holds the lock" (SQLITE_BUSY, SQLITE_LOCKED).
_BUSY_CODES = frozenset({5, 6})
_NOT_A_DATABASE = 26  # SQLITE_NOTADB
# Seconds a query waits for another connection's lock before dbledger says what it waits for,
# and how long each try waits in SQLite (between tries, Python handles signals).
_PATIENCE = 1.0
_POLL = 0.1
_T = TypeVar("_T")


def _code(exc: sqlite3.Error) -> int | None:
    return getattr(exc, "sqlite_errorcode", None)


def _quote(name: str) -> str:
    """The one quoting function for SQLite identifiers (ledger names are validated already)."""
    return '"' + name.replace('"', '""') + '"'


def _statements(names: LedgerNames) -> LedgerSQL:
    ledger, history = _quote(names.table), _quote(names.history)
    snapshots, version = _quote(names.snapshots), _quote(names.version)
    order_index = _quote(f"{names.table}_applied_order")
    snapshots_table = (
        f"CREATE TABLE IF NOT EXISTS {snapshots} (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        f" at TEXT NOT NULL DEFAULT ({_NOW}), action TEXT NOT NULL, migration_name VARCHAR(255),"
        " fingerprint VARCHAR(64) NOT NULL, model TEXT NOT NULL)"
    )
    version_table = (
        f"CREATE TABLE {version} (version INTEGER NOT NULL, upgraded_at TEXT NOT NULL DEFAULT ({_NOW}),"
        " dbledger_version TEXT NOT NULL)"
    )
    set_version = (
        f"INSERT INTO {version} (version, dbledger_version) VALUES ({LEDGER_VERSION}, '{DBLEDGER_VERSION}')"
    )
    create_order_index = f"CREATE UNIQUE INDEX {order_index} ON {ledger} (applied_order)"
    return LedgerSQL(
        read="SELECT v.held, v.version, l.migration_name, l.version, l.state, l.checksum, l.applied_at,"
        " l.execution_time_ms, l.success, l.error_message, l.applied_order, l.runner, l.checksum_algorithm"
        + VERSION_AND_LEDGER.format(version=version, ledger=ledger),
        read_v2="SELECT v.held, v.version, l.migration_name, l.version, l.state, l.checksum, l.applied_at,"
        " l.execution_time_ms, l.success, l.error_message, l.applied_order, l.runner"
        + VERSION_AND_LEDGER.format(version=version, ledger=ledger),
        upgrade_to_v3=(
            f"ALTER TABLE {ledger} ADD COLUMN checksum_algorithm VARCHAR(16) NOT NULL DEFAULT 'sha256'",
            f"ALTER TABLE {ledger} ADD COLUMN source TEXT",
        ),
        set_format=f"UPDATE {version} SET version = {LEDGER_VERSION}, upgraded_at = {_NOW},"
        f" dbledger_version = '{DBLEDGER_VERSION}'",
        read_source=f"SELECT source FROM {ledger} WHERE migration_name = :name",
        read_v1="SELECT migration_name, version, state, checksum, applied_at, execution_time_ms, success,"
        f" error_message FROM {ledger} ORDER BY id",
        read_version=f"SELECT max(version) FROM {version}",
        create=(
            f"""CREATE TABLE {ledger} (
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
    dbledger_version TEXT,
    applied_order INTEGER,
    runner TEXT,
    checksum_algorithm VARCHAR(16) NOT NULL DEFAULT 'sha256',
    source TEXT
)""",
            create_order_index,
            f"""CREATE TABLE {history} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL DEFAULT ({_NOW}),
    action TEXT NOT NULL,
    migration_name VARCHAR(255),
    checksum VARCHAR(64),
    execution_time_ms INTEGER,
    error_message TEXT,
    detail TEXT,
    actor TEXT,
    dbledger_version TEXT,
    version TEXT,
    state TEXT,
    applied_order INTEGER,
    estimate_ms INTEGER,
    prev_hash VARCHAR(64),
    hash VARCHAR(64)
)""",
            snapshots_table,
            version_table,
            set_version,
        ),
        upgrade_from_v1=(
            f"ALTER TABLE {ledger} ADD COLUMN applied_order INTEGER",
            f"ALTER TABLE {ledger} ADD COLUMN runner TEXT",
            create_order_index,
            *(
                f"ALTER TABLE {history} ADD COLUMN {column}"
                for column in (
                    "version TEXT",
                    "state TEXT",
                    "applied_order INTEGER",
                    "estimate_ms INTEGER",
                    "prev_hash VARCHAR(64)",
                    "hash VARCHAR(64)",
                )
            ),
            snapshots_table,
            version_table,
            set_version,
        ),
        upsert_row=f"INSERT INTO {ledger} (migration_name, version, state, checksum, execution_time_ms,"
        " success, error_message, applied_by, dbledger_version, applied_order, runner, checksum_algorithm,"
        " source) VALUES (:name, :version, :state, :checksum, :ms, :success, :error, :actor, :tool,"
        " :applied_order, :runner, :algorithm, :source)"
        " ON CONFLICT (migration_name) DO UPDATE SET version = excluded.version, state = excluded.state,"
        " checksum = excluded.checksum, execution_time_ms = excluded.execution_time_ms,"
        " success = excluded.success, error_message = excluded.error_message,"
        " applied_by = excluded.applied_by, dbledger_version = excluded.dbledger_version,"
        " applied_order = excluded.applied_order, runner = excluded.runner,"
        " checksum_algorithm = excluded.checksum_algorithm, source = excluded.source,"
        f" applied_at = {_NOW}",
        delete_row=f"DELETE FROM {ledger} WHERE migration_name = :name",
        update_checksum=f"UPDATE {ledger} SET checksum = :checksum, checksum_algorithm = :algorithm,"
        " source = :source WHERE migration_name = :name",
        rename_row=f"UPDATE {ledger} SET migration_name = :new_name WHERE migration_name = :name",
        update_row=f"UPDATE {ledger} SET state = :state, success = :success, error_message = :error,"
        " applied_order = :applied_order, runner = :runner WHERE migration_name = :name",
        set_applied_order=f"UPDATE {ledger} SET applied_order = :applied_order WHERE migration_name = :name",
        insert_history=f"INSERT INTO {history} (at, action, migration_name, version, state, checksum,"
        " execution_time_ms, estimate_ms, applied_order, error_message, detail, actor,"
        " dbledger_version, prev_hash, hash) VALUES (:at, :action, :migration_name, :version, :state,"
        " :checksum, :execution_time_ms, :estimate_ms, :applied_order, :error_message, :detail,"
        " :actor, :dbledger_version, :prev_hash, :hash)",
        history_head=f"SELECT hash FROM {history} ORDER BY id DESC LIMIT 1",
        history_rows=f"SELECT {HISTORY_COLUMNS} FROM {history} ORDER BY id",
        legacy_history=f"SELECT id, action, migration_name, detail FROM {history} ORDER BY id",
        set_history_estimate=f"UPDATE {history} SET estimate_ms = :estimate_ms, detail = NULL WHERE id = :id",
        set_history_hash=f"UPDATE {history} SET prev_hash = :prev_hash, hash = :hash WHERE id = :id",
        save_schema=f"INSERT INTO {snapshots} (action, migration_name, fingerprint, model)"
        " VALUES (:action, :name, :fingerprint, :model)",
        latest_schema=f"SELECT fingerprint, model FROM {snapshots} ORDER BY id DESC LIMIT 1",
    )


class SqliteBackend(Backend):
    dialect_name: ClassVar[str] = "sqlite"
    has_schemas: ClassVar[bool] = False

    def __init__(
        self,
        database: Database,
        names: LedgerNames = DEFAULT_LEDGER,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        connect_timeout: float | None = None,  # a file opens at once
    ) -> None:
        super().__init__(database, names, lock_timeout=lock_timeout)
        if names.schema not in (None, "main"):
            raise ConfigError(
                f"invalid ledger table {names.qualified()!r} for SQLite: a SQLite database has no "
                "schemas (only 'main'); give the table name alone"
            )
        assert database.sqlite_path is not None
        self.path = database.sqlite_path
        self._conn: sqlite3.Connection | None = None
        self._statements = _statements(names)
        self._lock_file: TextIOWrapper | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._check_folder()
            if os.path.isdir(self.path):
                raise ConfigError(
                    f"cannot open {self.database.display}: it is a directory; give the database file's path"
                )
            try:
                # Each try waits a moment only: signals (Ctrl-C) are handled between tries, and
                # _patiently says what it waits for.
                self._conn = sqlite3.connect(
                    self.path, timeout=min(_POLL, self.lock_timeout), isolation_level=None
                )
            except sqlite3.Error as exc:
                raise DatabaseUnavailable(f"cannot open {self.database.display}: {exc}") from None
        return self._conn

    def _check_folder(self) -> None:
        parent = os.path.dirname(self.path)
        if self.path != ":memory:" and parent and not os.path.isdir(parent):
            raise ConfigError(
                f"cannot open {self.database.display}: directory {parent!r} does not exist; "
                "create it, or fix the path in the URL"
            )

    def _patiently(self, call: Callable[[], _T]) -> _T:
        """``call()``, tried again while another connection holds the database's lock, for up to
        the lock timeout; after the first second ``on_busy`` is told who holds it. Not inside a
        transaction: a statement that found the database busy there must not be retried (SQLite's
        rule), so the connection then waits in SQLite itself (see ``_begin``)."""
        if self._conn is not None and self._conn.in_transaction:
            return call()
        started, told = time.monotonic(), False
        while True:
            try:
                return call()
            except sqlite3.OperationalError as exc:
                if _code(exc) not in _BUSY_CODES or self.conn.in_transaction:
                    raise
                waited = time.monotonic() - started
                if waited >= self.lock_timeout:
                    raise
            if not told and waited >= _PATIENCE:
                self.on_busy(f"the lock of {self.database.display}, held by {self.describe_holder()}")
                told = True

    def _wait_in_sqlite(self, seconds: float) -> None:
        self.conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def absence(self) -> str | None:
        parent = os.path.dirname(self.path)
        if not self._database_exists() and parent and not os.path.isdir(parent):
            return (
                f"{self.database.display} does not exist, nor does its folder {parent!r}: create the "
                "folder, then 'dbledger up' creates the database"
            )
        return super().absence()

    def _database_exists(self) -> bool:
        return self._conn is not None or self.path == ":memory:" or os.path.exists(self.path)

    @property
    def sql(self) -> LedgerSQL:
        return self._statements

    @property
    def ledger_schema(self) -> str:
        return "main"

    @property
    def default_schema(self) -> str:
        return "main"

    # -- queries ---------------------------------------------------------------------------
    def _fetch(self, query: Query, params: Params = None) -> list[tuple[Any, ...]]:
        try:
            return self._patiently(lambda: self.conn.execute(query, params or ()).fetchall())
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _run(self, query: Query, params: Params = None) -> None:
        try:
            self._patiently(lambda: self.conn.execute(query, params or ()))
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error, statement: Statement | None = None) -> DbledgerError:
        """A migration statement that failed is a DatabaseError (so its migration fails and is
        recorded), even when the database was busy; dbledger's own queries and transactions
        that found it busy are a LockTimeout (nothing ran)."""
        if _code(exc) == _NOT_A_DATABASE:
            return DatabaseUnavailable(
                f"{self.database.display} is not a SQLite database (SQLITE_NOTADB): point the URL at "
                "the database file"
            )
        if statement is None and _code(exc) in _BUSY_CODES:
            return LockTimeout(
                f"{self.database.display} is locked by another connection after waiting "
                f"{self.lock_timeout:g} s: wait for it to finish, or raise --lock-timeout"
            )
        code = getattr(exc, "sqlite_errorname", None)
        text = f"{code}: {exc}" if code else str(exc)
        if statement is not None:
            # Redacted before it is cut: a cut inside PASSWORD '...' would leave no closing quote.
            text += f"\nstatement at line {statement.line}: {' '.join(redact(statement.sql).split())[:300]}"
        return DatabaseError(text, sqlstate=code, statement=statement)

    def _foreign_columns(self, parts: list[str]) -> list[str]:
        if not self._database_exists():
            return []
        schema = parts[0] if len(parts) == 2 else "main"
        return [
            name for (name,) in self._fetch("SELECT name FROM pragma_table_info(?, ?)", (parts[-1], schema))
        ]

    def _select_all(self, parts: list[str], columns: list[str]) -> Query:
        return f"SELECT {', '.join(map(_quote, columns))} FROM {'.'.join(map(_quote, parts))}"

    def _ledger_layout(self) -> dict[str, frozenset[str]]:
        if not self._database_exists():
            return {}
        layout = {}
        for table in self.names.tables:
            columns = self._fetch("SELECT name FROM pragma_table_info(?)", (table,))
            if columns:
                layout[table] = frozenset(name for (name,) in columns)
        return layout

    def _timestamp_text(self, value: Any) -> str:
        return str(value)

    def _applied_at_text(self, value: Any) -> str | None:
        return None if value is None else str(value)

    # -- transactions and statements -------------------------------------------------------
    def _begin(self, limits: WaitLimits | None = None) -> None:  # SQLite has no per-statement waits
        self._run("BEGIN IMMEDIATE")
        # Inside the transaction a busy statement cannot be retried: SQLite waits the whole timeout.
        self._wait_in_sqlite(self.lock_timeout)

    def _commit(self) -> None:
        try:
            self._run("COMMIT")  # deferred foreign keys are checked here
        finally:
            if not self.in_transaction():
                self._wait_in_sqlite(min(_POLL, self.lock_timeout))

    def _rollback(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            with suppress(sqlite3.Error):  # the error that led here is the one to report
                self._conn.execute("ROLLBACK")
                self._wait_in_sqlite(min(_POLL, self.lock_timeout))

    def in_transaction(self) -> bool:
        return self._conn is not None and self._conn.in_transaction

    def execute(self, statement: Statement) -> None:
        try:
            self._patiently(lambda: self.conn.execute(statement.sql))
        except sqlite3.Error as exc:
            raise self._error(exc, statement) from exc

    def reset_session(self, *, within_transaction: bool = False) -> None:
        # A fresh connection is the only reset SQLite has. Inside one transaction the connection
        # must stay, and the settings a migration could leave there (PRAGMAs) mostly do not
        # take effect inside a transaction anyway.
        if self.path == ":memory:" or within_transaction:  # an in-memory database is its connection
            return
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the lock --------------------------------------------------------------------------
    @property
    def _lock_path(self) -> str:
        return f"{self.path}.dbledger-lock"

    def _try_lock(self) -> bool:
        if self.path == ":memory:":  # private to this connection: nobody to wait for
            return True
        if self._lock_file is None:
            self._check_folder()  # the lock file sits next to the database: name what is missing
            try:
                self._lock_file = open(self._lock_path, "a+")  # noqa: SIM115 -- held for the whole run
            except OSError as exc:
                raise DatabaseUnavailable(
                    f"cannot open the lock file {self._lock_path!r}: {exc.strerror}"
                ) from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:  # e.g. ENOLCK: a file system without locks (NFS without lockd)
            raise DatabaseUnavailable(
                f"cannot lock {self._lock_path!r}: {exc.strerror}; keep the database on a local file system"
            ) from None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"{self.lock_token}\n")
        self._lock_file.flush()
        return True

    def _unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.truncate(0)
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    @property
    def lock_token(self) -> str:
        return actor()

    def lock_holders(self) -> frozenset[str]:
        """The holder written in the lock file, while somebody holds the lock on it."""
        try:
            handle = open(self._lock_path)  # noqa: SIM115 -- closed below
        except OSError:
            return frozenset()
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = handle.read().strip()
                return frozenset({holder}) if holder else frozenset()
            fcntl.flock(handle, fcntl.LOCK_UN)
            return frozenset()

    def describe_holder(self) -> str:
        holders = sorted(self.lock_holders())
        return f"{holders[0]} (dbledger)" if holders else "another process"

    # -- the database as a whole -----------------------------------------------------------
    def user_tables(self) -> list[str]:
        if not self._database_exists():
            return []
        own = ", ".join("?" for _ in self.names.tables)
        found = self._fetch(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
            f" AND name NOT LIKE 'sqlite_%' AND name NOT IN ({own}) ORDER BY name",
            self.names.tables,
        )
        return [name for (name,) in found]

    def schema_signature(self) -> frozenset[tuple[str, str, str]]:
        if not self._database_exists():
            return frozenset()
        own = ", ".join("?" for _ in self.names.tables)
        found = self._fetch(
            "SELECT type, name, sql FROM sqlite_master"
            f" WHERE name NOT LIKE 'sqlite_%' AND tbl_name NOT IN ({own})",
            self.names.tables,
        )
        # sqlite_master keeps each CREATE statement as written: compare it modulo whitespace.
        return frozenset((kind, name, " ".join((text or "").split())) for kind, name, text in found)

    def introspect(self) -> SchemaModel:
        from dbledger.schema import introspect_sqlite

        if not self._database_exists():  # reading must not create the file
            with closing(sqlite3.connect(":memory:")) as empty:
                return introspect_sqlite(empty)
        try:
            return introspect_sqlite(self.conn, self.names.tables)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @contextmanager
    def scratch(self) -> Iterator[Backend]:
        import shutil
        import tempfile  # only for a replay: it loads random, ~2 ms on every start otherwise

        # A file, not ":memory:": each migration of a replay gets a fresh connection, as here.
        folder = tempfile.mkdtemp(prefix="dbledger-scratch-")
        path = os.path.join(folder, "scratch.sqlite3")
        scratch = Database(
            url=f"sqlite:///{path}", dialect="sqlite", display="scratch database", sqlite_path=path
        )
        try:
            with SqliteBackend(scratch, self.names) as other:
                yield other
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def take_backup(self, directory: Path, label: str) -> Backup:
        from dbledger.backup import copy_sqlite

        return copy_sqlite(self.database, directory, label=label)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._unlock()
