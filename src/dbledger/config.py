"""Resolve where the database, the migrations and the ledger are, in the documented order.

First found wins: command-line options, then the environment (``DATABASE_URL``,
``DBLEDGER_DIR``, ``DBLEDGER_LEDGER_TABLE``), then ``[tool.dbledger]`` in ``./pyproject.toml``
(``database_url``, ``dir``, ``ledger_table``), then the defaults (``migrations``, the embedded
SQLite file ``dbledger.sqlite3``, ``schema_migrations``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from dbledger import placeholders
from dbledger.errors import ConfigError
from dbledger.ledger import DEFAULT_LEDGER, DEFAULT_LEDGER_TABLE, LedgerNames
from dbledger.placeholders import Placeholder
from dbledger.redaction import MASK, redact, remember_secret

DEFAULT_DIRECTORY = "migrations"
DEFAULT_DATABASE_URL = "sqlite:///dbledger.sqlite3"
# Generous: a legitimate migration (an index on a large table) can take minutes, and a replica
# that gives up too early fails its deploy for nothing.
DEFAULT_LOCK_TIMEOUT = 600.0
MAX_LOCK_TIMEOUT = 86400.0
# How long a connection attempt may take when neither --connect-timeout, connect_timeout in the
# URL nor PGCONNECT_TIMEOUT says: a server that accepts TCP and never answers must not hang a
# deploy for libpq's default of forever.
DEFAULT_CONNECT_TIMEOUT = 10
# The keys [tool.dbledger] may hold; any other is a usage error naming it.
PYPROJECT_KEYS = (
    "database_url",
    "dir",
    "ledger_table",
    "schema",
    "lock",
    "statement_lock_timeout",
    "concurrently_lock_timeout",
    "statement_timeout",
    "transaction_timeout",
    "lock_retries",
    "lease_ttl",
    "targets",
    "layout",
    "placeholders",
)
# How a migrations folder's files are named and ordered: dbledger's own, or another tool's
# (dbledger.layouts). Not set: found from the folder's files.
LAYOUTS = ("dbledger", "dbmate", "golang-migrate", "flyway", "diesel", "prisma")
# The tools whose history 'dbledger adopt --from' reads (dbledger.adoption).
ADOPT_SOURCES = ("flyway", "golang-migrate", "dbmate", "diesel", "prisma", "alembic", "yoyo")
# Keys whose value may also be a TOML number (seconds, or a count).
_NUMBER_KEYS = (
    "statement_lock_timeout",
    "concurrently_lock_timeout",
    "statement_timeout",
    "transaction_timeout",
    "lock_retries",
    "lease_ttl",
)
# How long a lease lasts without a heartbeat: after a holder died, another run takes over then.
DEFAULT_LEASE_TTL = 30.0
# How runs exclude one another: PostgreSQL's session advisory lock, a lease row in a table (for
# poolers in transaction mode and databases without advisory locks), or the lease when the
# connection is seen to go through a pooler or proxy and the advisory lock otherwise.
LOCK_MODES = ("auto", "advisory", "lease")
# The DBLEDGER_* variables dbledger reads; others draw a warning.
ENVIRONMENT_VARIABLES = (
    "DBLEDGER_DIR",
    "DBLEDGER_LAYOUT",
    "DBLEDGER_LEDGER_TABLE",
    "DBLEDGER_SCHEMA",
    "DBLEDGER_TEST_POSTGRES_URL",
    "DBLEDGER_TEST_PG_BIN",
)


# What a migration's own statements may wait for a table lock (PostgreSQL's lock_timeout) before
# the migration gives up, is rolled back and is tried again: while an ALTER waits for its lock,
# every query on that table queues behind it, so the wait must stay short.
DEFAULT_STATEMENT_LOCK_TIMEOUT = 3.0
# How many times a migration that gave up on a lock is tried again before it fails.
DEFAULT_LOCK_RETRIES = 5
# Before the first retry; doubled for each next one, with jitter, at most MAX_RETRY_DELAY.
DEFAULT_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 60.0
_DURATION = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>ms|s|min|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, None: 1.0}


class WaitPolicy(NamedTuple):
    """How long a migration's statements may wait for the locks they need, and how a migration
    that gave up is tried again. PostgreSQL only: SQLite has one database-wide write lock, which
    dbledger takes before a migration starts."""

    lock_timeout: float = DEFAULT_STATEMENT_LOCK_TIMEOUT  # seconds per statement; 0: no limit
    # CONCURRENTLY's locks block no reads or writes, and a timeout after its first phase leaves
    # an INVALID index behind: no limit unless asked.
    concurrently_lock_timeout: float = 0.0
    statement_timeout: float = 0.0  # seconds per statement; 0: no limit
    transaction_timeout: float = 0.0  # seconds per migration's transaction (PostgreSQL 17+); 0: none
    retries: int = DEFAULT_LOCK_RETRIES
    retry_delay: float = DEFAULT_RETRY_DELAY


DEFAULT_WAITS = WaitPolicy()


def parse_duration(text: str, what: str) -> float:
    """Seconds from ``500ms``, ``3s``, ``2min``, ``1h`` or a plain number of seconds; 0 means no
    limit. ``what`` names the setting in the error."""
    found = _DURATION.match(text)
    if found is None:
        raise ConfigError(
            f"invalid {what} {text!r}: give a duration such as 500ms, 3s, 2min or 1h (0: no limit)"
        )
    seconds = float(found.group("number")) * _UNIT_SECONDS[found.group("unit")]
    return check_wait(seconds, what)


def check_wait(seconds: float, what: str) -> float:
    """A statement's wait: 0 (no limit), or at least a millisecond and at most a day."""
    if seconds != 0 and not 0.001 <= seconds <= MAX_LOCK_TIMEOUT:
        raise ConfigError(
            f"invalid {what} {seconds!r}: give seconds from 0.001 to {MAX_LOCK_TIMEOUT:g}, or 0 for no limit"
        )
    return seconds


