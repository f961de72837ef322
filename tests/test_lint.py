"""``dbledger lint``: each rule's finding asserted exactly (rule, severity, line, column, message),
without a database and against a real PostgreSQL one (the message names the table's size; a
table created by an earlier file is new), the safe forms that give none, suppressions, the
command line (exit codes, the one-line form, --json, GitHub Actions annotations), ``up``'s
warnings and ``up --strict``, and the comparison with squawk on tests/fixtures/lint/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest

import dbledger.api
from dbledger.analysis import PostgresCatalog
from dbledger.config import WaitPolicy
from dbledger.lint import Finding, lint_migrations
from dbledger.lint.ruleset import RULES
from dbledger.migrations import discover
from tests.helpers import Result, query, run_cli, table_exists, write

FIXTURES = Path(__file__).parent / "fixtures" / "lint"
DOCS = Path(__file__).parent.parent / "docs" / "lint.md"
HEAD = "-- migrate:up\n-- the change under test\n"  # so each case's statement starts on line 3
NO_ACTIONS = {"GITHUB_ACTIONS": ""}  # the suite may itself run in GitHub Actions

# The live database the connected cases read: tables with rows, an index, a validated CHECK.
SCHEMA = """
CREATE TABLE owners (id bigint PRIMARY KEY);
CREATE TABLE accounts (id bigint, owner_id bigint, email varchar(100), balance integer, nickname text);
INSERT INTO accounts SELECT g, g, 'a' || g, g, NULL FROM generate_series(1, 1000) AS g;
CREATE INDEX accounts_email_idx ON accounts (email);
ALTER TABLE accounts ADD CONSTRAINT accounts_balance_not_null CHECK (balance IS NOT NULL);
CREATE TABLE sessions (id bigint);
INSERT INTO sessions SELECT g FROM generate_series(1, 1000) AS g;
CREATE SCHEMA app;
ANALYZE;
"""
SIZE = re.compile(r"\(1,000 rows, [0-9]+\.[0-9] MB\)")


def lint(
    folder: Path, *files: tuple[str, str], catalog: Any = None, waits: WaitPolicy | None = None
) -> list[Finding]:
    for name, text in files:
        write(folder, name, text)
    return lint_migrations(discover(folder), catalog=catalog, waits=waits)


@pytest.fixture(scope="module")
def live(pg_server: Any) -> Iterator[str]:
    """One database for the module's connected cases: lint only reads it."""
    name = f"lint{os.getpid()}"
    url: str = pg_server.create_database(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA.encode())
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def catalog(live: str) -> Iterator[PostgresCatalog]:
    with psycopg.connect(live, autocommit=True) as conn:
        yield PostgresCatalog(conn)


class Case(NamedTuple):
    sql: str
    rule: str
    line: int
    column: int
    offline: str  # in the message without a database
    connected: str  # in the message against the live database
    sized: bool = True  # connected, the message names the table's size


