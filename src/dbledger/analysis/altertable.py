"""ALTER TABLE, one subcommand at a time.

Lock levels are those of PostgreSQL 15's ``AlterTableGetLockLevel`` as the ALTER TABLE page
documents them ("an ACCESS EXCLUSIVE lock is acquired unless explicitly noted"): SHARE UPDATE
EXCLUSIVE for SET STATISTICS, per-attribute options, CLUSTER ON, VALIDATE CONSTRAINT, ATTACH
PARTITION (on the parent) and the autovacuum/fillfactor family of storage parameters; SHARE ROW
EXCLUSIVE for ADD FOREIGN KEY (on both tables) and ENABLE/DISABLE TRIGGER. Several subcommands
in one statement take the strongest of their locks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from dbledger.analysis.model import (
    ACCESS_EXCLUSIVE,
    ROW_SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    Catalog,
    Change,
    ForeignKey,
    Work,
)
from dbledger.analysis.naming import foreign_key_name
from dbledger.analysis.nodes import (
    Node,
    SqlType,
    child,
    children,
    enum,
    flag,
    parse_type,
    relation,
    sql_type,
    strings,
    text,
)
from dbledger.analysis.rules import (
    Builder,
    TypeChange,
    constraint_type,
    display,
    plain_using,
    type_change,
    volatile_calls,
)

# Storage parameters PostgreSQL changes under SHARE UPDATE EXCLUSIVE (reloptions.c gives each its
# lock level); any other parameter takes ACCESS EXCLUSIVE.
_LIGHT_RELOPTIONS = frozenset(
    {
        "fillfactor",
        "parallel_workers",
        "toast_tuple_target",
        "vacuum_index_cleanup",
        "vacuum_truncate",
        "log_autovacuum_min_duration",
    }
)
_SERIAL_TYPES = frozenset({"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"})

# Subcommands that change only catalog rows, with the lock each takes.
_CATALOG_ONLY = {
    "AT_DropNotNull": ACCESS_EXCLUSIVE,
    "AT_ColumnDefault": ACCESS_EXCLUSIVE,
    "AT_DropExpression": ACCESS_EXCLUSIVE,
    "AT_SetStatistics": SHARE_UPDATE_EXCLUSIVE,
    "AT_SetOptions": SHARE_UPDATE_EXCLUSIVE,
    "AT_ResetOptions": SHARE_UPDATE_EXCLUSIVE,
    "AT_SetStorage": ACCESS_EXCLUSIVE,
    "AT_SetCompression": ACCESS_EXCLUSIVE,
    "AT_AlterConstraint": ACCESS_EXCLUSIVE,
    "AT_ClusterOn": SHARE_UPDATE_EXCLUSIVE,
    "AT_DropCluster": SHARE_UPDATE_EXCLUSIVE,
    "AT_DropOids": ACCESS_EXCLUSIVE,
    "AT_EnableRule": ACCESS_EXCLUSIVE,
    "AT_EnableAlwaysRule": ACCESS_EXCLUSIVE,
    "AT_EnableReplicaRule": ACCESS_EXCLUSIVE,
    "AT_DisableRule": ACCESS_EXCLUSIVE,
    "AT_EnableRowSecurity": ACCESS_EXCLUSIVE,
    "AT_DisableRowSecurity": ACCESS_EXCLUSIVE,
    "AT_ForceRowSecurity": ACCESS_EXCLUSIVE,
    "AT_NoForceRowSecurity": ACCESS_EXCLUSIVE,
    "AT_AddOf": ACCESS_EXCLUSIVE,
    "AT_DropOf": ACCESS_EXCLUSIVE,
    "AT_ReplicaIdentity": ACCESS_EXCLUSIVE,
    "AT_ChangeOwner": ACCESS_EXCLUSIVE,
    "AT_GenericOptions": ACCESS_EXCLUSIVE,
    "AT_AlterColumnGenericOptions": ACCESS_EXCLUSIVE,
    "AT_AddIdentity": ACCESS_EXCLUSIVE,
    "AT_SetIdentity": ACCESS_EXCLUSIVE,
    "AT_DropIdentity": ACCESS_EXCLUSIVE,
    "AT_DetachPartitionFinalize": SHARE_UPDATE_EXCLUSIVE,
    **dict.fromkeys(
        (
            "AT_EnableTrig",
            "AT_EnableAlwaysTrig",
            "AT_EnableReplicaTrig",
            "AT_DisableTrig",
            "AT_EnableTrigAll",
            "AT_DisableTrigAll",
            "AT_EnableTrigUser",
            "AT_DisableTrigUser",
        ),
        SHARE_ROW_EXCLUSIVE,
    ),
}
# Subcommands that write the whole table into a new file.
_REWRITES = {
    "AT_SetLogged": "SET LOGGED rewrites the table (and writes it all to WAL)",
    "AT_SetUnLogged": "SET UNLOGGED rewrites the table",
    "AT_SetAccessMethod": "SET ACCESS METHOD rewrites the table (unless it already uses that method)",
    "AT_SetTableSpace": "SET TABLESPACE copies the table's files (unless it is already there)",
    "AT_SetExpression": "SET EXPRESSION recomputes the generated column: the table is rewritten",
}


def alter_table(statement: Node, catalog: Catalog, out: Builder) -> None:
    table = relation(child(statement, "relation"))
    if table is None:
        out.unknown = True
        return
    out.touch(table)
    if flag(statement, "missing_ok") and catalog.exists(table) is False:
        out.note(f"{table} does not exist: IF EXISTS skips the statement, nothing is locked or changed")
        return
    for command in children(statement, "cmds"):
        _subcommand(table, command, catalog, out)


def _subcommand(table: str, command: Node, catalog: Catalog, out: Builder) -> None:
    subtype = enum(command, "subtype")
    if subtype in _CATALOG_ONLY:
        out.lock(table, _CATALOG_ONLY[subtype])
        definition = child(command, "def_")
        if subtype == "AT_ColumnDefault":
            verb = "SET DEFAULT" if definition is not None else "DROP DEFAULT"
            column = text(command, "name")
            out.note(f"{verb} on {table}.{column} changes the catalog only: existing rows keep their values")
    elif subtype in _REWRITES:
        out.lock(table, ACCESS_EXCLUSIVE)
        out.rewrite(table)
        out.note(_REWRITES[subtype])
    else:
        _SUBCOMMANDS.get(subtype, _unanalysed)(table, command, catalog, out)


def _unanalysed(table: str, command: Node, catalog: Catalog, out: Builder) -> None:
    out.lock(table, ACCESS_EXCLUSIVE)
    out.unknown = True
    out.note(f"ALTER TABLE subcommand {enum(command, 'subtype').removeprefix('AT_')} is not analysed")


def _set_not_null(table: str, command: Node, catalog: Catalog, out: Builder) -> None:
    column = text(command, "name")
    out.lock(table, ACCESS_EXCLUSIVE)
    out.work(Work("scan", table))
    out.note(
        f"SET NOT NULL on {table}.{column} reads every row under the lock (skipped when a valid "
        f"CHECK ({column} IS NOT NULL) constraint exists)"
    )


def _rel_options(table: str, command: Node, catalog: Catalog, out: Builder) -> None:
    names = [text(option, "defname") or "" for option in children(command, "def_")]
    light = all(n in _LIGHT_RELOPTIONS or n.startswith(("autovacuum_", "toast.")) for n in names)
    out.lock(table, SHARE_UPDATE_EXCLUSIVE if light else ACCESS_EXCLUSIVE)


def _inherit(table: str, command: Node, catalog: Catalog, out: Builder) -> None:
    out.lock(table, ACCESS_EXCLUSIVE)
    parent = relation(child(command, "def_"))
    if parent is not None:
        out.lock(parent, ACCESS_EXCLUSIVE)


def _detach(table: str, command: Node, catalog: Catalog, out: Builder) -> None:
    definition = child(command, "def_")
    partition = relation(child(definition, "name")) if definition is not None else None
    concurrent = definition is not None and flag(definition, "concurrent")
    mode = SHARE_UPDATE_EXCLUSIVE if concurrent else ACCESS_EXCLUSIVE
    out.lock(table, mode)
    if partition is not None:
        # Before PostgreSQL 14 the partition itself took only SHARE UPDATE EXCLUSIVE.
        version = catalog.server_version()
        out.lock(partition, SHARE_UPDATE_EXCLUSIVE if version is not None and version < 140000 else mode)
    out.transactional = out.transactional and not concurrent


@dataclass
class _NewColumn:
    """What ADD COLUMN's type and constraints say about the work it does."""

    where: str
    rewrite: bool = False
    has_default: bool = False
    not_null: bool = False
    keys: list[Node] = field(default_factory=list)


