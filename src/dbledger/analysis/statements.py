"""What one PostgreSQL statement does: the locks it takes, whether it rewrites, scans or builds,
whether it destroys data, read from PostgreSQL's own syntax tree (pglast) and the live catalog.

    analysis = analyse("ALTER TABLE t ALTER COLUMN id TYPE varchar(255)", PostgresCatalog(conn))
    analysis.lock, analysis.effect    # "ACCESS EXCLUSIVE", "rewrite"

``analyse_all`` analyses a migration's statements in order against the schema as each will find
it: a foreign key dropped by one statement no longer locks anything in the next (an unnamed one
is named as PostgreSQL names it), a table created by the migration is empty, and IF EXISTS on
what is absent by then is a no-op. Lock levels follow PostgreSQL 15 (the "Explicit Locking" table
and each command's page); tests/test_analysis.py checks every claim against a real server.

Imports pglast (~90 ms): import this module only when analysing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from pglast.parser import ParseError

from dbledger import sqltrees
from dbledger.analysis.altertable import alter_table
from dbledger.analysis.catalog import Overlay
from dbledger.analysis.commands import (
    cluster,
    copy,
    dml,
    do,
    lock,
    read_tables,
    refresh,
    reindex,
    select,
    truncate,
    vacuum,
)
from dbledger.analysis.model import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    Catalog,
    Change,
    ForeignKey,
    StatementAnalysis,
    Work,
)
from dbledger.analysis.naming import foreign_key_name
from dbledger.analysis.nodes import (
    Node,
    child,
    children,
    enum,
    flag,
    kind_of,
    qualified,
    qualified_like,
    relation,
    sql_type,
    strings,
    text,
)
from dbledger.analysis.rules import Builder, constraint_type, display

__all__ = ["analyse", "analyse_all", "walk_statements"]


def analyse(sql: str, catalog: Catalog) -> StatementAnalysis:
    """Analyse ONE statement. SQL that does not parse gives kind ``PARSE ERROR``, effect
    ``unknown`` (the server will report the real error when the migration runs)."""
    try:
        parsed = sqltrees.parse(sql)
    except ParseError as exc:
        return StatementAnalysis(
            kind="PARSE ERROR", tables=(), lock=None, effect="unknown", destructive=False, notes=(str(exc),)
        )
    if len(parsed) != 1:
        raise ValueError(f"analyse() takes one statement, got {len(parsed)}: split the section first")
    statement = parsed[0].stmt
    handler = _HANDLERS.get(kind_of(statement))
    if handler is None:
        out = Builder(kind_of(statement))
        out.unknown = True
        for table in read_tables(statement):
            out.lock(table, ACCESS_SHARE)
        return out.result()
    return handler(statement, catalog).result()


def walk_statements(
    statements: Iterable[str], catalog: Catalog
) -> Iterator[tuple[StatementAnalysis, Catalog]]:
    """Each statement's analysis, with the catalog as that statement finds it (earlier statements'
    changes applied). The catalog is only valid until the next item is drawn."""
    overlay = Overlay(catalog)
    for sql in statements:
        analysis = analyse(sql, overlay)
        yield analysis, overlay
        overlay.apply(analysis.changes)


def analyse_all(statements: Iterable[str], catalog: Catalog) -> list[StatementAnalysis]:
    """The analyses of a migration's statements, in order (see ``walk_statements``)."""
    return [analysis for analysis, _ in walk_statements(statements, catalog)]


# -- handlers -----------------------------------------------------------------------------


def _alter_table(statement: Node, catalog: Catalog) -> Builder:
    objtype = enum(statement, "objtype").removeprefix("OBJECT_")
    if objtype in ("TABLE", "FOREIGN_TABLE"):
        out = Builder("ALTER TABLE" if objtype == "TABLE" else "ALTER FOREIGN TABLE")
        alter_table(statement, catalog, out)
        return out
    # ALTER INDEX / VIEW / SEQUENCE / MATERIALIZED VIEW: a lock on that relation only.
    out = Builder("ALTER " + objtype.replace("MATVIEW", "MATERIALIZED VIEW").replace("_", " "))
    name = relation(child(statement, "relation"))
    if name is not None:
        out.lock(name, ACCESS_EXCLUSIVE)
    return out