CASES = {
    "type change": Case(
        "ALTER TABLE accounts ALTER COLUMN balance TYPE bigint;",
        "changing-column-type",
        3,
        22,
        "accounts.balance -> bigint is assumed to rewrite the table (the column's current type is not known",
        "accounts.balance integer -> bigint keeps every value but rewrites the table (1,000 rows,",
    ),
    "volatile default": Case(
        "ALTER TABLE accounts ADD COLUMN token uuid DEFAULT gen_random_uuid();",
        "adding-field-with-default",
        3,
        22,
        "ADD COLUMN accounts.token DEFAULT gen_random_uuid() is volatile: every row of accounts is "
        "rewritten under ACCESS EXCLUSIVE",
        "rewritten under ACCESS EXCLUSIVE (1,000 rows,",
    ),
    "required column": Case(
        "ALTER TABLE accounts ADD COLUMN region text NOT NULL;",
        "adding-required-field",
        3,
        22,
        "ADD COLUMN accounts.region NOT NULL without a default fails when accounts has rows",
        "fails when accounts has rows (1,000 rows,",
    ),
    "index": Case(
        "CREATE INDEX accounts_owner_idx ON accounts (owner_id);",
        "require-concurrent-index-creation",
        3,
        1,
        "CREATE INDEX accounts_owner_idx without CONCURRENTLY: writes to accounts wait until the index is "
        "built",
        "wait until the index is built (1,000 rows,",
    ),
    "drop index": Case(
        "DROP INDEX accounts_email_idx;",
        "require-concurrent-index-deletion",
        3,
        1,
        "DROP INDEX accounts_email_idx without CONCURRENTLY takes ACCESS EXCLUSIVE on its table: every query",
        "takes ACCESS EXCLUSIVE on its table accounts: every query on it waits",
        sized=False,
    ),
    "foreign key": Case(
        "ALTER TABLE accounts ADD CONSTRAINT accounts_owner_fk FOREIGN KEY (owner_id) REFERENCES owners(id);",
        "constraint-missing-not-valid",
        3,
        22,
        "ADD FOREIGN KEY accounts_owner_fk without NOT VALID checks every row of accounts while writes to "
        "both tables wait",
        "writes to both tables wait (1,000 rows,",
    ),
    "check": Case(
        "ALTER TABLE accounts ADD CONSTRAINT accounts_balance_check CHECK (balance >= 0);",
        "constraint-missing-not-valid",
        3,
        22,
        "ADD CHECK accounts_balance_check without NOT VALID checks every row of accounts while reads and "
        "writes wait",
        "reads and writes wait (1,000 rows,",
    ),
    "set not null": Case(
        "ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;",
        "adding-not-nullable-field",
        3,
        22,
        "SET NOT NULL on accounts.email reads every row under ACCESS EXCLUSIVE: reads and writes wait",
        "reads and writes wait (1,000 rows,",
    ),
    "unique": Case(
        "ALTER TABLE accounts ADD CONSTRAINT accounts_email_key UNIQUE (email);",
        "disallowed-unique-constraint",
        3,
        22,
        "ADD UNIQUE accounts_email_key builds its index under ACCESS EXCLUSIVE: reads and writes on "
        "accounts wait",
        "reads and writes on accounts wait (1,000 rows,",
    ),
    "primary key": Case(
        "ALTER TABLE accounts ADD PRIMARY KEY (id);",
        "adding-serial-primary-key-field",
        3,
        22,
        "ADD PRIMARY KEY builds its index under ACCESS EXCLUSIVE: reads and writes on accounts wait",
        "reads and writes on accounts wait (1,000 rows,",
    ),
    "drop table": Case(
        "DROP TABLE sessions;",
        "ban-drop-table",
        3,
        1,
        "DROP TABLE sessions deletes the table and its rows",
        "DROP TABLE sessions deletes the table and its rows (1,000 rows,",
    ),
    "drop column": Case(
        "ALTER TABLE accounts DROP COLUMN nickname;",
        "ban-drop-column",
        3,
        22,
        "DROP COLUMN accounts.nickname deletes its values; code that still uses it fails",
        "DROP COLUMN accounts.nickname deletes its values (1,000 rows,",
    ),
    "rename table": Case(
        "ALTER TABLE accounts RENAME TO customers;",
        "renaming-table",
        3,
        22,
        "RENAME accounts TO customers: code that uses accounts fails from the moment it commits",
        "RENAME accounts TO customers: code that uses accounts fails",
        sized=False,
    ),
    "rename column": Case(
        "ALTER TABLE accounts RENAME COLUMN email TO mail;",
        "renaming-column",
        3,
        22,
        "RENAME COLUMN accounts.email TO mail: code that uses email fails from the moment it commits",
        "RENAME COLUMN accounts.email TO mail",
        sized=False,
    ),
    "concurrently in a transaction": Case(
        "CREATE INDEX CONCURRENTLY accounts_owner_idx ON accounts (owner_id);",
        "ban-concurrent-index-creation-in-transaction",
        3,
        1,
        "CREATE INDEX CONCURRENTLY cannot run inside a transaction, and this section runs in one: PostgreSQL "
        "refuses it (SQLSTATE 25001) and dbledger refuses the migration",
        "CREATE INDEX CONCURRENTLY cannot run inside a transaction",
        sized=False,
    ),
    "commit": Case(
        "COMMIT;",
        "transaction-nesting",
        3,
        1,
        "COMMIT would end the transaction dbledger runs this migration in: dbledger refuses the migration",
        "COMMIT would end the transaction",
        sized=False,
    ),
    "update without where": Case(
        "UPDATE accounts SET balance = 0;",
        "update-or-delete-without-where",
        3,
        1,
        "UPDATE without WHERE writes every row of accounts in one transaction; each row stays locked "
        "until it commits",
        "writes every row of accounts (1,000 rows,",
    ),
    "delete without where": Case(
        "DELETE FROM sessions;",
        "update-or-delete-without-where",
        3,
        1,
        "DELETE without WHERE deletes every row of sessions; each row stays locked until it commits",
        "deletes every row of sessions (1,000 rows,",
    ),
    "syntax error": Case(
        "SELEC 1;",
        "syntax-error",
        3,
        1,
        'PostgreSQL\'s parser rejects the statement: syntax error at or near "SELEC"',
        "syntax error at or near",
        sized=False,
    ),
}


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, [f.format() for f in findings]
    return findings[0]


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_each_rule_without_a_database(case: Case, migrations_dir: Path) -> None:
    finding = only(lint(migrations_dir, ("001_change.sql", HEAD + case.sql + "\n")))

    assert (finding.rule, finding.severity, finding.line, finding.column) == (
        case.rule,
        RULES[case.rule].severity,
        case.line,
        case.column,
    )
    assert case.offline in finding.message
    assert finding.path == migrations_dir / "001_change.sql"
    assert finding.help == RULES[case.rule].safer
    assert "rows," not in finding.message  # no database: no size


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_each_rule_against_a_live_table(case: Case, migrations_dir: Path, catalog: PostgresCatalog) -> None:
    finding = only(lint(migrations_dir, ("001_change.sql", HEAD + case.sql + "\n"), catalog=catalog))

    assert (finding.rule, finding.line, finding.column) == (case.rule, case.line, case.column)
    assert case.connected in finding.message
    assert bool(SIZE.search(finding.message)) is case.sized, finding.message


# The same statements on tables an earlier file of the run creates: new, so empty and unseen.
ON_NEW_TABLES = [
    "CREATE INDEX fresh_owner_idx ON fresh (owner_id);",
    "ALTER TABLE fresh ALTER COLUMN balance TYPE bigint;",
    "ALTER TABLE fresh ADD COLUMN token uuid DEFAULT gen_random_uuid();",
    "ALTER TABLE fresh ADD COLUMN region text NOT NULL;",
    "ALTER TABLE fresh ADD CONSTRAINT fresh_owner_fk FOREIGN KEY (owner_id) REFERENCES owners (id);",
    "ALTER TABLE fresh ALTER COLUMN email SET NOT NULL;",
    "ALTER TABLE fresh ADD PRIMARY KEY (id);",
    "ALTER TABLE fresh DROP COLUMN email;",
    "ALTER TABLE fresh RENAME COLUMN email TO mail;",
    "UPDATE fresh SET balance = 0;",
    "DROP TABLE fresh;",
]


