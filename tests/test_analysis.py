"""Dry-run analysis: every claim about a statement checked against a real PostgreSQL.

One table of cases says, for each statement, its kind, the strongest lock it takes, what it does
to the data and whether it destroys any. The same table runs twice:

* against ``StaticCatalog`` (a dictionary mirroring the schema below): the classification rules
  alone, no server;
* against a real server with ``PostgresCatalog``. The statement then runs inside a transaction
  that is rolled back, and the server is watched: ``pg_class.relfilenode`` must change for a
  rewrite (and for nothing else), ``pg_stat_xact_user_tables`` must show a sequential scan for a
  scan and none for a catalog-only change, a build must create or rebuild an index, and the locks
  ``pg_locks`` shows for the running transaction (read from a second connection) must be the
  analysis's, table by table (ACCESS SHARE on tables the SQL does not name is tolerated).

Statements PostgreSQL refuses inside a transaction (CREATE INDEX CONCURRENTLY, VACUUM...) are
checked by holding a conflicting lock on their table first: they queue for their lock, and
``pg_locks`` shows the mode they wait for.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from connections_service import MIGRATIONS

import dbledger
from dbledger.analysis import (
    ForeignKey,
    PostgresCatalog,
    StatementAnalysis,
    StaticCatalog,
    TableSize,
    analyse,
    analyse_all,
    lock_from_pg_locks,
    lock_strength,
)
from dbledger.analysis.model import Effect
from dbledger.analysis.nodes import parse_type
from dbledger.analysis.rules import type_change, type_change_rewrites
from dbledger.contracts import Statement
from dbledger.dialects import for_name
from dbledger.testing import Cluster
from tests.conftest import ExternalServer
from tests.helpers import run_cli

AE, EX, SRE, SH = "ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE ROW EXCLUSIVE", "SHARE"
SUE, RE, RS, AS = "SHARE UPDATE EXCLUSIVE", "ROW EXCLUSIVE", "ROW SHARE", "ACCESS SHARE"

SCHEMA = """
CREATE TABLE parent (
    id integer PRIMARY KEY, name varchar(100), u uuid, n numeric(10,2), big text, ts timestamp(3),
    t text, ch char(10), vc varchar(50), net cidr
);
CREATE INDEX parent_name ON parent (name);
CREATE TABLE child (
    id integer PRIMARY KEY, parent_id integer CONSTRAINT child_fk REFERENCES parent (id),
    v varchar(20), note text
);
CREATE INDEX child_v ON child (v);
ALTER TABLE child ADD CONSTRAINT child_positive CHECK (id > 0) NOT VALID;
ALTER TABLE child ADD CONSTRAINT child_parent_nv FOREIGN KEY (parent_id) REFERENCES parent (id) NOT VALID;
CREATE TABLE other (id integer, note text);
CREATE VIEW other_notes AS SELECT id, note FROM other;
CREATE MATERIALIZED VIEW other_counts AS SELECT note, count(*) FROM other GROUP BY note;
CREATE TABLE events (id integer, at date) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE loose (id integer, at date);
CREATE SCHEMA scratch;
CREATE TABLE scratch.box (id integer);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER child_touch BEFORE INSERT ON child FOR EACH ROW EXECUTE FUNCTION touch();
INSERT INTO parent
SELECT g, 'n' || g, gen_random_uuid(), g, 'x', now(), 't', 'c', 'v', '10.0.0.0/8'
FROM generate_series(1, 200) g;
INSERT INTO child SELECT g, g, 'v' || g, 'n' FROM generate_series(1, 200) g;
INSERT INTO other SELECT g, 'o' FROM generate_series(1, 50) g;
INSERT INTO events SELECT g, '2024-03-01' FROM generate_series(1, 10) g;
INSERT INTO loose SELECT g, '2025-03-01' FROM generate_series(1, 10) g;
"""

# The same schema as a dictionary, for the server-less half of every case.
STATIC = StaticCatalog(
    columns={
        "parent": {
            "id": "integer",
            "name": "character varying(100)",
            "u": "uuid",
            "n": "numeric(10,2)",
            "big": "text",
            "ts": "timestamp(3) without time zone",
            "t": "text",
            "ch": "character(10)",
            "vc": "character varying(50)",
            "net": "cidr",
        },
        "child": {"id": "integer", "parent_id": "integer", "v": "character varying(20)", "note": "text"},
        "other": {"id": "integer", "note": "text"},
        "loose": {"id": "integer", "at": "date"},
    },
    sizes={"parent": TableSize(200, 65536), "child": TableSize(200, 65536), "other": TableSize(50, 8192)},
    indexes={"parent": 2, "child": 2},
    index_tables={
        "parent_pkey": "parent",
        "parent_name": "parent",
        "child_pkey": "child",
        "child_v": "child",
    },
    keys=(
        ForeignKey("child_fk", "child", ("parent_id",), "parent", ("id",)),
        ForeignKey("child_parent_nv", "child", ("parent_id",), "parent", ("id",)),
    ),
    relations=frozenset({"other_notes", "other_counts", "events", "events_2024", "scratch.box"}),
)


@dataclass(frozen=True)
class Case:
    sql: str
    kind: str
    lock: str | None
    effect: Effect
    destructive: bool = False
    # Every table's lock, when the statement locks more than its own table.
    locks: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.sql


def alter(sql: str, lock: str, effect: Effect, destructive: bool = False, **locks: str) -> Case:
    return Case(sql, "ALTER TABLE", lock, effect, destructive, dict(locks))


CASES = [
    # ADD COLUMN: a constant default is stored in the catalog (PostgreSQL 11+); a volatile one is not
    alter("ALTER TABLE parent ADD COLUMN a integer", AE, "catalog"),
    alter("ALTER TABLE parent ADD COLUMN a integer DEFAULT 5", AE, "catalog"),
    alter("ALTER TABLE parent ADD COLUMN a integer NOT NULL DEFAULT 0", AE, "catalog"),
    alter("ALTER TABLE parent ADD COLUMN a timestamptz DEFAULT now()", AE, "catalog"),
    alter("ALTER TABLE parent ADD COLUMN a float8 DEFAULT random()", AE, "rewrite"),
    alter("ALTER TABLE parent ADD COLUMN a uuid DEFAULT gen_random_uuid()", AE, "rewrite"),
    alter("ALTER TABLE parent ADD COLUMN a timestamptz DEFAULT clock_timestamp()", AE, "rewrite"),
    alter("ALTER TABLE parent ADD COLUMN a serial", AE, "rewrite"),
    alter("ALTER TABLE parent ADD COLUMN a integer GENERATED ALWAYS AS IDENTITY", AE, "rewrite"),
    alter("ALTER TABLE parent ADD COLUMN a integer GENERATED ALWAYS AS (id * 2) STORED", AE, "rewrite"),
    alter("ALTER TABLE parent ADD COLUMN a integer CHECK (a > 0)", AE, "scan"),
    alter("ALTER TABLE parent ADD COLUMN a integer UNIQUE", AE, "build"),
    alter(
        "ALTER TABLE child ADD COLUMN p2 integer REFERENCES parent (id)", AE, "catalog", child=AE, parent=SRE
    ),
    alter(
        "ALTER TABLE child ADD COLUMN p2 integer DEFAULT 1 REFERENCES parent",
        AE,
        "scan",
        child=AE,
        parent=SRE,
    ),
    # DROP COLUMN
    alter("ALTER TABLE parent DROP COLUMN big", AE, "catalog", destructive=True),
    alter("ALTER TABLE child DROP COLUMN parent_id", AE, "catalog", destructive=True, child=AE, parent=AE),
    # ALTER COLUMN TYPE: binary coercible or widening is catalog only
    alter("ALTER TABLE parent ALTER COLUMN name TYPE varchar(200)", AE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN name TYPE varchar(50)", AE, "rewrite", destructive=True),
    alter("ALTER TABLE parent ALTER COLUMN name TYPE text", AE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN name TYPE varchar(200) USING name::varchar(200)", AE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN name TYPE varchar(200) USING name::text", AE, "rewrite", True),
    alter("ALTER TABLE parent ALTER COLUMN vc TYPE text", AE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN t TYPE varchar", AE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN t TYPE varchar(10)", AE, "rewrite", destructive=True),
    alter("ALTER TABLE parent ALTER COLUMN n TYPE numeric(12,2)", AE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN n TYPE numeric", AE, "catalog"),
    alter(
        "ALTER TABLE parent ALTER COLUMN n TYPE numeric(12,3)", AE, "rewrite"
    ),  # more scale: every value kept
    alter("ALTER TABLE parent ALTER COLUMN n TYPE numeric(10,3)", AE, "rewrite", destructive=True),
    alter("ALTER TABLE parent ALTER COLUMN ts TYPE timestamp(6)", AE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN ts TYPE timestamptz", AE, "rewrite", destructive=True),
    alter("ALTER TABLE parent ALTER COLUMN ch TYPE text", AE, "rewrite"),  # char's padding never counted
    alter("ALTER TABLE parent ALTER COLUMN ch TYPE varchar(5)", AE, "rewrite", destructive=True),
    alter("ALTER TABLE parent ALTER COLUMN net TYPE inet", AE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN u TYPE varchar(255) USING u::text", AE, "rewrite", True),
    # widenings keep every value, some by rewriting every row
    alter("ALTER TABLE loose ALTER COLUMN id TYPE bigint", AE, "rewrite"),
    alter("ALTER TABLE loose ALTER COLUMN id TYPE int8", AE, "rewrite"),
    alter("ALTER TABLE loose ALTER COLUMN id TYPE numeric(10)", AE, "rewrite"),
    alter("ALTER TABLE loose ALTER COLUMN id TYPE numeric(9)", AE, "rewrite", destructive=True),
    alter("ALTER TABLE loose ALTER COLUMN id TYPE smallint", AE, "rewrite", destructive=True),
    alter("ALTER TABLE loose ALTER COLUMN id TYPE real", AE, "rewrite", destructive=True),
    alter("ALTER TABLE loose ALTER COLUMN id TYPE double precision", AE, "rewrite"),
    alter("ALTER TABLE loose ALTER COLUMN id TYPE text", AE, "rewrite"),
    alter("ALTER TABLE loose ALTER COLUMN at TYPE timestamp", AE, "rewrite"),
    alter("ALTER TABLE child ALTER COLUMN note TYPE varchar(10)", AE, "rewrite", destructive=True),
    # a key referenced by foreign keys: they are re-created, the referencing table is locked too
    alter("ALTER TABLE parent ALTER COLUMN id TYPE bigint", AE, "rewrite", parent=AE, child=AE),
    alter("ALTER TABLE child ALTER COLUMN parent_id TYPE bigint", AE, "rewrite", parent=AE, child=AE),
    # NOT NULL, defaults, statistics, storage
    alter("ALTER TABLE parent ALTER COLUMN name SET NOT NULL", AE, "scan"),
    alter("ALTER TABLE parent ALTER COLUMN name DROP NOT NULL", AE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN name SET DEFAULT 'x'", AE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN u DROP DEFAULT", AE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN name SET STATISTICS 500", SUE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN name SET (n_distinct = 10)", SUE, "catalog"),
    alter("ALTER TABLE parent ALTER COLUMN name SET STORAGE EXTERNAL", AE, "catalog"),
    # constraints
    alter("ALTER TABLE child ADD CONSTRAINT c2 CHECK (id > 0)", AE, "scan"),
    alter("ALTER TABLE child ADD CONSTRAINT c2 CHECK (id > 0) NOT VALID", AE, "catalog"),
    alter(
        "ALTER TABLE child ADD CONSTRAINT c2 FOREIGN KEY (parent_id) REFERENCES parent (id)",
        SRE,
        "scan",
        child=SRE,
        parent=SRE,
    ),
    alter(
        "ALTER TABLE child ADD CONSTRAINT c2 FOREIGN KEY (parent_id) REFERENCES parent (id) NOT VALID",
        SRE,
        "catalog",
        child=SRE,
        parent=SRE,
    ),
    alter("ALTER TABLE child VALIDATE CONSTRAINT child_positive", SUE, "scan"),
    alter("ALTER TABLE child VALIDATE CONSTRAINT child_parent_nv", SUE, "scan", child=SUE, parent=RS),
    alter("ALTER TABLE other ADD PRIMARY KEY (id)", AE, "build"),
    alter("ALTER TABLE other ADD CONSTRAINT other_id UNIQUE (id)", AE, "build"),
    alter("ALTER TABLE other ADD CONSTRAINT other_excl EXCLUDE (id WITH =)", AE, "build"),
    alter("ALTER TABLE child DROP CONSTRAINT child_positive", AE, "catalog"),
    alter("ALTER TABLE child DROP CONSTRAINT child_fk", AE, "catalog", child=AE, parent=AE),
    alter("ALTER TABLE child ALTER CONSTRAINT child_fk DEFERRABLE", AE, "catalog"),
    # renames
    alter("ALTER TABLE child RENAME COLUMN v TO w", AE, "catalog"),
    alter("ALTER TABLE child RENAME TO kid", AE, "catalog"),
    alter("ALTER TABLE child RENAME CONSTRAINT child_positive TO child_ok", AE, "catalog"),
    Case("ALTER INDEX child_v RENAME TO child_w", "ALTER INDEX", SUE, "catalog"),
    # triggers, storage parameters, persistence, ownership, partitions
    alter("ALTER TABLE child DISABLE TRIGGER child_touch", SRE, "catalog"),
    alter("ALTER TABLE child ENABLE TRIGGER ALL", SRE, "catalog"),
    alter("ALTER TABLE child SET (fillfactor = 70)", SUE, "catalog"),
    alter("ALTER TABLE child SET (autovacuum_enabled = false)", SUE, "catalog"),
    alter("ALTER TABLE child SET (user_catalog_table = true)", AE, "catalog"),
    alter("ALTER TABLE child SET UNLOGGED", AE, "rewrite"),
    alter("ALTER TABLE child OWNER TO CURRENT_USER", AE, "catalog"),
    alter("ALTER TABLE child CLUSTER ON child_v", SUE, "catalog"),
    alter("ALTER TABLE child ENABLE ROW LEVEL SECURITY", AE, "catalog"),
    alter("ALTER TABLE child REPLICA IDENTITY FULL", AE, "catalog"),
    alter(
        "ALTER TABLE events ATTACH PARTITION loose FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
        AE,
        "scan",
        events=SUE,
        loose=AE,
    ),
    alter("ALTER TABLE events DETACH PARTITION events_2024", AE, "catalog", events=AE, events_2024=AE),
    # tables
    Case("CREATE TABLE fresh (id integer PRIMARY KEY, name text)", "CREATE TABLE", AE, "catalog"),
    Case(
        "CREATE TABLE fresh (id integer REFERENCES parent (id))",
        "CREATE TABLE",
        AE,
        "catalog",
        locks={"parent": SRE},
    ),
    Case(
        "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
        "CREATE TABLE",
        AE,
        "catalog",
        locks={"events": AE},
    ),
    Case(
        "CREATE TABLE kid (extra integer) INHERITS (other)",
        "CREATE TABLE",
        AE,
        "catalog",
        locks={"other": SUE},
    ),
    Case("CREATE TABLE copy AS SELECT * FROM child", "CREATE TABLE AS", AE, "data", locks={"child": AS}),
    Case(
        "CREATE MATERIALIZED VIEW mv AS SELECT * FROM child",
        "CREATE MATERIALIZED VIEW",
        AE,
        "data",
        locks={"child": AS},
    ),
    Case("DROP TABLE loose", "DROP TABLE", AE, "catalog", destructive=True),
    # IF EXISTS on something absent: PostgreSQL only notices, nothing is locked or dropped
    Case("DROP TABLE IF EXISTS ghost", "DROP TABLE", None, "catalog"),
    Case("DROP TABLE IF EXISTS ghost, loose", "DROP TABLE", AE, "catalog", destructive=True),
    Case("DROP INDEX IF EXISTS ghost", "DROP INDEX", None, "catalog"),
    Case("DROP INDEX IF EXISTS child_v", "DROP INDEX", AE, "catalog", locks={"child": AE}),
    Case("DROP VIEW IF EXISTS ghost", "DROP VIEW", None, "catalog"),
    Case("DROP VIEW IF EXISTS other_notes", "DROP VIEW", AE, "catalog"),
    Case("DROP MATERIALIZED VIEW IF EXISTS ghost", "DROP MATERIALIZED VIEW", None, "catalog"),
    Case("DROP SEQUENCE IF EXISTS ghost", "DROP SEQUENCE", None, "catalog"),
    Case("ALTER TABLE IF EXISTS ghost ADD COLUMN a integer", "ALTER TABLE", None, "catalog"),
    alter("ALTER TABLE child DROP COLUMN IF EXISTS ghost", AE, "catalog"),
    alter("ALTER TABLE child DROP COLUMN IF EXISTS note", AE, "catalog", destructive=True),
    # IF NOT EXISTS on something present: nothing is created (CREATE INDEX locks the table first)
    alter("ALTER TABLE parent ADD COLUMN IF NOT EXISTS name uuid DEFAULT gen_random_uuid()", AE, "catalog"),
    Case("CREATE TABLE IF NOT EXISTS other (id integer)", "CREATE TABLE", None, "catalog"),
    Case("CREATE INDEX IF NOT EXISTS child_v ON child (v)", "CREATE INDEX", SH, "catalog"),
    Case("DROP TABLE child", "DROP TABLE", AE, "catalog", True, locks={"child": AE, "parent": AE}),
    Case("DROP TABLE parent CASCADE", "DROP TABLE", AE, "catalog", True, locks={"child": AE, "parent": AE}),
    Case("TRUNCATE other", "TRUNCATE", AE, "catalog", destructive=True),
    Case("DROP SCHEMA scratch CASCADE", "DROP SCHEMA", AE, "catalog", destructive=True),
    Case("ALTER TABLE loose SET SCHEMA scratch", "SET SCHEMA", AE, "catalog"),
    # indexes
    Case("CREATE INDEX child_note ON child (note)", "CREATE INDEX", SH, "build"),
    Case("CREATE UNIQUE INDEX child_id2 ON child (id)", "CREATE UNIQUE INDEX", SH, "build"),
    Case("DROP INDEX child_v", "DROP INDEX", AE, "catalog"),
    Case("REINDEX TABLE child", "REINDEX TABLE", SH, "build"),
    Case("REINDEX INDEX child_v", "REINDEX INDEX", SH, "build"),
    Case("CLUSTER child USING child_v", "CLUSTER", AE, "rewrite"),
    # functions, triggers, views, policies
    Case(
        "CREATE FUNCTION f() RETURNS integer LANGUAGE sql AS 'SELECT 1'", "CREATE FUNCTION", None, "catalog"
    ),
    Case(
        "CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
        "CREATE OR REPLACE FUNCTION",
        None,
        "catalog",
    ),
    Case(
        "CREATE TRIGGER t2 BEFORE UPDATE ON child FOR EACH ROW EXECUTE FUNCTION touch()",
        "CREATE TRIGGER",
        SRE,
        "catalog",
    ),
    Case("DROP TRIGGER child_touch ON child", "DROP TRIGGER", AE, "catalog"),
    Case("CREATE VIEW child_view AS SELECT * FROM child", "CREATE VIEW", AS, "catalog"),
    Case(
        "CREATE OR REPLACE VIEW other_notes AS SELECT id, note FROM other",
        "CREATE OR REPLACE VIEW",
        AE,
        "catalog",
        locks={"other_notes": AE, "other": AS},
    ),
    # (it also reads ``other`` under ACCESS SHARE: the view's query is in the catalog, not the SQL)
    Case("REFRESH MATERIALIZED VIEW other_counts", "REFRESH MATERIALIZED VIEW", AE, "rewrite"),
    Case("CREATE POLICY p ON child USING (true)", "CREATE POLICY", AE, "catalog"),
    Case("CREATE RULE r AS ON INSERT TO other DO INSTEAD NOTHING", "CREATE RULE", AE, "catalog"),
    Case("COMMENT ON TABLE child IS 'x'", "COMMENT", SUE, "catalog"),
    Case("COMMENT ON COLUMN child.v IS 'x'", "COMMENT", SUE, "catalog"),
    Case("GRANT SELECT ON child TO PUBLIC", "GRANT", None, "catalog"),
    Case("LOCK TABLE other IN EXCLUSIVE MODE", "LOCK TABLE", EX, "catalog"),
    # schema objects
    Case("CREATE EXTENSION IF NOT EXISTS pgcrypto", "CREATE EXTENSION", None, "catalog"),
    Case("CREATE SCHEMA app", "CREATE SCHEMA", None, "catalog"),
    Case("CREATE SEQUENCE seq", "CREATE SEQUENCE", None, "catalog"),
    Case("CREATE TYPE mood AS ENUM ('ok', 'sad')", "CREATE TYPE", None, "catalog"),
    # data
    Case("INSERT INTO other VALUES (1, 'a'), (2, 'b')", "INSERT", RE, "data"),
    Case(
        "INSERT INTO other SELECT id, note FROM child", "INSERT", RE, "data", locks={"other": RE, "child": AS}
    ),
    Case("UPDATE other SET note = 'x' WHERE id = 1", "UPDATE", RE, "data"),
    Case("UPDATE other SET note = 'x'", "UPDATE", RE, "data", destructive=True),
    Case(
        "UPDATE child SET note = other.note FROM other WHERE other.id = child.id",
        "UPDATE",
        RE,
        "data",
        locks={"child": RE, "other": AS},
    ),
    Case(
        "DELETE FROM other WHERE id IN (SELECT id FROM child)",
        "DELETE",
        RE,
        "data",
        locks={"other": RE, "child": AS},
    ),
    Case("DELETE FROM other", "DELETE", RE, "data", destructive=True),
    Case(
        "MERGE INTO other o USING child c ON o.id = c.id WHEN MATCHED THEN UPDATE SET note = c.note",
        "MERGE",
        RE,
        "data",
        locks={"other": RE, "child": AS},
    ),
    Case("ANALYZE child", "ANALYZE", SUE, "scan"),
    Case("WITH gone AS (DELETE FROM other RETURNING id) SELECT count(*) FROM gone", "SELECT", RE, "unknown"),
    # not analysed: effect unknown, kind from the syntax tree
    Case("DO $$BEGIN PERFORM 1; END$$", "DO", None, "unknown"),
    Case("SELECT count(*) FROM child", "SELECT", AS, "unknown"),
    Case("NOTIFY somebody", "NotifyStmt", None, "unknown"),
]

# Statements PostgreSQL refuses inside a transaction block: (case, statement to undo it).
NON_TRANSACTIONAL = [
    (
        Case(
            "CREATE INDEX CONCURRENTLY child_note ON child (note)", "CREATE INDEX CONCURRENTLY", SUE, "build"
        ),
        "DROP INDEX child_note",
    ),
    (
        Case("DROP INDEX CONCURRENTLY child_v", "DROP INDEX CONCURRENTLY", SUE, "catalog"),
        "CREATE INDEX child_v ON child (v)",
    ),
    (Case("REINDEX INDEX CONCURRENTLY child_v", "REINDEX INDEX CONCURRENTLY", SUE, "build"), None),
    (Case("VACUUM child", "VACUUM", SUE, "scan"), None),
    (
        Case("ALTER TABLE events DETACH PARTITION events_2024 CONCURRENTLY", "ALTER TABLE", SUE, "catalog"),
        "ALTER TABLE events ATTACH PARTITION events_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
    ),
    (Case("VACUUM FULL child", "VACUUM FULL", AE, "rewrite"), None),
]


def summary(analysis: StatementAnalysis) -> tuple[str, str | None, str, bool]:
    return analysis.kind, analysis.lock, analysis.effect, analysis.destructive


def expected(case: Case) -> tuple[str, str | None, str, bool]:
    return case.kind, case.lock, case.effect, case.destructive


def old_locks(analysis: StatementAnalysis) -> dict[str, str]:
    """The analysis's locks on tables that existed before the statement."""
    return {lock.table: lock.mode for lock in analysis.locks if not lock.new}


