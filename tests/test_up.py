"""The `up`, `status` and `verify` contracts, through the Python API and through the command line,
against real PostgreSQL and real SQLite databases.

Every test observes results from the outside: the rows of ``schema_migrations``, which tables
exist, exit codes, what reaches stdout and stderr, and the JSON documents.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import dbledger
from tests.helpers import Result, query, run_cli, server_version, table_exists, write

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
HISTORY_COLUMNS = ["id", "action", "migration_name", "checksum", "error_message", "detail"]

ITEMS = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);\n"
ITEMS_PRICE = "ALTER TABLE items ADD COLUMN price integer;\n"
TAGS = "CREATE TABLE tags (id integer PRIMARY KEY);\n"
TAGS_LABEL = "ALTER TABLE tags ADD COLUMN label text;\n"
NOTES = "CREATE TABLE notes (id integer PRIMARY KEY);\n"

# Fails halfway: the table is created and filled, then the fourth line names a missing column.
HALF_DONE = """\
-- migrate:up
CREATE TABLE half_done (id integer PRIMARY KEY, label text);
INSERT INTO half_done (id, label) VALUES (1, 'one; with a semicolon');
INSERT INTO half_done (id, nope) VALUES (2, 'two');
-- migrate:down
DROP TABLE half_done;
"""
FAILING_STATEMENT = "INSERT INTO half_done (id, nope) VALUES (2, 'two')"


# -- helpers ----------------------------------------------------------------------------------


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def sqlite_path(url: str) -> Path:
    return Path(url[len("sqlite:///") :])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ledger(url: str) -> list[Row]:
    rows = query(url, f"SELECT {', '.join(LEDGER_COLUMNS)} FROM schema_migrations ORDER BY id")
    return [dict(zip(LEDGER_COLUMNS, row, strict=True)) for row in rows]


def history(url: str) -> list[Row]:
    rows = query(url, f"SELECT {', '.join(HISTORY_COLUMNS)} FROM schema_migrations_history ORDER BY id")
    return [dict(zip(HISTORY_COLUMNS, row, strict=True)) for row in rows]


def names(rows: list[Row]) -> list[str]:
    return [row["migration_name"] for row in rows]


def snapshot(url: str) -> tuple[list[Row], list[Row]]:
    """Everything dbledger keeps: the ledger and its history, ([], []) when there is no ledger."""
    if not table_exists(url, "schema_migrations"):
        return [], []
    return ledger(url), history(url)


def cli(url: str, folder: Path, *args: str) -> Result:
    return run_cli(*args, "--database-url", url, "--dir", str(folder), cwd=folder.parent)


def run_up(via: str, url: str, folder: Path, *flags: str) -> tuple[int, str]:
    """``up`` through the API or the CLI: the exit code and the human message (stderr / exception)."""
    if via == "cli":
        result = cli(url, folder, "up", *flags)
        return result.returncode, result.stderr
    try:
        dbledger.migrate(
            url,
            folder,
            allow_out_of_order="--allow-out-of-order" in flags,
            allow_missing="--allow-missing" in flags,
            allow_existing_schema="--allow-existing-schema" in flags,
        )
    except dbledger.DbledgerError as exc:
        return exc.exit_code, exc.message
    return 0, ""


def run_verify(via: str, url: str, folder: Path, *flags: str) -> tuple[int, str]:
    if via == "cli":
        result = cli(url, folder, "verify", *flags)
        return result.returncode, result.output
    try:
        dbledger.verify(url, folder, strict="--strict" in flags)
    except dbledger.DbledgerError as exc:
        return exc.exit_code, exc.message
    return 0, ""


def one_json(result: Result) -> dict[str, Any]:
    """stdout must be exactly one JSON object (json.loads refuses trailing data)."""
    document = json.loads(result.stdout)
    assert isinstance(document, dict), result.stdout
    return document


def assert_json_failure(result: Result, exit_code: int) -> dict[str, Any]:
    assert result.returncode == exit_code, result.output
    document = one_json(result)
    assert document["ok"] is False
    error = document["error"]
    assert isinstance(error, dict)
    assert error["message"]
    assert error["exit_code"] == exit_code
    assert re.search(r"^dbledger( \w+)?: error: ", result.stderr, re.MULTILINE)  # still told on stderr
    return error


VIA = pytest.mark.parametrize("via", ["api", "cli"])


# -- applying in order ------------------------------------------------------------------------


def four_files(folder: Path) -> list[str]:
    """9 sorts before 10 (integers, not strings), and 10 only works after 9."""
    write(folder, "1_create_items.sql", ITEMS)
    write(folder, "2_add_items_price.sql", ITEMS_PRICE)
    write(folder, "10_add_tags_label.sql", TAGS_LABEL)
    write(folder, "9_create_tags.sql", TAGS)
    return ["1_create_items", "2_add_items_price", "9_create_tags", "10_add_tags_label"]


def test_api_applies_pending_in_version_order_then_has_nothing_to_do(
    db_url: str, migrations_dir: Path
) -> None:
    expected = four_files(migrations_dir)

    report = dbledger.migrate(db_url, migrations_dir)

    assert [a.name for a in report.applied] == expected
    assert [a.version.shown() for a in report.applied] == [1, 2, 9, 10]
    assert names(ledger(db_url)) == expected
    assert [h["migration_name"] for h in history(db_url) if h["action"] == "apply"] == expected
    assert query(db_url, "SELECT id, name, price FROM items") == []
    assert query(db_url, "SELECT id, label FROM tags") == []

    before = snapshot(db_url)
    again = dbledger.migrate(db_url, migrations_dir)
    assert again.applied == []
    assert snapshot(db_url) == before  # no new ledger row, no new history row


def test_cli_applies_pending_in_version_order_then_has_nothing_to_do(
    db_url: str, migrations_dir: Path
) -> None:
    expected = four_files(migrations_dir)

    first = cli(db_url, migrations_dir, "up")

    assert first.returncode == 0, first.output
    assert "applied 4 migration(s)" in first.stdout
    started = [line.split()[1] for line in first.stderr.splitlines() if line.startswith("applying ")]
    assert started == expected
    assert names(ledger(db_url)) == expected

    before = snapshot(db_url)
    second = cli(db_url, migrations_dir, "up")
    assert second.returncode == 0, second.output
    assert "nothing to do" in second.stdout
    assert "applying" not in second.stderr
    assert snapshot(db_url) == before


def test_to_stops_after_the_given_version(db_url: str, migrations_dir: Path) -> None:
    four_files(migrations_dir)

    report = dbledger.migrate(db_url, migrations_dir, to=2)
    assert [a.name for a in report.applied] == ["1_create_items", "2_add_items_price"]
    assert not table_exists(db_url, "tags")

    result = cli(db_url, migrations_dir, "up", "--to", "9")
    assert result.returncode == 0, result.output
    assert names(ledger(db_url)) == ["1_create_items", "2_add_items_price", "9_create_tags"]
    assert table_exists(db_url, "tags")
    assert query(
        db_url, "SELECT count(*) FROM schema_migrations WHERE migration_name = %s", ("10_add_tags_label",)
    ) == [(0,)]

    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert names(ledger(db_url))[-1] == "10_add_tags_label"


def test_to_a_version_without_a_file_is_a_usage_error(db_url: str, migrations_dir: Path) -> None:
    four_files(migrations_dir)

    result = cli(db_url, migrations_dir, "up", "--to", "5")
    assert result.returncode == 2, result.output
    assert "5" in result.stderr
    assert "--to" in result.stderr

    with pytest.raises(dbledger.UsageError) as caught:
        dbledger.migrate(db_url, migrations_dir, to=3)
    assert caught.value.exit_code == 2
    assert "3" in caught.value.message

    # Nothing ran: a typo in --to never means "everything".
    assert not table_exists(db_url, "items")
    assert not table_exists(db_url, "schema_migrations")


# -- the ledger's rows ------------------------------------------------------------------------


def test_ledger_rows_have_the_seed_columns_and_values(db_url: str, migrations_dir: Path) -> None:
    paths = [
        write(migrations_dir, "001_create_items.sql", ITEMS),
        write(migrations_dir, "002_add_items_price.sql", "-- migrate:up\n" + ITEMS_PRICE),
        write(
            migrations_dir, "003_create_tags.sql", f"-- migrate:up\n{TAGS}-- migrate:down\nDROP TABLE tags;\n"
        ),
    ]
    dbledger.migrate(db_url, migrations_dir)

    # The seed's verification queries, unchanged.
    rows = query(db_url, "SELECT migration_name, applied_at, success FROM schema_migrations ORDER BY id")
    assert [r[0] for r in rows] == [p.stem for p in paths]
    for _, applied_at, success in rows:
        assert applied_at is not None
        assert success == 1
    assert query(db_url, "SELECT migration_name FROM schema_migrations WHERE success = false") == []

    details = query(
        db_url,
        "SELECT migration_name, checksum, execution_time_ms, error_message"
        " FROM schema_migrations ORDER BY id",
    )
    for path, (name, checksum, ms, error) in zip(paths, details, strict=True):
        assert name == path.stem
        assert re.fullmatch(r"[0-9a-f]{64}", checksum)
        assert checksum == sha256(path)
        assert isinstance(ms, int)
        assert not isinstance(ms, bool)
        assert ms >= 0
        assert error is None


def test_postgres_ledger_column_types_match_the_seed(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    dbledger.migrate(pg_url, migrations_dir)

    types = dict(
        query(
            pg_url,
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'schema_migrations'",
        )
    )
    assert types["id"] == "integer"
    assert types["migration_name"] == "character varying"
    assert types["applied_at"] == "timestamp with time zone"
    assert types["checksum"] == "character varying"
    assert types["execution_time_ms"] == "integer"
    assert types["success"] == "boolean"
    assert types["error_message"] == "text"
    assert query(pg_url, "SELECT success FROM schema_migrations") == [(True,)]
    # migration_name is unique: a second row for the same migration is impossible.
    with pytest.raises(psycopg.errors.UniqueViolation):
        query(
            pg_url,
            "INSERT INTO schema_migrations (migration_name, version) VALUES ('001_create_items', '1')",
        )


# -- a migration that fails -------------------------------------------------------------------


def failing_setup(folder: Path) -> Path:
    write(folder, "001_create_items.sql", ITEMS)
    bad = write(folder, "002_half_done.sql", HALF_DONE)
    write(folder, "003_create_tags.sql", TAGS)
    return bad


def assert_failure_recorded(url: str, bad: Path) -> Row:
    rows = {row["migration_name"]: row for row in ledger(url)}
    assert set(rows) == {"001_create_items", "002_half_done"}  # 003 was not run
    assert rows["001_create_items"]["success"] == 1
    row = rows["002_half_done"]
    assert row["success"] == 0
    assert row["state"] == "failed"
    assert row["checksum"] == sha256(bad)
    error = row["error_message"]
    assert FAILING_STATEMENT in error
    assert "line 4" in error
    if is_pg(url):
        assert "42703" in error
        assert 'column "nope" of relation "half_done" does not exist' in error
    else:
        assert "table half_done has no column named nope" in error
    # Rolled back: no partial schema, and nothing after it ran.
    assert not table_exists(url, "half_done")
    assert not table_exists(url, "tags")
    assert table_exists(url, "items")
    return row


@VIA
def test_failed_migration_is_rolled_back_recorded_and_retried(
    via: str, db_url: str, migrations_dir: Path
) -> None:
    bad = failing_setup(migrations_dir)

    code, message = run_up(via, db_url, migrations_dir)

    assert code == 1
    assert "002_half_done" in message
    assert "line 4" in message
    assert "003_create_tags" not in message
    failed = assert_failure_recorded(db_url, bad)
    fail_events = [h for h in history(db_url) if h["action"] == "fail"]
    assert [h["migration_name"] for h in fail_events] == ["002_half_done"]

    # Without a fix, it fails the same way again and stays one row.
    code, _ = run_up(via, db_url, migrations_dir)
    assert code == 1
    assert assert_failure_recorded(db_url, bad)["id"] == failed["id"]

    write(migrations_dir, "002_half_done.sql", HALF_DONE.replace("(id, nope)", "(id, label)"))
    code, message = run_up(via, db_url, migrations_dir)

    assert code == 0, message
    rows = [row for row in ledger(db_url) if row["migration_name"] == "002_half_done"]
    assert len(rows) == 1
    assert rows[0]["id"] == failed["id"]
    assert rows[0]["success"] == 1
    assert rows[0]["state"] == "applied"
    assert rows[0]["error_message"] is None
    assert rows[0]["checksum"] == sha256(migrations_dir / "002_half_done.sql")
    assert query(db_url, "SELECT id, label FROM half_done ORDER BY id") == [
        (1, "one; with a semicolon"),
        (2, "two"),
    ]
    assert table_exists(db_url, "tags")


def test_api_failure_carries_the_database_details(db_url: str, migrations_dir: Path) -> None:
    failing_setup(migrations_dir)

    with pytest.raises(dbledger.MigrationFailed) as caught:
        dbledger.migrate(db_url, migrations_dir)

    failure = caught.value
    assert failure.exit_code == 1
    assert failure.migration == "002_half_done"
    assert failure.line == 4
    assert failure.statement is not None
    assert FAILING_STATEMENT in failure.statement
    assert failure.dirty is False
    if is_pg(db_url):
        assert failure.sqlstate == "42703"
    assert "002_half_done" in str(failure)
    assert "dbledger up" in failure.message  # what to do next


def test_cli_failure_message_names_the_migration_and_line(db_url: str, migrations_dir: Path) -> None:
    failing_setup(migrations_dir)

    result = cli(db_url, migrations_dir, "up")

    assert result.returncode == 1
    assert "migration '002_half_done' failed (line 4)" in result.stderr
    assert FAILING_STATEMENT in result.stderr
    assert "applied  001_create_items" in result.stderr
    assert "003_create_tags" not in result.output
    assert "Traceback" not in result.stderr


def test_postgres_failure_records_sqlstate_statement_and_line(pg_url: str, migrations_dir: Path) -> None:
    write(
        migrations_dir,
        "001_uuid_cast.sql",
        "-- migrate:up\n"
        "CREATE TABLE tokens (id uuid PRIMARY KEY);\n"
        "INSERT INTO tokens VALUES ('6f1c1b8e-1d8b-4e5a-9a57-3b8f7ad3c1de');\n"
        "\n"
        "SELECT 'x'::uuid;\n",
    )

    with pytest.raises(dbledger.MigrationFailed) as caught:
        dbledger.migrate(pg_url, migrations_dir)

    assert caught.value.sqlstate == "22P02"
    assert caught.value.line == 5
    [row] = ledger(pg_url)
    assert row["success"] is False
    assert row["state"] == "failed"
    assert row["error_message"].startswith("22P02: invalid input syntax for type uuid")
    assert "SELECT 'x'::uuid" in row["error_message"]
    assert "line 5" in row["error_message"]
    assert not table_exists(pg_url, "tokens")


# -- splitting: bodies with semicolons, functions, triggers ------------------------------------


def test_postgres_dollar_quoted_bodies_with_semicolons_run_whole(pg_url: str, migrations_dir: Path) -> None:
    # A SQL-standard body (BEGIN ATOMIC) came with PostgreSQL 14; before, the same in quotes.
    atomic = server_version(pg_url) >= 140000
    body = "BEGIN ATOMIC\n  SELECT i + 1;\nEND;" if atomic else "AS $$ SELECT i + 1; $$;"
    write(
        migrations_dir,
        "001_functions.sql",
        f"""\
