"""``up --dry-run`` and ``down --dry-run`` change nothing at all: no ledger table, no lock, the
catalog and the ledger identical before and after, and they print the SQL that would run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dbledger
from dbledger.backends import open_backend
from dbledger.config import parse_database_url
from dbledger.contracts import HistoryRow
from tests.helpers import pg_dump_for, query, run_cli, table_exists, write

A = "-- migrate:up\nCREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT);\n-- migrate:down\nDROP TABLE a;\n"
B = (
    "-- migrate:up\nALTER TABLE a ADD COLUMN email VARCHAR(100);\n"
    "-- migrate:down\nALTER TABLE a DROP COLUMN email;\n"
)


def snapshot(url: str) -> tuple[object, ...]:
    """Everything a dry run could have changed: the schema, the ledger, the history, locks."""
    with open_backend(parse_database_url(url)) as backend:
        schema = backend.schema_signature()
        rows = backend.read_ledger()
        history = backend.history()
    locks: list[tuple[object, ...]] = []
    if url.startswith("postgresql"):
        # This database's only: the server may be shared with other test runs.
        locks = query(
            url,
            "SELECT locktype, mode FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
    return schema, rows, len(history), locks


def dry(url: str, folder: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder)
    return result.returncode, result.stdout, result.stderr


def test_up_dry_run_on_a_fresh_database_creates_nothing(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", A)
    write(migrations_dir, "002_b.sql", B)
    sqlite_file = Path(db_url.removeprefix("sqlite:///")) if db_url.startswith("sqlite") else None
    if sqlite_file is None:
        before = snapshot(db_url)

    code, out, err = dry(db_url, migrations_dir, "up", "--dry-run")

    assert code == 0, err
    assert "nothing was changed" in out
    assert "-- 001_a (up, in one transaction" in out
    assert "BEGIN;\n-- line 2" in out
    assert "CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT);\nCOMMIT;" in out
    assert "ALTER TABLE a ADD COLUMN email VARCHAR(100);" in out
    if sqlite_file is not None:
        assert not sqlite_file.exists()
        assert not Path(f"{sqlite_file}.dbledger-lock").exists()
    else:
        assert snapshot(db_url) == before
        assert not table_exists(db_url, "schema_migrations")


def test_dry_runs_after_some_work_leave_everything_identical(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", A)
    dbledger.migrate(db_url, migrations_dir)
    write(migrations_dir, "002_b.sql", B)
    before = snapshot(db_url)

    up_code, up_out, _ = dry(db_url, migrations_dir, "up", "--dry-run")
    down_code, down_out, _ = dry(db_url, migrations_dir, "down", "--dry-run")
    json_code, json_out, _ = dry(db_url, migrations_dir, "up", "--dry-run", "--atomic", "--json")

    assert (up_code, down_code, json_code) == (0, 0, 0)
    assert snapshot(db_url) == before
    assert "-- 002_b (up" in up_out
    assert "001_a" not in up_out.split("nothing was changed", 1)[1]
    assert "-- 001_a (down, in one transaction" in down_out
    assert "BEGIN;\n-- line 4" in down_out
    assert "DROP TABLE a;" in down_out
    document = json.loads(json_out)
    assert document["ok"] is True
    assert document["atomic"] is True
    [planned] = document["migrations"]
    assert planned["name"] == "002_b"
    assert [s["sql"] for s in planned["statements"]] == ["ALTER TABLE a ADD COLUMN email VARCHAR(100)"]


def test_a_dry_run_reports_what_would_refuse(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", A)
    write(migrations_dir, "002_b.sql", B)
    dbledger.migrate(db_url, migrations_dir, to=1)
    write(migrations_dir, "001_a.sql", A + "-- edited\n")
    before = snapshot(db_url)

    code, out, err = dry(db_url, migrations_dir, "up", "--dry-run")

    assert code == 1
    assert out == ""
    assert "dbledger: error: migration '001_a' was modified after it was applied" in err
    assert snapshot(db_url) == before


@pytest.mark.parametrize("args", [("down", "--dry-run", "--to", "0")])
def test_down_dry_run_refuses_like_down(db_url: str, migrations_dir: Path, args: tuple[str, ...]) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (id INTEGER);\n")  # no down section
    dbledger.migrate(db_url, migrations_dir)

    code, _, err = dry(db_url, migrations_dir, *args)

    assert code == 1
    assert "migration '001_a' has no down section" in err
    assert table_exists(db_url, "a")


def test_postgres_dry_run_names_locks_rewrites_sizes_and_estimates(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", "CREATE TABLE t (id INTEGER PRIMARY KEY, code VARCHAR(10));\n")
    dbledger.migrate(pg_url, migrations_dir)
    query(pg_url, "INSERT INTO t SELECT i, 'c' || i FROM generate_series(1, 5000) i")
    query(pg_url, "ANALYZE t")
    write(
        migrations_dir,
        "002_types.sql",
        "ALTER TABLE t ALTER COLUMN code TYPE VARCHAR(50);\nALTER TABLE t ALTER COLUMN id TYPE BIGINT;\n",
    )
    before = snapshot(pg_url)

    code, out, err = dry(pg_url, migrations_dir, "up", "--dry-run")
    json_code, json_out, _ = dry(pg_url, migrations_dir, "up", "--dry-run", "--json")

    assert (code, json_code) == (0, 0), err
    assert snapshot(pg_url) == before
    assert "-- line 1: ALTER TABLE; ACCESS EXCLUSIVE on t; catalog; 5,000 rows" in out
    assert "-- line 2: ALTER TABLE; ACCESS EXCLUSIVE on t; rewrite; 5,000 rows" in out
    assert "-- ACCESS EXCLUSIVE on t for ~" in out
    assert "-- estimated total: " in out
    [planned] = json.loads(json_out)["migrations"]
    first, second = (s["analysis"] for s in planned["statements"])
    assert (first["lock"], first["effect"], first["destructive"]) == ("ACCESS EXCLUSIVE", "catalog", False)
    # integer -> bigint rewrites every row and keeps every value
    assert (second["lock"], second["effect"], second["destructive"]) == ("ACCESS EXCLUSIVE", "rewrite", False)
    assert second["rows"] == 5000
    assert planned["estimate_ms"] > 0


def test_a_destructive_statement_triggers_a_backup_without_being_marked(
    pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    pg_dump_for(pg_url)
    write(migrations_dir, "001_t.sql", "CREATE TABLE t (id INTEGER, note TEXT);\n")
    dbledger.migrate(pg_url, migrations_dir)
    write(migrations_dir, "002_drop_note.sql", "ALTER TABLE t DROP COLUMN note;\n")  # no backup:true

    code, _, err = dry(pg_url, migrations_dir, "up", "--backup", str(tmp_path / "backups"))

    assert code == 0, err
    [dump] = list((tmp_path / "backups").iterdir())
    assert dump.name.endswith("-002_drop_note.dump")


def test_applied_migrations_record_their_estimate_and_dry_runs_learn_from_them(
    pg_url: str, migrations_dir: Path
) -> None:
    from dbledger.backends.pganalysis import learned_scale

    write(
        migrations_dir,
        "001_t.sql",
        "CREATE TABLE t (id INTEGER);\nINSERT INTO t SELECT generate_series(1, 1000);\n",
    )
    dbledger.migrate(pg_url, migrations_dir)

    [(estimate, detail, actual)] = query(
        pg_url,
        "SELECT estimate_ms, detail, execution_time_ms FROM schema_migrations_history WHERE action = 'apply'",
    )
    assert isinstance(estimate, int)
    assert detail is None
    assert actual >= 0
    # Three slow migrations that took twice their estimate teach a factor of 2; fast ones teach nothing.
    slow = [applied(estimate_ms=1000, execution_time_ms=2000)] * 3
    fast = [applied(estimate_ms=5, execution_time_ms=50)] * 5
    assert learned_scale(slow + fast) == 2.0
    assert learned_scale(fast) == 1.0


def applied(*, estimate_ms: int, execution_time_ms: int) -> HistoryRow:
    """An ``apply`` row of the history with an estimate and the time the migration took."""
    return HistoryRow(
        id=1,
        at="2026-01-01T00:00:00.000000Z",
        action="apply",
        migration_name="001_t",
        version="1",
        state="applied",
        checksum=None,
        execution_time_ms=execution_time_ms,
        estimate_ms=estimate_ms,
        applied_order=1,
        error_message=None,
        detail=None,
        actor=None,
        dbledger_version=None,
        prev_hash=None,
        hash=None,
    )


def analysed(url: str, folder: Path) -> list[dict[str, object]]:
    """Each pending statement's analysis, from ``up --dry-run --json``, in order."""
    code, out, err = dry(url, folder, "up", "--dry-run", "--json")
    assert code == 0, err
    migrations = json.loads(out)["migrations"]
    return [{"sql": s["sql"], **s["analysis"]} for m in migrations for s in m["statements"]]


