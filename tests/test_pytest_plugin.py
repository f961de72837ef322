"""The pytest plugin, seen from projects that use it: each runs its own pytest (``pytester``) on
the real PostgreSQL server of this test session, passed down with --dbledger-postgres-url."""

from __future__ import annotations

import pytest

from dbledger.testing import Cluster
from tests.conftest import ExternalServer

pytest_plugins = ["pytester"]

CREATE_ITEMS = """\
-- migrate:up
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
-- migrate:down
DROP TABLE items;
"""
ADD_NOTE = """\
-- migrate:up
ALTER TABLE items ADD COLUMN note text;
-- migrate:down
ALTER TABLE items DROP COLUMN note;
"""
# A down section that does not undo its up: the column stays.
ADD_NOTE_BAD_DOWN = """\
-- migrate:up
ALTER TABLE items ADD COLUMN note text;
-- migrate:down
SELECT 1;
"""
QUERIES = """\
-- params: 1
SELECT name, note FROM items WHERE id = $1;
"""
# Each test writes a row and sees none of the other test's: a database of its own each.
APP_TESTS = """\
import sqlite3

import psycopg
import pytest


@pytest.mark.parametrize("run", [1, 2])
def test_postgres(dbledger_postgres_url, run):
    with psycopg.connect(dbledger_postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (2,)
        conn.execute("INSERT INTO items (id, name, note) VALUES (1, 'written by run ' || %s, 'n')", (run,))


@pytest.mark.parametrize("run", [1, 2])
def test_sqlite(dbledger_sqlite_url, run):
    with sqlite3.connect(dbledger_sqlite_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        conn.execute("INSERT INTO items (id, name, note) VALUES (1, 'written', 'n')")


def test_the_folder(dbledger_migrations):
    assert sorted(p.name for p in dbledger_migrations.iterdir())[0] == "001_items.sql"
"""
ENABLED = """\
[pytest]
dbledger_migrations = migrations
dbledger_queries = queries
filterwarnings = error
"""


@pytest.fixture
def server(pg_server: Cluster | ExternalServer) -> str:
    """The admin URL of this session's server, for the project's own pytest run."""
    return pg_server.admin_url if isinstance(pg_server, ExternalServer) else pg_server.url()


def project(pytester: pytest.Pytester, *, ini: str = ENABLED, second: str = ADD_NOTE) -> None:
    migrations = pytester.mkdir("migrations")
    (migrations / "001_items.sql").write_text(CREATE_ITEMS)
    (migrations / "002_add_note.sql").write_text(second)
    pytester.mkdir("queries").joinpath("app.sql").write_text(QUERIES)
    pytester.makefile(".py", test_app=APP_TESTS)
    pytester.makeini(ini)


def test_each_test_gets_a_migrated_database_of_its_own(pytester: pytest.Pytester, server: str) -> None:
    project(pytester)
    result = pytester.runpytest("--dbledger-postgres-url", server, "test_app.py", "-v")
    result.assert_outcomes(passed=5)
    assert "dbledger::" not in result.stdout.str()  # a chosen file: the built-in checks stay out


def test_the_built_in_checks_pass_on_a_good_folder(pytester: pytest.Pytester, server: str) -> None:
    project(pytester)
    result = pytester.runpytest("--dbledger-postgres-url", server, "-v")
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines(
        [
            "dbledger::single_linear_history PASSED*",
            "dbledger::upgrade_from_empty PASSED*",
            "dbledger::up_down_up_consistency PASSED*",
            "dbledger::queries_still_work PASSED*",
        ]
    )


def test_a_down_that_does_not_revert_fails_its_check(pytester: pytest.Pytester, server: str) -> None:
    project(pytester, second=ADD_NOTE_BAD_DOWN)
    result = pytester.runpytest("--dbledger-postgres-url", server, "-k", "dbledger")
    result.assert_outcomes(passed=3, failed=1, deselected=5)
    result.stdout.fnmatch_lines(
        [
            "*up_down_up_consistency (each down section undoes its up section, and the up runs again): "
            "dbledger check found * error(s) in *migrations:",
            "  migrations/002_add_note.sql:4 round-trip error the down section of 002_add_note does not "
            "undo its up section: after up and down, 1 difference(s):",
            "    - extra column items.note",
            "*FAILED dbledger::up_down_up_consistency*",
        ]
    )


def test_checks_can_be_chosen_and_queries_need_a_source(pytester: pytest.Pytester, server: str) -> None:
    project(pytester, ini="[pytest]\ndbledger_migrations = migrations\nfilterwarnings = error\n")
    result = pytester.runpytest(
        "--dbledger-postgres-url",
        server,
        "--dbledger-checks",
        "single_linear_history,queries_still_work",
        "-k",
        "dbledger",
        "-rs",
    )
    result.assert_outcomes(passed=1, skipped=1, deselected=5)
    result.stdout.fnmatch_lines(
        ["*no queries to check: name the application's SQL files with dbledger_queries*"]
    )


def test_two_files_of_one_version_fail_the_history_check(pytester: pytest.Pytester, server: str) -> None:
    project(pytester)
    (pytester.path / "migrations" / "002_other.sql").write_text("-- migrate:up\nSELECT 1;\n")
    result = pytester.runpytest(
        "--dbledger-postgres-url", server, "--dbledger-checks", "single_linear_history"
    )
    result.assert_outcomes(failed=1, passed=1, errors=4)  # nor can the fixtures migrate such a folder
    result.stdout.fnmatch_lines(
        [
            "single_linear_history (one file per version, each one that up would take): *002_other.sql: "
            "version 2 is also used by 002_add_note.sql: each version must be unique, renumber one of them"
        ]
    )


def test_an_unknown_check_is_a_usage_error(pytester: pytest.Pytester) -> None:
    project(pytester)
    result = pytester.runpytest("--dbledger-checks", "everything")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*dbledger: unknown check 'everything'*choose from single_linear_history*"])


def test_a_project_that_does_not_enable_it_sees_nothing_new(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(
        test_plain="def test_plain():\n    pass\n\ndef test_wants_it(dbledger_postgres_url):\n    pass\n"
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'dbledger_postgres_url' not found*"])
    assert "dbledger::" not in result.stdout.str()
    fixtures = pytester.runpytest("--fixtures")
    assert "dbledger_" not in fixtures.stdout.str()


def test_the_plugin_module_imports_no_driver(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_imports="""
import sys

def test_nothing_heavy():
    loaded = [m for m in ("psycopg", "pglast", "dbledger.integrations.pytest_fixtures") if m in sys.modules]
    assert loaded == []
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.postgres
def test_without_a_server_the_session_starts_its_own(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBLEDGER_TEST_POSTGRES_URL", raising=False)
    project(pytester)
    pytester.makepyfile(
        test_server="""
def test_a_cluster_of_its_own(dbledger_postgres_server, dbledger_postgres_url):
    assert dbledger_postgres_server.startswith("postgresql://postgres:")
    assert dbledger_postgres_url.rsplit("/", 1)[0] == dbledger_postgres_server.rsplit("/", 1)[0]
"""
    )
    result = pytester.runpytest("test_server.py")
    result.assert_outcomes(passed=1)
