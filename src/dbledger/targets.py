"""Where a fleet's targets come from (``--all``): ``[tool.dbledger] targets``, a file
(``--targets-file``: one a line, ``#`` comments), or a query on the main database
(``--targets-query``: one column). Each entry is a database URL (a libpq key/value string too),
or the name of a schema of the main database (``--database-url``), which the API reaches with its
``schema`` (the connection's search_path set to it). Every list is checked whole before any
target is touched: an entry that is neither a URL nor a schema name, a target listed twice, an
empty list, a query that fails are errors naming the file and line, the key, or the row.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from dbledger.config import (
    DEFAULT_CONNECT_TIMEOUT,
    Database,
    check_schema_name,
    parse_database_url,
    project_targets,
    resolve,
)
from dbledger.errors import ConfigError, DatabaseUnavailable
from dbledger.redaction import redact

__all__ = ["Target", "Targets", "find_targets", "query_targets", "read_targets_file"]

PathLike = str | os.PathLike[str]
# What could be a schema name; check_schema_name then says exactly what a schema name must be.
_SCHEMA_SHAPE = re.compile(r"^[A-Za-z0-9_$-]+$")
# A comment in a targets file: '#' at the start of a line or after white space (a URL's own '#'
# follows no space; a password's must be percent-encoded anyway).
_COMMENT = re.compile(r"(?:^|\s)#.*$")


@dataclass(frozen=True)
class Target:
    """One database, or one schema of a database, of a fleet. ``url`` holds the password: show
    ``label``."""

    url: str
    database: str  # the database, redacted
    schema: str | None
    source: str  # where it was listed: "targets.txt:3", "pyproject.toml: targets[2]", "--targets-query row 4"

    @property
    def label(self) -> str:
        return self.database if self.schema is None else f"{self.database} schema {self.schema}"


class Targets(NamedTuple):
    """The fleet, and where its list came from (for the line saying what a run works on)."""

    targets: list[Target]
    source: str


def parse_target(entry: str, main: Database, source: str) -> Target:
    """A URL or libpq key/value string as it is; a schema name as a schema of the main database
    (the API's ``schema``: the connection's search_path set to it). ``source`` starts every error."""
    text = entry.strip()
    if text.startswith(("postgresql://", "postgres://", "sqlite:")) or ("://" not in text and "=" in text):
        try:
            database = parse_database_url(text)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc.message}") from None
        return Target(database.url, database.display, None, source)
    if not _SCHEMA_SHAPE.match(text):
        raise ConfigError(
            f"{source}: {redact(text)!r} is not a database URL (postgresql://..., sqlite:///...) "
            "nor a schema name"
        )
    schema = check_schema_name(text, source)
    if main.dialect != "postgresql":
        raise ConfigError(
            f"{source}: schema {schema!r} is a schema of the main database, which must be "
            f"PostgreSQL ({main.display} is not): pass --database-url postgresql://... or list URLs"
        )
    return Target(main.url, main.display, schema, source)


def targets_from(entries: Iterable[tuple[str, str]], main: Database) -> list[Target]:
    """Each ``(source, entry)`` as a target; a target listed twice is an error naming both."""
    seen: dict[tuple[str, str | None], str] = {}
    found = []
    for source, entry in entries:
        target = parse_target(entry, main, source)
        key = (target.url, target.schema)
        if key in seen:
            raise ConfigError(f"{source}: duplicate target {target.label!r}: {seen[key]} lists it already")
        seen[key] = source
        found.append(target)
    return found


def read_targets_file(path: PathLike, main: Database) -> list[Target]:
    """One target a line; blank lines and ``#`` comments are skipped."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: not valid UTF-8: save the targets file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the targets file {name!r}: {exc.strerror}") from None
    entries = [
        (f"{name}:{number}", entry)
        for number, line in enumerate(text.splitlines(), start=1)
        if (entry := _COMMENT.sub("", line).strip())
    ]
    if not entries:
        raise ConfigError(
            f"{name}: no targets in the file (only blank lines and comments): give one database URL "
            "or schema name a line"
        )
    return targets_from(entries, main)


