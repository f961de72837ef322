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
    with ``migration`` as it is now. Both sides are compared as stored, passwords redacted, so
    nothing shown here can hold one."""
    if applied is None:
        return Edit(
            "unknown",
            "the ledger keeps no copy of the file as it was applied (applied by dbledger before "
            "0.3, or baselined from another tool), so the change cannot be told cosmetic or semantic",
        )
    current = stored_text(migration)
    try:
        old = _read(applied, migration, dialect)
    except MigrationFileError:
        return Edit("unknown", "the ledger's copy of the file no longer parses as a migration")
    try:
        new = _read(current, migration, dialect)
    except MigrationFileError as exc:
        return Edit("unknown", f"the file on disk cannot be read as statements: {exc.message}")
    changed = _changed(old, new, dialect)
    if changed is None:
        if current != migration.text:  # what differs may hide behind the *** of a password
            return Edit(
                "semantic",
                "the file holds a password, which the ledger does not keep: dbledger cannot tell "
                "whether it changed",
            )
        return Edit("cosmetic", "only white space, comments or keyword case changed: the same statements")
    return Edit("semantic", changed, _diff(old, new, dialect))


class _Section(NamedTuple):
    direction: str
    options: tuple[object, ...]  # what decides how it runs
    statements: list[Statement]


def _read(text: str, migration: Migration, dialect: Dialect) -> list[_Section]:
    parsed = parse(migration.path, text.encode("utf-8"))
    sections = [("up", parsed.up)] + ([("down", parsed.down)] if parsed.down is not None else [])
    return [
        _Section(direction, _options(section), dialect.split(section.sql, section.line, migration.path))
        for direction, section in sections
    ]


def _options(section: Section) -> tuple[object, ...]:
    return (
        section.transaction,
        section.backup,
        section.lock_timeout,
        section.statement_timeout,
        section.transaction_timeout,
    )


def _same(a: Statement, b: Statement, dialect: Dialect) -> bool:
    # Equal text needs no parse: a one-line edit of a 20,000-statement file parses two statements.
    return a.sql == b.sql or dialect.normal_form(a) == dialect.normal_form(b)


def _changed(old: list[_Section], new: list[_Section], dialect: Dialect) -> str | None:
    """What changed, section by section, in words; None when the statements are the same."""
    before = {section.direction: section for section in old}
    after = {section.direction: section for section in new}
    parts = []
    for direction in ("up", "down"):
        was, now = before.get(direction), after.get(direction)
        if was is None and now is None:
            continue
        if now is None:
            parts.append(f"the {direction} section was removed")
        elif was is None:
            parts.append(f"a {direction} section was added")
        elif was.options != now.options:
            parts.append(f"the {direction} section's options changed")
        elif len(was.statements) != len(now.statements) or not all(
            _same(a, b, dialect) for a, b in zip(was.statements, now.statements, strict=True)
        ):
            parts.append(f"the {direction} section's statements changed")
    return "; ".join(parts) or None


def _diff(old: list[_Section], new: list[_Section], dialect: Dialect) -> tuple[str, ...]:
    """A unified diff of the statements, each laid out by the dialect when it differs from the
    other side's (the rest as written: laying out every statement of a long file costs seconds)."""
    texts = {s.sql for section in old for s in section.statements}
    texts ^= {s.sql for section in new for s in section.statements}

    def laid_out(sections: list[_Section]) -> list[str]:
        lines = []
        for section in sections:
            lines.append(f"-- migrate:{section.direction}{_option_text(section.options)}")
            for statement in section.statements:
                shown = dialect.pretty(statement) if statement.sql in texts else statement.sql
                lines.extend(f"{shown};".split("\n"))
        return lines

    import difflib  # only for a semantic edit

    found = list(
        difflib.unified_diff(laid_out(old), laid_out(new), "as applied", "on disk", lineterm="", n=1)
    )
    if len(found) > MAX_DIFF_LINES:
        found = [*found[:MAX_DIFF_LINES], f"... {len(found) - MAX_DIFF_LINES} more lines"]
    return tuple(found)


def _option_text(options: tuple[object, ...]) -> str:
    transaction, backup, lock_timeout, statement_timeout, transaction_timeout = options
    words = [] if transaction else ["transaction:false"]
    words += ["backup:true"] if backup else []
    words += [f"lock_timeout:{lock_timeout}s"] if lock_timeout is not None else []
    words += [f"statement_timeout:{statement_timeout}s"] if statement_timeout is not None else []
    words += [f"transaction_timeout:{transaction_timeout}s"] if transaction_timeout is not None else []
    return "".join(f" {word}" for word in words)
