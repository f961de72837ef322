"""The contract every database backend fulfils, and what all of them share.

The ``Backend`` base class owns the ledger: reading it (and recognising an older format or
another tool's table), writing each change together with its chained history row, creating and
upgrading its tables, the lock-polling loop and the transaction wrapper. A backend supplies its
dialect, its SQL (``LedgerSQL``), and a few hooks: connect, run a query, begin/commit/roll back,
try the lock, run a migration statement, translate its driver's errors, introspect, make a
scratch database, back up. Each hook's docstring says when the core calls it. The core never
imports a driver.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from dbledger.config import DEFAULT_LEASE_TTL, DEFAULT_LOCK_TIMEOUT, DEFAULT_WAITS, Database, WaitPolicy
from dbledger.contracts import (
    APPLIED_STATES,
    COMMIT_STATEMENT,
    REPEATABLE,
    HistoryRow,
    LedgerEvent,
    LedgerRow,
    LedgerSnapshot,
    Statement,
    Version,
    WaitLimits,
)
from dbledger.errors import (
    DatabaseError,
    DbledgerError,
    ForeignLedger,
    LedgerStateError,
    LockTimeout,
    UsageError,
)
from dbledger.ledger import (
    CHECKSUM_ALGORITHM,
    DBLEDGER_VERSION,
    DEFAULT_LEDGER,
    LEDGER_VERSION,
    LedgerNames,
    actor,
)
from dbledger.pgversions import Server
from dbledger.placeholders import Placeholder

if TYPE_CHECKING:
    from dbledger.analysis import Catalog
    from dbledger.annotation import Annotator
    from dbledger.backup import Backup
    from dbledger.dialects import Dialect
    from dbledger.schema import SchemaModel

# A query in the backend's own form (psycopg's composed SQL, or a string for sqlite3).
Query = Any
Params = dict[str, Any] | Sequence[Any] | None


class LedgerSQL(NamedTuple):
    """The statements the base class runs, in the backend's dialect and parameter style, with the
    ledger's table names already in them. Named parameters are those ``_row_params`` and
    ``_history_params`` produce."""

    # The version row joined to every ledger row, ordered by id: one query, and on a fresh
    # connection a plain join plans faster than a subquery.
    read: Query
    read_v1: Query  # a format 1 ledger's rows (no applied_order, runner)
    read_v2: Query  # a format 2 ledger: as ``read``, without the checksum's algorithm
    read_version: Query  # the format version alone
    create: tuple[Query, ...]
    upgrade_from_v1: tuple[Query, ...]
    upgrade_to_v3: tuple[Query, ...]  # the columns format 3 adds to the ledger table
    set_format: Query  # the version row says the current format
    read_source: Query  # :name; the row's copy of its file
    upsert_row: Query  # the row whole, by _row_params; an existing row of the name keeps its id
    delete_row: Query  # :name
    update_checksum: Query  # :name, :checksum, :algorithm, :source
    rename_row: Query  # :name, :new_name
    update_row: Query  # :name, :state, :success, :error, :applied_order, :runner
    set_applied_order: Query  # :name, :applied_order
    insert_history: Query
    history_head: Query  # the newest history row's hash
    history_rows: Query  # HISTORY_COLUMNS, oldest first
    legacy_history: Query  # id, action, migration_name, detail of every history row (format 1)
    set_history_estimate: Query  # :id, :estimate_ms (upgrade)
    set_history_hash: Query  # :id, :prev_hash, :hash (upgrade)
    save_schema: Query  # :action, :name, :fingerprint, :model
    latest_schema: Query


# The columns the history query returns, in order.
# The end of the ledger read, for both databases ({version}, {ledger}: their quoted names): every
# row carries the version table's row count and format, then a ledger row (or NULLs). Joined
# straight with the ledger, a never-analysed version table is guessed at 1130 rows by PostgreSQL,
# and a 1000-row ledger's read crossed the cost at which it is compiled (JIT, +25 ms a start).
VERSION_AND_LEDGER = (
    " FROM (SELECT count(*) AS held, max(version) AS version FROM {version}) AS v"
    " LEFT JOIN {ledger} AS l ON 1 = 1 ORDER BY l.id"
)

HISTORY_COLUMNS = (
    "id, at, action, migration_name, version, state, checksum, execution_time_ms, estimate_ms, "
    "applied_order, error_message, detail, actor, dbledger_version, prev_hash, hash"
)
# A table name of another tool ('flyway_schema_history', '__diesel_schema_migrations').
_FOREIGN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_ESTIMATE_V1 = re.compile(r"^estimate_ms=(\d+)$")  # how dbledger 0.1 kept the estimate


def _known_tools(columns: frozenset[str]) -> str:
    """Which migration tool a table with ``columns`` belongs to, by the columns it creates."""
    rules: list[tuple[set[str], str]] = [
        ({"installed_rank", "script"}, "Flyway (flyway_schema_history)"),
        ({"version", "dirty"}, "golang-migrate"),
        ({"version", "run_on"}, "Diesel (__diesel_schema_migrations)"),
        ({"version", "description", "installed_on", "execution_time"}, "sqlx (_sqlx_migrations)"),
        ({"version_num"}, "Alembic (alembic_version)"),
        ({"migration_hash", "migration_id"}, "yoyo-migrations (_yoyo_migration)"),
        ({"name", "batch", "migration_time"}, "Knex (knex_migrations)"),
        ({"migration", "batch"}, "Laravel (migrations)"),
        ({"name", "run_on"}, "node-pg-migrate (pgmigrations)"),
        ({"migration_name", "checksum", "success"}, "a runner that keeps the incident report's own ledger"),
    ]
    for needed, tool in rules:
        if needed <= columns:
            return tool
    if columns == {"version"}:
        return "dbmate or Rails (one version column)"
    return "another tool"


class Backend(ABC):
    """One open connection to one database, and everything dbledger asks of it."""

    # The SQL this database speaks (dbledger.dialects), by name: loaded when a section is split.
    dialect_name: ClassVar[str]
    # Whether tables live in schemas worth naming in messages (SQLite has only "main").
    has_schemas: ClassVar[bool] = True

    def __init__(
        self,
        database: Database,
        names: LedgerNames = DEFAULT_LEDGER,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        connect_timeout: float | None = None,
    ) -> None:
        """Connect. ``lock_timeout``: how long a run may wait for the migration lock (SQLite also
        waits this long for the database's own write lock). ``connect_timeout``: seconds a
        connection attempt may take (None: the URL's or the environment's, else the default)."""
        self.database = database
        self.names = names
        self.lock_timeout = lock_timeout
        # Told, once per wait, what the backend waits for (the holder of a lock) before it waits.
        self.on_busy: Callable[[str], None] = lambda holder: None
        self._head: str | None = None  # the newest history hash, known while the lock is held
        self.waits: WaitPolicy = DEFAULT_WAITS  # what migration statements may wait for locks
        # [tool.dbledger.placeholders], for the statements of every section run here
        self.placeholders: Mapping[str, Placeholder] = {}
        self.lock_mode = "auto"  # how runs exclude one another: dbledger.config.LOCK_MODES
        self.lease_ttl = DEFAULT_LEASE_TTL  # the lease lock's time to live without a heartbeat
        self.on_note: Callable[[str], None] = lambda text: None  # told what the backend chose, and why

    @cached_property
    def dialect(self) -> Dialect:
        """How this database's SQL splits into statements, and which ones a transaction cannot hold."""
        from dbledger.dialects import for_name

        return for_name(self.dialect_name)

    def server(self) -> Server | None:
        """The server's version, for what the preflight refuses on older ones; None for a
        database without versions that matter to migrations (SQLite)."""
        return None

    # -- hooks: connection and SQL ---------------------------------------------------------
    @property
    @abstractmethod
    def sql(self) -> LedgerSQL:
        """The ledger statements for this connection (the schema resolved, names quoted)."""

    @property
    @abstractmethod
    def ledger_schema(self) -> str | None:
        """The schema the ledger lives in, as the connection resolved it (SQLite: ``main``)."""

    @property
    @abstractmethod
    def default_schema(self) -> str | None:
        """Where a migration's unqualified table names go (PostgreSQL: ``current_schema()``)."""

    @abstractmethod
    def _fetch(self, query: Query, params: Params = None) -> list[tuple[Any, ...]]:
        """Run one ledger query and return its rows; DatabaseError on failure."""

    @abstractmethod
    def _run(self, query: Query, params: Params = None) -> None:
        """Run one ledger statement; DatabaseError on failure."""

    def _run_many(self, query: Query, rows: list[dict[str, Any]]) -> None:
        """Run one statement for each parameter set (the ledger upgrade)."""
        for params in rows:
            self._run(query, params)

    @abstractmethod
    def _ledger_layout(self) -> dict[str, frozenset[str]]:
        """Called when the fast ledger read failed: which of the ledger's four tables exist in
        the ledger's schema, each with its column names. Reads the catalog only."""

    def _database_exists(self) -> bool:
        """Called before every read that must not create the database (SQLite opens its file
        on first use): False when there is no database yet, so nothing can be in it."""
        return True

    def absence(self) -> str | None:
        """For a read command: why everything reads as empty, when the database does not exist
        yet (a SQLite file nobody created); None when it exists."""
        if self._database_exists():
            return None
        return f"{self.database.display} does not exist yet: 'dbledger up' would create it"

    @abstractmethod
    def _timestamp_text(self, value: Any) -> str:
        """A stored history timestamp as the exact text its hash covers."""

    @abstractmethod
    def _applied_at_text(self, value: Any) -> str | None:
        """A ledger row's ``applied_at`` as text for people and JSON."""

    # -- hooks: transactions and statements ------------------------------------------------
    @abstractmethod
    def _begin(self, limits: WaitLimits | None = None) -> None:
        """Open a transaction (SQLite: one that takes the write lock at once). ``limits``: what
        its statements may wait for locks and run, for this transaction only (PostgreSQL)."""

    @abstractmethod
    def _commit(self) -> None:
        """Commit; a database error (a deferred constraint) raises DatabaseError."""

    @abstractmethod
    def _rollback(self) -> None:
        """Roll back the open transaction; never raises for a connection that is gone."""

    @abstractmethod
    def in_transaction(self) -> bool:
        """Called after a ``transaction:false`` statement: is a transaction (one the migration
        opened itself) still open?"""

    @abstractmethod
    def execute(self, statement: Statement) -> None:
        """Run one migration statement in the current transaction, or on its own outside any
        (``transaction:false``). Raises DatabaseError with the database's words and SQLSTATE."""

    @abstractmethod
    def reset_session(self, *, within_transaction: bool = False) -> None:
        """Called before each migration but the first of a run: undo whatever the previous one
        changed in the session (settings, role, temporary tables), keeping the migration lock,
        so each migration runs as if it ran alone. ``within_transaction``: between the
        migrations of one transaction (``--atomic``, a replay on ``--shadow-url``), which must
        stay open."""

    def limit_waits(self, limits: WaitLimits, *, local: bool = False) -> None:  # noqa: B027 -- SQLite has none
        """Called outside a transaction before a ``transaction:false`` statement whose limits
        differ from the ones set last: what the session's next statements may wait and run.
        ``local``: inside a transaction, for the rest of it (after ``reset_session`` cleared them)."""

    def watching_waits(self, limits: WaitLimits) -> AbstractContextManager[None]:
        """Held while a migration's statements run: sample, from aside, the sessions that keep
        this one waiting for a lock, for ``blockers()`` to name when the wait times out."""
        return nullcontext()

    def blockers(self) -> tuple[str, ...]:
        """The sessions that last kept a migration statement waiting for a lock, in words (pid,
        application, state, age, query), as ``watching_waits`` saw them; empty when unknown."""
        return ()

    def restore_identity(self) -> None:  # noqa: B027 -- an optional hook: databases without roles
        """Called inside a migration's transaction, after its statements and before its ledger
        rows, when a statement may have changed the session's role: act as the connection's own
        user again, so the ledger is written by who owns it."""

    def check_deferred(self) -> None:  # noqa: B027 -- an optional hook: most backends cannot check
        """Called under ``--atomic`` after each migration: check the deferred constraints it
        left, so a violation is blamed on the migration that caused it, not on the last one.
        Raises DatabaseError. Backends that cannot check do nothing."""

    # -- hooks: the lock ---------------------------------------------------------------------
    @abstractmethod
    def _try_lock(self) -> bool:
        """One attempt at the migration lock, without waiting."""

    def _fence(self) -> None:  # noqa: B027 -- an optional hook: a session lock needs no fence
        """Called inside every transaction under the lock, just before COMMIT: refuse to commit
        (raise) when this run no longer holds the lock, as a lease that expired."""

    @abstractmethod
    def _unlock(self) -> None:
        """Release the lock (a dead connection has released it already)."""

    @property
    @abstractmethod
    def lock_token(self) -> str:
        """How this session appears among ``lock_holders()``; stored with a running migration."""

    @abstractmethod
    def lock_holders(self) -> frozenset[str]:
        """Called by readers (``status``) when a row is dirty: who holds the lock right now, as
        tokens, without taking it. A dirty row whose runner holds the lock is running."""

    @abstractmethod
    def describe_holder(self) -> str:
        """The lock holder in words, for the waiting and timeout messages."""

    # -- hooks: the database as a whole (or the target schema in it) ------------------------
    # The target is what the hooks below cover: the whole database, or (PostgreSQL) one schema
    # of it, for a database with a schema per tenant (dbledger.backends.pgtarget).
    @property
    def target_schema(self) -> str | None:
        """The one schema this connection works on, or None for the whole database."""
        return None

    @abstractmethod
    def user_tables(self) -> list[str]:
        """Called when the ledger table is missing, before the first migration: the tables that
        already exist in the target (a database built without dbledger), dbledger's own left out."""

    @abstractmethod
    def schema_signature(self) -> frozenset[tuple[str, str, str]]:
        """``(kind, name, definition)`` for every user object of the target, dbledger's own tables
        left out: two databases with equal signatures have the same schema for ``baseline``."""

    @abstractmethod
    def scratch(self) -> AbstractContextManager[Backend]:
        """An empty database of the same kind for replaying migrations, dropped on exit, with the
        same target (its schema created, the search_path the same). Raises DbledgerError when it
        cannot be created (e.g. no CREATEDB privilege)."""

    def replay_address(self, database: Database) -> Database:
        """Called before a replay on the empty ``database`` the user gives (``--shadow-url``): its
        address with this connection's target, so the replay lands where the migrations ran."""
        return database

    def prepare_replay(self) -> None:  # noqa: B027 -- an optional hook: a target schema only
        """Called on a ``--shadow-url`` database, inside the replay's transaction (rolled back),
        before the first migration: create the target schema the migrations expect to run in."""

    @abstractmethod
    def introspect(self) -> SchemaModel:
        """Called by ``drift``, ``dump`` and after each run: the live schema of the target as a
        normalised model, dbledger's own tables left out. Reads only."""

    @abstractmethod
    def take_backup(self, directory: Path, label: str) -> Backup:
        """Called before a risky deploy's first change with ``up --backup DIR``."""

    def catalog(self) -> Catalog | None:
        """Called by lint: this database's live catalog, as the analysis reads it (table sizes,
        columns, indexes), or None where the rules do not apply."""
        return None

    def annotator(self, *, calibrate: bool = False, live: bool = False) -> Annotator | None:
        """Called by dry runs, and before each migration runs to record its estimate: what
        analyses this database's statements, or None. ``calibrate``: scale estimates by how
        earlier migrations on this database compared with theirs. ``live`` (dry runs): also
        name the sessions that hold, right now, a lock a statement would wait for."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Called once when the command is done, also after an error."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the ledger, shared ----------------------------------------------------------------
    def read_ledger(self) -> LedgerSnapshot | None:
        """Called by every command first, possibly before any lock, and again under it (never
        inside a transaction): the ledger, or None when its table does not exist. Creates
        nothing. One query when the ledger has the current format."""
        if not self._database_exists():
            return None
        try:
            found = self._fetch(self.sql.read)
        except DatabaseError as first:
            return self._read_other_format(first)
        return self._snapshot(found)

    def _snapshot(self, found: list[tuple[Any, ...]]) -> LedgerSnapshot:
        # Every row: the version table's row count and format, then a ledger row (or NULLs).
        held, version = (int(found[0][0]), found[0][1]) if found else (0, None)
        if held != 1 or version is None:
            raise LedgerStateError(
                [
                    f"{self._qualified(self.names.version)} must hold exactly one row (version "
                    f"{LEDGER_VERSION}); it holds {held}: restore it"
                ]
            )
        if int(version) > LEDGER_VERSION:
            raise self._newer(int(version))
        rows = [self._ledger_row(raw[2:]) for raw in found if raw[2] is not None]
        return LedgerSnapshot(int(version), _in_applied_order(rows))

    def _read_other_format(self, first: DatabaseError) -> LedgerSnapshot | None:
        layout = self._ledger_layout()
        columns = layout.get(self.names.table)
        if columns is None:
            return None
        if self.names.version in layout:
            # Another runner created it since the first read, or a newer dbledger changed it.
            try:
                return self._snapshot(self._fetch(self.sql.read))
            except DatabaseError:
                version = self._fetch(self.sql.read_version)
                found = int(version[0][0]) if version and version[0][0] is not None else None
                if found is not None and found > LEDGER_VERSION:
                    raise self._newer(found) from None
                if found == 2:  # upgraded by the next run that takes the lock
                    return self._snapshot(self._fetch(self.sql.read_v2))
                raise first from None  # still unreadable: say what the database said
        if {"migration_name", "version", "state"} <= columns:  # dbledger 0.1
            rows = [self._ledger_row((*raw, None, None)) for raw in self._fetch(self.sql.read_v1)]
            order = _order_from_history(self._fetch(self.sql.legacy_history), rows)
            rows = [r._replace(applied_order=order.get(r.name)) for r in rows]
            return LedgerSnapshot(1, _in_applied_order(rows))
        raise ForeignLedger(self._qualified(self.names.table), _known_tools(columns), sorted(columns))

    def _newer(self, version: int) -> LedgerStateError:
        return LedgerStateError(
            [
                f"the ledger {self._qualified(self.names.table)} has format version {version}, written "
                f"by a newer dbledger; this one ({DBLEDGER_VERSION}) knows up to version {LEDGER_VERSION}: "
                "upgrade dbledger"
            ]
        )

    def _qualified(self, table: str) -> str:
        """``schema.table`` for messages, where the database has schemas to name."""
        return f"{self.ledger_schema}.{table}" if self.has_schemas else table

    def _ledger_row(self, raw: Sequence[Any]) -> LedgerRow:
        name, version, state, checksum, applied_at, ms, success, error, order, runner = raw[:10]
        algorithm = raw[10] if len(raw) > 10 else CHECKSUM_ALGORITHM  # format 3 names it
        return LedgerRow(
            name=name,
            version=Version.of(str(version)) if version != "" else REPEATABLE,
            state=state,
            checksum=checksum,
            applied_at=self._applied_at_text(applied_at),
            execution_time_ms=ms,
            success=bool(success),
            error_message=error,
            applied_order=order,
            runner=runner,
            checksum_algorithm=algorithm,
        )

    def foreign_table(self, table: str) -> list[dict[str, Any]] | None:
        """Called by 'dbledger adopt': every row of another tool's history table ``table``
        (``name`` or ``schema.name``, found as the database finds an unqualified name), each as
        {column: value}; None when there is no such table. Reads only."""
        parts = table.split(".")
        if len(parts) > 2 or not all(_FOREIGN_NAME.match(part) for part in parts):
            raise UsageError(f"invalid table name {table!r}: give name or schema.name")
        columns = self._foreign_columns(parts)
        if not columns:
            return None
        return [dict(zip(columns, row, strict=True)) for row in self._fetch(self._select_all(parts, columns))]

    @abstractmethod
    def _foreign_columns(self, parts: list[str]) -> list[str]:
        """The columns of the table named by ``parts``, in order; empty when there is none."""

    @abstractmethod
    def _select_all(self, parts: list[str], columns: list[str]) -> Query:
        """``SELECT columns FROM table``, every name quoted."""

    def read_source(self, name: str) -> str | None:
        """The copy of migration ``name``'s file its ledger row keeps (None: none kept, or no
        such row). Read only for a file whose checksum changed."""
        found = self._fetch(self.sql.read_source, {"name": name})
        return found[0][0] if found else None

    def create_ledger(self) -> None:
        """Called under the lock, inside a transaction, when the ledger does not exist yet:
        create its four tables at the current format."""
        for statement in self.sql.create:
            self._run(statement)
        self.write(
            LedgerEvent(
                "create",
                None,
                "none",
                detail=f"ledger format version {LEDGER_VERSION}, {self.names.qualified()}",
            )
        )

    def upgrade_ledger(self, snapshot: LedgerSnapshot) -> None:
        """Called under the lock, inside a transaction, when the ledger has an older format:
        upgrade it in place, losing nothing, and record the upgrade in the history."""
        if snapshot.version == 1:
            self._upgrade_from_v1(snapshot)
        if snapshot.version < 3:
            for statement in self.sql.upgrade_to_v3:
                self._run(statement)
        # 3 -> 4 changes no column: only what a version may hold (dbledger.ledger).
        self._run(self.sql.set_format)
        self.write(
            LedgerEvent(
                "upgrade",
                None,
                "none",
                detail=f"ledger format version {snapshot.version} -> {LEDGER_VERSION} "
                f"by dbledger {DBLEDGER_VERSION}",
            )
        )

    def _upgrade_from_v1(self, snapshot: LedgerSnapshot) -> None:
        from dbledger import chain

        for statement in self.sql.upgrade_from_v1:
            self._run(statement)
        # 0.1 kept the time estimate as text in detail; it gets its own column.
        moves = []
        for history_id, _, _, detail in self._fetch(self.sql.legacy_history):
            found = _ESTIMATE_V1.match(detail or "")
            if found:
                moves.append({"id": history_id, "estimate_ms": int(found.group(1))})
        self._run_many(self.sql.set_history_estimate, moves)
        # The applied order as read (from the history: 0.1's row ids get a retried failure wrong).
        order = {row.name: row.applied_order for row in snapshot.rows if row.applied_order is not None}
        self._run_many(
            self.sql.set_applied_order, [{"name": n, "applied_order": i} for n, i in order.items()]
        )
        links, previous = [], ""
        for event in self.history():
            digest = chain.link(previous, chain.row_content(event))
            links.append({"id": event.id, "prev_hash": previous, "hash": digest})
            previous = digest
        self._run_many(self.sql.set_history_hash, links)
        self._head = previous
        for row in snapshot.rows:  # each row's state, as the chain's ledger check will expect it
            self.write(
                LedgerEvent(
                    "upgrade",
                    row.name,
                    "none",
                    state=row.state,
                    version=row.version,
                    checksum=row.checksum,
                    applied_order=order.get(row.name),
                    detail="state at the ledger upgrade",
                )
            )

    def write(self, event: LedgerEvent) -> None:
        """Called inside a transaction, under the lock: apply ``event`` to the ledger table and
        append its history row, chained to the one before."""
        params = self._row_params(event)
        if event.change == "upsert":
            self._run(self.sql.upsert_row, params)
        elif event.change == "delete":
            self._run(self.sql.delete_row, {"name": event.name})
        elif event.change == "update":
            self._run(self.sql.update_row, params)
        elif event.change == "checksum":
            keep = {key: params[key] for key in ("name", "checksum", "algorithm", "source")}
            self._run(self.sql.update_checksum, keep)
        elif event.change == "rename":
            self._run(self.sql.rename_row, {"name": event.name, "new_name": event.new_name})
        self._append_history(event)

    def _row_params(self, event: LedgerEvent) -> dict[str, Any]:
        return {
            "name": event.name,
            "version": None if event.version is None else str(event.version),
            "state": event.state,
            "checksum": event.checksum,
            "ms": event.execution_time_ms,
            "success": event.state in APPLIED_STATES,
            "error": event.error_message,
            "actor": actor(),
            "tool": DBLEDGER_VERSION,
            "applied_order": event.applied_order,
            "runner": event.runner,
            "algorithm": CHECKSUM_ALGORITHM,
            "source": event.source,
        }

    def _append_history(self, event: LedgerEvent) -> None:
        from datetime import UTC, datetime

        from dbledger import chain  # only when writing: the no-op path never does

        if self._head is None:
            found = self._fetch(self.sql.history_head)
            self._head = (found[0][0] or "") if found else ""
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        fields: dict[str, Any] = {
            "at": at,
            "action": event.action,
            "migration_name": event.name,
            "version": None if event.version is None else str(event.version),
            "state": event.state,
            "checksum": event.checksum,
            "execution_time_ms": event.execution_time_ms,
            "estimate_ms": event.estimate_ms,
            "applied_order": event.applied_order,
            "error_message": event.error_message,
            "detail": event.detail,
            "actor": actor(),
            "dbledger_version": DBLEDGER_VERSION,
        }
        digest = chain.link(self._head, chain.content(fields))
        self._run(self.sql.insert_history, {**fields, "prev_hash": self._head, "hash": digest})
        self._head = digest

    def history(self) -> list[HistoryRow]:
        """Every history row, oldest first; empty when there is no history table."""
        if not self._database_exists():
            return []
        try:
            raw = self._fetch(self.sql.history_rows)
        except DatabaseError:
            if self.names.history not in self._ledger_layout():
                return []
            raise
        return [self._history_row(row) for row in raw]

    def _history_row(self, raw: Sequence[Any]) -> HistoryRow:
        values = list(raw)
        values[1] = self._timestamp_text(values[1])
        return HistoryRow(*values)

    def save_schema(self, action: str, name: str | None, fingerprint: str, model: str) -> None:
        """Called inside a transaction after a run that changed something: remember the schema
        it left, for ``drift`` and ``status``."""
        self._run(
            self.sql.save_schema, {"action": action, "name": name, "fingerprint": fingerprint, "model": model}
        )

    def latest_schema(self) -> tuple[str, str] | None:
        """The fingerprint and stored model of the newest recorded schema, or None."""
        if not self._database_exists():
            return None
        try:
            row = self._fetch(self.sql.latest_schema)
        except DatabaseError:
            if self.names.snapshots not in self._ledger_layout():
                return None
            raise
        if not row or not row[0][0]:  # nothing recorded, or the record was set aside
            return None
        return str(row[0][0]), str(row[0][1])

    def set_schema_aside(self, action: str, name: str | None) -> None:
        """Called inside a transaction when the recorded schema stops standing for the files (a
        semantic change to an applied file was accepted): an empty record, so ``drift`` replays
        the files instead, until the next run records the schema it leaves."""
        self.save_schema(action, name, "", "")

    # -- locking and transactions, shared --------------------------------------------------
    @contextmanager
    def migration_lock(self, timeout: float, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Held around a whole run that writes. Polls ``_try_lock`` with a back-off, at most
        ``timeout`` seconds, then raises LockTimeout naming the holder. When the lock is busy at
        the first try, calls ``on_wait`` once with a description of the holder."""
        deadline = time.monotonic() + timeout
        intervals = poll_intervals()
        while not self._try_lock():
            if on_wait is not None:
                on_wait(self.describe_holder())
                on_wait = None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(
                    f"gave up after waiting {timeout:g} s for the migration lock on "
                    f"{self.database.display}, held by {self.describe_holder()}: wait for it to "
                    "finish, or raise --lock-timeout"
                )
            time.sleep(min(next(intervals), remaining))
        self._head = None  # others may have written while we did not hold the lock
        try:
            yield
        finally:
            self._unlock()

    @contextmanager
    def transaction(self, limits: WaitLimits | None = None) -> Iterator[None]:
        """Wraps one migration together with its ledger rows. Commits on exit, rolls back on an
        exception. An error raised by the commit itself (a deferred constraint) is a
        DatabaseError for ``COMMIT_STATEMENT``. ``limits``: for the migration's statements."""
        self._begin(limits)
        head = self._head
        try:
            yield
            self._fence()
        except BaseException:
            self._head = head
            self._rollback()
            raise
        try:
            self._commit()
        except DbledgerError as exc:  # a deferred constraint, or the database busy at COMMIT
            self._head = head
            if self.in_transaction():
                self._rollback()
            if isinstance(exc, DatabaseError):
                raise DatabaseError(exc.message, sqlstate=exc.sqlstate, statement=COMMIT_STATEMENT) from exc
            raise

    @contextmanager
    def rolled_back(self) -> Iterator[None]:
        """A transaction that is always rolled back: a replay on a database that must stay as it
        was (``--shadow-url``)."""
        self._begin()
        try:
            yield
        finally:
            self._rollback()

    def roll_back_open(self) -> None:
        """Called after a ``transaction:false`` statement failed: roll back a transaction the
        migration opened itself, so the failure can be recorded."""
        if self.in_transaction():
            self._rollback()