@pytest.mark.parametrize("connected", [False, True], ids=["offline", "connected"])
def test_a_table_created_by_an_earlier_file_is_not_existing(
    connected: bool, migrations_dir: Path, live: str
) -> None:
    create = HEAD + "CREATE TABLE fresh (id bigint, owner_id bigint, email text, balance integer);\n"
    later = HEAD + "\n".join(ON_NEW_TABLES) + "\n"
    with psycopg.connect(live, autocommit=True) as conn:
        found = lint(
            migrations_dir,
            ("001_create.sql", create),
            ("002_change.sql", later),
            catalog=PostgresCatalog(conn) if connected else None,
        )
    assert found == []


# One table, two spellings: unqualified is the default schema (public without a database, the
# connection's current_schema() with one). Each creates a table, then indexes it as new.
SPELLINGS = {
    "qualified, then not": "CREATE TABLE public.foo (a int);\nCREATE INDEX foo_a ON foo (a);\n",
    "not, then qualified": "CREATE TABLE bar (a int);\nCREATE INDEX bar_a ON public.bar (a);\n",
    "quoted": 'CREATE TABLE "public"."baz" (a int);\nCREATE INDEX baz_a ON baz (a);\n',
    "renamed": "CREATE TABLE new (a int);\nALTER TABLE new RENAME TO new2;\nCREATE INDEX n2_a ON new2 (a);\n",
    "renamed, other spellings": "CREATE TABLE public.old (a int);\nALTER TABLE old RENAME TO old2;\n"
    + "ALTER TABLE public.old2 RENAME TO old3;\nCREATE INDEX o3_a ON old3 (a);\n",
    "select into": "SELECT 1 AS a INTO sel;\nCREATE INDEX sel_a ON public.sel (a);\n",
    "create table as": "CREATE TABLE cta AS SELECT 1 AS a;\nCREATE INDEX cta_a ON public.cta (a);\n"
    + "ALTER TABLE cta ALTER COLUMN a TYPE bigint;\n",
}


@pytest.mark.parametrize("connected", [False, True], ids=["offline", "connected"])
@pytest.mark.parametrize("sql", SPELLINGS.values(), ids=list(SPELLINGS))
def test_a_new_table_is_new_however_its_name_is_spelled(
    sql: str, connected: bool, migrations_dir: Path, live: str
) -> None:
    with psycopg.connect(live, autocommit=True) as conn:
        found = lint(
            migrations_dir, ("001_new.sql", HEAD + sql), catalog=PostgresCatalog(conn) if connected else None
        )
    assert found == []


def test_a_table_of_another_schema_is_another_table(migrations_dir: Path) -> None:
    sql = HEAD + "CREATE TABLE app.x (a int);\nCREATE INDEX x_a ON x (a);\nALTER TABLE app.x RENAME TO y;\n"
    found = lint(migrations_dir, ("001_other.sql", sql))
    assert [(f.rule, f.line, f.message) for f in found] == [
        (
            "require-concurrent-index-creation",
            4,
            "CREATE INDEX x_a without CONCURRENTLY: writes to x wait until the index is built",
        )
    ]  # x is public.x; renaming the new app.x is fine


def test_connected_an_unqualified_name_is_in_the_connection_s_current_schema(
    migrations_dir: Path, live: str
) -> None:
    in_app = HEAD + "CREATE TABLE app.fresh (a int);\nCREATE INDEX fresh_a ON fresh (a);\n"
    in_public = HEAD + "CREATE TABLE public.fresh (a int);\nCREATE INDEX fresh_a ON fresh (a);\n"
    with psycopg.connect(live, autocommit=True, options="-c search_path=app") as conn:
        assert lint(migrations_dir, ("001_fresh.sql", in_app), catalog=PostgresCatalog(conn)) == []
        other = only(lint(migrations_dir, ("001_fresh.sql", in_public), catalog=PostgresCatalog(conn)))
    assert (other.rule, other.line) == ("require-concurrent-index-creation", 4)  # fresh is app.fresh
    assert lint(migrations_dir) == []  # without a database: public, the table just created


def test_the_command_accepts_an_index_on_a_new_table_spelled_another_way(migrations_dir: Path) -> None:
    write(migrations_dir, "001_new.sql", HEAD + "".join(SPELLINGS.values()))

    result = cli(migrations_dir, "--no-database")

    assert (result.returncode, result.stdout) == (0, "lint: no findings in 1 file(s)\n"), result.output


ON_ITS_OWN = "-- migrate:up transaction:false\n"
ADD_FK_NOT_VALID = (
    "ALTER TABLE accounts ADD CONSTRAINT accounts_owner_fk FOREIGN KEY (owner_id) REFERENCES owners (id) "
    "NOT VALID;\n"
)
SAFE = {
    "index concurrently": ON_ITS_OWN
    + "CREATE INDEX CONCURRENTLY accounts_owner_idx ON accounts (owner_id);\n",
    "drop index concurrently": ON_ITS_OWN + "DROP INDEX CONCURRENTLY accounts_email_idx;\n",
    "constant defaults": HEAD
    + "ALTER TABLE accounts ADD COLUMN active boolean NOT NULL DEFAULT true;\n"
    + "ALTER TABLE accounts ADD COLUMN created_at timestamptz DEFAULT now();\n"
    + "ALTER TABLE accounts ADD COLUMN note text;\n",
    "not valid": HEAD
    + ADD_FK_NOT_VALID
    + "ALTER TABLE accounts ADD CONSTRAINT accounts_balance_check CHECK (balance >= 0) NOT VALID;\n",
    "unique using index": HEAD
    + "ALTER TABLE accounts ADD CONSTRAINT accounts_email_key UNIQUE USING INDEX accounts_email_idx;\n",
    "update with where": HEAD + "UPDATE accounts SET balance = 0 WHERE balance IS NULL;\n",
    "not null after a validated check": "-- migrate:up transaction:false\n"
    + "ALTER TABLE accounts ADD CONSTRAINT accounts_email_not_null CHECK (email IS NOT NULL) NOT VALID;\n"
    + "ALTER TABLE accounts VALIDATE CONSTRAINT accounts_email_not_null;\n"
    + "ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;\n",
    "create and rename a new table": HEAD + "CREATE TABLE t (a int);\nALTER TABLE t RENAME TO u;\n",
}


