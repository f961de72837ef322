"""Helpers the tests share: write migration files, query the real database, run the CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def query(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one query on the real database behind ``url`` and return its rows."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            return conn.execute(statement.replace("%s", "?"), params).fetchall()
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement.encode(), params or None)
        return cur.fetchall() if cur.description else []


def table_exists(url: str, table: str) -> bool:
    if url.startswith("sqlite:///"):
        return bool(query(url, "SELECT 1 FROM sqlite_master WHERE type='table' AND name=%s", (table,)))
    return query(url, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0] is True


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """Run ``python -m dbledger ARGS`` as a separate process, as a user would."""
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DBLEDGER_DIR")}
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "dbledger", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def server_version(url: str) -> int:
    """``server_version_num`` of the PostgreSQL server behind ``url`` (e.g. 150018)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.info.server_version


def pg_dump_for(url: str) -> Path | None:
    """The pg_dump of the server's own major version, or skip the test: the server binaries of
    other versions (scripts/postgres) come without client programs, and dbledger refuses a
    pg_dump of another version (tests/test_backup.py shows the refusal). None for SQLite."""
    import pytest

    from dbledger.backup import find_pg_dumps

    if url.startswith("sqlite:"):
        return None
    major = server_version(url) // 10000
    found = find_pg_dumps().get(major)
    if found is None:
        pytest.skip(f"no pg_dump of PostgreSQL {major} on this machine")
    return found
