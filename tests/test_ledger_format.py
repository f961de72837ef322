"""The ledger's own tables: a format version, upgraded in place from what dbledger 0.1 wrote with
nothing lost, placed where the user says, and never mistaken for another tool's table.

The format 1 fixtures in ``fixtures/ledger_v1`` are exact: the SQL dbledger 0.1.0 ran, and every
row it wrote, on both databases.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import psycopg
import pytest

import dbledger
from dbledger.contracts import Version
from dbledger.ledger import LEDGER_VERSION
from tests.helpers import query, run_cli, table_exists, write

FIXTURES = Path(__file__).parent / "fixtures" / "ledger_v1"
V1_ROWS = [  # (migration_name, state, checksum prefix) as 0.1.0 left them, by id
    ("003_index_price", "applied", "99eed69d8c9a"),
    ("001_create_items", "applied", "fbdf3d04a3a2"),
    ("002_add_price", "applied", "547bdc5c3afd"),
    ("004_tags", "applied", "92936a3ce130"),
    ("005_fails", "failed", "2fb44850354f"),
]
V1_HISTORY = [
    "fail 003_index_price",
    "apply 001_create_items",
    "apply 002_add_price",
    "apply 003_index_price",
    "apply 004_tags",
    "rollback 004_tags",
    "apply 004_tags",
    "repair 002_add_price",
    "fail 005_fails",
]


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def load_v1(url: str, tmp_path: Path) -> Path:
    """The format 1 fixture in the database at ``url``; returns its migrations folder."""
    if is_pg(url):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute((FIXTURES / "postgresql.sql").read_text(encoding="utf-8").encode())
    else:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executescript((FIXTURES / "sqlite.sql").read_text(encoding="utf-8"))
    folder = tmp_path / "migrations"
    shutil.copytree(FIXTURES / "migrations", folder)
    return folder


def ledger_rows(url: str) -> list[tuple[object, ...]]:
    return query(
        url, "SELECT migration_name, state, substr(checksum, 1, 12) FROM schema_migrations ORDER BY id"
    )


def history_lines(url: str) -> list[str]:
    rows = query(url, "SELECT action, migration_name FROM schema_migrations_history ORDER BY id")
    return [f"{action} {name}" if name else action for action, name in rows]


def cli(url: str, folder: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder.parent)
    return result.returncode, result.stdout, result.stderr


def test_a_new_ledger_records_its_format(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", "CREATE TABLE t (id INTEGER);\n")
    dbledger.migrate(db_url, migrations_dir)

    assert query(db_url, "SELECT version, dbledger_version FROM schema_migrations_version") == [
        (LEDGER_VERSION, dbledger.__version__)
    ]
    [(action, detail)] = query(
        db_url, "SELECT action, detail FROM schema_migrations_history WHERE migration_name IS NULL"
    )
    assert (action, detail) == ("create", f"ledger format version {LEDGER_VERSION}, schema_migrations")


def test_a_format_1_ledger_reads_and_upgrades_with_nothing_lost(db_url: str, tmp_path: Path) -> None:
    folder = load_v1(db_url, tmp_path)
    old_history = query(
        db_url,
        "SELECT id, at, action, migration_name, checksum, actor FROM schema_migrations_history ORDER BY id",
    )

    # Read as it is: status changes nothing, and sees 0.1's order corrected from the history.
    code, out, err = cli(db_url, folder, "status", "--json")
    assert code == 0, err
    before = json.loads(out)
    assert before["ledger_format"] == 1
    assert [r["name"] for r in before["applied"]] == [
        "001_create_items",
        "002_add_price",
        "003_index_price",
        "004_tags",
    ]
    assert [r["name"] for r in before["failed"]] == ["005_fails"]
    assert not table_exists(db_url, "schema_migrations_version")

    # Any command that writes upgrades it, under the lock, and says so.
    code, _, err = cli(db_url, folder, "up", "--to", "4")
    assert code == 0, err
    assert f"upgraded the ledger (ledger format 1 -> {LEDGER_VERSION})" in err

    assert ledger_rows(db_url) == V1_ROWS  # every row, same ids, same state and checksum
    assert query(
        db_url,
        "SELECT migration_name, applied_order FROM schema_migrations"
        " ORDER BY applied_order IS NULL, applied_order",
    ) == [
        ("001_create_items", 1),
        ("002_add_price", 2),
        ("003_index_price", 3),
        ("004_tags", 4),
        ("005_fails", None),
    ]
    assert query(db_url, "SELECT version FROM schema_migrations_version") == [(LEDGER_VERSION,)]
    lines = history_lines(db_url)
    assert lines[: len(V1_HISTORY)] == V1_HISTORY  # the old history, untouched and in order
    # One row per migration with its state at the upgrade (what the chain's ledger check holds the
    # rows to), in applied order, then the upgrade itself.
    assert lines[len(V1_HISTORY) :] == [
        "upgrade 001_create_items",
        "upgrade 002_add_price",
        "upgrade 003_index_price",
        "upgrade 004_tags",
        "upgrade 005_fails",
        "upgrade",
    ]
    kept = query(
        db_url,
        "SELECT id, at, action, migration_name, checksum, actor FROM schema_migrations_history"
        f" ORDER BY id LIMIT {len(old_history)}",
    )
    assert kept == old_history
    if is_pg(db_url):  # 0.1 kept its estimates as text in detail: they moved to their column
        assert query(
            db_url, "SELECT count(*) FROM schema_migrations_history WHERE detail LIKE 'estimate_ms=%'"
        ) == [(0,)]
        assert query(
            db_url,
            "SELECT count(*) FROM schema_migrations_history"
            " WHERE action = 'apply' AND estimate_ms IS NOT NULL",
        ) == [(5,)]

    # The upgraded ledger is whole: its chain verifies, drift is clean, and down undoes the newest
    # applied (004, then 003), not what 0.1's row ids would have said.
    code, out, err = cli(db_url, folder, "verify", "--json")
    assert code == 1, err  # 005_fails is a recorded failure, as before the upgrade
    document = json.loads(out)
    assert [p for p in document["error"]["problems"] if "005_fails" not in p] == []
    assert cli(db_url, folder, "drift")[0] == 0
    code, out, err = cli(db_url, folder, "down", "--steps", "2", "--json")
    assert code == 0, err
    assert [r["name"] for r in json.loads(out)["rolled_back"]] == ["004_tags", "003_index_price"]
    assert not table_exists(db_url, "tags")


def test_a_ledger_from_a_newer_dbledger_is_refused(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", "CREATE TABLE t (id INTEGER);\n")
    dbledger.migrate(db_url, migrations_dir)
    query(db_url, "UPDATE schema_migrations_version SET version = 9")
    write(migrations_dir, "002_u.sql", "CREATE TABLE u (id INTEGER);\n")

    for command in ("status", "up"):
        code, _, err = cli(db_url, migrations_dir, command)
        assert code == 1, err
        assert "has format version 9, written by a newer dbledger" in err
        assert "upgrade dbledger" in err
    assert not table_exists(db_url, "u")


@pytest.mark.parametrize(
    "change",
    [
        "DELETE FROM schema_migrations_version",
        "INSERT INTO schema_migrations_version SELECT * FROM schema_migrations_version",
    ],
)
def test_a_version_table_without_its_one_row_is_named(db_url: str, migrations_dir: Path, change: str) -> None:
    write(migrations_dir, "001_t.sql", "CREATE TABLE t (id INTEGER);\n")
    dbledger.migrate(db_url, migrations_dir)
    query(db_url, change)

    code, _, err = cli(db_url, migrations_dir, "status")

    assert code == 1
    assert f"schema_migrations_version must hold exactly one row (version {LEDGER_VERSION})" in err


# -- placement ----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["option", "environment", "pyproject"])
def test_the_ledger_goes_where_it_is_told(db_url: str, tmp_path: Path, source: str) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    write(folder, "001_t.sql", "CREATE TABLE t (id INTEGER);\n")
    args = ["--database-url", db_url, "--dir", str(folder)]
    env: dict[str, str] = {}
    if source == "option":
        args += ["--ledger-table", "deploy_log"]
    elif source == "environment":
        env["DBLEDGER_LEDGER_TABLE"] = "deploy_log"
    else:
        write(tmp_path, "pyproject.toml", '[tool.dbledger]\nledger_table = "deploy_log"\n')

    result = run_cli(*args, "up", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.output
    assert "ledger deploy_log" in result.stderr

    for table in ("deploy_log", "deploy_log_history", "deploy_log_schema", "deploy_log_version"):
        assert table_exists(db_url, table), table
    assert not table_exists(db_url, "schema_migrations")
    assert query(db_url, "SELECT migration_name, success FROM deploy_log") == [("001_t", True)]
    again = run_cli(*args, "status", "--json", cwd=tmp_path, env=env)
    assert json.loads(again.stdout)["version"] == 1


def test_a_ledger_in_its_own_schema(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", "CREATE TABLE t (id INTEGER);\n")

    report = dbledger.migrate(pg_url, migrations_dir, ledger_table="ops.deploys")

    assert [a.name for a in report.applied] == ["001_t"]
    assert query(pg_url, "SELECT migration_name FROM ops.deploys") == [("001_t",)]
    assert query(pg_url, "SELECT count(*) FROM ops.deploys_history WHERE action = 'apply'") == [(1,)]
    assert table_exists(pg_url, "public.t")
    # Two ledgers in one database are independent: another placement starts from nothing.
    assert [a.name for a in dbledger.status(pg_url, migrations_dir).plan.pending] == ["001_t"]
    state = dbledger.status(pg_url, migrations_dir, ledger_table="ops.deploys")
    assert state.version == Version((1,))
    assert state.problems == []


@pytest.mark.parametrize(
    "value", ["Bad-Name", "a.b.c", "9starts_with_digit", "x" * 56, "", "schema."], ids=lambda v: v or "empty"
)
def test_a_malformed_ledger_table_is_a_usage_error(value: str, tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    write(tmp_path / "migrations", "001_t.sql", "CREATE TABLE t (id INTEGER);\n")

    result = run_cli("up", "--ledger-table", value, cwd=tmp_path)

    assert result.returncode == 2, result.output
    assert f"invalid ledger table {value!r}" in result.stderr
    assert not (tmp_path / "dbledger.sqlite3").exists()


def test_sqlite_has_no_schemas_for_the_ledger(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", "CREATE TABLE t (id INTEGER);\n")

    code, _, err = cli(sqlite_url, migrations_dir, "up", "--ledger-table", "ops.deploys")

    assert code == 2
    assert "a SQLite database has no schemas (only 'main')" in err


# A real history's habit: it drops and recreates the ledger table of the tool it used before.
OWN_SCHEMA_MIGRATIONS = """\
DROP TABLE IF EXISTS schema_migrations;
CREATE TABLE schema_migrations (version VARCHAR(255) PRIMARY KEY);
INSERT INTO schema_migrations VALUES ('20190101000000');
"""


def test_a_history_that_owns_a_schema_migrations_table_runs_with_another_ledger_name(
    db_url: str, migrations_dir: Path
) -> None:
    path = write(migrations_dir, "001_legacy.sql", OWN_SCHEMA_MIGRATIONS)

    code, _, err = cli(db_url, migrations_dir, "up")
    assert code == 2
    assert f"{path}: line 1: the statement names schema_migrations, one of dbledger's own tables" in err
    assert "--ledger-table NAME" in err
    assert not table_exists(db_url, "schema_migrations")

    code, _, err = cli(db_url, migrations_dir, "up", "--ledger-table", "dbledger_migrations")
    assert code == 0, err
    assert query(db_url, "SELECT version FROM schema_migrations") == [("20190101000000",)]
    assert query(db_url, "SELECT migration_name FROM dbledger_migrations") == [("001_legacy",)]


def test_a_ledger_in_a_schema_whose_name_needs_quoting(pg_url: str, migrations_dir: Path) -> None:
    # The ledger goes to the connection's current schema, whatever its name: quotes, capitals
    # and a '%' (which psycopg would otherwise read as a placeholder) included.
    dbname = pg_url.rsplit("/", 1)[1]
    query(pg_url, 'CREATE SCHEMA "Odd%Sch""ema"')
    query(pg_url, f'ALTER DATABASE "{dbname}" SET search_path = "Odd%Sch""ema"')
    write(
        migrations_dir,
        "001_t.sql",
        "-- migrate:up\nCREATE TABLE t (id INTEGER);\n-- migrate:down\nDROP TABLE t;\n",
    )

    assert [a.name for a in dbledger.migrate(pg_url, migrations_dir).applied] == ["001_t"]
    assert [r.name for r in dbledger.down(pg_url, migrations_dir)] == ["001_t"]
    assert dbledger.verify(pg_url, migrations_dir).problems == []
    history = query(pg_url, 'SELECT action FROM "Odd%Sch""ema".schema_migrations_history ORDER BY id')
    assert history == [("create",), ("apply",), ("rollback",)]