# -- the rules alone --------------------------------------------------------------------------


@pytest.mark.parametrize("case", [*CASES, *(c for c, _ in NON_TRANSACTIONAL)], ids=str)
def test_classification(case: Case) -> None:
    analysis = analyse(case.sql, STATIC)
    assert summary(analysis) == expected(case), analysis.notes
    if case.locks:
        assert old_locks(analysis) == case.locks


@pytest.mark.parametrize(
    ("old", "new", "rewrites"),
    [
        ("character varying(100)", "varchar(255)", False),
        ("character varying(100)", "varchar(100)", False),
        ("character varying(100)", "varchar(99)", True),
        ("character varying(100)", "varchar", False),
        ("character varying", "varchar(10)", True),
        ("character varying(100)", "text", False),
        ("text", "varchar", False),
        ("text", "varchar(10)", True),
        ("numeric(10,2)", "numeric(12,2)", False),
        ("numeric(10,2)", "numeric(9,2)", True),
        ("numeric(10,2)", "numeric(12,3)", True),
        ("numeric", "numeric(12,2)", True),
        ("numeric(10)", "numeric(12,0)", False),
        ("timestamp(3) without time zone", "timestamp(6)", False),
        ("timestamp without time zone", "timestamp(3)", True),
        ("time(2) with time zone", "timetz", False),
        ("integer", "bigint", True),
        ("smallint", "integer", True),
        ("bigint", "integer", True),
        ("integer", "int4", False),
        ("uuid", "varchar(255)", True),
        ("uuid", "text", True),
        ("json", "jsonb", True),
        ("character(10)", "text", True),
        ("character(10)", "character(20)", True),
        ("cidr", "inet", False),
        ("integer[]", "bigint[]", True),
        ("character varying(10)[]", "varchar(10)[]", False),
        ("interval", "interval", False),
        ("interval", "interval(2)", True),  # interval typmods are not compared: assumed to rewrite
    ],
)
def test_type_change_rules(old: str, new: str, rewrites: bool) -> None:
    old_type, new_type = parse_type(old), parse_type(new)
    assert old_type is not None
    assert new_type is not None
    assert type_change_rewrites(old_type, new_type)[0] is rewrites


