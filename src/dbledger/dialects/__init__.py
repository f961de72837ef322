"""What dbledger knows of each database's SQL without a connection: how a section splits into
statements, and which statements a transactional section must not hold.

The preflight asks these questions of every section a run would execute, before anything runs,
so ``up``, ``down``, ``--atomic`` and every ``--dry-run`` refuse the same files with the same words.
Each dialect is pure: no driver, no I/O. ``for_name`` finds one by the name a backend gives.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from dbledger.contracts import Statement
from dbledger.placeholders import Placeholder

_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_FIRST_WORD = re.compile(r"[A-Za-z]+")


class Dialect(ABC):
    """One database's SQL, as the preflight needs it."""

    name: ClassVar[str]

    @abstractmethod
    def split(self, sql: str, first_line: int, path: Path) -> list[Statement]:
        """The statements of a section that starts on ``first_line`` of ``path``, in order, each
        with the line its first token is on. Raises MigrationFileError naming the file and line
        when the text cannot even be cut into statements."""

    @abstractmethod
    def quote(self, placeholder: Placeholder) -> str:
        """A placeholder's value as SQL: an identifier or a literal, quoted by the database's
        own rules (dbledger.placeholders)."""

    @abstractmethod
    def transaction_control(self, statement: Statement) -> str | None:
        """The command, e.g. ``COMMIT``, when ``statement`` begins or ends a transaction (which
        would end the one dbledger runs a migration in); None otherwise. Savepoints are fine."""

    @abstractmethod
    def outside_transaction_only(self, statement: Statement) -> str | None:
        """The command, e.g. ``CREATE INDEX CONCURRENTLY``, when the database refuses to run
        ``statement`` inside a transaction block; None otherwise."""

    def commits_in_phases(self, statement: Statement) -> bool:
        """Can ``statement``, run on its own outside a transaction, commit part of its work and
        then fail (``CREATE INDEX CONCURRENTLY``, a procedure that commits)? Then its failure
        leaves the migration dirty. By default: the statements that cannot run in a transaction."""
        return self.outside_transaction_only(statement) is not None

    def releases_lock(self, statement: Statement) -> str | None:
        """The command, when ``statement`` releases session locks, the migration lock among them
        (a replica waiting for it would start while this run goes on); None otherwise."""
        return None

    def may_change_session(self, statement: Statement) -> bool:
        """Could ``statement`` leave state in the session for the next migration (a setting, a
        temporary table)? Then the session is reset before the next one. Unless a dialect can
        tell for sure: yes."""
        return True

    def newest_feature(self, statement: Statement) -> tuple[str, int] | None:
        """What ``statement`` uses that needs the newest server version, as (what, the first
        major version that has it); None when it needs nothing newer than the oldest supported."""
        return None

    def may_change_identity(self, statement: Statement) -> bool:
        """Could ``statement`` change who the session acts as (``SET ROLE``)? Then dbledger
        restores its own identity before it writes the ledger row. Databases without roles: no."""
        return False

    @abstractmethod
    def normal_form(self, statement: Statement) -> str:
        """What the statement means, as text: the same for two statements that differ only in
        white space, comments, keyword case or another spelling of the same thing, different
        otherwise. Tells a cosmetic edit of an applied migration from a semantic one."""

    def pretty(self, statement: Statement) -> str:
        """The statement laid out for a reader, for the diff of a semantic edit."""
        return statement.sql

    @abstractmethod
    def references(self, statement: Statement, tables: frozenset[str]) -> list[tuple[str | None, str]]:
        """``(schema or None, table)`` for each of ``tables`` that ``statement`` names. Used to keep
        migrations away from dbledger's own tables."""


def first_word(statement: Statement) -> str:
    """The statement's first keyword, upper-cased ("" when it starts with something else)."""
    found = _FIRST_WORD.match(statement.sql)
    return found.group(0).upper() if found else ""


def statements_at(text: str, bounds: Iterable[tuple[int, int]], first_line: int) -> list[Statement]:
    """The statements at ``bounds`` (increasing ``(start, end)`` offsets into ``text``), without
    leading white space and comments or a trailing ``;``, with the file line of each first token.
    Lines are counted once, from one statement to the next, so a section of N statements costs
    O(len(text)), not O(N * len(text))."""
    found: list[Statement] = []
    line, counted = first_line, 0
    for start, end in bounds:
        body = text[start:end]
        skip = _LEADING_NOISE.match(body)
        offset = start + (skip.end() if skip else 0)
        sql = text[offset:end].strip().rstrip(";").rstrip()
        if not sql:
            continue
        line += text.count("\n", counted, offset)
        counted = offset
        found.append(Statement(sql=sql, line=line))
    return found


def for_name(name: str) -> Dialect:
    """The dialect a backend speaks, by its name (``postgresql`` or ``sqlite``)."""
    if name == "postgresql":
        from dbledger.dialects.postgres import PostgresDialect

        return PostgresDialect()
    if name == "sqlite":
        from dbledger.dialects.sqlite import SqliteDialect

        return SqliteDialect()
    raise ValueError(f"no dialect named {name!r}")


__all__ = ["Dialect", "first_word", "for_name", "statements_at"]
