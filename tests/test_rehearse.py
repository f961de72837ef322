"""dbledger rehearse, from the outside, on a real PostgreSQL: the pending migrations run on a
scratch copy, whose report says what each really did next to the dry run's estimate, and the live
database is only read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from dbledger.testing import Cluster
from tests.conftest import ExternalServer
from tests.helpers import Result, pg_dump_for, query, run_cli, write

CREATE = """\
-- migrate:up
CREATE TABLE accounts (id bigserial PRIMARY KEY, code bigint NOT NULL, name varchar(40) NOT NULL,
                       created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE payments (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id),
                       amount numeric(10, 2) NOT NULL, memo text);
INSERT INTO accounts (code, name) SELECT g, 'account ' || g FROM generate_series(1, 200) AS g;
"""
REWRITE = "-- migrate:up\nALTER TABLE accounts ALTER COLUMN code TYPE text;\n"  # bigint -> text
CATALOG_ONLY = "-- migrate:up\nALTER TABLE accounts ADD COLUMN note text;\n"


@pytest.fixture
def live(pg_url: str, migrations_dir: Path) -> str:
    """A database with 001 applied (200 accounts), 002 (a rewrite) and 003 (catalog only) pending."""
    write(migrations_dir, "001_create.sql", CREATE)
    assert rehearse_cli(pg_url, migrations_dir, "up", "--to", "1").returncode == 0
    write(migrations_dir, "002_code_as_text.sql", REWRITE)
    write(migrations_dir, "003_add_note.sql", CATALOG_ONLY)
    return pg_url


@pytest.fixture
def kept(pg_server: Cluster | ExternalServer) -> Iterator[list[str]]:
    """Scratch databases a test kept (--keep), dropped after it."""
    names: list[str] = []
    yield names
    for name in names:
        pg_server.drop_database(name)


def rehearse_cli(url: str, folder: Path, *args: str) -> Result:
    return run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder.parent)


def document(result: Result) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def on(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def snapshot(url: str) -> list[Any]:
    """What a rehearsal must leave as it was: the rows, the ledger and its history, the columns."""
    return [
        query(url, "SELECT id, code, name FROM accounts ORDER BY id"),
        query(url, "SELECT count(*) FROM payments"),
        query(url, "SELECT migration_name, checksum, success FROM schema_migrations ORDER BY id"),
        query(url, "SELECT count(*) FROM schema_migrations_history"),
        query(
            url,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'accounts' ORDER BY ordinal_position",
        ),
    ]


def migration(found: dict[str, Any], name: str) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [m for m in found["migrations"] if m["name"] == name]
    assert len(entries) == 1, found
    return entries[0]


def database_exists(url: str, name: str) -> bool:
    return bool(query(url, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def test_the_live_database_is_only_read(live: str, migrations_dir: Path) -> None:
    before = snapshot(live)
    result = rehearse_cli(live, migrations_dir, "rehearse", "--json")
    assert result.returncode == 0, result.output
    found = document(result)
    assert [m["state"] for m in found["migrations"]] == ["applied", "applied"]
    assert snapshot(live) == before
    assert not database_exists(live, found["scratch_name"])  # dropped at the end
    assert found["kept"] is False


def test_the_report_names_the_real_rewrite_and_its_locks(live: str, migrations_dir: Path) -> None:
    result = rehearse_cli(live, migrations_dir, "rehearse", "--json")
    assert result.returncode == 0, result.output
    found = document(result)
    rewrite, catalog = migration(found, "002_code_as_text"), migration(found, "003_add_note")
    assert rewrite["rewritten"] == ["public.accounts"]
    assert rewrite["rebuilt_indexes"] == ["public.accounts_pkey"]
    assert rewrite["estimated_rewrites"] == ["accounts"]
    assert {
        "relation": "public.accounts",
        "kind": "table",
        "mode": "ACCESS EXCLUSIVE",
        "seen": "at commit",
    } in (rewrite["locks"])
    assert {"table": "accounts", "mode": "ACCESS EXCLUSIVE"} in rewrite["estimated_locks"]
    assert rewrite["execution_time_ms"] >= 0
    assert rewrite["estimate_ms"] is not None
    # Adding a nullable column without a default changes the catalog only: same file, same lock.
    assert catalog["rewritten"] == []
    assert catalog["rebuilt_indexes"] == []
    assert catalog["estimated_rewrites"] == []
    assert [lock["mode"] for lock in catalog["locks"] if lock["relation"] == "public.accounts"] == [
        "ACCESS EXCLUSIVE"
    ]
    # dbledger's own bookkeeping (the ledger write the watcher waits on) is not the migration's.
    assert not [lock for lock in rewrite["locks"] if "schema_migrations" in lock["relation"]]


def test_the_text_report_puts_each_result_next_to_its_estimate(live: str, migrations_dir: Path) -> None:
    result = rehearse_cli(live, migrations_dir, "rehearse")
    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("002_code_as_text: "))
    assert "in one transaction" in lines[start]
    assert lines[start + 1 : start + 5] == [
        "  locks     ACCESS EXCLUSIVE on accounts (at commit)",
        "  estimated ACCESS EXCLUSIVE on accounts",
        "  rewrites  accounts (and 1 index(es) rebuilt)",
        "  estimated accounts",
    ]
    assert lines[-1] == "the scratch database was dropped; the live database was only read"


def test_rows_fill_the_copy(
    live: str, migrations_dir: Path, kept: list[str], pg_server: Cluster | ExternalServer
) -> None:
    result = rehearse_cli(
        live,
        migrations_dir,
        "rehearse",
        "--rows",
        "accounts=5000",
        "--rows",
        "payments=700",
        "--keep",
        "--json",
    )
    assert result.returncode == 0, result.output
    found = document(result)
    kept.append(found["scratch_name"])
    scratch = on(live, found["scratch_name"])
    assert query(scratch, "SELECT count(*) FROM accounts") == [(5000,)]
    assert query(scratch, "SELECT count(*) FROM payments") == [(700,)]
    # The keys are drawn from the accounts there; the ledger is the copy's own, migrated.
    assert query(scratch, "SELECT count(DISTINCT account_id) FROM payments") == [(700,)]
    assert query(scratch, "SELECT count(*) FROM schema_migrations") == [(3,)]
    assert [(f["table"], f["rows_before"], f["rows_added"]) for f in found["filled"]] == [
        ("public.accounts", 200, 4800),
        ("public.payments", 0, 700),
    ]
    assert found["kept"] is True
    assert found["scratch"] == on(live, found["scratch_name"]).replace(
        f":{urlsplit(live).password}@", ":***@"
    )
    assert query(live, "SELECT count(*) FROM accounts") == [(200,)]


def test_rows_for_every_table_leave_the_ledger_alone(
    live: str, migrations_dir: Path, kept: list[str]
) -> None:
    result = rehearse_cli(live, migrations_dir, "rehearse", "--rows", "300", "--keep", "--json")
    assert result.returncode == 0, result.output
    found = document(result)
    kept.append(found["scratch_name"])
    scratch = on(live, found["scratch_name"])
    assert query(scratch, "SELECT count(*) FROM accounts") == [(300,)]
    assert query(scratch, "SELECT count(*) FROM payments") == [(300,)]
    assert sorted(f["table"] for f in found["filled"]) == ["public.accounts", "public.payments"]


def test_schema_only_copies_no_rows_but_the_ledger(live: str, migrations_dir: Path, kept: list[str]) -> None:
    pg_dump_for(live)
    result = rehearse_cli(live, migrations_dir, "rehearse", "--schema-only", "--keep", "--json")
    assert result.returncode == 0, result.output
    found = document(result)
    kept.append(found["scratch_name"])
    assert found["copy"] | {"seconds": None} == {
        "method": "pg_dump",
        "schema_only": True,
        "seconds": None,
        "note": None,
    }
    scratch = on(live, found["scratch_name"])
    assert query(scratch, "SELECT count(*) FROM accounts") == [(0,)]
    assert query(scratch, "SELECT migration_name FROM schema_migrations ORDER BY id") == [
        ("001_create",),
        ("002_code_as_text",),
        ("003_add_note",),
    ]


def test_a_busy_database_is_copied_with_pg_dump(live: str, migrations_dir: Path) -> None:
    pg_dump_for(live)
    before = snapshot(live)
    with psycopg.connect(live) as other:  # another session: the template copy is refused
        other.execute("SELECT 1")
        result = rehearse_cli(live, migrations_dir, "rehearse", "--json")
    assert result.returncode == 0, result.output
    found = document(result)
    assert found["copy"]["method"] == "pg_dump"
    assert found["copy"]["note"] == (
        f'source database "{urlsplit(live).path[1:]}" is being accessed by other users (There is 1 '
        "other session using the database; SQLSTATE 55006)"
    )
    assert "copying with pg_dump instead" in result.stderr
    assert migration(found, "002_code_as_text")["rewritten"] == ["public.accounts"]
    assert snapshot(live) == before


def test_an_idle_database_is_copied_as_a_template(live: str, migrations_dir: Path) -> None:
    result = rehearse_cli(live, migrations_dir, "rehearse", "--json")
    assert result.returncode == 0, result.output
    assert document(result)["copy"]["method"] == "template"


def test_copy_template_on_a_busy_database_fails_and_says_what_to_do(live: str, migrations_dir: Path) -> None:
    with psycopg.connect(live) as other:
        other.execute("SELECT 1")
        result = rehearse_cli(live, migrations_dir, "rehearse", "--copy", "template")
    assert result.returncode == 1, result.output
    assert "is being accessed by other users" in result.stderr
    assert "run with --copy pg_dump (or --copy auto, which falls back to it)" in result.stderr


def test_a_migration_that_fails_on_the_copy_fails_the_rehearsal(live: str, migrations_dir: Path) -> None:
    write(
        migrations_dir, "004_broken.sql", "-- migrate:up\nALTER TABLE accounts ALTER COLUMN name TYPE int;\n"
    )
    before = snapshot(live)
    result = rehearse_cli(live, migrations_dir, "rehearse", "--json")
    assert result.returncode == 1, result.output
    error = document(result)["error"]
    assert error["type"] == "RehearsalFailed"
    assert error["migration"] == "004_broken"
    assert error["sqlstate"] == "42804"
    assert error["message"].startswith("migration '004_broken' failed in the rehearsal (line 2): ")
    assert error["message"].endswith("the live database was not touched: fix the file and rehearse again")
    states = [(m["name"], m["state"]) for m in error["rehearsal"]["migrations"]]
    assert states == [("002_code_as_text", "applied"), ("003_add_note", "applied"), ("004_broken", "failed")]
    assert snapshot(live) == before
    assert not database_exists(live, error["rehearsal"]["scratch_name"])


def test_nothing_pending_makes_no_copy(live: str, migrations_dir: Path) -> None:
    assert rehearse_cli(live, migrations_dir, "up").returncode == 0
    result = rehearse_cli(live, migrations_dir, "rehearse", "--json")
    assert result.returncode == 0, result.output
    found = document(result)
    assert (found["copy"]["method"], found["migrations"]) == (None, [])
    text = rehearse_cli(live, migrations_dir, "rehearse")
    assert text.stdout.startswith("nothing to rehearse on postgresql://")


def test_sqlite_is_refused_with_what_to_do_instead(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", "-- migrate:up\nCREATE TABLE t (id integer);\n")
    result = rehearse_cli(sqlite_url, migrations_dir, "rehearse")
    assert result.returncode == 2
    assert "dbledger rehearse copies a PostgreSQL database" in result.stderr
    assert "dbledger up --database-url sqlite:///rehearsal.db" in result.stderr


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("many", "invalid row count 'many': give N (every table) or TABLE=N (one table)"),
        ("nosuch=10", "--rows nosuch=10: no table of that name in the scratch copy"),
        (
            "schema_migrations=10",
            "--rows schema_migrations=10: public.schema_migrations is dbledger's own table",
        ),
    ],
)
def test_bad_rows_are_usage_errors(live: str, migrations_dir: Path, rows: str, message: str) -> None:
    result = rehearse_cli(live, migrations_dir, "rehearse", "--rows", rows)
    assert result.returncode == 2, result.output
    assert message in result.stderr


def test_no_output_shows_the_password(live: str, migrations_dir: Path, kept: list[str]) -> None:
    pg_dump_for(live)
    password = urlsplit(live).password
    assert password
    with psycopg.connect(live) as other:  # the pg_dump path too: its errors and notes
        other.execute("SELECT 1")
        runs = [
            rehearse_cli(live, migrations_dir, "rehearse", "--keep", "--json", "--verbose"),
            rehearse_cli(live, migrations_dir, "rehearse", "--verbose"),
            rehearse_cli(live, migrations_dir, "rehearse", "--copy", "template"),
        ]
    kept.append(document(runs[0])["scratch_name"])
    write(migrations_dir, "004_broken.sql", "-- migrate:up\nSELECT 1/0;\n")
    runs.append(rehearse_cli(live, migrations_dir, "rehearse", "--json"))
    for result in runs:
        assert f":{password}@" not in result.output
        if len(password) >= 8:  # a short one also appears inside ordinary words
            assert password not in result.output
    assert ":***@" in runs[0].stdout