@pytest.mark.parametrize(
    ("old", "new", "lossless"),
    [
        ("smallint", "integer", True),
        ("smallint", "bigint", True),
        ("integer", "bigint", True),
        ("int4", "int8", True),
        ("integer", "numeric", True),
        ("integer", "numeric(10)", True),
        ("integer", "numeric(12,2)", True),
        ("integer", "numeric(11,2)", False),
        ("bigint", "numeric(19)", True),
        ("bigint", "numeric(18)", False),
        ("smallint", "real", True),
        ("integer", "real", False),  # 2^24 + 1 has no float4
        ("integer", "double precision", True),
        ("bigint", "double precision", False),
        ("real", "double precision", True),
        ("double precision", "real", False),
        ("bigint", "integer", False),
        ("integer", "smallint", False),
        ("numeric", "integer", False),
        ("numeric(10,2)", "numeric(12,2)", True),
        ("numeric(10,2)", "numeric(12,3)", True),
        ("numeric(10,2)", "numeric(10,3)", False),
        ("numeric(10,2)", "numeric(12,1)", False),
        ("numeric(10,2)", "numeric", True),
        ("numeric", "numeric(30,10)", False),
        ("character varying(10)", "varchar(20)", True),
        ("character varying(10)", "varchar(5)", False),
        ("character varying(10)", "text", True),
        ("character varying", "varchar(10)", False),
        ("text", "varchar(10)", False),
        ("text", "varchar", True),
        ("character(10)", "character(20)", True),
        ("character(10)", "varchar(10)", True),
        ("character(10)", "varchar(9)", False),
        ("character(10)", "text", True),
        ("text", "character(10)", False),
        ("integer", "text", True),
        ("integer", "varchar(11)", True),
        ("integer", "varchar(10)", False),
        ("uuid", "varchar(36)", True),
        ("uuid", "varchar(35)", False),
        ("double precision", "text", False),  # its text form depends on extra_float_digits
        ("date", "timestamp", True),
        ("timestamp without time zone", "date", False),
        ("timestamp without time zone", "timestamptz", False),
        ("timestamp(3) without time zone", "timestamp(6)", True),
        ("timestamp(6) without time zone", "timestamp(3)", False),
        ("json", "jsonb", False),
        ("cidr", "inet", True),
        ("inet", "cidr", False),
        ("integer[]", "bigint[]", True),
        ("bigint[]", "integer[]", False),
        ("integer", "integer[]", False),
        ("interval", "interval(2)", False),
    ],
)
def test_widenings_keep_every_value(old: str, new: str, lossless: bool) -> None:
    """A conversion that keeps every value is not destructive, whether or not it rewrites."""
    old_type, new_type = parse_type(old), parse_type(new)
    assert old_type is not None
    assert new_type is not None
    assert type_change(old_type, new_type).lossless is lossless


