"""The rules, one function per kind of statement: each reads the statement's syntax tree, its
analysis (``dbledger.analysis``: locks, rewrites, what the catalog says) and the run's state, and
returns the ``Hit`` of each rule it breaks.

Only tables that exist before the run count: one created earlier in the run is empty and no
other session can be using it, so rewriting, scanning or indexing it costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from dbledger.analysis import Catalog, StatementAnalysis
from dbledger.analysis.model import ACCESS_EXCLUSIVE
from dbledger.analysis.nodes import (
    Node,
    child,
    children,
    enum,
    flag,
    kind_of,
    parse_type,
    relation,
    sql_type,
    text,
)
from dbledger.analysis.rules import constraint_type, display, plain_using, type_change, volatile_calls
from dbledger.contracts import Statement
from dbledger.dialects import Dialect
from dbledger.lint.locate import clause_starts
from dbledger.lint.state import Limit, RunState

_SERIAL_TYPES = frozenset({"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"})


class Hit(NamedTuple):
    """A rule broken at ``offset`` (characters into the statement); ``help`` "" means the
    rule's own advice."""

    rule: str
    offset: int
    message: str
    help: str = ""


class Where(NamedTuple):
    """One statement, and everything the rules may ask about it."""

    statement: Statement
    node: Node
    analysis: StatementAnalysis
    catalog: Catalog  # as the statement finds it: the earlier statements' changes applied
    state: RunState
    dialect: Dialect
    in_transaction: bool  # the statement runs inside a transaction block
    section_transaction: bool  # the section is one dbledger wraps in a transaction
    limit: Limit  # what it may wait for a lock

    def size(self, table: str) -> str:
        """`` (1,204 rows, 0.2 MB)`` when the live catalog knows the table's size, else ""."""
        found = self.catalog.table_size(table)
        if found is None:
            return ""
        return f" ({found.rows:,} rows, {found.bytes / 1_048_576:.1f} MB)"


def check(where: Where) -> list[Hit]:
    """Every rule ``where``'s statement breaks."""
    hits = _transaction(where) + _lock_timeout(where)
    handler = _BY_KIND.get(kind_of(where.node))
    if handler is not None:
        hits += handler(where)
    return hits


# -- any statement --------------------------------------------------------------------------


def _transaction(where: Where) -> list[Hit]:
    if where.section_transaction and (word := where.dialect.transaction_control(where.statement)):
        return [
            Hit(
                "transaction-nesting",
                0,
                f"{word} would end the transaction dbledger runs this migration in: dbledger refuses "
                "the migration",
            )
        ]
    command = where.dialect.outside_transaction_only(where.statement)
    if where.in_transaction and command:
        inside = "this section runs in one" if where.section_transaction else "a BEGIN above opened one"
        return [
            Hit(
                "ban-concurrent-index-creation-in-transaction",
                0,
                f"{command} cannot run inside a transaction, and {inside}: PostgreSQL refuses it "
                "(SQLSTATE 25001)"
                + (" and dbledger refuses the migration" if where.section_transaction else ""),
            )
        ]
    return []


def _lock_timeout(where: Where) -> list[Hit]:
    if where.limit.seconds:
        return []
    tables = [
        lock.table
        for lock in where.analysis.locks
        if lock.mode == ACCESS_EXCLUSIVE and not lock.new and not where.state.is_new(lock.table)
    ]
    if not tables:
        return []
    named = ", ".join(tables)
    return [
        Hit(
            "require-lock-timeout",
            0,
            f"{where.analysis.kind} takes ACCESS EXCLUSIVE on {named} and waits for it without a limit "
            f"({where.limit.source}): while it waits, every query on {named} queues behind it",
        )
    ]


# -- ALTER TABLE ----------------------------------------------------------------------------


def _alter_table(where: Where) -> list[Hit]:
    if enum(where.node, "objtype") != "OBJECT_TABLE":
        return []
    range_var = child(where.node, "relation")
    table = relation(range_var)
    if table is None or where.state.is_new(table):
        return []
    if flag(where.node, "missing_ok") and where.catalog.exists(table) is False:
        return []
    commands = children(where.node, "cmds")
    starts = clause_starts(where.statement.sql, getattr(range_var, "location", 0))
    hits: list[Hit] = []
    for index, command in enumerate(commands):
        offset = starts[index] if len(starts) == len(commands) else 0
        rule = _SUBCOMMANDS.get(enum(command, "subtype"))
        if rule is not None:
            hits += rule(where, table, command, offset)
    return hits


