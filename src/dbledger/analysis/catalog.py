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
from dataclasses import dataclass, field, replace
from typing import Any, LiteralString

import psycopg
from psycopg import pq, sql

from dbledger.analysis.model import Catalog, Change, ForeignKey, TableSize
from dbledger.analysis.nodes import split_qualified

__all__ = ["Overlay", "PostgresCatalog", "StaticCatalog"]

# A table whose planner statistics were never gathered (reltuples = -1; before PostgreSQL 14,
# reltuples = relpages = 0 over a heap that has pages) is counted exactly up to this heap size,
# and sampled above it.
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
_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
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


_CHECKS = (
    "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid = to_regclass(%s) AND contype = 'c' AND convalidated"
)


class PostgresCatalog:
    """The live catalog of the database behind ``conn`` (any transaction state but failed)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._columns: dict[str, dict[str, str]] = {}
        self._sizes: dict[str, TableSize | None] = {}
        self._index_counts: dict[str, int] = {}
        self._index_tables: dict[str, str | None] = {}
        self._keys: dict[str, tuple[ForeignKey, ...]] = {}
        self._relations: dict[str, bool | None] = {}

    def _rows(self, query: LiteralString | sql.Composed, params: Any) -> list[tuple[Any, ...]]:
        # A savepoint (or a transaction of our own) unless each statement commits on its own.
        alone = self.conn.autocommit and self.conn.info.transaction_status == pq.TransactionStatus.IDLE
        try:
            with nullcontext() if alone else self.conn.transaction():
                return self.conn.execute(query, params).fetchall()
        except (psycopg.DataError, psycopg.ProgrammingError, psycopg.NotSupportedError):
            # A name to_regclass rejects (bad syntax, a cross-database reference): nothing known.
            return []

    def server_version(self) -> int | None:
        return self.conn.info.server_version

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
        never_analysed = reltuples < 0 or (reltuples == 0 and relpages == 0 and heap > 0)
        if not never_analysed:
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

    def validated_checks(self, table: str) -> tuple[str, ...]:
        """The table's validated CHECK constraints, as ``pg_get_constraintdef`` writes them."""
        return tuple(str(row[0]) for row in self._rows(_CHECKS, (table,)))

    def current_schema(self) -> str | None:
        """Where an unqualified name resolves: the first schema of the search_path that exists."""
        rows = self._rows("SELECT current_schema()", ())
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def exists(self, relation: str, column: str | None = None) -> bool | None:
        if relation not in self._relations:
            rows = self._rows(_EXISTS, (relation,))
            self._relations[relation] = bool(rows[0][0]) if rows else None  # None: a name it rejects
        found = self._relations[relation]
        if not found or column is None:
            return found
        return self.column_type(relation, column) is not None


@dataclass
class StaticCatalog:
    """A catalog from plain dictionaries, for unit tests of the classification rules and for
    analysing SQL without a database. Names are matched exactly as written."""

    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> column -> type
    sizes: dict[str, TableSize] = field(default_factory=dict)
    indexes: dict[str, int] = field(default_factory=dict)  # table -> number of indexes
    index_tables: dict[str, str] = field(default_factory=dict)  # index -> table
    keys: tuple[ForeignKey, ...] = ()
    relations: frozenset[str] = frozenset()  # views, sequences...: relations named nowhere above
    version: int | None = None  # server_version_num; None: the newest

    def server_version(self) -> int | None:
        return self.version

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

    def exists(self, relation: str, column: str | None = None) -> bool | None:
        if column is not None and relation in self.columns:
            return column in self.columns[relation]
        known = relation in self._names()
        # A relation whose columns are not listed: whether it has this one is not known.
        return None if known and column is not None else known

    def _names(self) -> set[str]:
        names = {*self.columns, *self.sizes, *self.indexes, *self.index_tables, *self.relations}
        names |= set(self.index_tables.values())
        return names | {k.table for k in self.keys} | {k.referenced for k in self.keys}