def test_notes_name_the_types_as_the_catalog_does() -> None:
    analysis = analyse("ALTER TABLE parent ALTER COLUMN u TYPE varchar(255) USING u::text", STATIC)
    assert analysis.notes[0] == (
        "parent.u uuid -> character varying(255) with a USING expression: computed for every row, "
        "the table is rewritten"
    )
    plain = analyse("ALTER TABLE parent ALTER COLUMN u TYPE varchar(255)", STATIC)
    assert plain.notes == (
        "parent.u uuid -> character varying(255) keeps every value but rewrites the table",
    )
    assert analyse("ALTER TABLE parent ALTER COLUMN id TYPE int8", STATIC).notes[0] == (
        "parent.id integer -> bigint keeps every value but rewrites the table"
    )


def test_unknown_column_and_unknown_function_are_assumed_to_rewrite() -> None:
    missing = analyse("ALTER TABLE nowhere ALTER COLUMN c TYPE text", STATIC)
    assert missing.effect == "rewrite"
    assert "current type unknown" in missing.notes[0]
    custom = analyse("ALTER TABLE parent ADD COLUMN a text DEFAULT my_id()", STATIC)
    assert custom.effect == "rewrite"
    assert "my_id() has unknown volatility, assumed volatile" in custom.notes[0]