def query_targets(sql: str, main: Database, connect_timeout: float | None = None) -> list[Target]:
    """The targets the query returns on the main database, run in a read-only transaction: one
    column, a database URL or a schema name a row."""
    values = _one_column(sql, main, connect_timeout)
    if not values:
        raise ConfigError(f"--targets-query returned no rows on {main.display}: no targets to run")
    entries = []
    for number, value in enumerate(values, start=1):
        if not isinstance(value, str):
            shown = "NULL" if value is None else f"{type(value).__name__} {value!r}"
            raise ConfigError(
                f"--targets-query row {number}: {shown} is not a target: return text, a database URL "
                "or a schema name a row"
            )
        entries.append((f"--targets-query row {number}", value))
    return targets_from(entries, main)


def _one_column(sql: str, main: Database, connect_timeout: float | None) -> list[Any]:
    if main.dialect != "postgresql":
        raise ConfigError(
            f"--targets-query runs on PostgreSQL, and the main database {main.display} is not: pass "
            "--database-url postgresql://..., or list the targets with --targets-file"
        )
    import psycopg  # the query is the user's own, so it goes to the driver as they wrote it

    bound: dict[str, Any] = {}
    if connect_timeout is not None:
        bound["connect_timeout"] = int(connect_timeout)
    elif "connect_timeout" not in main.url and "PGCONNECT_TIMEOUT" not in os.environ:
        bound["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
    try:
        conn = psycopg.connect(main.url, application_name="dbledger", **bound)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot connect to {main.display}: {_driver_words(exc)}") from None
    try:
        conn.read_only = True  # a query that writes is refused by the server
        cursor = conn.execute(sql.encode())
        columns = [column.name for column in cursor.description or ()]
        if len(columns) != 1:
            raise ConfigError(
                f"--targets-query must return one column (database URLs or schema names); it returns "
                f"{len(columns)}" + (f" ({', '.join(columns)})" if columns else "")
            )
        return [row[0] for row in cursor.fetchall()]
    except psycopg.Error as exc:
        state = f"{exc.sqlstate}: " if exc.sqlstate else ""
        raise ConfigError(f"--targets-query failed on {main.display}: {state}{_driver_words(exc)}") from None
    finally:
        conn.close()


def _driver_words(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__, secrets=True)


def find_targets(
    database_url: str | None = None,
    *,
    schema: str | None = None,
    targets_file: PathLike | None = None,
    targets_query: str | None = None,
    connect_timeout: float | None = None,
) -> Targets:
    """The fleet: from ``targets_file``, else from ``targets_query`` (run on the main database),
    else from ``targets`` in ``[tool.dbledger]``. The main database resolves as for any command;
    a target schema given for it (``schema``, DBLEDGER_SCHEMA, ``schema`` in the file) is refused:
    with --all, the schemas are targets."""
    if targets_file is not None and targets_query is not None:
        raise ConfigError("give the targets one way: --targets-file or --targets-query, not both")
    main = resolve(database_url, "", schema=schema).database
    if main.schema is not None:
        raise ConfigError(
            f"a target schema ({main.schema!r}) names one target, and --all runs on many: list each "
            "schema as a target instead (drop --schema; unset DBLEDGER_SCHEMA or schema in [tool.dbledger])"
        )
    if targets_file is not None:
        return Targets(read_targets_file(targets_file, main), str(targets_file))
    if targets_query is not None:
        return Targets(
            query_targets(targets_query, main, connect_timeout), f"--targets-query on {main.display}"
        )
    listed = project_targets()
    if listed is None:
        raise ConfigError(
            "--all needs a list of targets: set targets = [...] in [tool.dbledger] of pyproject.toml, "
            "or pass --targets-file FILE or --targets-query SQL"
        )
    where, entries = listed
    found = targets_from(
        ((f"{where}: [tool.dbledger] targets[{index}]", entry) for index, entry in enumerate(entries)), main
    )
    return Targets(found, f"{where} [tool.dbledger] targets")
