"""PostgreSQL through psycopg 3.

The connection stays in autocommit: transactions are opened explicitly around each migration, and
``transaction:false`` statements (``CREATE INDEX CONCURRENTLY``) run on their own. The migration
lock is a session-level advisory lock taken by *polling* ``pg_try_advisory_lock``. A waiter blocked
inside ``pg_advisory_lock`` is a running statement with an open snapshot, and the holder's
``CREATE INDEX CONCURRENTLY`` waits for every such snapshot to end while the waiter waits for the
holder: a deadlock (the bug known from golang-migrate and older Flyway). A poll from autocommit
holds nothing between tries.

Server-side prepared statements are off (``prepare_threshold=None``): resetting the session
between migrations runs ``DEALLOCATE ALL``, which would pull psycopg's own out from under it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, LiteralString

import psycopg
from psycopg import conninfo, pq, sql

from dbledger import pgversions
from dbledger.backends import pgtarget
from dbledger.backends.base import HISTORY_COLUMNS, VERSION_AND_LEDGER, Backend, LedgerSQL, Params, Query
from dbledger.config import DEFAULT_CONNECT_TIMEOUT, DEFAULT_LOCK_TIMEOUT, Database
from dbledger.contracts import COMMIT_STATEMENT, LedgerEvent, Statement, WaitLimits
from dbledger.errors import ConfigError, DatabaseError, DatabaseUnavailable, DbledgerError
from dbledger.ledger import DBLEDGER_VERSION, DEFAULT_LEDGER, LEDGER_VERSION, LedgerNames
from dbledger.redaction import redact

if TYPE_CHECKING:
    from dbledger.analysis import PostgresCatalog
    from dbledger.annotation import Annotator
    from dbledger.backends.pglease import Lease
    from dbledger.backends.pgwaits import WaitWatcher
    from dbledger.backup import Backup
    from dbledger.schema import SchemaModel

_FOREIGN_COLUMNS = (
    "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
    " AND NOT attisdropped ORDER BY attnum"
)
_LEDGER = """
CREATE TABLE {ledger} (
    id SERIAL PRIMARY KEY,
    migration_name VARCHAR(255) UNIQUE NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    checksum VARCHAR(64),
    execution_time_ms INTEGER,
    success BOOLEAN NOT NULL DEFAULT true,
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
)"""
_HISTORY = """
CREATE TABLE {history} (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
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
)"""
_SNAPSHOTS = """
CREATE TABLE IF NOT EXISTS {snapshots} (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    action TEXT NOT NULL,
    migration_name VARCHAR(255),
    fingerprint VARCHAR(64) NOT NULL,
    model TEXT NOT NULL
)"""
_VERSION = """
CREATE TABLE {version} (
    version INTEGER NOT NULL,
    upgraded_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    dbledger_version TEXT NOT NULL
)"""
_SET_VERSION = "INSERT INTO {version} (version, dbledger_version) VALUES ({format}, {tool})"
_ORDER_INDEX = "CREATE UNIQUE INDEX {order_index} ON {ledger} (applied_order)"
_UPGRADE_FROM_V1: tuple[LiteralString, ...] = (
    "ALTER TABLE {ledger} ADD COLUMN applied_order INTEGER, ADD COLUMN runner TEXT",
    _ORDER_INDEX,
    "ALTER TABLE {history} ADD COLUMN version TEXT, ADD COLUMN state TEXT,"
    " ADD COLUMN applied_order INTEGER, ADD COLUMN estimate_ms INTEGER,"
    " ADD COLUMN prev_hash VARCHAR(64), ADD COLUMN hash VARCHAR(64)",
    _SNAPSHOTS,
    _VERSION,
    _SET_VERSION,
)
_UPGRADE_TO_V3: tuple[LiteralString, ...] = (
    "ALTER TABLE {ledger} ADD COLUMN checksum_algorithm VARCHAR(16) NOT NULL DEFAULT 'sha256',"
    " ADD COLUMN source TEXT",
)
_STATEMENTS: dict[str, LiteralString] = {
    # One round trip on the path every replica takes: the format version and every row.
    "read": "SELECT v.held, v.version, l.migration_name, l.version, l.state, l.checksum, l.applied_at,"
    " l.execution_time_ms, l.success, l.error_message, l.applied_order, l.runner, l.checksum_algorithm"
    + VERSION_AND_LEDGER,
    "read_v2": "SELECT v.held, v.version, l.migration_name, l.version, l.state, l.checksum, l.applied_at,"
    " l.execution_time_ms, l.success, l.error_message, l.applied_order, l.runner" + VERSION_AND_LEDGER,
    "set_format": "UPDATE {version} SET version = {format}, upgraded_at = NOW(), dbledger_version = {tool}",
    "read_source": "SELECT source FROM {ledger} WHERE migration_name = %(name)s",
    "read_v1": "SELECT migration_name, version, state, checksum, applied_at, execution_time_ms, success,"
    " error_message FROM {ledger} ORDER BY id",
    "read_version": "SELECT max(version) FROM {version}",
    "upsert_row": "INSERT INTO {ledger} AS l (migration_name, version, state, checksum,"
    " execution_time_ms, success, error_message, applied_by, dbledger_version, applied_order, runner,"
    " checksum_algorithm, source)"
    " VALUES (%(name)s, %(version)s, %(state)s, %(checksum)s, %(ms)s, %(success)s, %(error)s,"
    " %(actor)s, %(tool)s, %(applied_order)s, %(runner)s, %(algorithm)s, %(source)s)"
    " ON CONFLICT (migration_name) DO UPDATE SET version = excluded.version, state = excluded.state,"
    " checksum = excluded.checksum, execution_time_ms = excluded.execution_time_ms,"
    " success = excluded.success, error_message = excluded.error_message,"
    " applied_by = excluded.applied_by, dbledger_version = excluded.dbledger_version,"
    " applied_order = excluded.applied_order, runner = excluded.runner,"
    " checksum_algorithm = excluded.checksum_algorithm, source = excluded.source, applied_at = NOW()",
    "delete_row": "DELETE FROM {ledger} WHERE migration_name = %(name)s",
    "update_checksum": "UPDATE {ledger} SET checksum = %(checksum)s, checksum_algorithm = %(algorithm)s,"
    " source = %(source)s WHERE migration_name = %(name)s",
    "rename_row": "UPDATE {ledger} SET migration_name = %(new_name)s WHERE migration_name = %(name)s",
    "update_row": "UPDATE {ledger} SET state = %(state)s, success = %(success)s, error_message = %(error)s,"
    " applied_order = %(applied_order)s, runner = %(runner)s WHERE migration_name = %(name)s",
    "set_applied_order": "UPDATE {ledger} SET applied_order = %(applied_order)s"
    " WHERE migration_name = %(name)s",
    "insert_history": "INSERT INTO {history} (at, action, migration_name, version, state, checksum,"
    " execution_time_ms, estimate_ms, applied_order, error_message, detail, actor, dbledger_version,"
    " prev_hash, hash) VALUES (%(at)s, %(action)s, %(migration_name)s, %(version)s, %(state)s,"
    " %(checksum)s, %(execution_time_ms)s, %(estimate_ms)s, %(applied_order)s, %(error_message)s,"
    " %(detail)s, %(actor)s, %(dbledger_version)s, %(prev_hash)s, %(hash)s)",
    "history_head": "SELECT hash FROM {history} ORDER BY id DESC LIMIT 1",
    "history_rows": f"SELECT {HISTORY_COLUMNS} FROM {{history}} ORDER BY id",
    "legacy_history": "SELECT id, action, migration_name, detail FROM {history} ORDER BY id",
    "set_history_estimate": "UPDATE {history} SET estimate_ms = %(estimate_ms)s, detail = NULL"
    " WHERE id = %(id)s",
    "set_history_hash": "UPDATE {history} SET prev_hash = %(prev_hash)s, hash = %(hash)s WHERE id = %(id)s",
    "save_schema": "INSERT INTO {snapshots} (action, migration_name, fingerprint, model)"
    " VALUES (%(action)s, %(name)s, %(fingerprint)s, %(model)s)",
    "latest_schema": "SELECT fingerprint, model FROM {snapshots} ORDER BY id DESC LIMIT 1",
}

_LAYOUT = """
SELECT c.relname, array_agg(a.attname::text)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'f')
GROUP BY c.relname
"""

# Every user object with a definition that changes when a migration changes it, for matching a
# database built without dbledger against the files. Objects that belong to an extension are
# left out (they come with CREATE EXTENSION, not with a migration); the marker becomes the
# condition that leaves dbledger's own tables out.
_USER_SCHEMA = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' AND /*in-scope*/"
)
_SIGNATURE = f"""
SELECT 'column', n.nspname || '.' || c.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
  AND {_USER_SCHEMA} AND /*not-ledger*/