def test_names_are_kept_as_written_and_quoted_where_needed() -> None:
    analysis = analyse(
        'ALTER TABLE app."Orders" ADD CONSTRAINT fk FOREIGN KEY (c) REFERENCES app.customers', STATIC
    )
    assert analysis.tables == ('app."Orders"', "app.customers")


def test_unparsable_sql_is_reported_not_raised_and_one_statement_is_required() -> None:
    broken = analyse("ALTER TABLE parent ADD COLUM x int", STATIC)
    assert (broken.kind, broken.effect) == ("PARSE ERROR", "unknown")
    assert "syntax error" in broken.notes[0]
    with pytest.raises(ValueError, match="takes one statement, got 2"):
        analyse("SELECT 1; SELECT 2", STATIC)


def test_transaction_requirements() -> None:
    assert not analyse("CREATE INDEX CONCURRENTLY i ON child (v)", STATIC).transactional
    assert not analyse("VACUUM child", STATIC).transactional
    assert analyse("ANALYZE child", STATIC).transactional
    assert analyse("CREATE INDEX i ON child (v)", STATIC).transactional


def test_later_statements_see_earlier_changes() -> None:
    """The seed's 003 order: foreign keys dropped first, so the type changes lock one table each;
    a table created by the migration is empty; a type changed once is the next one's old type."""
    analyses = analyse_all(
        [
            "ALTER TABLE child DROP CONSTRAINT child_fk, DROP CONSTRAINT child_parent_nv",
            "ALTER TABLE parent ALTER COLUMN id TYPE varchar(255) USING id::text",
            "ALTER TABLE parent ALTER COLUMN id TYPE varchar(300)",
            "CREATE TABLE fresh (id integer)",
            "ALTER TABLE fresh ALTER COLUMN id TYPE bigint",
            "ALTER TABLE child ADD CONSTRAINT child_fk FOREIGN KEY (parent_id) REFERENCES parent (id)",
            "ALTER TABLE parent ALTER COLUMN id TYPE text",
        ],
        STATIC,
    )
    assert old_locks(analyses[0]) == {"child": AE, "parent": AE}
    assert old_locks(analyses[1]) == {"parent": AE}  # child's keys are gone
    assert analyses[2].effect == "catalog"  # varchar(255) -> varchar(300), as left by the statement before
    assert "integer -> bigint" in analyses[4].notes[0]
    assert old_locks(analyses[6]) == {"parent": AE, "child": AE}  # the key is back


def test_lock_names() -> None:
    assert lock_from_pg_locks("AccessExclusiveLock") == AE
    assert lock_from_pg_locks("ShareUpdateExclusiveLock") == SUE
    assert lock_strength(AS) < lock_strength(RS) < lock_strength(RE) < lock_strength(SUE)
    assert lock_strength(SUE) < lock_strength(SH) < lock_strength(SRE) < lock_strength(EX) < lock_strength(AE)
    with pytest.raises(ValueError, match="AdvisoryLock"):
        lock_from_pg_locks("AdvisoryLock")


def test_import_dbledger_does_not_import_the_parser() -> None:
    code = "import sys, dbledger, dbledger.cli; print('pglast' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# -- against a real server ----------------------------------------------------------------------

_names = itertools.count()

_FILES = """
SELECT c.oid, c.relfilenode, coalesce(i.indrelid, 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index i ON i.indexrelid = c.oid
WHERE c.relkind IN ('r', 'p', 'm', 'i') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%%'
"""
_STATS = "SELECT relid, seq_scan, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables"
# Table-like relations only: index and catalog locks are not what a dry-run reports.
_LOCKS = """
SELECT l.relation, l.mode FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = %s AND l.locktype = 'relation' AND l.granted
  AND c.relkind IN ('r', 'p', 'm', 'v', 'f', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


@dataclass
class Seen:
    """What the server shows while a statement's transaction is open."""

    locks: dict[int, str]  # table oid -> strongest lock mode held
    new_files: set[int]  # relations whose relfilenode changed
    new_relations: dict[int, int]  # relations created -> the table an index belongs to (0: none)
    index_of: dict[int, int]  # index oid -> table oid
    scanned: set[int]
    written: set[int]


