"""Copy a live PostgreSQL database into a scratch database on the same server, for a rehearsal.

    copy = make_copy(database, method="auto")
    ...                          # connect to copy.database, migrate it, look at it
    drop_copy(copy)

Two ways; ``method="auto"`` tries them in this order:

* ``CREATE DATABASE scratch TEMPLATE live``: a file-level copy of everything (data, statistics,
  hint bits), the fastest. PostgreSQL allows it only while no other session is connected to the
  live database: it waits up to 5 s for them to leave, then fails with SQLSTATE 55006, which is
  what a busy database answers. It also needs the live database's owner or a superuser (42501).
* ``pg_dump | pg_restore``: a consistent snapshot from pg_dump of the server's own major version,
  streamed into a new database made like the live one (encoding, collation, locale provider);
  then ``VACUUM ANALYZE``, so the catalog's row counts (which the dry run's estimates read) and
  the visibility map are those of a database that has lived. With ``schema_only``, only the
  tables named in ``keep_data`` (dbledger's own) keep their rows.

Nothing is written to the live database: the copy only reads it, and ``CREATE``/``DROP DATABASE``
run on a connection to another database of the server (``postgres``, else ``template1``). pg_dump
and pg_restore get the password in their environment, never on their command line.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from dbledger.backup import client_programs, without_password
from dbledger.config import Database, parse_database_url
from dbledger.errors import BackupFailed, ConfigError, DatabaseUnavailable, DbledgerError
from dbledger.redaction import redact

if TYPE_CHECKING:
    import psycopg

__all__ = ["COPY_METHODS", "ScratchCopy", "connect", "drop_copy", "make_copy"]

COPY_METHODS = ("auto", "template", "pg_dump")
PREFIX = "dbledger_rehearsal_"


@dataclass(frozen=True)
class ScratchCopy:
    """A scratch database holding a copy of the live one. ``database`` connects to it (its
    ``display`` is the redacted URL); ``method`` is "template" or "pg_dump"; ``note`` says why
    the template copy was not used, when it was tried and refused."""

    name: str
    database: Database
    method: str
    schema_only: bool
    seconds: float
    server_version: int
    note: str | None = None


class _Live(NamedTuple):
    """What the copy needs to know of the live database, read on one short connection."""

    name: str
    version: int  # server_version_num, e.g. 150004
    encoding: str
    collate: str
    ctype: str
    provider: str  # "c" libc, "i" ICU, "b" builtin (PostgreSQL 17)
    locale: str | None  # the ICU or builtin locale
    tables: tuple[tuple[str, str], ...]  # (schema, table) of every user table


def connect(
    database: Database, connect_timeout: float | None = None, **changes: str
) -> psycopg.Connection[Any]:
    """A connection in autocommit to ``database``, or to another database of its server with
    ``dbname=...``; DatabaseUnavailable with libpq's reason (redacted) when it cannot be made."""
    import psycopg

    bound: dict[str, Any] = dict(changes)
    if connect_timeout is not None:
        bound["connect_timeout"] = int(connect_timeout)
    try:
        return psycopg.connect(database.url, autocommit=True, application_name="dbledger", **bound)
    except psycopg.Error as exc:
        where = changes.get("dbname")
        target = database.display + (f" (database {where!r})" if where else "")
        reason = redact(str(exc).strip().splitlines()[0], secrets=True)
        raise DatabaseUnavailable(f"cannot connect to {target}: {reason}") from None


