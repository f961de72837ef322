"""The ledger never disagrees with the database: transaction control inside a migration is
refused, errors raised at COMMIT are recorded as failures, and a migration that changes
search_path cannot send the ledger's writes elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import query, run_cli, table_exists, write


@pytest.mark.parametrize(
    ("body", "word", "line"),
    [
        ("CREATE TABLE c (x INTEGER);\nROLLBACK;\n", "ROLLBACK", 2),
        ("BEGIN;\nCREATE TABLE c (x INTEGER);\nCOMMIT;\n", "BEGIN", 1),
        ("CREATE TABLE c (x INTEGER);\n-- done\ncommit;\n", "COMMIT", 3),
        ("START TRANSACTION;\nCREATE TABLE c (x INTEGER);\n", "START TRANSACTION", 1),
    ],
)
def test_transaction_control_in_a_transactional_section_is_refused(
    db_url: str, migrations_dir: Path, tmp_path: Path, body: str, word: str, line: int
) -> None:
    if db_url.startswith("sqlite") and word == "START TRANSACTION":
        pytest.skip("SQLite has no START TRANSACTION")
    path = write(migrations_dir, "001_c.sql", body)

    result = run_cli("--database-url", db_url, "--dir", str(migrations_dir), "up", cwd=tmp_path)

    assert result.returncode == 2, result.output
    assert f"{path}: line {line}: {word} would end the transaction dbledger runs this migration in" in (
        result.stderr
    )
    assert "transaction:false" in result.stderr
    assert not table_exists(db_url, "c")
    assert not table_exists(db_url, "schema_migrations")  # refused before the ledger was created


def test_rollback_to_savepoint_is_allowed(db_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    write(
        migrations_dir,
        "001_c.sql",
        "SAVEPOINT s;\nCREATE TABLE c (x INTEGER);\nROLLBACK TO SAVEPOINT s;\nCREATE TABLE d (x INTEGER);\n",
    )

    result = run_cli("--database-url", db_url, "--dir", str(migrations_dir), "up", cwd=tmp_path)

    assert result.returncode == 0, result.output
    assert not table_exists(db_url, "c")
    assert table_exists(db_url, "d")


DEFERRED = """
CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (
    parent_id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED
);
INSERT INTO child VALUES (42);
"""


def test_an_error_raised_at_commit_fails_and_is_recorded(
    pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(migrations_dir, "001_deferred.sql", DEFERRED)

    result = run_cli("--database-url", pg_url, "--dir", str(migrations_dir), "up", cwd=tmp_path)

    assert result.returncode == 1, result.output
    assert "migration '001_deferred' failed: 23503" in result.stderr
    assert "raised at COMMIT" in result.stderr
    assert "applied  001_deferred" not in result.stderr
    assert not table_exists(pg_url, "parent")
    [(state, success, error)] = query(pg_url, "SELECT state, success, error_message FROM schema_migrations")
    assert (state, success) == ("failed", False)
    assert "violates foreign key constraint" in error
    assert query(pg_url, "SELECT action FROM schema_migrations_history ORDER BY id") == [
        ("create",),
        ("fail",),
    ]


def test_a_migration_emptying_search_path_cannot_misdirect_the_ledger(
    pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    # The first lines of every pg_dump output.
    write(migrations_dir, "001_restore.sql", "SELECT pg_catalog.set_config('search_path', '', false);\n")
    write(migrations_dir, "002_t.sql", "CREATE TABLE public.t (x INTEGER);\n")

    result = run_cli("--database-url", pg_url, "--dir", str(migrations_dir), "up", cwd=tmp_path)

    assert result.returncode == 0, result.output
    assert query(pg_url, "SELECT migration_name, success FROM public.schema_migrations ORDER BY id") == [
        ("001_restore", True),
        ("002_t", True),
    ]
