"""One preflight decides every refusal, for every migration of a run, before its first change:
a dry run refuses exactly what its command refuses, with the same error, and a refused run
changes nothing at all (not even the ledger's creation).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import dbledger
from dbledger.errors import DbledgerError
from tests.helpers import query, run_cli, table_exists, write

A = "-- migrate:up\nCREATE TABLE a (id INTEGER);\n-- migrate:down\nDROP TABLE a;\n"
B = "-- migrate:up\nCREATE TABLE b (id INTEGER);\n-- migrate:down\nDROP TABLE b;\n"


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def state(url: str) -> tuple[object, ...]:
    """What a refused run could have changed: the tables, the ledger, the history."""
    if is_pg(url):
        tables = query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    else:
        tables = query(url, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
    if not table_exists(url, "schema_migrations"):
        return tables, [], []
    ledger = query(url, "SELECT migration_name, state, checksum FROM schema_migrations ORDER BY id")
    history = query(url, "SELECT id, action, migration_name FROM schema_migrations_history ORDER BY id")
    return tables, ledger, history


@dataclass(frozen=True)
class Refusal:
    """A situation ``command`` must refuse, set up by ``arrange`` on an empty database."""

    arrange: Callable[[str, Path], None]
    command: str  # "up" or "down"
    options: dict[str, Any]
    exit_code: int
    fragment: str  # a piece of the message
    postgres_only: bool = False


def _applied_then(
    change: Callable[[str, Path], object], *files: tuple[str, str]
) -> Callable[[str, Path], None]:
    def arrange(url: str, folder: Path) -> None:
        for name, text in files:
            write(folder, name, text)
        dbledger.migrate(url, folder)
        change(url, folder)

    return arrange


def _files(*files: tuple[str, str]) -> Callable[[str, Path], None]:
    def arrange(url: str, folder: Path) -> None:
        for name, text in files:
            write(folder, name, text)

    return arrange


def _nothing(url: str, folder: Path) -> None:
    pass


def _built_by_hand(url: str, folder: Path) -> None:
    query(url, "CREATE TABLE a (id INTEGER)")
    write(folder, "001_a.sql", A)
    write(folder, "002_b.sql", B)


REFUSALS: dict[str, Refusal] = {
    "COMMIT in a transactional section, after a good one": Refusal(
        _files(("001_a.sql", A), ("002_b.sql", "CREATE TABLE b (id INTEGER);\nCOMMIT;\n")),
        "up",
        {},
        2,
        "line 2: COMMIT would end the transaction dbledger runs this migration in",
    ),
    "BEGIN in the only file": Refusal(
        _files(("001_a.sql", "BEGIN;\nCREATE TABLE a (id INTEGER);\n")),
        "up",
        {},
        2,
        "line 1: BEGIN would end",
    ),
    "CREATE INDEX CONCURRENTLY in a transactional section": Refusal(
        _files(("001_a.sql", A), ("002_i.sql", "CREATE INDEX CONCURRENTLY a_id ON a (id);\n")),
        "up",
        {},
        2,
        "line 1: CREATE INDEX CONCURRENTLY cannot run inside a transaction",
        postgres_only=True,
    ),
    "VACUUM in a transactional section": Refusal(
        _files(("001_a.sql", A), ("002_v.sql", "VACUUM;\n")), "up", {}, 2, "line 1: VACUUM cannot run inside"
    ),
    "DISCARD ALL, which would release the migration lock": Refusal(
        _files(("001_a.sql", A), ("002_d.sql", "-- migrate:up transaction:false\nDISCARD ALL;\n")),
        "up",
        {},
        2,
        "line 2: DISCARD ALL releases the migration lock dbledger holds while it runs",
        postgres_only=True,
    ),
    "pg_advisory_unlock_all(), which would release the migration lock": Refusal(
        _files(("001_a.sql", A), ("002_u.sql", "SELECT pg_advisory_unlock_all();\n")),
        "up",
        {},
        2,
        "line 1: pg_advisory_unlock_all() releases the migration lock",
        postgres_only=True,
    ),
    "a statement on dbledger's ledger": Refusal(
        _files(("001_a.sql", A), ("002_l.sql", "DELETE FROM schema_migrations;\n")),
        "up",
        {},
        2,
        "the statement names schema_migrations, one of dbledger's own tables",
    ),
    "--atomic with a transaction:false migration": Refusal(
        _files(("001_a.sql", "-- migrate:up transaction:false\nCREATE TABLE a (id INTEGER);\n")),
        "up",
        {"atomic": True},
        2,
        "--atomic runs every pending migration in one transaction",
    ),
    "--to a version that is no file": Refusal(
        _files(("001_a.sql", A)), "up", {"to": 7}, 2, "no migration file has version 7"
    ),
    "a modified applied file": Refusal(
        _applied_then(lambda u, f: write(f, "001_a.sql", A + "-- edited\n"), ("001_a.sql", A)),
        "up",
        {},
        1,
        "migration '001_a' was modified after it was applied",
    ),
    "a missing applied file": Refusal(
        _applied_then(lambda u, f: (f / "001_a.sql").unlink(), ("001_a.sql", A)),
        "up",
        {},
        1,
        "migration '001_a' was applied",
    ),
    "a renamed applied file": Refusal(
        _applied_then(lambda u, f: (f / "001_a.sql").rename(f / "001_aa.sql"), ("001_a.sql", A)),
        "up",
        {"allow_missing": True},
        1,
        "migration '001_a' was renamed to '001_aa'",
    ),
    "a pending file older than the newest applied": Refusal(
        _applied_then(lambda u, f: write(f, "001_a.sql", A), ("002_b.sql", B)),
        "up",
        {},
        1,
        "migration '001_a' is pending but sorts before version 2",
    ),
    "a dirty row": Refusal(
        _applied_then(
            lambda u, f: query(u, "UPDATE schema_migrations SET state = 'dirty', success = false"),
            ("001_a.sql", A),
        ),
        "up",
        {"to": 1},
        1,
        "migration '001_a' ran outside a transaction and did not finish",
    ),
    "tables but no ledger": Refusal(_built_by_hand, "up", {}, 1, "run 'dbledger baseline 1'"),
    "down without a down section": Refusal(
        _applied_then(_nothing, ("001_a.sql", "CREATE TABLE a (id INTEGER);\n")),
        "down",
        {},
        1,
        "has no down section",
    ),
    "down with COMMIT in the down section": Refusal(
        _applied_then(
            lambda u, f: None,
            (
                "001_a.sql",
                "-- migrate:up\nCREATE TABLE a (id INTEGER);\n-- migrate:down\nDROP TABLE a;\nCOMMIT;\n",
            ),
        ),
        "down",
        {},
        2,
        "line 5: COMMIT would end the transaction",
    ),
    "down --steps 0": Refusal(
        _applied_then(_nothing, ("001_a.sql", A)), "down", {"steps": 0}, 2, "--steps must be 1 or more"
    ),
    "down --to a version that is not applied": Refusal(
        _applied_then(_nothing, ("001_a.sql", A)), "down", {"to": 5}, 2, "no applied migration has version 5"
    ),
}


def refused(call: Callable[[], object]) -> DbledgerError:
    with pytest.raises(DbledgerError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_dry_run_refuses_exactly_what_its_command_refuses(
    db_url: str, migrations_dir: Path, case: Refusal
) -> None:
    if case.postgres_only and not is_pg(db_url):
        pytest.skip("PostgreSQL's statements")
    case.arrange(db_url, migrations_dir)
    before = state(db_url)
    if case.command == "up":
        dry = refused(lambda: dbledger.api.plan_migrate(db_url, migrations_dir, **case.options))
        assert state(db_url) == before
        real = refused(lambda: dbledger.migrate(db_url, migrations_dir, **case.options))
    else:
        dry = refused(lambda: dbledger.api.plan_down(db_url, migrations_dir, **case.options))
        assert state(db_url) == before
        real = refused(lambda: dbledger.down(db_url, migrations_dir, **case.options))

    assert real.to_dict() == dry.to_dict()
    assert real.exit_code == case.exit_code
    assert case.fragment in real.message
    assert state(db_url) == before  # nothing ran, nothing was recorded, no ledger was created


def test_the_command_line_gives_both_the_same_answer(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", A)
    write(migrations_dir, "002_b.sql", "CREATE TABLE b (id INTEGER);\nCOMMIT;\n")
    args = ("--database-url", db_url, "--dir", str(migrations_dir))

    dry = run_cli(*args, "up", "--dry-run", "--json", cwd=migrations_dir.parent)
    real = run_cli(*args, "up", "--json", cwd=migrations_dir.parent)

    assert dry.returncode == real.returncode == 2
    assert json.loads(dry.stdout) == json.loads(real.stdout)
    assert "COMMIT would end the transaction" in real.stderr
    assert not table_exists(db_url, "a")  # 001 was not applied before 002 was refused
    assert not table_exists(db_url, "schema_migrations")
