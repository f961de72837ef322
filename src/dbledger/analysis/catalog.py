"""Catalogs the analysis reads: the live database, a fixed dictionary, and an overlay that plays a
migration's earlier statements forward.

``PostgresCatalog`` runs read-only queries on the system catalogs (``pg_class``, ``pg_attribute``,
``pg_index``, ``pg_constraint``) and caches each answer, so analysing a migration costs a few
round trips per table it touches. On user tables it takes ACCESS SHARE only, and only for sizes:
``pg_total_relation_size`` opens the table (so it waits while another session holds ACCESS
EXCLUSIVE on it), and a table never analysed is counted. In autocommit those locks end with each
query; inside the caller's transaction they last until it ends. It never changes the connection's
state: inside an open transaction each query runs under a savepoint, so a failing lookup cannot
abort the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, LiteralString

import psycopg
from psycopg import pq, sql

from dbledger.analysis.model import Catalog, Change, ForeignKey, TableSize

__all__ = ["Overlay", "PostgresCatalog", "StaticCatalog"]

# A table whose planner statistics were never gathered (reltuples = -1) is counted exactly up to
# this heap size, and sampled above it.
EXACT_COUNT_BYTES = 64 * 1024 * 1024
SAMPLE_PAGES = 1000

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
"""
# Partitioned tables hold no rows themselves: their size is the sum of their leaf partitions.
_SIZE = """
SELECT n.nspname, c.relname, c.reltuples::float8, c.relpages,
       pg_total_relation_size(c.oid), pg_relation_size(c.oid),
       CASE WHEN c.relkind = 'p' THEN
           (SELECT coalesce(sum(greatest(l.reltuples, 0)), 0)::float8
            FROM pg_partition_tree(c.oid) p JOIN pg_class l ON l.oid = p.relid WHERE p.isleaf) END,
       CASE WHEN c.relkind = 'p' THEN
           (SELECT coalesce(sum(pg_total_relation_size(l.oid)), 0)::float8
            FROM pg_partition_tree(c.oid) p JOIN pg_class l ON l.oid = p.relid WHERE p.isleaf) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass(%s)
"""
_INDEX_COUNT = "SELECT count(*) FROM pg_index WHERE indrelid = to_regclass(%s)"
_INDEX_TABLE = "SELECT indrelid::regclass::text FROM pg_index WHERE indexrelid = to_regclass(%s)"
_FOREIGN_KEYS = """
SELECT co.conname,
       co.conrelid::regclass::text, co.confrelid::regclass::text,
       ARRAY(SELECT a.attname::text FROM unnest(co.conkey) WITH ORDINALITY AS k(num, pos)
             JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.num ORDER BY k.pos),
       ARRAY(SELECT a.attname::text FROM unnest(co.confkey) WITH ORDINALITY AS k(num, pos)
             JOIN pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.num ORDER BY k.pos),
       co.conrelid = to_regclass(%(table)s), co.confrelid = to_regclass(%(table)s)
FROM pg_constraint co
WHERE co.contype = 'f' AND to_regclass(%(table)s) IN (co.conrelid, co.confrelid)
ORDER BY co.conname
"""


