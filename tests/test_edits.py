"""An applied file that changed: cosmetically (white space, comments, keyword case) or semantically
(other statements), told apart by the statements' parse trees; how ``verify``, ``status``, ``up``,
``down`` and ``repair`` treat each; the ledger's copy of each file and its checksum's algorithm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dbledger
from dbledger.ledger import LEDGER_VERSION
from tests.helpers import Result, query, run_cli, write

# The seed's audit trigger, reduced: which user a change is recorded for.
AUDIT = """-- migrate:up
CREATE TABLE connections (id TEXT PRIMARY KEY, changed_by TEXT);
CREATE FUNCTION log_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.changed_by := coalesce(current_setting('app.user', true), 'anon');
  RETURN NEW;
END $$;
CREATE TRIGGER connections_audit BEFORE INSERT ON connections
  FOR EACH ROW EXECUTE FUNCTION log_change();

-- migrate:down
DROP TABLE connections;
DROP FUNCTION log_change();
"""

ITEMS = """-- migrate:up
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
-- migrate:down
DROP TABLE items;
"""


def cli(url: str, folder: Path, *args: str) -> Result:
    return run_cli(*args, "--database-url", url, "--dir", str(folder), cwd=folder.parent)


def repair_details(url: str) -> list[str]:
    return [
        row[0] for row in query(url, "SELECT detail FROM schema_migrations_history WHERE action = 'repair'")
    ]


def recorded_checksum(url: str, name: str) -> str:
    return str(query(url, "SELECT checksum FROM schema_migrations WHERE migration_name = %s", (name,))[0][0])


def test_a_changed_trigger_function_is_a_semantic_change_and_needs_accept(
    pg_url: str, migrations_dir: Path
) -> None:
    """The found case: 'anon' -> 'nobody' in an applied trigger function."""
    path = write(migrations_dir, "004_audit.sql", AUDIT)
    dbledger.migrate(pg_url, migrations_dir)
    applied = recorded_checksum(pg_url, "004_audit")
    path.write_text(AUDIT.replace("'anon'", "'nobody'"), encoding="utf-8")

    verified = cli(pg_url, migrations_dir, "verify")
    assert verified.returncode == 1
    assert (
        "migration '004_audit' was modified after it was applied, and what it does changed" in verified.stderr
    )
    assert "the up section's statements changed" in verified.stderr
    assert "-  NEW.changed_by := coalesce(current_setting('app.user', true), 'anon');" in verified.stderr
    assert "+  NEW.changed_by := coalesce(current_setting('app.user', true), 'nobody');" in verified.stderr
    assert "dbledger repair --accept 004_audit" in verified.stderr

    status = cli(pg_url, migrations_dir, "status", "--json")
    modified = json.loads(status.stdout)["modified"]
    assert [(m["name"], m["change"], m["checksum_algorithm"]) for m in modified] == [
        ("004_audit", "semantic", "sha256")
    ]
    assert any("'nobody'" in line for line in modified[0]["diff"])

    refused = cli(pg_url, migrations_dir, "repair")
    assert refused.returncode == 1
    assert "dbledger repair --accept 004_audit" in refused.stderr
    assert recorded_checksum(pg_url, "004_audit") == applied  # nothing changed
    assert repair_details(pg_url) == []

    accepted = cli(pg_url, migrations_dir, "repair", "--accept", "004_audit")
    assert accepted.returncode == 0, accepted.output
    assert recorded_checksum(pg_url, "004_audit") != applied
    [detail] = repair_details(pg_url)
    assert detail.startswith("semantic change, accepted with --accept: the up section's statements changed")
    assert cli(pg_url, migrations_dir, "verify").returncode == 0


def test_after_a_semantic_change_is_accepted_drift_replays_the_files(
    pg_url: str, migrations_dir: Path
) -> None:
    """The recorded schema came from the old function: drift must not trust it any more."""
    path = write(migrations_dir, "004_audit.sql", AUDIT)
    dbledger.migrate(pg_url, migrations_dir)
    path.write_text(AUDIT.replace("'anon'", "'nobody'"), encoding="utf-8")
    assert cli(pg_url, migrations_dir, "repair", "--accept", "004_audit").returncode == 0

    found = cli(pg_url, migrations_dir, "drift", "--json")

    assert found.returncode == 1, found.output
    document = json.loads(found.stdout)
    assert document["expected_from"] == "replayed from the applied migrations"
    assert any("log_change" in json.dumps(d) for d in document["differences"])


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda text: "-- items: one row per thing we sell\n" + text, id="comment"),
        pytest.param(lambda text: text.replace("CREATE TABLE", "create  table"), id="keyword-case"),
        pytest.param(lambda text: text.replace(", name", ",\n    name"), id="line-break"),
    ],
)
def test_a_cosmetic_change_is_named_so_and_repair_accepts_it(
    db_url: str, migrations_dir: Path, edit: object
) -> None:
    path = write(migrations_dir, "001_items.sql", ITEMS)
    dbledger.migrate(db_url, migrations_dir)
    assert callable(edit)
    path.write_text(edit(ITEMS), encoding="utf-8")

    up = cli(db_url, migrations_dir, "up")
    assert up.returncode == 1
    assert "migration '001_items' was modified after it was applied, cosmetically" in up.stderr
    assert "run 'dbledger repair' to accept it" in up.stderr
    status = json.loads(cli(db_url, migrations_dir, "status", "--json").stdout)
    assert [(m["name"], m["change"], m["diff"]) for m in status["modified"]] == [
        ("001_items", "cosmetic", [])
    ]
    assert "modified (cosmetic)" in cli(db_url, migrations_dir, "status").stdout

    repaired = cli(db_url, migrations_dir, "repair")
    assert repaired.returncode == 0, repaired.output
    [detail] = repair_details(db_url)
    assert detail.startswith("cosmetic change: only white space, comments or keyword case changed")
    assert cli(db_url, migrations_dir, "up").returncode == 0


def test_another_spelling_of_the_same_type_is_cosmetic_on_postgres(pg_url: str, migrations_dir: Path) -> None:
    path = write(migrations_dir, "001_t.sql", "CREATE TABLE t (id int, name varchar(10));\n")
    dbledger.migrate(pg_url, migrations_dir)
    path.write_text(
        "CREATE TABLE t (id INTEGER, name CHARACTER VARYING(10)); -- the same\n", encoding="utf-8"
    )

    status = json.loads(cli(pg_url, migrations_dir, "status", "--json").stdout)

    assert [m["change"] for m in status["modified"]] == ["cosmetic"]


def test_a_new_section_option_is_semantic(pg_url: str, migrations_dir: Path) -> None:
    text = "-- migrate:up\nCREATE TABLE t (id int);\n-- migrate:down\nDROP TABLE t;\n"
    path = write(migrations_dir, "001_t.sql", text)
    dbledger.migrate(pg_url, migrations_dir)
    path.write_text(text.replace("-- migrate:up", "-- migrate:up transaction:false"), encoding="utf-8")

    verified = cli(pg_url, migrations_dir, "verify")

    assert verified.returncode == 1
    assert "the up section's options changed" in verified.stderr
    assert "+-- migrate:up transaction:false" in verified.stderr


def test_a_cosmetically_changed_file_is_not_rolled_back_before_repair(
    db_url: str, migrations_dir: Path
) -> None:
    path = write(migrations_dir, "001_items.sql", ITEMS)
    dbledger.migrate(db_url, migrations_dir)
    path.write_text(ITEMS + "-- the end\n", encoding="utf-8")

    down = cli(db_url, migrations_dir, "down")
    assert down.returncode == 1
    assert "cosmetically" in down.stderr
    assert "run 'dbledger repair' to accept the new checksum, then roll back" in down.stderr

    assert cli(db_url, migrations_dir, "repair").returncode == 0
    assert cli(db_url, migrations_dir, "down").returncode == 0


def test_accept_must_name_a_changed_migration(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_items.sql", ITEMS)
    dbledger.migrate(db_url, migrations_dir)

    result = cli(db_url, migrations_dir, "repair", "--accept", "001_itemz")

    assert result.returncode == 2
    assert (
        "--accept 001_itemz: no applied migration of that name was changed (changed: none)" in result.stderr
    )


def test_a_row_without_a_copy_of_its_file_needs_accept(db_url: str, migrations_dir: Path) -> None:
    """Rows applied by dbledger 0.2 keep no copy: the change's kind cannot be told."""
    path = write(migrations_dir, "001_items.sql", ITEMS)
    dbledger.migrate(db_url, migrations_dir)
    query(db_url, "UPDATE schema_migrations SET source = NULL")
    path.write_text("-- a comment\n" + ITEMS, encoding="utf-8")

    refused = cli(db_url, migrations_dir, "repair")
    assert refused.returncode == 1
    assert "the ledger keeps no copy of the file as it was applied" in refused.stderr
    assert "dbledger repair --accept 001_items" in refused.stderr

    assert cli(db_url, migrations_dir, "repair", "--accept", "001_items").returncode == 0
    assert repair_details(db_url)[0].startswith("unknown change, accepted with --accept")