UNION ALL
SELECT 'constraint', n.nspname || '.' || c.relname || '.' || co.conname, pg_get_constraintdef(co.oid)
FROM pg_constraint co
JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_SCHEMA} AND /*not-ledger*/
UNION ALL
SELECT 'index', n.nspname || '.' || i.relname, pg_get_indexdef(i.oid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE {_USER_SCHEMA} AND /*not-ledger*/
UNION ALL
SELECT 'view', n.nspname || '.' || c.relname, pg_get_viewdef(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND {_USER_SCHEMA}
UNION ALL
SELECT 'function', n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       md5(p.prosrc)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE {_USER_SCHEMA}
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = p.oid AND e.deptype = 'e')
UNION ALL
SELECT 'trigger', n.nspname || '.' || c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND {_USER_SCHEMA}
"""

# Who holds a bigint advisory lock: pg_locks splits the key into classid (high 32 bits) and
# objid (low 32 bits), with objsubid = 1 for the single-bigint form.
_LOCK_HOLDERS = """
SELECT a.pid, a.application_name, a.usename, host(a.client_addr), a.backend_start, a.state
FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid
"""

# What DISCARD ALL does, but for releasing advisory locks (the migration lock is one).
_RESET_SESSION = (
    b"SET SESSION AUTHORIZATION DEFAULT; RESET ALL; RESET ROLE; DEALLOCATE ALL; CLOSE ALL; "
    b"UNLISTEN *; DISCARD PLANS; DISCARD SEQUENCES; DISCARD TEMP"
)
# If this process dies mid-migration, the server notices within a second and rolls back,
# releasing the advisory lock, instead of finishing a long statement for nobody (14+). Set when
# the lock is first tried, not at connect: the no-op path never takes the lock.
_CHECK_CLIENT = b"SET client_connection_check_interval = 1000"


def _connect(database: Database, connect_timeout: float | None) -> psycopg.Connection[Any]:
    """A connection in autocommit mode. The attempt is bounded by ``connect_timeout``, else by
    the URL's ``connect_timeout`` or ``PGCONNECT_TIMEOUT``, else by DEFAULT_CONNECT_TIMEOUT."""
    try:
        params = conninfo.conninfo_to_dict(database.url)
    except psycopg.ProgrammingError as exc:  # libpq's parser: no secret in its words
        raise ConfigError(f"malformed PostgreSQL URL {database.display!r}: {_first_line(exc)}") from None
    bound: dict[str, Any] = {}  # given to psycopg, it overrides the URL's
    if connect_timeout is not None:
        bound["connect_timeout"] = int(connect_timeout)
    elif "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
        bound["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
    try:
        seconds = conninfo.timeout_from_conninfo({**params, **bound})
    except psycopg.ProgrammingError:
        given = params.get("connect_timeout", os.environ.get("PGCONNECT_TIMEOUT"))
        raise ConfigError(
            f"invalid connect_timeout {given!r} for {database.display}: give whole seconds"
        ) from None
    if database.schema is not None:  # --schema: search_path is that schema, whatever else says
        given = params.get("options") or os.environ.get("PGOPTIONS")
        bound["options"] = pgtarget.with_search_path(None if given is None else str(given), database.schema)
    try:
        return psycopg.connect(
            database.url, autocommit=True, application_name="dbledger", prepare_threshold=None, **bound
        )
    except psycopg.Error as exc:  # libpq's own words say why (refused, password, no such database)
        reason = _first_line(exc)
        if isinstance(exc, psycopg.errors.ConnectionTimeout):
            reason += (
                f" after {seconds} s: is the server up and reachable? Wait longer with "
                "--connect-timeout SECONDS, connect_timeout in the URL or PGCONNECT_TIMEOUT"
            )
        raise DatabaseUnavailable(f"cannot connect to {database.display}: {reason}") from None


class PostgresBackend(Backend):
    dialect_name: ClassVar[str] = "postgresql"

    def __init__(
        self,
        database: Database,
        names: LedgerNames = DEFAULT_LEDGER,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        connect_timeout: float | None = None,
    ) -> None:
        super().__init__(database, names, lock_timeout=lock_timeout)
        self.conn = _connect(database, connect_timeout)
        try:
            row = self.conn.execute(
                "SELECT current_schema(), current_database(), pg_backend_pid(),"
                " current_setting('search_path'), current_user"
            ).fetchone()
        except psycopg.Error as exc:  # the server went away right after the login
            self.conn.close()
            raise DatabaseUnavailable(f"cannot connect to {database.display}: {_first_line(exc)}") from None
        assert row is not None
        current, self.dbname, self.pid, self._search_path, user = row
        # The whole database (None), or the one schema it works on (dbledger.backends.pgtarget).
        self._target = pgtarget.target_of(database.schema, self.conn.info.options, self._search_path, user)
        if self._target is not None:
            self._check_search_path(database)
        if current is None and names.schema is None and self._target is None:
            self.conn.close()
            raise ConfigError(
                f"{database.display}: search_path names no existing schema to keep the ledger in: "
                "create the schema, set search_path for this user, or give --ledger-table SCHEMA.TABLE"
            )
        # A target schema that does not exist yet is where 'up' creates it and the migrations go.
        self._default_schema: str | None = self._target or current
        self._schema: str = names.schema or self._target or str(current)
        self._statements = self._compose()
        self._checks_client = False
        self._working_pid: int = self.pid  # the backend running the current migration
        self._watcher: WaitWatcher | None = None
        self._lease: Lease | None = None  # the lease lock, when this run uses it
        self._proxied = False  # the connection passes through a pooler or proxy (seen at the lock)
        self._writing = False  # inside write(): its statements are queued
        self._queued: list[tuple[Query, Params]] = []  # ledger writes not sent yet (see write())

    def server(self) -> pgversions.Server:
        return pgversions.Server(self.conn.info.server_version, self.database.display)

    def _check_search_path(self, database: Database) -> None:
        """A target's migrations must run with the search_path the connection asked for: refuse
        a server that did not receive it (a pooler that drops startup options)."""
        try:
            source = pgtarget.search_path_source(self.conn)
        except psycopg.Error as exc:
            self.conn.close()
            raise _database_error(exc) from exc
        if source != "client":
            self.conn.close()
            raise ConfigError(
                f"{database.display}: the connection sets search_path for target schema "
                f"{self._target!r}, but the server did not receive it (search_path is "
                f"{self._search_path!r}, from the {source}): a pooler such as PgBouncer drops startup "
                "options; connect to the server itself to migrate a schema"
            )

    def _compose(self) -> LedgerSQL:
        """Every ledger statement with the schema-qualified names in it: a migration that changes
        search_path (every pg_dump output does) cannot send the ledger's writes elsewhere."""
        # Quoted once by psycopg, then placed with str.format: composing 30 templates with
        # sql.SQL.format at every connect costs what the no-op path's query does.
        names = {
            key: value.as_string(self.conn)
            for key, value in {
                "ledger": sql.Identifier(self._schema, self.names.table),
                "history": sql.Identifier(self._schema, self.names.history),
                "snapshots": sql.Identifier(self._schema, self.names.snapshots),
                "version": sql.Identifier(self._schema, self.names.version),
                "order_index": sql.Identifier(f"{self.names.table}_applied_order"),
                "schema": sql.Identifier(self._schema),
                "format": sql.Literal(LEDGER_VERSION),
                "tool": sql.Literal(DBLEDGER_VERSION),
            }.items()
        }

        # In a statement with parameters, psycopg reads '%' as a placeholder: a schema named
        # "a%b" must be written "a%%b" there, and as it is in the others.
        escaped = {key: value.replace("%", "%%") for key, value in names.items()}

        def compose(text: str) -> bytes:
            return text.format(**(escaped if "%(" in text else names)).encode()

        create = [
            compose(text) for text in (_LEDGER, _ORDER_INDEX, _HISTORY, _SNAPSHOTS, _VERSION, _SET_VERSION)
        ]
        if self.names.schema is not None:
            create.insert(0, compose("CREATE SCHEMA IF NOT EXISTS {schema}"))
        if self._target is not None:  # the first 'up' creates a target schema, as the ledger's
            target = sql.SQL(pgtarget.CREATE_TARGET).format(
                target_name=sql.Literal(self._target), target=sql.Identifier(self._target)
            )
            create.insert(0, target.as_bytes(self.conn))
        return LedgerSQL(
            create=tuple(create),
            upgrade_from_v1=tuple(compose(text) for text in _UPGRADE_FROM_V1),
            upgrade_to_v3=tuple(compose(text) for text in _UPGRADE_TO_V3),
            **{key: compose(text) for key, text in _STATEMENTS.items()},
        )

    @property
    def sql(self) -> LedgerSQL:
        return self._statements

    @property
    def ledger_schema(self) -> str:
        return self._schema

    @property
    def default_schema(self) -> str | None:
        return self._default_schema

    # -- queries ---------------------------------------------------------------------------
    def _fetch(self, query: Query, params: Params = None) -> list[tuple[Any, ...]]:
        self._flush()
        try:
            return self.conn.execute(query, params).fetchall()
        except psycopg.Error as exc:
            raise _database_error(exc) from exc

    def _run(self, query: Query, params: Params = None) -> None:
        if self._writing:
            self._queued.append((query, params))
            return
        self._flush()
        try:
            self.conn.execute(query, params)
        except psycopg.Error as exc:
            raise _database_error(exc) from exc

    def _run_many(self, query: Query, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self._flush()
        try:
            with self.conn.cursor() as cursor:
                cursor.executemany(query, rows)
        except psycopg.Error as exc:
            raise _database_error(exc) from exc

    def _foreign_columns(self, parts: list[str]) -> list[str]:
        name = sql.Identifier(*parts).as_string(self.conn)  # to_regclass parses quoted names
        return [column for (column,) in self._fetch(_FOREIGN_COLUMNS, (name,))]

    def _select_all(self, parts: list[str], columns: list[str]) -> Query:
        return sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(*parts)
        )

    def _ledger_layout(self) -> dict[str, frozenset[str]]:
        found = self._fetch(_LAYOUT, (self._schema, list(self.names.tables)))
        return {name: frozenset(columns) for name, columns in found}

    def _timestamp_text(self, value: Any) -> str:
        when: datetime = value
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _applied_at_text(self, value: Any) -> str | None:
        return None if value is None else str(value.isoformat(timespec="milliseconds"))

    def write(self, event: LedgerEvent) -> None:
        # Inside a transaction the ledger row and its history row wait for the next statement
        # of this connection, or go with the COMMIT: a migration's ledger writes and its commit
        # cost one round trip (psycopg's pipeline mode), not three.
        self._writing = True
        try:
            super().write(event)
        finally:
            self._writing = False
        if not self.in_transaction():
            self._flush()

    def _flush(self) -> None:
        """Send the queued ledger writes before anything else goes to the server."""
        if self._queued:
            try:
                self._send_queued()
            except psycopg.Error as exc:
                raise _database_error(exc) from exc

    def _send_queued(self, then: bytes | None = None) -> None:
        """The queued ledger writes, and ``then`` after them, in one round trip."""
        queued, self._queued = self._queued, []
        with self.conn.pipeline():
            for query, params in queued:
                self.conn.execute(query, params)
            if then is not None:
                self.conn.execute(then)

    # -- transactions and statements -------------------------------------------------------
    def _begin(self, limits: WaitLimits | None = None) -> None:
        if limits is None:
            self._run(b"BEGIN")
            return
        # One round trip: the limits hold for this transaction only (SET LOCAL), and the backend
        # that runs it is asked for its pid, which a pooler may change from one transaction to
        # the next (the wait watcher asks about that pid).
        try:
            cursor = self.conn.execute(
                b"BEGIN; " + _limits_sql(limits, local=True) + b"; SELECT pg_backend_pid()"
            )
            while cursor.nextset():
                pass
            row = cursor.fetchone()
        except psycopg.Error as exc:
            raise _database_error(exc) from exc
        self._working_pid = int(row[0]) if row else self.pid

    def _commit(self) -> None:
        # Explicit COMMIT on the autocommit connection, so an error raised by COMMIT itself (a
        # deferred constraint) is told apart from one raised inside. The queued ledger writes go
        # with it: an error of theirs is reported as the COMMIT's, the database's words naming
        # the ledger table.
        try:
            if self._queued:
                self._send_queued(then=b"COMMIT")
            else:
                self.conn.execute(b"COMMIT")
        except psycopg.Error as exc:
            raise _statement_error(exc, COMMIT_STATEMENT) from exc

    def _rollback(self) -> None:
        self._queued = []  # the ledger writes of the transaction rolled back
        with suppress(psycopg.Error):  # a dead connection has rolled back already
            self.conn.execute(b"ROLLBACK")

    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != pq.TransactionStatus.IDLE

    def execute(self, statement: Statement) -> None:
        self._flush()
        try:
            # bytes: migration bodies are free-form SQL, sent as they are with no parameters.
            self.conn.execute(statement.sql.encode())
        except psycopg.Error as exc:
            raise _statement_error(exc, statement, lost=self.conn.broken) from exc

    def limit_waits(self, limits: WaitLimits, *, local: bool = False) -> None:
        if local:
            self._run(_limits_sql(limits, local=True))
            return
        if self._proxied:  # a session setting would stay on a server connection others share
            return
        self._run(_limits_sql(limits, local=False))
        self._working_pid = self.pid

    @contextmanager
    def watching_waits(self, limits: WaitLimits) -> Iterator[None]:
        # No lock timeout: nothing will ask who blocked. Through a pooler outside a transaction,
        # the backend that will run the statement is not known: better no names than wrong ones.
        if limits.lock_timeout_ms == 0 or (self._proxied and not self.in_transaction()):
            yield
            return
        if self._watcher is None:
            from dbledger.backends.pgwaits import WaitWatcher

            self._watcher = WaitWatcher(lambda: _connect(self.database, None))
        self._watcher.arm(self._working_pid, limits.lock_timeout_ms / 2000)
        try:
            yield
        finally:
            self._watcher.disarm()

    def blockers(self) -> tuple[str, ...]:
        return self._watcher.seen if self._watcher is not None else ()

    def reset_session(self, *, within_transaction: bool = False) -> None:
        # Every part of it may run inside a transaction too; one round trip with the setting the
        # reset takes away.
        self._run(_RESET_SESSION + b"; " + _CHECK_CLIENT if self._checks_client else _RESET_SESSION)

    def restore_identity(self) -> None:
        self._run(b"SET SESSION AUTHORIZATION DEFAULT; RESET ROLE")

    def check_deferred(self) -> None:
        # IMMEDIATE checks what is outstanding now (the docs: "retroactively"); DEFERRED then
        # lets the next migration defer as its own transaction would have.
        self._run(b"SET CONSTRAINTS ALL IMMEDIATE")
        self._run(b"SET CONSTRAINTS ALL DEFERRED")

    # -- the lock --------------------------------------------------------------------------
    def _lock_key(self) -> int:
        """A signed 64-bit key from database + schema + ledger table, so two ledgers in one
        cluster (other database, other schema, other name) never wait on each other."""
        import hashlib  # only when the lock is taken

        digest = hashlib.sha256(f"dbledger:{self.dbname}.{self._schema}.{self.names.table}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def _key_parts(self) -> tuple[int, int]:
        unsigned = self._lock_key() & 0xFFFFFFFFFFFFFFFF
        return unsigned >> 32, unsigned & 0xFFFFFFFF

    def _try_lock(self) -> bool:
        if not self._checks_client and self.conn.info.server_version >= 140000:
            self._run(_CHECK_CLIENT)
            self._checks_client = True
        if self._lease is None and self._wants_lease():
            from dbledger.backends.pglease import Lease

            reconnect = lambda: _connect(self.database, None)  # noqa: E731 -- the heartbeat's own
            self._lease = Lease(self.conn, reconnect, self._schema, self.names.lock, self.lease_ttl)
        if self._lease is not None:
            try:
                taken = self._lease.try_take()
            except psycopg.Error as exc:  # no right to create the lease table, say
                raise _database_error(exc) from exc
            if not taken:
                return False
            # A run on a direct connection may hold the advisory lock: then this one waits too.
            if self.lock_holders() - {self.lock_token}:
                self._lease.release()
                return False
            return True
        try:
            got = self._fetch(
                "SELECT pg_try_advisory_lock(%s), to_regclass(%s) IS NOT NULL",
                (self._lock_key(), sql.Identifier(self._schema, self.names.lock).as_string(self.conn)),
            )
        except DatabaseError as exc:
            if exc.sqlstate != "42883" or self.lock_mode != "auto":  # 42883: no such function
                raise
            self.on_note('this database has no advisory locks: using the lease lock (lock = "lease")')
            self.lock_mode = "lease"
            return self._try_lock()
        if not (got and got[0][0]):
            return False
        if got[0][1] and self._live_lease() is not None:  # a run through a pooler holds the lease
            self._unlock()
            return False
        return True

    def _wants_lease(self) -> bool:
        """Whether this run excludes the others with the lease: asked for, or (auto) the
        connection is seen to pass through a pooler or proxy, which a session lock cannot cross."""
        if self.lock_mode == "advisory":
            return False
        from dbledger.backends.pglease import through_proxy

        try:
            reason = through_proxy(self.conn)
        except (psycopg.Error, OSError):  # cannot tell: the lock mode decides alone
            reason = None
        self._proxied = reason is not None
        if self.lock_mode == "lease":
            return True
        if reason is None:
            return False
        self.on_note(f'{reason}: using the lease lock (set lock = "advisory" to use a session lock)')
        return True

    def _lease_row(self) -> tuple[Any, ...] | None:
        """The live lease (owner, token, seconds since its heartbeat, seconds left), or None when
        it is free or its table does not exist (asked first: no error in the server's log)."""
        from dbledger.backends.pglease import LIVE_LEASE

        name = sql.Identifier(self._schema, self.names.lock)
        exists = self._fetch("SELECT to_regclass(%s) IS NOT NULL", (name.as_string(self.conn),))
        if not exists[0][0]:
            return None
        found = self._fetch(sql.SQL(LIVE_LEASE).format(name))
        return found[0] if found else None

    def _live_lease(self) -> str | None:
        row = self._lease_row()
        return None if row is None else str(row[0])

    def _fence(self) -> None:
        if self._lease is not None:
            self._lease.fence()

    def _unlock(self) -> None:
        if self._lease is not None and self._lease.token is not None:
            self._lease.release()
            return
        with suppress(psycopg.Error):  # a broken connection has released the lock with the session
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (self._lock_key(),))

    @property
    def lock_token(self) -> str:
        if self._lease is not None:
            return f"lease {self._lease.owner}"
        return f"backend {self.pid}"

    def lock_holders(self) -> frozenset[str]:
        held = {f"backend {row[0]}" for row in self._fetch(_LOCK_HOLDERS, self._key_parts())}
        owner = self._live_lease()
        return frozenset(held | ({f"lease {owner}"} if owner is not None else set()))

    def describe_holder(self) -> str:
        from dbledger.backends.pglease import describe_lease

        found = self._fetch(_LOCK_HOLDERS, self._key_parts())
        if not found:
            lease = self._lease_row()
            return "a session that has just released it" if lease is None else describe_lease(*lease)
        pid, app, user, addr, started, state = found[0]
        where = f" from {addr}" if addr else ""
        return (
            f"backend pid {pid} ({app or 'no application_name'}, user {user}{where}, connected "
            f"{started:%Y-%m-%d %H:%M:%S %Z}, {state})"
        )

    # -- the database as a whole (or the target schema in it) ------------------------------
    @property
    def target_schema(self) -> str | None:
        return self._target

    def user_tables(self) -> list[str]:
        found = self._fetch(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p', 'v', 'm')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
            " AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast_temp%%'"
            " AND NOT (n.nspname = %s AND c.relname = ANY(%s))"
            " AND (%s::text IS NULL OR n.nspname = %s)"  # the target schema alone, when there is one
            # tables that come with an extension (pg_stat_statements, postgis) are not the user's
            " AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = c.oid AND e.deptype = 'e')"
            " ORDER BY 1",
            (self._schema, list(self.names.tables), self._target, self._target),
        )
        return [name for (name,) in found]

    def schema_signature(self) -> frozenset[tuple[str, str, str]]:
        from dbledger.schema.introspect_postgres import ledger_condition, scope_condition

        condition = ledger_condition(self.conn, self._schema, self.names.tables)
        text = _SIGNATURE.replace("/*not-ledger*/", condition)
        found = self._fetch(text.replace("/*in-scope*/", scope_condition(self.conn, self._target)).encode())
        return frozenset((kind, name, definition or "") for kind, name, definition in found)

    @contextmanager
    def scratch(self) -> Iterator[Backend]:
        import secrets

        name = f"dbledger_scratch_{secrets.token_hex(6)}"
        try:
            self.conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise DbledgerError(
                f"cannot create a scratch database: {_first_line(exc)}: comparing with the migrations "
                "replays them on a temporary database; grant this user CREATEDB (ALTER ROLE ... "
                "CREATEDB), or give an empty database with --shadow-url"
            ) from None
        try:
            # The same options (search_path) and --schema: a target's replay runs where its own did.
            url = psycopg.conninfo.make_conninfo(self.database.url, dbname=name)
            scratch = Database(
                url=url, dialect="postgresql", display=f"scratch database {name}", schema=self.database.schema
            )
            with PostgresBackend(scratch, self.names) as other:
                assert isinstance(other, PostgresBackend)  # __enter__ is typed as Backend's
                if self._target is not None:
                    try:
                        pgtarget.furnish_scratch(self.conn, other.conn, self._target)
                    except psycopg.Error as exc:
                        raise _database_error(exc) from exc
                yield other
        finally:
            force = sql.SQL(" WITH (FORCE)") if self.conn.info.server_version >= 130000 else sql.SQL("")
            with suppress(psycopg.Error):
                self.conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))

    def introspect(self) -> SchemaModel:
        from dbledger.schema.introspect_postgres import introspect_postgres

        try:
            return introspect_postgres(self.conn, self._schema, self.names.tables, schema=self._target)
        except psycopg.Error as exc:
            raise _database_error(exc) from exc

    def take_backup(self, directory: Path, label: str) -> Backup:
        from dbledger.backup import dump_postgres

        return dump_postgres(
            self.database,
            directory,
            label=label,
            schema=self._target,
            server_version=self.conn.info.server_version,
        )

    def replay_address(self, database: Database) -> Database:
        if self._target is None:
            return database
        try:
            given = conninfo.conninfo_to_dict(database.url).get("options") or os.environ.get("PGOPTIONS")
        except psycopg.ProgrammingError:  # connecting says what is wrong with it
            return database
        options = pgtarget.with_search_path(str(given) if given else None, self._search_path)
        url = conninfo.make_conninfo(database.url, options=options)
        return Database(url=url, dialect="postgresql", display=database.display)

    def prepare_replay(self) -> None:
        if self._target is not None:
            try:
                pgtarget.create_target(self.conn, self._target)
            except psycopg.Error as exc:
                raise _database_error(exc) from exc

    def catalog(self) -> PostgresCatalog:
        from dbledger.analysis import PostgresCatalog  # pglast: lazily

        return PostgresCatalog(self.conn)

    def annotator(self, *, calibrate: bool = False, live: bool = False) -> Annotator:
        from dbledger.backends.pganalysis import PostgresAnnotator, learned_scale  # pglast: lazily

        scale = learned_scale(self.history()) if calibrate else 1.0
        return PostgresAnnotator(self.conn, scale=scale, live=live)

    def close(self) -> None:
        if self._lease is not None:
            self._lease.release()
        if self._watcher is not None:
            self._watcher.close()
        self.conn.close()


