"""Helpers for the connections service's tests: run ``python -m connections_service`` as a real
process on a free port, wait for it, watch its port, read its log; and read a migration file's
sections to build a database by hand, as the incident's developers did with psql."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from connections_service import MIGRATIONS

from dbledger.testing import free_port

StartService = Callable[..., "Service"]

START_TIMEOUT = 60.0  # eight replicas importing FastAPI at once on two cores take a while
# Every service the tests start is given this token for GET /api/db/version.
VERSION_TOKEN = "test-version-token-5b1d"
BEARER = {"Authorization": f"Bearer {VERSION_TOKEN}"}


@dataclass
class Service:
    """One ``python -m connections_service`` process; stdout and stderr go to ``log_path``."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    port_seen_open: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def port_open(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            is_open = sock.connect_ex(("127.0.0.1", self.port)) == 0
        self.port_seen_open |= is_open
        return is_open

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Until ``GET /health`` answers 200; fails with the log when the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"service exited with {self.process.returncode}:\n{self.log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"service not healthy after {timeout}s:\n{self.log}")

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        """The exit code, watching the port the whole time (``port_seen_open``)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"service still running after {timeout}s:\n{self.log}")
            self.port_open()
            time.sleep(0.02)
        self.port_open()
        return self.process.returncode

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def service_starter(folder: Path, secrets: list[str]) -> Iterator[StartService]:
    """A function starting services; on exit every one of them is stopped, then each log is
    checked for the ``secrets`` (the database passwords): none may ever appear."""
    started: list[Service] = []

    def start(
        database_url: str | None, *, directory: Path | None = None, env: dict[str, str] | None = None
    ) -> Service:
        own = ("DATABASE_URL", "DBLEDGER_DIR", "HOST", "PORT", "DATABASE_WAIT", "VERSION_TOKEN")
        environment = {k: v for k, v in os.environ.items() if k not in own}
        port = free_port()
        environment["PORT"] = str(port)
        environment["VERSION_TOKEN"] = VERSION_TOKEN
        if database_url is not None:
            environment["DATABASE_URL"] = database_url
        if directory is not None:
            environment["DBLEDGER_DIR"] = str(directory)
        environment.update(env or {})
        log_path = folder / f"service-{len(started)}-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "connections_service"],
                cwd=folder,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        service = Service(process, port, log_path)
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.stop()
    for service in started:
        for secret in [*secrets, VERSION_TOKEN]:
            assert secret not in service.log, f"a password or token appears in {service.log_path}"


def password_of(database_url: str) -> str:
    """The password in a URL or libpq key/value string (what must never be printed)."""
    password = psycopg.conninfo.conninfo_to_dict(database_url).get("password")
    assert isinstance(password, str), "the test database URL should carry a password"
    assert password
    return password


_MARKER = re.compile(r"^--\s*migrate:(up|down)\b.*$", re.MULTILINE)


def section(name: str, kind: str, folder: Path = MIGRATIONS) -> str:
    """The ``-- migrate:up`` or ``-- migrate:down`` section of the migration whose file stem
    starts with ``name`` (e.g. ``"001"``), read without dbledger."""
    (path,) = folder.glob(f"{name}*.sql")
    parts = _MARKER.split(path.read_text(encoding="utf-8"))
    # ["header", "up", "<up sql>", "down", "<down sql>"]
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    return sections[kind]


def execute_script(database_url: str, script: str) -> None:
    """Run several statements in one transaction with psycopg (no dbledger, no ledger), as
    ``psql -1 -f`` would."""
    with psycopg.connect(database_url) as conn:
        conn.execute(script.encode())