def _create_table(statement: Node, catalog: Catalog) -> Builder:
    out = Builder("CREATE TABLE")
    table = relation(child(statement, "relation")) or "?"
    if flag(statement, "if_not_exists") and catalog.exists(table):
        out.touch(table)
        out.note(f"{table} exists: IF NOT EXISTS makes this a no-op")
        return out
    out.lock(table, ACCESS_EXCLUSIVE, new=True)
    out.note(f"{table} is new: its ACCESS EXCLUSIVE lock blocks no other session")
    columns: list[tuple[str, str]] = []
    for element in children(statement, "tableElts"):
        if kind_of(element) == "ColumnDef":
            name = text(element, "colname") or "?"
            type_node = child(element, "typeName")
            if type_node is not None:
                columns.append((name, display(sql_type(type_node))))
            for constraint in children(element, "constraints"):
                _references(table, constraint, out, (name,))
        elif kind_of(element) == "Constraint":
            _references(table, element, out, ())
    parents = [relation(parent) for parent in children(statement, "inhRelations")]
    partition = child(statement, "partbound") is not None
    # Columns also come from LIKE, a parent or a composite type: then the list is not all of them.
    liked = any(kind_of(element) == "TableLikeClause" for element in children(statement, "tableElts"))
    complete = not (liked or parents or partition or child(statement, "ofTypename") is not None)
    out.change(Change("create_table", table, columns=tuple(columns), complete=complete))
    for parent in parents:
        if parent is not None:
            # CREATE TABLE ... PARTITION OF locks the parent like ATTACH did before PostgreSQL 12;
            # INHERITS only keeps the parent from changing meanwhile.
            out.lock(parent, ACCESS_EXCLUSIVE if partition else SHARE_UPDATE_EXCLUSIVE)
    return out


def _references(table: str, constraint: Node, out: Builder, columns: tuple[str, ...]) -> None:
    if constraint_type(constraint) != "FOREIGN":
        return
    referenced = relation(child(constraint, "pktable")) or "?"
    if referenced == table:
        return
    out.lock(referenced, SHARE_ROW_EXCLUSIVE)
    out.note(f"the foreign key locks {referenced} SHARE ROW EXCLUSIVE: writes to it wait until commit")
    columns = strings(children(constraint, "fk_attrs")) or columns
    # Unnamed, it is named as PostgreSQL names it, so that a later DROP CONSTRAINT finds it.
    taken = {c.name for c in out.changes if c.op == "add_fk" and c.name}
    name = text(constraint, "conname") or foreign_key_name(table, columns, taken)
    key = ForeignKey(name, table, columns, referenced, strings(children(constraint, "pk_attrs")))
    out.change(Change("add_fk", table, name=name, foreign_key=key))


def _create_table_as(statement: Node, catalog: Catalog) -> Builder:
    matview = enum(statement, "objtype") == "OBJECT_MATVIEW"
    out = Builder("CREATE MATERIALIZED VIEW" if matview else "CREATE TABLE AS")
    into = child(statement, "into")
    table = relation(child(into, "rel")) if into is not None else None
    if table is not None:
        out.lock(table, ACCESS_EXCLUSIVE, new=True)
        out.change(Change("create_table", table))
    sources = read_tables(child(statement, "query"))
    for source in sources:
        out.lock(source, ACCESS_SHARE)
    if into is not None and flag(into, "skipData"):
        out.note("WITH NO DATA: catalog only")
    else:
        out.work(Work("data", sources[0] if sources else table or "?"))
        out.note("writes every row the query returns (estimated from the first table it reads)")
    return out


