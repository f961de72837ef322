"""Placeholders: ``${name}`` in a migration, replaced with a value from
``[tool.dbledger.placeholders]``, quoted as an identifier or as a literal by the database's own
rules (psycopg's for PostgreSQL), never pasted as raw text (docs/placeholders.md)::

    [tool.dbledger.placeholders]
    app_role = { identifier = "app_rw" }     # GRANT SELECT ON t TO ${app_role}  ->  "app_rw"
    region = "eu-west-1"                      # VALUES (${region})                ->  'eu-west-1'

A placeholder stands where an identifier or a literal would: inside a string, a quoted name or
a comment, ``${...}`` is text and stays as written (concatenate instead: ``'x-' || ${region}``).
Outside them, ``${name}`` is never SQL, so an unknown one, or any one while none are configured,
is an error naming the file and the line, before anything runs. The checksum is of the file as
written; the history records the values each migration ran with (a name holding ``password``,
``secret``, ``token`` or ``key`` as ``***``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

from dbledger.contracts import Statement
from dbledger.errors import MigrationFileError

# Skipped whole: strings, quoted names, comments and dollar-quoted bodies; caught: ${name}.
_TOKENS = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/"
    r"|(?P<dollar>\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$).*?(?P=dollar)"
    r"|\$\{(?P<name>[^}\s]*)\}",
    re.DOTALL,
)
_SECRET = re.compile(r"password|secret|token|key", re.IGNORECASE)
KINDS = ("identifier", "literal")


class Placeholder(NamedTuple):
    """A value and how it is quoted: as an ``identifier`` or as a ``literal``."""

    kind: str
    value: str


def substitute(
    statement: Statement,
    path: str,
    values: Mapping[str, Placeholder],
    quote: Callable[[Placeholder], str],
) -> tuple[Statement, dict[str, str]]:
    """``statement`` with each ``${name}`` replaced by its value quoted with ``quote``, and the
    values used, as recorded. MigrationFileError for an unknown name, naming its line."""
    sql = statement.sql
    if "${" not in sql:
        return statement, {}
    used: dict[str, str] = {}
    parts: list[str] = []
    at = 0
    for found in _TOKENS.finditer(sql):
        name = found.group("name")
        if name is None:
            continue
        line = statement.line + sql.count("\n", 0, found.start())
        placeholder = values.get(name)
        if placeholder is None:
            known = ", ".join(sorted(values)) if values else "none are configured"
            raise MigrationFileError(
                path,
                f"line {line}: unknown placeholder ${{{name}}} (known: {known}): define it under "
                "[tool.dbledger.placeholders], e.g. "
                f'{name or "name"} = {{ identifier = "..." }} or {name or "name"} = "a literal"',
            )
        parts += [sql[at : found.start()], quote(placeholder)]
        at = found.end()
        used[name] = "***" if _SECRET.search(name) else quote(placeholder)
    if not used:
        return statement, {}
    return statement._replace(sql="".join(parts) + sql[at:]), used


def recorded(used: Mapping[str, str]) -> str:
    """The values a migration ran with, for its history row."""
    return "placeholders: " + ", ".join(f"{name}={value}" for name, value in sorted(used.items()))


def parse(entries: Mapping[str, object], where: str) -> dict[str, Placeholder]:
    """``[tool.dbledger.placeholders]`` as placeholders; ConfigError naming an entry at fault."""
    from dbledger.errors import ConfigError

    found: dict[str, Placeholder] = {}
    for name, entry in entries.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"{where}: placeholder name {name!r}: give letters, digits and '_'")
        if isinstance(entry, str):
            found[name] = Placeholder("literal", entry)
            continue
        if not (isinstance(entry, dict) and len(entry) == 1 and next(iter(entry)) in KINDS):
            raise ConfigError(
                f"{where}: placeholder {name!r} must be a string (a literal) or "
                f'{{ identifier = "..." }} or {{ literal = "..." }}'
            )
        [(kind, value)] = entry.items()
        if not isinstance(value, str):
            raise ConfigError(f"{where}: placeholder {name!r}: its {kind} must be a string, not {value!r}")
        found[name] = Placeholder(kind, value)
    return found