CREATE FUNCTION greet(name text) RETURNS text LANGUAGE plpgsql AS $body$
DECLARE
  greeting text := 'hello; ';
BEGIN
  greeting := greeting || name || ';';
  RETURN greeting;
END;
$body$;
DO $$
BEGIN
  CREATE TABLE made_by_do (id integer);
  INSERT INTO made_by_do VALUES (1);
  INSERT INTO made_by_do VALUES (2);
END
$$;
CREATE FUNCTION add_one(i integer) RETURNS integer LANGUAGE sql
{body}
CREATE TABLE quotes (body text);
INSERT INTO quotes VALUES ('a;b'), ($q$c;d$q$); -- a comment; with a semicolon
/* a block comment; with a semicolon */
""",
    )

    dbledger.migrate(pg_url, migrations_dir)

    assert query(pg_url, "SELECT greet('x')") == [("hello; x;",)]
    assert query(pg_url, "SELECT id FROM made_by_do ORDER BY id") == [(1,), (2,)]
    assert query(pg_url, "SELECT add_one(41)") == [(42,)]
    assert query(pg_url, "SELECT body FROM quotes ORDER BY body") == [("a;b",), ("c;d",)]
    assert ledger(pg_url)[0]["success"] is True


def test_postgres_failure_inside_a_plpgsql_function_is_rolled_back(pg_url: str, migrations_dir: Path) -> None:
    write(
        migrations_dir,
        "001_audit.sql",
        """\
