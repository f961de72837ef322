"""Lint migrations in version order, as one run: each statement is checked against the schema the
statements before it leave (the analysis' ``Overlay`` over the live catalog, or over nothing),
so a table created by an earlier file is new, not existing.

Only up sections are linted: a down section undoes what its up did (dropping what the up
created is its job), and runs only on a rollback.

A statement no rule reads (an INSERT, a COPY, a SELECT without INTO, a GRANT...: ``_unread``,
by its first keyword) is neither analysed nor parsed into a tree, only checked for syntax: a
data load of 50,000 INSERTs costs a fraction of a second instead of ~15 s (docs/lint.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from pglast import parser
from pglast.parser import ParseError

from dbledger import sqltrees
from dbledger.analysis import Catalog, Overlay, analyse
from dbledger.analysis.nodes import Node, kind_of
from dbledger.config import DEFAULT_WAITS, WaitPolicy
from dbledger.contracts import Statement
from dbledger.dialects import Dialect, first_word, for_name
from dbledger.errors import MigrationFileError
from dbledger.lint import suppress
from dbledger.lint.checks import Hit, Where, check
from dbledger.lint.findings import Finding
from dbledger.lint.locate import SectionText
from dbledger.lint.ruleset import RULES
from dbledger.lint.settings import lock_setting
from dbledger.lint.state import Limit, OfflineCatalog, RunState, created_by
from dbledger.migrations import Migration, Section
from dbledger.placeholders import Placeholder, substitute


class _Item(NamedTuple):
    """One statement to lint: its migration (by position in the run), where it sits in the
    section's text, and the findings it gets."""

    order: int
    migration: Migration
    text: SectionText
    statement: Statement
    offset: int
    findings: list[Finding]

    def finding(self, hit: Hit) -> Finding:
        rule = RULES[hit.rule]
        line, column = self.text.position(self.offset + hit.offset)
        path = self.migration.path
        return Finding(path, line, column, rule.id, rule.severity, hit.message, hit.help or rule.safer)


def lint_migrations(
    migrations: Sequence[Migration],
    *,
    catalog: Catalog | None = None,
    waits: WaitPolicy | None = None,
    placeholders: Mapping[str, Placeholder] | None = None,
) -> list[Finding]:
    """The findings of ``migrations``' up sections, linted in the order given (version order)
    and returned in that order, by position in each file. ``catalog``: the live database's
    (``PostgresCatalog``), for table sizes and for what exists already; None: no database,
    every table the migrations do not create counts as existing. ``waits``: the lock-wait policy
    the migrations will run with (default: dbledger's), which decides ``require-lock-timeout``.
    Suppressed findings are left out; faulty suppressions are findings. ``placeholders``: their
    values stand in for ``${name}`` (an unknown one is left, and refused by any run)."""
    dialect = for_name("postgresql")
    state = RunState(catalog if catalog is not None else OfflineCatalog())
    overlay = Overlay(state.base)  # the catalog as each statement finds it
    policy = waits or DEFAULT_WAITS
    items = _items(migrations, dialect, placeholders or {})
    previous = -1
    in_block = False  # a BEGIN in a transaction:false section opened a transaction block
    with sqltrees.shared():  # the analysis and the rules read one tree of each statement
        for item in items:
            section = item.migration.up
            if item.order != previous:
                state.end_migration()
                previous, in_block = item.order, False
            if _unread(item.statement):
                _check_syntax(item)
            else:
                in_block = _lint_statement(item, overlay, state, policy, dialect, in_block)
            if not (section.transaction or in_block):
                state.end_transaction()  # each statement of a transaction:false section commits alone
    return _kept(migrations, items)


def _lint_statement(
    item: _Item, overlay: Overlay, state: RunState, policy: WaitPolicy, dialect: Dialect, in_block: bool
) -> bool:
    """Check one statement, remember what it leaves for the next ones; whether a transaction
    block is open after it."""
    section = item.migration.up
    analysis = analyse(item.statement.sql, overlay)
    changes = list(analysis.changes)
    node = _parse(item)
    if node is not None:
        limit = _limit(item.statement, section, policy, state, dialect)
        where = Where(
            item.statement, node, analysis, overlay, state, dialect,
            section.transaction or in_block, section.transaction, limit,
        )  # fmt: skip
        item.findings.extend(item.finding(hit) for hit in check(where))
        in_block = _block(node, in_block, section.transaction)
        _remember(node, state, item)
        changes += created_by(node)
    overlay.apply(changes)
    state.apply(changes)
    return in_block


# Statements no rule reads, by first keyword. The rules read ALTER, CREATE and DROP (and the
# tables they create, drop or rename), UPDATE and DELETE (without WHERE; also under WITH), the
# transaction commands, what cannot run in a transaction (VACUUM, REINDEX, CLUSTER, DISCARD...),
# what takes ACCESS EXCLUSIVE (TRUNCATE, LOCK, REFRESH...), SET lock_timeout and SELECT ... INTO
# (which creates a table): those, and every keyword not listed here, are read in full.
_UNREAD = frozenset(
    {
        "INSERT", "COPY", "SELECT", "VALUES", "TABLE", "GRANT", "REVOKE", "COMMENT", "SET", "RESET",
        "ANALYZE", "ANALYSE", "DO", "CALL", "NOTIFY", "LISTEN", "EXECUTE", "DEALLOCATE",
    }
)  # fmt: skip