def _type(where: Where, table: str, command: Node, offset: int) -> list[Hit]:
    column = text(command, "name") or "?"
    definition = child(command, "def_")
    type_node = child(definition, "typeName") if definition is not None else None
    if type_node is None:
        return []
    new = sql_type(type_node)
    current = where.catalog.column_type(table, column)
    old = parse_type(current) if current is not None else None
    using = child(definition, "raw_default")
    size = where.size(table)
    if old is None:
        why = (
            f"-> {display(new)} is assumed to rewrite the table (the column's current type is not "
            "known: connect to the database, or lint the file that created it)"
        )
    elif not plain_using(using, column, new):
        why = f"{display(old)} -> {display(new)} with a USING expression rewrites the table{size}"
    else:
        change = type_change(old, new)
        if not change.rewrites:
            return []  # catalog only: varchar widening, varchar -> text, numeric precision up
        why = change.why + size
    message = f"{table}.{column} {why}: reads and writes wait under ACCESS EXCLUSIVE until it is done"
    return [Hit("changing-column-type", offset, message)]


def _add_column(where: Where, table: str, command: Node, offset: int) -> list[Hit]:
    definition = child(command, "def_")
    if definition is None:
        return []
    name = text(definition, "colname") or "?"
    if flag(command, "missing_ok") and where.catalog.exists(table, name):
        return []  # IF NOT EXISTS on a column that is there: nothing is added
    where_ = f"{table}.{name}"
    size = where.size(table)
    hits: list[Hit] = []
    rewrite = _rewriting_column(definition)
    if rewrite:
        hits.append(
            Hit(
                "adding-field-with-default",
                offset,
                f"ADD COLUMN {where_} {rewrite}: every row of {table} is rewritten under ACCESS "
                f"EXCLUSIVE{size}",
            )
        )
    kinds = [constraint_type(c) for c in children(definition, "constraints")]
    if ("NOTNULL" in kinds or "PRIMARY" in kinds) and "DEFAULT" not in kinds and not rewrite:
        hits.append(
            Hit(
                "adding-required-field",
                offset,
                f"ADD COLUMN {where_} NOT NULL without a default fails when {table} has rows{size}",
            )
        )
    for kind in ("UNIQUE", "PRIMARY"):
        if kind in kinds:
            hits.append(_key(table, kind, f"ADD COLUMN {where_} {_KEY_WORDS[kind]}", offset, size))
    return hits


def _rewriting_column(definition: Node) -> str:
    """Why adding this column writes every row ("" when it does not): a volatile default, an
    identity, a stored generated column, a serial."""
    type_node = child(definition, "typeName")
    if type_node is not None and sql_type(type_node).name in _SERIAL_TYPES:
        return f"{sql_type(type_node).name} fills every row from a sequence (nextval() is volatile)"
    for constraint in children(definition, "constraints"):
        kind = constraint_type(constraint)
        if kind == "DEFAULT":
            volatile, unknown = volatile_calls(child(constraint, "raw_expr"))
            if volatile or unknown:
                called = ", ".join(f"{f}()" for f in volatile + unknown)
                why = "is volatile" if volatile else "has unknown volatility, assumed volatile"
                return f"DEFAULT {called} {why}"
        elif kind == "IDENTITY":
            return "GENERATED AS IDENTITY numbers every row"
        elif kind == "GENERATED":
            return "GENERATED ... STORED computes every row"
    return ""


_KEY_WORDS = {"UNIQUE": "UNIQUE", "PRIMARY": "PRIMARY KEY"}


def _key(table: str, kind: str, what: str, offset: int, size: str) -> Hit:
    rule = "disallowed-unique-constraint" if kind == "UNIQUE" else "adding-serial-primary-key-field"
    message = f"{what} builds its index under ACCESS EXCLUSIVE: reads and writes on {table} wait{size}"
    return Hit(rule, offset, message)


def _add_constraint(where: Where, table: str, command: Node, offset: int) -> list[Hit]:
    constraint = child(command, "def_")
    if constraint is None:
        return []
    kind = constraint_type(constraint)
    name = text(constraint, "conname")
    label = f"{_KEY_WORDS.get(kind, kind)} {name}" if name else _KEY_WORDS.get(kind, kind)
    size = where.size(table)
    if kind in ("FOREIGN", "CHECK") and not flag(constraint, "skip_validation"):
        what = "FOREIGN KEY" if kind == "FOREIGN" else "CHECK"
        shown = f"{what} {name}" if name else what
        blocked = "writes to both tables wait" if kind == "FOREIGN" else "reads and writes wait"
        message = f"ADD {shown} without NOT VALID checks every row of {table} while {blocked}{size}"
        return [Hit("constraint-missing-not-valid", offset, message)]
    if kind in ("UNIQUE", "PRIMARY") and text(constraint, "indexname") is None:
        return [_key(table, kind, f"ADD {label}", offset, size)]
    return []


