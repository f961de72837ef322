"""The normalised schema as SQL, for review in pull requests (dbmate's ``schema.sql`` habit).

Stable: objects are sorted by name within each kind and kinds come in dependency order (schemas,
extensions, types, sequences, functions, tables, foreign keys, indexes, views, triggers), so two
runs on one database, and two databases in the same state, give the same text byte for byte.
Columns keep their physical order, the one place where the dump shows more than the fingerprint.
Re-executable for tables, columns, constraints, indexes, views, functions, triggers, sequences,
enums and domains; partition keys, foreign tables' servers, aggregates and SQLite CHECK
constraints are not reproduced (they are named in a comment), and views that read other views
may need reordering.
"""

from __future__ import annotations

from dbledger.schema.fingerprint import fingerprint
from dbledger.schema.model import Column, Function, SchemaModel, Sequence, Table, View


def dump_sql(model: SchemaModel) -> str:
    """The schema as SQL statements, one blank line between objects, ending with a newline."""
    head = f"-- dbledger schema dump ({model.dialect}), fingerprint {fingerprint(model)}"
    blocks = [head]
    if model.dialect == "postgresql":
        blocks += _postgres(model)
    else:
        blocks += [_sqlite_table(table) for table in model.tables]
        texts = [i.definition for i in model.indexes] + [v.definition for v in model.views]
        blocks += [f"{text};" for text in texts + [t.definition for t in model.triggers]]
    return "\n\n".join(blocks) + "\n"


def _postgres(model: SchemaModel) -> list[str]:
    blocks = ["SET check_function_bodies = false;"]
    blocks += [f"CREATE SCHEMA {schema};" for schema in model.schemas if schema != "public"]
    blocks += [f"CREATE EXTENSION IF NOT EXISTS {x.name} WITH SCHEMA {x.schema};" for x in model.extensions]
    blocks += [
        f"CREATE TYPE {e.name} AS ENUM ({', '.join(_literal(label) for label in e.labels)});"
        for e in model.enums
    ]
    for domain in model.domains:
        parts = [f"CREATE DOMAIN {domain.name} AS {domain.type}"]
        parts += [f"DEFAULT {domain.default}"] if domain.default is not None else []
        parts += [] if domain.nullable else ["NOT NULL"]
        parts += [f"CONSTRAINT {check.name} {check.definition}" for check in domain.checks]
        blocks.append(" ".join(parts) + ";")
    blocks += [_sequence(sequence) for sequence in model.sequences]
    blocks += [_function(function) for function in model.functions]
    blocks += [_postgres_table(table) for table in model.tables]
    blocks += [
        f"ALTER SEQUENCE {s.name} OWNED BY {s.owned_by};" for s in model.sequences if s.owned_by is not None
    ]
    blocks += [
        f"ALTER TABLE ONLY {table.name} ADD CONSTRAINT {c.name} {c.definition};"
        for table in model.tables
        for c in table.constraints
        if c.kind == "foreign key"
    ]
    blocks += [
        f"{index.definition};" + ("" if index.valid else "  -- INVALID in the database")
        for index in model.indexes
    ]
    blocks += [_view(view) for view in model.views]
    for trigger in model.triggers:
        blocks.append(f"{trigger.definition};")
        if trigger.enabled != "ORIGIN":
            action = "DISABLE" if trigger.enabled == "DISABLED" else f"ENABLE {trigger.enabled}"
            blocks.append(f"ALTER TABLE {trigger.table} {action} TRIGGER {trigger.name};")
    return blocks


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sequence(s: Sequence) -> str:
    return (
        f"CREATE SEQUENCE {s.name} AS {s.type} START WITH {s.start} INCREMENT BY {s.increment}"
        f" MINVALUE {s.minimum} MAXVALUE {s.maximum} CACHE {s.cache}{' CYCLE' if s.cycle else ' NO CYCLE'};"
    )


def _function(f: Function) -> str:
    if f.kind == "aggregate":
        return f"-- aggregate {f.key}: not dumped"
    head = "PROCEDURE" if f.kind == "procedure" else "FUNCTION"
    parts = [f"CREATE {head} {f.name}({f.full_arguments})"]
    parts += [f"RETURNS {f.returns}"] if f.returns else []
    parts += [f"LANGUAGE {f.language}"]
    if f.kind != "procedure":
        parts += [f.volatility] + (["STRICT"] if f.strict else [])
    parts += ["SECURITY DEFINER"] if f.security_definer else []
    if f.language == "sql" and f.body.startswith(("BEGIN ATOMIC", "RETURN ")):
        return " ".join(parts) + "\n" + f.body + ";"
    tag = "$body$"
    while tag in f.body:
        tag = tag[:-1] + "_$"
    return " ".join(parts) + f" AS {tag}\n{f.body}\n{tag};"


def _column(column: Column, dialect: str) -> str:
    parts = [column.name, column.type]
    if column.generated is not None:
        parts += [f"GENERATED ALWAYS AS ({column.generated}) STORED"] if dialect == "postgresql" else []
    if column.identity is not None:
        parts.append(f"GENERATED {column.identity} AS IDENTITY")
    if column.default is not None:
        parts.append(f"DEFAULT {column.default}")
    if not column.nullable:
        parts.append("NOT NULL")
    return " ".join(part for part in parts if part)


def _postgres_table(table: Table) -> str:
    lines = [_column(column, "postgresql") for column in sorted(table.columns, key=lambda c: c.position)]
    lines += [f"CONSTRAINT {c.name} {c.definition}" for c in table.constraints if c.kind != "foreign key"]
    note = "" if table.kind == "table" else f"-- a {table.kind}: its partition key or server is not dumped\n"
    return note + f"CREATE TABLE {table.name} (\n    " + ",\n    ".join(lines) + "\n);"


def _sqlite_table(table: Table) -> str:
    lines = [_column(column, "sqlite") for column in sorted(table.columns, key=lambda c: c.position)]
    lines += [c.definition for c in table.constraints]
    return f"CREATE TABLE {table.name} (\n    " + ",\n    ".join(lines) + "\n);"


def _view(view: View) -> str:
    body = view.definition.rstrip().rstrip(";")
    if view.materialized:
        return f"CREATE MATERIALIZED VIEW {view.name} AS\n{body}\nWITH NO DATA;"
    return f"CREATE VIEW {view.name} AS\n{body};"
