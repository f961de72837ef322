"""``dbledger check``: the migrations applied from empty on a scratch database, each down section
round-tripped, the folder and lint, a real database's ledger, and the application's own queries
after each migration. Every test runs on a real PostgreSQL or SQLite database."""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
from pathlib import Path

import psycopg
import pytest

import dbledger
from dbledger import api
from dbledger.dialects import for_name
from dbledger.errors import UsageError
from dbledger.queries import bind, placeholders, read_queries
from tests.helpers import Result, query, run_cli, write

SERVICE = Path(__file__).resolve().parent.parent / "service" / "connections_service" / "migrations"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "queries"

USERS = """\
-- migrate:up
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT);
-- migrate:down
DROP TABLE users;
"""
RENAME = """\
-- migrate:up
ALTER TABLE users RENAME COLUMN email TO email_address;
-- migrate:down
ALTER TABLE users RENAME COLUMN email_address TO email;
"""


def check(url: str, folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """``dbledger check`` run from ``folder``'s parent, so paths in messages are relative."""
    return run_cli("--database-url", url, "--dir", folder.name, "check", *args, cwd=folder.parent, env=env)


def seed(folder: Path, *names: str) -> None:
    for name in names:
        shutil.copy(next(SERVICE.glob(f"{name}_*.sql")), folder)


# -- the incident's DELETE -------------------------------------------------------------------
def test_the_incidents_delete_fails_on_001_002_and_passes_once_003_004_are_added(
    pg_url: str, migrations_dir: Path
) -> None:
    shutil.copytree(FIXTURES, migrations_dir.parent / "queries")
    seed(migrations_dir, "001", "002")

    before = check(pg_url, migrations_dir, "--queries", "queries/connections.sql")

    assert before.returncode == 1, before.output
    assert (
        "queries/connections.sql:9 queries error the query fails on the schema the migrations produce: "
        '22P02 invalid input syntax for type uuid: "google-1759721169098"'
    ) in before.stdout
    assert "failed: 1 error(s) in 2 migration(s), 2 query(ies)" in before.stdout
    assert "dbledger: error: check found 1 error(s); the first: queries/connections.sql:9" in before.stderr

    seed(migrations_dir, "003", "004")
    after = check(pg_url, migrations_dir, "--queries", "queries/connections.sql")

    assert after.returncode == 0, after.output
    assert after.stdout.strip().splitlines()[-1] == (
        "ok: 4 migration(s), 2 query(ies) checked (apply, folder, lint, queries, round-trip)"
    )
    # The database the check was pointed at is only the server for the scratch database.
    assert query(pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


# -- round trips -------------------------------------------------------------------------------
NOT_REVERTED = """\
-- migrate:up
ALTER TABLE users ADD COLUMN nickname TEXT;
CREATE INDEX users_name_idx ON users (name);
-- migrate:down
ALTER TABLE users DROP COLUMN nickname;
"""


def test_a_down_section_that_does_not_revert_is_caught(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir, "002_nickname.sql", NOT_REVERTED)
    write(migrations_dir, "003_rename.sql", RENAME)

    result = check(db_url, migrations_dir, "--no-lint")

    assert result.returncode == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "migrations/002_nickname.sql:5 round-trip error the down section of 002_nickname does not undo "
        "its up section: after up and down, 1 difference(s):",
        "    - extra index users_name_idx",
        lines[2],
    ]
    assert lines[2].startswith(
        "migrations/002_nickname.sql:3 round-trip error 002_nickname cannot be applied again after "
        "its down section ran: "
    )
    assert "users_name_idx" in lines[2]
    assert "already exists" in lines[2]
    # The round trip was undone: 003 after it applied, its own round trip fine.
    assert lines[-1] == "failed: 2 error(s) in 3 migration(s)"


KEEP_ROW = """CREATE TABLE events (id int, v int);
CREATE FUNCTION keep_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- the row as it is written
  RETURN NEW;
END $$;
"""


@pytest.mark.parametrize(
    ("restored", "ok"),
    [
        pytest.param("BEGIN\n  RETURN NEW;  -- put back, comment reworded\nEND", True, id="cosmetic"),
        pytest.param("BEGIN\n  RETURN OLD;\nEND", False, id="another-variable"),
    ],
)
def test_a_down_section_restoring_a_function_body_is_compared_by_its_tokens(
    pg_url: str, migrations_dir: Path, restored: str, ok: bool
) -> None:
    write(migrations_dir, "001_events.sql", KEEP_ROW)
    body = "CREATE OR REPLACE FUNCTION keep_row() RETURNS trigger LANGUAGE plpgsql AS $$\n{}\n$$;\n"
    write(
        migrations_dir,
        "002_drop_rows.sql",
        "-- migrate:up\n"
        + body.format("BEGIN\n  RETURN NULL;\nEND")
        + "-- migrate:down\n"
        + body.format(restored),
    )

    result = check(pg_url, migrations_dir, "--no-lint")

    assert (result.returncode == 0) is ok, result.output
    if not ok:
        assert "the down section of 002_drop_rows does not undo its up section" in result.stdout
        assert "keep_row" in result.stdout


def test_a_down_section_that_reverts_passes_also_outside_a_transaction(
    pg_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(
        migrations_dir,
        "002_index.sql",
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY users_name_idx ON users (name);\n"
        "-- migrate:down transaction:false\nDROP INDEX CONCURRENTLY users_name_idx;\n",
    )

    result = check(pg_url, migrations_dir, "--no-lint")

    assert result.returncode == 0, result.output
    assert "ok: 2 migration(s) checked (apply, folder, round-trip)" in result.stdout


# -- queries ------------------------------------------------------------------------------------
def test_a_query_that_stops_working_names_the_migration_that_broke_it(
    db_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir, "002_rename.sql", RENAME)
    write(
        migrations_dir.parent,
        "app.sql",
        "-- The profile page.\n-- params: 7\nSELECT email, name FROM users\nWHERE id = $1;\n"
        "SELECT count(*) FROM users;\n",
    )

    result = check(db_url, migrations_dir, "--no-lint", "--queries", "app.sql", "--json")

    assert result.returncode == 1, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert document["queries"] == 2
    [finding] = document["findings"]
    postgres = db_url.startswith("postgresql")
    reason = '42703 column "email" does not exist' if postgres else "SQLITE_ERROR no such column: email"
    assert finding == {
        "kind": "queries",
        "severity": "error",
        "message": f"the query worked after 001_users and fails after 002_rename, which broke it: {reason}",
        "path": "app.sql",
        "line": 3,
        "migration": "002_rename",
        "sqlstate": "42703" if postgres else "SQLITE_ERROR",
    }
    assert document["error"]["type"] == "CheckFailed"


def test_a_query_broken_by_one_migration_and_mended_by_the_next_is_a_warning(
    pg_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir, "002_rename.sql", RENAME)
    write(migrations_dir, "003_email.sql", "ALTER TABLE users ADD COLUMN email TEXT;\n")
    write(migrations_dir.parent, "app.sql", "SELECT email FROM users WHERE id = $1;\n")

    result = check(pg_url, migrations_dir, "--no-lint", "--queries", "app.sql")

    assert result.returncode == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "app.sql:1 queries warning the query fails after 002_rename (it worked after 001_users) until "
        '003_email: deployed without 003_email, 002_rename breaks it: 42703 column "email" does not exist'
    )


def test_a_pg_stat_statements_csv_export_is_prepared(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    export = migrations_dir.parent / "statements.csv"
    statements = [
        "SELECT id, email\nFROM users WHERE id = $1",  # a record over two lines
        "BEGIN",
        "SET application_name = $1",
        "SELECT name FROM schema_migrations WHERE success = $1",  # dbledger's own: left out
        'SELECT "e-mail" FROM users WHERE name = $1 AND id > $2',
        "UPDATE users SET name = $1 WHERE id = $2",
    ]
    # Written by the server itself, as '\copy (select query from pg_stat_statements) to ... csv header'.
    with psycopg.connect(pg_url) as conn, conn.cursor() as cursor:
        rows = ", ".join(f"({index}, %s)" for index in range(len(statements)))
        sql = f"COPY (SELECT query FROM (VALUES {rows}) AS s (n, query) ORDER BY n) TO STDOUT CSV HEADER"
        with export.open("wb") as out, cursor.copy(sql.encode(), statements) as copy:
            for data in copy:
                out.write(data)

    result = check(pg_url, migrations_dir, "--no-lint", "--queries", "statements.csv")

    assert result.returncode == 1, result.output
    assert result.stdout.splitlines() == [
        "statements.csv:7 queries error the query fails on the schema the migrations produce: 42703 "
        'column "e-mail" does not exist',
        '    HINT: Perhaps you meant to reference the column "users.email".',
        "failed: 1 error(s) in 1 migration(s), 3 query(ies)",
    ]
    assert "dbledger: note: left out 1 exported query(ies) on dbledger's own tables" in result.stderr


def test_a_json_export_and_a_folder_of_query_files(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    folder = migrations_dir.parent / "queries"
    folder.mkdir()
    write(
        folder,
        "a.json",
        '[\n  {"query": "SELECT id FROM users"},\n  {"query": "SELECT nope FROM users"}\n]\n',
    )
    write(folder, "b.jsonl", '{"query": "SELECT email FROM users WHERE id = $1"}\n')

    report = api.check(sqlite_url, migrations_dir, queries=[folder], parts={"apply", "queries"})

    assert not report.ok
    assert report.queries == 3
    assert [(f.path, f.line, f.message) for f in report.findings] == [
        (
            str(folder / "a.json"),
            3,
            "the query fails on the schema the migrations produce: SQLITE_ERROR no such column: nope",
        )
    ]


def test_sample_values_run_in_a_transaction_that_is_rolled_back(
    sqlite_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(
        migrations_dir.parent,
        "app.sql",
        "-- params: 1, 'a@example.com', 'Ann'\n-- params: 2, 'b@example.com', NULL\n"
        "INSERT INTO users (id, email, name) VALUES ($1, $2, $3);\n"
        "-- params: NULL\nINSERT INTO users (id, email) VALUES (3, $1);\n",
    )

    report = api.check(sqlite_url, migrations_dir, queries=[migrations_dir.parent / "app.sql"])

    assert [f.format() for f in report.findings] == [
        f"{migrations_dir.parent / 'app.sql'}:5 queries error the query fails on the schema the "
        "migrations produce: SQLITE_CONSTRAINT_NOTNULL NOT NULL constraint failed: users.email"
    ]
    assert report.to_dict()["errors"] == 1


# -- bad query files: usage errors naming the file and line -----------------------------------
@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "q.sql",
            "-- params: 'google-1', oops\nDELETE FROM t WHERE id = $1;\n",
            "q.sql:1: cannot read the value 'oops' of '-- params:': give SQL literals separated by "
            "commas: 'text' (a quote inside doubled), 42, 1.5, NULL, TRUE, FALSE",
        ),
        (
            "q.sql",
            "SELECT 1;\n\n-- params: 1\nSELECT * FROM t WHERE a = $1 AND b = $2;\n",
            "q.sql:4: the statement has 2 parameter(s) ($1 to $2), but its '-- params:' line gives "
            "1 value(s): give one value per parameter",
        ),
        (
            "q.sql",
            "SELECT 1;\nSET search_path = app;\n",
            "q.sql:2: SET is not a query: only SELECT, INSERT, UPDATE, DELETE, MERGE, VALUES, TABLE and "
            "WITH statements can be checked; remove it",
        ),
        (
            "q.sql",
            "SELECT a\n-- params: 1\nFROM t WHERE a = $1;\n",
            "q.sql:2: a '-- params:' line must come right before the statement it gives values to "
            "(only comments and blank lines between)",
        ),
        (
            "q.csv",
            "calls,total_time\n3,1.5\n",
            "q.csv:1: no 'query' column in the header (calls, total_time): export with \\copy (select "
            "query from pg_stat_statements) to 'queries.csv' csv header",
        ),
        (
            "q.jsonl",
            '{"query": "SELECT 1"}\n{"query": SELECT}\n',
            "q.jsonl:2: malformed JSON Lines: Expecting value (one JSON object a line, or one array of them)",
        ),
        (
            "q.json",
            '\n[\n  {"query": "SELECT 1"},\n  {"query": "SELECT 2"}\n\n',
            "q.json:2: malformed JSON: the array opened on this line is not closed: the file ends at "
            "line 4 without its ']'",
        ),
        (
            "q.json",
            "[",
            "q.json:1: malformed JSON: the array opened on this line is not closed: the file ends at "
            "line 1 without its ']'",
        ),
    ],
)
def test_a_malformed_query_file_is_a_usage_error(
    sqlite_url: str, migrations_dir: Path, name: str, text: str, message: str
) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir.parent, name, text)

    result = check(sqlite_url, migrations_dir, "--queries", name)

    assert result.returncode == 2, result.output
    assert result.stderr.strip().splitlines()[-1] == f"dbledger: error: {message}"
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