class Overlay:
    """A catalog as a migration's earlier statements left it: their ``Change`` records applied on
    top of ``base``, which is never written to. Tables the migration creates are empty.

    Relations are known by their current names: ``_created`` holds those the changes created
    (their columns are in ``_columns``, all of them when the table is in ``_complete``),
    ``_gone`` the names that no longer reach ``base`` (dropped or renamed away), ``_renamed``
    maps a base relation's new name to its name in base. Foreign keys from base are translated
    into current names and left out when a table at either end is gone."""

    def __init__(self, base: Catalog) -> None:
        self.base = base
        self._created: set[str] = set()
        self._complete: set[str] = set()
        self._gone: set[str] = set()
        self._renamed: dict[str, str] = {}  # new name -> name in base
        self._columns: dict[tuple[str, str], str | None] = {}
        self._column_tables: set[str] = set()  # the tables ``_columns`` has entries of
        self._added_keys: list[ForeignKey] = []
        self._dropped_keys: set[tuple[str, str]] = set()  # (table, constraint) of base keys
        self._index_delta: dict[str, int] = {}
        self._index_tables: dict[str, str | None] = {}  # index -> its table, None once dropped

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self._apply(change)

    def _apply(self, change: Change) -> None:
        table = change.table
        if change.op in ("create_table", "create_relation"):
            self._create(table, change.columns, change.complete)
        elif change.op in ("drop_table", "drop_relation"):
            self._drop(table)
        elif change.op == "rename_table" and change.name:
            self._rename(table, change.name)
        elif change.op == "column" and change.column:
            self._set_column(table, change.column, change.type)
        elif change.op == "rename_column" and change.column and change.name:
            self._set_column(table, change.name, self.column_type(table, change.column))
            self._set_column(table, change.column, None)
        elif change.op == "add_fk" and change.foreign_key:
            self._drop_key(table, change.foreign_key.name)
            self._added_keys.append(change.foreign_key)
        elif change.op == "drop_constraint" and change.name:
            self._drop_key(table, change.name)
        elif change.op in ("add_index", "drop_index"):
            self._index(change.op, table, change.name)

    def _create(self, name: str, columns: tuple[tuple[str, str], ...], complete: bool) -> None:
        self._forget(name)
        self._created.add(name)
        if complete:
            self._complete.add(name)
        for column, kind in columns:
            self._set_column(name, column, kind)

    def _drop(self, name: str) -> None:
        """The relation is gone, with its columns, its foreign keys both ways and its indexes."""
        if name not in self._created:
            self._gone.add(name)
        self._forget(name)
        self._added_keys = [k for k in self._added_keys if name not in (k.table, k.referenced)]
        for index, owner in self._index_tables.items():
            if owner == name:
                self._index_tables[index] = None

    def _set_column(self, table: str, column: str, kind: str | None) -> None:
        self._columns[table, column] = kind
        self._column_tables.add(table)

    def _forget(self, name: str) -> None:
        """Whatever the changes said of an earlier relation of that name."""
        self._created.discard(name)
        self._complete.discard(name)
        self._renamed.pop(name, None)
        self._index_delta.pop(name, None)
        if name in self._column_tables:  # a run of 10,000 new tables must not rebuild this each time
            self._columns = {key: kind for key, kind in self._columns.items() if key[0] != name}
            self._column_tables.discard(name)
        self._dropped_keys = {key for key in self._dropped_keys if key[0] != name}

    def _rename(self, old: str, new: str) -> None:
        created, complete = old in self._created, old in self._complete
        base_name = None if created else self._renamed.get(old, old)
        moved = self._moved_records(old, new)
        if not created:
            self._gone.add(old)
        self._forget(old)
        self._forget(new)
        self._gone.discard(new)
        if created:
            self._create(new, (), complete)
        elif base_name is not None:
            self._renamed[new] = base_name
        for (table, column), kind in moved[0].items():
            self._set_column(table, column, kind)
        self._dropped_keys |= moved[1]
        if moved[2]:
            self._index_delta[new] = moved[2]

    def _moved_records(
        self, old: str, new: str
    ) -> tuple[dict[tuple[str, str], str | None], set[tuple[str, str]], int]:
        """The columns, dropped keys and index count of ``old``, under ``new``; the foreign keys
        and indexes the changes added are renamed in place."""
        columns = {(new, column): kind for (table, column), kind in self._columns.items() if table == old}
        dropped = {(new, name) for table, name in self._dropped_keys if table == old}
        self._added_keys = [
            replace(
                key,
                table=new if key.table == old else key.table,
                referenced=new if key.referenced == old else key.referenced,
            )
            for key in self._added_keys
        ]
        for index, owner in self._index_tables.items():
            if owner == old:
                self._index_tables[index] = new
        if old in self._index_tables:  # an index the changes built, renamed
            self._index_tables[new] = self._index_tables[old]
            self._index_tables[old] = None
        return columns, dropped, self._index_delta.get(old, 0)

    def _drop_key(self, table: str, name: str) -> None:
        self._dropped_keys.add((table, name))
        self._added_keys = [k for k in self._added_keys if (k.table, k.name) != (table, name)]

    def _index(self, op: str, table: str, name: str | None) -> None:
        step = 1 if op == "add_index" else -1
        self._index_delta[table] = self._index_delta.get(table, 0) + step
        if name:
            self._index_tables[name] = table if step > 0 else None

    def _in_base(self, name: str) -> str | None:
        """The name to ask ``base`` about, or None when base's answer no longer applies."""
        if name in self._created:
            return None
        if name in self._renamed:
            return self._renamed[name]
        return None if name in self._gone else name

    def _from_base(self, name: str) -> str | None:
        """A name in one of base's answers, as the relation is called now; None once it is gone."""
        for new, old in self._renamed.items():
            if old == name:
                return new
        return None if name in self._gone else name

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

    def server_version(self) -> int | None:
        return self.base.server_version()

    def index_table(self, index: str) -> str | None:
        if index in self._index_tables:
            return self._index_tables[index]
        name = self._in_base(index)
        owner = None if name is None else self.base.index_table(name)
        return None if owner is None else self._from_base(owner)

    def foreign_keys(self, table: str) -> tuple[ForeignKey, ...]:
        name = self._in_base(table)
        keys: list[ForeignKey] = []
        for key in () if name is None else self.base.foreign_keys(name):
            current = self._current_key(key, name or table, table)
            if current is not None and (current.table, current.name) not in self._dropped_keys:
                keys.append(current)
        keys += [k for k in self._added_keys if table in (k.table, k.referenced)]
        return tuple(keys)

    def _current_key(self, key: ForeignKey, asked: str, table: str) -> ForeignKey | None:
        """A key from base in current names (``asked``, base's name for ``table``, becomes
        ``table``); None when the table at its other end is gone."""
        child = table if key.table == asked else self._from_base(key.table)
        parent = table if key.referenced == asked else self._from_base(key.referenced)
        if child is None or parent is None:
            return None
        return replace(key, table=child, referenced=parent)

    def exists(self, relation: str, column: str | None = None) -> bool | None:
        if column is not None and (relation, column) in self._columns:
            return self._columns[relation, column] is not None
        if relation in self._created:
            return True if column is None else (False if relation in self._complete else None)
        if relation in self._index_tables:
            return self._index_tables[relation] is not None and column is None
        name = self._in_base(relation)
        if name is None:
            return False
        found = self.base.exists(name, column)
        if found and column is None and self._owner_gone(name):
            return False
        if found is False and column is None and self._maybe_implicit(relation):
            return None
        return found

    def _owner_gone(self, name: str) -> bool:
        """An index of base whose table is gone went with it."""
        if not self._gone:
            return False
        owner = self.base.index_table(name)
        return owner is not None and self._from_base(owner) is None

    def _maybe_implicit(self, relation: str) -> bool:
        """Whether the changes may have brought in a relation base does not have: one they
        created, renamed or built under another spelling (``public.t`` for ``t``), or one that
        came with a table they created (a key's index, a serial's sequence: PostgreSQL names
        those after the table, ``t_pkey``, ``t_id_seq``, keeping at least 28 bytes of its name).
        Names are compared without schemas, which the SQL may or may not write."""
        bare = split_qualified(relation)[-1]
        return any(bare.startswith(split_qualified(name)[-1][:28]) for name in self._introduced())

    def _introduced(self) -> set[str]:
        """The names the changes brought in: relations created, renamed, indexes built."""
        indexes = {index for index, owner in self._index_tables.items() if owner is not None}
        return self._created | set(self._renamed) | indexes
