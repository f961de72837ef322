"""What one engine guarantees whichever command runs a migration: the order of what was applied is
recorded (and followed by down, redo, replay and status), a version is applied once whatever its
file is called, the recorded schema stays true, each migration starts from a clean session, an
``--atomic`` failure is blamed on the migration that caused it, a migration at work is running
(not dirty), and a ``transaction:false`` section that opened its own transaction fails cleanly.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import dbledger
from dbledger.integrations.fastapi import ledger_router, open_access
from tests.helpers import query, run_cli, table_exists, write


def cli(url: str, folder: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder.parent)
    return result.returncode, result.stdout, result.stderr


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def index_exists(url: str, name: str) -> bool:
    if is_pg(url):
        return bool(query(url, "SELECT 1 FROM pg_indexes WHERE indexname = %s", (name,)))
    return bool(query(url, "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = %s", (name,)))


def columns(url: str, table: str) -> list[str]:
    if is_pg(url):
        rows = query(
            url, "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        )
    else:
        rows = query(url, "SELECT name FROM pragma_table_info(%s)", (table,))
    return sorted(name for (name,) in rows)


# -- 1. the applied order is recorded, never inferred ----------------------------------------------


def test_down_undoes_the_newest_applied_after_a_failed_atomic_deploy(
    db_url: str, migrations_dir: Path
) -> None:
    write(
        migrations_dir,
        "001_t.sql",
        "-- migrate:up\nCREATE TABLE t (id INTEGER);\n-- migrate:down\nDROP TABLE t;\n",
    )
    write(
        migrations_dir,
        "002_c.sql",
        "-- migrate:up\nALTER TABLE t ADD COLUMN c INTEGER;\n-- migrate:down\nALTER TABLE t DROP COLUMN c;\n",
    )
    index = "-- migrate:up\nCREATE INDEX t_c ON t ({column});\n-- migrate:down\nDROP INDEX t_c;\n"
    write(migrations_dir, "003_index.sql", index.format(column="cc"))  # a typo
    assert cli(db_url, migrations_dir, "up", "--atomic")[0] == 1  # 003's failed row is the first row
    write(migrations_dir, "003_index.sql", index.format(column="c"))
    assert cli(db_url, migrations_dir, "up")[0] == 0

    code, out, err = cli(db_url, migrations_dir, "down", "--json")

    assert code == 0, err
    assert [r["name"] for r in json.loads(out)["rolled_back"]] == ["003_index"]
    assert not index_exists(db_url, "t_c")
    assert columns(db_url, "t") == ["c", "id"]
    status = json.loads(cli(db_url, migrations_dir, "status", "--json")[1])
    assert [r["name"] for r in status["applied"]] == ["001_t", "002_c"]
    assert status["out_of_order"] == []
    assert status["problems"] == []
    assert cli(db_url, migrations_dir, "drift")[0] == 0
    assert cli(db_url, migrations_dir, "drift", "--replay")[0] == 0


def test_status_and_down_follow_the_applied_order_where_it_differs(db_url: str, migrations_dir: Path) -> None:
    write(
        migrations_dir,
        "002_b.sql",
        "-- migrate:up\nCREATE TABLE b (id INTEGER);\n-- migrate:down\nDROP TABLE b;\n",
    )
    dbledger.migrate(db_url, migrations_dir)
    write(
        migrations_dir,
        "001_a.sql",
        "-- migrate:up\nCREATE TABLE a (id INTEGER);\n-- migrate:down\nDROP TABLE a;\n",
    )
    dbledger.migrate(db_url, migrations_dir, allow_out_of_order=True)

    code, out, _ = cli(db_url, migrations_dir, "status")
    document = json.loads(cli(db_url, migrations_dir, "status", "--json")[1])

    assert code == 0
    header = next(line for line in out.splitlines() if line.split()[:2] == ["order", "version"])
    assert header.split()[:3] == ["order", "version", "migration"]
    assert [(r["name"], r["applied_order"]) for r in document["applied"]] == [("002_b", 1), ("001_a", 2)]
    assert document["applied_in_version_order"] is False
    # 001 was applied last, so down takes it first.
    assert [r.name for r in dbledger.down(db_url, migrations_dir)] == ["001_a"]
    assert table_exists(db_url, "b")


# -- 4. a version is applied once, whatever its file is called -------------------------------------


def test_a_renamed_file_is_a_rename_and_is_never_applied_again(db_url: str, migrations_dir: Path) -> None:
    seed = "CREATE TABLE seeds (n INTEGER);\nINSERT INTO seeds VALUES (1);\n"
    old = write(migrations_dir, "001_seed.sql", seed)
    dbledger.migrate(db_url, migrations_dir)
    old.rename(migrations_dir / "001_seed_data.sql")

    code, _, err = cli(db_url, migrations_dir, "up", "--allow-missing")

    assert code == 1
    assert "migration '001_seed' was renamed to '001_seed_data' (same version 1, same checksum)" in err
    assert "'dbledger repair'" in err
    assert query(db_url, "SELECT count(*) FROM seeds") == [(1,)]
    assert query(db_url, "SELECT migration_name FROM schema_migrations") == [("001_seed",)]
    status = json.loads(cli(db_url, migrations_dir, "status", "--json")[1])
    assert [(r["name"], r["renamed_to"]) for r in status["renamed"]] == [("001_seed", "001_seed_data")]
    assert status["pending"] == []

    code, out, err = cli(db_url, migrations_dir, "repair")
    assert code == 0, err
    assert "001_seed: renamed (001_seed -> 001_seed_data)" in out
    assert query(db_url, "SELECT migration_name, state FROM schema_migrations") == [
        ("001_seed_data", "applied")
    ]
    assert cli(db_url, migrations_dir, "up")[0] == 0
    assert query(db_url, "SELECT count(*) FROM seeds") == [(1,)]
    assert cli(db_url, migrations_dir, "verify")[0] == 0


def test_a_different_file_under_an_applied_version_is_refused(db_url: str, migrations_dir: Path) -> None:
    old = write(migrations_dir, "001_seed.sql", "CREATE TABLE seeds (n INTEGER);\n")
    dbledger.migrate(db_url, migrations_dir)
    old.unlink()
    write(migrations_dir, "001_other.sql", "CREATE TABLE other (n INTEGER);\n")

    code, _, err = cli(db_url, migrations_dir, "up", "--allow-missing")

    assert code == 1
    assert "version 1 was applied as '001_seed', whose file is gone" in err
    assert not table_exists(db_url, "other")


# -- 5. the recorded schema stays true -------------------------------------------------------------


def test_the_recorded_schema_follows_a_run_that_failed_after_committing(
    db_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (id INTEGER);\n")
    dbledger.migrate(db_url, migrations_dir)
    write(migrations_dir, "002_b.sql", "CREATE TABLE b (id INTEGER);\n")
    write(migrations_dir, "003_fails.sql", "INSERT INTO nosuch VALUES (1);\n")

    assert cli(db_url, migrations_dir, "up")[0] == 1
    code, out, err = cli(db_url, migrations_dir, "drift")

    assert table_exists(db_url, "b")
    assert code == 0, out + err
    assert "no drift" in out


# -- 6. each migration starts from a clean session -------------------------------------------------


def test_session_state_does_not_leak_into_the_next_migration(db_url: str, migrations_dir: Path) -> None:
    if is_pg(db_url):
        # The first lines of every pg_dump output, then a plain CREATE TABLE that needs search_path.
        write(migrations_dir, "001_restore.sql", "SELECT pg_catalog.set_config('search_path', '', false);\n")
        write(migrations_dir, "002_b.sql", "CREATE TABLE b (id INTEGER);\n")
    else:
        # foreign_keys set outside a transaction by 001 would make 002's orphan row fail.
        write(
            migrations_dir, "001_pragma.sql", "-- migrate:up transaction:false\nPRAGMA foreign_keys = ON;\n"
        )
        write(
            migrations_dir,
            "002_b.sql",
            "CREATE TABLE p (id INTEGER PRIMARY KEY);\n"
            "CREATE TABLE b (id INTEGER, p_id INTEGER REFERENCES p (id));\n"
            "INSERT INTO b VALUES (1, 42);\n",
        )

    code, _, err = cli(db_url, migrations_dir, "up")

    assert code == 0, err  # as each would alone
    assert table_exists(db_url, "b")


def test_a_role_a_migration_sets_is_neither_the_ledgers_nor_the_next_migrations(
    pg_url: str, migrations_dir: Path
) -> None:
    # The common way to give objects the application's owner: SET ROLE in the migration. That
    # role may not write dbledger's ledger, and must not own what the next migration creates.
    role = f"owner_{pg_url.rsplit('/', 1)[1]}"
    query(pg_url, f'CREATE ROLE "{role}" NOLOGIN')
    query(pg_url, f'GRANT CREATE ON SCHEMA public TO "{role}"')
    write(migrations_dir, "001_owned.sql", f'SET ROLE "{role}";\nCREATE TABLE owned (id INTEGER);\n')
    write(migrations_dir, "002_role.sql", f'-- migrate:up transaction:false\nSET ROLE "{role}";\n')
    write(migrations_dir, "003_t.sql", "CREATE TABLE t (id INTEGER);\n")
    try:
        code, _, err = cli(pg_url, migrations_dir, "up")
        owners = query(
            pg_url, "SELECT tablename, tableowner FROM pg_tables WHERE tablename IN ('owned', 't') ORDER BY 1"
        )
        applied = query(
            pg_url, "SELECT migration_name, success FROM schema_migrations ORDER BY applied_order"
        )
    finally:
        query(pg_url, "DROP TABLE IF EXISTS owned, t")
        query(pg_url, f'REVOKE CREATE ON SCHEMA public FROM "{role}"')
        query(pg_url, f'DROP ROLE "{role}"')
    assert code == 0, err
    assert owners == [("owned", role), ("t", "postgres")]
    assert applied == [("001_owned", True), ("002_role", True), ("003_t", True)]


# -- 7. --atomic blames the migration that broke a deferred constraint -----------------------------

DEFERRED = """\
CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
INSERT INTO child VALUES (42);
"""


def test_atomic_names_the_migration_whose_deferred_constraint_failed(
    pg_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_orphan.sql", DEFERRED)
    write(migrations_dir, "002_b.sql", "CREATE TABLE b (id INTEGER);\n")
    write(migrations_dir, "003_c.sql", "CREATE TABLE c (id INTEGER);\n")

    code, out, err = cli(pg_url, migrations_dir, "up", "--atomic", "--json")

    assert code == 1
    error = json.loads(out)["error"]
    assert error["migration"] == "001_orphan"
    assert error["sqlstate"] == "23503"
    assert "migration '001_orphan' failed" in err
    assert query(pg_url, "SELECT migration_name, state FROM schema_migrations") == [("001_orphan", "failed")]
    assert not table_exists(pg_url, "parent")
    assert not table_exists(pg_url, "b")


# -- 8. a migration at work is running, not dirty --------------------------------------------------


async def get(app: Any, *paths: str) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return [await client.get(path) for path in paths]


def test_a_transaction_false_migration_at_work_is_running(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", "CREATE TABLE t (id INTEGER);\n")
    dbledger.migrate(db_url, migrations_dir)
    write(migrations_dir, "002_index.sql", "-- migrate:up transaction:false\nCREATE INDEX t_id ON t (id);\n")
    app = FastAPI()
    app.include_router(ledger_router(db_url, migrations_dir, version_access=open_access))
    seen: dict[str, object] = {}

    def watch(event: str, name: str, ms: int | None) -> None:
        if event != "start" or name != "002_index":
            return
        # The migration is under way: its row is dirty and its runner holds the lock.
        state = dbledger.status(db_url, migrations_dir)
        seen["running"] = [row.name for row in state.plan.running]
        seen["dirty"] = [row.name for row in state.plan.dirty]
        seen["problems"] = state.problems
        seen["verify"] = dbledger.verify(db_url, migrations_dir).problems
        health, version = asyncio.run(get(app, "/health", "/api/db/version"))
        seen["health"] = health.status_code, health.json()
        seen["version"] = version.json()["running"]
        code, out, _ = cli(db_url, migrations_dir, "status", "--json")
        seen["cli"] = code, [r["name"] for r in json.loads(out)["running"]]

    dbledger.migrate(db_url, migrations_dir, progress=watch)

    assert seen["running"] == ["002_index"]
    assert seen["dirty"] == []
    assert seen["problems"] == []
    assert seen["verify"] == []
    assert seen["health"] == (
        200,
        {
            "status": "running",
            "version": 1,
            "reasons": [],
            "warnings": [],
            "running": ["002_index"],
            "drift": {"breaking": 0, "risky": 0, "slow": 0, "harmless": 0},
        },
    )
    assert [r["name"] for r in seen["version"]] == ["002_index"]  # type: ignore[attr-defined]
    assert seen["cli"] == (0, ["002_index"])
    assert dbledger.status(db_url, migrations_dir).plan.running == []


def test_a_dirty_row_whose_runner_is_gone_is_dirty(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", "CREATE TABLE t (id INTEGER);\n")
    dbledger.migrate(db_url, migrations_dir)
    query(db_url, "UPDATE schema_migrations SET state = 'dirty', success = false, runner = 'backend 1'")

    state = dbledger.status(db_url, migrations_dir)

    assert [row.name for row in state.plan.dirty] == ["001_t"]
    assert state.plan.running == []
    assert any("dbledger repair" in problem for problem in state.problems)


# -- 9. a transaction:false section that opened its own transaction --------------------------------


def test_a_section_that_opens_its_own_transaction_and_fails_is_rolled_back_and_recorded(
    db_url: str, migrations_dir: Path
) -> None:
    body = "BEGIN;\nCREATE TABLE t (id INTEGER);\nINSERT INTO nosuch VALUES (1);\nCOMMIT;\n"
    write(migrations_dir, "001_own.sql", f"-- migrate:up transaction:false\n{body}")

    code, _, err = cli(db_url, migrations_dir, "up")

    assert code == 1
    assert "this migration was rolled back and left nothing behind" in err
    assert "part of it may have been applied" not in err
    assert "could not be recorded" not in err
    assert not table_exists(db_url, "t")
    [(state, message)] = query(db_url, "SELECT state, error_message FROM schema_migrations")
    assert state == "failed"
    assert "nosuch" in message
    # Nothing to clean up, so nothing to repair: the fixed file simply runs.
    write(migrations_dir, "001_own.sql", "-- migrate:up transaction:false\n" + body.replace("nosuch", "t"))
    assert cli(db_url, migrations_dir, "up")[0] == 0
    assert query(db_url, "SELECT count(*) FROM t") == [(1,)]


@pytest.mark.parametrize("committed", [True, False], ids=["work committed", "nothing committed"])
def test_dirty_only_when_work_may_have_been_committed(
    db_url: str, migrations_dir: Path, committed: bool
) -> None:
    first = "CREATE TABLE done_part (id INTEGER);\n" if committed else ""
    write(
        migrations_dir,
        "001_out.sql",
        f"-- migrate:up transaction:false\n{first}INSERT INTO nosuch VALUES (1);\n",
    )

    with pytest.raises(dbledger.MigrationFailed) as failed:
        dbledger.migrate(db_url, migrations_dir)

    assert failed.value.dirty is committed
    assert query(db_url, "SELECT state FROM schema_migrations") == [("dirty" if committed else "failed",)]


def test_each_migration_of_an_atomic_deploy_starts_from_a_clean_session(
    pg_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_restore.sql", "SELECT pg_catalog.set_config('search_path', '', false);\n")
    write(migrations_dir, "002_b.sql", "CREATE TABLE b (id INTEGER);\n")

    code, _, err = cli(pg_url, migrations_dir, "up", "--atomic")

    assert code == 0, err
    assert table_exists(pg_url, "public.b")


PROCEDURE = """\
CREATE TABLE batches (n INTEGER);
CREATE PROCEDURE backfill() LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO batches VALUES (1);
    COMMIT;
    INSERT INTO batches VALUES (2);
    RAISE EXCEPTION 'batch 2 failed';