# -- the folder, lint, a real database ------------------------------------------------------------
def test_the_folder_part_names_strays_and_empty_up_sections(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir, "002_later.sql", "-- migrate:up\n-- to do\n-- migrate:down\n")
    write(migrations_dir, "003_typo.SQL", "SELECT 1;\n")

    result = check(sqlite_url, migrations_dir, "--json")

    assert result.returncode == 1
    findings = json.loads(result.stdout)["findings"]
    assert [(f["kind"], f["path"], f["line"], f["migration"]) for f in findings] == [
        ("folder", "migrations/003_typo.SQL", None, None),
        ("folder", "migrations/002_later.sql", 2, "002_later"),
    ]
    assert findings[1]["message"] == (
        "the up section is empty (only comments or blank lines): write the migration's SQL, or "
        "delete the file"
    )


def test_a_statement_up_would_refuse_is_a_folder_finding(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir, "002_commit.sql", "UPDATE users SET name = 'x';\nCOMMIT;\n")
    write(migrations_dir, "003_more.sql", "ALTER TABLE users ADD COLUMN age INTEGER;\n")

    report = api.check(sqlite_url, migrations_dir)

    assert [f.format() for f in report.findings] == [
        f"{migrations_dir / '002_commit.sql'}:2 folder error COMMIT would end the transaction dbledger runs "
        "this migration in (one per migration, with its ledger row): remove it, or mark the section "
        "'-- migrate:up transaction:false' to run each statement on its own"
    ]