@pytest.mark.parametrize("sql", SAFE.values(), ids=list(SAFE))
def test_the_safe_forms_give_no_finding(sql: str, migrations_dir: Path) -> None:
    assert lint(migrations_dir, ("001_safe.sql", sql)) == []


def test_catalog_only_type_changes_give_no_finding_against_the_live_table(
    migrations_dir: Path, catalog: PostgresCatalog
) -> None:
    widen = HEAD + "ALTER TABLE accounts ALTER COLUMN email TYPE varchar(200);\n"
    to_text = HEAD + "ALTER TABLE accounts ALTER COLUMN email TYPE text;\n"
    assert lint(migrations_dir, ("001_widen.sql", widen), ("002_text.sql", to_text), catalog=catalog) == []


def test_set_not_null_with_a_validated_check_in_the_database(
    migrations_dir: Path, catalog: PostgresCatalog
) -> None:
    sql = HEAD + "ALTER TABLE accounts ALTER COLUMN balance SET NOT NULL;\n"  # accounts_balance_not_null
    assert lint(migrations_dir, ("001_not_null.sql", sql), catalog=catalog) == []
    offline = only(lint(migrations_dir))
    assert offline.rule == "adding-not-nullable-field"


def test_validate_in_the_transaction_that_added_it_not_valid(migrations_dir: Path) -> None:
    sql = HEAD + ADD_FK_NOT_VALID + "ALTER TABLE accounts VALIDATE CONSTRAINT accounts_owner_fk;\n"
    finding = only(lint(migrations_dir, ("001_fk.sql", sql)))
    assert (finding.rule, finding.line, finding.column) == ("constraint-missing-not-valid", 4, 22)
    assert finding.message.startswith(
        "VALIDATE CONSTRAINT accounts_owner_fk runs in the transaction that added it"
    )
    assert finding.help == "validate it in a later migration (each migration is its own transaction)"
    # In the next migration (its own transaction) the same VALIDATE is the safe way.
    later = HEAD + "ALTER TABLE accounts VALIDATE CONSTRAINT accounts_owner_fk;\n"
    write(migrations_dir, "001_fk.sql", sql.rsplit("ALTER TABLE accounts VALIDATE", 1)[0])
    assert lint(migrations_dir, ("002_validate.sql", later)) == []


def test_concurrently_inside_an_explicit_begin_of_a_transaction_false_section(migrations_dir: Path) -> None:
    sql = (
        "-- migrate:up transaction:false\nBEGIN;\nCREATE INDEX CONCURRENTLY i ON accounts (email);\nCOMMIT;\n"
    )
    finding = only(lint(migrations_dir, ("001_index.sql", sql)))
    assert (finding.rule, finding.line, finding.column) == (
        "ban-concurrent-index-creation-in-transaction",
        3,
        1,
    )
    assert "cannot run inside a transaction, and a BEGIN above opened one" in finding.message


def test_positions_point_at_the_clause_across_lines_and_statements(migrations_dir: Path) -> None:
    sql = (
        "-- migrate:up\n"
        "SELECT 1; CREATE INDEX accounts_owner_idx ON accounts (owner_id);\n"
        "ALTER TABLE accounts\n"
        "    ADD COLUMN note text,\n"
        "    ALTER COLUMN balance TYPE bigint;\n"
        '/* café */ ALTER TABLE "comptes_é" RENAME COLUMN a TO b;\n'
    )
    found = lint(migrations_dir, ("001_many.sql", sql))
    assert [(f.rule, f.line, f.column) for f in found] == [
        ("require-concurrent-index-creation", 2, 11),
        ("changing-column-type", 5, 5),
        ("renaming-column", 6, 36),
    ]


# -- statements no rule reads -----------------------------------------------------------------

# Each statement a rule reads, behind statements no rule reads (those are not parsed into a tree).
READ_AMONG_UNREAD = (
    "-- migrate:up\n"
    "INSERT INTO accounts (id) VALUES (1);\n"
    "COPY accounts (id) FROM '/tmp/accounts.csv';\n"
    "GRANT SELECT ON accounts TO PUBLIC;\n"
    "COMMENT ON TABLE accounts IS 'drop table sessions';\n"
    "SET search_path TO public;\n"
    "DO $$ BEGIN PERFORM 1; END $$;\n"
    "SELECT count(*) FROM accounts;\n"
    "SET lock_timeout = 0;\n"
    "ALTER TABLE accounts ADD COLUMN note text;\n"
    "SELECT id INTO copied FROM accounts;\n"
    "CREATE INDEX copied_id ON copied (id);\n"
    "WITH gone AS (SELECT 1) DELETE FROM sessions;\n"
    "INSERT INTO accounts (id) VALUES (1,, 2);\n"
    "COMMIT;\n"
)