def check_wait_policy(policy: WaitPolicy) -> WaitPolicy:
    """Every field of ``policy`` in range, or a ConfigError naming the one that is not."""
    check_wait(policy.lock_timeout, "statement lock timeout")
    check_wait(policy.concurrently_lock_timeout, "CONCURRENTLY lock timeout")
    check_wait(policy.statement_timeout, "statement timeout")
    check_wait(policy.transaction_timeout, "transaction timeout")
    if not 0 <= policy.retries <= 100 or policy.retries != int(policy.retries):
        raise ConfigError(f"invalid lock retries {policy.retries!r}: give a whole number from 0 to 100")
    if not 0 <= policy.retry_delay <= MAX_RETRY_DELAY:
        raise ConfigError(
            f"invalid retry delay {policy.retry_delay!r}: give seconds from 0 to {MAX_RETRY_DELAY:g}"
        )
    return policy


def check_lease_ttl(seconds: float) -> float:
    """A lease lives from a second to an hour: shorter, a busy heartbeat could miss it."""
    if not 1 <= seconds <= 3600:
        raise ConfigError(f"invalid lease time to live {seconds!r}: give seconds from 1 to 3600")
    return seconds


def check_lock_mode(mode: str, what: str = "--lock-mode") -> str:
    if mode not in LOCK_MODES:
        raise ConfigError(f"invalid {what} {mode!r}: give one of {', '.join(LOCK_MODES)}")
    return mode


def project_waits(values: Mapping[str, str], where: str) -> WaitPolicy:
    """The wait policy ``[tool.dbledger]`` sets, the defaults for what it leaves out."""

    def seconds(key: str, default: float) -> float:
        return parse_duration(values[key], f"{where}: [tool.dbledger] {key}") if key in values else default

    policy = DEFAULT_WAITS._replace(
        lock_timeout=seconds("statement_lock_timeout", DEFAULT_WAITS.lock_timeout),
        concurrently_lock_timeout=seconds(
            "concurrently_lock_timeout", DEFAULT_WAITS.concurrently_lock_timeout
        ),
        statement_timeout=seconds("statement_timeout", DEFAULT_WAITS.statement_timeout),
        transaction_timeout=seconds("transaction_timeout", DEFAULT_WAITS.transaction_timeout),
    )
    if "lock_retries" in values:
        text = values["lock_retries"]
        if not text.isdigit():
            raise ConfigError(f"invalid {where}: [tool.dbledger] lock_retries {text!r}: give a whole number")
        policy = check_wait_policy(policy._replace(retries=int(text)))
    return policy


