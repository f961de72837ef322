"""Read a PostgreSQL schema into a ``SchemaModel``: one catalog query per kind of object, never
one per table, so the cost grows with the catalog's size, not with round trips (see
docs/drift.md for measurements on 10, 100 and 1000 tables).

Definitions come from the server's own deparsers (``format_type``, ``pg_get_constraintdef``,
``pg_get_indexdef``, ``pg_get_viewdef``, ``pg_get_triggerdef``), which print names relative to
``search_path``. The queries therefore run in one transaction with ``search_path`` set to
``pg_catalog, public``, so the text does not depend on the caller's session. The same DDL gives
the same model on PostgreSQL 13 to 18 (tests/test_postgres_versions.py): where the catalogs differ
(SQL-standard bodies from 14, NOT NULL constraints in ``pg_constraint`` from 18), the queries
read each version's own way.

A target schema (one tenant of a schema-per-tenant database) narrows every query to the objects
in that schema: other tenants' tables, and what the tenant only uses from elsewhere (an
extension in ``public``, a shared function), are not part of its model.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import psycopg
from psycopg import sql

from dbledger.schema.model import (
    Column,
    Constraint,
    Domain,
    Enum,
    Extension,
    Function,
    Index,
    SchemaModel,
    Sequence,
    Table,
    Trigger,
    View,
    sorted_by_key,
)
from dbledger.schema.normalise import (
    normalise_body,
    normalise_expression,
    normalise_space,
    normalise_view,
    procedure_arguments,
)


def _qname(nsp: str, name: str) -> str:
    """SQL for an object's name: schema-qualified except in public, quoted where needed."""
    return (
        f"CASE WHEN {nsp}.nspname = 'public' THEN '' ELSE quote_ident({nsp}.nspname) || '.' END"
        f" || quote_ident({name})"
    )


# Stands for the condition that keeps the objects of the target schema only (``true`` for the
# whole database); filled in at each call, like the ledger's.
_IN_SCOPE = "/*in-scope*/"
_USER_SCHEMA = (
    "{n}.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND {n}.nspname NOT LIKE 'pg\\_toast%' AND {n}.nspname NOT LIKE 'pg\\_temp%'"
    f" AND {_IN_SCOPE}"
)


def _not_extension_member(catalog: str, oid: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{catalog}'::regclass"
        f" AND e.objid = {oid} AND e.deptype = 'e')"
    )


# Stands for the condition that leaves dbledger's own tables out; filled in at each call, since
# where the ledger lives is a setting.
_NOT_LEDGER = "/*not-ledger*/"
# A relation of the user's: not in a system schema, not dbledger's, not an extension's.
_USER_RELATION = (
    _USER_SCHEMA.format(n="n") + f" AND {_NOT_LEDGER} AND " + _not_extension_member("pg_class", "c.oid")
)
_FROM_RELATION = "pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"

_SCHEMAS = f"""
SELECT quote_ident(n.nspname) FROM pg_namespace n
WHERE {_USER_SCHEMA.format(n="n")} AND {_not_extension_member("pg_namespace", "n.oid")}
"""

_EXTENSIONS = f"""
SELECT quote_ident(x.extname), quote_ident(n.nspname)
FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace
WHERE {_IN_SCOPE}
"""

_ENUMS = f"""
SELECT {_qname("n", "t.typname")}, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid
WHERE {_USER_SCHEMA.format(n="n")} AND {_not_extension_member("pg_type", "t.oid")}
GROUP BY t.oid, n.nspname, t.typname
"""

# The checks come from subqueries, not a join grouped by the type: before PostgreSQL 14 the
# catalogs have no primary keys, so grouping by t.oid does not make t's other columns usable.
_DOMAINS = f"""
SELECT {_qname("n", "t.typname")}, format_type(t.typbasetype, t.typtypmod), NOT t.typnotnull,
       t.typdefault,
       ARRAY(SELECT quote_ident(k.conname) FROM pg_constraint k
             WHERE k.contypid = t.oid AND k.contype = 'c' ORDER BY k.conname),
       ARRAY(SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k
             WHERE k.contypid = t.oid AND k.contype = 'c' ORDER BY k.conname)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype = 'd' AND {_USER_SCHEMA.format(n="n")} AND {_not_extension_member("pg_type", "t.oid")}
"""

# Identity columns' sequences (deptype 'i') are part of the column, not objects of their own;
# the sequences of dbledger's serial ids belong to its tables.
_NOT_LEDGER_OWNED = "/*not-ledger-owned*/"
_SEQUENCES = f"""
SELECT {_qname("n", "c.relname")}, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
       s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
       (SELECT {_qname("tn", "t.relname")} || '.' || quote_ident(a.attname)
        FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
        JOIN pg_namespace tn ON tn.oid = t.relnamespace
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a')
FROM pg_sequence s JOIN {_FROM_RELATION} ON c.oid = s.seqrelid
WHERE {_USER_RELATION}
  AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = 'pg_class'::regclass
                  AND i.objid = c.oid AND i.deptype = 'i')
  AND NOT EXISTS (SELECT 1 FROM pg_depend o JOIN pg_class t ON t.oid = o.refobjid
                  JOIN pg_namespace tn ON tn.oid = t.relnamespace
                  WHERE o.classid = 'pg_class'::regclass AND o.objid = c.oid AND o.deptype = 'a'
                    AND NOT {_NOT_LEDGER_OWNED})
"""