class Server:
    """Three connections to the test database: ``runner`` runs statements, ``watcher`` reads
    ``pg_locks`` while they are held, ``reader`` serves the catalog to the analysis."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = psycopg.connect(url, autocommit=True)
        # Not UTC, so that timestamp -> timestamptz really rewrites (see the rules' note).
        self.runner.execute("SET TimeZone = 'Europe/Paris'")
        self.watcher = psycopg.connect(url, autocommit=True)
        self.reader = psycopg.connect(url, autocommit=True)

    def close(self) -> None:
        for conn in (self.runner, self.watcher, self.reader):
            conn.close()

    def oids(self, names: list[str]) -> dict[str, int]:
        """Relation oids of table-like names (``s.*``: every table of schema s); absent ones left out."""
        found: dict[str, int] = {}
        for name in names:
            if name.endswith(".*"):
                rows = self.watcher.execute(
                    "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
                    (name[:-2],),
                ).fetchall()
                found.update({f"{name[:-2]}.{relname}": oid for oid, relname in rows})
                continue
            row = self.watcher.execute(
                "SELECT c.oid FROM pg_class c WHERE c.oid = to_regclass(%s)"
                " AND c.relkind IN ('r', 'p', 'm', 'v', 'f', 'S')",
                (name,),
            ).fetchone()
            if row is not None:
                found[name] = int(row[0])
        return found

    def expected_locks(self, analysis: StatementAnalysis) -> dict[int, str]:
        modes: dict[int, str] = {}
        for lock in analysis.locks:
            if lock.new:
                continue  # invisible to other sessions until commit
            for oid in self.oids([lock.table]).values():
                modes[oid] = lock.mode
        return modes

    def run(self, sql: str) -> Seen:
        runner = self.runner
        runner.execute("BEGIN")
        try:
            before = self.files()
            stats = self._stats()
            runner.execute(sql.encode())
            after = self.files()
            stats_after = self._stats()
            locks = self._locks(runner.info.backend_pid)
        finally:
            runner.execute("ROLLBACK")
        return Seen(
            locks=locks,
            new_files={oid for oid, (node, _) in before.items() if oid in after and after[oid][0] != node},
            new_relations={oid: table for oid, (_, table) in after.items() if oid not in before},
            index_of={oid: table for oid, (_, table) in after.items() if table},
            scanned={oid for oid, (scans, _) in stats_after.items() if scans > stats.get(oid, (0, 0))[0]},
            written={oid for oid, (_, rows) in stats_after.items() if rows > stats.get(oid, (0, 0))[1]},
        )

    def files(self) -> dict[int, tuple[int, int]]:
        """relfilenode and (for an index) table of every user relation, by oid."""
        return {int(o): (int(f), int(t)) for o, f, t in self.runner.execute(_FILES).fetchall()}

    def _stats(self) -> dict[int, tuple[int, int]]:
        return {int(o): (int(s), int(w)) for o, s, w in self.runner.execute(_STATS).fetchall()}

    def _locks(self, pid: int) -> dict[int, str]:
        held: dict[int, str] = {}
        for oid, mode in self.watcher.execute(_LOCKS, (pid,)).fetchall():
            name = lock_from_pg_locks(str(mode))
            if lock_strength(name) > lock_strength(held.get(int(oid))):
                held[int(oid)] = name
        return held


@pytest.fixture(scope="module")
def server(pg_server: Cluster | ExternalServer) -> Iterator[Server]:
    """One database with SCHEMA for the whole module: every case runs in a transaction that is
    rolled back (non-transactional cases undo what they did)."""
    name = f"analysis_{next(_names)}"
    url = pg_server.create_database(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA.encode())
        conn.execute("VACUUM ANALYZE")  # fresh planner statistics, as a live database has
    server = Server(url)
    yield server
    server.close()
    pg_server.drop_database(name)


def check_effect(case: Case, analysis: StatementAnalysis, server: Server, seen: Seen) -> None:
    main = next(iter(server.oids(list(analysis.tables[:1])).values()), None)
    rewritten = main is not None and main in seen.new_files
    indexes = {oid for oid in seen.new_files | set(seen.new_relations) if seen.index_of.get(oid) == main}
    # Relations the statement itself creates (an index on a new table is built from a scan of
    # nothing) say nothing about existing data.
    scanned = seen.scanned - set(seen.new_relations)
    if case.kind == "TRUNCATE":
        # TRUNCATE swaps in new, empty files: a new relfilenode, but no row is read or copied.
        assert rewritten
        assert main not in seen.written
        return
    if analysis.effect == "rewrite":
        assert rewritten, "the table was not rewritten"
    elif analysis.effect == "build":
        assert not rewritten
        assert indexes, "no index was built"
    elif analysis.effect == "scan" and case.kind == "ANALYZE":
        # ANALYZE reads its sample block by block, which the seq_scan counter does not count:
        # only check that it copied and wrote nothing.
        assert not rewritten
        assert not seen.written
    elif analysis.effect == "scan":
        assert not rewritten
        assert not indexes
        reads = [w.table for w in analysis.work if w.kind in ("scan", "join")]
        assert set(server.oids(reads).values()) <= scanned, "the table was not scanned"
    elif analysis.effect == "data":
        assert not rewritten
        assert seen.written, "no row was written"
    elif analysis.effect == "catalog":
        assert not seen.new_files, "a relation was rewritten"
        assert not scanned, "rows were read"
        assert not seen.written, "rows were written"


def too_new(case: Case, server: Server) -> bool:
    """Whether the statement needs a newer server than this one, as the preflight reads it: then
    the server must refuse it (and the preflight refuses the migration before it gets there)."""
    feature = for_name("postgresql").newest_feature(Statement(case.sql, 1))
    return feature is not None and feature[1] * 10000 > server.reader.info.server_version


@pytest.mark.parametrize("case", CASES, ids=str)
def test_on_server(case: Case, server: Server) -> None:
    if too_new(case, server):
        with pytest.raises(psycopg.errors.SyntaxError):
            server.run(case.sql)
        return
    analysis = analyse(case.sql, PostgresCatalog(server.reader))
    assert summary(analysis) == expected(case), analysis.notes
    want = server.expected_locks(analysis)
    seen = server.run(case.sql)
    # Every lock the analysis names is held, in that mode; every lock that blocks writers or DDL
    # is named. ACCESS SHARE (it waits only for ACCESS EXCLUSIVE) may come from tables the SQL
    # does not name, e.g. those a materialized view's query reads.
    assert {oid: seen.locks.get(oid) for oid in want} == want, f"server holds {seen.locks}"
    blocking = {oid: mode for oid, mode in seen.locks.items() if mode != AS}
    assert blocking == {oid: mode for oid, mode in want.items() if mode != AS}, f"server holds {seen.locks}"
    check_effect(case, analysis, server, seen)


def waiting_mode(server: Server, pid: int, table: int, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = server.watcher.execute(
            "SELECT mode FROM pg_locks WHERE pid = %s AND relation = %s AND NOT granted", (pid, table)
        ).fetchone()
        if row is not None:
            return lock_from_pg_locks(str(row[0]))
        time.sleep(0.02)
    raise AssertionError("the statement never queued for a lock on its table")


@pytest.mark.parametrize(("case", "undo"), NON_TRANSACTIONAL, ids=[str(c) for c, _ in NON_TRANSACTIONAL])
def test_on_server_outside_a_transaction(case: Case, undo: str | None, server: Server) -> None:
    """Hold SHARE UPDATE EXCLUSIVE on the table (the weakest mode that conflicts with itself),
    start the statement: it queues for its lock on the table, and pg_locks names the mode. (A
    stronger blocker would stop VACUUM earlier, at the ACCESS SHARE it takes to look the table up.)"""
    if too_new(case, server):
        with pytest.raises(psycopg.errors.SyntaxError):
            server.runner.execute(case.sql.encode())
        return
    analysis = analyse(case.sql, PostgresCatalog(server.reader))
    assert summary(analysis) == expected(case)
    assert not analysis.transactional
    table = server.oids([analysis.tables[0]])[analysis.tables[0]]
    files_before = server.files()
    errors: list[BaseException] = []
    with psycopg.connect(server.url, autocommit=True) as blocker:
        blocker.execute("BEGIN")
        blocker.execute(f"LOCK TABLE {analysis.tables[0]} IN SHARE UPDATE EXCLUSIVE MODE".encode())

        def run() -> None:
            try:
                server.runner.execute(case.sql.encode())
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        try:
            assert waiting_mode(server, server.runner.info.backend_pid, table) == case.lock
        finally:
            blocker.execute("ROLLBACK")
            worker.join(60)
    assert not errors
    files_after = server.files()
    try:
        rewritten = files_after.get(table) != files_before[table]
        assert rewritten is (analysis.effect == "rewrite")
        if analysis.effect == "build":
            index_files = {o: f for o, f in files_after.items() if o != table}
            assert index_files != {o: f for o, f in files_before.items() if o != table and o in files_after}
    finally:
        if undo:
            server.runner.execute(undo.encode())


# -- the catalog ------------------------------------------------------------------------------


def test_postgres_catalog_answers(server: Server) -> None:
    catalog = PostgresCatalog(server.reader)
    assert catalog.column_type("parent", "ts") == "timestamp(3) without time zone"
    assert catalog.column_type("public.parent", "name") == "character varying(100)"
    assert catalog.column_type("parent", "nope") is None
    assert catalog.column_type("nowhere", "id") is None
    size = catalog.table_size("parent")
    assert size is not None
    assert (size.rows, size.bytes > 8192) == (200, True)
    events = catalog.table_size("events")  # partitioned: the sum of its partitions
    assert events is not None
    assert (events.rows, events.bytes > 0) == (10, True)
    assert catalog.table_size("nowhere") is None
    assert catalog.index_count("child") == 2
    assert catalog.index_table("child_v") == "child"
    assert catalog.index_table("nowhere") is None
    keys = catalog.foreign_keys("parent")
    assert [(k.name, k.table, k.columns, k.referenced, k.referenced_columns) for k in keys] == [
        ("child_fk", "child", ("parent_id",), "parent", ("id",)),
        ("child_parent_nv", "child", ("parent_id",), "parent", ("id",)),
    ]
    assert {k.table for k in catalog.foreign_keys("public.child")} == {"public.child"}  # named as asked


def test_postgres_catalog_counts_a_table_never_analysed(server: Server) -> None:
    server.runner.execute("CREATE TABLE unanalysed AS SELECT g FROM generate_series(1, 1234) g")
    try:
        rows: Any = server.reader.execute(
            "SELECT reltuples FROM pg_class WHERE oid = 'unanalysed'::regclass"
        ).fetchone()
        # "never analysed": -1 from PostgreSQL 14 on, 0 (with relpages 0) before.
        assert rows[0] == (-1 if server.reader.info.server_version >= 140000 else 0)
        size = PostgresCatalog(server.reader).table_size("unanalysed")
        assert size is not None
        assert size.rows == 1234
    finally:
        server.runner.execute("DROP TABLE unanalysed")


def test_postgres_catalog_inside_a_transaction_leaves_it_usable(server: Server) -> None:
    with psycopg.connect(server.url) as conn:  # not autocommit: a transaction is open
        catalog = PostgresCatalog(conn)
        assert catalog.table_size("other.db.table") is None  # a cross-database name: an error inside
        assert catalog.column_type("parent", "id") == "integer"  # the transaction still works


# -- a whole migration: the seed's 003 ------------------------------------------------------------


def test_seed_migration_003_statement_by_statement(pg_url: str) -> None:
    """The incident's conversion, analysed in advance as a dry-run would (each statement against the
    schema the earlier ones leave), then run in one transaction: after each statement the locks
    held so far and the tables rewritten by it are exactly what the analysis said."""
    from dbledger.analysis import walk_statements
    from dbledger.dialects.postgres import PostgresDialect
    from tests.service_helpers import execute_script, section

    execute_script(pg_url, section("001", "up") + section("002", "up"))
    execute_script(
        pg_url,
        "INSERT INTO organizations (name) SELECT 'org ' || g FROM generate_series(1, 20) g;"
        "INSERT INTO platform_connections (organization_id, platform_type, platform_user_id, display_name)"
        " SELECT o.id, 'google', 'u' || g, 'c' || g FROM organizations o, generate_series(1, 5) g;"
        "ANALYZE;",
    )
    statements = [s.sql for s in PostgresDialect().split(section("003", "up"), 1, Path("003.sql"))]
    server = Server(pg_url)
    try:
        analyses = [a for a, _ in walk_statements(statements, PostgresCatalog(server.reader))]
        oids = server.oids(sorted({lock.table for a in analyses for lock in a.locks}))
        held: dict[int, str] = {}
        server.runner.execute("BEGIN")
        for sql, analysis in zip(statements, analyses, strict=True):
            before = server.files()
            server.runner.execute(sql.encode())
            after = server.files()
            for lock in analysis.locks:
                oid = oids[lock.table]
                if lock_strength(lock.mode) > lock_strength(held.get(oid)):
                    held[oid] = lock.mode
            seen = server._locks(server.runner.info.backend_pid)
            blocking = {oid: mode for oid, mode in seen.items() if mode != AS}
            assert blocking == {oid: mode for oid, mode in held.items() if mode != AS}, sql
            tables = {oid: node for oid, (node, index_of) in before.items() if not index_of}
            rewritten = {oid for oid, node in tables.items() if after[oid][0] != node}
            claimed = {oids[w.table] for w in analysis.work if w.kind == "rewrite"}
            assert rewritten == claimed, sql
        server.runner.execute("ROLLBACK")
    finally:
        server.close()
    # Each type change locks its own table only: the foreign keys were dropped first.
    type_changes = [a for a, sql in zip(analyses, statements, strict=True) if " TYPE " in sql]
    assert [len(a.locks) for a in type_changes] == [1, 1, 1, 1, 1]
    assert all(a.effect == "rewrite" and a.destructive for a in type_changes)


# -- the schema carried forward ------------------------------------------------------------------


def held_after_each(server: Server, statements: list[str], claims: list[list[tuple[str, str]]]) -> None:
    """Run ``statements`` in one transaction (rolled back); after each one, the locks the server
    holds on relations that existed before are exactly the strongest ``claims`` (table, mode) of
    the statements so far. A claim's table is looked up, as the statement will find it, just
    before the statement runs (a table renamed earlier in the transaction keeps its oid)."""
    existing = set(server.files())
    held: dict[int, str] = {}
    runner = server.runner
    runner.execute("BEGIN")
    try:
        for sql, claimed in zip(statements, claims, strict=True):
            oids = {
                table: runner.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()
                for table, _ in claimed
            }
            runner.execute(sql.encode())
            for table, mode in claimed:
                row = oids[table]
                oid = int(row[0]) if row and row[0] is not None else None
                if oid in existing and lock_strength(mode) > lock_strength(held.get(oid)):
                    held[oid] = mode
            seen = {oid: mode for oid, mode in server._locks(runner.info.backend_pid).items() if mode != AS}
            assert seen == {oid: mode for oid, mode in held.items() if mode != AS}, sql
    finally:
        runner.execute("ROLLBACK")


def claims_of(analyses: list[StatementAnalysis]) -> list[list[tuple[str, str]]]:
    return [[(lock.table, lock.mode) for lock in a.locks] for a in analyses]


LONG = "a_table_with_a_really_long_name_that_goes_on_and_on_forever"


def test_unnamed_foreign_keys_get_the_names_postgresql_gives_them(pg_url: str) -> None:
    """So that a later DROP CONSTRAINT finds them: cut to 63 bytes the way PostgreSQL cuts
    (never inside a character), numbered when the name is taken."""
    wide = "é" * 30  # 60 bytes: its name and the column's do not both fit
    statements = [
        "CREATE TABLE p (id integer PRIMARY KEY, b integer, UNIQUE (id, b))",
        "CREATE TABLE c (pid integer REFERENCES p, x integer, y integer,"
        " FOREIGN KEY (x, y) REFERENCES p (id, b))",
        f"CREATE TABLE {LONG} (some_long_column_name_for_reference integer REFERENCES p,"
        ' "Mixed Case" integer REFERENCES p)',
        f'CREATE TABLE "{wide}" ("ü" integer REFERENCES p)',
        "CREATE TABLE d (pid integer REFERENCES p)",
        "ALTER TABLE d ADD FOREIGN KEY (pid) REFERENCES p",
        "ALTER TABLE d ADD COLUMN q integer REFERENCES p, ADD FOREIGN KEY (q) REFERENCES p",
    ]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        analyses = analyse_all(statements, PostgresCatalog(conn))
        for sql in statements:
            conn.execute(sql.encode())
        rows = conn.execute(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE contype = 'f'"
        ).fetchall()
    named = {(c.table, c.name) for a in analyses for c in a.changes if c.op == "add_fk"}
    assert named == {(str(table), str(name)) for table, name in rows}
    assert ("d", "d_pid_fkey1") in named


def test_renames_and_drops_are_carried_forward(server: Server) -> None:
    """Foreign keys follow a renamed table, go with a dropped one, and IF EXISTS finds what the
    earlier statements left: in the dictionary catalog and the live one, and as the server then
    locks, statement by statement."""
    statements = [
        "ALTER TABLE child RENAME TO kid",
        "ALTER TABLE parent ALTER COLUMN id TYPE bigint",
        "ALTER TABLE kid DROP CONSTRAINT child_fk",
        "DROP TABLE kid",
        "DROP TABLE IF EXISTS child",
        "CREATE TABLE fresh (id integer, parent_id bigint REFERENCES parent)",
        "ALTER TABLE fresh RENAME TO fresher",
        "DROP TABLE IF EXISTS fresh",
        "ALTER TABLE IF EXISTS fresh ADD COLUMN a integer",
        "ALTER TABLE parent ALTER COLUMN id TYPE integer",
        "DROP TABLE IF EXISTS fresher",
        "ALTER TABLE parent ALTER COLUMN id TYPE bigint",
    ]
    expected_locks: list[dict[str, str]] = [
        {"child": AE},
        {"parent": AE, "kid": AE},  # the keys of child are kid's now
        {"kid": AE, "parent": AE},
        {"kid": AE, "parent": AE},  # child_parent_nv still ties them
        {},  # gone under both names
        {"parent": SRE},
        {"fresh": AE},
        {},
        {},
        {"parent": AE, "fresher": AE},  # the key made in this run, renamed with its table
        {"fresher": AE, "parent": AE},
        {"parent": AE},  # no key left
    ]
    for catalog in (STATIC, PostgresCatalog(server.reader)):
        analyses = analyse_all(statements, catalog)
        assert [old_locks(a) for a in analyses] == expected_locks
        assert [a.destructive for a in analyses] == [
            *(False, False, False, True, False),
            *(False, False, False, False, True, True, False),
        ]
    held_after_each(server, statements, claims_of(analyses))


def test_seed_dry_run_on_an_empty_database_knows_what_003_dropped(pg_url: str, tmp_path: Path) -> None:
    """The seed's 001 to 003 pending on an empty database: the dry run analyses 003 against the
    schema 001 and 002 will leave (their unnamed foreign keys included) and the keys 003 drops
    first, so each type change locks its own table only. Then 001 and 002 run for real and 003
    statement by statement: the server's locks are the ones the dry run announced."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for number in ("001", "002", "003"):
        [path] = MIGRATIONS.glob(f"{number}_*.sql")
        shutil.copy(path, folder)

    result = run_cli("--database-url", pg_url, "--dir", str(folder), "up", "--dry-run", "--json", cwd=folder)

    assert result.returncode == 0, result.stderr
    planned = json.loads(result.stdout)["migrations"]
    assert [m["name"] for m in planned] == [
        "001_initial_schema",
        "002_discovery_schema",
        "003_clerk_complete_migration",
    ]
    statements = planned[2]["statements"]
    claims = [[(lock["table"], lock["mode"]) for lock in s["analysis"]["locks"]] for s in statements]
    drops = [dict(c) for s, c in zip(statements, claims, strict=True) if "DROP CONSTRAINT" in s["sql"]]
    # Dropping a foreign key drops its triggers on the referenced table too.
    assert drops == [
        {"platform_connections": AE, "organizations": AE},
        {"audit_logs": AE, "platform_connections": AE},
        {"discovery_runs": AE, "organizations": AE, "platform_connections": AE},
        {"discovered_apps": AE, "organizations": AE, "platform_connections": AE, "discovery_runs": AE},
    ]
    type_changes = [(s, dict(c)) for s, c in zip(statements, claims, strict=True) if " TYPE " in s["sql"]]
    tables = ["organizations", "platform_connections", "audit_logs", "discovery_runs", "discovered_apps"]
    assert [locks for _, locks in type_changes] == [{table: AE} for table in tables]
    # uuid -> varchar(255) USING id::text: computed for every row, assumed to lose values
    assert all(s["analysis"]["destructive"] for s, _ in type_changes)

    dbledger.migrate(pg_url, folder, to=2)
    server = Server(pg_url)
    try:
        held_after_each(server, [s["sql"] for s in statements], claims)
    finally:
        server.close()