def check_lock_timeout(seconds: float) -> float:
    """A lock wait must be positive and finite (at most a day)."""
    if not 0 < seconds <= MAX_LOCK_TIMEOUT:
        raise ConfigError(
            f"invalid lock timeout {seconds!r}: give a number of seconds above 0 and at most "
            f"{MAX_LOCK_TIMEOUT:g}"
        )
    return seconds


def check_connect_timeout(seconds: float) -> float:
    """A connect timeout is whole seconds, at least 2 (libpq waits at least that long anyway)."""
    if not 2 <= seconds <= MAX_LOCK_TIMEOUT or seconds != int(seconds):
        raise ConfigError(
            f"invalid connect timeout {seconds!r}: give whole seconds, at least 2 and at most "
            f"{MAX_LOCK_TIMEOUT:g}"
        )
    return seconds


Dialect = Literal["postgresql", "sqlite"]

_LIBPQ_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# Characters that end the user-info part of a URL early when they are not percent-encoded.
_RESERVED_IN_USERINFO = {"@": "%40", "#": "%23", "?": "%3F", "/": "%2F", " ": "%20"}
# One host of a netloc: a name or an IPv4 address, or an IPv6 address in brackets, then a port.
_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.%\w]*\]|[^\[\]:/]*)(?::(?P<port>[^:]*))?$")


@dataclass(frozen=True)
class Database:
    """A parsed database address. ``display`` is the redacted form, safe to print."""

    url: str
    dialect: Dialect
    display: str
    # SQLite: a file path or ":memory:". PostgreSQL: None (``url`` goes to libpq as it is).
    sqlite_path: str | None = None
    # PostgreSQL: the target schema named by --schema, the connection's search_path set to it.
    # None: the first schema of a search_path the URL or PGOPTIONS gives, else the whole database.
    schema: str | None = None


@dataclass(frozen=True)
class Settings:
    """Where dbledger works, and where each value came from (for the message on stderr)."""

    database: Database
    directory: Path
    database_source: str
    directory_source: str
    ledger: LedgerNames = DEFAULT_LEDGER
    ledger_source: str = "default"
    warnings: tuple[str, ...] = ()  # for stderr: settings that look meant but are not read
    waits: WaitPolicy = DEFAULT_WAITS  # from [tool.dbledger]; the command line's options win
    lock_mode: str = "auto"  # one of LOCK_MODES
    lease_ttl: float = DEFAULT_LEASE_TTL
    layout: str | None = None  # one of LAYOUTS; None: found from the files
    layout_source: str = "default"
    # [tool.dbledger.placeholders]: ${name} -> its value and how it is quoted
    placeholders: Mapping[str, Placeholder] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for stderr: which database, from where; which folder; which ledger."""
        ledger = "" if self.ledger_source == "default" else f", ledger {self.ledger.qualified()}"
        target = "" if self.database.schema is None else f", schema {self.database.schema}"
        return (
            f"database {self.database.display} (from {self.database_source}){target}, "
            f"migrations {self.directory}{ledger}"
        )


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
        f"unsupported database URL {_without_userinfo(url)!r} (scheme {scheme!r}): use "
        "postgresql://USER@HOST:PORT/DBNAME (password after USER and a colon), a libpq "
        "'key=value' string, or sqlite:///path/to/file.db"
    )


def _without_userinfo(url: str) -> str:
    """The URL with everything before its last '@' masked but the user name, built without a
    URL parser (whose errors could quote the password): safe to print whatever the URL holds."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return redact(url)
    userinfo, _, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if any(char in user for char in _RESERVED_IN_USERINFO):
        return f"{scheme}://{MASK}@{host}"
    return f"{scheme}://{user}:{MASK}@{host}" if colon else f"{scheme}://{user}@{host}"