def _add_column(table: str, command: Node, catalog: Catalog, out: Builder) -> None:
    out.lock(table, ACCESS_EXCLUSIVE)
    definition = child(command, "def_")
    if definition is None:
        return
    name = text(definition, "colname") or "?"
    if flag(command, "missing_ok") and catalog.exists(table, name):
        out.note(f"{table}.{name} exists: IF NOT EXISTS adds nothing (the table is still locked)")
        return
    type_node = child(definition, "typeName")
    new_type = sql_type(type_node) if type_node is not None else None
    column = _NewColumn(f"{table}.{name}")
    noted = len(out.notes)
    if new_type is not None:
        out.change(Change("column", table, column=name, type=display(new_type)))
    if new_type is not None and new_type.name in _SERIAL_TYPES:
        column.rewrite = True
        out.note(
            f"ADD COLUMN {column.where} {new_type.name}: nextval() fills every row, the table is rewritten"
        )
    for constraint in children(definition, "constraints"):
        _column_constraint(table, column, constraint, out)
    for constraint in column.keys:
        # A new column without a default is NULL in every row: PostgreSQL marks the key valid
        # without checking anything. With a default, every row's value is looked up.
        _foreign_key(table, constraint, catalog, out, columns=(name,), validate=column.has_default)
    if column.rewrite:
        out.rewrite(table)
    elif column.not_null and not column.has_default:
        out.work(Work("scan", table))
        out.note(
            f"ADD COLUMN {column.where} NOT NULL without a default checks every row "
            "(fails unless the table is empty)"
        )
    elif len(out.notes) == noted:
        out.note(f"ADD COLUMN {column.where} without a default: catalog only")


