"""A throwaway PostgreSQL cluster for tests, benchmarks and CI jobs that test migrations.

    with temporary_postgres() as cluster:
        url = cluster.create_database("app_test")
        dbledger.migrate(url, "migrations")

It runs ``initdb`` and ``pg_ctl`` from the folder named by ``DBLEDGER_TEST_PG_BIN`` when it is set
(``scripts/postgres 13`` installs a major version's server binaries and prints that folder), else
from the PostgreSQL installed on the machine (``PATH``, then ``/usr/lib/postgresql/*/bin``), on a
free loopback port, with durability switched off for speed,
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

BIN_VARIABLE = "DBLEDGER_TEST_PG_BIN"


def find_postgres_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``, or a RuntimeError saying how to get one."""
    chosen = os.environ.get(BIN_VARIABLE)
    if chosen:
        if not (Path(chosen) / "initdb").is_file():
            raise RuntimeError(
                f"{BIN_VARIABLE}={chosen!r} holds no initdb: name the folder of PostgreSQL's server "
                "binaries, for example the one 'scripts/postgres 13' prints"
            )
        return Path(chosen)
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
    """A running cluster: connect as ``user`` with ``password`` over TCP on 127.0.0.1.
    ``stop()`` and ``start()`` take it down and bring it back on the same port, with its data,
    to test what an application does during an outage."""

    port: int
    password: str
    user: str = "postgres"
    host: str = "127.0.0.1"
    # pg_ctl's command line up to the action ("start" or "stop" is appended), with its options.
    control: list[str] = field(default_factory=list, repr=False)
    start_options: list[str] = field(default_factory=list, repr=False)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        _admin(self.url(), f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        _admin(self.url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Stop the server: every session is cut. ``fast`` keeps what was committed; ``immediate``
        is a crash, and with this cluster's durability off it loses the last commits."""
        _pg_ctl([*self.control, "-m", mode, "stop"], check=False)

    def start(self) -> None:
        """Start it again and wait until it accepts connections."""
        _pg_ctl([*self.control, *self.start_options, "start"], check=True)


def _pg_ctl(command: list[str], *, check: bool) -> None:
    # From "/": the working folder may be one the cluster's user cannot enter.
    subprocess.run(command, cwd="/", capture_output=True, check=check, **_as_user())


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
def temporary_postgres(
    *, settings: dict[str, str] | None = None, bindir: Path | None = None
) -> Iterator[Cluster]:
    """Start a fresh cluster of the server binaries in ``bindir`` (by default
    :func:`find_postgres_bin`), yield it, stop it and delete its files."""
    bindir = bindir or find_postgres_bin()
    base = Path(tempfile.mkdtemp(prefix="dbledger-pg-"))
    drop = _as_user()
    password = secrets.token_hex(12)
    port = free_port()
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
    flags = " ".join(f"-c {key}={value}" for key, value in options.items())
    cluster = Cluster(
        port=port,
        password=password,
        control=[str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60"],
        start_options=["-l", str(log), "-o", f"-p {port} {flags}"],
    )
    initdb = [
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
    ]
    try:
        subprocess.run(initdb, cwd=base, check=True, capture_output=True, **drop)
        cluster.start()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        output = (exc.stdout or b"").decode() + (exc.stderr or b"").decode()
        raise RuntimeError(f"could not start a temporary PostgreSQL: {output}") from None
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