def _unread(statement: Statement) -> bool:
    """Whether no rule can match ``statement``, decided without parsing it. A SELECT or a SET
    that mentions ``into`` or ``lock_timeout`` anywhere (a string, a comment) is read in full:
    being wrong costs only the time saved."""
    word = first_word(statement)
    if word not in _UNREAD:
        return False
    if word == "SELECT":
        return "into" not in statement.sql.lower()
    if word in ("SET", "RESET"):
        return "lock_timeout" not in statement.sql.lower()
    return True


def _items(
    migrations: Sequence[Migration], dialect: Dialect, placeholders: Mapping[str, Placeholder]
) -> list[_Item]:
    """Every up statement, in order, with its placeholders' values in place."""
    items: list[_Item] = []
    for order, migration in enumerate(migrations):
        section = migration.up
        if section.empty:
            continue
        text = SectionText(section.sql, section.line)
        statements = dialect.split(section.sql, section.line, migration.file_of(section))
        for statement, offset in zip(statements, text.offsets(statements), strict=True):
            items.append(
                _Item(order, migration, text, _with_values(statement, placeholders, dialect), offset, [])
            )
    return items


def _with_values(
    statement: Statement, placeholders: Mapping[str, Placeholder], dialect: Dialect
) -> Statement:
    try:
        return substitute(statement, "", placeholders, dialect.quote)[0]
    except MigrationFileError:
        return statement


def _parse(item: _Item) -> Node | None:
    """The statement's tree; None (and a syntax-error finding) when the parser rejects it."""
    try:
        parsed = sqltrees.parse(item.statement.sql)
    except ParseError as exc:
        _rejected(item, exc)
        return None
    return parsed[0].stmt if len(parsed) == 1 else None


def _check_syntax(item: _Item) -> None:
    """A syntax-error finding when the parser rejects the statement, found by the parser alone:
    no tree is built (~3 us a statement, where building one costs ~150 us)."""
    try:
        parser.split(item.statement.sql, with_parser=True)
    except ParseError as exc:
        _rejected(item, exc)


def _rejected(item: _Item, exc: ParseError) -> None:
    at = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else len(item.statement.sql)
    reason = str(exc.args[0]) if exc.args else "syntax error"
    item.findings.append(
        item.finding(Hit("syntax-error", at, f"PostgreSQL's parser rejects the statement: {reason}"))
    )


def _limit(
    statement: Statement, section: Section, policy: WaitPolicy, state: RunState, dialect: Dialect
) -> Limit:
    """What ``statement`` may wait for a lock, as dbledger's runner decides it (the section's
    lock_timeout option, else the run's policy, CONCURRENTLY's own), unless a SET lock_timeout
    earlier in the migration changed it."""
    if state.lock_override is not None:
        return state.lock_override
    if section.lock_timeout is not None:
        return Limit(section.lock_timeout, "lock_timeout:0 on the section's marker line")
    if "CONCURRENTLY" in (dialect.outside_transaction_only(statement) or ""):
        return Limit(policy.concurrently_lock_timeout, "the run's CONCURRENTLY lock timeout is 0")
    return Limit(
        policy.lock_timeout,
        "the run's statement lock timeout is 0: --statement-lock-timeout or statement_lock_timeout",
    )


def _block(node: Node, in_block: bool, section_transaction: bool) -> bool:
    """Whether a transaction block is open after ``node`` in a transaction:false section."""
    if section_transaction or kind_of(node) != "TransactionStmt":
        return in_block
    kind = getattr(getattr(node, "kind", None), "name", "")
    if kind in ("TRANS_STMT_BEGIN", "TRANS_STMT_START"):
        return True
    if kind in ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK", "TRANS_STMT_PREPARE"):
        return False
    return in_block


def _remember(node: Node, state: RunState, item: _Item) -> None:
    """What the statement leaves for the ones after it: constraints, a lock_timeout, a COMMIT."""
    state.observe(node)
    setting = lock_setting(node)
    if setting is not None:
        line, _ = item.text.position(item.offset)
        state.lock_override = Limit(setting, f"SET lock_timeout on line {line}")
    kind = getattr(getattr(node, "kind", None), "name", "")
    if kind_of(node) == "TransactionStmt" and kind in ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK"):
        state.end_transaction()


def _kept(migrations: Sequence[Migration], items: list[_Item]) -> list[Finding]:
    """Per migration, in order: the findings no valid suppression silences, and the faulty
    suppressions', by position in the file."""
    kept: list[Finding] = []
    by_order: dict[int, list[_Item]] = {}
    for item in items:
        by_order.setdefault(item.order, []).append(item)
    for order, migration in enumerate(migrations):
        section = migration.up
        spans = [(item.offset, item.offset + len(item.statement.sql)) for item in by_order.get(order, [])]
        suppressions = suppress.read(section.sql, section.line, spans)
        own: list[Finding] = []
        for item in by_order.get(order, []):
            above = suppressions.get(item.statement.line - 1)
            own += [f for f in item.findings if above is None or not above.silences(f.rule)]
        lines = [item.statement.line for item in by_order.get(order, [])]
        own += suppress.problems(migration.path, suppressions, lines)
        kept += sorted(own, key=lambda f: (f.line, f.column, f.rule))
    return kept
