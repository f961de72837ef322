"""Synthetic rows for a rehearsal: fill tables of a scratch database up to a row count, so that a
migration can be timed at the size production will reach, before it has.

    filled = fill(conn, {"public.platform_connections": 1_000_000}, default=None)

One ``INSERT ... SELECT ... FROM generate_series`` per table, composed from the catalog, parents
before children:

* a column with a default keeps it (``now()``, ``'active'``, a sequence), unless it is part of a
  unique index or primary key and the default is not a sequence: those get generated values;
* identity and generated columns are left to the database;
* any other column gets a value made from its type and the row number: numbers, text cut to the
  column's length, UUIDs, timestamps, booleans, JSON, bytea, inet, enums (their labels in turn),
  domains (their base type); unique ones never repeat nor meet the rows already there;
* a foreign key draws from the rows the referenced table holds (after it was filled itself), in
  turn; an empty referenced table leaves a nullable key NULL and refuses a NOT NULL one.

Limits, each a clear error naming the table rather than a wrong fill: a CHECK constraint the
generated value does not meet (a column with such a CHECK and no default), a unique index made of
foreign-key columns or of expressions, a type with no generator (nullable ones are left NULL).
Triggers fire as for any INSERT, so a table an audit trigger writes to grows too; that is what
production does. The database is then vacuumed and analysed, so that its tables look like
long-lived ones to the planner and to the dry run's estimates (which read ``pg_class.reltuples``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from dbledger.errors import ConfigError, DbledgerError
from dbledger.redaction import redact

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = ["Filled", "fill"]


class Filled(NamedTuple):
    """One table the fill topped up: its rows before, how many were added, in how long."""

    table: str
    before: int
    added: int
    seconds: float


@dataclass
class _Column:
    number: int
    name: str
    declared: str  # format_type(): a type expression the database itself wrote
    base: str  # the base type's name (a domain's), e.g. int4, varchar, uuid
    category: str  # pg_type.typcategory of the base type
    enum: bool
    typmod: int
    not_null: bool
    default: str | None
    identity: bool  # identity or generated: the database fills it


@dataclass
class _Table:
    oid: int
    schema: str
    name: str
    columns: list[_Column] = field(default_factory=list)
    unique: list[tuple[int, ...]] = field(default_factory=list)  # column numbers of unique indexes
    keys: list[tuple[tuple[int, ...], int, tuple[int, ...]]] = field(default_factory=list)  # fk

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


_COLUMNS = """
SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
       b.typname, b.typcategory::text, b.typtype = 'e',
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
       a.attnotnull OR (t.typtype = 'd' AND t.typnotnull), pg_get_expr(d.adbin, d.adrelid),
       a.attidentity <> '' OR a.attgenerated <> ''
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
ORDER BY c.oid, a.attnum
"""
_UNIQUE = "SELECT indrelid, indkey::int2[] FROM pg_index WHERE indisunique"
_KEYS = "SELECT conrelid, conkey, confrelid, confkey FROM pg_constraint WHERE contype = 'f' ORDER BY conname"


def fill(
    conn: psycopg.Connection[Any],
    targets: Mapping[str, int],
    *,
    default: int | None = None,
    skip: frozenset[str] = frozenset(),
    progress: Any = None,
) -> list[Filled]:
    """Fill each table of ``targets`` (``table`` or ``schema.table``) to its row count, and with
    ``default`` every other table but those in ``skip`` (``schema.table``: dbledger's own);
    ``progress(table, text)`` is told of each table filled. A table that already holds as many
    rows is left as it is."""
    tables = _read(conn)
    wanted = _wanted(tables, targets, default, skip)
    done: list[Filled] = []
    for table in _parents_first([t for t in tables.values() if t.oid in wanted]):
        before = _count(conn, table)
        if before >= wanted[table.oid]:
            continue
        started = time.monotonic()
        added = wanted[table.oid] - before
        _insert(conn, table, tables, added)
        done.append(Filled(table.qualified, before, added, time.monotonic() - started))
        if progress is not None:
            progress(table.qualified, f"+{added:,} rows in {done[-1].seconds:.1f} s")
    if done:  # every table: triggers may have written to tables the fill did not name
        conn.execute("VACUUM ANALYZE")
    return done


def _read(conn: psycopg.Connection[Any]) -> dict[int, _Table]:
    tables: dict[int, _Table] = {}
    for (
        oid,
        schema,
        name,
        number,
        column,
        declared,
        base,
        category,
        enum,
        typmod,
        nn,
        default,
        auto,
    ) in conn.execute(_COLUMNS):
        table = tables.setdefault(oid, _Table(oid, schema, name))
        table.columns.append(
            _Column(number, column, declared, base, category, enum, typmod, nn, default, auto)
        )
    for oid, columns in conn.execute(_UNIQUE):
        if oid in tables:
            tables[oid].unique.append(tuple(columns))
    for child, columns, parent, referenced in conn.execute(_KEYS):
        if child in tables:
            tables[child].keys.append((tuple(columns), parent, tuple(referenced)))
    return tables


def _wanted(
    tables: dict[int, _Table], targets: Mapping[str, int], default: int | None, skip: frozenset[str]
) -> dict[int, int]:
    """Table oid -> rows wanted; a target that names no table (or two) is a usage error."""
    wanted = {t.oid: default for t in tables.values() if default is not None and t.qualified not in skip}
    for given, rows in targets.items():
        matches = [t for t in tables.values() if given in (t.name, t.qualified)]
        if len(matches) != 1:
            found = (
                "no table"
                if not matches
                else f"{len(matches)} tables ({', '.join(t.qualified for t in matches)})"
            )
            raise ConfigError(
                f"--rows {given}={rows}: {found} of that name in the scratch copy; give TABLE or "
                "SCHEMA.TABLE of a table the live database has"
            )
        if matches[0].qualified in skip:
            raise ConfigError(f"--rows {given}={rows}: {matches[0].qualified} is dbledger's own table")
        wanted[matches[0].oid] = rows
    return {oid: rows for oid, rows in wanted.items() if rows is not None}


def _parents_first(tables: list[_Table]) -> list[_Table]:
    """Referenced tables before the tables that reference them (a cycle is broken where found:
    its keys then draw from the rows already there)."""
    by_oid = {t.oid: t for t in tables}
    ordered: list[_Table] = []
    seen: set[int] = set()

    def visit(table: _Table, path: frozenset[int]) -> None:
        if table.oid in seen or table.oid in path:
            return
        for _, parent, _ in table.keys:
            if parent in by_oid and parent != table.oid:
                visit(by_oid[parent], path | {table.oid})
        seen.add(table.oid)
        ordered.append(table)

    for table in sorted(tables, key=lambda t: t.qualified):
        visit(table, frozenset())
    return ordered


def _ident(table: _Table) -> sql.Identifier:
    from psycopg import sql

    return sql.Identifier(table.schema, table.name)


def _count(conn: psycopg.Connection[Any], table: _Table) -> int:
    from psycopg import sql

    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_ident(table))).fetchone()
    return int(row[0]) if row else 0


def _insert(conn: psycopg.Connection[Any], table: _Table, tables: dict[int, _Table], rows: int) -> None:
    import psycopg
    from psycopg import sql

    salt = secrets.token_hex(4)  # unique text, UUID and bytea values never meet existing ones
    names: list[sql.Composable] = []
    values: list[sql.Composable] = []
    joins: list[sql.Composable] = []
    drawn = _foreign_keys(conn, table, tables, names, values, joins)
    unique = {n for columns in table.unique for n in columns if n not in drawn}
    for column in table.columns:
        if column.number in drawn or column.identity:
            continue
        is_unique = column.number in unique
        if column.default is not None and (not is_unique or column.default.startswith("nextval(")):
            continue
        offset = _max_number(conn, table, column) if is_unique and column.category == "N" else 0
        expression = _value(table, column, is_unique, salt, offset)
        if expression is None:
            continue  # nullable, no generator: left NULL
        names.append(sql.Identifier(column.name))
        # format_type() wrote this type expression: the database's own quoting.
        values.append(sql.SQL("({})::{}").format(expression, sql.SQL(column.declared)))
    statement = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM generate_series(1, {}) AS g(i){}").format(
        _ident(table),
        sql.SQL(", ").join(names),
        sql.SQL(", ").join(values),
        sql.Literal(rows),
        sql.SQL("").join(joins),
    )
    if not names:
        statement = sql.SQL("INSERT INTO {} SELECT FROM generate_series(1, {})").format(
            _ident(table), sql.Literal(rows)
        )
    try:
        conn.execute(statement)
    except psycopg.Error as exc:
        reason = redact(str(exc).strip().splitlines()[0])
        raise DbledgerError(
            f"cannot fill {table.qualified} with synthetic rows: {reason} (SQLSTATE {exc.sqlstate}): "
            f"fill it yourself on a kept scratch copy (--keep), or leave it out of --rows "
            "(see 'Rehearsal at production size' in docs/ci.md for what the fill can generate)"
        ) from None


def _foreign_keys(
    conn: psycopg.Connection[Any],
    table: _Table,
    tables: dict[int, _Table],
    names: list[sql.Composable],
    values: list[sql.Composable],
    joins: list[sql.Composable],
) -> set[int]:
    """For each foreign key: its columns drawn in turn from the referenced table's rows (joined
    by row number); returns the column numbers it set."""
    from psycopg import sql

    drawn: set[int] = set()
    columns = {c.number: c for c in table.columns}
    for index, (own, parent_oid, referenced) in enumerate(table.keys):
        if drawn & set(own) or parent_oid not in tables:
            continue
        parent = tables[parent_oid]
        parent_columns = {c.number: c.name for c in parent.columns}
        rows = _count(conn, parent)
        if rows == 0:
            required = [columns[n].name for n in own if columns[n].not_null]
            if required:
                raise DbledgerError(
                    f"cannot fill {table.qualified} with synthetic rows: its foreign key on "
                    f"{', '.join(required)} references {parent.qualified}, which is empty: give "
                    f"{parent.qualified} rows too (--rows {parent.name}=N)"
                )
            drawn |= set(own)  # left NULL
            continue
        alias = sql.Identifier(f"fk{index}")
        picked = [sql.Identifier(parent_columns[n]) for n in referenced]
        not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(p) for p in picked)
        joins.append(
            sql.SQL(
                " JOIN (SELECT {}, row_number() OVER () - 1 AS n FROM {} WHERE {}) AS {} ON {}.n = g.i % {}"
            ).format(sql.SQL(", ").join(picked), _ident(parent), not_null, alias, alias, sql.Literal(rows))
        )
        for number, source in zip(own, picked, strict=True):
            names.append(sql.Identifier(columns[number].name))
            values.append(sql.SQL("{}.{}").format(alias, source))
        drawn |= set(own)
    return drawn


def _max_number(conn: psycopg.Connection[Any], table: _Table, column: _Column) -> int:
    """The largest value of a numeric unique column, so that generated ones come above it."""
    from psycopg import sql

    query = sql.SQL("SELECT coalesce(max({})::bigint, 0) FROM {}").format(
        sql.Identifier(column.name), _ident(table)
    )
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _text_length(column: _Column) -> int:
    """How many characters a text value may have: the declared length, at most 32 (an MD5)."""
    if column.base in ("varchar", "bpchar") and column.typmod > 4:
        return min(32, column.typmod - 4)
    return 32


def _numeric_limit(column: _Column) -> int:
    """How large a small generated number may be: numeric(p, s) holds fewer than 10^(p - s)."""
    if column.base == "numeric" and column.typmod > 4:
        precision, scale = ((column.typmod - 4) >> 16) & 0xFFFF, (column.typmod - 4) & 0xFFFF
        return int(max(1, 10 ** min(3, precision - scale)))
    return 1000 if column.base != "int2" else 100


def _value(table: _Table, column: _Column, unique: bool, salt: str, offset: int) -> sql.Composable | None:
    """The generated value of ``column`` for row ``g.i``; None when nothing fits and the column
    may be NULL. Raises for a NOT NULL column with no default that no generator fits."""
    from psycopg import sql

    text = sql.SQL("md5({} || g.i::text)").format(sql.Literal(salt))
    if column.enum:
        labels = sql.SQL("enum_range(NULL::{})").format(sql.SQL(column.declared))
        return sql.SQL("({})[1 + (g.i % cardinality({}))::int]").format(labels, labels)
    if column.category == "N":
        if unique:
            return sql.SQL("{} + g.i").format(sql.Literal(offset))
        return sql.SQL("g.i % {}").format(sql.Literal(_numeric_limit(column)))
    if column.category == "S":
        return sql.SQL("left({}, {})").format(text, sql.Literal(_text_length(column)))
    generated = {
        "uuid": sql.SQL("{}::uuid").format(text),
        "bool": sql.SQL("g.i % 2 = 0"),
        "date": sql.SQL("date '2000-01-01' + (g.i % 10000)::int"),
        "timestamp": sql.SQL("timestamp '2000-01-01' + g.i * interval '1 second'"),
        "timestamptz": sql.SQL("timestamptz '2000-01-01 00:00Z' + g.i * interval '1 second'"),
        "time": sql.SQL("time '00:00' + (g.i % 86400) * interval '1 second'"),
        "timetz": sql.SQL("timetz '00:00Z' + (g.i % 86400) * interval '1 second'"),
        "interval": sql.SQL("(g.i % 100000) * interval '1 second'"),
        "json": sql.SQL("json_build_object('n', g.i)"),
        "jsonb": sql.SQL("jsonb_build_object('n', g.i)"),
        "bytea": sql.SQL("decode({}, 'hex')").format(text),
        "inet": sql.SQL("inet '10.0.0.0' + g.i"),
        "cidr": sql.SQL("set_masklen(inet '10.0.0.0' + g.i, 32)::cidr"),
    }
    if column.base in generated:
        return generated[column.base]
    if column.category == "A":
        return sql.SQL("'{}'") if column.not_null else None
    if not column.not_null:
        return None
    raise DbledgerError(
        f"cannot fill {table.qualified} with synthetic rows: column {column.name} is {column.declared}, "
        "NOT NULL and without a default, and the fill has no generator for that type: fill the table "
        "yourself on a kept scratch copy (--keep), or leave it out of --rows"
    )