def locks_of(statement: dict[str, object]) -> dict[str, str]:
    locks = statement["locks"]
    assert isinstance(locks, list)
    return {lock["table"]: lock["mode"] for lock in locks}


def test_widening_a_column_is_not_destructive(pg_url: str, migrations_dir: Path) -> None:
    """smallint -> integer -> bigint, a longer varchar, varchar -> text, more numeric digits keep
    every value: not destructive. The integer widenings still rewrite the table under ACCESS
    EXCLUSIVE; the length and text ones change the catalog only. A narrowing stays destructive,
    judged on the type the earlier statement left."""
    write(
        migrations_dir,
        "001_w.sql",
        "CREATE TABLE w (s smallint, i integer, i4 int4, v varchar(10), n numeric(8,2));\n"
        "INSERT INTO w VALUES (1, 2147483647, -2147483648, 'ten chars!', 123456.78);\n",
    )
    dbledger.migrate(pg_url, migrations_dir)
    write(
        migrations_dir,
        "002_widen.sql",
        "ALTER TABLE w ALTER COLUMN s TYPE integer;\n"
        "ALTER TABLE w ALTER COLUMN i TYPE bigint;\n"
        "ALTER TABLE w ALTER COLUMN i4 TYPE int8;\n"
        "ALTER TABLE w ALTER COLUMN v TYPE varchar(20);\n"
        "ALTER TABLE w ALTER COLUMN v TYPE text;\n"
        "ALTER TABLE w ALTER COLUMN n TYPE numeric(12,2);\n"
        "ALTER TABLE w ALTER COLUMN n TYPE numeric(14,4);\n"
        "ALTER TABLE w ALTER COLUMN s TYPE smallint;\n",
    )

    statements = analysed(pg_url, migrations_dir)
    code, out, _ = dry(pg_url, migrations_dir, "up", "--dry-run")

    assert [(s["effect"], s["destructive"]) for s in statements] == [
        ("rewrite", False),
        ("rewrite", False),
        ("rewrite", False),
        ("catalog", False),
        ("catalog", False),
        ("catalog", False),
        ("rewrite", False),  # more digits after the point: every value is re-encoded
        ("rewrite", True),  # integer (as the first statement left it) -> smallint
    ]
    assert all(locks_of(s) == {"w": "ACCESS EXCLUSIVE"} for s in statements)
    assert code == 0
    assert "w.i integer -> bigint keeps every value but rewrites the table" in out
    assert out.count("destructive") == 1
    dbledger.migrate(pg_url, migrations_dir)
    assert query(pg_url, "SELECT s, i, i4, v, n::text FROM w") == [
        (1, 2147483647, -2147483648, "ten chars!", "123456.7800")
    ]