def _limits_sql(limits: WaitLimits, *, local: bool) -> bytes:
    scope = b"SET LOCAL " if local else b"SET "
    text = scope + b"lock_timeout = %d" % limits.lock_timeout_ms
    if limits.statement_timeout_ms:  # none asked for: the role's or the server's own stays
        text += b"; " + scope + b"statement_timeout = %d" % limits.statement_timeout_ms
    if limits.transaction_timeout_ms:  # PostgreSQL 17+: the preflight refused it before
        text += b"; " + scope + b"transaction_timeout = %d" % limits.transaction_timeout_ms
    return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__, secrets=True)


def _database_error(exc: psycopg.Error) -> DbledgerError:
    """A driver error on one of dbledger's own queries. A connection that broke is unavailable."""
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return DatabaseUnavailable(f"lost the connection to the database: {_first_line(exc)}")
    return DatabaseError(_first_line(exc), sqlstate=exc.sqlstate)


def _statement_error(exc: psycopg.Error, statement: Statement, *, lost: bool = False) -> DatabaseError:
    diag: Any = exc.diag
    primary = diag.message_primary or _first_line(exc)
    line = statement.line
    if diag.statement_position and statement is not COMMIT_STATEMENT:
        # A syntax error points at a character of the statement: report that line of the file.
        position = int(diag.statement_position) - 1
        line += statement.sql[:position].count("\n")
    parts = [f"{exc.sqlstate}: {primary}" if exc.sqlstate else primary]
    if diag.message_detail:
        parts.append(f"DETAIL: {diag.message_detail}")
    if diag.message_hint:
        parts.append(f"HINT: {diag.message_hint}")
    if statement is COMMIT_STATEMENT:
        parts.append(
            "raised at COMMIT, the end of the migration's transaction "
            "(deferred constraints are checked there)"
        )
    else:
        at = f"line {statement.line}" + (f", error at line {line}" if line != statement.line else "")
        # Redacted before it is cut: a cut inside PASSWORD '...' would leave no closing quote.
        parts.append(f"statement at {at}: {_abbreviate(redact(statement.sql))}")
    return DatabaseError(
        redact("\n".join(parts)),
        sqlstate=exc.sqlstate,
        connection_lost=lost,
        statement=Statement(statement.sql, line),
    )


def _abbreviate(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
