"""Read a SQLite schema into a ``SchemaModel``: tables and columns (``PRAGMA table_xinfo``),
primary keys, foreign keys and UNIQUE constraints (``PRAGMA foreign_key_list`` / ``index_list``),
explicit indexes, triggers and views (their stored ``CREATE`` text modulo whitespace).

SQLite keeps no names for inline constraints and no catalog of CHECK constraints: constraints are
named after what they cover (``primary key (id)``, ``foreign key (org_id)``), and CHECK
constraints are not compared (they live only in the table's ``CREATE`` text, which
``ALTER TABLE ... ADD COLUMN`` rewrites, so comparing that text would report drift where there is
none). Declared types are compared upper-cased, as SQLite's affinity rules read them.
"""

from __future__ import annotations

import sqlite3

from dbledger.schema.model import Column, Constraint, Index, SchemaModel, Table, Trigger, View, sorted_by_key
from dbledger.schema.normalise import normalise_space, quote_identifier

_OBJECTS = (
    "SELECT type, name, tbl_name, sql FROM sqlite_master"
    " WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name"
)
_GENERATED = {2: "VIRTUAL", 3: "STORED"}


def introspect_sqlite(conn: sqlite3.Connection, ledger_tables: tuple[str, ...] = ()) -> SchemaModel:
    """The schema of the ``main`` database behind ``conn``, dbledger's ``ledger_tables`` left out."""
    own = {table.lower() for table in ledger_tables}
    tables: list[Table] = []
    indexes: list[Index] = []
    views: list[View] = []
    triggers: list[Trigger] = []
    for kind, name, table, text in conn.execute(_OBJECTS).fetchall():
        if table.lower() in own:
            continue
        if kind == "table":
            tables.append(_table(conn, name))
        elif kind == "index" and text is not None:  # autoindexes (no sql) are UNIQUE/PK constraints
            indexes.append(Index(quote_identifier(name), quote_identifier(table), normalise_space(text)))
        elif kind == "view":
            views.append(View(quote_identifier(name), normalise_space(text)))
        elif kind == "trigger":
            triggers.append(Trigger(quote_identifier(name), quote_identifier(table), normalise_space(text)))
    return SchemaModel(
        dialect="sqlite",
        tables=sorted_by_key(tables),
        indexes=sorted_by_key(indexes),
        views=sorted_by_key(views),
        triggers=sorted_by_key(triggers),
    )


def _table(conn: sqlite3.Connection, name: str) -> Table:
    columns: list[Column] = []
    primary: list[tuple[int, str]] = []
    for cid, column, type_, notnull, default, pk, hidden in conn.execute(
        'SELECT cid, name, type, "notnull", dflt_value, pk, hidden FROM pragma_table_xinfo(?)', (name,)
    ):
        if hidden == 1:  # a virtual table's hidden column
            continue
        quoted = quote_identifier(column)
        columns.append(
            Column(
                name=quoted,
                type=normalise_space(type_).upper(),
                nullable=not notnull and not pk,
                default=default,
                generated=_GENERATED.get(hidden),
                position=cid + 1,
            )
        )
        if pk:
            primary.append((pk, quoted))
    constraints: list[Constraint] = []
    if primary:
        keys = ", ".join(column for _, column in sorted(primary))
        constraints.append(Constraint(f"primary key ({keys})", "primary key", f"PRIMARY KEY ({keys})"))
    constraints.extend(_foreign_keys(conn, name))
    for _, index, unique, origin, _partial in conn.execute("PRAGMA index_list(" + _literal(name) + ")"):
        if unique and origin == "u":
            keys = ", ".join(
                quote_identifier(column)
                for _, _, column in conn.execute("PRAGMA index_info(" + _literal(index) + ")")
            )
            constraints.append(Constraint(f"unique ({keys})", "unique", f"UNIQUE ({keys})"))
    return Table(quote_identifier(name), sorted_by_key(columns), sorted_by_key(constraints))


def _foreign_keys(conn: sqlite3.Connection, table: str) -> list[Constraint]:
    groups: dict[int, list[tuple[str, str, str | None, str, str]]] = {}
    for key, _seq, parent, column, target, on_update, on_delete, _match in conn.execute(
        'SELECT id, seq, "table", "from", "to", on_update, on_delete, match'
        " FROM pragma_foreign_key_list(?) ORDER BY id, seq",
        (table,),
    ):
        groups.setdefault(key, []).append((parent, column, target, on_update, on_delete))
    found = []
    for rows in groups.values():
        parent, _, _, on_update, on_delete = rows[0]
        columns = ", ".join(quote_identifier(column) for _, column, _, _, _ in rows)
        targets = ", ".join(quote_identifier(target) for _, _, target, _, _ in rows if target)
        reference = f"{quote_identifier(parent)}({targets})" if targets else quote_identifier(parent)
        definition = f"FOREIGN KEY ({columns}) REFERENCES {reference}"
        definition += f" ON UPDATE {on_update} ON DELETE {on_delete}"
        found.append(
            Constraint(
                f"foreign key ({columns})",
                "foreign key",
                definition,
                on_delete=on_delete,
                on_update=on_update,
            )
        )
    return found


def _literal(text: str) -> str:
    """A SQL string literal: PRAGMA arguments cannot be bound parameters."""
    return "'" + text.replace("'", "''") + "'"