def _column_constraint(table: str, column: _NewColumn, constraint: Node, out: Builder) -> None:
    kind = constraint_type(constraint)
    where = column.where
    if kind == "DEFAULT":
        column.has_default = True
        volatile, unknown = volatile_calls(child(constraint, "raw_expr"))
        if volatile or unknown:
            column.rewrite = True
            called = ", ".join(f"{f}()" for f in volatile + unknown)
            why = "is volatile" if volatile else "has unknown volatility, assumed volatile"
            out.note(
                f"ADD COLUMN {where} DEFAULT {called} {why}: each row gets its own value, "
                "the table is rewritten"
            )
        else:
            out.note(
                f"ADD COLUMN {where} with a non-volatile default: evaluated once and kept in the "
                "catalog, no row is touched (PostgreSQL 11+)"
            )
    elif kind == "IDENTITY":
        column.rewrite = True
        out.note(f"ADD COLUMN {where} GENERATED AS IDENTITY numbers every row: the table is rewritten")
    elif kind == "GENERATED":
        column.rewrite = True
        out.note(f"ADD COLUMN {where} GENERATED ... STORED computes every row: the table is rewritten")
    elif kind == "NOTNULL":
        column.not_null = True
    elif kind in ("PRIMARY", "UNIQUE"):
        column.not_null = column.not_null or kind == "PRIMARY"
        out.work(Work("build", table))
        out.note(
            f"ADD COLUMN {where} {kind.replace('PRIMARY', 'PRIMARY KEY')} builds an index under the lock"
        )
    elif kind == "CHECK":
        out.work(Work("scan", table))
        out.note(f"ADD COLUMN {where} CHECK (...) checks every row under the lock")
    elif kind == "FOREIGN":
        column.keys.append(constraint)


def _drop_column(table: str, command: Node, catalog: Catalog, out: Builder) -> None:
    column = text(command, "name") or "?"
    out.lock(table, ACCESS_EXCLUSIVE)
    if flag(command, "missing_ok") and catalog.exists(table, column) is False:
        out.note(f"{table}.{column} does not exist: IF EXISTS drops nothing (the table is still locked)")
        return
    out.destructive = True
    out.change(Change("column", table, column=column, type=None))
    out.note(
        f"DROP COLUMN {table}.{column} deletes its data; catalog only (the space is reclaimed by "
        "later rewrites)"
    )
    for key in catalog.foreign_keys(table):
        if key.table == table and column in key.columns and key.referenced != table:
            out.lock(key.referenced, ACCESS_EXCLUSIVE)  # its foreign key goes with the column
            out.change(Change("drop_constraint", table, name=key.name))