_TABLES = f"""
SELECT c.oid, {_qname("n", "c.relname")}, c.relkind FROM {_FROM_RELATION}
WHERE c.relkind IN ('r', 'p', 'f') AND {_USER_RELATION}
"""

_COLUMNS = f"""
SELECT a.attrelid, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
       CASE a.attidentity WHEN 'a' THEN 'ALWAYS' WHEN 'd' THEN 'BY DEFAULT' END,
       CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
       row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum)
FROM pg_attribute a JOIN {_FROM_RELATION} ON c.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f') AND {_USER_RELATION}
"""

# NOT NULL constraints (contype 'n', PostgreSQL 18+) are the columns' nullability already.
_CONSTRAINTS = f"""
SELECT k.conrelid, quote_ident(k.conname), k.contype, pg_get_constraintdef(k.oid),
       k.confdeltype, k.confupdtype, k.condeferrable, k.condeferred
FROM pg_constraint k JOIN {_FROM_RELATION} ON c.oid = k.conrelid
WHERE k.contype <> 'n' AND c.relkind IN ('r', 'p', 'f') AND {_USER_RELATION}
"""

# Indexes that implement a primary key, unique or exclusion constraint are that constraint.
_INDEXES = f"""
SELECT {_qname("n", "i.relname")}, {_qname("n", "c.relname")}, pg_get_indexdef(i.oid), x.indisvalid
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN {_FROM_RELATION} ON c.oid = x.indrelid
WHERE {_USER_RELATION}
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid
                  AND k.conrelid = x.indrelid AND k.contype IN ('p', 'u', 'x'))
"""

_VIEWS = f"""
SELECT {_qname("n", "c.relname")}, pg_get_viewdef(c.oid), c.relkind = 'm' FROM {_FROM_RELATION}
WHERE c.relkind IN ('v', 'm') AND {_USER_RELATION}
"""

# A function's body: its source text, or for a SQL-standard body (BEGIN ATOMIC, PostgreSQL 14+)
# the server's deparse of it; filled in at each call from the server's version.
_BODY = "/*body*/"
_SQL_BODY = "CASE WHEN p.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody(p.oid) ELSE p.prosrc END"
_FUNCTIONS = f"""
SELECT {_qname("n", "p.proname")}, pg_get_function_identity_arguments(p.oid), p.prokind,
       p.prorettype = 'trigger'::regtype, coalesce(pg_get_function_result(p.oid), ''), l.lanname,
       p.provolatile, {_BODY}, p.proisstrict, p.prosecdef, pg_get_function_arguments(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
WHERE {_USER_SCHEMA.format(n="n")} AND {_not_extension_member("pg_proc", "p.oid")}
"""

_TRIGGERS = f"""
SELECT quote_ident(t.tgname), {_qname("n", "c.relname")}, pg_get_triggerdef(t.oid), t.tgenabled
FROM pg_trigger t JOIN {_FROM_RELATION} ON c.oid = t.tgrelid
WHERE NOT t.tgisinternal AND {_USER_RELATION}
"""

_FK_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
_CONSTRAINT_KINDS = {
    "p": "primary key",
    "u": "unique",
    "c": "check",
    "f": "foreign key",
    "x": "exclusion",
    "t": "trigger",
}
_TABLE_KINDS = {"r": "table", "p": "partitioned table", "f": "foreign table"}
_FUNCTION_KINDS = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window function"}
_VOLATILITY = {"i": "IMMUTABLE", "s": "STABLE", "v": "VOLATILE"}
_ENABLED = {"O": "ORIGIN", "D": "DISABLED", "R": "REPLICA", "A": "ALWAYS"}


def ledger_condition(
    conn: psycopg.Connection[Any], schema: str | None, tables: tuple[str, ...], n: str = "n", c: str = "c"
) -> str:
    """SQL true for a relation ``c`` in namespace ``n`` that is not one of dbledger's ``tables``
    in ``schema`` (values quoted by psycopg)."""
    if schema is None:
        return "true"
    names = ", ".join(sql.Literal(table).as_string(conn) for table in tables)
    return f"NOT ({n}.nspname = {sql.Literal(schema).as_string(conn)} AND {c}.relname IN ({names}))"


def scope_condition(conn: psycopg.Connection[Any], schema: str | None, n: str = "n") -> str:
    """SQL true for a namespace ``n`` inside the target: ``schema`` alone, or (None) any."""
    return "true" if schema is None else f"{n}.nspname = {sql.Literal(schema).as_string(conn)}"


