"""A database built without dbledger (tables, no ledger): ``up`` refuses and names the exact
``dbledger baseline`` command, found by replaying the files on a scratch database."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from dbledger.contracts import Version
from dbledger.migrations import discover
from tests.helpers import query, run_cli, table_exists, write

FILES = {
    "001_orgs.sql": "CREATE TABLE orgs (id VARCHAR(255) PRIMARY KEY, name TEXT NOT NULL);\n",
    "002_conns.sql": (
        "CREATE TABLE conns (id VARCHAR(255) PRIMARY KEY,"
        " org_id VARCHAR(255) REFERENCES orgs (id) ON DELETE CASCADE);\n"
        "CREATE INDEX conns_org ON conns (org_id);\n"
    ),
    "003_status.sql": "ALTER TABLE conns ADD COLUMN status VARCHAR(20);\n",
}


def build_by_hand(url: str, folder: Path, upto: int) -> None:
    """What the incident's team did: run old files with psql, no ledger."""
    sections = [m.up.sql for m in discover(folder) if m.version <= Version((upto,))]
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            for sql in sections:
                conn.executescript(sql)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in sections:
            conn.execute(sql.encode())


@pytest.fixture
def folder(migrations_dir: Path) -> Path:
    for name, text in FILES.items():
        write(migrations_dir, name, text)
    return migrations_dir


def test_refusal_names_the_version_the_database_matches(db_url: str, folder: Path, tmp_path: Path) -> None:
    build_by_hand(db_url, folder, upto=2)

    refused = run_cli("--database-url", db_url, "--dir", str(folder), "up", cwd=tmp_path)

    assert refused.returncode == 1
    assert "but no ledger table schema_migrations" in refused.stderr
    assert "exactly what the migrations up to 002_conns produce: run 'dbledger baseline 2'" in refused.stderr
    assert not table_exists(db_url, "schema_migrations")

    baselined = run_cli("--database-url", db_url, "--dir", str(folder), "baseline", "2", cwd=tmp_path)
    assert baselined.returncode == 0
    applied = run_cli("--database-url", db_url, "--dir", str(folder), "up", cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert query(db_url, "SELECT migration_name, state FROM schema_migrations ORDER BY id") == [
        ("001_orgs", "baseline"),
        ("002_conns", "baseline"),
        ("003_status", "applied"),
    ]


def test_a_schema_no_prefix_produces_is_said_so(db_url: str, folder: Path, tmp_path: Path) -> None:
    build_by_hand(db_url, folder, upto=1)
    query(db_url, "CREATE TABLE hand_made (x INTEGER)")

    refused = run_cli("--database-url", db_url, "--dir", str(folder), "up", cwd=tmp_path)

    assert refused.returncode == 1
    assert "matches what no prefix of the migration files produces" in refused.stderr
    assert "'dbledger baseline VERSION'" in refused.stderr
    assert "--allow-existing-schema" in refused.stderr


def test_the_scratch_database_is_dropped(pg_url: str, folder: Path, tmp_path: Path) -> None:
    build_by_hand(pg_url, folder, upto=2)
    run_cli("--database-url", pg_url, "--dir", str(folder), "up", cwd=tmp_path)

    assert query(pg_url, "SELECT datname FROM pg_database WHERE datname LIKE 'dbledger_scratch_%'") == []


def test_without_createdb_the_refusal_still_explains(pg_url: str, folder: Path, tmp_path: Path) -> None:
    build_by_hand(pg_url, folder, upto=2)
    query(pg_url, "CREATE ROLE plain LOGIN PASSWORD 'plainpass123' NOCREATEDB")
    query(pg_url, "GRANT ALL ON SCHEMA public TO plain")
    query(pg_url, "GRANT ALL ON ALL TABLES IN SCHEMA public TO plain")
    parts = urlsplit(pg_url)
    url = parts._replace(netloc=f"plain:plainpass123@{parts.hostname}:{parts.port}").geturl()

    refused = run_cli("--database-url", url, "--dir", str(folder), "up", cwd=tmp_path)

    assert refused.returncode == 1
    assert "but no ledger table schema_migrations" in refused.stderr
    assert "'dbledger baseline VERSION' (VERSION = the newest migration" in refused.stderr
    assert "plainpass123" not in refused.output