def test_the_ledger_keeps_each_file_with_its_passwords_redacted(pg_url: str, migrations_dir: Path) -> None:
    text = "CREATE ROLE reporting LOGIN PASSWORD 'hunter2-correct-horse';\n"
    path = write(migrations_dir, "001_role.sql", text)
    try:
        dbledger.migrate(pg_url, migrations_dir)
        [(source, algorithm)] = query(pg_url, "SELECT source, checksum_algorithm FROM schema_migrations")
        assert algorithm == "sha256"
        assert "hunter2-correct-horse" not in source
        assert "CREATE ROLE reporting LOGIN PASSWORD" in source

        # Only the password changes: behind the ***, that cannot be called cosmetic.
        path.write_text(text.replace("hunter2-correct-horse", "battery-staple-9"), encoding="utf-8")
        status = json.loads(cli(pg_url, migrations_dir, "status", "--json").stdout)
        assert [m["change"] for m in status["modified"]] == ["semantic"]
        assert "holds a password" in status["modified"][0]["change_reason"]
        assert "battery-staple-9" not in json.dumps(status)
    finally:
        query(pg_url, "DROP ROLE IF EXISTS reporting")


def test_a_checksum_of_an_unknown_algorithm_is_refused(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_items.sql", ITEMS)
    write(migrations_dir, "002_more.sql", "CREATE TABLE more (id INTEGER);\n")
    dbledger.migrate(db_url, migrations_dir, to=1)
    query(db_url, "UPDATE schema_migrations SET checksum_algorithm = 'blake3'")

    result = cli(db_url, migrations_dir, "up")

    assert result.returncode == 1
    assert (
        "migration '001_items' has a checksum made with blake3, which this dbledger does not know"
        in result.stderr
    )
    assert query(db_url, "SELECT count(*) FROM schema_migrations")[0][0] == 1


def test_a_format_2_ledger_reads_and_upgrades_to_keep_copies(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_items.sql", ITEMS)
    write(migrations_dir, "002_more.sql", "CREATE TABLE more (id INTEGER);\n")
    dbledger.migrate(db_url, migrations_dir, to=1)
    # What dbledger 0.2 left: no checksum_algorithm, no source, format 2.
    query(db_url, "ALTER TABLE schema_migrations DROP COLUMN checksum_algorithm")
    query(db_url, "ALTER TABLE schema_migrations DROP COLUMN source")
    query(db_url, "UPDATE schema_migrations_version SET version = 2")

    status = json.loads(cli(db_url, migrations_dir, "status", "--json").stdout)
    assert status["ledger_format"] == 2
    assert [row["name"] for row in status["applied"]] == ["001_items"]
    # Format 2 has the history chain already: verify checks it before the upgrade too.
    query(db_url, "UPDATE schema_migrations_history SET detail = 'edited' WHERE action = 'apply'")
    verified = cli(db_url, migrations_dir, "verify")
    assert verified.returncode == 1
    assert "was edited after it was written: its hash no longer matches" in verified.stderr
    query(db_url, "UPDATE schema_migrations_history SET detail = NULL WHERE action = 'apply'")

    up = cli(db_url, migrations_dir, "up")
    assert up.returncode == 0, up.output
    assert f"ledger format 2 -> {LEDGER_VERSION}" in up.stderr
    assert query(db_url, "SELECT version FROM schema_migrations_version") == [(LEDGER_VERSION,)]
    assert query(
        db_url, "SELECT migration_name, checksum_algorithm, source IS NULL FROM schema_migrations ORDER BY id"
    ) == [("001_items", "sha256", True), ("002_more", "sha256", False)]


TRIGGER = """CREATE TABLE t (id int, v int);
CREATE FUNCTION keep_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RETURN NEW;
END $$;
"""


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        ("RETURN NEW;", "RETURN OLD;", "semantic"),  # PL/pgSQL's own tree leaves the variable out
        ("RETURN NEW;", "return new;  -- the row as written", "cosmetic"),
        ("BEGIN", "BEGIN\n  -- nothing to check", "cosmetic"),
    ],
)
def test_a_plpgsql_body_is_compared_by_its_tokens(
    pg_url: str, migrations_dir: Path, before: str, after: str, kind: str
) -> None:
    path = write(migrations_dir, "001_trigger.sql", TRIGGER)
    dbledger.migrate(pg_url, migrations_dir)
    path.write_text(TRIGGER.replace(before, after), encoding="utf-8")

    status = json.loads(cli(pg_url, migrations_dir, "status", "--json").stdout)

    assert [m["change"] for m in status["modified"]] == [kind]