def test_statements_no_rule_reads_are_skipped_but_not_the_others(migrations_dir: Path) -> None:
    found = lint(migrations_dir, ("001_mixed.sql", READ_AMONG_UNREAD))

    assert [(f.rule, f.line, f.column) for f in found] == [
        ("require-lock-timeout", 10, 1),  # the SET lock_timeout before it was read
        ("update-or-delete-without-where", 13, 1),
        ("syntax-error", 14, 37),  # an INSERT is still checked for syntax
        ("transaction-nesting", 15, 1),
    ]
    assert "(SET lock_timeout on line 9)" in found[0].message
    assert found[2].message == 'PostgreSQL\'s parser rejects the statement: syntax error at or near ","'


def test_a_data_load_gives_no_finding_but_its_syntax_error(migrations_dir: Path) -> None:
    rows = [f"INSERT INTO accounts (id, email) VALUES ({i}, 'a{i}');" for i in range(2000)]
    rows[1500] = "INSERT INTO accounts (id, email) VALUES (1500 'a1500');"
    sql = HEAD + "\n".join(rows) + "\n"

    finding = only(lint(migrations_dir, ("001_load.sql", sql)))

    assert (finding.rule, finding.line, finding.column) == ("syntax-error", 1503, 47)
    assert finding.message == "PostgreSQL's parser rejects the statement: syntax error at or near \"'a1500'\""


# -- lock timeouts ----------------------------------------------------------------------------

ADD_NOTE = "ALTER TABLE accounts ADD COLUMN note text;\n"


def test_no_lock_timeout_finding_under_dbledger_s_default(migrations_dir: Path) -> None:
    assert lint(migrations_dir, ("001_note.sql", HEAD + ADD_NOTE)) == []


def test_a_lock_wait_without_a_limit_is_a_finding(migrations_dir: Path) -> None:
    finding = only(lint(migrations_dir, ("001_note.sql", HEAD + ADD_NOTE), waits=WaitPolicy(lock_timeout=0)))
    assert (finding.rule, finding.severity, finding.line, finding.column) == (
        "require-lock-timeout",
        "warning",
        3,
        1,
    )
    assert finding.message == (
        "ALTER TABLE takes ACCESS EXCLUSIVE on accounts and waits for it without a limit (the run's "
        "statement lock timeout is 0: --statement-lock-timeout or statement_lock_timeout): while it "
        "waits, every query on accounts queues behind it"
    )


def test_a_section_option_or_a_set_decides_the_limit(migrations_dir: Path) -> None:
    zero = WaitPolicy(lock_timeout=0)
    bounded = "-- migrate:up lock_timeout:5s\n" + ADD_NOTE
    assert lint(migrations_dir, ("001_note.sql", bounded), waits=zero) == []
    set_first = HEAD + "SET lock_timeout = '2s';\n" + ADD_NOTE
    assert lint(migrations_dir, ("001_note.sql", set_first), waits=zero) == []

    unbounded = "-- migrate:up lock_timeout:0\n" + ADD_NOTE
    finding = only(lint(migrations_dir, ("001_note.sql", unbounded)))
    assert "(lock_timeout:0 on the section's marker line)" in finding.message
    reset = HEAD + "SET LOCAL lock_timeout TO 0;\n" + ADD_NOTE
    finding = only(lint(migrations_dir, ("001_note.sql", reset)))
    assert finding.line == 4
    assert "waits for it without a limit (SET lock_timeout on line 3):" in finding.message


def test_a_new_table_s_lock_needs_no_limit(migrations_dir: Path) -> None:
    sql = HEAD + "CREATE TABLE t (a int);\nALTER TABLE t ADD COLUMN b int;\n"
    assert lint(migrations_dir, ("001_t.sql", sql), waits=WaitPolicy(lock_timeout=0)) == []


# -- suppressions -----------------------------------------------------------------------------


def test_a_suppression_with_a_reason_silences_its_rules(migrations_dir: Path) -> None:
    sql = (
        HEAD
        + "-- dbledger:ignore ban-drop-table,ban-drop-column the feature was removed in v2\n"
        + "DROP TABLE sessions;\n"
        + "DROP TABLE owners;\n"
    )
    finding = only(lint(migrations_dir, ("001_drop.sql", sql)))
    assert (finding.rule, finding.line) == ("ban-drop-table", 5)  # the next statement is not covered


def test_a_suppression_without_a_reason_is_a_finding_and_silences_nothing(migrations_dir: Path) -> None:
    sql = HEAD + "-- dbledger:ignore ban-drop-table\nDROP TABLE sessions;\n"
    found = lint(migrations_dir, ("001_drop.sql", sql))
    assert [(f.rule, f.line, f.column) for f in found] == [
        ("invalid-suppression", 3, 1),
        ("ban-drop-table", 4, 1),
    ]
    assert found[0].message == (
        "the suppression of ban-drop-table gives no reason, so it suppresses nothing: say why the "
        "statement is safe, e.g. '-- dbledger:ignore ban-drop-table the table is empty in production'"
    )
    assert found[0].path == migrations_dir / "001_drop.sql"


def test_an_unknown_rule_in_a_suppression_is_a_finding(migrations_dir: Path) -> None:
    sql = (
        HEAD
        + "  -- dbledger:ignore ban-drop-tabel, ban-drop-table obsolete since 2023\nDROP TABLE sessions;\n"
    )
    finding = only(lint(migrations_dir, ("001_drop.sql", sql)))
    assert (finding.rule, finding.severity, finding.line, finding.column) == (
        "invalid-suppression",
        "error",
        3,
        3,
    )
    assert (
        finding.message == "unknown rule 'ban-drop-tabel' in the suppression: did you mean 'ban-drop-table'?"
    )