def _validate(where: Where, table: str, command: Node, offset: int) -> list[Hit]:
    name = text(command, "name") or "?"
    if not where.state.added_here(table, name):
        return []
    message = (
        f"VALIDATE CONSTRAINT {name} runs in the transaction that added it NOT VALID: the ADD's lock "
        f"is held while every row of {table} is checked, as if NOT VALID were not there"
    )
    return [
        Hit(
            "constraint-missing-not-valid",
            offset,
            message,
            "validate it in a later migration (each migration is its own transaction)",
        )
    ]


def _set_not_null(where: Where, table: str, command: Node, offset: int) -> list[Hit]:
    column = text(command, "name") or "?"
    if where.state.proves_not_null(table, column):
        return []
    message = (
        f"SET NOT NULL on {table}.{column} reads every row under ACCESS EXCLUSIVE: reads and writes "
        f"wait{where.size(table)}"
    )
    return [Hit("adding-not-nullable-field", offset, message)]


def _drop_column(where: Where, table: str, command: Node, offset: int) -> list[Hit]:
    column = text(command, "name") or "?"
    if flag(command, "missing_ok") and where.catalog.exists(table, column) is False:
        return []
    message = (
        f"DROP COLUMN {table}.{column} deletes its values{where.size(table)}; code that still uses it fails"
    )
    return [Hit("ban-drop-column", offset, message)]


_SUBCOMMANDS: dict[str, Callable[[Where, str, Node, int], list[Hit]]] = {
    "AT_AlterColumnType": _type,
    "AT_AddColumn": _add_column,
    "AT_AddConstraint": _add_constraint,
    "AT_ValidateConstraint": _validate,
    "AT_SetNotNull": _set_not_null,
    "AT_DropColumn": _drop_column,
}


# -- other statements -------------------------------------------------------------------------


def _index(where: Where) -> list[Hit]:
    table = relation(child(where.node, "relation"))
    if flag(where.node, "concurrent") or table is None or where.state.is_new(table):
        return []
    if not any(w.kind == "build" for w in where.analysis.work):
        return []  # IF NOT EXISTS on an index that is there: nothing is built
    name = text(where.node, "idxname")
    index = f"CREATE {'UNIQUE ' if flag(where.node, 'unique') else ''}INDEX{' ' + name if name else ''}"
    message = (
        f"{index} without CONCURRENTLY: writes to {table} wait until the index is built{where.size(table)}"
    )
    return [Hit("require-concurrent-index-creation", 0, message)]


def _drop(where: Where) -> list[Hit]:
    hits: list[Hit] = []
    for change in where.analysis.changes:
        if where.state.is_new(change.table):
            continue
        if change.op == "drop_table":
            message = f"DROP TABLE {change.table} deletes the table and its rows{where.size(change.table)}"
            hits.append(Hit("ban-drop-table", 0, message))
        elif change.op == "drop_index" and not flag(where.node, "concurrent"):
            on = f"its table {change.table}" if change.table != change.name else "its table"
            message = (
                f"DROP INDEX {change.name} without CONCURRENTLY takes ACCESS EXCLUSIVE on {on}: every "
                "query on it waits, and waits behind the queries already running"
            )
            hits.append(Hit("require-concurrent-index-deletion", 0, message))
    return hits


_RENAMED_TABLES = frozenset({"OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_FOREIGN_TABLE"})


def _rename(where: Where) -> list[Hit]:
    what = enum(where.node, "renameType")
    range_var = child(where.node, "relation")
    target = relation(range_var)
    if target is None or where.state.is_new(target) or where.catalog.exists(target) is False:
        return []
    starts = clause_starts(where.statement.sql, getattr(range_var, "location", 0))
    offset = starts[0] if starts else 0
    new_name = text(where.node, "newname") or "?"
    if what in _RENAMED_TABLES:
        message = f"RENAME {target} TO {new_name}: code that uses {target} fails from the moment it commits"
        return [Hit("renaming-table", offset, message)]
    if what == "OBJECT_COLUMN":
        old = text(where.node, "subname") or "?"
        message = (
            f"RENAME COLUMN {target}.{old} TO {new_name}: code that uses {old} fails from the moment "
            "it commits"
        )
        return [Hit("renaming-column", offset, message)]
    return []


def _dml(where: Where) -> list[Hit]:
    table = relation(child(where.node, "relation"))
    if table is None or child(where.node, "whereClause") is not None or where.state.is_new(table):
        return []
    if kind_of(where.node) == "DeleteStmt":
        done = f"deletes every row of {table}{where.size(table)}"
    else:
        done = f"writes every row of {table}{where.size(table)} in one transaction"
    message = f"{where.analysis.kind} without WHERE {done}; each row stays locked until it commits"
    return [Hit("update-or-delete-without-where", 0, message)]


_BY_KIND: dict[str, Callable[[Where], list[Hit]]] = {
    "AlterTableStmt": _alter_table,
    "IndexStmt": _index,
    "DropStmt": _drop,
    "RenameStmt": _rename,
    "UpdateStmt": _dml,
    "DeleteStmt": _dml,
}
