"""What the statements linted so far leave behind for the rules that follow: which tables are new
(created earlier in the run, so empty and unseen by other sessions), which columns have a
validated ``CHECK (column IS NOT NULL)``, which constraints the current transaction added
NOT VALID, and what ``SET lock_timeout`` the current migration chose.

Tables are remembered by their schema-qualified names, so ``public.t`` and ``t`` are one table:
an unqualified name is in the default schema, the connection's ``current_schema()`` with a
database and ``public`` without one (a ``SET search_path`` in a migration is not followed).

The catalog the analysis keeps (``dbledger.analysis.Overlay``) answers questions of types,
sizes and indexes; this state answers the lint's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from dbledger.analysis import Catalog, Change, ForeignKey, PostgresCatalog, TableSize
from dbledger.analysis.nodes import (
    Node,
    child,
    children,
    enum,
    flag,
    kind_of,
    qualified,
    quote_ident,
    relation,
    split_qualified,
    strings,
    text,
)
from dbledger.analysis.rules import constraint_type

DEFAULT_SCHEMA = "public"  # where an unqualified name is without a database


class OfflineCatalog:
    """The catalog without a database: every relation may exist (so IF EXISTS is not taken for
    a no-op and every table not created in the run counts as existing), nothing more is known."""

    def column_type(self, table: str, column: str) -> str | None:
        return None

    def table_size(self, table: str) -> TableSize | None:
        return None

    def index_count(self, table: str) -> int:
        return 0

    def index_table(self, index: str) -> str | None:
        return None

    def server_version(self) -> int | None:
        return None

    def foreign_keys(self, table: str) -> tuple[ForeignKey, ...]:
        return ()

    def exists(self, relation: str, column: str | None = None) -> bool | None:
        return None


class Limit(NamedTuple):
    """What a statement may wait for a lock: seconds (0: no limit), and who said so."""

    seconds: float
    source: str


class RunState:
    """The lint's memory of the run, over ``base`` (the database's catalog, or none). Every
    table name given to it is resolved (``key``) before it is compared or stored."""

    def __init__(self, base: Catalog) -> None:
        self.base = base
        self.schema = default_schema(base)
        # Tables the run creates -> the name to ask the database about, whether it has it already
        # (None: known to be new). Asked only when a rule wants to know: one query a table.
        self._new: dict[str, str | None] = {}
        self.dropped: set[str] = set()
        self.not_null: set[tuple[str, str]] = set()  # (table, column) proven NOT NULL by a valid CHECK
        self._not_valid: dict[tuple[str, str], str | None] = {}  # (table, constraint) -> column it proves
        self._added_here: set[tuple[str, str]] = set()  # (table, constraint) NOT VALID in this transaction
        self.lock_override: Limit | None = None  # SET lock_timeout earlier in this migration

    def key(self, table: str) -> str:
        """``table`` schema-qualified: ``t`` and ``public.t`` (or ``"public"."t"``) are one
        table when the default schema is ``public``."""
        parts = split_qualified(table)
        return qualified((self.schema, *parts) if len(parts) == 1 else parts)

    def is_new(self, table: str) -> bool:
        key = self.key(table)
        if key not in self._new:
            return False
        asked = self._new[key]
        if asked is not None:  # new unless the database has it (a file that was applied, linted again)
            if self.base.exists(asked) is True:
                del self._new[key]
                return False
            self._new[key] = None
        return True

    def added_here(self, table: str, constraint: str) -> bool:
        """Whether the current transaction added ``constraint`` of ``table`` NOT VALID."""
        return (self.key(table), constraint) in self._added_here

    def end_transaction(self) -> None:
        self._added_here.clear()

    def end_migration(self) -> None:
        """dbledger resets the session between migrations: a SET does not carry over."""
        self.end_transaction()
        self.lock_override = None

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            table = self.key(change.table)
            if change.op in ("create_table", "create_relation"):
                self._new[table] = None if table in self.dropped else change.table
            elif change.op in ("drop_table", "drop_relation"):
                self._new.pop(table, None)
                self.dropped.add(table)
            elif change.op == "rename_table" and change.name and self.is_new(change.table):
                del self._new[table]
                self._new[self.key(change.name)] = None

    def observe(self, node: Node) -> None:
        """Remember the CHECK (column IS NOT NULL) constraints and NOT VALID ones ``node`` adds
        or validates."""
        if kind_of(node) != "AlterTableStmt":
            return
        table = self.key(relation(child(node, "relation")) or "?")
        for command in children(node, "cmds"):
            subtype = enum(command, "subtype")
            if subtype == "AT_AddConstraint" and (constraint := child(command, "def_")) is not None:
                self._added(table, constraint)
            elif subtype == "AT_ValidateConstraint":
                name = text(command, "name") or "?"
                column = self._not_valid.pop((table, name), None)
                if column is not None:
                    self.not_null.add((table, column))

    def _added(self, table: str, constraint: Node) -> None:
        kind = constraint_type(constraint)
        if kind not in ("CHECK", "FOREIGN"):
            return
        column = not_null_column(constraint) if kind == "CHECK" else None
        name = text(constraint, "conname")
        if flag(constraint, "skip_validation"):
            if name is not None:
                self._not_valid[table, name] = column
                self._added_here.add((table, name))
        elif column is not None:
            self.not_null.add((table, column))

    def proves_not_null(self, table: str, column: str) -> bool:
        """Whether a validated CHECK (column IS NOT NULL) exists: added in the run, or in the
        live database, where SET NOT NULL uses it to skip its scan (PostgreSQL 12+)."""
        if (self.key(table), column) in self.not_null:
            return True
        if not isinstance(self.base, PostgresCatalog) or self.is_new(table):
            return False
        # A validated CHECK constraint that proves the column holds no NULL, as the server writes it.
        return f"CHECK (({quote_ident(column)} IS NOT NULL))" in self.base.validated_checks(table)


def created_by(node: Node) -> list[Change]:
    """The table a statement creates that the analysis does not record: ``SELECT ... INTO t``
    (PostgreSQL's parser leaves it a SELECT; ``CREATE TABLE ... AS`` is recorded already)."""
    if kind_of(node) != "SelectStmt":
        return []
    into = child(node, "intoClause")
    table = relation(child(into, "rel")) if into is not None else None
    return [] if table is None else [Change("create_table", table)]


def default_schema(catalog: Catalog) -> str:
    """Where an unqualified name is: the connection's ``current_schema()`` (the first schema of
    its search_path that exists), ``public`` without a database or when none exists."""
    if not isinstance(catalog, PostgresCatalog):
        return DEFAULT_SCHEMA
    return catalog.current_schema() or DEFAULT_SCHEMA


def not_null_column(constraint: Node) -> str | None:
    """The column of ``CHECK (column IS NOT NULL)``, or None for any other check."""
    test = child(constraint, "raw_expr")
    if kind_of(test) != "NullTest" or enum(test, "nulltesttype") != "IS_NOT_NULL":
        return None
    argument = child(test, "arg")
    names = strings(children(argument, "fields")) if kind_of(argument) == "ColumnRef" else ()
    return names[-1] if len(names) == 1 else None