def test_the_diff_of_a_semantic_change_never_shows_a_password(pg_url: str, migrations_dir: Path) -> None:
    text = "CREATE ROLE auditor LOGIN PASSWORD 'supersecret-99';\nCREATE TABLE t2 (a int);\n"
    path = write(migrations_dir, "001_role.sql", text)
    try:
        dbledger.migrate(pg_url, migrations_dir)
        path.write_text(text.replace("a int", "a bigint"), encoding="utf-8")

        shown = cli(pg_url, migrations_dir, "status", "--json")
        verified = cli(pg_url, migrations_dir, "verify")

        modified = json.loads(shown.stdout)["modified"]
        assert [m["change"] for m in modified] == ["semantic"]
        assert any("bigint" in line for line in modified[0]["diff"])
        assert "supersecret-99" not in shown.output + verified.output
    finally:
        query(pg_url, "DROP ROLE IF EXISTS auditor")


def test_a_file_edited_into_unreadable_sql_is_reported_not_a_crash(pg_url: str, migrations_dir: Path) -> None:
    path = write(migrations_dir, "001_items.sql", ITEMS)
    dbledger.migrate(pg_url, migrations_dir)
    path.write_text(ITEMS.replace("name TEXT NOT NULL);", "name TEXT DEFAULT 'x);"), encoding="utf-8")

    status = cli(pg_url, migrations_dir, "status", "--json")

    assert status.returncode == 0, status.output
    [modified] = json.loads(status.stdout)["modified"]
    assert modified["change"] == "unknown"
    assert "the file on disk cannot be read as statements" in modified["change_reason"]


