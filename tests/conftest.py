"""Fixtures: a real PostgreSQL cluster for the session, a fresh database per test, real SQLite
files, and helpers to write migration files, run the command line and query the database.

Set DBLEDGER_TEST_POSTGRES_URL to an existing server's admin URL to use it instead of starting a
cluster (each test still gets its own database there).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from dbledger.testing import Cluster, temporary_postgres

_counter = itertools.count()

# Tests send SIGINT to the commands they start, as Ctrl-C would. A suite started in the background
# (nohup, `cmd &` in a script, some CI runners) inherits SIGINT ignored, and so would those
# commands: handling it here makes each child start with SIGINT at its default again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The checksum records dbledger keeps between runs (dbledger.checksumcache) go to a folder of
# this test run's own, for the tests and every command line they start.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="dbledger-test-cache-")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--postgres-only",
        action="store_true",
        help="run only the tests that talk to PostgreSQL (the contract suite CI runs on each "
        "version; docs/postgres-versions.md)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--postgres-only"):
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        params = getattr(item, "callspec", None)
        backend = params.params.get("db_url") if params is not None else None
        talks = (
            "pg_server" in getattr(item, "fixturenames", ())
            or backend == "postgresql"
            or item.get_closest_marker("postgres") is not None
        )
        (kept if talks and backend != "sqlite" else dropped).append(item)
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept


@dataclass
class ExternalServer:
    admin_url: str

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        # A URL with the password in it, as the cluster's own URLs are (tests read it back).
        return urlunsplit(urlsplit(self.admin_url)._replace(path=f"/{name}"))

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Cluster | ExternalServer]:
    external = os.environ.get("DBLEDGER_TEST_POSTGRES_URL")
    if external:
        yield ExternalServer(external)
        return
    with temporary_postgres() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_server: Cluster | ExternalServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; its URL carries a password."""
    name = f"t{os.getpid()}_{next(_counter)}"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test body on every backend, against a real database each time."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir()
    return folder


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()
