"""The schema model behind drift detection (issue 5), on real databases: every kind of change by
hand is found and named, equal end states compare equal whatever the path, the service's own
history gives no false positive, dumps and fingerprints are stable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

import dbledger
from dbledger.backends import open_backend
from dbledger.config import parse_database_url
from dbledger.ledger import LedgerNames
from dbledger.schema import SchemaModel, diff, dump_sql, fingerprint, introspect_sqlite
from dbledger.schema.introspect_postgres import introspect_postgres
from dbledger.schema.model import Column, Table

SERVICE_MIGRATIONS = Path(__file__).parent.parent / "service" / "connections_service" / "migrations"


def execute(url: str, script: str) -> None:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            conn.executescript(script)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(script.encode())


def model(url: str) -> SchemaModel:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :])
        try:
            return introspect_sqlite(conn)
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True) as pg:
        return introspect_postgres(pg)


# -- (a) changes by hand are found and named ---------------------------------------------------

PG_BASE = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE SEQUENCE counter;
CREATE TABLE orgs (id varchar(255) PRIMARY KEY, name text NOT NULL DEFAULT 'x');
CREATE TABLE conns (
    id varchar(255) PRIMARY KEY,
    org_id varchar(255) REFERENCES orgs (id) ON DELETE CASCADE,
    status text,
    note varchar(100),
    size positive,
    feeling mood
);
CREATE INDEX conns_org_idx ON conns (org_id);
CREATE FUNCTION log_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NEW;
END $$;
CREATE TRIGGER conns_audit AFTER INSERT ON conns FOR EACH ROW EXECUTE FUNCTION log_changes();
CREATE VIEW active_conns AS SELECT id FROM conns WHERE status = 'active';
"""

PG_CHANGES = [
    (
        "ALTER TABLE conns ALTER COLUMN note TYPE text",
        "column conns.note: expected character varying(100), found text",
    ),
    (
        "ALTER TABLE orgs ALTER COLUMN name SET DEFAULT 'y'",
        "column orgs.name: expected default 'x'::text, found default 'y'::text",
    ),
    (
        "ALTER TABLE orgs ALTER COLUMN name DROP NOT NULL",
        "column orgs.name: expected NOT NULL, found nullable",
    ),
    ("ALTER TABLE conns DROP COLUMN note", "missing column conns.note"),
    (
        "ALTER TABLE conns DROP CONSTRAINT conns_org_id_fkey, ADD CONSTRAINT conns_org_id_fkey"
        " FOREIGN KEY (org_id) REFERENCES orgs (id) ON DELETE SET NULL",
        "foreign key conns.conns_org_id_fkey: expected ON DELETE CASCADE, found ON DELETE SET NULL",
    ),
    (
        "DROP INDEX conns_org_idx; CREATE INDEX conns_org_idx ON conns (org_id, status)",
        "index conns_org_idx: expected CREATE INDEX conns_org_idx ON public.conns USING btree (org_id),"
        " found CREATE INDEX conns_org_idx ON public.conns USING btree (org_id, status)",
    ),
    (
        "CREATE OR REPLACE FUNCTION log_changes() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n    RETURN NULL;\nEND $$",
        "trigger function log_changes: body differs",
    ),
    (
        "DROP TRIGGER conns_audit ON conns;"
        " CREATE TRIGGER conns_audit AFTER UPDATE ON conns FOR EACH ROW EXECUTE FUNCTION log_changes()",
        "trigger conns.conns_audit: expected CREATE TRIGGER conns_audit AFTER INSERT ON public.conns FOR EACH"
        " ROW EXECUTE FUNCTION log_changes(), found CREATE TRIGGER conns_audit AFTER UPDATE ON public.conns"
        " FOR EACH ROW EXECUTE FUNCTION log_changes()",
    ),
    (
        "ALTER TABLE conns DISABLE TRIGGER conns_audit",
        "trigger conns.conns_audit: expected enabled ORIGIN, found enabled DISABLED",
    ),
    ("DROP VIEW active_conns", "missing view active_conns"),
    ("CREATE TABLE hand_made (id int)", "extra table hand_made"),
    (
        "ALTER TYPE mood ADD VALUE 'angry'",
        "enum mood: expected labels ('happy', 'sad'), found labels ('happy', 'sad', 'angry')",
    ),
    ("ALTER SEQUENCE counter INCREMENT BY 5", "sequence counter: expected increment 1, found increment 5"),
    (
        "ALTER DOMAIN positive DROP CONSTRAINT positive_check;"
        " ALTER DOMAIN positive ADD CONSTRAINT positive_check CHECK (VALUE > 1)",
        "domain positive: expected checks positive_check CHECK ((VALUE > 0)),"
        " found checks positive_check CHECK ((VALUE > 1))",
    ),
    ("DROP EXTENSION pgcrypto", "missing extension pgcrypto"),
    ("CREATE INDEX CONCURRENTLY hand_idx ON conns (status)", "extra index hand_idx"),
]


