"""Configuration: command line > environment > ./pyproject.toml > defaults, the URL forms, and
malformed values, both through ``config.resolve`` and from the outside through the command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from dbledger.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_DIRECTORY,
    PYPROJECT_KEYS,
    parse_database_url,
    resolve,
)
from dbledger.errors import ConfigError, UsageError
from tests.helpers import Result, query, run_cli, table_exists, write

CREATE_T = "CREATE TABLE t (id integer);\n"


def pyproject(folder: Path, *, database_url: str | None = None, directory: str | None = None) -> Path:
    lines = ["[project]", 'name = "app"', "", "[tool.dbledger]"]
    if database_url is not None:
        lines.append(f"database_url = {json.dumps(database_url)}")
    if directory is not None:
        lines.append(f"dir = {json.dumps(directory)}")
    return write(folder, "pyproject.toml", "\n".join(lines) + "\n")


def applied(url: str) -> list[str]:
    return [name for (name,) in query(url, "SELECT migration_name FROM schema_migrations ORDER BY id")]


def sqlite_file(path: Path) -> str:
    return f"sqlite:///{path}"


# -- resolve(): the order ----------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    settings = resolve(environ={}, cwd=tmp_path)
    assert DEFAULT_DIRECTORY == "migrations"
    assert DEFAULT_DATABASE_URL == "sqlite:///dbledger.sqlite3"
    assert settings.directory == tmp_path / "migrations"
    assert settings.directory_source == "default"
    assert settings.database.url == "sqlite:///dbledger.sqlite3"
    assert settings.database.dialect == "sqlite"
    assert settings.database.sqlite_path == str(tmp_path / "dbledger.sqlite3")
    assert settings.database_source == "default"


def test_pyproject_beats_defaults(tmp_path: Path) -> None:
    pyproject(tmp_path, database_url="sqlite:///proj.sqlite3", directory="db/migrations")
    settings = resolve(environ={}, cwd=tmp_path)
    assert settings.database.url == "sqlite:///proj.sqlite3"
    assert settings.database.sqlite_path == str(tmp_path / "proj.sqlite3")
    assert settings.database_source == "pyproject.toml"
    assert settings.directory == tmp_path / "db" / "migrations"
    assert settings.directory_source == "pyproject.toml"


def test_environment_beats_pyproject(tmp_path: Path) -> None:
    pyproject(tmp_path, database_url="sqlite:///proj.sqlite3", directory="proj_migrations")
    env = {"DATABASE_URL": "postgresql://app@db.internal/app", "DBLEDGER_DIR": "env_migrations"}
    settings = resolve(environ=env, cwd=tmp_path)
    assert settings.database.url == "postgresql://app@db.internal/app"
    assert settings.database.dialect == "postgresql"
    assert settings.database_source == "DATABASE_URL"
    assert settings.directory == tmp_path / "env_migrations"
    assert settings.directory_source == "DBLEDGER_DIR"


@pytest.mark.parametrize("name", ["DATABASE_URL", "DBLEDGER_DIR"])
def test_a_variable_set_but_empty_is_an_error_not_a_fallback(name: str, tmp_path: Path) -> None:
    # A deploy whose secret did not arrive must not quietly migrate ./dbledger.sqlite3 instead.
    with pytest.raises(ConfigError, match=f"^{name} is set but empty: give it a value, or unset it"):
        resolve(environ={name: " "}, cwd=tmp_path)
    # An explicit command-line value makes the variable irrelevant.
    resolve("sqlite:///x.db", "m", environ={name: ""}, cwd=tmp_path)
    result = run_cli("status", cwd=tmp_path, env={name: ""})
    assert result.returncode == 2
    assert f"{name} is set but empty" in result.stderr


def test_command_line_beats_environment_and_pyproject(tmp_path: Path) -> None:
    pyproject(tmp_path, database_url="sqlite:///proj.sqlite3", directory="proj_migrations")
    env = {"DATABASE_URL": "sqlite:///env.sqlite3", "DBLEDGER_DIR": "env_migrations"}
    settings = resolve("sqlite:///cli.sqlite3", "cli_migrations", environ=env, cwd=tmp_path)
    assert settings.database.sqlite_path == str(tmp_path / "cli.sqlite3")
    assert settings.database_source == "--database-url"
    assert settings.directory == tmp_path / "cli_migrations"
    assert settings.directory_source == "--dir"


@pytest.mark.parametrize(
    ("cli_url", "env", "project_url", "expected_url", "expected_source"),
    [
        (None, {}, None, DEFAULT_DATABASE_URL, "default"),
        (None, {}, "sqlite:///p.db", "sqlite:///p.db", "pyproject.toml"),
        (None, {"DATABASE_URL": "sqlite:///e.db"}, None, "sqlite:///e.db", "DATABASE_URL"),
        (None, {"DATABASE_URL": "sqlite:///e.db"}, "sqlite:///p.db", "sqlite:///e.db", "DATABASE_URL"),
        ("sqlite:///c.db", {}, "sqlite:///p.db", "sqlite:///c.db", "--database-url"),
        ("sqlite:///c.db", {"DATABASE_URL": "sqlite:///e.db"}, None, "sqlite:///c.db", "--database-url"),
        # an empty variable counts as unset
        # the directory's settings do not leak into the database's choice
        (None, {"DBLEDGER_DIR": "x"}, None, DEFAULT_DATABASE_URL, "default"),
    ],
)
def test_database_url_order(
    cli_url: str | None,
    env: dict[str, str],
    project_url: str | None,
    expected_url: str,
    expected_source: str,
    tmp_path: Path,
) -> None:
    if project_url is not None:
        pyproject(tmp_path, database_url=project_url)
    settings = resolve(cli_url, environ=env, cwd=tmp_path)
    assert (settings.database.url, settings.database_source) == (expected_url, expected_source)


@pytest.mark.parametrize(
    ("cli_dir", "env", "project_dir", "expected", "expected_source"),
    [
        (None, {}, None, "migrations", "default"),
        (None, {}, "p", "p", "pyproject.toml"),
        (None, {"DBLEDGER_DIR": "e"}, "p", "e", "DBLEDGER_DIR"),
        ("c", {"DBLEDGER_DIR": "e"}, "p", "c", "--dir"),
        (None, {"DATABASE_URL": "sqlite:///e.db"}, None, "migrations", "default"),
    ],
)
def test_directory_order(
    cli_dir: str | None,
    env: dict[str, str],
    project_dir: str | None,
    expected: str,
    expected_source: str,
    tmp_path: Path,
) -> None:
    if project_dir is not None:
        pyproject(tmp_path, directory=project_dir)
    settings = resolve(None, cli_dir, environ=env, cwd=tmp_path)
    assert settings.directory == tmp_path / expected
    assert settings.directory_source == expected_source


def test_each_value_comes_from_its_own_first_source(tmp_path: Path) -> None:
    pyproject(tmp_path, database_url="sqlite:///p.db", directory="p")
    settings = resolve(None, "c", environ={"DATABASE_URL": "sqlite:///e.db"}, cwd=tmp_path)
    assert settings.database_source == "DATABASE_URL"
    assert settings.directory_source == "--dir"
    settings = resolve(None, None, environ={"DBLEDGER_DIR": "e"}, cwd=tmp_path)
    assert settings.database_source == "pyproject.toml"
    assert settings.directory_source == "DBLEDGER_DIR"


def test_absolute_directory_is_kept(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "sql"
    settings = resolve(None, str(elsewhere), environ={}, cwd=tmp_path / "project")
    assert settings.directory == elsewhere


def test_pyproject_of_a_parent_directory_is_read_relative_to_its_folder(tmp_path: Path) -> None:
    pyproject(tmp_path, database_url="sqlite:///p.db", directory="p")
    child = tmp_path / "src" / "app"
    child.mkdir(parents=True)
    settings = resolve(environ={}, cwd=child)
    assert settings.database_source == "../../pyproject.toml"
    assert settings.directory_source == "../../pyproject.toml"
    assert settings.directory == tmp_path / "p"
    assert settings.database.sqlite_path == str(tmp_path / "p.db")


def test_pyproject_search_stops_at_the_repository_root(tmp_path: Path) -> None:
    pyproject(tmp_path, database_url="sqlite:///outside.db")
    repository = tmp_path / "repo"
    (repository / ".git").mkdir(parents=True)
    (repository / "pkg").mkdir()
    settings = resolve(environ={}, cwd=repository / "pkg")
    assert settings.database_source == "default"


def test_nearest_pyproject_with_the_section_wins(tmp_path: Path) -> None:
    pyproject(tmp_path, database_url="sqlite:///outer.db")
    inner = tmp_path / "inner"
    inner.mkdir()
    write(inner, "pyproject.toml", '[project]\nname = "dbledger-app"\n')  # no section: passed by
    deeper = inner / "deeper"
    deeper.mkdir()
    pyproject(deeper, directory="here")
    settings = resolve(environ={}, cwd=deeper)
    assert (settings.directory, settings.directory_source) == (deeper / "here", "pyproject.toml")
    assert settings.database_source == "default"  # the nearest file with the section decides all


def test_pyproject_without_a_dbledger_table(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[project]\nname = "app"\n\n[tool.ruff]\nline-length = 100\n')
    settings = resolve(environ={}, cwd=tmp_path)
    assert settings.database_source == "default"
    assert settings.directory_source == "default"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"[tool.dbledger\ndir = 'x'\n",
            "not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 15)",
        ),
        (b"[tool.dbledger]\ndir = 5\n", "[tool.dbledger] dir must be a string"),
        (b"[tool.dbledger]\ndatabase_url = ['a']\n", "[tool.dbledger] database_url must be a string"),
        (b"[tool]\ndbledger = 'x'\n", "[tool.dbledger] must be a table"),
        (b"tool = 5\n# dbledger\n", "'tool' must be a table ([tool.dbledger] lives in it), not 5"),
        (b"[tool.dbledger]\n# caf\xe9\ndir = 'x'\n", "line 2: not valid UTF-8: save the file as UTF-8"),
        (
            b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n# dbledger\n",
            "not readable TOML: arrays or tables nested too deeply",
        ),
        (
            b"[tool.dbledger]\ndatabase-url = 'sqlite:///x.db'\n",
            "[tool.dbledger]: unknown key 'database-url'; did you mean 'database_url'? "
            f"(known: {', '.join(PYPROJECT_KEYS)})",
        ),
        (
            b"[tool.dbledger]\ncolour = 'x'\n",
            f"[tool.dbledger]: unknown key 'colour' (known: {', '.join(PYPROJECT_KEYS)})",
        ),
    ],
)
def test_malformed_pyproject(content: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        resolve(environ={}, cwd=tmp_path)
    assert info.value.exit_code == 2
    assert info.value.message == f"{path}: {message}"


def test_unknown_dbledger_variables_are_warned_about(tmp_path: Path) -> None:
    settings = resolve(environ={"DBLEDGER_DIRECTORY": "x", "DBLEDGER_DIR": "y"}, cwd=tmp_path)
    assert settings.warnings == (
        "unknown environment variable DBLEDGER_DIRECTORY; did you mean 'DBLEDGER_DIR'? "
        "(known: DBLEDGER_DIR, DBLEDGER_LAYOUT, DBLEDGER_LEDGER_TABLE, DBLEDGER_SCHEMA, "
        "DBLEDGER_TEST_POSTGRES_URL, DBLEDGER_TEST_PG_BIN): it is ignored",
    )


# -- URL forms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "display"),
    [
        ("postgresql://app:s3cretpw@db.example.com:5432/app", "postgresql://app:***@db.example.com:5432/app"),
        ("postgres://app:s3cretpw@db.example.com/app", "postgres://app:***@db.example.com/app"),
        ("postgresql://app@db.example.com/app", "postgresql://app@db.example.com/app"),
        ("postgresql:///app", "postgresql:///app"),
        (
            "postgresql://db.example.com:6543/app?sslmode=require",
            "postgresql://db.example.com:6543/app?sslmode=require",
        ),
        ("host=db.example.com dbname=app user=app", "host=db.example.com dbname=app user=app"),
        (
            "host=db.example.com dbname=app user=app password=s3cretpw",
            "host=db.example.com dbname=app user=app password=***",
        ),
    ],
)
def test_postgresql_forms(url: str, display: str) -> None:
    database = parse_database_url(url)
    assert database.dialect == "postgresql"
    assert database.url == url  # handed to libpq unchanged
    assert database.display == display
    assert database.sqlite_path is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///app.db", "{cwd}/app.db"),
        ("sqlite:///data/app.db", "{cwd}/data/app.db"),
        ("sqlite:////var/lib/app/app.db", "/var/lib/app/app.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_forms(url: str, expected: str, tmp_path: Path) -> None:
    settings = resolve(url, environ={}, cwd=tmp_path)
    assert settings.database.dialect == "sqlite"
    assert settings.database.sqlite_path == expected.format(cwd=tmp_path)
    assert settings.database.display == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mysql://app:s3cretpw@db/app", "'mysql://app:***@db/app'"),
        ("mssql://db/app", "'mssql://db/app'"),
        ("sqlite://x", "'sqlite://x'"),
        ("sqlite:x.db", "'sqlite:x.db'"),
        ("sqlite:///", "'sqlite:///'"),
        ("postgresql://u:p@h:notaport/db", "'postgresql://u:***@h:notaport/db'"),
        ("postgresql://u@h:99999/db", "'postgresql://u@h:99999/db'"),
        ("just-a-name", "'just-a-name'"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_malformed_urls(url: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_database_url(url)
    assert isinstance(info.value, UsageError)
    assert info.value.exit_code == 2
    assert shown in info.value.message
    assert "s3cretpw" not in info.value.message


def test_malformed_url_in_the_environment_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ={"DATABASE_URL": "mysql://db/app"}, cwd=tmp_path)
    assert "'mysql://db/app'" in info.value.message


# -- from the outside --------------------------------------------------------------------------


def db_line(result: Result) -> str:
    [line] = [line for line in result.stderr.splitlines() if line.startswith("dbledger: database ")]
    return line


def test_cli_defaults(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    write(tmp_path / "migrations", "001_t.sql", CREATE_T)
    result = run_cli("up", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert db_line(result) == (
        f"dbledger: database sqlite:///dbledger.sqlite3 (from default), migrations {tmp_path / 'migrations'}"
    )
    assert applied(sqlite_file(tmp_path / "dbledger.sqlite3")) == ["001_t"]


def test_cli_reads_pyproject_in_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    write(tmp_path / "db", "001_t.sql", CREATE_T)
    pyproject(tmp_path, database_url="sqlite:///proj.sqlite3", directory="db")
    result = run_cli("up", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert db_line(result) == (
        f"dbledger: database sqlite:///proj.sqlite3 (from pyproject.toml), migrations {tmp_path / 'db'}"
    )
    assert applied(sqlite_file(tmp_path / "proj.sqlite3")) == ["001_t"]
    assert not (tmp_path / "dbledger.sqlite3").exists()


def test_cli_environment_beats_pyproject(tmp_path: Path) -> None:
    for folder in ("db", "env_sql"):
        (tmp_path / folder).mkdir()
    write(tmp_path / "db", "001_from_pyproject.sql", CREATE_T)
    write(tmp_path / "env_sql", "001_from_env.sql", CREATE_T)
    pyproject(tmp_path, database_url="sqlite:///proj.sqlite3", directory="db")
    env = {"DATABASE_URL": "sqlite:///env.sqlite3", "DBLEDGER_DIR": "env_sql"}
    result = run_cli("up", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.output
    assert "database sqlite:///env.sqlite3 (from DATABASE_URL)" in db_line(result)
    assert f"migrations {tmp_path / 'env_sql'}" in db_line(result)
    assert applied(sqlite_file(tmp_path / "env.sqlite3")) == ["001_from_env"]
    assert not (tmp_path / "proj.sqlite3").exists()


def test_cli_options_beat_environment_and_pyproject(tmp_path: Path) -> None:
    for folder in ("db", "env_sql", "cli_sql"):
        (tmp_path / folder).mkdir()
    write(tmp_path / "cli_sql", "001_from_cli.sql", CREATE_T)
    pyproject(tmp_path, database_url="sqlite:///proj.sqlite3", directory="db")
    env = {"DATABASE_URL": "sqlite:///env.sqlite3", "DBLEDGER_DIR": "env_sql"}
    result = run_cli(
        "up", "--database-url", "sqlite:///cli.sqlite3", "--dir", "cli_sql", cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.output
    assert "database sqlite:///cli.sqlite3 (from --database-url)" in db_line(result)
    assert f"migrations {tmp_path / 'cli_sql'}" in db_line(result)
    assert applied(sqlite_file(tmp_path / "cli.sqlite3")) == ["001_from_cli"]
    assert not (tmp_path / "env.sqlite3").exists()
    assert not (tmp_path / "proj.sqlite3").exists()


def test_cli_relative_sqlite_path_is_relative_to_the_current_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "migrations").mkdir()
    write(work / "migrations", "001_t.sql", CREATE_T)
    result = run_cli("up", "--database-url", "sqlite:///data/app.db", cwd=work)
    assert result.returncode == 0, result.output
    assert applied(sqlite_file(work / "data" / "app.db")) == ["001_t"]


def test_cli_absolute_sqlite_path(tmp_path: Path, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", CREATE_T)
    target = tmp_path / "abs" / "app.db"
    target.parent.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = f"sqlite:///{target}"
    assert url.startswith("sqlite:////")
    result = run_cli("up", "--database-url", url, "--dir", str(migrations_dir), cwd=elsewhere)
    assert result.returncode == 0, result.output
    assert applied(url) == ["001_t"]
    assert list(elsewhere.iterdir()) == []


def test_cli_sqlite_memory(tmp_path: Path, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", CREATE_T)
    up = run_cli(
        "up", "--json", "--database-url", "sqlite:///:memory:", "--dir", str(migrations_dir), cwd=tmp_path
    )
    assert up.returncode == 0, up.output
    assert [a["name"] for a in json.loads(up.stdout)["applied"]] == ["001_t"]
    assert "database sqlite:///:memory: (from --database-url)" in db_line(up)
    # Nothing survives the process, and no file named ':memory:' was created.
    status = run_cli(
        "status", "--json", "--database-url", "sqlite:///:memory:", "--dir", str(migrations_dir), cwd=tmp_path
    )
    assert status.returncode == 0, status.output
    assert [p["name"] for p in json.loads(status.stdout)["pending"]] == ["001_t"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["migrations"]


@pytest.mark.parametrize("form", ["postgresql", "postgres", "keyvalue"])
def test_cli_postgresql_forms_from_the_environment(form: str, pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    write(tmp_path / "migrations", "001_t.sql", CREATE_T)
    if form == "postgres":
        url = pg_url.replace("postgresql://", "postgres://", 1)
    elif form == "keyvalue":
        url = psycopg.conninfo.make_conninfo("", **psycopg.conninfo.conninfo_to_dict(pg_url))
        assert "://" not in url
    else:
        url = pg_url
    result = run_cli("up", cwd=tmp_path, env={"DATABASE_URL": url})
    assert result.returncode == 0, result.output
    assert "(from DATABASE_URL)" in db_line(result)
    assert applied(pg_url) == ["001_t"]
    assert table_exists(pg_url, "t")
    assert not (tmp_path / "dbledger.sqlite3").exists()


def test_cli_postgresql_from_pyproject(pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "sql").mkdir()
    write(tmp_path / "sql", "001_t.sql", CREATE_T)
    pyproject(tmp_path, database_url=pg_url, directory="sql")
    result = run_cli("up", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert "(from pyproject.toml)" in db_line(result)
    password = urlsplit(pg_url).password
    assert password
    assert password not in result.output
    assert applied(pg_url) == ["001_t"]


MALFORMED_FOR_CLI = [
    ("mysql://app:s3cretpw@db/app", "mysql://app:***@db/app"),
    ("sqlite://x", "sqlite://x"),
    ("postgresql://u:p@h:notaport/db", "postgresql://u:***@h:notaport/db"),
    ("", "the database URL is empty"),
]


@pytest.mark.parametrize(
    ("url", "shown", "source"),
    [
        (url, shown, source)
        for source in ("option", "environment", "pyproject")
        for url, shown in MALFORMED_FOR_CLI
        if url or source != "environment"  # an empty DATABASE_URL counts as unset
    ],
)
def test_cli_malformed_url_is_a_usage_error(url: str, shown: str, source: str, tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    write(tmp_path / "migrations", "001_t.sql", CREATE_T)
    args: list[str] = ["up"]
    env: dict[str, str] = {}
    if source == "option":
        args += ["--database-url", url]
    elif source == "environment":
        env["DATABASE_URL"] = url
    else:
        pyproject(tmp_path, database_url=url)
    result = run_cli(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.output
    assert shown in result.stderr
    assert "s3cretpw" not in result.output
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "dbledger.sqlite3").exists()


def test_cli_malformed_pyproject_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    path = write(tmp_path, "pyproject.toml", "[tool.dbledger]\ndir = 5\n")
    result = run_cli("status", cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert f"{path}: [tool.dbledger] dir must be a string" in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["up", "--bogus"], "unrecognized arguments: --bogus"),
        (["--bogus", "up"], "unrecognized arguments: --bogus"),
        (["status", "--to", "3"], "unrecognized arguments: --to 3"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: COMMAND"),
        (["up", "--to", "three"], "argument --to: 'three' is not a version: give the digits"),
        (["up", "--lock-timeout", "soon"], "argument --lock-timeout: invalid float value: 'soon'"),
        (["baseline"], "required: VERSION"),
    ],
)
def test_cli_bad_usage_is_exit_2(
    args: list[str], fragment: str, sqlite_url: str, migrations_dir: Path
) -> None:
    result = run_cli(*args, cwd=migrations_dir.parent)
    assert result.returncode == 2, result.output
    assert fragment in result.stderr
    assert "usage: dbledger" in result.stderr
    assert result.stdout == ""
    assert not (migrations_dir.parent / "dbledger.sqlite3").exists()


def test_cli_bad_usage_with_json_still_prints_one_json_document(migrations_dir: Path) -> None:
    # "--json prints exactly one JSON document on stdout", also on failure (cli.py's docstring).
    result = run_cli("up", "--json", "--bogus", cwd=migrations_dir.parent)
    assert result.returncode == 2, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is False


@pytest.mark.parametrize(
    "layout",
    [
        ["--database-url", "{url}", "--dir", "{dir}", "up"],
        ["up", "--database-url", "{url}", "--dir", "{dir}"],
        ["--dir", "{dir}", "up", "--database-url", "{url}"],
        ["--database-url", "{url}", "up", "--dir", "{dir}"],
        ["--json", "--dir", "{dir}", "--database-url", "{url}", "up"],
        ["up", "--json", "--dir", "{dir}", "--database-url", "{url}"],
    ],
)
def test_cli_options_before_or_after_the_command(layout: list[str], tmp_path: Path) -> None:
    folder = tmp_path / "sql"
    folder.mkdir()
    write(folder, "001_t.sql", CREATE_T)
    url = sqlite_file(tmp_path / "chosen.db")
    args = [part.format(url=url, dir=folder) for part in layout]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert f"database {url} (from --database-url), migrations {folder}" in db_line(result)
    assert applied(url) == ["001_t"]
    assert not (tmp_path / "dbledger.sqlite3").exists()
    if "--json" in layout:
        assert [a["name"] for a in json.loads(result.stdout)["applied"]] == ["001_t"]


@pytest.mark.parametrize(
    "layout",
    [["--json", "status"], ["status", "--json"]],
)
def test_cli_json_before_or_after_the_command(
    layout: list[str], tmp_path: Path, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_t.sql", CREATE_T)
    result = run_cli(*layout, cwd=tmp_path)
    assert result.returncode == 0, result.output
    document = json.loads(result.stdout)
    assert document["database"] == "sqlite:///dbledger.sqlite3"
    assert [p["name"] for p in document["pending"]] == ["001_t"]


@pytest.mark.parametrize("layout", [["--dir", "{dir}", "new", "x"], ["new", "x", "--dir", "{dir}"]])
def test_cli_new_dir_before_or_after(layout: list[str], tmp_path: Path) -> None:
    folder = tmp_path / "sql"
    result = run_cli(*[part.format(dir=folder) for part in layout], cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert (folder / "001_x.sql").is_file()
    assert not (tmp_path / "migrations").exists()
