"""What the pytest plugin gives a project that enabled it (``dbledger.integrations.pytest_plugin``
registers this module then, and only then).

Fixtures:

- ``dbledger_migrations`` (session): the migrations folder, a ``Path``.
- ``dbledger_postgres_server`` (session): the admin URL of the PostgreSQL server the databases
  are made on: ``--dbledger-postgres-url``, ``dbledger_postgres_url``, ``DBLEDGER_TEST_POSTGRES_URL``,
  else a throwaway cluster (``dbledger.testing.temporary_postgres``) started for the session,
  of the server binaries in ``DBLEDGER_TEST_PG_BIN`` when set (docs/postgres-versions.md).
- ``dbledger_postgres_url`` (each test): the URL of a PostgreSQL database of its own with every
  migration applied, made with ``CREATE DATABASE ... TEMPLATE`` from one database migrated once
  per session (a copy takes milliseconds; migrating would take as long as the migrations), and
  dropped after the test.
- ``dbledger_sqlite_url`` (each test): the same for SQLite: a copy of one migrated file, in the
  test's ``tmp_path``.

Built-in checks, collected as tests named ``dbledger::<check>`` when pytest runs the whole
project (no paths given, or ``testpaths``), or whenever ``--dbledger-checks`` is given; each
runs ``dbledger.api.check`` on a scratch database and fails with its findings.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import pytest

from dbledger.integrations.pytest_plugin import CHECKS, PluginSettings, settings_key

__all__ = [
    "dbledger_check_url",
    "dbledger_migrations",
    "dbledger_postgres_server",
    "dbledger_postgres_url",
    "dbledger_sqlite_url",
]


def _settings(config: pytest.Config) -> PluginSettings:
    return config.stash[settings_key]


def _on(url: str, dbname: str) -> str:
    """``url`` with another database name (its password, options and all kept)."""
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres") and "dbname" not in parse_qs(parts.query):
        return urlunsplit(parts._replace(path="/" + quote(dbname)))
    import psycopg

    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


def _admin(url: str, statement: Any) -> None:
    import psycopg

    from dbledger.redaction import redact

    try:
        with psycopg.connect(url, autocommit=True, application_name="dbledger-pytest") as conn:
            conn.execute(statement)
        return
    except psycopg.Error as exc:
        failure = redact(str(exc).strip(), secrets=True)
    pytest.fail(f"dbledger: {failure}", pytrace=False)


def _create(server: str, name: str, template: str | None = None) -> None:
    from psycopg import sql

    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    _admin(server, statement)


def _drop(server: str, name: str) -> None:
    from psycopg import sql

    _admin(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _migrate(url: str, folder: Path) -> None:
    from dbledger import api
    from dbledger.errors import DbledgerError

    try:
        api.migrate(url, folder)
        return
    except DbledgerError as exc:
        failure = exc.message
    # Outside the except block: the report shows this message alone, not the chained error.
    pytest.fail(f"dbledger: cannot migrate the template database from {folder}: {failure}", pytrace=False)


@pytest.fixture(scope="session")
def dbledger_migrations(pytestconfig: pytest.Config) -> Path:
    """The project's migrations folder."""
    return _settings(pytestconfig).migrations