@pytest.mark.parametrize(("change", "message"), PG_CHANGES, ids=[m.split(":")[0] for _, m in PG_CHANGES])
def test_postgres_change_by_hand_is_named(pg_url: str, change: str, message: str) -> None:
    execute(pg_url, PG_BASE)
    expected = model(pg_url)
    execute(pg_url, change)
    found = model(pg_url)

    messages = [d.message for d in diff(expected, found)]

    assert message in messages
    assert fingerprint(expected) != fingerprint(found)
    assert diff(expected, expected) == []


def test_postgres_body_difference_comes_with_a_unified_diff(pg_url: str) -> None:
    execute(pg_url, PG_BASE)
    expected = model(pg_url)
    execute(pg_url, PG_CHANGES[6][0])

    (difference,) = diff(expected, model(pg_url))

    assert difference.kind == "trigger function"
    assert difference.details is not None
    assert "-RETURN NEW;\n+RETURN NULL;" in difference.details
    assert str(difference).startswith("trigger function log_changes: body differs\n--- expected log_changes")


SQLITE_BASE = """
CREATE TABLE orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT 'x');
CREATE TABLE conns (
    id TEXT PRIMARY KEY, org_id TEXT REFERENCES orgs (id) ON DELETE CASCADE, note VARCHAR(100));
CREATE INDEX conns_org_idx ON conns (org_id);
CREATE TRIGGER conns_audit AFTER INSERT ON conns BEGIN SELECT 1; END;
CREATE VIEW active_conns AS SELECT id FROM conns;
"""

SQLITE_CHANGES = [
    ("note VARCHAR(100)", "note TEXT", "column conns.note: expected VARCHAR(100), found TEXT"),
    ("DEFAULT 'x'", "DEFAULT 'y'", "column orgs.name: expected default 'x', found default 'y'"),
    ("name TEXT NOT NULL", "name TEXT", "column orgs.name: expected NOT NULL, found nullable"),
    (
        "ON DELETE CASCADE",
        "ON DELETE SET NULL",
        "foreign key conns.foreign key (org_id): expected ON DELETE CASCADE, found ON DELETE SET NULL",
    ),
    (
        "conns (org_id);",
        "conns (org_id, note);",
        "index conns_org_idx: expected CREATE INDEX conns_org_idx ON conns (org_id),"
        " found CREATE INDEX conns_org_idx ON conns (org_id, note)",
    ),
    (
        "SELECT 1; END",
        "SELECT 2; END",
        "trigger conns.conns_audit: expected CREATE TRIGGER conns_audit AFTER INSERT ON conns"
        " BEGIN SELECT 1; END, found CREATE TRIGGER conns_audit AFTER INSERT ON conns BEGIN SELECT 2; END",
    ),
    ("CREATE VIEW active_conns AS SELECT id FROM conns;", "", "missing view active_conns"),
    (
        ", note VARCHAR(100));",
        ", note VARCHAR(100)); CREATE TABLE hand_made (id INTEGER);",
        "extra table hand_made",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "message"), SQLITE_CHANGES, ids=[m.split(":")[0] for *_, m in SQLITE_CHANGES]
)
def test_sqlite_change_by_hand_is_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in SQLITE_BASE
    expected_url, found_url = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    execute(expected_url, SQLITE_BASE)
    execute(found_url, SQLITE_BASE.replace(old, new))
    expected, found = model(expected_url), model(found_url)

    assert message in [d.message for d in diff(expected, found)]
    assert fingerprint(expected) != fingerprint(found)


