"""Statements that read or write rows, and maintenance commands: INSERT, UPDATE, DELETE, MERGE,
COPY, SELECT, DO, TRUNCATE, VACUUM, ANALYZE, CLUSTER, REINDEX, REFRESH MATERIALIZED VIEW, LOCK.

A query locks the target of an INSERT, UPDATE, DELETE or MERGE ROW EXCLUSIVE and every other table
it names ACCESS SHARE (the "Explicit Locking" table of the PostgreSQL documentation).
"""

from __future__ import annotations

from collections.abc import Callable

from dbledger.analysis.model import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    EXCLUSIVE,
    LOCK_MODES,
    ROW_EXCLUSIVE,
    SHARE,
    SHARE_UPDATE_EXCLUSIVE,
    Catalog,
    Work,
)
from dbledger.analysis.nodes import Node, child, children, enum, flag, integer, kind_of, relation, text, walk
from dbledger.analysis.rules import Builder

ANALYZE_SAMPLE_ROWS = 30_000


def dml(kind: str) -> Callable[[Node, Catalog], Builder]:
    def handler(statement: Node, catalog: Catalog) -> Builder:
        out = Builder(kind)
        target_node = child(statement, "relation")
        table = relation(target_node) or "?"
        out.lock(table, ROW_EXCLUSIVE)
        for other, mode in tables(statement, skip=target_node):
            out.lock(other, mode)
        rows: int | None = None
        if kind == "INSERT":
            select = child(statement, "selectStmt")
            values = children(select, "valuesLists") if select is not None else ()
            rows = len(values) if values else None
            if rows is None and select is not None:
                sources = read_tables(select)
                out.note("INSERT ... SELECT: rows estimated from " + (sources[0] if sources else "the query"))
                if sources:
                    out.work(Work("data", sources[0]))
                    return out
            if select is None:
                rows = 1  # DEFAULT VALUES
        elif kind in ("UPDATE", "DELETE") and child(statement, "whereClause") is None:
            out.destructive = True
            out.note(f"{kind} without WHERE: every row of {table}")
        out.work(Work("data", table, rows=rows))
        return out

    return handler


def truncate(statement: Node, catalog: Catalog) -> Builder:
    out = Builder("TRUNCATE")
    out.destructive = True
    for range_var in children(statement, "relations"):
        table = relation(range_var) or "?"
        out.lock(table, ACCESS_EXCLUSIVE)
        out.note(f"TRUNCATE {table} deletes every row; fast at any size (a new empty file)")
    if enum(statement, "behavior") == "DROP_CASCADE":
        out.note("CASCADE also empties every table with a foreign key to it")
    return out


def vacuum(statement: Node, catalog: Catalog) -> Builder:
    options = {text(option, "defname") for option in children(statement, "options")}
    is_vacuum = flag(statement, "is_vacuumcmd")
    full = is_vacuum and "full" in options
    out = Builder("VACUUM FULL" if full else "VACUUM" if is_vacuum else "ANALYZE")
    out.transactional = not is_vacuum
    tables = [relation(child(rel, "relation")) for rel in children(statement, "rels")]
    for table in (t for t in tables if t is not None):
        if full:
            out.lock(table, ACCESS_EXCLUSIVE)
            out.rewrite(table)
        else:
            out.lock(table, SHARE_UPDATE_EXCLUSIVE)
            # ANALYZE alone reads a sample: 300 x default_statistics_target (100) rows.
            out.work(Work("scan", table, rows=None if is_vacuum else ANALYZE_SAMPLE_ROWS))
    if not tables:
        out.unknown = True  # which tables, and how big, is not in the SQL
        out.note("no table named: every table of the database")
    if full:
        out.note("VACUUM FULL rewrites the table under ACCESS EXCLUSIVE")
    return out


def cluster(statement: Node, catalog: Catalog) -> Builder:
    out = Builder("CLUSTER")
    table = relation(child(statement, "relation"))
    if table is None:
        out.transactional = False
        out.unknown = True
        out.note("CLUSTER without a table re-clusters every clustered table")
    else:
        out.lock(table, ACCESS_EXCLUSIVE)
        out.rewrite(table)
        out.note(f"CLUSTER rewrites {table} in index order under ACCESS EXCLUSIVE")
    return out