def test_against_a_real_database_with_a_modified_applied_file(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir, "002_rename.sql", RENAME)
    dbledger.migrate(pg_url, migrations_dir)
    write(migrations_dir, "001_users.sql", USERS.replace("name TEXT", "name VARCHAR(100)"))
    write(migrations_dir, "003_age.sql", "ALTER TABLE users ADD COLUMN age INTEGER;\n")
    history = query(pg_url, "SELECT count(*) FROM schema_migrations_history")

    result = check(pg_url, migrations_dir, "--no-lint", "--against", pg_url, "--json")

    assert result.returncode == 1, result.output
    document = json.loads(result.stdout)
    assert document["pending"] == ["003_age"]
    against = [f for f in document["findings"] if f["kind"] == "against"]
    assert [(f["severity"], f["path"], f["migration"]) for f in against] == [
        ("error", "migrations/001_users.sql", "001_users"),
        ("note", "migrations/003_age.sql", "003_age"),
    ]
    assert "001_users" in against[0]["message"]
    assert "modified" in against[0]["message"]
    assert ":***@" in against[0]["message"]
    assert against[1]["message"].endswith(": the next 'dbledger up' there applies it")
    password = psycopg.conninfo.conninfo_to_dict(pg_url)["password"]
    assert str(password) not in result.output
    # Read-only there: no row written, the files' change not accepted.
    assert query(pg_url, "SELECT count(*) FROM schema_migrations_history") == history
    assert query(pg_url, "SELECT migration_name FROM schema_migrations ORDER BY id") == [
        ("001_users",),
        ("002_rename",),
    ]