def _alter_type(table: str, column: str, definition: Node | None, catalog: Catalog, out: Builder) -> None:
    out.lock(table, ACCESS_EXCLUSIVE)
    type_node = child(definition, "typeName") if definition is not None else None
    if type_node is None:
        out.unknown = True
        return
    new = sql_type(type_node)
    using = child(definition, "raw_default") if definition is not None else None
    change = _column_type_change(table, column, catalog.column_type(table, column), new, using)
    out.note(change.why)
    if definition is not None and child(definition, "collClause") is not None:
        out.note(f"COLLATE on {table}.{column}: indexes on the column are rebuilt")
    if change.rewrites:
        out.rewrite(table, columns=1)
    # A widening (integer -> bigint) rewrites every row but destroys nothing.
    out.destructive = out.destructive or not change.lossless
    out.change(Change("column", table, column=column, type=display(new)))
    # Foreign keys on the column are dropped and re-created: the other table is locked too, and a
    # rewrite re-validates them.
    for key in catalog.foreign_keys(table):
        if not _on_column(key, table, column):
            continue
        other = key.referenced if key.table == table else key.table
        out.lock(other, ACCESS_EXCLUSIVE)
        if change.rewrites:
            out.work(Work("join", key.table, other=key.referenced))
            out.note(
                f"foreign key {key.name} is re-created and re-validated ({key.table} -> {key.referenced})"
            )


def _column_type_change(
    table: str, column: str, current: str | None, new: SqlType, using: Node | None
) -> TypeChange:
    """What ALTER COLUMN TYPE does to a column of type ``current``. When that type is unknown,
    or USING computes the values, the table is assumed rewritten and values lost."""
    where = f"{table}.{column}"
    old = parse_type(current) if current is not None else None
    if old is None:
        why = (
            f"{where} -> {display(new)}: current type unknown (column not found), assumed to rewrite "
            "the table"
        )
        return TypeChange(rewrites=True, lossless=False, why=why)
    if not plain_using(using, column, new):
        why = (
            f"{where} {display(old)} -> {display(new)} with a USING expression: computed for every row, "
            "the table is rewritten"
        )
        return TypeChange(rewrites=True, lossless=False, why=why)
    change = type_change(old, new)
    return replace(change, why=f"{where} {change.why}")


def _on_column(key: ForeignKey, table: str, column: str) -> bool:
    """Whether a foreign key uses ``table.column``. A key added without naming the columns it
    references uses the primary key, which the analysis may not know: assumed to be it."""
    if key.table == table and column in key.columns:
        return True
    return key.referenced == table and (column in key.referenced_columns or not key.referenced_columns)


def _add_constraint(table: str, constraint: Node | None, catalog: Catalog, out: Builder) -> None:
    if constraint is None:
        out.lock(table, ACCESS_EXCLUSIVE)
        out.unknown = True
        return
    kind = constraint_type(constraint)
    name = text(constraint, "conname") or "(unnamed)"
    not_valid = flag(constraint, "skip_validation")
    if kind == "FOREIGN":
        _foreign_key(table, constraint, catalog, out)
        return
    out.lock(table, ACCESS_EXCLUSIVE)
    if kind == "CHECK":
        if not_valid:
            out.note(
                f"CHECK {name} NOT VALID: catalog only; existing rows are checked by VALIDATE CONSTRAINT"
            )
        else:
            out.work(Work("scan", table))
            out.note(f"CHECK {name} reads every row under ACCESS EXCLUSIVE (add it NOT VALID, then VALIDATE)")
    elif kind in ("PRIMARY", "UNIQUE", "EXCLUSION"):
        if text(constraint, "indexname") is not None:
            out.note(f"{kind.title()} {name} USING INDEX: adopts an existing index, no build")
        else:
            out.work(Work("build", table))
            out.change(Change("add_index", table, name=name))
            out.note(
                f"{kind.replace('PRIMARY', 'PRIMARY KEY')} {name} builds an index under ACCESS "
                "EXCLUSIVE (build it first with CREATE UNIQUE INDEX CONCURRENTLY, then add USING INDEX)"
            )
    elif kind == "NOTNULL":
        out.work(Work("scan", table))
    else:
        out.unknown = True
        out.note(f"constraint {name} ({kind}) is not analysed")