class PostgresCatalog:
    """The live catalog of the database behind ``conn`` (any transaction state but failed)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._columns: dict[str, dict[str, str]] = {}
        self._sizes: dict[str, TableSize | None] = {}
        self._index_counts: dict[str, int] = {}
        self._index_tables: dict[str, str | None] = {}
        self._keys: dict[str, tuple[ForeignKey, ...]] = {}

    def _rows(self, query: LiteralString | sql.Composed, params: Any) -> list[tuple[Any, ...]]:
        # A savepoint (or a transaction of our own) unless each statement commits on its own.
        alone = self.conn.autocommit and self.conn.info.transaction_status == pq.TransactionStatus.IDLE
        try:
            with nullcontext() if alone else self.conn.transaction():
                return self.conn.execute(query, params).fetchall()
        except (psycopg.DataError, psycopg.ProgrammingError, psycopg.NotSupportedError):
            # A name to_regclass rejects (bad syntax, a cross-database reference): nothing known.
            return []

    def column_type(self, table: str, column: str) -> str | None:
        if table not in self._columns:
            self._columns[table] = {str(name): str(kind) for name, kind in self._rows(_COLUMNS, (table,))}
        return self._columns[table].get(column)

    def table_size(self, table: str) -> TableSize | None:
        if table not in self._sizes:
            self._sizes[table] = self._measure(table)
        return self._sizes[table]

    def _measure(self, table: str) -> TableSize | None:
        rows = self._rows(_SIZE, (table,))
        if not rows:
            return None
        schema, name, reltuples, relpages, total, heap, partition_rows, partition_bytes = rows[0]
        if partition_rows is not None:
            return TableSize(rows=int(partition_rows), bytes=int(partition_bytes))
        if reltuples >= 0:
            return TableSize(rows=int(reltuples), bytes=int(total))
        # Never vacuumed nor analysed: count a small table, sample a big one.
        target = sql.Identifier(schema, name)
        if heap <= EXACT_COUNT_BYTES or relpages <= SAMPLE_PAGES:
            counted = self._rows(sql.SQL("SELECT count(*) FROM {}").format(target), ())
            return TableSize(rows=int(counted[0][0]) if counted else 0, bytes=int(total))
        percent = 100.0 * SAMPLE_PAGES / relpages
        sample = sql.SQL("SELECT count(*) FROM {} TABLESAMPLE SYSTEM (%s)").format(target)
        counted = self._rows(sample, (percent,))
        return TableSize(rows=int(counted[0][0] * 100 / percent) if counted else 0, bytes=int(total))

    def index_count(self, table: str) -> int:
        if table not in self._index_counts:
            rows = self._rows(_INDEX_COUNT, (table,))
            self._index_counts[table] = int(rows[0][0]) if rows else 0
        return self._index_counts[table]

    def index_table(self, index: str) -> str | None:
        if index not in self._index_tables:
            rows = self._rows(_INDEX_TABLE, (index,))
            self._index_tables[index] = str(rows[0][0]) if rows else None
        return self._index_tables[index]

    def foreign_keys(self, table: str) -> tuple[ForeignKey, ...]:
        if table not in self._keys:
            keys = []
            for name, child, parent, columns, referenced, is_child, is_parent in self._rows(
                _FOREIGN_KEYS, {"table": table}
            ):
                # Name the asked table as asked, so callers can compare with the SQL's spelling.
                keys.append(
                    ForeignKey(
                        name=str(name),
                        table=table if is_child else str(child),
                        columns=tuple(columns),
                        referenced=table if is_parent else str(parent),
                        referenced_columns=tuple(referenced),
                    )
                )
            self._keys[table] = tuple(keys)
        return self._keys[table]


@dataclass
class StaticCatalog:
    """A catalog from plain dictionaries, for unit tests of the classification rules and for
    analysing SQL without a database. Names are matched exactly as written."""

    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> column -> type
    sizes: dict[str, TableSize] = field(default_factory=dict)
    indexes: dict[str, int] = field(default_factory=dict)  # table -> number of indexes
    index_tables: dict[str, str] = field(default_factory=dict)  # index -> table
    keys: tuple[ForeignKey, ...] = ()

    def column_type(self, table: str, column: str) -> str | None:
        return self.columns.get(table, {}).get(column)

    def table_size(self, table: str) -> TableSize | None:
        return self.sizes.get(table)

    def index_count(self, table: str) -> int:
        return self.indexes.get(table, 0)

    def index_table(self, index: str) -> str | None:
        return self.index_tables.get(index)

    def foreign_keys(self, table: str) -> tuple[ForeignKey, ...]:
        return tuple(k for k in self.keys if table in (k.table, k.referenced))


class Overlay:
    """A catalog as a migration's earlier statements left it: their ``Change`` records applied on
    top of ``base``, which is never written to. Tables the migration creates are empty."""

    def __init__(self, base: Catalog) -> None:
        self.base = base
        self._created: set[str] = set()
        self._dropped: set[str] = set()
        self._renamed: dict[str, str] = {}  # new name -> name in base
        self._columns: dict[tuple[str, str], str | None] = {}
        self._added_keys: list[ForeignKey] = []
        self._dropped_keys: set[tuple[str, str]] = set()
        self._index_delta: dict[str, int] = {}
        self._index_tables: dict[str, str | None] = {}

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self._apply(change)

    def _apply(self, change: Change) -> None:
        table = change.table
        if change.op == "create_table":
            self._created.add(table)
            self._dropped.discard(table)
            for name, kind in change.columns:
                self._columns[table, name] = kind
        elif change.op == "drop_table":
            self._dropped.add(table)
            self._created.discard(table)
        elif change.op == "rename_table" and change.name:
            self._renamed[change.name] = self._renamed.get(table, table)
            self._dropped.add(table)
            if table in self._created:
                self._created.add(change.name)
        elif change.op == "column" and change.column:
            self._columns[table, change.column] = change.type
        elif change.op == "rename_column" and change.column and change.name:
            self._columns[table, change.name] = self.column_type(table, change.column)
            self._columns[table, change.column] = None
        elif change.op == "add_fk" and change.foreign_key:
            self._added_keys.append(change.foreign_key)
        elif change.op == "drop_constraint" and change.name:
            self._dropped_keys.add((table, change.name))
            self._added_keys = [k for k in self._added_keys if (k.table, k.name) != (table, change.name)]
        elif change.op == "add_index":
            self._index_delta[table] = self._index_delta.get(table, 0) + 1
            if change.name:
                self._index_tables[change.name] = table
        elif change.op == "drop_index":
            self._index_delta[table] = self._index_delta.get(table, 0) - 1
            if change.name:
                self._index_tables[change.name] = None

    def _in_base(self, table: str) -> str | None:
        """The name to ask ``base`` about, or None when base's answer no longer applies."""
        if table in self._created or (table in self._dropped and table not in self._renamed):
            return None
        return self._renamed.get(table, table)

    def column_type(self, table: str, column: str) -> str | None:
        if (table, column) in self._columns:
            return self._columns[table, column]
        name = self._in_base(table)
        return None if name is None else self.base.column_type(name, column)

    def table_size(self, table: str) -> TableSize | None:
        if table in self._created:
            return TableSize(rows=0, bytes=0)
        name = self._in_base(table)
        return None if name is None else self.base.table_size(name)

    def index_count(self, table: str) -> int:
        name = self._in_base(table)
        base = 0 if name is None else self.base.index_count(name)
        return max(0, base + self._index_delta.get(table, 0))

    def index_table(self, index: str) -> str | None:
        if index in self._index_tables:
            return self._index_tables[index]
        return self.base.index_table(index)

    def foreign_keys(self, table: str) -> tuple[ForeignKey, ...]:
        name = self._in_base(table)
        base: tuple[ForeignKey, ...] = () if name is None else self.base.foreign_keys(name)
        keys = [
            k
            for k in base
            if (k.table, k.name) not in self._dropped_keys
            and not ({k.table, k.referenced} & (self._dropped - set(self._renamed)))
        ]
        keys += [k for k in self._added_keys if table in (k.table, k.referenced)]
        return tuple(keys)
