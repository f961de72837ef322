"""The target of a PostgreSQL connection: the whole database, or one schema in it.

A schema-per-tenant database keeps each tenant's objects in a schema of its own, and runs each
tenant's migrations with ``search_path`` set to it. dbledger then works on that schema alone: the
ledger lives in it, so the lock key names it; the existing-schema check, the schema signature of
``baseline``, introspection (``drift``, ``status``, ``dump``, the recorded schema) and the backup's
pg_dump see nothing else. Tenants never see or wait for one another.

The target is the schema ``--schema`` names (the connection's search_path is then set to that
schema alone), else the first schema of a search_path the connection itself sets
(``options=-csearch_path=X`` in the URL, or ``PGOPTIONS``). A search_path from the role's or the
database's settings is the server's default, not this connection's choice: without one of the
two, the target is the whole database, whose migrations may create schemas of their own.

Replays (``drift --replay``, ``baseline --verify``, the existing-schema advice) run on a scratch
database with the same search_path, in a schema of the same name, so the models compare equal;
the scratch also gets the extensions the live database has outside the target, which the tenant
uses but its migrations do not create.
"""

from __future__ import annotations

import re
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import sql

# A search_path among the connection's startup options: -c search_path=X, -csearch_path=X,
# --search_path=X or --search-path=X (setting names are case-insensitive).
_SETS_SEARCH_PATH = re.compile(r"(?:-c\s*|--)search[_-]path=", re.IGNORECASE)
_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# The extensions of the live database outside the target, oldest first (an extension that needs
# another comes after it). plpgsql is in every database already.
_EXTENSIONS_ELSEWHERE = """
SELECT x.extname, n.nspname FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace
WHERE n.nspname <> %s AND x.extname <> 'plpgsql' ORDER BY x.oid
"""
# IF NOT EXISTS alone is not enough: PostgreSQL checks the right to create schemas in the
# database before it looks for the schema, and a tenant's role often owns its schema only.
CREATE_TARGET = (
    "DO $dbledger$ BEGIN IF NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = {target_name})"
    " THEN CREATE SCHEMA {target}; END IF; END $dbledger$"
)


def sets_search_path(options: str | None) -> bool:
    """Whether the connection's startup ``options`` (the URL's, else ``PGOPTIONS``) set search_path."""
    return bool(options and _SETS_SEARCH_PATH.search(options))


def with_search_path(options: str | None, search_path: str) -> str:
    """Startup options that set ``search_path``, after (so over) any in ``options``."""
    escaped = re.sub(r"([\s\\])", r"\\\1", search_path)  # libpq splits options at blanks
    return f"{options} -c search_path={escaped}" if options else f"-c search_path={escaped}"


def path_schemas(search_path: str) -> list[str]:
    """The schema names of a search_path as PostgreSQL reads them: a name in double quotes as it
    is (``""`` for a quote), another folded to lower case."""
    names: list[str] = []
    rest = search_path.strip()
    while rest:
        if rest.startswith('"'):
            found = re.match(r'"((?:[^"]|"")*)"', rest)
            name, rest = (found.group(1).replace('""', '"'), rest[found.end() :]) if found else (rest, "")
        else:
            name, comma, rest = rest.partition(",")
            name, rest = name.strip().translate(_ASCII_UPPER), comma + rest
        names.append(name)
        rest = rest.strip().removeprefix(",").strip()
    return names


def first_schema(search_path: str, user: str) -> str | None:
    """The schema a search_path names first, the implicit ones (pg_catalog, pg_temp) passed by and
    ``$user`` read as ``user``; None for an empty path."""
    for name in path_schemas(search_path):
        if name == "$user":
            return user
        if name and name != "pg_catalog" and not name.startswith("pg_temp"):
            return name
    return None


def target_of(explicit: str | None, options: str | None, search_path: str, user: str) -> str | None:
    """The connection's target schema: ``explicit`` (``--schema``), else the first schema of the
    ``search_path`` its startup ``options`` set; None: the whole database."""
    if explicit is not None:
        return explicit
    return first_schema(search_path, user) if sets_search_path(options) else None


def search_path_source(conn: psycopg.Connection[Any]) -> str:
    """Where the session's search_path came from: ``client`` when the startup options set it.
    Asked only of a connection whose options set it: a pooler (PgBouncer) may drop them."""
    row = conn.execute("SELECT source FROM pg_settings WHERE name = 'search_path'").fetchone()
    return str(row[0]) if row else "default"


def create_target(conn: psycopg.Connection[Any], target: str) -> None:
    """Create the ``target`` schema when it does not exist (in the open transaction, if any)."""
    conn.execute(
        sql.SQL(CREATE_TARGET).format(target_name=sql.Literal(target), target=sql.Identifier(target))
    )


def furnish_scratch(live: psycopg.Connection[Any], scratch: psycopg.Connection[Any], target: str) -> None:
    """Make an empty scratch database ready to replay the target's migrations: the extensions
    ``live`` has outside the target, each in its schema, then the target schema itself."""
    for name, schema in live.execute(_EXTENSIONS_ELSEWHERE, (target,)).fetchall():
        # Best effort (an extension may need a superuser): a replay that needs it fails naming it.
        with suppress(psycopg.Error):
            scratch.execute(
                sql.SQL(
                    "CREATE SCHEMA IF NOT EXISTS {schema}; "
                    "CREATE EXTENSION IF NOT EXISTS {name} WITH SCHEMA {schema} CASCADE"
                ).format(schema=sql.Identifier(schema), name=sql.Identifier(name))
            )
    create_target(scratch, target)