def _drop(statement: Node, catalog: Catalog) -> Builder:
    object_type = enum(statement, "removeType").removeprefix("OBJECT_")
    concurrent = flag(statement, "concurrent")
    words = object_type.replace("MATVIEW", "MATERIALIZED VIEW").replace("_", " ")
    out = Builder(f"DROP {words}" + (" CONCURRENTLY" if concurrent else ""))
    cascade = enum(statement, "behavior") == "DROP_CASCADE"
    names = [qualified(_names(item)) for item in children(statement, "objects")]
    if flag(statement, "missing_ok") and object_type in _RELATION_KINDS:
        names = _present(names, catalog, out)
        if not names:
            return out
    if object_type == "TABLE":
        _drop_tables(names, cascade, catalog, out)
    elif object_type == "INDEX":
        _drop_indexes(names, concurrent, catalog, out)
    elif object_type in _RELATION_KINDS:
        for name in names:
            out.lock(name, ACCESS_EXCLUSIVE)
            out.change(Change("drop_relation", name))
    elif object_type in ("TRIGGER", "POLICY", "RULE"):
        # objects are (schema.)table.name: the table is locked ACCESS EXCLUSIVE.
        for item in children(statement, "objects"):
            parts = _names(item)
            if len(parts) >= 2:
                out.lock(qualified(parts[:-1]), ACCESS_EXCLUSIVE)
    elif object_type == "SCHEMA":
        out.destructive = True
        for schema in names:
            out.lock(f"{schema}.*", ACCESS_EXCLUSIVE)
            out.note(
                f"DROP SCHEMA {schema} locks and deletes every table in it"
                + (" (CASCADE)" if cascade else "")
            )
    if cascade and object_type != "SCHEMA":
        out.note("CASCADE also drops every object that depends on it (columns, views, foreign keys)")
    return out


# DROP statements whose objects are relations: what IF EXISTS skips can be looked up.
_RELATION_KINDS = frozenset({"TABLE", "INDEX", "VIEW", "MATVIEW", "SEQUENCE", "FOREIGN_TABLE"})


def _present(names: list[str], catalog: Catalog, out: Builder) -> list[str]:
    """The names IF EXISTS does not skip. One known to be absent (not in the database, nor
    created by an earlier statement) is neither locked nor dropped: PostgreSQL only notices."""
    present = []
    for name in names:
        if catalog.exists(name) is False:
            out.touch(name)
            out.note(f"{name} does not exist: IF EXISTS skips it, nothing is locked or dropped")
        else:
            present.append(name)
    return present


def _drop_tables(names: list[str], cascade: bool, catalog: Catalog, out: Builder) -> None:
    out.destructive = True
    for table in names:
        out.lock(table, ACCESS_EXCLUSIVE)
        out.change(Change("drop_table", table))
        out.note(f"DROP TABLE {table} deletes the table and all its rows")
        for key in catalog.foreign_keys(table):
            other = key.referenced if key.table == table else key.table
            if other == table:
                continue
            # The foreign key's triggers on the other table are dropped with it.
            out.lock(other, ACCESS_EXCLUSIVE)
            if key.referenced == table and not cascade:
                out.note(f"{other} has foreign key {key.name} to {table}: the DROP fails without CASCADE")


def _drop_indexes(names: list[str], concurrent: bool, catalog: Catalog, out: Builder) -> None:
    mode = SHARE_UPDATE_EXCLUSIVE if concurrent else ACCESS_EXCLUSIVE
    out.transactional = not concurrent
    for index in names:
        owner = catalog.index_table(index)
        out.lock(owner or index, mode)
        out.change(Change("drop_index", owner or index, name=index))
        if owner is None:
            out.note(f"index {index} not found: locks its table {mode}")


def _names(item: Node) -> tuple[str, ...]:
    """A DROP object: a list of String nodes (a qualified name), or a TypeName, or one String."""
    if isinstance(item, tuple):
        return strings(item)
    if kind_of(item) == "String":
        return strings((item,))
    if kind_of(item) == "TypeName":
        return (str(sql_type(item)),)
    if kind_of(item) == "ObjectWithArgs":
        return strings(children(item, "objname"))
    return (kind_of(item),)