def _in_applied_order(rows: list[LedgerRow]) -> tuple[LedgerRow, ...]:
    """Applied rows by applied order, then failed and dirty rows as they came."""
    return tuple(sorted(rows, key=lambda r: (r.applied_order is None, r.applied_order or 0)))


def _order_from_history(history: Sequence[tuple[Any, ...]], rows: Sequence[LedgerRow]) -> dict[str, int]:
    """1, 2, 3... for each applied row of a format 1 ledger, in the order of its newest apply or
    baseline action in ``history`` (``(id, action, migration_name, ...)`` rows): dbledger 0.1
    ordered by row id, which a failure retried later gets wrong. Rows the history does not
    explain follow in their ledger order."""
    last: dict[str, int] = {}
    for history_id, action, name, *_ in history:
        if action in ("apply", "baseline", "adopt") and name:
            last[name] = history_id
    applied = [row.name for row in rows if row.state in APPLIED_STATES]
    explained = sorted((n for n in applied if n in last), key=lambda n: last[n])
    rest = [n for n in applied if n not in last]
    return {name: position for position, name in enumerate(explained + rest, start=1)}


def poll_intervals(start: float = 0.05, cap: float = 1.0) -> Iterator[float]:
    """Back-off for lock polling: quick at first (the usual wait is one short migration), then
    at most once a second so hundreds of waiting replicas do not hammer the server."""
    delay = start
    while True:
        yield delay
        delay = min(cap, delay * 2)