@pytest.fixture(scope="session")
def dbledger_postgres_server(pytestconfig: pytest.Config) -> Iterator[str]:
    """The admin URL of the PostgreSQL server the fixtures make their databases on."""
    given = _settings(pytestconfig).postgres_url or os.environ.get("DBLEDGER_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    from dbledger.testing import temporary_postgres

    with temporary_postgres() as cluster:
        yield cluster.url()


@pytest.fixture(scope="session")
def _dbledger_postgres_template(dbledger_postgres_server: str, dbledger_migrations: Path) -> Iterator[str]:
    """A database with every migration applied, made once per session; nobody connects to it
    after, so that CREATE DATABASE ... TEMPLATE may copy it."""
    name = f"dbledger_template_{os.getpid()}_{secrets.token_hex(4)}"
    _create(dbledger_postgres_server, name)
    try:
        _migrate(_on(dbledger_postgres_server, name), dbledger_migrations)
        yield name
    finally:
        _drop(dbledger_postgres_server, name)


@pytest.fixture
def dbledger_postgres_url(dbledger_postgres_server: str, _dbledger_postgres_template: str) -> Iterator[str]:
    """A migrated PostgreSQL database for this test alone, dropped after it."""
    name = f"dbledger_test_{os.getpid()}_{secrets.token_hex(4)}"
    _create(dbledger_postgres_server, name, template=_dbledger_postgres_template)
    try:
        yield _on(dbledger_postgres_server, name)
    finally:
        _drop(dbledger_postgres_server, name)


@pytest.fixture(scope="session")
def _dbledger_sqlite_template(tmp_path_factory: pytest.TempPathFactory, dbledger_migrations: Path) -> Path:
    path = tmp_path_factory.mktemp("dbledger") / "template.sqlite3"
    _migrate(f"sqlite:///{path}", dbledger_migrations)
    return path


@pytest.fixture
def dbledger_sqlite_url(_dbledger_sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite database file for this test alone, in its ``tmp_path``."""
    target = tmp_path / "dbledger.sqlite3"
    with (
        closing(sqlite3.connect(f"{_dbledger_sqlite_template.as_uri()}?mode=ro", uri=True)) as source,
        closing(sqlite3.connect(target)) as copy,
    ):
        source.backup(copy)  # the whole file, consistent, whatever its journal mode
    return f"sqlite:///{target}"


@pytest.fixture(scope="session")
def dbledger_check_url(request: pytest.FixtureRequest) -> str:
    """Where the built-in checks apply the migrations: the configured URL, else the fixtures'
    PostgreSQL server (the check makes a scratch database there, and drops it)."""
    given = _settings(request.config).check_url
    if given:
        return given
    server: str = request.getfixturevalue("dbledger_postgres_server")  # started only when needed
    return server


# -- the built-in checks ---------------------------------------------------------------------------


class _Checks(pytest.Collector):
    """The built-in checks, one test function each, under the node ``dbledger``."""

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        return [
            _Check.from_parent(self, name=name, callobj=_check(name))
            for name in _settings(self.config).checks
        ]


class _Check(pytest.Function):
    """A built-in check: a test function that lives in no test module."""

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"dbledger::{self.name}"


def _check(name: str) -> Callable[[str, Path, pytest.Config], None]:
    what, parts = CHECKS[name]

    def check(dbledger_check_url: str, dbledger_migrations: Path, pytestconfig: pytest.Config) -> None:
        from dbledger import api
        from dbledger.errors import DbledgerError

        queries = _settings(pytestconfig).queries
        if "queries" in parts and not queries:
            pytest.skip(
                "no queries to check: name the application's SQL files with dbledger_queries (ini) "
                "or --dbledger-queries"
            )
        try:
            report = api.check(dbledger_check_url, dbledger_migrations, parts=parts, queries=queries)
        except DbledgerError as exc:
            report, refused = None, exc.message
        if report is None:  # outside the except block, so that the report shows the message alone
            pytest.fail(f"{name} ({what}): {refused}", pytrace=False)
        if not report.ok:
            found = "\n".join(f"  {finding.format()}" for finding in report.errors)
            pytest.fail(
                f"{name} ({what}): dbledger check found {len(report.errors)} error(s) in "
                f"{dbledger_migrations}:\n{found}",
                pytrace=False,
            )

    check.__name__ = check.__qualname__ = name
    check.__doc__ = what
    return check


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect: they apply to these tests too
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    settings = _settings(config)
    whole_project = config.args_source != pytest.Config.ArgsSource.ARGS
    if not settings.checks or not (whole_project or settings.checks_given):
        return
    checks = _Checks.from_parent(session, name="dbledger", nodeid="dbledger", path=settings.migrations)
    found = [item for item in checks.collect() if isinstance(item, pytest.Item)]
    # Reported as collected, so that the counts pytest prints include them.
    result: list[pytest.Item | pytest.Collector] = [*found]
    config.hook.pytest_collectreport(report=pytest.CollectReport(checks.nodeid, "passed", None, result))
    items.extend(found)
