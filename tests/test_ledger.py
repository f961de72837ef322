"""The ledger as an audit trail: the history table, `repair`, `baseline` and `transaction:false`
migrations, against real PostgreSQL and real SQLite databases.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import dbledger
from dbledger.contracts import Version
from tests.helpers import Result, query, run_cli, table_exists, write

Row = dict[str, Any]

LEDGER_COLUMNS = [
    "id",
    "migration_name",
    "applied_at",
    "checksum",
    "execution_time_ms",
    "success",
    "error_message",
    "state",
]
HISTORY_COLUMNS = [
    "id",
    "at",
    "action",
    "migration_name",
    "checksum",
    "execution_time_ms",
    "error_message",
    "detail",
    "actor",
]

ITEMS = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);\n"
TAGS = "CREATE TABLE tags (id integer PRIMARY KEY);\n"
NOTES = "CREATE TABLE notes (id integer PRIMARY KEY);\n"
BROKEN_TAGS = "CREATE TABLE tags (id integer PRIMARY KEY);\nINSERT INTO nope VALUES (1);\n"


# -- helpers ----------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ledger(url: str) -> list[Row]:
    rows = query(url, f"SELECT {', '.join(LEDGER_COLUMNS)} FROM schema_migrations ORDER BY id")
    return [dict(zip(LEDGER_COLUMNS, row, strict=True)) for row in rows]


def ledger_row(url: str, name: str) -> Row | None:
    found = [row for row in ledger(url) if row["migration_name"] == name]
    assert len(found) <= 1
    return found[0] if found else None


def history(url: str) -> list[Row]:
    """The history rows about migrations (the ledger's own 'create' row is tested on its own)."""
    rows = query(
        url,
        f"SELECT {', '.join(HISTORY_COLUMNS)} FROM schema_migrations_history"
        " WHERE action <> 'create' ORDER BY id",
    )
    return [dict(zip(HISTORY_COLUMNS, row, strict=True)) for row in rows]


def actions(url: str) -> list[tuple[str, str]]:
    return [(h["action"], h["migration_name"]) for h in history(url)]


def snapshot(url: str) -> tuple[list[Row], list[Row]]:
    if not table_exists(url, "schema_migrations"):
        return [], []
    return ledger(url), history(url)


def cli(url: str, folder: Path, *args: str) -> Result:
    return run_cli(*args, "--database-url", url, "--dir", str(folder), cwd=folder.parent)


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def timestamp(value: object) -> datetime:
    """A ledger timestamp: a datetime on PostgreSQL, ISO 8601 text on SQLite."""
    if isinstance(value, datetime):
        return value
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


# -- history ----------------------------------------------------------------------------------


def test_history_has_one_row_per_action(db_url: str, migrations_dir: Path) -> None:
    one = write(migrations_dir, "001_create_items.sql", ITEMS)
    two = write(migrations_dir, "002_create_tags.sql", TAGS)
    three = write(migrations_dir, "003_concurrent.sql", f"-- migrate:up transaction:false\n{NOTES}")
    four = write(migrations_dir, "004_broken.sql", "INSERT INTO nope VALUES (1);\n")

    assert dbledger.baseline(1, db_url, migrations_dir) == ["001_create_items"]
    with pytest.raises(dbledger.MigrationFailed):
        dbledger.migrate(db_url, migrations_dir)
    repaired = dbledger.repair(db_url, migrations_dir)
    assert [r.name for r in repaired] == ["004_broken"]

    assert actions(db_url) == [
        ("baseline", "001_create_items"),
        ("apply", "002_create_tags"),
        ("start", "003_concurrent"),
        ("apply", "003_concurrent"),
        ("fail", "004_broken"),
        ("repair", "004_broken"),
    ]
    rows = history(db_url)
    checksums = {p.stem: sha256(p) for p in (one, two, three, four)}
    for row in rows:
        assert row["checksum"] == checksums[row["migration_name"]]
        assert isinstance(row["actor"], str)
        assert row["actor"]
        timestamp(row["at"])
    at = [timestamp(row["at"]) for row in rows]
    assert at == sorted(at)
    fail = rows[4]
    assert "nope" in fail["error_message"]
    apply = rows[1]
    assert isinstance(apply["execution_time_ms"], int)
    assert apply["execution_time_ms"] >= 0


def test_history_is_append_only_across_a_retry(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    write(migrations_dir, "002_create_tags.sql", BROKEN_TAGS)
    with pytest.raises(dbledger.MigrationFailed):
        dbledger.migrate(db_url, migrations_dir)
    after_first_failure = history(db_url)
    with pytest.raises(dbledger.MigrationFailed):
        dbledger.migrate(db_url, migrations_dir)
    after_second_failure = history(db_url)

    write(migrations_dir, "002_create_tags.sql", TAGS)
    dbledger.migrate(db_url, migrations_dir)
    final = history(db_url)

    # Earlier rows are never rewritten: each snapshot is a prefix of the next.
    assert after_second_failure[: len(after_first_failure)] == after_first_failure
    assert final[: len(after_second_failure)] == after_second_failure
    assert [(h["action"], h["migration_name"]) for h in final] == [
        ("apply", "001_create_items"),
        ("fail", "002_create_tags"),
        ("fail", "002_create_tags"),
        ("apply", "002_create_tags"),
    ]
    # The ledger, by contrast, holds the current state: one row per migration.
    assert [(r["migration_name"], r["state"]) for r in ledger(db_url)] == [
        ("001_create_items", "applied"),
        ("002_create_tags", "applied"),
    ]
    # The failed attempt's checksum differs from the fixed file's, and both are on record.
    assert final[1]["checksum"] != final[3]["checksum"]
    assert final[3]["checksum"] == sha256(migrations_dir / "002_create_tags.sql")


# -- repair -----------------------------------------------------------------------------------


def test_repair_accepts_a_modified_checksum(db_url: str, migrations_dir: Path) -> None:
    one = write(migrations_dir, "001_create_items.sql", ITEMS)
    dbledger.migrate(db_url, migrations_dir)
    before = ledger_row(db_url, "001_create_items")
    assert before is not None
    old = before["checksum"]
    write(migrations_dir, "001_create_items.sql", "-- items: one row per thing we sell\n" + ITEMS)
    new = sha256(one)
    assert cli(db_url, migrations_dir, "up").returncode == 1

    result = cli(db_url, migrations_dir, "repair")

    assert result.returncode == 0, result.output
    assert "001_create_items" in result.stdout
    assert "checksum accepted" in result.stdout
    after = ledger_row(db_url, "001_create_items")
    assert after is not None
    assert after["checksum"] == new
    assert after["applied_at"] == before["applied_at"]
    assert after["execution_time_ms"] == before["execution_time_ms"]
    assert after["id"] == before["id"]
    assert after["state"] == "applied"
    assert after["success"] == 1
    last = history(db_url)[-1]
    assert last["action"] == "repair"
    assert last["migration_name"] == "001_create_items"
    assert f"checksum {old} -> {new}" in last["detail"]

    assert cli(db_url, migrations_dir, "verify").returncode == 0
    up = cli(db_url, migrations_dir, "up")
    assert up.returncode == 0, up.output
    assert "nothing to do" in up.stdout


def test_repair_removes_a_failed_row_so_up_runs_it_again(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    write(migrations_dir, "002_create_tags.sql", BROKEN_TAGS)
    with pytest.raises(dbledger.MigrationFailed):
        dbledger.migrate(db_url, migrations_dir)
    failed = ledger_row(db_url, "002_create_tags")
    assert failed is not None
    assert failed["state"] == "failed"

    result = cli(db_url, migrations_dir, "repair")

    assert result.returncode == 0, result.output
    assert "002_create_tags" in result.stdout
    assert ledger_row(db_url, "002_create_tags") is None
    last = history(db_url)[-1]
    assert (last["action"], last["migration_name"]) == ("repair", "002_create_tags")
    assert "failed" in last["detail"]
    assert "nope" in last["detail"]  # what the removed row said stays on record
    status = dbledger.status(db_url, migrations_dir)
    assert status.plan.failed == []
    assert [m.name for m in status.plan.pending] == ["002_create_tags"]

    write(migrations_dir, "002_create_tags.sql", TAGS)
    assert cli(db_url, migrations_dir, "up").returncode == 0
    row = ledger_row(db_url, "002_create_tags")
    assert row is not None
    assert (row["state"], row["success"]) == ("applied", 1)
    assert table_exists(db_url, "tags")


def test_repair_forgets_a_missing_row_only_when_asked(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    tags = write(migrations_dir, "002_create_tags.sql", TAGS)
    dbledger.migrate(db_url, migrations_dir)
    tags.unlink()
    write(migrations_dir, "003_create_notes.sql", NOTES)
    assert cli(db_url, migrations_dir, "up").returncode == 1
    # Kept by default: restoring the file later would otherwise make it run a second time.
    assert dbledger.repair(db_url, migrations_dir) == []
    assert cli(db_url, migrations_dir, "up").returncode == 1

    repaired = dbledger.repair(db_url, migrations_dir, forget_missing=True)

    assert [(r.name, r.action) for r in repaired] == [("002_create_tags", "missing record removed")]
    assert [r["migration_name"] for r in ledger(db_url)] == ["001_create_items"]
    assert history(db_url)[-1]["action"] == "repair"
    assert cli(db_url, migrations_dir, "verify").returncode == 0
    up = cli(db_url, migrations_dir, "up")
    assert up.returncode == 0, up.output
    assert table_exists(db_url, "notes")


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_repair_on_a_clean_ledger_changes_nothing(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    write(migrations_dir, "002_create_tags.sql", TAGS)
    dbledger.migrate(db_url, migrations_dir)
    before = snapshot(db_url)

    result = cli(db_url, migrations_dir, "repair", *(["--json"] if as_json else []))

    assert result.returncode == 0, result.output
    if as_json:
        document = json.loads(result.stdout)
        assert document["ok"] is True
        assert document["repaired"] == []
    else:
        assert "nothing to repair" in result.stdout
    assert snapshot(db_url) == before
    assert dbledger.repair(db_url, migrations_dir) == []
    assert snapshot(db_url) == before


def test_repair_on_a_fresh_database_creates_nothing(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)

    result = cli(db_url, migrations_dir, "repair")

    assert result.returncode == 0, result.output
    assert "nothing to repair" in result.stdout
    if is_pg(db_url):
        assert not table_exists(db_url, "schema_migrations")
    else:
        assert not Path(db_url[len("sqlite:///") :]).exists()


# -- baseline ---------------------------------------------------------------------------------


def side_effect_files(folder: Path) -> list[Path]:
    """Each file leaves a mark: a table named after it, so running it is visible."""
    return [
        write(folder, "001_first.sql", "CREATE TABLE ran_first (id integer);\n"),
        write(folder, "002_second.sql", "CREATE TABLE ran_second (id integer);\n"),
        write(folder, "003_third.sql", "CREATE TABLE ran_third (id integer);\n"),
    ]


def test_baseline_marks_without_running(db_url: str, migrations_dir: Path) -> None:
    paths = side_effect_files(migrations_dir)

    result = cli(db_url, migrations_dir, "baseline", "2")

    assert result.returncode == 0, result.output
    assert "001_first" in result.stdout
    assert "002_second" in result.stdout
    assert "003_third" not in result.stdout
    assert not table_exists(db_url, "ran_first")
    assert not table_exists(db_url, "ran_second")
    rows = ledger(db_url)
    assert [(r["migration_name"], r["state"], r["success"]) for r in rows] == [
        ("001_first", "baseline", 1),
        ("002_second", "baseline", 1),
    ]
    assert [r["checksum"] for r in rows] == [sha256(paths[0]), sha256(paths[1])]
    assert all(r["applied_at"] is not None for r in rows)
    assert actions(db_url) == [("baseline", "001_first"), ("baseline", "002_second")]
    # The seed's query sees them as applied.
    assert query(db_url, "SELECT count(*) FROM schema_migrations WHERE success = true") == [(2,)]

    assert dbledger.verify(db_url, migrations_dir).plan.current_version == Version((2,))
    report = dbledger.migrate(db_url, migrations_dir)
    assert [a.name for a in report.applied] == ["003_third"]
    assert table_exists(db_url, "ran_third")
    assert not table_exists(db_url, "ran_first")


def test_baseline_skips_migrations_already_applied(db_url: str, migrations_dir: Path) -> None:
    side_effect_files(migrations_dir)
    dbledger.migrate(db_url, migrations_dir, to=1)
    applied = ledger_row(db_url, "001_first")
    assert applied is not None

    marked = dbledger.baseline(3, db_url, migrations_dir)

    assert marked == ["002_second", "003_third"]
    assert ledger_row(db_url, "001_first") == applied  # untouched: state, applied_at, timing
    assert actions(db_url) == [
        ("apply", "001_first"),
        ("baseline", "002_second"),
        ("baseline", "003_third"),
    ]
    assert not table_exists(db_url, "ran_second")
    before = snapshot(db_url)
    assert dbledger.baseline(3, db_url, migrations_dir) == []
    assert snapshot(db_url) == before


@pytest.mark.parametrize("version", ["2", "4", "0"], ids=["gap", "after-newest", "zero"])
def test_baseline_rejects_a_version_that_is_no_file(version: str, db_url: str, migrations_dir: Path) -> None:
    side_effect_files(migrations_dir)
    (migrations_dir / "002_second.sql").unlink()

    result = cli(db_url, migrations_dir, "baseline", version)

    assert result.returncode == 2, result.output
    assert f"version {version}" in result.stderr
    assert snapshot(db_url) == ([], [])
    assert not table_exists(db_url, "ran_first")

    with pytest.raises(dbledger.UsageError):
        dbledger.baseline(int(version), db_url, migrations_dir)
    assert snapshot(db_url) == ([], [])


def test_baseline_unknown_version_message_speaks_of_baseline(sqlite_url: str, migrations_dir: Path) -> None:
    """The message must point at what the user typed ('baseline 4'), not at another command's option."""
    side_effect_files(migrations_dir)

    result = cli(sqlite_url, migrations_dir, "baseline", "4")

    assert result.returncode == 2
    assert "version 4" in result.stderr
    assert "baseline" in result.stderr.split("dbledger: error:", 1)[1]
    assert "--to" not in result.stderr


# -- transaction:false ------------------------------------------------------------------------


ITEMS_WITH_ROWS = """\
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO items VALUES (1, 'apple'), (2, 'pear'), (3, 'apple');
"""


def index_validity(url: str, index: str) -> list[tuple[Any, ...]]:
    return query(
        url,
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
        (index,),
    )


def test_postgres_create_index_concurrently(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS_WITH_ROWS)
    write(
        migrations_dir,
        "002_index_items_name.sql",
        "-- migrate:up transaction:false\n"
        "CREATE INDEX CONCURRENTLY items_name_idx ON items (name);\n"
        "-- migrate:down transaction:false\n"
        "DROP INDEX CONCURRENTLY items_name_idx;\n",
    )

    result = cli(pg_url, migrations_dir, "up")

    assert result.returncode == 0, result.output
    assert index_validity(pg_url, "items_name_idx") == [(True,)]
    row = ledger_row(pg_url, "002_index_items_name")
    assert row is not None
    assert (row["state"], row["success"], row["error_message"]) == ("applied", True, None)
    assert actions(pg_url)[-2:] == [("start", "002_index_items_name"), ("apply", "002_index_items_name")]


def test_postgres_failed_concurrent_index_is_dirty_until_repaired(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS_WITH_ROWS)
    write(
        migrations_dir,
        "002_unique_item_name.sql",
        "-- migrate:up transaction:false\nCREATE UNIQUE INDEX CONCURRENTLY items_name_key ON items (name);\n",
    )
    write(migrations_dir, "003_create_tags.sql", TAGS)

    failed = cli(pg_url, migrations_dir, "up")

    assert failed.returncode == 1
    assert "002_unique_item_name" in failed.stderr
    assert "dbledger repair" in failed.stderr
    # The partial work PostgreSQL leaves behind: an INVALID index.
    assert index_validity(pg_url, "items_name_key") == [(False,)]
    row = ledger_row(pg_url, "002_unique_item_name")
    assert row is not None
    assert (row["state"], row["success"]) == ("dirty", False)
    assert row["error_message"].startswith("23505")
    assert ledger_row(pg_url, "003_create_tags") is None
    assert not table_exists(pg_url, "tags")

    refused = cli(pg_url, migrations_dir, "up")
    assert refused.returncode == 1
    assert "002_unique_item_name" in refused.stderr
    assert "partial work" in refused.stderr
    assert "dbledger repair" in refused.stderr
    assert not table_exists(pg_url, "tags")
    assert cli(pg_url, migrations_dir, "verify").returncode == 1

    # The operator cleans up by hand, then tells dbledger.
    query(pg_url, "DROP INDEX items_name_key")
    query(pg_url, "DELETE FROM items WHERE id = 3")
    repaired = cli(pg_url, migrations_dir, "repair")
    assert repaired.returncode == 0, repaired.output
    assert "002_unique_item_name" in repaired.stdout
    assert ledger_row(pg_url, "002_unique_item_name") is None

    up = cli(pg_url, migrations_dir, "up")
    assert up.returncode == 0, up.output
    assert index_validity(pg_url, "items_name_key") == [(True,)]
    row = ledger_row(pg_url, "002_unique_item_name")
    assert row is not None
    assert (row["state"], row["success"]) == ("applied", True)
    assert table_exists(pg_url, "tags")
    assert [a for a, name in actions(pg_url) if name == "002_unique_item_name"] == [
        "start",
        "fail",
        "repair",
        "start",
        "apply",
    ]


def test_failed_transaction_false_migration_is_dirty_until_repaired(
    db_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    outside = write(
        migrations_dir,
        "002_outside.sql",
        "-- migrate:up transaction:false\n"
        "CREATE TABLE outside_done (id integer);\n"
        "INSERT INTO nope VALUES (1);\n",
    )
    write(migrations_dir, "003_create_tags.sql", TAGS)

    with pytest.raises(dbledger.MigrationFailed) as caught:
        dbledger.migrate(db_url, migrations_dir)

    assert caught.value.dirty is True
    assert caught.value.migration == "002_outside"
    assert caught.value.line == 3
    assert "dbledger repair" in caught.value.message
    # Outside a transaction, what ran before the failure stays: that is why the row is dirty.
    assert table_exists(db_url, "outside_done")
    row = ledger_row(db_url, "002_outside")
    assert row is not None
    assert (row["state"], row["success"]) == ("dirty", 0)
    assert row["checksum"] == sha256(outside)
    assert "nope" in row["error_message"]
    assert not table_exists(db_url, "tags")

    refused = cli(db_url, migrations_dir, "up")
    assert refused.returncode == 1
    assert "002_outside" in refused.stderr
    assert "partial work" in refused.stderr
    assert "dbledger repair" in refused.stderr
    with pytest.raises(dbledger.LedgerStateError):
        dbledger.migrate(db_url, migrations_dir)
    assert not table_exists(db_url, "tags")
    assert dbledger.status(db_url, migrations_dir).plan.dirty[0].name == "002_outside"

    query(db_url, "DROP TABLE outside_done")
    repaired = dbledger.repair(db_url, migrations_dir)
    assert [(r.name, r.action) for r in repaired] == [("002_outside", "dirty record removed")]
    write(
        migrations_dir,
        "002_outside.sql",
        "-- migrate:up transaction:false\nCREATE TABLE outside_done (id integer);\n",
    )

    report = dbledger.migrate(db_url, migrations_dir)
    assert [a.name for a in report.applied] == ["002_outside", "003_create_tags"]
    assert table_exists(db_url, "outside_done")
    row = ledger_row(db_url, "002_outside")
    assert row is not None
    assert (row["state"], row["success"]) == ("applied", 1)


def test_transaction_false_status_json_shows_dirty(db_url: str, migrations_dir: Path) -> None:
    write(
        migrations_dir,
        "001_outside.sql",
        "-- migrate:up transaction:false\nCREATE TABLE done_part (id integer);\n"
        "INSERT INTO nope VALUES (1);\n",
    )
    with pytest.raises(dbledger.MigrationFailed):
        dbledger.migrate(db_url, migrations_dir)

    result = cli(db_url, migrations_dir, "status", "--json")

    assert result.returncode == 0, result.output
    document = json.loads(result.stdout)
    [dirty] = document["dirty"]
    assert dirty["name"] == "001_outside"
    assert re.search(r"nope", dirty["error_message"])
    assert any("dbledger repair" in problem for problem in document["problems"])
