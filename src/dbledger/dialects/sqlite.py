"""SQLite's SQL: statements cut where SQLite's own tokenizer says one is complete
(``sqlite3.complete_statement`` knows strings, comments and trigger bodies), and kinds read from
a small tokenizer that follows SQLite's rules for strings, quoted names and comments."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from dbledger.contracts import Statement
from dbledger.dialects import Dialect, statements_at
from dbledger.placeholders import Placeholder

# One token: a comment or white space (dropped), a string, a quoted name, a word, anything else.
_LEXEME = r"""(?P<skip>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))
      |(?P<string>'(?:[^']|'')*'?)
      |(?P<quoted>"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?)
      |(?P<word>[A-Za-z_][A-Za-z0-9_$]*)
      |(?P<other>.)"""


def _tokens(sql: str) -> Iterator[tuple[str, str]]:
    """``(kind, text)`` of each token, comments and white space left out; a quoted name comes
    back unquoted, as kind ``word``."""
    for match in re.finditer(_LEXEME, sql, re.DOTALL | re.VERBOSE):  # compiled once, on first use
        kind = match.lastgroup or "other"
        text = match.group()
        if kind == "skip":
            continue
        if kind == "quoted":
            kind, text = "word", text[1:-1] if len(text) > 1 else ""
        yield kind, text


def _words(sql: str, count: int) -> list[str]:
    """The first ``count`` tokens, upper-cased."""
    found = []
    for _, text in _tokens(sql):
        found.append(text.upper())
        if len(found) == count:
            break
    return found


# What can leave state on a SQLite connection: a PRAGMA, an attached database, a temporary
# object, a loaded extension. Each names its word; a false alarm costs a reconnection.
_SESSION_WORDS = re.compile(r"\b(?:pragma|attach|detach|temp|temporary|load_extension)\b", re.IGNORECASE)


class SqliteDialect(Dialect):
    name: ClassVar[str] = "sqlite"

    def may_change_session(self, statement: Statement) -> bool:
        # SQLite's only reset is a new connection, which reads the whole schema again: with
        # 10,000 tables, 40 ms a migration, and a run of them grew with the square of its length.
        return _SESSION_WORDS.search(statement.sql) is not None

    def split(self, sql: str, first_line: int, path: Path) -> list[Statement]:
        return statements_at(sql, _bounds(sql), first_line)

    def quote(self, placeholder: Placeholder) -> str:
        # SQLite's own rules, the ones the sqlite3 module leaves to the caller: the quote
        # character doubled inside "..." or '...'.
        mark = '"' if placeholder.kind == "identifier" else "'"
        return mark + placeholder.value.replace(mark, mark * 2) + mark

    def transaction_control(self, statement: Statement) -> str | None:
        words = _words(statement.sql, 3)
        head = words[0] if words else ""
        if head in ("BEGIN", "COMMIT", "END"):
            return head
        if head == "ROLLBACK" and "TO" not in words[1:]:  # ROLLBACK TO a savepoint stays inside
            return head
        return None

    def outside_transaction_only(self, statement: Statement) -> str | None:
        words = _words(statement.sql, 5)
        if words[:1] == ["VACUUM"]:
            return "VACUUM"
        # PRAGMA [schema.]journal_mode = X: changing to or from WAL fails inside a transaction.
        if words[:1] == ["PRAGMA"] and "JOURNAL_MODE" in words and ("=" in words or "(" in words):
            return "PRAGMA journal_mode"
        return None

    def normal_form(self, statement: Statement) -> str:
        # SQLite's keywords and names ignore case; strings and numbers do not.
        return " ".join(text.lower() if kind == "word" else text for kind, text in _tokens(statement.sql))

    def references(self, statement: Statement, tables: frozenset[str]) -> list[tuple[str | None, str]]:
        wanted = {table.lower(): table for table in tables}  # SQLite's names ignore case
        tokens = list(_tokens(statement.sql))
        found: list[tuple[str | None, str]] = []
        for index, (kind, text) in enumerate(tokens):
            name = wanted.get(text.lower()) if kind == "word" else None
            if name is not None:
                qualified = index >= 2 and tokens[index - 1][1] == "."
                found.append((tokens[index - 2][1].lower() if qualified else None, name))
        return found


def _bounds(text: str) -> Iterator[tuple[int, int]]:
    start = 0
    position = text.find(";")
    while position != -1:
        if sqlite3.complete_statement(text[start : position + 1]):
            yield start, position + 1
            start = position + 1
        position = text.find(";", position + 1)
    yield start, len(text)