def test_if_exists_on_something_absent_is_a_no_op(pg_url: str, migrations_dir: Path) -> None:
    """DROP TABLE / INDEX / VIEW / COLUMN IF EXISTS and ALTER TABLE IF EXISTS on what neither the
    database nor an earlier pending statement has: not destructive, nothing locked (DROP COLUMN
    still locks its table). What an earlier statement created, IF EXISTS does drop."""
    write(migrations_dir, "001_keep.sql", "CREATE TABLE keep (id integer, note text);\n")
    dbledger.migrate(pg_url, migrations_dir)
    write(
        migrations_dir,
        "002_ghosts.sql",
        "DROP TABLE IF EXISTS ghost;\n"
        "DROP INDEX IF EXISTS ghost_idx;\n"
        "DROP VIEW IF EXISTS ghost_view;\n"
        "ALTER TABLE keep DROP COLUMN IF EXISTS ghost_col;\n"
        "ALTER TABLE IF EXISTS ghost ADD COLUMN x integer;\n"
        "CREATE TABLE scratch (id integer);\n",
    )
    write(
        migrations_dir,
        "003_cleanup.sql",
        "DROP TABLE IF EXISTS scratch;\nDROP TABLE IF EXISTS scratch;\nDROP TABLE IF EXISTS keep;\n",
    )

    statements = analysed(pg_url, migrations_dir)
    code, out, _ = dry(pg_url, migrations_dir, "up", "--dry-run")

    summary = [(s["lock"], s["destructive"]) for s in statements]
    assert summary == [
        (None, False),
        (None, False),
        (None, False),
        ("ACCESS EXCLUSIVE", False),
        (None, False),
        ("ACCESS EXCLUSIVE", False),  # the new table's own lock
        ("ACCESS EXCLUSIVE", True),  # 002 created it
        (None, False),  # and the statement before dropped it
        ("ACCESS EXCLUSIVE", True),
    ]
    assert locks_of(statements[3]) == {"keep": "ACCESS EXCLUSIVE"}
    notes = statements[0]["notes"]
    assert isinstance(notes, list)
    assert "ghost does not exist: IF EXISTS skips it, nothing is locked or dropped" in notes
    assert code == 0
    assert "-- line 1: DROP TABLE; catalog; ~" in out
    dbledger.migrate(pg_url, migrations_dir)  # the SQL is right: all of it runs
    assert not table_exists(pg_url, "keep")
    assert not table_exists(pg_url, "scratch")


def test_up_backup_skips_a_deploy_that_only_widens_and_drops_what_is_absent(
    pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    """``up --backup DIR`` backs up before the first destructive migration: a widening and a
    DROP TABLE IF EXISTS of an absent table destroy nothing, so no backup is taken."""
    write(
        migrations_dir,
        "001_t.sql",
        "CREATE TABLE t (id integer, code varchar(10));\nINSERT INTO t VALUES (1, 'a');\n",
    )
    dbledger.migrate(pg_url, migrations_dir)
    write(
        migrations_dir,
        "002_widen.sql",
        "ALTER TABLE t ALTER COLUMN id TYPE bigint;\n"
        "ALTER TABLE t ALTER COLUMN code TYPE text;\n"
        "DROP TABLE IF EXISTS ghost;\n",
    )
    backups = tmp_path / "backups"

    code, _, err = dry(pg_url, migrations_dir, "up", "--backup", str(backups))

    assert code == 0, err
    assert not backups.exists()
    assert "backed up to" not in err
    assert query(pg_url, "SELECT count(*) FROM schema_migrations_history WHERE action = 'backup'") == [(0,)]
    assert query(pg_url, "SELECT pg_typeof(id)::text, code FROM t") == [("bigint", "a")]