def introspect_postgres(
    conn: psycopg.Connection[Any],
    ledger_schema: str | None = None,
    ledger_tables: tuple[str, ...] = (),
    *,
    schema: str | None = None,
) -> SchemaModel:
    """The user schema of the database behind ``conn``: every schema but the system ones (or,
    given a target ``schema``, that one alone), dbledger's tables (``ledger_tables`` in
    ``ledger_schema``) and extensions' objects left out. Runs in a transaction of its own (a
    savepoint when one is open) and changes nothing."""
    not_ledger = ledger_condition(conn, ledger_schema, ledger_tables)
    not_owned = ledger_condition(conn, ledger_schema, ledger_tables, n="tn", c="t")
    in_scope = scope_condition(conn, schema)
    version = conn.info.server_version
    body = _SQL_BODY if version >= 140000 else "p.prosrc"
    # 13 to 15 print a single relation's columns qualified, 16 and later do not: one form.
    view_text = normalise_view if version < 160000 else str
    with conn.transaction():
        conn.execute(b"SET LOCAL search_path = pg_catalog, public")

        def rows(query: str) -> list[tuple[Any, ...]]:
            text = query.replace(_NOT_LEDGER, not_ledger).replace(_NOT_LEDGER_OWNED, not_owned)
            text = text.replace(_BODY, body)
            return conn.execute(text.replace(_IN_SCOPE, in_scope).encode()).fetchall()

        columns: dict[int, list[Column]] = defaultdict(list)
        for relid, name, type_, nullable, default, identity, generated, position in rows(_COLUMNS):
            default = None if default is None else normalise_expression(default)
            columns[relid].append(Column(name, type_, nullable, default, identity, generated, position))
        constraints: dict[int, list[Constraint]] = defaultdict(list)
        for relid, name, kind, definition, on_delete, on_update, deferrable, deferred in rows(_CONSTRAINTS):
            foreign = kind == "f"
            constraints[relid].append(
                Constraint(
                    name,
                    _CONSTRAINT_KINDS.get(kind, kind),
                    normalise_expression(definition),
                    on_delete=_FK_ACTIONS[on_delete] if foreign else None,
                    on_update=_FK_ACTIONS[on_update] if foreign else None,
                    deferrable=_deferrable(deferrable, deferred) if foreign else None,
                )
            )
        tables = [
            Table(name, sorted_by_key(columns[oid]), sorted_by_key(constraints[oid]), _TABLE_KINDS[kind])
            for oid, name, kind in rows(_TABLES)
        ]
        return SchemaModel(
            dialect="postgresql",
            schemas=tuple(sorted(name for (name,) in rows(_SCHEMAS))),
            extensions=sorted_by_key([Extension(*row) for row in rows(_EXTENSIONS)]),
            enums=sorted_by_key([Enum(name, tuple(labels)) for name, labels in rows(_ENUMS)]),
            domains=sorted_by_key([_domain(*row) for row in rows(_DOMAINS)]),
            sequences=sorted_by_key([Sequence(*row) for row in rows(_SEQUENCES)]),
            tables=sorted_by_key(tables),
            indexes=sorted_by_key(
                [Index(n, t, normalise_expression(text), ok) for n, t, text, ok in rows(_INDEXES)]
            ),
            views=sorted_by_key(
                [
                    View(name, normalise_body(view_text(normalise_expression(text))), mat)
                    for name, text, mat in rows(_VIEWS)
                ]
            ),
            functions=sorted_by_key([_function(*_modes_shown(row, version)) for row in rows(_FUNCTIONS)]),
            triggers=sorted_by_key(
                [Trigger(name, table, text, _ENABLED[on]) for name, table, text, on in rows(_TRIGGERS)]
            ),
        )


def _modes_shown(row: tuple[Any, ...], server_version: int) -> tuple[Any, ...]:
    """A procedure's arguments as PostgreSQL 14 and later print them, with the IN that 13 leaves
    out, so that one model holds for both."""
    if server_version >= 140000 or row[2] != "p":
        return row
    name, arguments, *rest, full_arguments = row
    return (name, procedure_arguments(arguments), *rest, procedure_arguments(full_arguments))


def _deferrable(deferrable: bool, deferred: bool) -> str | None:
    if not deferrable:
        return None
    return "DEFERRABLE INITIALLY DEFERRED" if deferred else "DEFERRABLE"


def _domain(
    name: str, type_: str, nullable: bool, default: str | None, names: list[str], definitions: list[str]
) -> Domain:
    checks = tuple(
        Constraint(n, "check", normalise_expression(d)) for n, d in zip(names, definitions, strict=True)
    )
    return Domain(name, type_, nullable, default, checks)


def _function(
    name: str,
    arguments: str,
    kind: str,
    returns_trigger: bool,
    returns: str,
    language: str,
    volatility: str,
    body: str | None,
    strict: bool,
    security_definer: bool,
    full_arguments: str,
) -> Function:
    return Function(
        name=name,
        arguments=arguments,
        kind="trigger function" if returns_trigger else _FUNCTION_KINDS.get(kind, kind),
        returns=returns,
        language=language,
        volatility=_VOLATILITY[volatility],
        body=normalise_body(body or ""),
        strict=strict,
        security_definer=security_definer,
        full_arguments=normalise_space(full_arguments),
    )