def test_a_suppression_that_precedes_no_statement_is_a_finding(migrations_dir: Path) -> None:
    sql = HEAD + "-- dbledger:ignore ban-drop-table obsolete\n\nDROP TABLE sessions;\n"
    found = lint(migrations_dir, ("001_drop.sql", sql))
    assert [f.rule for f in found] == ["invalid-suppression", "ban-drop-table"]
    assert (
        "is not on the line just before a statement, so it suppresses nothing: move it there"
        in found[0].message
    )


def test_a_comment_inside_a_statement_is_not_a_suppression(migrations_dir: Path) -> None:
    sql = (
        "-- migrate:up\n"
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "  -- dbledger:ignore ban-drop-table\n"
        "  RETURN NEW;\n"
        "END;\n"
        "$$;\n"
        "ALTER TABLE accounts\n"
        "  -- dbledger:ignore ban-drop-column the column is unused\n"
        "  DROP COLUMN nickname;\n"
    )
    found = lint(migrations_dir, ("001_function.sql", sql))
    # Line 4 is the function's text: no invalid-suppression. Line 9 is inside the ALTER TABLE,
    # not before it: it silences nothing, and the finding points at DROP COLUMN, past it.
    assert [(f.rule, f.line, f.column) for f in found] == [("ban-drop-column", 10, 3)]


# -- the command line -------------------------------------------------------------------------


def shown(path: Path) -> Path:
    """A file of migrations_dir as the command line prints it: from the directory it runs in."""
    return path.relative_to(path.parent.parent)