def make_copy(
    live: Database,
    *,
    method: str = "auto",
    schema_only: bool = False,
    keep_data: Iterable[tuple[str, str]] = (),
    connect_timeout: float | None = None,
    note: Callable[[str], None] = lambda text: None,
) -> ScratchCopy:
    """Copy ``live`` into a new scratch database on its server (see the module docstring);
    ``note`` is told which way is taken and why. ``schema_only`` always takes pg_dump: a template
    copy would copy every row."""
    if method not in COPY_METHODS:
        raise ConfigError(f"invalid copy method {method!r}: choose one of {', '.join(COPY_METHODS)}")
    if schema_only and method == "template":
        raise ConfigError(
            "--schema-only copies the schema with pg_dump, but --copy template copies every row: "
            "leave out one of them"
        )
    facts = _read_live(live, connect_timeout)
    name = PREFIX + secrets.token_hex(6)
    scratch = _address(live, name)
    started = time.monotonic()
    refused: str | None = None
    with connect(live, connect_timeout, dbname=_maintenance(facts.name)) as admin:
        _check_createdb(admin, live)
        if method != "pg_dump" and not schema_only:
            refused = _template_copy(admin, name, facts.name)
            if refused is None:
                return ScratchCopy(
                    name, scratch, "template", False, time.monotonic() - started, facts.version
                )
            if method == "template":
                raise DbledgerError(
                    f"cannot copy {live.display} with CREATE DATABASE ... TEMPLATE: {refused}; "
                    "run with --copy pg_dump (or --copy auto, which falls back to it)"
                )
            note(f"CREATE DATABASE ... TEMPLATE refused ({refused}): copying with pg_dump instead")
        tools = _pg_tools(facts.version)  # before the scratch database exists: nothing to undo
        admin.execute(_create_like(name, facts))
    try:
        _dump_restore(live, scratch, tools, facts, schema_only, set(keep_data))
        with connect(scratch, connect_timeout) as conn:
            conn.execute("VACUUM ANALYZE")
    except BaseException:
        drop_copy(scratch, connect_timeout)
        raise
    return ScratchCopy(
        name, scratch, "pg_dump", schema_only, time.monotonic() - started, facts.version, refused
    )


def drop_copy(scratch: ScratchCopy | Database, connect_timeout: float | None = None) -> None:
    """Drop the scratch database (every session on it is ended first)."""
    database = scratch.database if isinstance(scratch, ScratchCopy) else scratch
    name = _dbname(database)
    if not name.startswith(PREFIX):  # a guard: this function drops only what make_copy made
        raise DbledgerError(f"refusing to drop {database.display}: not a rehearsal's scratch database")
    from psycopg import sql

    with connect(database, connect_timeout, dbname=_maintenance(name)) as admin:
        force = sql.SQL(" WITH (FORCE)") if admin.info.server_version >= 130000 else sql.SQL("")
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))


# -- the live database ---------------------------------------------------------------------------

_LIVE = """
SELECT current_database(), current_setting('server_version_num')::int,
       pg_encoding_to_char(d.encoding), d.datcollate, d.datctype
FROM pg_database d WHERE d.datname = current_database()
"""
_PROVIDER = {  # the locale provider's columns, by the first version that has them
    170000: "SELECT datlocprovider::text, datlocale FROM pg_database WHERE datname = current_database()",
    150000: "SELECT datlocprovider::text, daticulocale FROM pg_database WHERE datname = current_database()",
}
_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
ORDER BY 1, 2
"""


def _read_live(live: Database, connect_timeout: float | None) -> _Live:
    """The live database's facts, on a connection closed before any copy: a session of our own
    on it would make the template copy fail."""
    import psycopg

    with connect(live, connect_timeout) as conn:
        try:
            row = conn.execute(_LIVE).fetchone()
            assert row is not None
            name, version, encoding, collate, ctype = row
            provider, locale = "c", None
            for since, query in _PROVIDER.items():
                if version >= since:
                    found = conn.execute(query.encode()).fetchone()
                    assert found is not None
                    provider, locale = found
                    break
            tables = tuple((str(s), str(t)) for s, t in conn.execute(_TABLES))
        except psycopg.Error as exc:
            raise DbledgerError(f"cannot read {live.display}: {redact(str(exc).strip())}") from None
    return _Live(str(name), int(version), encoding, collate, ctype, provider, locale, tables)


def _maintenance(live_name: str) -> str:
    """The database to run CREATE and DROP DATABASE from: not the live one (a session there
    would stop the template copy), and ``postgres`` before ``template1``, because a session on
    template1 makes every other client's plain CREATE DATABASE fail while it lasts."""
    return "template1" if live_name == "postgres" else "postgres"


def _check_createdb(admin: psycopg.Connection[Any], live: Database) -> None:
    row = admin.execute(
        "SELECT current_user, rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if row is not None and not row[1]:
        raise DbledgerError(
            f"cannot rehearse on {live.display}: role {row[0]!r} may not create databases, and a "
            f"rehearsal runs on a scratch copy: grant it (ALTER ROLE {row[0]} CREATEDB), or run with "
            "a role that may"
        )


def _template_copy(admin: psycopg.Connection[Any], name: str, live_name: str) -> str | None:
    """CREATE DATABASE ... TEMPLATE; None when it worked, else why PostgreSQL refused (a busy
    database: 55006; not the owner: 42501). Other errors are raised."""
    import psycopg
    from psycopg import sql

    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
        sql.Identifier(name), sql.Identifier(live_name)
    )
    try:
        admin.execute(statement)
    except psycopg.Error as exc:
        if exc.sqlstate not in ("55006", "42501"):
            raise DbledgerError(f"cannot create a scratch database: {redact(str(exc).strip())}") from None
        detail = (exc.diag.message_detail or "").rstrip(".")
        return f"{exc.diag.message_primary} ({detail + '; ' if detail else ''}SQLSTATE {exc.sqlstate})"
    return None


