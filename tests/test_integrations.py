"""dbledger.integrations used by an application of its own: a FastAPI app started by the
``uvicorn`` command with ``migrating_lifespan`` and ``ledger_router``; then the router in
process, for what each audience may see: ``/health`` is open and names migrations only, the
version endpoint needs the application's token, and neither answers 500 when the database is
gone."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

import dbledger
from dbledger.integrations.fastapi import bearer_token, ledger_router, open_access
from dbledger.integrations.views import ledger_findings
from dbledger.plan import Plan
from dbledger.testing import free_port
from tests.helpers import query, write
from tests.service_helpers import password_of

APP = """
import os
from fastapi import FastAPI
from dbledger.integrations.fastapi import bearer_token, ledger_router, migrating_lifespan

URL, DIR = os.environ["APP_DATABASE_URL"], os.environ["APP_MIGRATIONS"]
app = FastAPI(lifespan=migrating_lifespan(URL, DIR))
app.include_router(ledger_router(URL, DIR, version_access=bearer_token(os.environ["APP_TOKEN"])))
"""
TOKEN = "s3cr3t-version-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def start(tmp_path: Path, url: str, folder: Path, port: int) -> subprocess.Popen[str]:
    write(tmp_path, "app.py", APP)
    env = {**os.environ, "APP_DATABASE_URL": url, "APP_MIGRATIONS": str(folder), "APP_TOKEN": TOKEN}
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
        version = httpx.get(f"http://127.0.0.1:{port}/api/db/version", headers=BEARER).json()
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


def serve(router: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    return app


def get(app: FastAPI, path: str, headers: dict[str, Any] | None = None) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(call())


def test_both_endpoints_answer_503_without_the_location_when_the_database_is_unreachable(
    migrations_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"postgresql://nobody:secretpw99@127.0.0.1:{port}/x"
    app = serve(ledger_router(url, migrations_dir, version_access=open_access))

    health, version = get(app, "/health"), get(app, "/api/db/version")

    for response in (health, version):
        assert response.status_code == 503
        assert response.json() == {
            "status": "unavailable",
            "reasons": ["the database is unreachable: the service's log has the details"],
        }
    # The operator finds where it tried in the log, password masked.
    assert f"cannot connect to postgresql://nobody:***@127.0.0.1:{port}/x" in caplog.text
    assert "secretpw99" not in caplog.text


def test_the_version_endpoint_admits_only_the_applications_token(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (x INTEGER);\n")
    dbledger.migrate(pg_url, migrations_dir)
    app = serve(ledger_router(pg_url, migrations_dir, version_access=bearer_token(TOKEN)))

    assert get(app, "/api/db/version", BEARER).status_code == 200
    refusals = {
        "no header": get(app, "/api/db/version"),
        "another scheme": get(app, "/api/db/version", {"Authorization": f"Basic {TOKEN}"}),
        "another token": get(app, "/api/db/version", {"Authorization": "Bearer guess"}),
        "a prefix": get(app, "/api/db/version", {"Authorization": f"Bearer {TOKEN[:-1]}"}),
        # Not ASCII: a string comparison in constant time would raise; bytes compare.
        "not ASCII": get(app, "/api/db/version", {"Authorization": "Bearer s3cr3t-versión-token".encode()}),
    }
    for case, response in refusals.items():
        assert (case, response.status_code) == (case, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in response.text
    assert refusals["no header"].json() == {"detail": "this endpoint needs 'Authorization: Bearer <token>'"}
    assert refusals["another token"].json() == {
        "detail": "the bearer token is not the one this endpoint accepts"
    }
    # /health stays open: a load balancer has no token.
    assert get(app, "/health").status_code == 200

    # Without a token configured the endpoint is closed to everyone, not open.
    for token in (None, ""):
        closed = serve(ledger_router(pg_url, migrations_dir, version_access=bearer_token(token)))
        for headers in (None, {"Authorization": "Bearer "}, BEARER):
            refused = get(closed, "/api/db/version", headers)
            assert refused.status_code == 401
        assert refused.json()["detail"] == (
            "this endpoint is closed: the application has no token configured for it"
        )


def test_health_names_a_failed_migration_and_only_the_version_endpoint_shows_its_error(
    pg_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (x INTEGER);\n")
    write(migrations_dir, "002_b.sql", "INSERT INTO a VALUES ('private-value-1234');\n")
    with pytest.raises(dbledger.MigrationFailed):
        dbledger.migrate(pg_url, migrations_dir)
    app = serve(ledger_router(pg_url, migrations_dir, version_access=bearer_token(TOKEN)))

    health = get(app, "/health")
    assert health.status_code == 503
    assert health.json() == {
        "status": "unhealthy",
        "version": 1,
        "reasons": ["migration '002_b' failed: its error is in the version endpoint"],
        "warnings": [],
        "running": [],
        "drift": {"breaking": 0, "risky": 0, "slow": 0, "harmless": 0},
    }

    version = get(app, "/api/db/version", BEARER)
    assert version.status_code == 200
    body = version.json()
    [failed] = body["failed"]
    assert failed["name"] == "002_b"
    assert "private-value-1234" in failed["error_message"]
    assert "22P02" in failed["error_message"]
    # Where the database and the files are is the operator's configuration, not the endpoint's.
    assert "database" not in body
    assert "directory" not in body
    assert str(migrations_dir) not in version.text
    assert password_of(pg_url) not in version.text
    assert str(urlsplit(pg_url).hostname) not in version.text


def test_the_openapi_document_declares_every_status_the_router_answers(migrations_dir: Path) -> None:
    app = serve(ledger_router("sqlite:///x.db", migrations_dir, version_access=bearer_token(TOKEN)))

    paths = app.openapi()["paths"]

    assert set(paths["/api/db/version"]["get"]["responses"]) == {"200", "401", "503"}
    for path in ("/health", "/health/ready"):
        assert set(paths[path]["get"]["responses"]) == {"200", "503"}
    assert set(paths["/health/live"]["get"]["responses"]) == {"200"}
    schemas = app.openapi()["components"]["schemas"]
    assert "schema" in schemas["DatabaseVersion"]["properties"]
    assert set(schemas["Health"]["properties"]["status"]["enum"]) == {
        "ok",
        "warning",
        "running",
        "unhealthy",
        "unavailable",
    }


def test_health_answers_503_when_the_server_accepts_and_never_answers(
    silent_server: int, migrations_dir: Path
) -> None:
    url = f"postgresql://app:s3cret@127.0.0.1:{silent_server}/app"
    app = serve(ledger_router(url, migrations_dir, version_access=open_access, connect_timeout=2))

    async def probe() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            # Without a connect timeout libpq would wait for ever; this bound only catches that.
            return await asyncio.wait_for(client.get("/health"), timeout=60)

    response = asyncio.run(probe())

    assert response.status_code == 503
    assert response.json()["reasons"] == ["the database is unreachable: the service's log has the details"]


def test_a_ledger_row_no_dbledger_wrote_is_a_503_not_a_500(
    pg_url: str, migrations_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (x INTEGER);\n")
    dbledger.migrate(pg_url, migrations_dir)
    query(pg_url, "ALTER TABLE schema_migrations ALTER COLUMN version TYPE text")
    query(pg_url, "UPDATE schema_migrations SET version = 'abc'")
    app = serve(ledger_router(pg_url, migrations_dir, version_access=open_access))

    for path in ("/health", "/api/db/version"):
        response = get(app, path)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json()["status"] == "unavailable"
        assert response.json()["reasons"][0].startswith("the ledger could not be read (ValueError)")
    assert "ValueError" in caplog.text


def test_health_names_every_kind_of_trouble_the_plan_classifies() -> None:
    """A kind of trouble added to the plan must reach /health too, or a probe would call a
    database healthy that 'dbledger up' refuses."""
    fine = {"migrations", "rows", "applied", "running"}  # the files, the ledger, and no trouble
    kinds = {f.name for f in dataclasses.fields(Plan)} - fine
    source = inspect.getsource(ledger_findings)
    assert {kind for kind in kinds if f"plan.{kind}" not in source} == set()