def _parse_postgres_url(url: str) -> Database:
    display = _without_userinfo(url)
    userinfo = url.partition("://")[2].rpartition("@")[0]
    unencoded = [char for char in _RESERVED_IN_USERINFO if char in userinfo]
    if unencoded:
        codes = ", ".join(
            f"{'a space' if c == ' ' else repr(c)} as {_RESERVED_IN_USERINFO[c]}" for c in unencoded
        )
        raise ConfigError(
            f"malformed PostgreSQL URL {display!r}: the user name or password (all before the last "
            f"'@') holds characters that end that part of a URL early; percent-encode them ({codes}), "
            "or give a libpq key/value string (host=... user=... password=...)"
        )
    try:
        parts = urlsplit(url)
    except ValueError:  # its message would quote the user-info, password and all
        raise ConfigError(
            f"malformed PostgreSQL URL {display!r}: it cannot be read as a URL (a character in it "
            "is not allowed there); percent-encode it, or give a libpq key/value string"
        ) from None
    hosts = parts.netloc.rpartition("@")[2]
    for host in hosts.split(","):  # libpq accepts several hosts: h1:5432,h2:5433
        found = _HOST_PORT.match(host)
        port = found.group("port") if found else None
        if found is None or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            raise ConfigError(
                f"malformed PostgreSQL URL {display!r}: {host.rpartition(':')[2]!r} is not a port "
                "number (1 to 65535)"
            )
    if parts.password:
        remember_secret(parts.password)
        remember_secret(unquote(parts.password))
    for value in parse_qs(parts.query).get("password", []):
        remember_secret(value)
    return Database(url=url, dialect="postgresql", display=redact(display))


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


class _Project(NamedTuple):
    """``[tool.dbledger]`` of the pyproject.toml found, and where that file is."""

    values: dict[str, str]
    path: Path | None = None  # None: no pyproject.toml with the section


def find_pyproject(cwd: Path) -> _Project:
    """The nearest ``pyproject.toml`` with a ``[tool.dbledger]`` section, from ``cwd`` upward to
    the repository root (the first folder holding ``.git``) or the file system's root, as ruff and
    pytest look for their own sections. A pyproject.toml without the section is passed by."""
    for folder in (cwd, *cwd.parents):
        pyproject = folder / "pyproject.toml"
        try:
            raw = pyproject.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raw = None
        except OSError as exc:
            raise ConfigError(f"{pyproject}: cannot read [tool.dbledger]: {exc.strerror}") from None
        # An application's pyproject.toml is read at every start: parse it only when it can hold
        # dbledger's section (in any of TOML's spellings, the name itself appears).
        if raw is not None and b"dbledger" in raw:
            values = dict(_parse_pyproject(str(pyproject), raw))
            if values:
                return _Project(values, pyproject)
        if (folder / ".git").exists():
            break
    return _Project({})


