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
written; the history records the values each migration ran with. A name that says it holds a
secret (``password``, ``pass``, ``pwd``, ``secret``, ``token``, ``key``, ``credential``, ``dsn``,
``auth``) has its value recorded as ``***`` and masked in every message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

from dbledger.contracts import Statement
from dbledger.errors import MigrationFileError

# ${name}, where the scanner finds it outside quoted text and comments.
_PLACEHOLDER = re.compile(r"\$\{(?P<name>[^}\s]*)\}")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
# A placeholder whose name says it holds a secret: its value is masked in every message and
# recorded as *** (dbledger.redaction).
SECRET = re.compile(r"pass|pwd|secret|token|key|credential|dsn|auth", re.IGNORECASE)
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
    for start, end, name in placeholders_in(sql):
        line = statement.line + sql.count("\n", 0, start)
        placeholder = values.get(name)
        if placeholder is None:
            known = ", ".join(sorted(values)) if values else "none are configured"
            raise MigrationFileError(
                path,
                f"line {line}: unknown placeholder ${{{name}}} (known: {known}): define it under "
                "[tool.dbledger.placeholders], e.g. "
                f'{name or "name"} = {{ identifier = "..." }} or {name or "name"} = "a literal"',
            )
        parts += [sql[at:start], quote(placeholder)]
        at = end
        used[name] = "***" if SECRET.search(name) else quote(placeholder)
    if not used:
        return statement, {}
    return statement._replace(sql="".join(parts) + sql[at:]), used


def placeholders_in(sql: str) -> list[tuple[int, int, str]]:
    """Each ``${name}`` of ``sql`` outside quoted text and comments, as PostgreSQL's lexer skips
    them: '...' strings ('' inside), E'...' strings (backslash escapes too), "..." names, --
    comments, nested /* */ comments and $tag$...$tag$ bodies. (start, end, name) each."""
    found: list[tuple[int, int, str]] = []
    i, size = 0, len(sql)
    while i < size:
        char = sql[i]
        if char == "'":
            escapes = (
                i > 0 and sql[i - 1] in "Ee" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            )
            i = _string_end(sql, i + 1, escapes)
        elif char == '"':
            i = _quoted_end(sql, i + 1, '"')
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = size if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            i = _comment_end(sql, i + 2)
        elif char == "$":
            placeholder = _PLACEHOLDER.match(sql, i)
            tag = None if placeholder else _DOLLAR_TAG.match(sql, i)
            if placeholder is not None:
                found.append((i, placeholder.end(), placeholder.group("name")))
                i = placeholder.end()
            elif tag is not None and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                close = sql.find(tag.group(0), tag.end())
                i = size if close < 0 else close + len(tag.group(0))
            else:
                i += 1
        else:
            i += 1
    return found


def _string_end(sql: str, i: int, escapes: bool) -> int:
    while i < len(sql):
        if escapes and sql[i] == "\\":
            i += 2
        elif sql[i] == "'":
            if sql.startswith("''", i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return i


def _quoted_end(sql: str, i: int, mark: str) -> int:
    while i < len(sql):
        if sql[i] == mark:
            if sql.startswith(mark * 2, i):
                i += 2
                continue
            return i + 1
        i += 1
    return i


def _comment_end(sql: str, i: int) -> int:
    depth = 1
    while i < len(sql) and depth:
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i


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