def test_an_edited_file_on_a_format_2_ledger_is_reported_until_the_upgrade(
    db_url: str, migrations_dir: Path
) -> None:
    path = write(migrations_dir, "001_items.sql", ITEMS)
    dbledger.migrate(db_url, migrations_dir)
    query(db_url, "ALTER TABLE schema_migrations DROP COLUMN checksum_algorithm")
    query(db_url, "ALTER TABLE schema_migrations DROP COLUMN source")
    query(db_url, "UPDATE schema_migrations_version SET version = 2")
    path.write_text("-- reworded\n" + ITEMS, encoding="utf-8")

    status = cli(db_url, migrations_dir, "status", "--json")
    assert status.returncode == 0, status.output
    assert [m["change"] for m in json.loads(status.stdout)["modified"]] == ["unknown"]

    up = cli(db_url, migrations_dir, "up")
    assert up.returncode == 1
    assert "dbledger repair --accept 001_items" in up.stderr
    assert cli(db_url, migrations_dir, "repair", "--accept", "001_items").returncode == 0
    assert query(db_url, "SELECT version FROM schema_migrations_version") == [(LEDGER_VERSION,)]


def test_one_edited_statement_of_a_long_file_is_the_only_one_in_the_diff(
    pg_url: str, migrations_dir: Path
) -> None:
    rows = "".join(f"INSERT INTO t VALUES ({i}, 'row {i}');\n" for i in range(3000))
    text = "CREATE TABLE t (id int, name text);\n" + rows
    path = write(migrations_dir, "001_load.sql", text)
    dbledger.migrate(pg_url, migrations_dir)
    path.write_text(text.replace("'row 1500'", "'row fifteen hundred'"), encoding="utf-8")

    [modified] = json.loads(cli(pg_url, migrations_dir, "status", "--json").stdout)["modified"]

    assert modified["change"] == "semantic"
    changed = [line for line in modified["diff"][2:] if line.startswith(("-", "+"))]
    assert any("'row 1500'" in line for line in changed if line.startswith("-"))
    assert any("'row fifteen hundred'" in line for line in changed if line.startswith("+"))
    assert not any("'row 1499'" in line or "'row 1501'" in line for line in changed)
