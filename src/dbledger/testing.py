"""A throwaway PostgreSQL cluster for tests, benchmarks and CI jobs that test migrations.

    with temporary_postgres() as cluster:
        url = cluster.create_database("app_test")
        dbledger.migrate(url, "migrations")

It runs ``initdb`` and ``pg_ctl`` from the PostgreSQL installed on the machine (``PATH``, then
``/usr/lib/postgresql/*/bin``), on a free loopback port, with durability switched off for speed,
and deletes everything on exit. PostgreSQL refuses to run as root, so under root the cluster
runs as the ``postgres`` user when it exists (``nobody`` otherwise).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def find_postgres_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``, or a RuntimeError saying how to get one."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if candidates:
        return Path(candidates[-1]).parent
    raise RuntimeError(
        "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): "
        "run 'apt-get install postgresql', or set DBLEDGER_TEST_POSTGRES_URL to a server"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Cluster:
    """A running cluster: connect as ``user`` with ``password`` over TCP on 127.0.0.1."""

    port: int
    password: str
    user: str = "postgres"
    host: str = "127.0.0.1"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        _admin(self.url(), f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        _admin(self.url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement.encode())


def _as_user() -> dict[str, Any]:
    """subprocess arguments that drop root privileges, or nothing when not root."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@contextmanager
def temporary_postgres(*, settings: dict[str, str] | None = None) -> Iterator[Cluster]:
    """Start a fresh cluster, yield it, stop it and delete its files."""
    bindir = find_postgres_bin()
    base = Path(tempfile.mkdtemp(prefix="dbledger-pg-"))
    drop = _as_user()
    password = secrets.token_hex(12)
    cluster = Cluster(port=free_port(), password=password)
    data, log = base / "data", base / "postgres.log"
    (base / "pwfile").write_text(password + "\n")
    if drop:
        for path in (base, base / "pwfile"):
            os.chown(path, drop["user"], drop["group"])
    options = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": f"'{base}'",
        "max_connections": "300",
        # A throwaway cluster: durability buys nothing and costs seconds per test session.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        **(settings or {}),
    }
    run: dict[str, Any] = {"cwd": base, "check": True, "capture_output": True, **drop}
    try:
        subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={base / 'pwfile'}",
            ],
            **run,
        )
        flags = " ".join(f"-c {key}={value}" for key, value in options.items())
        subprocess.run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {cluster.port} {flags}",
                "start",
            ],
            **run,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        output = (exc.stdout or b"").decode() + (exc.stderr or b"").decode()
        raise RuntimeError(f"could not start a temporary PostgreSQL: {output}") from None
    try:
        yield cluster
    finally:
        subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            cwd=base,
            capture_output=True,
            check=False,
            **drop,
        )
        shutil.rmtree(base, ignore_errors=True)