-- migrate:up
CREATE TABLE audit (id serial PRIMARY KEY, note text);
CREATE FUNCTION check_audit() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  n integer;
BEGIN
  INSERT INTO audit (note) VALUES ('a; b; c');
  SELECT count(*) INTO n FROM audit;
  IF n > 0 THEN
    RAISE EXCEPTION 'audit check failed: % row(s)', n;
  END IF;
  RETURN n;
END;
$$;
SELECT check_audit();
""",
    )
    write(migrations_dir, "002_create_tags.sql", TAGS)

    result = cli(pg_url, migrations_dir, "up")

    assert result.returncode == 1, result.output
    assert "001_audit" in result.stderr
    assert "line 15" in result.stderr
    assert "audit check failed: 1 row(s)" in result.stderr
    [row] = ledger(pg_url)
    assert row["state"] == "failed"
    assert row["error_message"].startswith("P0001: audit check failed: 1 row(s)")
    assert "SELECT check_audit()" in row["error_message"]
    assert "line 15" in row["error_message"]
    assert not table_exists(pg_url, "audit")
    assert query(pg_url, "SELECT count(*) FROM pg_proc WHERE proname = 'check_audit'") == [(0,)]
    assert not table_exists(pg_url, "tags")


def test_postgres_syntax_error_inside_a_function_body_points_at_its_line(
    pg_url: str, migrations_dir: Path
) -> None:
    write(
        migrations_dir,
        "001_broken_function.sql",
        """\