def _foreign_key(
    table: str,
    constraint: Node,
    catalog: Catalog,
    out: Builder,
    columns: tuple[str, ...] = (),
    *,
    validate: bool = True,
) -> None:
    """ADD FOREIGN KEY: SHARE ROW EXCLUSIVE on both tables (it adds triggers to both), and unless
    NOT VALID a query that looks up every row's key in the referenced table."""
    referenced = relation(child(constraint, "pktable")) or "?"
    columns = strings(children(constraint, "fk_attrs")) or columns
    name = text(constraint, "conname") or foreign_key_name(table, columns, _key_names(table, catalog, out))
    out.lock(table, SHARE_ROW_EXCLUSIVE)
    out.lock(referenced, SHARE_ROW_EXCLUSIVE)
    key = ForeignKey(
        name=name,
        table=table,
        columns=columns,
        referenced=referenced,
        referenced_columns=strings(children(constraint, "pk_attrs")),
    )
    out.change(Change("add_fk", table, name=name, foreign_key=key))
    if not validate:
        out.note(f"FOREIGN KEY {name} on a new column without a default: nothing to check, catalog only")
    elif flag(constraint, "skip_validation"):
        out.note(
            f"FOREIGN KEY {name} NOT VALID: catalog only; existing rows are checked by VALIDATE CONSTRAINT"
        )
    else:
        out.work(Work("join", table, other=referenced))
        out.note(
            f"FOREIGN KEY {name} checks every row of {table} against {referenced}, writes to both "
            "wait meanwhile (add it NOT VALID, then VALIDATE)"
        )


def _key_names(table: str, catalog: Catalog, out: Builder) -> set[str]:
    """Names of the foreign keys on ``table``, this statement's included: an unnamed key skips them."""
    names = {key.name for key in catalog.foreign_keys(table) if key.table == table}
    return names | {c.name for c in out.changes if c.op == "add_fk" and c.table == table and c.name}


def _validate(table: str, name: str, catalog: Catalog, out: Builder) -> None:
    out.lock(table, SHARE_UPDATE_EXCLUSIVE)
    for key in catalog.foreign_keys(table):
        if key.name == name and key.table == table:
            out.lock(key.referenced, ROW_SHARE)
            out.work(Work("join", table, other=key.referenced))
            break
    else:
        out.work(Work("scan", table))
    out.note(f"VALIDATE CONSTRAINT {name} reads every row; reads and writes go on meanwhile")


def _drop_constraint(table: str, name: str, catalog: Catalog, out: Builder) -> None:
    out.lock(table, ACCESS_EXCLUSIVE)
    out.change(Change("drop_constraint", table, name=name))
    for key in catalog.foreign_keys(table):
        if key.name == name and key.table == table and key.referenced != table:
            # Its triggers on the referenced table are dropped too.
            out.lock(key.referenced, ACCESS_EXCLUSIVE)
            out.note(f"dropping foreign key {name} also locks {key.referenced} ACCESS EXCLUSIVE")


def _attach(table: str, definition: Node | None, out: Builder) -> None:
    out.lock(table, SHARE_UPDATE_EXCLUSIVE)
    partition = relation(child(definition, "name")) if definition is not None else None
    if partition is not None:
        out.lock(partition, ACCESS_EXCLUSIVE)
        out.work(Work("scan", partition))
        out.note(
            f"ATTACH PARTITION reads every row of {partition} to check the bounds (skipped when a "
            "CHECK constraint already proves them)"
        )


# ALTER TABLE subcommands with an analysis of their own, by pglast's subtype name.
_SUBCOMMANDS: dict[str, Callable[[str, Node, Catalog, Builder], None]] = {
    "AT_AddColumn": _add_column,
    "AT_DropColumn": _drop_column,
    "AT_AlterColumnType": lambda table, command, catalog, out: _alter_type(
        table, text(command, "name") or "?", child(command, "def_"), catalog, out
    ),
    "AT_SetNotNull": _set_not_null,
    "AT_AddConstraint": lambda table, command, catalog, out: _add_constraint(
        table, child(command, "def_"), catalog, out
    ),
    "AT_ValidateConstraint": lambda table, command, catalog, out: _validate(
        table, text(command, "name") or "?", catalog, out
    ),
    "AT_DropConstraint": lambda table, command, catalog, out: _drop_constraint(
        table, text(command, "name") or "?", catalog, out
    ),
    "AT_SetRelOptions": _rel_options,
    "AT_ResetRelOptions": _rel_options,
    "AT_ReplaceRelOptions": _rel_options,
    "AT_AddInherit": _inherit,
    "AT_DropInherit": _inherit,
    "AT_AttachPartition": lambda table, command, catalog, out: _attach(table, child(command, "def_"), out),
    "AT_DetachPartition": _detach,
}