def _index(statement: Node, catalog: Catalog) -> Builder:
    concurrent = flag(statement, "concurrent")
    unique = flag(statement, "unique")
    out = Builder(
        "CREATE " + ("UNIQUE " if unique else "") + "INDEX" + (" CONCURRENTLY" if concurrent else "")
    )
    table = relation(child(statement, "relation")) or "?"
    out.lock(table, SHARE_UPDATE_EXCLUSIVE if concurrent else SHARE)
    name = text(statement, "idxname")
    if name is not None and flag(statement, "if_not_exists") and catalog.exists(qualified_like(table, name)):
        # The table is locked before the name is checked; then nothing is built.
        out.transactional = not concurrent
        out.note(f"{name} exists: IF NOT EXISTS builds nothing")
        return out
    out.work(Work("build", table))
    out.change(Change("add_index", table, name=qualified_like(table, name) if name else None))
    if concurrent:
        out.transactional = False
        out.note(
            "CONCURRENTLY: reads and writes go on; two table scans, and it waits for every "
            "transaction that could still use the table (needs transaction:false)"
        )
    else:
        out.note(f"writes to {table} wait until the index is built (CREATE INDEX CONCURRENTLY avoids that)")
    return out


def _rename(statement: Node, catalog: Catalog) -> Builder:
    what = enum(statement, "renameType").removeprefix("OBJECT_")
    target = relation(child(statement, "relation"))
    new_name = text(statement, "newname") or "?"
    if target is None:  # a function, schema, type...: catalog only
        return Builder(f"ALTER {what.replace('_', ' ')}")
    on = what
    if what in _SUB_OBJECTS:  # relationType is set for columns only (a column of a view...)
        on = enum(statement, "relationType").removeprefix("OBJECT_") if what == "COLUMN" else "TABLE"
    out = Builder(f"ALTER {on.replace('MATVIEW', 'MATERIALIZED VIEW').replace('_', ' ')}")
    if what == "INDEX":
        out.lock(target, SHARE_UPDATE_EXCLUSIVE)  # PostgreSQL 12+; the table is not locked
    else:
        out.lock(target, ACCESS_EXCLUSIVE)
    if what in _RELATION_KINDS:
        # The new name is in the old one's schema.
        out.change(Change("rename_table", target, name=qualified_like(target, new_name)))
    elif what == "COLUMN":
        out.change(Change("rename_column", target, column=text(statement, "subname"), name=new_name))
    old_name = text(statement, "subname") or target
    out.note(f"RENAME {old_name} TO {new_name}: catalog only; code using the old name breaks at once")
    return out


# Renamed objects that live inside a relation (the kind names the relation: ALTER TABLE).
_SUB_OBJECTS = frozenset({"COLUMN", "TABCONSTRAINT", "TRIGGER", "POLICY", "RULE"})


def _create_function(statement: Node, catalog: Catalog) -> Builder:
    noun = "PROCEDURE" if flag(statement, "is_procedure") else "FUNCTION"
    return Builder(("CREATE OR REPLACE " if flag(statement, "replace") else "CREATE ") + noun)


def _create_trigger(statement: Node, catalog: Catalog) -> Builder:
    out = Builder("CREATE OR REPLACE TRIGGER" if flag(statement, "replace") else "CREATE TRIGGER")
    table = relation(child(statement, "relation"))
    if table is not None:
        out.lock(table, SHARE_ROW_EXCLUSIVE)
        out.note(f"writes to {table} wait until commit; reads go on")
    return out


def _comment(statement: Node, catalog: Catalog) -> Builder:
    out = Builder("COMMENT")
    what = enum(statement, "objtype").removeprefix("OBJECT_")
    parts = strings(children(statement, "object"))  # a qualified name; other objects give ()
    if what == "COLUMN" and len(parts) >= 2:
        out.lock(qualified(parts[:-1]), SHARE_UPDATE_EXCLUSIVE)
    elif what in ("TABLE", "VIEW", "MATVIEW", "FOREIGN_TABLE", "INDEX", "SEQUENCE") and parts:
        out.lock(qualified(parts), SHARE_UPDATE_EXCLUSIVE)
    return out


