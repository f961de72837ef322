"""The pytest plugin: migrated databases for a project's tests, and the checks every migrations
folder should pass, collected as tests. Installed with dbledger (entry point ``pytest11``) and
opt-in: until a project names its migrations folder, it adds its options and nothing else (no
fixture, no test, no database driver imported)::

    [tool.pytest.ini_options]
    dbledger_migrations = "migrations"

or ``pytest --dbledger-migrations migrations``. Then ``dbledger.integrations.pytest_fixtures``
is registered; docs/ci.md ("The pytest plugin") lists what it gives.

This module is imported by every pytest run of every project where dbledger is installed: it
imports only the standard library and pytest, and reads its settings in ``pytest_configure``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["CHECKS", "PluginSettings", "settings_key"]

# The built-in checks: name -> (what it proves, the dbledger check parts it runs).
CHECKS: dict[str, tuple[str, frozenset[str]]] = {
    "single_linear_history": ("one file per version, each one that up would take", frozenset({"folder"})),
    "upgrade_from_empty": ("every migration applies on an empty database", frozenset({"apply"})),
    "up_down_up_consistency": (
        "each down section undoes its up section, and the up runs again",
        frozenset({"round-trip"}),
    ),
    "queries_still_work": ("the application's queries work on the schema", frozenset({"queries"})),
}


@dataclass(frozen=True)
class PluginSettings:
    """The plugin's settings once enabled, each resolved from its option, then its ini key.
    ``postgres_url``: a server's admin URL (None: DBLEDGER_TEST_POSTGRES_URL, else a throwaway
    cluster); ``check_url``: where the checks run (None: that PostgreSQL server)."""

    migrations: Path
    postgres_url: str | None
    check_url: str | None
    queries: tuple[Path, ...]
    checks: tuple[str, ...]
    checks_given: bool  # asked for on the command line: run them even for a chosen file


settings_key = pytest.StashKey[PluginSettings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dbledger", "dbledger migrations (off until dbledger_migrations is set)")
    group.addoption(
        "--dbledger-migrations",
        metavar="DIR",
        help="enable the dbledger plugin with this migrations folder (ini: dbledger_migrations)",
    )
    group.addoption(
        "--dbledger-postgres-url",
        metavar="URL",
        help="the PostgreSQL server the fixtures make their databases on, as an admin URL (ini: "
        "dbledger_postgres_url; default: $DBLEDGER_TEST_POSTGRES_URL, else a temporary cluster)",
    )
    group.addoption(
        "--dbledger-check-url",
        metavar="URL",
        help="where the built-in checks apply the migrations: a PostgreSQL server or a sqlite:/// URL "
        "(ini: dbledger_check_url; default: the fixtures' PostgreSQL server)",
    )
    group.addoption(
        "--dbledger-queries",
        action="append",
        metavar="PATH",
        help="the application's queries for the queries_still_work check, a file or folder; "
        "repeatable (ini: dbledger_queries)",
    )
    group.addoption(
        "--dbledger-checks",
        metavar="NAMES",
        help=f"the built-in checks to run, comma-separated, or none (ini: dbledger_checks; default: "
        f"all: {', '.join(CHECKS)}); given here, they run even when only some test files are chosen",
    )
    parser.addini("dbledger_migrations", "enable the dbledger plugin with this migrations folder")
    parser.addini("dbledger_postgres_url", "the PostgreSQL server (admin URL) for the dbledger fixtures")
    parser.addini("dbledger_check_url", "where dbledger's built-in checks apply the migrations")
    parser.addini("dbledger_queries", "the application's queries (files or folders)", type="paths")
    parser.addini("dbledger_checks", "dbledger's built-in checks to run, or none", type="args")


def pytest_configure(config: pytest.Config) -> None:
    settings = _settings(config)
    if settings is None:
        return
    config.stash[settings_key] = settings
    from dbledger.integrations import pytest_fixtures

    config.pluginmanager.register(pytest_fixtures, "dbledger-fixtures")


def _settings(config: pytest.Config) -> PluginSettings | None:
    """The settings, or None when the project has not enabled the plugin."""
    given = config.getoption("dbledger_migrations")
    here = config.invocation_params.dir
    ini_dir = config.inipath.parent if config.inipath else config.rootpath
    folder = here / given if given else None
    if folder is None and (value := str(config.getini("dbledger_migrations") or "")):
        folder = ini_dir / value
    if folder is None:
        return None
    queries = [here / q for q in config.getoption("dbledger_queries") or []]
    queries += [Path(p) for p in config.getini("dbledger_queries")]
    chosen_text = config.getoption("dbledger_checks")
    # Comma- or space-separated, on the command line and in the ini file alike.
    words = chosen_text if chosen_text is not None else " ".join(config.getini("dbledger_checks"))
    chosen = words.replace(",", " ").split() or ([] if chosen_text is not None else list(CHECKS))
    chosen = [] if chosen == ["none"] else chosen
    if unknown := [name for name in chosen if name not in CHECKS]:
        raise pytest.UsageError(
            f"dbledger: unknown check {unknown[0]!r} in --dbledger-checks or dbledger_checks: choose "
            f"from {', '.join(CHECKS)}, or none"
        )
    return PluginSettings(
        migrations=folder,
        postgres_url=config.getoption("dbledger_postgres_url") or _ini(config, "dbledger_postgres_url"),
        check_url=config.getoption("dbledger_check_url") or _ini(config, "dbledger_check_url"),
        queries=tuple(queries),
        checks=tuple(chosen),
        checks_given=chosen_text is not None,
    )


def _ini(config: pytest.Config, name: str) -> str | None:
    value = str(config.getini(name) or "")
    return os.path.expandvars(value) if value else None