def test_dbledger_tables_are_left_out(db_url: str, migrations_dir: Path) -> None:
    (migrations_dir / "001_t.sql").write_text("CREATE TABLE t (id INTEGER PRIMARY KEY);\n")
    dbledger.migrate(db_url, migrations_dir)
    execute(db_url, "CREATE TABLE schema_migrations_notes (id INTEGER)")  # the application's own

    with open_backend(parse_database_url(db_url)) as backend:
        found = backend.introspect()

    # dbledger's four tables, their ids' sequences and the applied-order index are left out.
    assert [t.name for t in found.tables] == ["schema_migrations_notes", "t"]
    assert [s.name for s in found.sequences] == []
    assert [i.name for i in found.indexes] == []


def test_a_placed_ledger_is_left_out_wherever_it_is(db_url: str, migrations_dir: Path) -> None:
    (migrations_dir / "001_t.sql").write_text("CREATE TABLE t (id INTEGER PRIMARY KEY);\n")
    dbledger.migrate(db_url, migrations_dir, ledger_table="dbledger_ledger")

    with open_backend(parse_database_url(db_url), LedgerNames("dbledger_ledger")) as backend:
        found = backend.introspect()

    assert [t.name for t in found.tables] == ["t"]


# -- (b) the same end state by different paths compares equal ---------------------------------

PG_PATH_A = """
CREATE TABLE t (id integer PRIMARY KEY, a text);
ALTER TABLE t ADD COLUMN b integer NOT NULL DEFAULT 0;
CREATE INDEX t_b ON t (b);
INSERT INTO t (id, a) SELECT g, 'x' FROM generate_series(1, 100) g;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.b := NEW.b + 1; -- count
    RETURN NEW;
END
$$;
CREATE TRIGGER t_touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch();
"""
PG_PATH_B = """
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$\r
\r
  BEGIN   \r
\tNEW.b   :=   NEW.b + 1; -- count\r
\r
      RETURN NEW;\r
  END$$;
CREATE TABLE t (b integer DEFAULT 0, junk text, a text, id integer);
INSERT INTO t (id, a) SELECT g, 'x' FROM generate_series(1, 100) g;
ALTER TABLE t DROP COLUMN junk, ALTER COLUMN b SET NOT NULL, ADD PRIMARY KEY (id);
CREATE TRIGGER t_touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch();
CREATE INDEX t_b ON t USING btree (b);
"""


def test_postgres_same_state_by_different_paths_is_equal(pg_server: object, pg_url: str) -> None:
    execute(pg_url, PG_PATH_A)
    first = model(pg_url)
    execute(pg_url, "DROP TABLE t; DROP FUNCTION touch()")
    execute(pg_url, PG_PATH_B)
    second = model(pg_url)

    assert diff(first, second) == []
    assert first == second
    assert fingerprint(first) == fingerprint(second)
    assert [c.position for c in first.tables[0].columns] != [c.position for c in second.tables[0].columns]


def test_sqlite_same_state_by_different_paths_is_equal(tmp_path: Path) -> None:
    first_url, second_url = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    execute(
        first_url,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT);"
        " ALTER TABLE t ADD COLUMN b integer NOT NULL DEFAULT 0; CREATE INDEX t_b ON t (b);",
    )
    execute(
        second_url,
        "CREATE TABLE t (\n  id INTEGER PRIMARY KEY,\n  a TEXT,\n  b INTEGER NOT NULL DEFAULT 0\n);"
        " INSERT INTO t (a) VALUES ('x'); CREATE INDEX   t_b\n   ON t (b);",
    )

    assert diff(model(first_url), model(second_url)) == []
    assert fingerprint(model(first_url)) == fingerprint(model(second_url))