def cli(folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return run_cli("lint", "--dir", str(folder), *args, cwd=folder.parent, env={**NO_ACTIONS, **(env or {})})


def test_exit_0_with_warnings_only_and_the_one_line_form(migrations_dir: Path) -> None:
    write(migrations_dir, "001_rename.sql", HEAD + "ALTER TABLE accounts RENAME COLUMN email TO mail;\n")

    result = cli(migrations_dir)

    assert result.returncode == 0, result.output
    assert result.stdout.splitlines() == [
        f"{shown(migrations_dir / '001_rename.sql')}:3:22 renaming-column warning RENAME COLUMN "
        "accounts.email TO mail: code that uses email fails from the moment it commits",
        f"  help: {RULES['renaming-column'].safer}",
        "lint: 0 error(s), 1 warning(s) in 1 file(s)",
    ]
    assert "no database" in result.stderr


def test_exit_1_on_an_error_and_the_files_given(migrations_dir: Path) -> None:
    write(migrations_dir, "001_fine.sql", HEAD + "CREATE TABLE t (a int);\n")
    bad = write(migrations_dir, "002_drop.sql", HEAD + "DROP TABLE sessions;\n")

    folder = cli(migrations_dir)
    named = cli(migrations_dir, str(bad))
    clean = cli(migrations_dir, str(migrations_dir / "001_fine.sql"))

    assert folder.returncode == 1, folder.output
    assert (
        folder.stdout.splitlines()[0]
        == f"{shown(bad)}:3:1 ban-drop-table error DROP TABLE sessions deletes the table and its rows"
    )
    assert "dbledger: error: 1 lint error(s) in 2 file(s): fix each as its help line says" in folder.stderr
    assert named.returncode == 1
    assert "in 1 file(s)" in named.stderr
    assert (clean.returncode, clean.stdout) == (0, "lint: no findings in 1 file(s)\n")


def test_exit_2_on_bad_usage(migrations_dir: Path) -> None:
    write(migrations_dir, "notes.txt", "hello\n")
    missing = cli(migrations_dir, str(migrations_dir / "009_none.sql"))
    not_sql = cli(migrations_dir, str(migrations_dir / "notes.txt"))
    folder = cli(migrations_dir, str(migrations_dir))

    assert missing.returncode == 2
    assert f"dbledger: error: cannot lint '{migrations_dir / '009_none.sql'}': no such file" in missing.stderr
    assert not_sql.returncode == 2
    assert "not a .sql file (lint takes migration files)" in not_sql.stderr
    assert folder.returncode == 2
    assert f"a folder, not a file; lint a folder with --dir {migrations_dir}" in folder.stderr


def test_json_is_one_document_with_the_findings(migrations_dir: Path) -> None:
    path = write(migrations_dir, "001_drop.sql", HEAD + "DROP TABLE sessions;\n")

    result = cli(migrations_dir, "--json")

    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert (document["database"], document["files"], document["errors"], document["warnings"]) == (
        None,
        [str(shown(path))],
        1,
        0,
    )
    assert document["findings"] == [
        {
            "path": str(shown(path)),
            "line": 3,
            "column": 1,
            "rule": "ban-drop-table",
            "severity": "error",
            "message": "DROP TABLE sessions deletes the table and its rows",
            "help": RULES["ban-drop-table"].safer,
        }
    ]
    assert document["error"]["type"] == "LintFailed"


def test_github_actions_annotations_on_stderr(migrations_dir: Path) -> None:
    path = write(migrations_dir, "001_two.sql", HEAD + "DROP TABLE sessions;\nALTER TABLE a RENAME TO b;\n")

    result = cli(migrations_dir, env={"GITHUB_ACTIONS": "true"})
    plain = cli(migrations_dir)

    annotations = [line for line in result.stderr.splitlines() if line.startswith("::")]
    assert annotations == [
        f"::error file={shown(path)},line=3,col=1,title=ban-drop-table::DROP TABLE sessions deletes the "
        "table and its rows",
        f"::warning file={shown(path)},line=4,col=15,title=renaming-table::RENAME a TO b: code that uses "
        "a fails from the moment it commits",
    ]
    assert result.stdout == plain.stdout  # stdout is the same with or without annotations
    assert "::" not in plain.stderr


SQLITE_TRIGGER = (
    "-- migrate:up\n"
    "CREATE TABLE t (a int, b int);\n"
    "CREATE TRIGGER t_b AFTER INSERT ON t BEGIN UPDATE t SET b = 1 WHERE a = NEW.a; END;\n"
)


def test_with_a_sqlite_database_lint_says_so_and_lints_nothing(migrations_dir: Path) -> None:
    write(migrations_dir, "001_trigger.sql", SQLITE_TRIGGER)
    database = migrations_dir.parent / "app.sqlite3"
    url = f"sqlite:///{database}"
    why = (
        f"the configured database is SQLite ({url}, from --database-url) and lint's rules are "
        "PostgreSQL's (--no-database reads the files as PostgreSQL)"
    )

    result = cli(migrations_dir, "--database-url", url)
    as_json = cli(migrations_dir, "--database-url", url, "--json")
    from_env = cli(migrations_dir, env={"DATABASE_URL": url})

    assert (result.returncode, result.stdout) == (0, f"lint: nothing linted: {why}\n"), result.output
    document = json.loads(as_json.stdout)
    assert (as_json.returncode, document["files"], document["findings"], document["skipped"]) == (
        0,
        [],
        [],
        why,
    )
    assert from_env.returncode == 0
    assert "from DATABASE_URL) and lint's rules are PostgreSQL's" in from_env.stdout
    assert not database.exists()  # not even opened
    report = dbledger.api.lint(database_url=url, directory=migrations_dir)
    assert (report.skipped, report.files, report.findings) == (why, [], [])
    report.check()  # no error


def test_without_a_database_configured_sqlite_files_are_read_as_postgresql(migrations_dir: Path) -> None:
    write(migrations_dir, "001_trigger.sql", SQLITE_TRIGGER)
    url = f"sqlite:///{migrations_dir.parent / 'app.sqlite3'}"

    unconfigured = cli(migrations_dir)
    asked = cli(migrations_dir, "--database-url", url, "--no-database")

    for result in (unconfigured, asked):
        assert result.returncode == 1, result.output
        assert rules(result) == ["syntax-error", "transaction-nesting"]  # PostgreSQL has no such trigger
        assert "no database" in result.stderr


def test_against_postgresql_lint_reads_the_pending_migrations_and_the_live_sizes(
    pg_url: str, migrations_dir: Path
) -> None:
    write(
        migrations_dir,
        "001_create.sql",
        HEAD + "CREATE TABLE items (id int);\nDROP TABLE IF EXISTS legacy;\n",
    )
    up = run_cli("up", "--database-url", pg_url, "--dir", str(migrations_dir), cwd=migrations_dir.parent)
    assert up.returncode == 0, up.output
    query(pg_url, "INSERT INTO items SELECT generate_series(1, 1000); ANALYZE items")
    write(migrations_dir, "002_index.sql", HEAD + "CREATE INDEX items_id_idx ON items (id);\n")

    connected = cli(migrations_dir, "--database-url", pg_url)
    offline = cli(migrations_dir, "--database-url", pg_url, "--no-database")

    assert connected.returncode == 1
    assert rules(connected) == ["require-concurrent-index-creation"]  # 001 is applied: not linted
    assert SIZE.search(connected.stdout), connected.stdout
    password = pg_url.split("@")[0].rsplit(":", 1)[1]
    assert "dbledger: database postgresql://postgres:***@" in connected.stderr  # the database it read
    assert password not in connected.output
    # Without the database every file is linted; legacy counts as existing, and items is new:
    # 001, earlier in the run, creates it.
    assert rules(offline) == ["ban-drop-table"]

    (migrations_dir / "002_index.sql").unlink()  # every migration left is applied
    nothing = cli(migrations_dir, "--database-url", pg_url)
    assert (nothing.returncode, nothing.stdout) == (
        0,
        "lint: no pending migration to lint (--no-database lints every file)\n",
    )


def rules(result: Result) -> list[str]:
    """The rule of each finding line of ``result``'s stdout."""
    return [line.split(" ")[1] for line in result.stdout.splitlines() if not line.startswith(("  ", "lint:"))]


def applied_accounts(url: str, folder: Path) -> None:
    """001 creates accounts and is applied: later migrations find it existing."""
    write(folder, "001_accounts.sql", HEAD + "CREATE TABLE accounts (id int, email text);\n")
    done = run_cli("up", "--database-url", url, "--dir", str(folder), cwd=folder.parent, env=NO_ACTIONS)
    assert done.returncode == 0, done.output
    assert "warning" not in done.stderr


def test_up_warns_for_the_migrations_it_applies(pg_url: str, migrations_dir: Path) -> None:
    applied_accounts(pg_url, migrations_dir)
    path = write(
        migrations_dir, "002_index.sql", HEAD + "CREATE INDEX accounts_email_idx ON accounts (email);\n"
    )
    args = ["up", "--database-url", pg_url, "--dir", str(migrations_dir)]

    result = run_cli(*args, cwd=migrations_dir.parent, env=NO_ACTIONS)

    assert result.returncode == 0, result.output
    assert (
        f"dbledger: warning: {shown(path)}:3:1 require-concurrent-index-creation error CREATE INDEX "
        "accounts_email_idx without CONCURRENTLY: writes to accounts wait until the index is built (0 rows,"
    ) in result.stderr
    assert f"\n  help: {RULES['require-concurrent-index-creation'].safer}\n" in result.stderr
    assert query(pg_url, "SELECT to_regclass('accounts_email_idx') IS NOT NULL") == [(True,)]


def test_up_strict_refuses_and_applies_nothing(pg_url: str, migrations_dir: Path) -> None:
    applied_accounts(pg_url, migrations_dir)
    write(migrations_dir, "002_create.sql", HEAD + "CREATE TABLE invoices (id int);\n")
    path = write(
        migrations_dir, "003_index.sql", HEAD + "CREATE INDEX accounts_email_idx ON accounts (email);\n"
    )
    args = ["up", "--strict", "--database-url", pg_url, "--dir", str(migrations_dir)]

    refused = run_cli(*args, cwd=migrations_dir.parent, env=NO_ACTIONS)
    as_json = run_cli(*args, "--json", cwd=migrations_dir.parent, env=NO_ACTIONS)

    assert refused.returncode == 1, refused.output
    assert (
        f"dbledger: error: up --strict: {shown(path)}:3 require-concurrent-index-creation in a pending "
        "migration: nothing was applied; fix the statement as the help line says ('dbledger lint' shows "
        "every finding), or suppress it with '-- dbledger:ignore require-concurrent-index-creation REASON' "
        "on the line before the statement"
    ) in refused.stderr
    assert not table_exists(pg_url, "invoices")  # not even the clean migration before it
    document = json.loads(as_json.stdout)
    assert (document["ok"], document["error"]["type"]) == (False, "LintFailed")
    assert [f["rule"] for f in document["findings"]] == ["require-concurrent-index-creation"]

    write(
        migrations_dir,
        "003_index.sql",
        HEAD + "-- dbledger:ignore require-concurrent-index-creation accounts has 10 rows\n"
        "CREATE INDEX accounts_email_idx ON accounts (email);\n",
    )
    allowed = run_cli(*args, cwd=migrations_dir.parent, env=NO_ACTIONS)
    assert allowed.returncode == 0, allowed.output
    assert table_exists(pg_url, "invoices")


def test_up_with_nothing_pending_does_not_import_the_parser(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create.sql", HEAD + "CREATE TABLE invoices (id int);\n")
    first = run_cli("up", "--database-url", pg_url, "--dir", str(migrations_dir), cwd=migrations_dir.parent)
    assert first.returncode == 0, first.output
    code = (
        "import sys, dbledger; "
        f"report = dbledger.migrate({pg_url!r}, {str(migrations_dir)!r}, strict=True); "
        "print(len(report.applied), 'pglast' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "False"]


# -- squawk -----------------------------------------------------------------------------------

# Where dbledger and squawk differ on the fixtures, for the rules both have: (file, rule) -> the
# tool that reports it. docs/lint.md explains each; the test fails when the list is not exact.
DIFFERENCES = {
    ("009_disallowed_unique_constraint.sql", "constraint-missing-not-valid"): "squawk",
    ("010_adding_primary_key.sql", "constraint-missing-not-valid"): "squawk",
    ("030_index_on_new_table.sql", "require-concurrent-index-creation"): "squawk",
    (
        "031_concurrently_in_migration_transaction.sql",
        "ban-concurrent-index-creation-in-transaction",
    ): "dbledger",
    ("032_validate_in_same_transaction.sql", "constraint-missing-not-valid"): "dbledger",
}
# Both tools have the rule, with other conditions: squawk wants a SET lock_timeout in every
# file, dbledger's runner sets one (this fires only when it is 0). Compared apart.
NOT_COMPARED = {"require-lock-timeout"}


def squawk() -> str:
    """squawk's path: SQUAWK_BIN (scripts/test installs it and sets this), else where it is."""
    configured = os.environ.get("SQUAWK_BIN")
    if configured:
        assert Path(configured).is_file(), f"SQUAWK_BIN={configured} does not exist: run scripts/test"
        return configured
    root = Path(__file__).parent.parent
    for candidate in (
        root / ".cache/squawk/node_modules/.bin/squawk",
        Path("/opt/squawk/node_modules/.bin/squawk"),
    ):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("squawk")
    if found is None:
        pytest.skip("squawk is not installed here: scripts/test installs npm's squawk-cli into .cache/squawk")
    return found


def by_file(pairs: set[tuple[str, str]], rules: set[str]) -> set[tuple[str, str]]:
    return {(name, rule) for name, rule in pairs if rule in rules}


def test_the_same_rules_as_squawk_on_the_same_files() -> None:
    files = sorted(FIXTURES.glob("*.sql"))
    done = subprocess.run(
        [squawk(), "--reporter", "json", *map(str, files)], capture_output=True, text=True, check=False
    )
    assert done.returncode in (0, 1), done.stderr  # 1: it found something
    theirs = {(Path(item["file"]).name, item["rule_name"]) for item in json.loads(done.stdout)}
    ours = {(m.path.name, f.rule) for m in discover(FIXTURES) for f in lint_migrations([m])}
    shared = {rule.id for rule in RULES.values() if rule.squawk == rule.id} - NOT_COMPARED

    only_ours = by_file(ours - theirs, shared)
    only_theirs = by_file(theirs - ours, shared)

    assert {pair: "dbledger" for pair in only_ours} | {pair: "squawk" for pair in only_theirs} == DIFFERENCES
    both = by_file(ours & theirs, shared)
    assert {rule for _, rule in both} == shared  # every shared rule is shown by a fixture both report
    # require-lock-timeout: both when the limit is 0; squawk alone where dbledger's 3 s applies.
    assert ("034_lock_timeout_zero.sql", "require-lock-timeout") in ours & theirs
    assert ("001_changing_column_type.sql", "require-lock-timeout") in theirs - ours


def test_docs_cover_every_rule_and_the_differences() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for rule in RULES.values():
        assert f"`{rule.id}`" in text, f"docs/lint.md does not document {rule.id}"
    for name, differing in DIFFERENCES:
        assert name in text, f"docs/lint.md does not explain {name} ({differing})"
    assert "-- dbledger:ignore" in text