def reindex(statement: Node, catalog: Catalog) -> Builder:
    concurrent = any(text(p, "defname") == "concurrently" for p in children(statement, "params"))
    what = enum(statement, "kind").removeprefix("REINDEX_OBJECT_")
    out = Builder(f"REINDEX {what}" + (" CONCURRENTLY" if concurrent else ""))
    mode = SHARE_UPDATE_EXCLUSIVE if concurrent else SHARE
    out.transactional = not concurrent and what in ("INDEX", "TABLE")
    name = relation(child(statement, "relation"))
    if name is None:
        out.unknown = True
        out.note(f"REINDEX {what} rebuilds every index in it")
        return out
    table = name if what == "TABLE" else catalog.index_table(name)
    out.lock(table or name, mode)
    builds = catalog.index_count(name) if what == "TABLE" else 1
    for _ in range(builds):
        out.work(Work("build", table or name))
    return out


def lock(statement: Node, catalog: Catalog) -> Builder:
    out = Builder("LOCK TABLE")
    level = integer(statement, "mode") or len(LOCK_MODES)
    for range_var in children(statement, "relations"):
        out.lock(relation(range_var) or "?", LOCK_MODES[level - 1])
    return out


def refresh(statement: Node, catalog: Catalog) -> Builder:
    concurrent = flag(statement, "concurrent")
    out = Builder("REFRESH MATERIALIZED VIEW" + (" CONCURRENTLY" if concurrent else ""))
    view = relation(child(statement, "relation")) or "?"
    if concurrent:
        out.lock(view, EXCLUSIVE)
        out.work(Work("data", view))
    else:
        out.lock(view, ACCESS_EXCLUSIVE)
        out.rewrite(view)
    for table in read_tables(statement, skip=child(statement, "relation")):
        out.lock(table, ACCESS_SHARE)
    return out


def copy(statement: Node, catalog: Catalog) -> Builder:
    into = flag(statement, "is_from")
    out = Builder("COPY FROM" if into else "COPY TO")
    table = relation(child(statement, "relation"))
    if table is not None:
        out.lock(table, ROW_EXCLUSIVE if into else ACCESS_SHARE)
        out.work(Work("data" if into else "scan", table))
    return out


def select(statement: Node, catalog: Catalog) -> Builder:
    out = Builder("SELECT")
    out.unknown = True  # a query's functions may do anything (setval, pg_sleep...)
    for table, mode in tables(statement):
        out.lock(table, mode)
    return out


def do(statement: Node, catalog: Catalog) -> Builder:
    out = Builder("DO")
    out.unknown = True
    out.note("DO block: its body is not analysed")
    return out


def read_tables(statement: Node | None, skip: Node | None = None) -> list[str]:
    """Tables a statement reads, CTE names and ``skip`` left out."""
    return [table for table, mode in tables(statement, skip) if mode == ACCESS_SHARE]


def tables(statement: Node | None, skip: Node | None = None) -> list[tuple[str, str]]:
    """Every table a statement names (RangeVar nodes) with the lock a query takes on it: ROW
    EXCLUSIVE on the target of an INSERT, UPDATE, DELETE or MERGE (also one inside a WITH),
    ACCESS SHARE on the others. CTE names and ``skip`` are left out."""
    if statement is None:
        return []
    nodes = list(walk(statement))
    ctes = {text(node, "ctename") for node in nodes if kind_of(node) == "CommonTableExpr"}
    targets = {
        id(child(node, "relation"))
        for node in nodes
        if kind_of(node) in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")
    }
    found: dict[str, str] = {}
    for node in nodes:
        if kind_of(node) != "RangeVar" or node is skip:
            continue
        if text(node, "schemaname") is None and text(node, "relname") in ctes:
            continue
        name = relation(node)
        if name is not None and found.get(name) != ROW_EXCLUSIVE:
            found[name] = ROW_EXCLUSIVE if id(node) in targets else ACCESS_SHARE
    return list(found.items())
