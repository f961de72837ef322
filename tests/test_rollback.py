"""``down``, ``redo`` and ``up --atomic`` on both backends: round trips leave the same schema,
refusals happen before anything runs, and a failed atomic deploy leaves nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dbledger
from dbledger.backends import open_backend
from dbledger.config import parse_database_url
from tests.helpers import query, run_cli, table_exists, write

A = "-- migrate:up\nCREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT);\n-- migrate:down\nDROP TABLE a;\n"
B = (
    "-- migrate:up\nALTER TABLE a ADD COLUMN email VARCHAR(100);\nCREATE INDEX a_email ON a (email);\n"
    "-- migrate:down\nDROP INDEX a_email;\nALTER TABLE a DROP COLUMN email;\n"
)
C = "-- migrate:up\nCREATE TABLE c (id INTEGER);\nINSERT INTO c VALUES (1);\n-- migrate:down\nDROP TABLE c;\n"


def signature(url: str) -> frozenset[tuple[str, str, str]]:
    with open_backend(parse_database_url(url)) as backend:
        return backend.schema_signature()


def cli(url: str, folder: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture
def three(migrations_dir: Path) -> Path:
    write(migrations_dir, "001_a.sql", A)
    write(migrations_dir, "002_b.sql", B)
    write(migrations_dir, "003_c.sql", C)
    return migrations_dir


def applied(url: str) -> list[str]:
    return [name for (name,) in query(url, "SELECT migration_name FROM schema_migrations ORDER BY id")]


def test_down_and_up_round_trips_leave_the_same_schema(db_url: str, three: Path) -> None:
    empty = signature(db_url)
    dbledger.migrate(db_url, three, to=1)
    after_one = signature(db_url)
    dbledger.migrate(db_url, three)
    full = signature(db_url)

    assert [r.name for r in dbledger.down(db_url, three, steps=2)] == ["003_c", "002_b"]
    assert signature(db_url) == after_one
    assert applied(db_url) == ["001_a"]
    dbledger.migrate(db_url, three)
    assert signature(db_url) == full

    code, out, err = cli(db_url, three, "down", "--to", "0")
    assert code == 0, err
    assert "rolled back 3 migration(s)" in out
    assert signature(db_url) == empty - {s for s in empty if "schema_migrations" in s[1]}
    assert applied(db_url) == []
    actions = query(db_url, "SELECT action, migration_name FROM schema_migrations_history ORDER BY id")
    assert actions[-3:] == [("rollback", "003_c"), ("rollback", "002_b"), ("rollback", "001_a")]


def test_down_defaults_to_one_step_and_to_ends_at_a_version(db_url: str, three: Path) -> None:
    dbledger.migrate(db_url, three)
    code, _, err = cli(db_url, three, "down")
    assert code == 0, err
    assert "rolled back 003_c" in err
    assert applied(db_url) == ["001_a", "002_b"]
    code, _, err = cli(db_url, three, "down", "--to", "1")
    assert code == 0, err
    assert applied(db_url) == ["001_a"]
    assert cli(db_url, three, "down", "--steps", "1", "--to", "0")[0] == 2


def test_a_range_with_a_missing_down_section_refuses_before_running_anything(
    db_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (id INTEGER);\n")  # up-only
    write(
        migrations_dir,
        "002_b.sql",
        "-- migrate:up\nCREATE TABLE b (id INTEGER);\n-- migrate:down\nDROP TABLE b;\n",
    )
    dbledger.migrate(db_url, migrations_dir)

    code, _, err = cli(db_url, migrations_dir, "down", "--to", "0")

    assert code == 1
    assert f"migration '001_a' has no down section ({migrations_dir / '001_a.sql'})" in err
    assert table_exists(db_url, "b")  # 002 would have been first: it was not touched
    assert applied(db_url) == ["001_a", "002_b"]


def test_a_modified_file_is_not_rolled_back(db_url: str, three: Path) -> None:
    dbledger.migrate(db_url, three)
    write(three, "003_c.sql", C.replace("DROP TABLE c;", "DROP TABLE c; -- edited"))

    code, _, err = cli(db_url, three, "down")

    assert code == 1
    assert "migration '003_c' was modified after it was applied" in err
    assert table_exists(db_url, "c")


def test_a_failing_down_leaves_the_migration_applied(db_url: str, migrations_dir: Path) -> None:
    write(
        migrations_dir,
        "001_a.sql",
        "-- migrate:up\nCREATE TABLE a (id INTEGER);\n-- migrate:down\nDROP TABLE a;\nDROP TABLE nope;\n",
    )
    dbledger.migrate(db_url, migrations_dir)

    code, _, err = cli(db_url, migrations_dir, "down")

    assert code == 1
    assert "migration '001_a' failed (line 5): " in err
    assert "the rollback was undone: the migration is still applied" in err
    assert table_exists(db_url, "a")
    assert query(db_url, "SELECT state, success FROM schema_migrations") == [("applied", True)]
    [(action, detail)] = query(
        db_url, "SELECT action, detail FROM schema_migrations_history WHERE action = 'fail'"
    )
    assert (action, detail) == ("fail", "rollback")


def test_redo_rolls_back_and_reapplies_the_newest(db_url: str, three: Path) -> None:
    dbledger.migrate(db_url, three)
    code, out, err = cli(db_url, three, "redo", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert [r["name"] for r in document["rolled_back"]] == ["003_c"]
    assert [a["name"] for a in document["applied"]] == ["003_c"]
    assert query(db_url, "SELECT count(*) FROM c") == [(1,)]  # rebuilt, not duplicated


def test_atomic_deploy_that_fails_leaves_the_database_as_it_was(db_url: str, three: Path) -> None:
    write(three, "003_c.sql", "CREATE TABLE c (id INTEGER);\nSELECT no_such_column FROM c;\n")
    before = signature(db_url)

    code, _, err = cli(db_url, three, "up", "--atomic")

    assert code == 1
    assert "migration '003_c' failed (line 2)" in err
    assert "--atomic: the whole deploy was rolled back, including 001_a, 002_b" in err
    assert not table_exists(db_url, "a")
    assert signature(db_url) - {s for s in signature(db_url) if "schema_migrations" in s[1]} == before
    assert query(db_url, "SELECT migration_name, state FROM schema_migrations") == [("003_c", "failed")]

    write(three, "003_c.sql", C)
    code, _, err = cli(db_url, three, "up", "--atomic")
    assert code == 0, err
    assert applied(db_url) == ["003_c", "001_a", "002_b"]  # 003's row existed already (failed)
    assert query(db_url, "SELECT count(*) FROM schema_migrations WHERE success") == [(3,)]


def test_atomic_refuses_a_transaction_false_migration(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", A)
    write(
        migrations_dir,
        "002_idx.sql",
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY a_name ON a (name);\n",
    )

    code, _, err = cli(pg_url, migrations_dir, "up", "--atomic")

    assert code == 2
    assert "but 002_idx must run outside one (transaction:false)" in err
    assert not table_exists(pg_url, "a")


def test_transaction_false_down_section_runs_outside_a_transaction(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", A)
    write(
        migrations_dir,
        "002_idx.sql",
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY a_name ON a (name);\n"
        "-- migrate:down transaction:false\nDROP INDEX CONCURRENTLY a_name;\n",
    )
    dbledger.migrate(pg_url, migrations_dir)
    assert query(pg_url, "SELECT count(*) FROM pg_indexes WHERE indexname = 'a_name'") == [(1,)]

    code, _, err = cli(pg_url, migrations_dir, "down")

    assert code == 0, err
    assert query(pg_url, "SELECT count(*) FROM pg_indexes WHERE indexname = 'a_name'") == [(0,)]
    assert applied(pg_url) == ["001_a"]
