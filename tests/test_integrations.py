"""dbledger.integrations used by an application of its own: a FastAPI app started by the
``uvicorn`` command with ``migrating_lifespan`` and ``ledger_router``."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from dbledger.testing import free_port
from tests.helpers import query, write

APP = """
import os
from fastapi import FastAPI
from dbledger.integrations.fastapi import ledger_router, migrating_lifespan

URL, DIR = os.environ["APP_DATABASE_URL"], os.environ["APP_MIGRATIONS"]
app = FastAPI(lifespan=migrating_lifespan(URL, DIR))
app.include_router(ledger_router(URL, DIR))
"""


def start(tmp_path: Path, url: str, folder: Path, port: int) -> subprocess.Popen[str]:
    write(tmp_path, "app.py", APP)
    env = {**os.environ, "APP_DATABASE_URL": url, "APP_MIGRATIONS": str(folder)}
    command = [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)]
    return subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_lifespan_migrates_before_listening_and_health_reports(
    pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (x INTEGER);\n")
    port = free_port()
    server = start(tmp_path, pg_url, migrations_dir, port)
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # By the time the port is open, the migration has been applied.
        assert query(pg_url, "SELECT migration_name, success FROM schema_migrations") == [("001_a", True)]
        health = httpx.get(f"http://127.0.0.1:{port}/health")
        assert (health.status_code, health.json()["status"]) == (200, "ok")
        version = httpx.get(f"http://127.0.0.1:{port}/api/db/version").json()
        assert version["version"] == 1
        assert [m["name"] for m in version["applied"]] == ["001_a"]

        # A file added while the app runs: not applied yet, so this replica reports it.
        write(migrations_dir, "002_b.sql", "CREATE TABLE b (x INTEGER);\n")
        behind = httpx.get(f"http://127.0.0.1:{port}/health")
        assert behind.status_code == 503
        assert any("002_b" in reason and "pending" in reason for reason in behind.json()["reasons"])
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_lifespan_failure_never_opens_the_port(pg_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    write(migrations_dir, "001_bad.sql", "CREATE TABLE a (x INTEGER);\nSELECT no_such_column FROM a;\n")
    port = free_port()
    server = start(tmp_path, pg_url, migrations_dir, port)
    output, _ = server.communicate(timeout=60)

    assert server.returncode != 0
    assert "migration '001_bad' failed (line 2): 42703" in output
    assert not port_open(port)
    [(success, error)] = query(pg_url, "SELECT success, error_message FROM schema_migrations")
    assert success is False
    assert "no_such_column" in error


def test_health_is_503_when_the_database_is_unreachable(migrations_dir: Path) -> None:
    from fastapi import FastAPI

    from dbledger.integrations.fastapi import ledger_router

    app = FastAPI()
    app.include_router(
        ledger_router(f"postgresql://nobody:secretpw99@127.0.0.1:{free_port()}/x", migrations_dir)
    )

    async def get_health() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/health")

    response = asyncio.run(get_health())
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert "cannot connect" in body["reasons"][0]
    assert "secretpw99" not in json.dumps(body)
