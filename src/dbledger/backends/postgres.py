"""PostgreSQL through psycopg 3.

The connection stays in autocommit: transactions are opened explicitly around each migration, and
``transaction:false`` statements (``CREATE INDEX CONCURRENTLY``) run on their own. The migration
lock is a session-level advisory lock taken by *polling* ``pg_try_advisory_lock``. A waiter blocked
inside ``pg_advisory_lock`` is a running statement with an open snapshot, and the holder's
``CREATE INDEX CONCURRENTLY`` waits for every such snapshot to end while the waiter waits for the
holder: a deadlock (the bug known from golang-migrate and older Flyway). A poll from autocommit
holds nothing between tries.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq, sql

from dbledger.backends.base import COMMIT_STATEMENT, Backend, Statement, StatementError, poll_intervals
from dbledger.config import Database
from dbledger.errors import ConfigError, DatabaseUnavailable, DbledgerError, LockTimeout, foreign_ledger
from dbledger.ledger import DBLEDGER_VERSION, HISTORY_TABLE, LEDGER_TABLE, SCHEMA_TABLE, Action, State, actor
from dbledger.migrations import Section
from dbledger.plan import APPLIED_STATES, LedgerRow
from dbledger.redaction import redact

# Statement templates; {ledger} and {history} become schema-qualified names at connect time, so a
# migration that changes search_path cannot send the ledger writes to another schema.

if TYPE_CHECKING:
    from dbledger.dryrun import Annotator
    from dbledger.schema import SchemaModel

_CREATE_LEDGER = sql.SQL("""
CREATE TABLE IF NOT EXISTS {ledger} (
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
    dbledger_version TEXT
);
CREATE TABLE IF NOT EXISTS {history} (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    action TEXT NOT NULL,
    migration_name VARCHAR(255),
    checksum VARCHAR(64),
    execution_time_ms INTEGER,
    error_message TEXT,
    detail TEXT,
    actor TEXT,
    dbledger_version TEXT
);
""")

_READ_LEDGER = sql.SQL(
    "SELECT migration_name, version, state, checksum, applied_at, execution_time_ms, success,"
    " error_message FROM {ledger} ORDER BY id"
)

_RECORD = sql.SQL("""
INSERT INTO {ledger} AS l (migration_name, version, state, checksum, execution_time_ms, success,
                     error_message, applied_by, dbledger_version)
VALUES (%(name)s, %(version)s, %(state)s, %(checksum)s, %(ms)s, %(success)s, %(error)s,
        %(actor)s, %(tool)s)
ON CONFLICT (migration_name) DO UPDATE SET
    version = excluded.version, state = excluded.state, checksum = excluded.checksum,
    execution_time_ms = excluded.execution_time_ms, success = excluded.success,
    error_message = excluded.error_message, applied_by = excluded.applied_by,
    dbledger_version = excluded.dbledger_version, applied_at = NOW()
""")

_LOG = sql.SQL("""
INSERT INTO {history} (action, migration_name, checksum, execution_time_ms, error_message, detail,
                actor, dbledger_version)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
""")
_ACCEPT_CHECKSUM = sql.SQL("UPDATE {ledger} SET checksum = %s WHERE migration_name = %s")
_FORGET = sql.SQL("DELETE FROM {ledger} WHERE migration_name = %s")
_HISTORY_ROWS = sql.SQL("SELECT * FROM {history} ORDER BY id")
_CREATE_SCHEMA_TABLE = sql.SQL("""
CREATE TABLE IF NOT EXISTS {snapshots} (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    action TEXT NOT NULL,
    migration_name VARCHAR(255),
    fingerprint VARCHAR(64) NOT NULL,
    model TEXT NOT NULL
)""")
_SAVE_SCHEMA = sql.SQL(
    "INSERT INTO {snapshots} (action, migration_name, fingerprint, model) VALUES (%s, %s, %s, %s)"
)
_LATEST_SCHEMA = sql.SQL("SELECT fingerprint, model FROM {snapshots} ORDER BY id DESC LIMIT 1")

# Every user object with a definition that changes when a migration changes it. Objects that
# belong to an extension are left out (they come with CREATE EXTENSION, not with a migration).
_USER_SCHEMA = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)
_NOT_LEDGER = f"NOT IN ('{LEDGER_TABLE}', '{HISTORY_TABLE}', '{SCHEMA_TABLE}')"
_SIGNATURE = f"""
SELECT 'column', n.nspname || '.' || c.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
  AND {_USER_SCHEMA} AND c.relname {_NOT_LEDGER}