@lru_cache(maxsize=8)
def _parse_pyproject(path: str, raw: bytes) -> tuple[tuple[str, str], ...]:
    """``[tool.dbledger]`` of a pyproject.toml's bytes (cached: an application that calls the
    API at every request reads the same file each time)."""
    import tomllib  # only when there is a section to read

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not valid UTF-8: save the file as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or table
        raise ConfigError(f"{path}: not readable TOML: arrays or tables nested too deeply") from None
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{path}: 'tool' must be a table ([tool.dbledger] lives in it), not {tool!r}")
    section = tool.get("dbledger", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [tool.dbledger] must be a table")
    for key, value in section.items():
        if key not in PYPROJECT_KEYS:
            raise ConfigError(f"{path}: [tool.dbledger]: unknown key {key!r}{_nearest(key, PYPROJECT_KEYS)}")
        if key == "targets":  # the one list: kept as lines, one target each (see project_targets)
            section[key] = _target_lines(path, value)
        elif key == "placeholders":  # the one table: kept as JSON, checked here (see resolve)
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [tool.dbledger.placeholders] must be a table of name = value")
            import json

            section[key] = json.dumps({n: p._asdict() for n, p in placeholders.parse(value, path).items()})
        elif key in _NUMBER_KEYS and isinstance(value, int | float) and not isinstance(value, bool):
            section[key] = str(value)
        elif not isinstance(value, str):
            kind = "a string or a number" if key in _NUMBER_KEYS else "a string"
            raise ConfigError(f"{path}: [tool.dbledger] {key} must be {kind}")
    return tuple(section.items())


def _target_lines(path: str, value: object) -> str:
    """``targets = ["postgresql://...", "tenant_7"]`` as one line per target (a URL or a schema
    name never holds a line break), or a ConfigError naming the entry at fault."""
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{path}: [tool.dbledger] targets must be a non-empty list of strings (database URLs or "
            'schema names), e.g. targets = ["tenant_1", "postgresql://app@db2/app"]'
        )
    for index, entry in enumerate(value):
        if not isinstance(entry, str) or not entry.strip() or "\n" in entry or "\r" in entry:
            shown = redact(entry) if isinstance(entry, str) else entry
            raise ConfigError(
                f"{path}: [tool.dbledger] targets[{index}]: {shown!r} is not a target: give a database "
                "URL or a schema name, one per string"
            )
    return "\n".join(entry.strip() for entry in value)


def project_targets(cwd: Path | None = None) -> tuple[str, list[str]] | None:
    """``targets`` of ``[tool.dbledger]`` (the file as the messages name it, and its entries in
    order), or None when the nearest section has none."""
    here = _current_folder() if cwd is None else cwd
    project = find_pyproject(here)
    if project.path is None or "targets" not in project.values:
        return None
    return os.path.relpath(project.path, here), project.values["targets"].split("\n")


def _nearest(name: str, known: tuple[str, ...]) -> str:
    """ ", did you mean 'x'?" for the known name nearest to ``name``, then the list of them."""
    import difflib

    spelt = {key.lower(): key for key in known}  # 'database-url' and 'Database_URL' are near misses
    close = [spelt[key] for key in difflib.get_close_matches(name.lower().replace("-", "_"), spelt, n=1)]
    listed = f" (known: {', '.join(known)})"
    return f"; did you mean {close[0]!r}?{listed}" if close else listed


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Warnings for ``DBLEDGER_*`` variables dbledger does not read (a misspelt one would
    otherwise leave its setting at the default without a word)."""
    return [
        f"unknown environment variable {name}{_nearest(name, ENVIRONMENT_VARIABLES)}: it is ignored"
        for name in sorted(environ)
        if name.startswith("DBLEDGER_") and name not in ENVIRONMENT_VARIABLES
    ]


def _current_folder() -> Path:
    try:
        return Path.cwd()
    except FileNotFoundError:  # the shell's folder was deleted under it
        raise ConfigError(
            "the current folder no longer exists: cd into an existing folder and run the command again"
        ) from None


# -- the target schema ------------------------------------------------------------------------
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema_name(name: str, source: str = "--schema") -> str:
    """A target schema's name: lower-case letters, digits and '_', as ledger table names are (it
    goes into search_path and pg_dump's --schema unquoted), at most 63, not a system schema."""
    if not _SCHEMA_NAME.match(name) or name.startswith("pg_") or name == "information_schema":
        raise ConfigError(
            f"invalid schema {name!r} (from {source}): give lower-case letters, digits and '_', "
            "starting with a letter or '_', at most 63, not a system schema (e.g. tenant_42)"
        )
    return name


def _with_schema(database: Database, schema: str, source: str) -> Database:
    if database.dialect != "postgresql":
        raise ConfigError(
            f"a target schema ({schema!r}, from {source}) is for PostgreSQL: a SQLite database "
            "has one schema; give each tenant its own database file instead"
        )
    return replace(database, schema=check_schema_name(schema, source))


def resolve(
    database_url: str | None = None,
    directory: str | os.PathLike[str] | None = None,
    *,
    ledger_table: str | None = None,
    schema: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Combine explicit values, the environment, pyproject.toml and defaults, first found wins."""
    env = os.environ if environ is None else environ
    here = _current_folder() if cwd is None else cwd
    project: _Project | None = None

    def choose(
        given: str | None, option: str, variable: str, key: str, default: str
    ) -> tuple[str, str, Path]:
        """The value, where it came from, and the folder a relative path in it is relative to."""
        nonlocal project
        if given is not None:
            return given, option, here
        if variable in env and not env[variable].strip():
            # A deploy whose secret did not arrive must not quietly fall back to the default.
            raise ConfigError(f"{variable} is set but empty: give it a value, or unset it to use the default")
        if env.get(variable):
            return env[variable], variable, here
        if project is None:
            project = find_pyproject(here)
        if project.path is not None and key in project.values:
            # As ruff and pytest do, paths in the file are relative to the file's folder.
            return project.values[key], os.path.relpath(project.path, here), project.path.parent
        # A project's defaults belong to the project: run from a subfolder, the same database.
        return default, "default", here if project.path is None else project.path.parent

    folder_given = None if directory is None else str(directory)
    url, url_source, url_base = choose(
        database_url, "--database-url", "DATABASE_URL", "database_url", DEFAULT_DATABASE_URL
    )
    folder, dir_source, dir_base = choose(folder_given, "--dir", "DBLEDGER_DIR", "dir", DEFAULT_DIRECTORY)
    table, table_source, _ = choose(
        ledger_table, "--ledger-table", "DBLEDGER_LEDGER_TABLE", "ledger_table", DEFAULT_LEDGER_TABLE
    )

    target, target_source, _ = choose(schema, "--schema", "DBLEDGER_SCHEMA", "schema", "")
    layout, layout_source, _ = choose(None, "--layout", "DBLEDGER_LAYOUT", "layout", "")

    database = parse_database_url(url)
    if target_source != "default":  # given, even as '': checked
        database = _with_schema(database, target, target_source)
    if database.sqlite_path not in (None, ":memory:") and not os.path.isabs(str(database.sqlite_path)):
        database = Database(
            url=database.url,
            dialect="sqlite",
            display=database.display,
            sqlite_path=str(url_base / str(database.sqlite_path)),
        )
    path = Path(folder)
    if not path.is_absolute():
        path = dir_base / path
    if project is None:  # every value was given: the file may still set the waits and the lock
        project = find_pyproject(here)
    values = project.values
    where = os.path.relpath(project.path, here) if project.path is not None else "pyproject.toml"
    return Settings(
        waits=project_waits(values, where),
        lock_mode=check_lock_mode(values.get("lock", "auto"), f"{where}: [tool.dbledger] lock"),
        lease_ttl=check_lease_ttl(
            parse_duration(values["lease_ttl"], f"{where}: [tool.dbledger] lease_ttl")
            if "lease_ttl" in values
            else DEFAULT_LEASE_TTL
        ),
        database=database,
        directory=path,
        database_source=url_source,
        directory_source=dir_source,
        ledger=LedgerNames.parse(table),
        ledger_source=table_source,
        warnings=tuple(unknown_variables(env)),
        layout=check_layout(layout, layout_source) if layout_source != "default" else None,
        layout_source=layout_source,
        placeholders=_placeholders(values),
    )


def _placeholders(values: Mapping[str, str]) -> dict[str, Placeholder]:
    if "placeholders" not in values:
        return {}
    import json  # only for a project that has them

    found = {name: Placeholder(**entry) for name, entry in json.loads(values["placeholders"]).items()}
    for name, placeholder in found.items():
        if placeholders.SECRET.search(name):
            remember_secret(placeholder.value, everywhere=True)  # masked in every message from now on
    return found


def check_layout(layout: str, source: str) -> str:
    """``layout`` when it is one of LAYOUTS; ConfigError naming it and where it came from."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r} (from {source}){_nearest(layout, LAYOUTS)}")
    return layout