END $$;
"""


def test_a_procedure_that_committed_before_it_failed_leaves_the_migration_dirty(
    pg_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_proc.sql", PROCEDURE)
    write(migrations_dir, "002_call.sql", "-- migrate:up transaction:false\nCALL backfill();\n")

    with pytest.raises(dbledger.MigrationFailed) as failed:
        dbledger.migrate(pg_url, migrations_dir)

    assert failed.value.dirty
    assert "left nothing behind" not in failed.value.message
    assert query(pg_url, "SELECT n FROM batches") == [(1,)]  # batch 1 stays: the row must say so
    assert query(pg_url, "SELECT state FROM schema_migrations WHERE migration_name = '002_call'") == [
        ("dirty",)
    ]


def test_a_redo_whose_up_half_fails_keeps_the_recorded_schema_true(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (id INTEGER);\n")
    write(
        migrations_dir,
        "002_b.sql",
        "-- migrate:up\nCREATE TABLE b (id INTEGER);\nINSERT INTO a VALUES (1);\n"
        "-- migrate:down\nDROP TABLE b;\nDROP TABLE a;\n",  # the up half cannot run again
    )
    dbledger.migrate(db_url, migrations_dir)

    with pytest.raises(dbledger.MigrationFailed):
        dbledger.redo(db_url, migrations_dir)

    assert not table_exists(db_url, "a")
    assert cli(db_url, migrations_dir, "drift")[0] == 0  # the schema the down half left


def test_partial_work_of_a_failed_rollback_does_not_become_the_expected_schema(
    db_url: str, migrations_dir: Path
) -> None:
    write(
        migrations_dir,
        "001_a.sql",
        "-- migrate:up\nCREATE TABLE a (id INTEGER);\n"
        "-- migrate:down transaction:false\nDROP TABLE a;\nINSERT INTO nosuch VALUES (1);\n",
    )
    write(
        migrations_dir,
        "002_b.sql",
        "-- migrate:up\nCREATE TABLE b (id INTEGER);\n-- migrate:down\nDROP TABLE b;\n",
    )
    dbledger.migrate(db_url, migrations_dir)

    with pytest.raises(dbledger.MigrationFailed) as failed:
        dbledger.down(db_url, migrations_dir, steps=2)

    assert failed.value.dirty
    code, out, _ = cli(db_url, migrations_dir, "drift")
    assert code == 1  # the half-done rollback shows, it is not taken for the expected schema
    assert out.splitlines() == ["missing table a"]
    assert not table_exists(db_url, "b")


def test_baseline_does_not_paper_over_a_dirty_migration(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (id INTEGER);\n")
    dbledger.migrate(db_url, migrations_dir)
    query(db_url, "UPDATE schema_migrations SET state = 'dirty', success = false")

    code, _, err = cli(db_url, migrations_dir, "baseline", "1")

    assert code == 1
    assert "migration '001_a' is dirty: it may be half applied" in err
    assert query(db_url, "SELECT state FROM schema_migrations") == [("dirty",)]
