"""Back up a database before a risky migration: pg_dump for PostgreSQL, SQLite's online backup API.

    backup = dump_postgres(database, Path("backups"), label="003_clerk_complete_migration")
    print(backup.path, backup.sha256, backup.restore_command)

Each backend calls the one for its database (``Backend.take_backup``).

The file is written under a temporary name in the target directory, flushed to disk and only then
renamed, so a file with a backup's name is always a whole backup. pg_dump never sees the password
on its command line (any local user can read that with ps): it gets a key/value conninfo without
the password, and the password in its environment (``PGPASSWORD``).
"""

from __future__ import annotations

import getpass
import glob
import hashlib
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from dbledger.config import DEFAULT_CONNECT_TIMEOUT, Database
from dbledger.errors import BackupFailed, ConfigError
from dbledger.redaction import redact, remember_secret

__all__ = ["Backup", "client_programs", "copy_sqlite", "dump_postgres", "find_pg_dumps"]

# Debian and Ubuntu install each major version's client programs side by side here.
PG_DUMP_GLOB = "/usr/lib/postgresql/*/bin/pg_dump"


@dataclass(frozen=True)
class Backup:
    """A complete backup file: where it is, its SHA-256, its size, how long it took, how to
    restore it (a shell command; any password is left out, supply it as for pg_dump)."""

    path: Path
    sha256: str
    bytes: int
    seconds: float
    restore_command: str


# Writes the backup into the partial file it is given and returns the command that restores it
# from its final path; raises BackupFailed (through ``failed``) or OSError.
Producer = Callable[[Path, Path, Callable[[str], BackupFailed]], str]


def dump_postgres(
    database: Database,
    directory: Path,
    *,
    label: str,
    schema: str | None = None,
    server_version: int | None = None,
) -> Backup:
    """pg_dump of ``database`` (custom format) into ``directory``, as
    ``<dbname>-<UTC timestamp>-<label>.dump``; with a target ``schema``, of that schema alone
    (its objects and data, the schema itself included), as ``<dbname>.<schema>-...``. The
    pg_dump is the server's own major version (``server_version``, e.g. 150004; asked of the
    server when not given)."""
    try:
        conninfo, password, params = without_password(database)
    except ConfigError as exc:
        raise BackupFailed(f"cannot back up {database.display}: {exc.message}") from None
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user")
    name = str(dbname or os.environ.get("PGUSER") or getpass.getuser())
    # pg_dump reads --schema as a pattern: in double quotes, a name matches only itself.
    only = [] if schema is None else ['--schema="' + schema.replace('"', '""') + '"']
    name = name if schema is None else f"{name}.{schema}"

    def produce(partial: Path, target: Path, failed: Callable[[str], BackupFailed]) -> str:
        version = server_version or _server_version(database, failed)
        program = _pg_dump(conninfo, password, partial, failed, only, version)
        address = shlex.quote(_without_password(database.url, conninfo))
        return (
            f"{program} --clean --if-exists --no-owner --single-transaction --dbname {address} "
            f"{shlex.quote(str(target))}"
        )

    return _write(database, directory, name, ".dump", label, produce)


def _server_version(database: Database, failed: Callable[[str], BackupFailed]) -> int:
    import psycopg

    try:
        url = database.url
        given = "connect_timeout" in psycopg.conninfo.conninfo_to_dict(url)
        if not given and "PGCONNECT_TIMEOUT" not in os.environ:  # a silent server must not hang it
            url = psycopg.conninfo.make_conninfo(url, connect_timeout=DEFAULT_CONNECT_TIMEOUT)
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.info.server_version
    except psycopg.Error as exc:
        raise failed(f"cannot connect: {exc}") from None


def without_password(database: Database) -> tuple[str, str | None, dict[str, Any]]:
    """What the PostgreSQL client programs (pg_dump, pg_restore) get: the libpq key/value string
    of ``database`` without its password (command lines are visible to every user of the
    machine), the password to pass in PGPASSWORD, and the other connection parameters. The
    password is remembered for redaction. ConfigError for a malformed URL."""
    import psycopg

    try:
        params = psycopg.conninfo.conninfo_to_dict(database.url)
    except psycopg.Error as exc:
        raise ConfigError(f"malformed PostgreSQL URL {database.display!r}: {exc}") from None
    found = params.pop("password", None)
    password = None if found is None else str(found)
    remember_secret(password)
    return psycopg.conninfo.make_conninfo("", **params), password, params


def copy_sqlite(database: Database, directory: Path, *, label: str) -> Backup:
    """SQLite's online backup of ``database`` into ``directory``, as
    ``<file stem>-<UTC timestamp>-<label>.sqlite3``."""
    if database.sqlite_path == ":memory:":
        raise BackupFailed(
            f"cannot back up {database.display}: an in-memory database lives only inside its "
            "own connection; use a database file to take backups"
        )
    source = Path(str(database.sqlite_path)).resolve()

    def produce(partial: Path, target: Path, failed: Callable[[str], BackupFailed]) -> str:
        if not source.is_file():
            raise failed("the database file does not exist")
        with (
            closing(sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)) as src,
            closing(sqlite3.connect(partial)) as dest,
        ):
            src.backup(dest)  # one step: a consistent snapshot; other connections may stay open
        live = shlex.quote(str(source))
        # A leftover journal or WAL belongs to the old file and would be replayed onto the copy.
        return f"rm -f {live}-journal {live}-wal {live}-shm && cp {shlex.quote(str(target))} {live}"

    return _write(database, directory, source.stem, ".sqlite3", label, produce)