def test_against_a_database_up_would_refuse_is_an_error(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    folder = migrations_dir.parent
    with sqlite3.connect(folder / "legacy.db") as conn:  # built without dbledger
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    dbledger.migrate(f"sqlite:///{folder / 'deployed.db'}", migrations_dir)

    result = check(sqlite_url, migrations_dir, "--against", "sqlite:///legacy.db", "--json")

    assert result.returncode == 1, result.output
    document = json.loads(result.stdout)
    assert document["pending"] is None
    assert [(f["kind"], f["severity"], f["message"]) for f in document["findings"]] == [
        (
            "against",
            "error",
            "sqlite:///legacy.db: 'dbledger up' there refuses to run: the database already has 1 "
            "table(s) (users) but no ledger table schema_migrations: it was built without dbledger, so "
            "nothing records which migrations it already contains. Mark what it already contains with "
            "'dbledger baseline VERSION' (VERSION = the newest migration the database already matches) "
            "(or pass --allow-existing-schema to run every migration on top of it)",
        )
    ]
    # A wrong --ledger-table: the ledger is there under its own name.
    wrong = api.check(
        sqlite_url, migrations_dir, against=f"sqlite:///{folder / 'deployed.db'}", ledger_table="app_ledger"
    )
    assert [(f.severity, f.message.split(": ", 1)[1]) for f in wrong.findings] == [
        (
            "error",
            "'dbledger up' there refuses to run: it has no ledger table app_ledger, but a dbledger "
            "ledger named schema_migrations: give that name with --ledger-table",
        )
    ]
    assert wrong.pending is None
    # A SQLite file that does not exist is named, and not created.
    missing = folder / "typo.db"
    absent = api.check(sqlite_url, migrations_dir, against=f"sqlite:///{missing}")
    assert [(f.severity, f.message) for f in absent.findings] == [
        (
            "error",
            f"sqlite:///{missing}: there is no database file {str(missing)!r} (check reads it without "
            "creating it): give --against the URL of a database the migrations were deployed to",
        )
    ]
    assert not missing.exists()
    # An empty database: everything pending, which is no error.
    sqlite3.connect(folder / "empty.db").close()
    empty = api.check(sqlite_url, migrations_dir, against=f"sqlite:///{folder / 'empty.db'}")
    assert empty.ok
    assert empty.pending == ["001_users"]
    assert [(f.severity, f.migration) for f in empty.findings] == [("note", "001_users")]


# -- where the check runs ---------------------------------------------------------------------------
def test_a_shadow_database_is_left_empty_and_a_used_one_refused(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir, "002_rename.sql", RENAME)
    write(migrations_dir.parent, "app.sql", "SELECT email_address FROM users WHERE id = $1;\n")

    report = api.check(
        "sqlite:///unused.db", migrations_dir, shadow_url=pg_url, queries=[migrations_dir.parent / "app.sql"]
    )

    assert report.ok, [f.message for f in report.findings]
    assert report.queries == 1
    left = query(pg_url, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")
    assert left == [(0,)]

    query(pg_url, "CREATE TABLE kept (x INTEGER)")
    with pytest.raises(UsageError, match=r"shadow database postgresql://\S+ is not empty: give an empty"):
        api.check(None, migrations_dir, shadow_url=pg_url)


def test_github_actions_annotations_and_the_report_file(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir, "002_nickname.sql", NOT_REVERTED)
    write(migrations_dir.parent, "app.sql", "\n-- params: 1\nSELECT nickname FROM users WHERE id = $1;\n")

    result = check(
        sqlite_url,
        migrations_dir,
        "--queries",
        "app.sql",
        "--report",
        "check.json",
        env={"GITHUB_ACTIONS": "true"},
    )

    assert result.returncode == 1
    annotations = [line for line in result.stderr.splitlines() if line.startswith("::")]
    assert annotations == [
        "::error file=migrations/002_nickname.sql,line=5,title=dbledger check%3A round-trip::the down "
        "section of 002_nickname does not undo its up section: after up and down, 1 difference(s):%0A- "
        "extra index users_name_idx",
        annotations[1],
    ]
    assert annotations[1].startswith("::error file=migrations/002_nickname.sql,line=3,title=")
    assert "::" not in result.stdout
    report = json.loads((migrations_dir.parent / "check.json").read_text(encoding="utf-8"))
    assert report["ok"] is False
    assert report["errors"] == 2
    assert [f["kind"] for f in report["findings"]] == ["round-trip", "round-trip"]


def test_parts_choose_what_runs_and_an_unknown_part_is_refused(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir, "002_nickname.sql", NOT_REVERTED)

    assert api.check(sqlite_url, migrations_dir, parts={"apply"}).ok
    assert not api.check(sqlite_url, migrations_dir, parts={"round-trip"}).ok
    with pytest.raises(UsageError, match="unknown check part 'roundtrip': choose from against, apply"):
        api.check(sqlite_url, migrations_dir, parts={"roundtrip"})


def test_a_migration_that_fails_on_an_empty_database(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir, "002_orders.sql", "CREATE TABLE orders (user_id INTEGER REFERENCES users2 (id));\n")

    result = check(pg_url, migrations_dir, "--no-lint")

    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == (
        "migrations/002_orders.sql:1 apply error 002_orders fails on a database that holds the migrations "
        'before it: 42P01: relation "users2" does not exist'
    )


# -- reading query files, without a database ----------------------------------------------------
def test_parameters_inside_strings_comments_and_dollar_quotes_are_not_parameters() -> None:
    sql = "SELECT '$1', \"$2\", $$ $3 $$, $tag$ $4 $tag$ /* $5 */, a$6, $7 -- $8\n, $10"
    assert [n for _, _, n in placeholders(sql)] == [7, 10]
    assert bind("SELECT $1, '$1', $2", ("'it''s'", "42")) == "SELECT 'it''s', '$1', 42"
    assert bind("SELECT $1", None) == "SELECT NULL"


def test_query_files_give_each_query_its_line_and_runs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "q.sql",
        "-- params: 'a'\n\n-- why\n-- params: 'b'\nSELECT $1::text;\n/* none */ SELECT 2;\n",
    )
    queries = read_queries([path], for_name("postgresql"))
    assert [(q.line, q.sql, q.runs) for q in queries] == [
        (5, "SELECT $1::text", (("'a'",), ("'b'",))),
        (6, "SELECT 2", ()),
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"query folder '.*empty' holds no query files"):
        read_queries([tmp_path / "empty"], for_name("sqlite"))


def test_a_params_line_gives_values_to_the_next_statement_only(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    path = write(migrations_dir.parent, "app.sql", "-- params: 7\nSELECT $1; SELECT 'x';\nSELECT 2;\n")

    queries = read_queries([path], for_name("sqlite"))
    result = check(sqlite_url, migrations_dir, "--queries", "app.sql")

    assert [(q.line, q.sql, q.runs) for q in queries] == [
        (2, "SELECT $1", (("7",),)),
        (2, "SELECT 'x'", ()),
        (3, "SELECT 2", ()),
    ]
    assert result.returncode == 0, result.output
    assert result.stdout.splitlines() == [
        "ok: 1 migration(s), 3 query(ies) checked (apply, folder, queries, round-trip)"
    ]


def test_lint_takes_the_folder_from_empty_and_the_pending_ones_against_a_real_database(
    pg_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_users.sql", USERS)
    write(
        migrations_dir,
        "002_index.sql",
        "-- migrate:up\nCREATE INDEX users_name_idx ON users (name);\n"
        "-- migrate:down\nDROP INDEX users_name_idx;\n",
    )
    # From empty, users is created by 001 in the same run: indexing it blocks no one.
    assert check(pg_url, migrations_dir).returncode == 0
    dbledger.migrate(pg_url, migrations_dir, to=1)

    result = check(pg_url, migrations_dir, "--against", pg_url)

    assert result.returncode == 1, result.output
    lint = [line for line in result.stdout.splitlines() if " lint " in line]
    assert lint == [
        "migrations/002_index.sql:2 lint error require-concurrent-index-creation: CREATE INDEX "
        "users_name_idx without CONCURRENTLY: writes to users wait until the index is built (0 rows, 0.0 MB)"
    ]
    assert query(pg_url, "SELECT migration_name FROM schema_migrations") == [("001_users",)]


def test_the_scratch_database_is_dropped_afterwards(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", USERS)

    report = api.check(pg_url, migrations_dir, parts={"apply"})

    assert report.ok
    assert report.parts == ["apply"]
    name = report.database.removeprefix("scratch database ")
    assert name.startswith("dbledger_scratch_")
    assert query(pg_url, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)) == [(0,)]


# -- what reaches past the scratch database: the server's roles, databases, settings ---------------
def _roles(url: str, name: str) -> list[tuple[object, ...]]:
    return query(url, "SELECT count(*) FROM pg_roles WHERE rolname = %s", (name,))


def test_a_role_the_migrations_create_is_dropped_and_the_next_check_passes(
    pg_url: str, migrations_dir: Path
) -> None:
    role = f"dbledger_reader_{secrets.token_hex(4)}"
    write(migrations_dir, "001_users.sql", USERS)
    write(
        migrations_dir,
        "002_reader.sql",
        f"-- migrate:up\nCREATE ROLE {role} LOGIN PASSWORD 'not-a-secret-42';\nGRANT SELECT ON users TO "
        f"{role};\nGRANT {role} TO CURRENT_USER;\n-- migrate:down\nREVOKE SELECT ON users FROM {role};\n"
        f"DROP ROLE {role};\n",
    )
    warning = (
        f"migrations/002_reader.sql:2 apply warning CREATE ROLE {role} creates a role, and roles belong "
        "to the whole server, not to one database: check creates it on the server it borrows for its "
        "scratch database and drops it when done; on a server that has it already (another database "
        "migrated with these files), this migration fails with 42710"
    )

    for _ in range(2):  # the first check leaves no role behind to fail the second with 42710
        result = check(pg_url, migrations_dir, "--no-lint")

        assert result.returncode == 0, result.output
        assert result.stdout.splitlines() == [
            warning,
            "ok: 2 migration(s) checked (apply, folder, round-trip), 1 warning(s)",
        ]
        assert _roles(pg_url, role) == [(0,)]
    assert "not-a-secret-42" not in result.output


def test_a_role_on_the_server_before_the_check_is_named_and_kept(pg_url: str, migrations_dir: Path) -> None:
    role = f"dbledger_reader_{secrets.token_hex(4)}"
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir, "002_reader.sql", f"CREATE ROLE {role};\n")
    query(pg_url, f"CREATE ROLE {role}")
    try:
        result = check(pg_url, migrations_dir, "--no-lint")

        assert result.returncode == 1, result.output
        lines = result.stdout.splitlines()
        assert lines[1:] == [
            "migrations/002_reader.sql:1 apply error 002_reader fails on a database that holds the "
            f'migrations before it: 42710: role "{role}" already exists',
            f"    statement at line 1: CREATE ROLE {role}",
            "    help: roles belong to the whole server, not to one database, and this one was there "
            "before the check began; check creates the folder's roles from empty and drops them when "
            "done: drop it from this server, or check on a server of its own",
            "failed: 1 error(s), 1 warning(s) in 2 migration(s)",
        ]
        assert lines[0].startswith(f"migrations/002_reader.sql:1 apply warning CREATE ROLE {role} ")
        assert _roles(pg_url, role) == [(1,)]  # not the check's to drop
    finally:
        query(pg_url, f"DROP ROLE {role}")


def test_a_statement_check_cannot_undo_on_the_server_is_refused_before_anything_runs(
    pg_url: str, migrations_dir: Path
) -> None:
    database, other = f"dbledger_made_{secrets.token_hex(4)}", f"dbledger_other_{secrets.token_hex(4)}"
    write(migrations_dir, "001_users.sql", USERS)
    write(
        migrations_dir, "002_database.sql", f"-- migrate:up transaction:false\nCREATE DATABASE {database};\n"
    )
    write(
        migrations_dir,
        "003_roles.sql",
        f"DROP ROLE IF EXISTS {other};\nALTER ROLE {other} SET work_mem = '8MB';\n",
    )
    write(migrations_dir.parent, "app.sql", "SELECT id FROM users;\n")

    result = check(pg_url, migrations_dir, "--no-lint", "--queries", "app.sql")

    assert result.returncode == 1, result.output
    head = (
        "changes the server, not only the database (roles, databases, tablespaces and settings belong "
        "to all of a server's databases), and check cannot undo it on the server it borrows for its "
        "scratch database, so it applied no migration: "
    )
    shadow = (
        "check on an empty database with --shadow-url instead, where every migration runs in one "
        "transaction that is rolled back, this statement too"
    )
    assert result.stdout.splitlines() == [
        f"migrations/002_database.sql:2 apply error CREATE DATABASE {database} {head}it runs outside a "
        "transaction, so no check can roll it back: do this server setup outside the migrations (in "
        "CI: a step before check)",
        f"migrations/003_roles.sql:1 apply error DROP ROLE {other} {head}{shadow}",
        f"migrations/003_roles.sql:2 apply error ALTER ROLE {other} {head}{shadow}",
        "failed: 3 error(s) in 3 migration(s)",
    ]
    assert query(pg_url, "SELECT count(*) FROM pg_database WHERE datname = %s", (database,)) == [(0,)]


def test_on_a_shadow_database_a_role_is_rolled_back_with_the_rest(pg_url: str, migrations_dir: Path) -> None:
    role = f"dbledger_reader_{secrets.token_hex(4)}"
    write(migrations_dir, "001_users.sql", USERS)
    write(migrations_dir, "002_reader.sql", f"CREATE ROLE {role};\nGRANT SELECT ON users TO {role};\n")

    report = api.check(None, migrations_dir, shadow_url=pg_url, parts={"apply"})

    assert report.ok
    assert report.findings == []
    assert _roles(pg_url, role) == [(0,)]
