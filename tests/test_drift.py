"""``dbledger drift`` and ``dbledger dump`` against real databases."""

from __future__ import annotations

import json
from pathlib import Path

import dbledger
from tests.helpers import query, run_cli, write

ORGS = "CREATE TABLE orgs (id VARCHAR(255) PRIMARY KEY, name TEXT NOT NULL);\n"
CONNS = (
    "CREATE TABLE conns (id VARCHAR(255) PRIMARY KEY,"
    " org_id VARCHAR(255) REFERENCES orgs (id) ON DELETE CASCADE);\n"
)
SERVICE = Path(__file__).resolve().parent.parent / "service" / "connections_service" / "migrations"


def cli(url: str, folder: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder)
    return result.returncode, result.stdout, result.stderr


def test_no_drift_after_migrating_and_a_hand_change_is_named(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_orgs.sql", ORGS)
    write(migrations_dir, "002_conns.sql", CONNS)
    dbledger.migrate(db_url, migrations_dir)

    code, out, err = cli(db_url, migrations_dir, "drift")
    assert code == 0, err
    assert "no drift: the live schema is the one recorded after the last migration run" in out
    code, out, err = cli(db_url, migrations_dir, "drift", "--replay")
    assert code == 0, err
    assert "no drift: the live schema is the one replayed from the applied migrations" in out

    query(db_url, "CREATE TABLE hand_made (x INTEGER)")
    code, out, err = cli(db_url, migrations_dir, "drift")
    assert code == 1
    assert "extra table hand_made" in out
    assert "the live schema has 1 difference(s) from the schema the applied migrations produce" in err

    json_code, json_out, _ = cli(db_url, migrations_dir, "drift", "--json")
    assert json_code == 1
    document = json.loads(json_out)
    assert document["ok"] is False
    assert document["drifted"] is True
    assert [d["message"] for d in document["differences"]] == ["extra table hand_made"]
    assert document["expected_fingerprint"] != document["found_fingerprint"]


def test_drift_names_a_changed_column_type(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_orgs.sql", ORGS)
    dbledger.migrate(pg_url, migrations_dir)
    query(pg_url, "ALTER TABLE orgs ALTER COLUMN name TYPE VARCHAR(20)")

    code, out, _ = cli(pg_url, migrations_dir, "drift")

    assert code == 1
    assert "column orgs.name: expected text, found character varying(20)" in out


def test_the_service_history_shows_no_false_positive(pg_url: str) -> None:
    for version in (1, 2, 3, 4):
        dbledger.migrate(pg_url, SERVICE, to=version)
        drift = dbledger.api.drift(pg_url, SERVICE)
        assert drift.differences == [], [str(d) for d in drift.differences]


def test_a_database_whose_ledger_is_ahead_of_its_schema_is_caught(pg_url: str) -> None:
    # The incident: the ledger claims 003 and 004 (here: a baseline taken too far, as a restore of
    # an old dump next to a newer ledger would), while the schema is still 002's.
    dbledger.migrate(pg_url, SERVICE, to=2)
    dbledger.baseline(4, pg_url, SERVICE)

    code, out, _ = cli(pg_url, SERVICE, "drift")  # the recorded schema is 002's: no drift there

    assert code == 0
    code, out, _ = cli(pg_url, SERVICE, "drift", "--replay")
    assert code == 1
    assert "column platform_connections.id: expected character varying(255), found uuid" in out
    assert "trigger function log_platform_connection_changes: body differs" in out


def test_baseline_verify_refuses_a_database_that_is_not_what_the_files_produce(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:  # built by hand from 001 and 002
        for migration in dbledger.migrations.discover(SERVICE)[:2]:
            conn.execute(migration.up.sql.encode())

    code, _, err = cli(pg_url, SERVICE, "baseline", "4", "--verify")
    assert code == 1
    assert "the database is not what migrations up to version 4 produce" in err
    assert "column platform_connections.id: expected character varying(255), found uuid" in err
    assert query(pg_url, "SELECT to_regclass('schema_migrations') IS NULL") == [(True,)]

    code, _, err = cli(pg_url, SERVICE, "baseline", "2", "--verify")
    assert code == 0, err
    assert cli(pg_url, SERVICE, "up")[0] == 0


def test_status_and_health_report_drift_by_fingerprint(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_orgs.sql", ORGS)
    dbledger.migrate(db_url, migrations_dir)
    clean = dbledger.status(db_url, migrations_dir, check_schema=True)
    assert clean.schema is not None
    assert clean.schema["drifted"] is False
    assert clean.clean

    query(db_url, "CREATE INDEX orgs_name ON orgs (name)")
    drifted = dbledger.status(db_url, migrations_dir, check_schema=True)

    assert drifted.schema is not None
    assert drifted.schema["drifted"] is True
    assert not drifted.clean
    assert "run 'dbledger drift' to see how" in drifted.problems[0]
    code, out, _ = cli(db_url, migrations_dir, "status")
    assert code == 0
    assert "the live schema differs from the one recorded" in out
    checked = dbledger.status(db_url, migrations_dir)  # the same default as the command line
    assert checked.schema is not None
    assert checked.schema["drifted"] is True
    assert not checked.clean
    assert dbledger.status(db_url, migrations_dir, check_schema=False).schema is None


def test_dump_is_stable_and_writes_a_file(db_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    write(migrations_dir, "001_orgs.sql", ORGS)
    write(migrations_dir, "002_conns.sql", CONNS)
    dbledger.migrate(db_url, migrations_dir)

    first = cli(db_url, migrations_dir, "dump")
    second = cli(db_url, migrations_dir, "dump")
    code, _, err = cli(db_url, migrations_dir, "dump", str(tmp_path / "schema.sql"))

    assert first[0] == 0, first[2]
    assert first[1] == second[1]
    assert "CREATE TABLE" in first[1]
    assert "conns" in first[1]
    assert "schema_migrations" not in first[1]
    assert code == 0, err
    assert (tmp_path / "schema.sql").read_text() == first[1]


def test_a_database_recreated_from_old_schema_files_is_caught_both_ways(pg_url: str) -> None:
    # The seed's third root cause: the ledger and the recorded schema say 004, but someone
    # recreated the application's tables from the old 001 and 002 files.
    import psycopg

    dbledger.migrate(pg_url, SERVICE)
    files = dbledger.migrations.discover(SERVICE)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            b"DROP TABLE discovered_apps, discovery_runs, audit_logs, platform_connections,"
            b" organizations CASCADE"
        )
        conn.execute(b"DROP FUNCTION log_platform_connection_changes() CASCADE")
        for migration in files[:2]:
            conn.execute(migration.up.sql.encode())

    for args in (("drift",), ("drift", "--replay")):
        code, out, _ = cli(pg_url, SERVICE, *args)
        assert code == 1, args
        assert "column organizations.id: expected character varying(255), found uuid" in out


def test_shadow_url_replays_without_createdb_and_stays_empty(pg_url: str, migrations_dir: Path) -> None:
    from urllib.parse import urlsplit

    import psycopg

    write(migrations_dir, "001_orgs.sql", ORGS)
    write(migrations_dir, "002_conns.sql", CONNS)
    dbledger.migrate(pg_url, migrations_dir)
    query(pg_url, "CREATE DATABASE shadow_for_drift")
    query(pg_url, "CREATE ROLE drift_plain LOGIN PASSWORD 'plainpass123' NOCREATEDB")
    query(pg_url, "GRANT ALL ON ALL TABLES IN SCHEMA public TO drift_plain")
    query(pg_url, "GRANT ALL ON SCHEMA public TO drift_plain")
    parts = urlsplit(pg_url)
    plain = parts._replace(netloc=f"drift_plain:plainpass123@{parts.hostname}:{parts.port}").geturl()
    shadow = psycopg.conninfo.make_conninfo(plain, dbname="shadow_for_drift")
    admin_shadow = psycopg.conninfo.make_conninfo(pg_url, dbname="shadow_for_drift")
    query(admin_shadow, "GRANT ALL ON SCHEMA public TO drift_plain")
    query(pg_url, "CREATE TABLE hand_made (x INTEGER)")

    no_createdb = run_cli(
        "--database-url", plain, "--dir", str(migrations_dir), "drift", "--replay", cwd=migrations_dir
    )
    assert no_createdb.returncode == 1
    assert "--shadow-url" in no_createdb.stderr

    result = run_cli(
        "--database-url",
        plain,
        "--dir",
        str(migrations_dir),
        "drift",
        "--shadow-url",
        shadow,
        cwd=migrations_dir,
    )

    assert result.returncode == 1, result.output
    assert result.stdout.strip() == "extra table hand_made"
    assert "plainpass123" not in result.output
    assert query(admin_shadow, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]

    query(admin_shadow, "CREATE TABLE leftover (x INTEGER)")
    busy = run_cli(
        "--database-url",
        plain,
        "--dir",
        str(migrations_dir),
        "drift",
        "--shadow-url",
        shadow,
        cwd=migrations_dir,
    )
    assert busy.returncode == 2
    assert "is not empty: give an empty database" in busy.stderr
    query(pg_url, "DROP DATABASE shadow_for_drift WITH (FORCE)")


def test_the_drift_function_stays_callable_after_its_module_loads(
    sqlite_url: str, migrations_dir: Path
) -> None:
    """Importing a submodule sets it on the package: none may share a name with a function."""
    (migrations_dir / "001_t.sql").write_text("CREATE TABLE t (id INTEGER);\n", encoding="utf-8")
    dbledger.migrate(sqlite_url, migrations_dir)

    first = dbledger.drift(sqlite_url, migrations_dir)
    again = dbledger.drift(sqlite_url, migrations_dir)

    assert first.differences == again.differences == []