-- migrate:up
CREATE FUNCTION broken() RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1;
  RETURN nosuchthing(;
END;
$$;
""",
    )

    result = cli(pg_url, migrations_dir, "up")

    assert result.returncode == 1, result.output
    assert "migration '001_broken_function' failed (line 5)" in result.stderr
    assert "42601" in result.stderr
    assert ledger(pg_url)[0]["state"] == "failed"


def test_sqlite_trigger_bodies_run_whole(sqlite_url: str, migrations_dir: Path) -> None:
    write(
        migrations_dir,
        "001_accounts.sql",
        """\
CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
CREATE TABLE account_log (account_id INTEGER, note TEXT);
CREATE TRIGGER account_audit AFTER UPDATE ON account
BEGIN
  INSERT INTO account_log VALUES (new.id, 'old; ' || old.balance);
  INSERT INTO account_log VALUES (new.id, 'new; ' || new.balance);
END;
CREATE TRIGGER no_negative BEFORE UPDATE ON account WHEN new.balance < 0
BEGIN
  SELECT RAISE(ABORT, 'balance may not go negative');
END;
INSERT INTO account VALUES (1, 10);
UPDATE account SET balance = 20 WHERE id = 1;
""",
    )

    dbledger.migrate(sqlite_url, migrations_dir)

    assert query(sqlite_url, "SELECT account_id, note FROM account_log ORDER BY rowid") == [
        (1, "old; 10"),
        (1, "new; 20"),
    ]
    assert query(sqlite_url, "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name") == [
        ("account_audit",),
        ("no_negative",),
    ]


def test_sqlite_failure_raised_by_a_trigger_is_rolled_back(sqlite_url: str, migrations_dir: Path) -> None:
    write(
        migrations_dir,
        "001_accounts.sql",
        """\
CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
CREATE TRIGGER no_negative BEFORE UPDATE ON account WHEN new.balance < 0
BEGIN
  SELECT RAISE(ABORT, 'balance may not go negative');
END;
INSERT INTO account VALUES (1, 10);
UPDATE account SET balance = -5 WHERE id = 1;
""",
    )

    with pytest.raises(dbledger.MigrationFailed) as caught:
        dbledger.migrate(sqlite_url, migrations_dir)

    assert caught.value.line == 7
    [row] = ledger(sqlite_url)
    assert row["state"] == "failed"
    assert "balance may not go negative" in row["error_message"]
    assert "UPDATE account SET balance = -5 WHERE id = 1" in row["error_message"]
    assert "line 7" in row["error_message"]
    assert not table_exists(sqlite_url, "account")


# -- refusals ---------------------------------------------------------------------------------


@VIA
def test_up_refuses_when_an_applied_file_was_modified(via: str, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    dbledger.migrate(db_url, migrations_dir)
    write(migrations_dir, "001_create_items.sql", ITEMS.replace("name text", "name varchar(50)"))
    write(migrations_dir, "002_create_tags.sql", TAGS)
    before = snapshot(db_url)

    code, message = run_up(via, db_url, migrations_dir)

    assert code == 1
    assert "001_create_items" in message
    assert "was modified after it was applied" in message
    assert "dbledger repair" in message
    assert not table_exists(db_url, "tags")
    assert snapshot(db_url) == before


@VIA
def test_line_ending_and_bom_changes_are_not_modifications(
    via: str, db_url: str, migrations_dir: Path
) -> None:
    one = write(migrations_dir, "001_create_items.sql", "-- items\n" + ITEMS)
    dbledger.migrate(db_url, migrations_dir)
    recorded = ledger(db_url)[0]["checksum"]
    # A Windows checkout: CRLF line endings and a UTF-8 BOM.
    one.write_bytes(b"\xef\xbb\xbf" + ("-- items\n" + ITEMS).replace("\n", "\r\n").encode())
    write(migrations_dir, "002_create_tags.sql", TAGS)

    code, message = run_up(via, db_url, migrations_dir)

    assert code == 0, message
    assert table_exists(db_url, "tags")
    assert ledger(db_url)[0]["checksum"] == recorded
    assert run_verify(via, db_url, migrations_dir)[0] == 0


@VIA
def test_up_refuses_when_an_applied_file_is_missing(via: str, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    tags = write(migrations_dir, "002_create_tags.sql", TAGS)
    dbledger.migrate(db_url, migrations_dir)
    tags.unlink()
    write(migrations_dir, "003_create_notes.sql", NOTES)

    code, message = run_up(via, db_url, migrations_dir)

    assert code == 1
    assert "002_create_tags" in message
    assert "missing" in message
    assert "--allow-missing" in message
    assert not table_exists(db_url, "notes")

    code, message = run_up(via, db_url, migrations_dir, "--allow-missing")

    assert code == 0, message
    assert table_exists(db_url, "notes")
    assert names(ledger(db_url)) == ["001_create_items", "002_create_tags", "003_create_notes"]


@VIA
def test_up_refuses_a_new_file_that_sorts_before_the_newest_applied(
    via: str, db_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    write(migrations_dir, "003_create_tags.sql", TAGS)
    dbledger.migrate(db_url, migrations_dir)
    write(migrations_dir, "002_create_notes.sql", NOTES)
    write(migrations_dir, "004_add_tags_label.sql", TAGS_LABEL)

    code, message = run_up(via, db_url, migrations_dir)

    assert code == 1
    assert "002_create_notes" in message
    assert "--allow-out-of-order" in message
    assert not table_exists(db_url, "notes")
    assert query(db_url, "SELECT count(*) FROM schema_migrations") == [(2,)]

    code, message = run_up(via, db_url, migrations_dir, "--allow-out-of-order")

    assert code == 0, message
    assert table_exists(db_url, "notes")
    assert names(ledger(db_url)) == [
        "001_create_items",
        "003_create_tags",
        "002_create_notes",
        "004_add_tags_label",
    ]
    assert all(row["success"] == 1 for row in ledger(db_url))


# -- a database built before the ledger -------------------------------------------------------


def legacy_database(url: str, folder: Path) -> None:
    query(url, "CREATE TABLE legacy_orders (id integer PRIMARY KEY)")
    write(folder, "001_create_items.sql", ITEMS)
    write(folder, "002_create_tags.sql", TAGS)
    write(folder, "003_create_notes.sql", NOTES)


@VIA
def test_up_refuses_a_database_with_tables_but_no_ledger(via: str, db_url: str, migrations_dir: Path) -> None:
    legacy_database(db_url, migrations_dir)

    code, message = run_up(via, db_url, migrations_dir)

    assert code == 1
    assert "legacy_orders" in message
    assert "dbledger baseline" in message
    assert "--allow-existing-schema" in message
    assert not table_exists(db_url, "items")
    assert not table_exists(db_url, "schema_migrations")

    code, message = run_up(via, db_url, migrations_dir, "--allow-existing-schema")

    assert code == 0, message
    assert names(ledger(db_url)) == ["001_create_items", "002_create_tags", "003_create_notes"]
    assert table_exists(db_url, "items")
    assert table_exists(db_url, "legacy_orders")


@VIA
def test_baseline_then_up_applies_only_what_follows(via: str, db_url: str, migrations_dir: Path) -> None:
    legacy_database(db_url, migrations_dir)

    if via == "cli":
        result = cli(db_url, migrations_dir, "baseline", "2")
        assert result.returncode == 0, result.output
    else:
        assert dbledger.baseline(2, db_url, migrations_dir) == ["001_create_items", "002_create_tags"]
    code, message = run_up(via, db_url, migrations_dir)

    assert code == 0, message
    assert table_exists(db_url, "notes")
    assert not table_exists(db_url, "items")  # baselined, never run
    assert not table_exists(db_url, "tags")
    states = {row["migration_name"]: row["state"] for row in ledger(db_url)}
    assert states == {
        "001_create_items": "baseline",
        "002_create_tags": "baseline",
        "003_create_notes": "applied",
    }


# -- verify -----------------------------------------------------------------------------------


def make_clean(url: str, folder: Path) -> None:
    write(folder, "001_create_items.sql", ITEMS)
    write(folder, "002_create_tags.sql", TAGS)
    dbledger.migrate(url, folder)


def make_modified(url: str, folder: Path) -> None:
    make_clean(url, folder)
    write(folder, "002_create_tags.sql", TAGS + "-- an afterthought\n")


def make_missing(url: str, folder: Path) -> None:
    make_clean(url, folder)
    (folder / "002_create_tags.sql").unlink()


def make_out_of_order(url: str, folder: Path) -> None:
    write(folder, "001_create_items.sql", ITEMS)
    write(folder, "003_create_notes.sql", NOTES)
    dbledger.migrate(url, folder)
    write(folder, "002_create_tags.sql", TAGS)


def make_failed(url: str, folder: Path) -> None:
    write(folder, "001_create_items.sql", ITEMS)
    write(
        folder,
        "002_create_tags.sql",
        "CREATE TABLE tags (id integer PRIMARY KEY);\nINSERT INTO nope VALUES (1);\n",
    )
    with pytest.raises(dbledger.MigrationFailed):
        dbledger.migrate(url, folder)


BROKEN_STATES = {
    "modified": (make_modified, ["002_create_tags", "was modified after it was applied", "dbledger repair"]),
    "missing": (make_missing, ["002_create_tags", "missing", "--allow-missing"]),
    "out_of_order": (make_out_of_order, ["002_create_tags", "--allow-out-of-order"]),
    "failed": (make_failed, ["002_create_tags", "failed"]),
}


@VIA
def test_verify_passes_on_a_clean_ledger(via: str, db_url: str, migrations_dir: Path) -> None:
    make_clean(db_url, migrations_dir)
    before = snapshot(db_url)

    code, message = run_verify(via, db_url, migrations_dir)
    assert code == 0, message
    if via == "cli":
        assert "ok: 2 applied migration(s) match their files" in message
    assert run_verify(via, db_url, migrations_dir, "--strict")[0] == 0
    assert snapshot(db_url) == before


@VIA
@pytest.mark.parametrize("state", sorted(BROKEN_STATES))
def test_verify_fails_and_changes_nothing(state: str, via: str, db_url: str, migrations_dir: Path) -> None:
    make, expected = BROKEN_STATES[state]
    make(db_url, migrations_dir)
    before = snapshot(db_url)

    code, message = run_verify(via, db_url, migrations_dir)

    assert code == 1
    for part in expected:
        assert part in message
    assert snapshot(db_url) == before
    # Checking does not fix anything: the same answer a second time.
    assert run_verify(via, db_url, migrations_dir)[0] == 1


@VIA
def test_verify_strict_fails_when_something_is_pending(via: str, db_url: str, migrations_dir: Path) -> None:
    make_clean(db_url, migrations_dir)
    write(migrations_dir, "003_create_notes.sql", NOTES)
    before = snapshot(db_url)

    code, message = run_verify(via, db_url, migrations_dir)
    assert code == 0, message
    if via == "cli":
        assert "1 pending" in message

    code, message = run_verify(via, db_url, migrations_dir, "--strict")
    assert code == 1
    assert "003_create_notes" in message
    assert "pending" in message
    assert snapshot(db_url) == before
    assert not table_exists(db_url, "notes")


def assert_database_untouched(url: str) -> None:
    if is_pg(url):
        assert (
            query(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'") == []
        )
    else:
        assert not sqlite_path(url).exists()


@VIA
def test_verify_on_a_fresh_database_creates_nothing(via: str, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)

    assert run_verify(via, db_url, migrations_dir)[0] == 0
    assert run_verify(via, db_url, migrations_dir, "--strict")[0] == 1
    assert_database_untouched(db_url)


# -- status -----------------------------------------------------------------------------------


def test_status_on_a_fresh_database_creates_nothing(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    write(migrations_dir, "002_create_tags.sql", TAGS)

    result = dbledger.status(db_url, migrations_dir)
    assert [m.name for m in result.plan.pending] == ["001_create_items", "002_create_tags"]
    assert result.plan.applied == []
    assert_database_untouched(db_url)

    human = cli(db_url, migrations_dir, "status")
    assert human.returncode == 0, human.output
    assert "001_create_items" in human.stdout
    assert "002_create_tags" in human.stdout
    assert "pending" in human.stdout
    assert_database_untouched(db_url)

    machine = cli(db_url, migrations_dir, "status", "--json")
    assert machine.returncode == 0, machine.output
    document = one_json(machine)
    assert [p["name"] for p in document["pending"]] == ["001_create_items", "002_create_tags"]
    assert document["applied"] == []
    assert_database_untouched(db_url)


def test_status_json_reports_every_state(db_url: str, migrations_dir: Path) -> None:
    one = write(migrations_dir, "001_create_items.sql", ITEMS)
    two = write(migrations_dir, "002_create_tags.sql", TAGS)
    dbledger.migrate(db_url, migrations_dir)
    three = write(migrations_dir, "003_broken.sql", "INSERT INTO nope VALUES (1);\n")
    with pytest.raises(dbledger.MigrationFailed):
        dbledger.migrate(db_url, migrations_dir)
    write(migrations_dir, "004_create_notes.sql", NOTES)
    old_one = sha256(one)
    write(migrations_dir, "001_create_items.sql", ITEMS + "-- edited\n")
    two.unlink()

    result = cli(db_url, migrations_dir, "status", "--json")

    assert result.returncode == 0, result.output
    document = one_json(result)
    for key in ("database", "applied", "pending", "failed", "modified", "missing"):
        assert key in document
    for key in ("applied", "pending", "failed", "modified", "missing"):
        assert isinstance(document[key], list)
        assert all(isinstance(item, dict) and "name" in item for item in document[key])
    assert "***" in document["database"] or not is_pg(db_url)

    applied = {item["name"]: item for item in document["applied"]}
    assert set(applied) == {"001_create_items", "002_create_tags"}
    for item in applied.values():
        assert re.fullmatch(r"[0-9a-f]{64}", item["checksum"])
        assert item["applied_at"]
        assert isinstance(item["execution_time_ms"], int)
    assert {item["name"] for item in document["pending"]} == {"003_broken", "004_create_notes"}
    [failed] = document["failed"]
    assert failed["name"] == "003_broken"
    assert failed["checksum"] == sha256(three)
    assert "nope" in failed["error_message"]
    [modified] = document["modified"]
    assert modified["name"] == "001_create_items"
    assert modified["checksum"] == old_one
    [missing] = document["missing"]
    assert missing["name"] == "002_create_tags"
    assert missing["applied_at"]


def test_status_human_output_lists_states(db_url: str, migrations_dir: Path) -> None:
    make_failed(db_url, migrations_dir)
    write(migrations_dir, "003_create_notes.sql", NOTES)

    result = cli(db_url, migrations_dir, "status")

    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    assert any("001_create_items" in line and "applied" in line for line in lines)
    assert any("002_create_tags" in line and "failed" in line for line in lines)
    assert any("003_create_notes" in line and "pending" in line for line in lines)


# -- --json: one document on stdout, also on failure ------------------------------------------


def test_up_json_success_is_one_document(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)

    result = cli(db_url, migrations_dir, "up", "--json")

    assert result.returncode == 0, result.output
    document = one_json(result)
    assert document["ok"] is True
    assert [a["name"] for a in document["applied"]] == ["001_create_items"]
    assert "applying 001_create_items" in result.stderr  # progress goes to stderr

    again = one_json(cli(db_url, migrations_dir, "up", "--json"))
    assert again["ok"] is True
    assert again["applied"] == []


def test_up_json_migration_failure_is_one_document(db_url: str, migrations_dir: Path) -> None:
    failing_setup(migrations_dir)

    result = cli(db_url, migrations_dir, "up", "--json")

    error = assert_json_failure(result, 1)
    assert error["migration"] == "002_half_done"
    assert error["line"] == 4
    if is_pg(db_url):
        assert error["sqlstate"] == "42703"
    assert "002_half_done" in result.stderr


def test_up_json_refusal_is_one_document(db_url: str, migrations_dir: Path) -> None:
    make_modified(db_url, migrations_dir)

    result = cli(db_url, migrations_dir, "up", "--json")

    error = assert_json_failure(result, 1)
    assert "was modified after it was applied" in error["message"]


def test_up_json_usage_error_is_one_document(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)

    result = cli(db_url, migrations_dir, "up", "--json", "--to", "7")

    error = assert_json_failure(result, 2)
    assert "7" in error["message"]


def test_verify_json_is_one_document_on_success_and_failure(db_url: str, migrations_dir: Path) -> None:
    make_clean(db_url, migrations_dir)
    ok = cli(db_url, migrations_dir, "verify", "--json")
    assert ok.returncode == 0, ok.output
    assert one_json(ok)["ok"] is True

    write(migrations_dir, "002_create_tags.sql", TAGS + "-- changed\n")
    failed = cli(db_url, migrations_dir, "verify", "--json")
    error = assert_json_failure(failed, 1)
    assert "002_create_tags" in error["message"]


def test_status_json_malformed_file_is_one_document(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", "-- migrate:up transaction:perhaps\nSELECT 1;\n")

    result = cli(db_url, migrations_dir, "status", "--json")

    error = assert_json_failure(result, 2)
    assert "001_create_items.sql" in error["message"]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["up", "--json", "--to", "nine"], id="bad-option-value"),
        pytest.param(["up", "--json", "--no-such-option"], id="unknown-option"),
        pytest.param(["verify", "--json", "--strict=yes"], id="flag-with-value"),
    ],
)
def test_json_argument_errors_are_one_document(
    args: list[str], sqlite_url: str, migrations_dir: Path
) -> None:
    """The contract says --json prints one JSON document on stdout for every failure, and a script
    piping it into a JSON parser must not get an empty stdout for a mistyped option."""
    write(migrations_dir, "001_create_items.sql", ITEMS)

    result = run_cli(
        *args, "--database-url", sqlite_url, "--dir", str(migrations_dir), cwd=migrations_dir.parent
    )

    assert_json_failure(result, 2)
    assert not sqlite_path(sqlite_url).exists()


@pytest.fixture
def weak_pg_url(pg_url: str) -> Iterator[str]:
    """A login on the test database that may connect but not create tables in schema public."""
    role = f"weak_{uuid.uuid4().hex[:12]}"
    password = uuid.uuid4().hex
    query(pg_url, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    # Before PostgreSQL 15 every role may create in schema public.
    query(pg_url, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    conninfo = psycopg.conninfo.conninfo_to_dict(pg_url)
    url = (
        f"postgresql://{role}:{password}@{conninfo.get('host', '127.0.0.1')}:{conninfo.get('port', 5432)}"
        f"/{conninfo['dbname']}"
    )
    try:
        yield url
    finally:
        query(pg_url, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        query(pg_url, f"DROP OWNED BY {role}")
        query(pg_url, f"DROP ROLE {role}")


def test_database_refusing_the_work_is_a_clean_json_error(weak_pg_url: str, migrations_dir: Path) -> None:
    """A role without CREATE on schema public: the database refuses to create the ledger. That is
    "the database work failed" (exit 1), reported like any other error, never as a traceback."""
    write(migrations_dir, "001_create_items.sql", ITEMS)
    password = str(psycopg.conninfo.conninfo_to_dict(weak_pg_url)["password"])

    result = cli(weak_pg_url, migrations_dir, "up", "--json")

    assert "Traceback" not in result.stderr
    error = assert_json_failure(result, 1)
    assert "permission denied" in error["message"]
    assert password not in result.output

    with pytest.raises(dbledger.DbledgerError) as caught:
        dbledger.migrate(weak_pg_url, migrations_dir)
    assert "permission denied" in caught.value.message


def test_cli_never_prints_the_password(pg_url: str, migrations_dir: Path) -> None:
    failing_setup(migrations_dir)
    password = psycopg.conninfo.conninfo_to_dict(pg_url)["password"]
    assert isinstance(password, str)
    assert password

    results = [
        cli(pg_url, migrations_dir, command, *flags)
        for command in ("up", "status", "verify")
        for flags in ((), ("--json",))
    ]

    for result in results:
        assert password not in result.output
