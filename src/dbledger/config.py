"""Resolve where the database and the migrations are, in the documented order.

First found wins: command-line options, then the environment (``DATABASE_URL``,
``DBLEDGER_DIR``), then ``[tool.dbledger]`` in ``./pyproject.toml``, then the defaults
(``migrations`` and the embedded SQLite file ``dbledger.sqlite3``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from dbledger.errors import ConfigError
from dbledger.redaction import redact, remember_secret

DEFAULT_DIRECTORY = "migrations"
DEFAULT_DATABASE_URL = "sqlite:///dbledger.sqlite3"
# Generous: a legitimate migration (an index on a large table) can take minutes, and a replica
# that gives up too early fails its deploy for nothing.
DEFAULT_LOCK_TIMEOUT = 600.0
MAX_LOCK_TIMEOUT = 86400.0


def check_lock_timeout(seconds: float) -> float:
    """A lock wait must be positive and finite (at most a day)."""
    if not 0 < seconds <= MAX_LOCK_TIMEOUT:
        raise ConfigError(
            f"invalid lock timeout {seconds!r}: give a number of seconds above 0 and at most "
            f"{MAX_LOCK_TIMEOUT:g}"
        )
    return seconds


Dialect = Literal["postgresql", "sqlite"]

_LIBPQ_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class Database:
    """A parsed database address. ``display`` is the redacted form, safe to print."""

    url: str
    dialect: Dialect
    display: str
    # SQLite: a file path or ":memory:". PostgreSQL: None (``url`` goes to libpq as it is).
    sqlite_path: str | None = None


@dataclass(frozen=True)
class Settings:
    """Where dbledger works, and where each value came from (for the message on stderr)."""

    database: Database
    directory: Path
    database_source: str
    directory_source: str


def parse_database_url(url: str) -> Database:
    """Parse a PostgreSQL URL, a libpq key/value string or a ``sqlite:///`` URL."""
    url = url.strip()
    if not url:
        raise ConfigError("the database URL is empty: pass --database-url or set DATABASE_URL")
    if url.startswith(("postgresql://", "postgres://")):
        return _parse_postgres_url(url)
    if url.startswith("sqlite:"):
        return _parse_sqlite_url(url)
    if "://" not in url and "=" in url:
        # libpq key/value string ("host=db dbname=app password=..."); libpq validates the rest.
        match = _LIBPQ_PASSWORD.search(url)
        if match:
            remember_secret(match.group(1).strip("'"))
        return Database(url=url, dialect="postgresql", display=redact(url))
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ConfigError(
        f"unsupported database URL {redact(url)!r} (scheme {scheme!r}): use "
        "postgresql://USER@HOST:PORT/DBNAME (password after USER and a colon), a libpq "
        "'key=value' string, or sqlite:///path/to/file.db"
    )


def _parse_postgres_url(url: str) -> Database:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a non-numeric port
    except ValueError as exc:
        raise ConfigError(f"malformed PostgreSQL URL {redact(url)!r}: {exc}") from None
    if parts.netloc.count("@") > 1:
        raise ConfigError(
            f"malformed PostgreSQL URL {redact(url)!r}: more than one '@' before the host; "
            "percent-encode '@' in the user name or password as %40 (and '/' as %2F)"
        )
    if parts.password:
        remember_secret(parts.password)
        remember_secret(unquote(parts.password))
    for value in parse_qs(parts.query).get("password", []):
        remember_secret(value)
    return Database(url=url, dialect="postgresql", display=redact(url))


def _parse_sqlite_url(url: str) -> Database:
    if not url.startswith("sqlite:///"):
        raise ConfigError(
            f"malformed SQLite URL {url!r}: use sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:"
        )
    path = url[len("sqlite:///") :].split("?", 1)[0]
    if not path:
        raise ConfigError(f"malformed SQLite URL {url!r}: the file path is missing")
    return Database(url=url, dialect="sqlite", display=url, sqlite_path=path)


def _pyproject_settings(cwd: Path) -> dict[str, str]:
    pyproject = cwd / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    import tomllib  # only when there is a file to read

    try:
        with pyproject.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{pyproject}: cannot read [tool.dbledger]: {exc}") from None
    section = data.get("tool", {}).get("dbledger", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{pyproject}: [tool.dbledger] must be a table")
    settings: dict[str, str] = {}
    for key in ("database_url", "dir"):
        if key in section:
            value = section[key]
            if not isinstance(value, str):
                raise ConfigError(f"{pyproject}: [tool.dbledger] {key} must be a string")
            settings[key] = value
    return settings


def resolve(
    database_url: str | None = None,
    directory: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Combine explicit values, the environment, pyproject.toml and defaults, first found wins."""
    env = os.environ if environ is None else environ
    here = Path.cwd() if cwd is None else cwd
    project: dict[str, str] | None = None

    def from_project(key: str) -> str | None:
        nonlocal project
        if project is None:
            project = _pyproject_settings(here)
        return project.get(key)

    for name, given in (("DATABASE_URL", database_url), ("DBLEDGER_DIR", directory)):
        if given is None and name in env and not env[name].strip():
            # A deploy whose secret did not arrive must not quietly fall back to the default.
            raise ConfigError(f"{name} is set but empty: give it a value, or unset it to use the default")
    if database_url is not None:
        url, url_source = database_url, "--database-url"
    elif env.get("DATABASE_URL"):
        url, url_source = env["DATABASE_URL"], "DATABASE_URL"
    elif (value := from_project("database_url")) is not None:
        url, url_source = value, "pyproject.toml"
    else:
        url, url_source = DEFAULT_DATABASE_URL, "default"

    if directory is not None:
        folder, dir_source = str(directory), "--dir"
    elif env.get("DBLEDGER_DIR"):
        folder, dir_source = env["DBLEDGER_DIR"], "DBLEDGER_DIR"
    elif (value := from_project("dir")) is not None:
        folder, dir_source = value, "pyproject.toml"
    else:
        folder, dir_source = DEFAULT_DIRECTORY, "default"

    database = parse_database_url(url)
    if database.sqlite_path not in (None, ":memory:") and not os.path.isabs(str(database.sqlite_path)):
        database = Database(
            url=database.url,
            dialect="sqlite",
            display=database.display,
            sqlite_path=str(here / str(database.sqlite_path)),
        )
    path = Path(folder)
    if not path.is_absolute():
        path = here / path
    return Settings(
        database=database,
        directory=path,
        database_source=url_source,
        directory_source=dir_source,
    )
