"""Tell how an applied migration's file changed: cosmetically (white space, comments, keyword
case: the same statements) or semantically (other statements), from the copy of the file the
ledger keeps and the file on disk.

Statements are compared by what they mean, not by their bytes: the dialect's ``normal_form``
(for PostgreSQL, pglast's parse tree printed back, and PL/pgSQL bodies by their own tree). The
sections' options count too: ``transaction:false`` added to an applied file changes how it ran.
A semantic edit comes with a diff of the statements, laid out by the dialect.

Pure: no I/O. Parsing imports pglast, so this runs only for a file whose checksum changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, NamedTuple

from dbledger.contracts import Statement
from dbledger.dialects import Dialect
from dbledger.errors import MigrationFileError
from dbledger.ledger import MAX_SOURCE_BYTES
from dbledger.migrations import Migration, Section, parse
from dbledger.redaction import redact

EditKind = Literal["cosmetic", "semantic", "unknown"]
# The diff of a semantic edit shows at most this many lines; the rest is counted.
MAX_DIFF_LINES = 40


class Edit(NamedTuple):
    """How one applied migration's file differs from the file as it was applied."""

    kind: EditKind
    reason: str  # one line, for messages and the history
    diff: tuple[str, ...] = ()  # unified diff of the statements (semantic edits)


def stored_text(migration: Migration) -> str:
    """A file's text as the ledger keeps it: passwords replaced by ``***``."""
    return redact(migration.text)


def kept_source(migration: Migration) -> str | None:
    """What the ledger row of ``migration`` keeps of its file: the stored text, or None for a
    file too long to copy (``MAX_SOURCE_BYTES``)."""
    if len(migration.text) > MAX_SOURCE_BYTES:  # counted in characters: cheap, and near enough
        return None
    return stored_text(migration)


def classify(applied: str | None, migration: Migration, dialect: Dialect) -> Edit:
    """Compare the file as applied (``applied``, the ledger's copy, or None when it kept none)
    with ``migration`` as it is now."""
    if applied is None:
        return Edit(
            "unknown",
            "the ledger keeps no copy of the file as it was applied (applied by dbledger before "
            "0.3, or baselined from another tool), so the change cannot be told cosmetic or semantic",
        )
    current = stored_text(migration)
    try:
        before = parse(migration.path, applied.encode("utf-8"))
    except MigrationFileError:
        before = None
    if before is None:
        return Edit("unknown", "the ledger's copy of the file no longer parses as a migration")
    old, new = _meaning(before, dialect), _meaning(parse(migration.path, current.encode("utf-8")), dialect)
    if old == new:
        if current != migration.text:  # what differs may hide behind the *** of a password
            return Edit(
                "semantic",
                "the file holds a password, which the ledger does not keep: dbledger cannot tell "
                "whether it changed",
            )
        return Edit("cosmetic", "only white space, comments or keyword case changed: the same statements")
    return Edit("semantic", _what_changed(old, new), _diff(before, migration, dialect))


# A section's meaning: its direction, the options that decide how it runs, its statements.
_Meaning = tuple[tuple[str, tuple[object, ...], tuple[str, ...]], ...]


def _meaning(migration: Migration, dialect: Dialect) -> _Meaning:
    return tuple(
        (
            direction,
            _options(section),
            tuple(dialect.normal_form(s) for s in _statements(migration, section, dialect)),
        )
        for direction, section in _sections(migration)
    )


def _sections(migration: Migration) -> Iterator[tuple[str, Section]]:
    yield "up", migration.up
    if migration.down is not None:
        yield "down", migration.down


def _options(section: Section) -> tuple[object, ...]:
    return (section.transaction, section.backup, section.lock_timeout, section.statement_timeout)


def _statements(migration: Migration, section: Section, dialect: Dialect) -> list[Statement]:
    return dialect.split(section.sql, section.line, migration.path)


def _what_changed(old: _Meaning, new: _Meaning) -> str:
    before, after = dict((d, (o, s)) for d, o, s in old), dict((d, (o, s)) for d, o, s in new)
    parts = []
    for direction in ("up", "down"):
        if before.get(direction) == after.get(direction):
            continue
        if direction not in after:
            parts.append(f"the {direction} section was removed")
        elif direction not in before:
            parts.append(f"a {direction} section was added")
        elif before[direction][0] != after[direction][0]:
            parts.append(f"the {direction} section's options changed")
        else:
            parts.append(f"the {direction} section's statements changed")
    return "; ".join(parts) or "the statements changed"


def _diff(before: Migration, after: Migration, dialect: Dialect) -> tuple[str, ...]:
    def laid_out(migration: Migration) -> list[str]:
        lines = []
        for direction, section in _sections(migration):
            lines.append(f"-- migrate:{direction}{_option_text(section)}")
            for statement in _statements(migration, section, dialect):
                lines.extend(f"{dialect.pretty(statement)};".split("\n"))
        return lines

    import difflib  # only for a semantic edit

    found = list(
        difflib.unified_diff(laid_out(before), laid_out(after), "as applied", "on disk", lineterm="", n=1)
    )
    if len(found) > MAX_DIFF_LINES:
        found = [*found[:MAX_DIFF_LINES], f"... {len(found) - MAX_DIFF_LINES} more lines"]
    return tuple(found)


def _option_text(section: Section) -> str:
    words = [] if section.transaction else ["transaction:false"]
    words += ["backup:true"] if section.backup else []
    words += [f"lock_timeout:{section.lock_timeout}s"] if section.lock_timeout is not None else []
    words += (
        [f"statement_timeout:{section.statement_timeout}s"] if section.statement_timeout is not None else []
    )
    return "".join(f" {word}" for word in words)
