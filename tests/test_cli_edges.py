"""Edges of the command line that users hit: bad option values, names, targets, another tool's
ledger table, extension tables, waiting for the lock, markup in names and errors."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import query, run_cli, table_exists, write


@pytest.mark.parametrize("value", ["0", "-5", "inf", "nan", "100000"])
def test_lock_timeout_must_be_positive_and_finite(value: str, tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    result = run_cli("up", "--lock-timeout", value, cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert "invalid lock timeout" in result.stderr
    assert "Traceback" not in result.stderr


def test_new_refuses_a_name_that_exists(tmp_path: Path) -> None:
    assert run_cli("new", "create_users", cwd=tmp_path).returncode == 0
    again = run_cli("new", "create_users", cwd=tmp_path)
    assert again.returncode == 2
    assert "a migration named 'create_users' already exists (001_create_users.sql)" in again.stderr
    assert sorted(p.name for p in (tmp_path / "migrations").iterdir()) == ["001_create_users.sql"]


def test_new_in_a_folder_that_cannot_exist_is_a_usage_error(tmp_path: Path) -> None:
    write(tmp_path, "afile", "x")
    result = run_cli("--dir", str(tmp_path / "afile" / "migrations"), "new", "x", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot create a migration in" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_to_names_the_scope_and_unknown_targets_list_versions(
    sqlite_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (x INTEGER);\n")
    write(migrations_dir, "002_b.sql", "CREATE TABLE b (x INTEGER);\n")
    args = ("--database-url", sqlite_url, "--dir", str(migrations_dir), "up")
    assert run_cli(*args, "--to", "1", cwd=migrations_dir).returncode == 0

    again = run_cli(*args, "--to", "1", cwd=migrations_dir)
    assert again.stdout.strip() == "nothing to do up to version 1: every migration up to version 1 is applied"

    unknown = run_cli(*args, "--to", "99", cwd=migrations_dir)
    assert unknown.returncode == 2
    assert "no migration file has version 99" in unknown.stderr
    assert "(the newest versions are: 1, 2)" in unknown.stderr


@pytest.mark.parametrize(
    ("columns", "tool"),
    [
        ("version VARCHAR(255) PRIMARY KEY", "dbmate or Rails"),
        ("version BIGINT PRIMARY KEY, dirty BOOLEAN NOT NULL", "golang-migrate"),
        ("version VARCHAR(50) PRIMARY KEY, run_on TIMESTAMP", "Diesel"),
        (
            "installed_rank INTEGER PRIMARY KEY, version VARCHAR(50), description VARCHAR(200),"
            " type VARCHAR(20), script VARCHAR(1000), checksum INTEGER, installed_by VARCHAR(100),"
            " installed_on TIMESTAMP, execution_time INTEGER, success BOOLEAN",
            "Flyway",
        ),
    ],
    ids=["dbmate", "golang-migrate", "diesel", "flyway"],
)
def test_another_tools_schema_migrations_is_named(
    db_url: str, migrations_dir: Path, columns: str, tool: str
) -> None:
    query(db_url, f"CREATE TABLE schema_migrations ({columns})")
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (x INTEGER);\n")

    for command in ("status", "up"):
        result = run_cli("--database-url", db_url, "--dir", str(migrations_dir), command, cwd=migrations_dir)
        assert result.returncode == 1, result.output
        assert "schema_migrations is not dbledger's ledger: its columns (" in result.stderr
        assert f") are those of {tool}" in result.stderr
        assert "--ledger-table NAME" in result.stderr
        assert "RENAME" not in result.stderr  # never advise renaming the other tool's table
    assert not table_exists(db_url, "a")

    placed = run_cli(
        "--database-url",
        db_url,
        "--dir",
        str(migrations_dir),
        "--ledger-table",
        "dbledger_migrations",
        "up",
        "--allow-existing-schema",  # the other tool's table is all the database has
        cwd=migrations_dir,
    )
    assert placed.returncode == 0, placed.output
    assert table_exists(db_url, "a")
    assert table_exists(db_url, "dbledger_migrations")


def test_extension_tables_do_not_count_as_an_existing_schema(pg_url: str, migrations_dir: Path) -> None:
    available = query(pg_url, "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'")
    if not available:
        pytest.skip("pg_stat_statements is not installed with this PostgreSQL")
    query(pg_url, "CREATE EXTENSION pg_stat_statements")
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (x INTEGER);\n")

    result = run_cli("--database-url", pg_url, "--dir", str(migrations_dir), "up", cwd=migrations_dir)

    assert result.returncode == 0, result.output


def test_a_waiting_runner_says_who_it_waits_for(db_url: str, migrations_dir: Path) -> None:
    slow = "SELECT pg_sleep(3);" if db_url.startswith("postgresql") else _SQLITE_SLOW
    write(migrations_dir, "001_slow.sql", f"CREATE TABLE a (x INTEGER);\n{slow}\n")
    args = [sys.executable, "-m", "dbledger", "--database-url", db_url, "--dir", str(migrations_dir), "up"]
    holder = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stderr is not None
        assert "applying 001_slow" in holder.stderr.readline() + holder.stderr.readline()
        time.sleep(0.3)
        waiter = run_cli(*args[3:], cwd=migrations_dir)
    finally:
        holder.wait(timeout=60)
        if holder.stderr is not None:
            holder.stderr.close()
    assert holder.returncode == 0
    assert waiter.returncode == 0, waiter.output
    assert "waiting for the migration lock, held by" in waiter.stderr
    assert "dbledger" in waiter.stderr.split("waiting for the migration lock, held by", 1)[1]
    assert "nothing to do" in waiter.stdout


# About two seconds of work for SQLite, which has no sleep function.
_SQLITE_SLOW = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000000) "
    "SELECT count(*) FROM n;"
)


def test_markup_in_names_and_errors_is_printed_as_text(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", 'CREATE TABLE "[bold]" (x INTEGER);\nINSERT INTO "[/x]" VALUES (1);\n')
    assert (
        run_cli(
            "--database-url", sqlite_url, "--dir", str(migrations_dir), "up", cwd=migrations_dir
        ).returncode
        == 1
    )

    status = run_cli("--database-url", sqlite_url, "--dir", str(migrations_dir), "status", cwd=migrations_dir)

    assert status.returncode == 0, status.output
    assert "no such table: [/x]" in status.stdout