def _view(statement: Node, catalog: Catalog) -> Builder:
    replace = flag(statement, "replace")
    out = Builder("CREATE OR REPLACE VIEW" if replace else "CREATE VIEW")
    view = relation(child(statement, "view")) or "?"
    if replace:
        out.lock(view, ACCESS_EXCLUSIVE)
    out.change(Change("create_relation", view))
    for table in read_tables(child(statement, "query")):
        out.lock(table, ACCESS_SHARE)
    return out


def _create_sequence(statement: Node, catalog: Catalog) -> Builder:
    out = Builder("CREATE SEQUENCE")
    name = relation(child(statement, "sequence"))
    if name is not None and not (flag(statement, "if_not_exists") and catalog.exists(name)):
        out.change(Change("create_relation", name))
    return out


def _on_relation(kind: str, mode: str) -> Callable[[Node, Catalog], Builder]:
    """Statements that take ``mode`` on the table they name and change only the catalog."""

    def handler(statement: Node, catalog: Catalog) -> Builder:
        out = Builder(kind)
        table = relation(child(statement, "table") or child(statement, "relation"))
        if table is not None:
            out.lock(table, mode)
        return out

    return handler


def _catalog_only(kind: str, note: str | None = None) -> Callable[[Node, Catalog], Builder]:
    def handler(statement: Node, catalog: Catalog) -> Builder:
        out = Builder(kind)
        if note:
            out.note(note)
        return out

    return handler


_HANDLERS: dict[str, Callable[[Node, Catalog], Builder]] = {
    "AlterTableStmt": _alter_table,
    "CreateStmt": _create_table,
    "CreateTableAsStmt": _create_table_as,
    "DropStmt": _drop,
    "IndexStmt": _index,
    "RenameStmt": _rename,
    "CreateFunctionStmt": _create_function,
    "CreateTrigStmt": _create_trigger,
    "InsertStmt": dml("INSERT"),
    "UpdateStmt": dml("UPDATE"),
    "DeleteStmt": dml("DELETE"),
    "MergeStmt": dml("MERGE"),
    "TruncateStmt": truncate,
    "VacuumStmt": vacuum,
    "ClusterStmt": cluster,
    "ReindexStmt": reindex,
    "LockStmt": lock,
    "CommentStmt": _comment,
    "ViewStmt": _view,
    "RefreshMatViewStmt": refresh,
    "CopyStmt": copy,
    "SelectStmt": select,
    "DoStmt": do,
    "CreatePolicyStmt": _on_relation("CREATE POLICY", ACCESS_EXCLUSIVE),
    "AlterPolicyStmt": _on_relation("ALTER POLICY", ACCESS_EXCLUSIVE),
    "RuleStmt": _on_relation("CREATE RULE", ACCESS_EXCLUSIVE),
    "AlterObjectSchemaStmt": _on_relation("SET SCHEMA", ACCESS_EXCLUSIVE),
    "CreateExtensionStmt": _catalog_only(
        "CREATE EXTENSION", "runs the extension's install script: usually catalog only"
    ),
    "CreateSchemaStmt": _catalog_only("CREATE SCHEMA"),
    "CreateSeqStmt": _create_sequence,
    "AlterSeqStmt": _catalog_only("ALTER SEQUENCE"),
    "CreateEnumStmt": _catalog_only("CREATE TYPE"),
    "AlterEnumStmt": _catalog_only("ALTER TYPE"),
    "CompositeTypeStmt": _catalog_only("CREATE TYPE"),
    "CreateDomainStmt": _catalog_only("CREATE DOMAIN"),
    "DefineStmt": _catalog_only("CREATE TYPE"),
    "AlterOwnerStmt": _catalog_only("ALTER OWNER"),
    "AlterFunctionStmt": _catalog_only("ALTER FUNCTION"),
    "GrantStmt": _catalog_only("GRANT"),
    "GrantRoleStmt": _catalog_only("GRANT"),
    "AlterDefaultPrivilegesStmt": _catalog_only("ALTER DEFAULT PRIVILEGES"),
    "CreateRoleStmt": _catalog_only("CREATE ROLE"),
    "AlterRoleStmt": _catalog_only("ALTER ROLE"),
    "CreateCastStmt": _catalog_only("CREATE CAST"),
    "VariableSetStmt": _catalog_only("SET"),
}