def _create_like(name: str, facts: _Live) -> Any:
    """CREATE DATABASE for a restore: from template0, with the live database's encoding and
    locale, so sorting, index sizes and comparisons are the live ones."""
    from psycopg import sql

    parts = [
        sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Identifier(name),
            sql.Literal(facts.encoding),
            sql.Literal(facts.collate),
            sql.Literal(facts.ctype),
        )
    ]
    if facts.provider == "i" and facts.locale:
        parts.append(sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(facts.locale)))
    elif facts.provider == "b" and facts.locale:
        parts.append(sql.SQL("LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(sql.Literal(facts.locale)))
    return sql.SQL(" ").join(parts)


# -- pg_dump | pg_restore ------------------------------------------------------------------------


def _pg_tools(server_version: int) -> tuple[Path, Path]:
    """pg_dump and pg_restore of the server's major version (dbledger.backup.client_programs)."""
    try:
        return client_programs(server_version)
    except BackupFailed as exc:
        raise DbledgerError(
            f"cannot copy the database with pg_dump: {exc.message}; or free the live database of "
            "other sessions for --copy template"
        ) from None


def _pattern(schema: str, table: str) -> str:
    """A pg_dump table pattern that matches exactly this table: names in double quotes are taken
    literally (no case folding, no wildcards), a double quote inside doubled."""
    return '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'


def _dump_restore(
    live: Database,
    scratch: Database,
    tools: tuple[Path, Path],
    facts: _Live,
    schema_only: bool,
    keep: set[tuple[str, str]],
) -> None:
    """``pg_dump --format=custom`` of the live database piped into ``pg_restore`` on the scratch
    one, which stops at the first error: a copy that is not whole would rehearse something else."""
    pg_dump, pg_restore = tools
    source, password, _ = without_password(live)
    target, _, _ = without_password(scratch)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    skipped = [f"--exclude-table-data={_pattern(*t)}" for t in facts.tables if schema_only and t not in keep]
    dump_command = [str(pg_dump), "--format=custom", "--no-password", *skipped, f"--dbname={source}"]
    restore_command = [
        str(pg_restore),
        "--no-password",
        # The scratch database belongs to the rehearsing role: the objects do too, and grants to
        # other roles play no part in a migration's time, locks or rewrites.
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        f"--dbname={target}",
    ]
    with tempfile.TemporaryFile() as dump_errors:
        dump = subprocess.Popen(dump_command, stdout=subprocess.PIPE, stderr=dump_errors, env=env)
        assert dump.stdout is not None
        restore = subprocess.Popen(
            restore_command, stdin=dump.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        dump.stdout.close()  # pg_dump sees a closed pipe when pg_restore stops early
        _, restore_errors = restore.communicate()
        dumped = dump.wait()
        dump_errors.seek(0)
        dump_text = dump_errors.read().decode(errors="replace")
    restore_text = restore_errors.decode(errors="replace")
    if restore.returncode != 0:
        raise DbledgerError(
            f"cannot copy {live.display} with pg_dump: {pg_restore} failed (exit {restore.returncode}): "
            f"{redact(restore_text.strip() or dump_text.strip(), secrets=True)}"
        )
    if dumped != 0:
        raise DbledgerError(
            f"cannot copy {live.display}: {pg_dump} failed (exit {dumped}): "
            f"{redact(dump_text.strip(), secrets=True)}"
        )


# -- addresses -----------------------------------------------------------------------------------


def _address(live: Database, name: str) -> Database:
    """The scratch database's address: the live one's with another database name (and the same
    options, so a --schema target's search_path holds there too)."""
    import psycopg

    parts = urlsplit(live.url)
    if parts.scheme in ("postgresql", "postgres") and "dbname" not in parse_qs(parts.query):
        url = urlunsplit(parts._replace(path="/" + quote(name)))
    else:
        url = psycopg.conninfo.make_conninfo(live.url, dbname=name)
    return replace(parse_database_url(url), schema=live.schema)


def _dbname(database: Database) -> str:
    import psycopg

    return str(psycopg.conninfo.conninfo_to_dict(database.url).get("dbname") or "")