# -- (c) the service's own history: no false positive -----------------------------------------


def test_service_history_has_no_false_positive(pg_server: object, pg_url: str, tmp_path: Path) -> None:
    from tests.conftest import _counter  # a second fresh database on the same server

    name = f"second_{next(_counter)}"
    other_url = pg_server.create_database(name)  # type: ignore[attr-defined]
    try:
        seen = []
        for version in (1, 2, 3, 4):
            dbledger.migrate(pg_url, SERVICE_MIGRATIONS, to=version)
            dbledger.migrate(other_url, SERVICE_MIGRATIONS, to=version)
            here, there = model(pg_url), model(other_url)
            assert diff(here, there) == [], version
            assert fingerprint(here) == fingerprint(there)
            seen.append(fingerprint(here))
        assert len(set(seen)) == 4  # every migration changes the schema, and the model sees it
    finally:
        pg_server.drop_database(name)  # type: ignore[attr-defined]


def test_service_history_replayed_at_once_equals_step_by_step(pg_server: object, pg_url: str) -> None:
    from tests.conftest import _counter

    name = f"second_{next(_counter)}"
    other_url = pg_server.create_database(name)  # type: ignore[attr-defined]
    try:
        for version in (1, 2, 3, 4):
            dbledger.migrate(pg_url, SERVICE_MIGRATIONS, to=version)
        dbledger.migrate(other_url, SERVICE_MIGRATIONS)
        assert diff(model(pg_url), model(other_url)) == []
        dump = dump_sql(model(pg_url))
        assert dump == dump_sql(model(other_url))
        assert "ALTER TABLE ONLY audit_logs ADD CONSTRAINT audit_logs_platform_connection_id_fkey" in dump
    finally:
        pg_server.drop_database(name)  # type: ignore[attr-defined]


# -- (d) dump_sql is stable and re-executable ---------------------------------------------------


def test_dump_is_stable_across_runs_and_re_executable(pg_server: object, pg_url: str) -> None:
    from tests.conftest import _counter

    dbledger.migrate(pg_url, SERVICE_MIGRATIONS)
    execute(pg_url, PG_BASE)
    first = dump_sql(model(pg_url))
    assert dump_sql(model(pg_url)) == first

    name = f"restored_{next(_counter)}"
    restored_url = pg_server.create_database(name)  # type: ignore[attr-defined]
    try:
        execute(restored_url, first)
        assert diff(model(pg_url), model(restored_url)) == []
        assert dump_sql(model(restored_url)) == first
    finally:
        pg_server.drop_database(name)  # type: ignore[attr-defined]


def test_sqlite_dump_is_stable_and_re_executable(tmp_path: Path) -> None:
    first_url, second_url = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    execute(first_url, SQLITE_BASE)
    dump = dump_sql(model(first_url))
    assert dump == dump_sql(model(first_url))

    execute(second_url, dump)

    assert diff(model(first_url), model(second_url)) == []
    assert dump_sql(model(second_url)) == dump


# -- (e) the fingerprint changes exactly when the model does ---------------------------------


def test_fingerprint_follows_the_model_and_ignores_column_position() -> None:
    column = Column("id", "integer", nullable=False, position=1)
    base = SchemaModel("postgresql", tables=(Table("t", (column,)),))
    moved = SchemaModel(
        "postgresql", tables=(Table("t", (Column("id", "integer", nullable=False, position=7),)),)
    )
    retyped = SchemaModel("postgresql", tables=(Table("t", (Column("id", "bigint", nullable=False),)),))

    assert moved == base
    assert fingerprint(moved) == fingerprint(base)
    assert retyped != base
    assert fingerprint(retyped) != fingerprint(base)
    assert len(fingerprint(base)) == 64
    assert diff(base, retyped)[0].message == "column t.id: expected integer, found bigint"
    assert "position" not in str(base.to_dict())
    assert "position" in str(base.to_dict(positions=True))