def _write(
    database: Database, directory: Path, name: str, suffix: str, label: str, produce: Producer
) -> Backup:
    """Create ``directory`` if missing, let ``produce`` write the backup under a temporary name,
    flush it, then rename it to its final name: a file with a backup's name is a whole backup."""
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{_safe(name)}-{stamp}-{_safe(label)}"
    target, n = directory.resolve() / f"{base}{suffix}", 2

    def failed(reason: str) -> BackupFailed:
        reason = redact(reason.strip(), secrets=True)
        return BackupFailed(f"cannot back up {database.display} to '{target}': {reason}")

    try:
        while target.exists():  # never overwrite a backup taken in the same second
            target, n = target.with_name(f"{base}-{n}{suffix}"), n + 1
        directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        os.close(handle)
    except OSError as exc:
        raise failed(f"cannot write to directory '{directory}': {exc}") from None
    partial = Path(temporary)
    try:
        restore = produce(partial, target, failed)
        digest, size = _sync_and_hash(partial)
        os.replace(partial, target)
    except BaseException as exc:
        with suppress(OSError):
            partial.unlink()
        if isinstance(exc, OSError | sqlite3.Error):
            raise failed(str(exc)) from None
        raise
    with suppress(OSError):  # make the rename durable; some file systems cannot sync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return Backup(target, digest, size, time.monotonic() - started, redact(restore))


def find_pg_dumps() -> dict[int, Path]:
    """Every pg_dump on PATH or in /usr/lib/postgresql/*/bin, by major version; for a version
    found in both, the real binary (PATH may hold Debian's version-choosing wrapper)."""
    found: dict[int, Path] = {}
    seen: set[str] = set()
    for candidate in [*sorted(glob.glob(PG_DUMP_GLOB)), shutil.which("pg_dump")]:
        if not candidate or os.path.realpath(candidate) in seen:
            continue
        seen.add(os.path.realpath(candidate))
        major = _major_of(Path(candidate))
        if major is not None:
            found.setdefault(major, Path(candidate))
    return found


def _major_of(program: Path) -> int | None:
    try:
        done = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\)\s*(\d+)", done.stdout)
    return int(match.group(1)) if done.returncode == 0 and match else None


def client_programs(server_version: int) -> tuple[Path, Path]:
    """pg_dump and pg_restore of the server's own major version, or a BackupFailed saying which
    were found and what to install. An older pg_dump cannot read a newer server; a newer one
    writes what an older server may not load (pg_dump 17 sets transaction_timeout), and a dump
    is restored into the server it came from."""
    major = server_version // 10000
    found = find_pg_dumps()
    program = found.get(major)
    if program is not None and program.with_name("pg_restore").exists():
        return program, program.with_name("pg_restore")
    install = f"install the PostgreSQL {major} client programs (apt-get install postgresql-client-{major})"
    if not found:
        raise BackupFailed(f"pg_dump was not found on PATH or in {Path(PG_DUMP_GLOB).parent}: {install}")
    if program is not None:
        raise BackupFailed(f"pg_restore is missing beside {program}: {install}")
    versions = ", ".join(f"{version} ({path})" for version, path in sorted(found.items()))
    seen = f"pg_dump found is version {versions}" if len(found) == 1 else f"pg_dumps found are {versions}"
    raise BackupFailed(
        f"the server runs PostgreSQL {major}, and the {seen}: a dump "
        f"must be made and restored by the server's own version, PostgreSQL {major}: {install}"
    )


def _pg_dump(
    conninfo: str,
    password: object,
    partial: Path,
    failed: Callable[[str], BackupFailed],
    only: list[str],
    server_version: int,
) -> str:
    """Run pg_dump (with the options ``only``, which narrow it to a schema) into ``partial``;
    return the pg_restore to restore it with."""
    try:
        pg_dump, pg_restore = client_programs(server_version)
    except BackupFailed as exc:
        raise failed(exc.message) from None
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    command = [
        str(pg_dump),
        "--format=custom",
        "--no-password",
        *only,
        f"--file={partial}",
        f"--dbname={conninfo}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise failed(f"{pg_dump} exited with code {done.returncode}: {done.stderr or done.stdout}")
    # The pg_restore next to this pg_dump reads its format; a different one on PATH may not.
    if shutil.which("pg_restore") == str(pg_restore):
        return "pg_restore"
    return str(pg_restore)


def _without_password(url: str, conninfo: str) -> str:
    """The address for the restore command: the URL as given minus its password, or the key/value
    string (password removed) when it was one or the URL carries the password as a parameter."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or "password" in parse_qs(parts.query):
        return conninfo
    userinfo, at, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if at and user else host))


def _sync_and_hash(path: Path) -> tuple[str, int]:
    """Flush the file to disk and return its SHA-256 hex and size."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _safe(part: str) -> str:
    """A file-name-safe version of a database name or label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", part).lstrip(".") or "database"