UNION ALL
SELECT 'constraint', n.nspname || '.' || c.relname || '.' || co.conname, pg_get_constraintdef(co.oid)
FROM pg_constraint co
JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_SCHEMA} AND c.relname {_NOT_LEDGER}
UNION ALL
SELECT 'index', n.nspname || '.' || i.relname, pg_get_indexdef(i.oid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE {_USER_SCHEMA} AND c.relname {_NOT_LEDGER}
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
_LOCK_HOLDER = """
SELECT a.pid, a.application_name, a.usename, host(a.client_addr), a.backend_start, a.state
FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid
"""


class PostgresBackend(Backend):
    dialect = "postgresql"

    def __init__(self, database: Database, *, connect_timeout: int = 10) -> None:
        self.database = database
        try:
            self.conn = psycopg.connect(
                database.url,
                autocommit=True,
                connect_timeout=connect_timeout,
                application_name="dbledger",
            )
        except psycopg.Error as exc:
            hint = "; check the user name and password" if "password" in str(exc) else ""
            raise DatabaseUnavailable(
                f"cannot connect to {database.display}: {_first_line(exc)}{hint}"
            ) from None
        row = self.conn.execute("SELECT current_schema(), current_database()").fetchone()
        if row is None or row[0] is None:
            self.conn.close()
            raise ConfigError(
                f"{database.display}: search_path names no existing schema to keep the ledger in: "
                "create the schema, or set search_path for this user"
            )
        self.schema, self.dbname = str(row[0]), str(row[1])
        names = {
            "ledger": sql.Identifier(self.schema, LEDGER_TABLE),
            "history": sql.Identifier(self.schema, HISTORY_TABLE),
            "snapshots": sql.Identifier(self.schema, SCHEMA_TABLE),
        }
        self._create_ledger = _CREATE_LEDGER.format(**names)
        self._read_ledger = _READ_LEDGER.format(**names)
        self._record = _RECORD.format(**names)
        self._log = _LOG.format(**names)
        self._accept_checksum = _ACCEPT_CHECKSUM.format(**names)
        self._forget = _FORGET.format(**names)
        self._history_rows = _HISTORY_ROWS.format(**names)
        self._create_schema_table = _CREATE_SCHEMA_TABLE.format(**names)
        self._save_schema = _SAVE_SCHEMA.format(**names)
        self._latest_schema = _LATEST_SCHEMA.format(**names)

    # -- ledger ---------------------------------------------------------------------------
    def read_ledger(self) -> list[LedgerRow] | None:
        # Inside a transaction a missing table would abort it: read under a savepoint there.
        # Outside one (the cheap path) a plain autocommit query costs a single round trip.
        in_transaction = self.conn.info.transaction_status != pq.TransactionStatus.IDLE
        try:
            with self.conn.transaction() if in_transaction else nullcontext():
                rows = self.conn.execute(self._read_ledger).fetchall()
        except psycopg.errors.UndefinedTable:
            return None
        except psycopg.errors.UndefinedColumn:
            raise foreign_ledger(f"{self.schema}.{LEDGER_TABLE}") from None
        except psycopg.Error as exc:
            raise DbledgerError(f"cannot read the ledger table {LEDGER_TABLE}: {exc}") from exc
        return [
            LedgerRow(
                name=name,
                version=int(version),
                state=state,
                checksum=checksum,
                applied_at=applied_at.isoformat(timespec="milliseconds") if applied_at else None,
                execution_time_ms=ms,
                success=success,
                error_message=error,
            )
            for name, version, state, checksum, applied_at, ms, success, error in rows
        ]

    def ensure_ledger(self) -> None:
        self.conn.execute(self._create_ledger)

    def user_tables(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p', 'v', 'm')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
            " AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast_temp%%'"
            " AND c.relname NOT IN (%s, %s, %s)"
            # tables that come with an extension (pg_stat_statements, postgis) are not the user's
            " AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = c.oid AND e.deptype = 'e')"
            " ORDER BY 1",
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
            self._record,
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
        self.conn.execute(self._accept_checksum, (checksum, name))

    def forget(self, name: str) -> None:
        self.conn.execute(self._forget, (name,))

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
            self._log,
            (action, name, checksum, execution_time_ms, error_message, detail, actor(), DBLEDGER_VERSION),
        )

    def history(self) -> list[dict[str, object]]:
        cur = self.conn.cursor(row_factory=psycopg.rows.dict_row)
        try:
            return list(cur.execute(self._history_rows))
        except psycopg.errors.UndefinedTable:
            return []

    def schema_signature(self) -> frozenset[tuple[str, str, str]]:
        rows = self.conn.execute(_SIGNATURE.encode()).fetchall()
        return frozenset((kind, name, definition or "") for kind, name, definition in rows)

    @contextmanager
    def scratch(self) -> Iterator[Backend]:
        name = f"dbledger_scratch_{secrets.token_hex(6)}"
        try:
            self.conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise DbledgerError(f"cannot create a scratch database: {_first_line(exc)}") from None
        try:
            url = psycopg.conninfo.make_conninfo(self.database.url, dbname=name)
            with PostgresBackend(
                Database(url=url, dialect="postgresql", display=f"scratch database {name}")
            ) as other:
                yield other
        finally:
            force = sql.SQL(" WITH (FORCE)") if self.conn.info.server_version >= 130000 else sql.SQL("")
            with suppress(psycopg.Error):
                self.conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))

    # -- locking and transactions ---------------------------------------------------------
    def _lock_key(self) -> int:
        """A signed 64-bit key from database + schema + ledger table, so two ledgers in one
        cluster (other database, other schema) never wait on each other."""
        digest = hashlib.sha256(f"dbledger:{self.dbname}.{self.schema}.{LEDGER_TABLE}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    @contextmanager
    def migration_lock(self, timeout: float, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        if self.conn.info.server_version >= 140000:
            # If this process dies mid-migration, the server notices within a second and rolls
            # back, releasing the advisory lock, instead of finishing a long statement for nobody.
            # Set here, not at connect: the no-op path never takes the lock and skips the trip.
            self.conn.execute("SET client_connection_check_interval = 1000")
        key = self._lock_key()
        deadline = time.monotonic() + timeout
        intervals = poll_intervals()
        while True:
            got = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if got is not None and got[0]:
                break
            if on_wait is not None:
                on_wait(self._holder(key))
                on_wait = None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(
                    f"gave up after waiting {timeout:g} s for the migration lock on "
                    f"{self.database.display}, held by {self._holder(key)}: wait for it to finish, "
                    "or raise --lock-timeout"
                )
            time.sleep(min(next(intervals), remaining))
        try:
            yield
        finally:
            # A broken connection has released the lock with the session already.
            with suppress(psycopg.Error):
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def _holder(self, key: int) -> str:
        unsigned = key & 0xFFFFFFFFFFFFFFFF
        row = self.conn.execute(_LOCK_HOLDER, (unsigned >> 32, unsigned & 0xFFFFFFFF)).fetchone()
        if row is None:
            return "a session that has just released it"
        pid, app, user, addr, started, state = row
        where = f" from {addr}" if addr else ""
        return (
            f"backend pid {pid} ({app or 'no application_name'}, user {user}{where}, connected "
            f"{started:%Y-%m-%d %H:%M:%S %Z}, {state})"
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # Explicit BEGIN/COMMIT on the autocommit connection, so an error raised by COMMIT itself
        # (a deferred constraint) is told apart from one raised inside.
        self.conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            with suppress(psycopg.Error):  # a dead connection has rolled back already
                self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise _statement_error(exc, COMMIT_STATEMENT) from exc

    # -- running SQL ----------------------------------------------------------------------
    def split(self, section: Section) -> list[Statement]:
        from dbledger.backends.pgsplit import split_statements

        return split_statements(section.sql, section.line)

    def execute(self, statement: Statement) -> None:
        try:
            # bytes: migration bodies are free-form SQL, sent as they are with no parameters.
            self.conn.execute(statement.sql.encode())
        except psycopg.Error as exc:
            raise _statement_error(exc, statement) from exc

    def save_schema(self, action: str, name: str | None, fingerprint: str, model: str) -> None:
        self.conn.execute(self._create_schema_table)
        self.conn.execute(self._save_schema, (action, name, fingerprint, model))

    def latest_schema(self) -> tuple[str, str] | None:
        try:
            row = self.conn.execute(self._latest_schema).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
        return None if row is None else (str(row[0]), str(row[1]))

    def introspect(self) -> SchemaModel:
        from dbledger.schema.introspect_postgres import introspect_postgres

        return introspect_postgres(self.conn)

    def annotator(self, *, calibrate: bool = False) -> Annotator:
        from dbledger.backends.pganalysis import PostgresAnnotator, learned_scale  # pglast: lazily

        return PostgresAnnotator(self.conn, scale=learned_scale(self.history()) if calibrate else 1.0)

    def close(self) -> None:
        self.conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__, secrets=True)


def _statement_error(exc: psycopg.Error, statement: Statement) -> StatementError:
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
        parts.append(f"statement at {at}: {_abbreviate(statement.sql)}")
    return StatementError(
        redact("\n".join(parts)),
        sqlstate=exc.sqlstate,
        statement=Statement(statement.sql, line),
    )


def _abbreviate(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
