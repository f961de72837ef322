"""A schema per tenant in one PostgreSQL database: each tenant is a target of its own. Its ledger,
lock, existing-schema check, drift, dump and backups cover its schema alone, so tenants never see
or wait for one another; without a target, the whole database is covered, as before.

A target is named by the connection's search_path (the URL's ``options=-csearch_path=X``, as the
case once seen failing had it) or by ``--schema`` / ``DBLEDGER_SCHEMA`` / ``[tool.dbledger] schema``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from dbledger.testing import Cluster
from tests.conftest import ExternalServer
from tests.helpers import Result, pg_dump_for, query, run_cli, write

# The tenant's migrations use an extension that lives in public and that they do not create: it
# is the tenant's surroundings, not part of its schema, and never drift.
FILES = {
    "001_orgs.sql": "CREATE TABLE orgs (id VARCHAR(255) PRIMARY KEY, name TEXT NOT NULL);\n",
    "002_conns.sql": (
        "CREATE TABLE conns (id VARCHAR(255) PRIMARY KEY,"
        " org_id VARCHAR(255) REFERENCES orgs (id) ON DELETE CASCADE, email public.citext);\n"
        "CREATE INDEX conns_org ON conns (org_id);\n"
    ),
}

Urls = Callable[[str], str]


def with_search_path(url: str, path: str) -> str:
    """``url`` whose connections set search_path to ``path``, as a schema-per-tenant app's do."""
    return f"{url}?options=-csearch_path%3D{path.replace(',', '%2C')}"


@pytest.fixture
def folder(migrations_dir: Path) -> Path:
    for name, text in FILES.items():
        write(migrations_dir, name, text)
    return migrations_dir


@pytest.fixture
def tenant(pg_url: str) -> Urls:
    """Two tenant schemas and citext in public; ``tenant(name)`` is the URL of one tenant."""
    query(pg_url, "CREATE EXTENSION citext")
    query(pg_url, "CREATE SCHEMA tenant1")
    query(pg_url, "CREATE SCHEMA tenant2")
    return lambda name: with_search_path(pg_url, name)


def cli(url: str, folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder, env=env)


def applied(url: str, schema: str) -> list[str]:
    return [
        name for (name,) in query(url, f"SELECT migration_name FROM {schema}.schema_migrations ORDER BY id")
    ]


def tables_of(url: str, schema: str) -> list[str]:
    found = query(url, "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,))
    return [name for (name,) in found]


def test_up_for_a_second_tenant_is_not_refused(pg_url: str, tenant: Urls, folder: Path) -> None:
    first = cli(tenant("tenant1"), folder, "up")
    second = cli(tenant("tenant2"), folder, "up")

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "applied 2 migration(s)" in second.stdout
    for schema in ("tenant1", "tenant2"):
        assert applied(pg_url, schema) == ["001_orgs", "002_conns"]
        assert tables_of(pg_url, schema) == [
            "conns",
            "orgs",
            "schema_migrations",
            "schema_migrations_history",
            "schema_migrations_schema",
            "schema_migrations_version",
        ]
    assert tables_of(pg_url, "public") == []
    again = cli(tenant("tenant2"), folder, "up")
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout


def test_drift_and_status_of_a_tenant_see_its_own_schema_only(
    pg_url: str, tenant: Urls, folder: Path
) -> None:
    for name in ("tenant1", "tenant2"):
        assert cli(tenant(name), folder, "up").returncode == 0
    query(pg_url, "CREATE TABLE tenant1.newthing (x INTEGER)")
    query(pg_url, "ALTER TABLE tenant1.orgs ADD COLUMN note TEXT")
    query(pg_url, "CREATE TABLE public.shared (x INTEGER)")  # no tenant's, so in no tenant's drift

    clean = cli(tenant("tenant2"), folder, "drift")
    replayed = cli(tenant("tenant2"), folder, "drift", "--replay")
    drifted = cli(tenant("tenant1"), folder, "drift", "--json")

    assert clean.returncode == 0, clean.output
    assert "no drift: the live schema is the one recorded after the last migration run" in clean.stdout
    assert replayed.returncode == 0, replayed.output
    assert "no drift: the live schema is the one replayed from the applied migrations" in replayed.stdout
    assert drifted.returncode == 1, drifted.output
    assert sorted(d["message"] for d in json.loads(drifted.stdout)["differences"]) == [
        "extra column tenant1.orgs.note",
        "extra table tenant1.newthing",
    ]
    status2 = json.loads(cli(tenant("tenant2"), folder, "status", "--json").stdout)
    status1 = json.loads(cli(tenant("tenant1"), folder, "status", "--json").stdout)
    assert status2["schema"]["drifted"] is False
    assert status2["problems"] == []
    assert status1["schema"]["drifted"] is True


def test_a_replay_runs_in_a_schema_of_the_same_name_with_the_same_search_path(
    pg_url: str, migrations_dir: Path
) -> None:
    # search_path "tenant2, public": citext unqualified, as such applications write it; the
    # tenant's schema does not exist yet, so the first 'up' creates it.
    query(pg_url, "CREATE EXTENSION citext")
    write(
        migrations_dir, "001_users.sql", "CREATE TABLE users (id SERIAL PRIMARY KEY, email citext UNIQUE);\n"
    )
    url = with_search_path(pg_url, "tenant2,public")

    applied_now = cli(url, migrations_dir, "up")
    replayed = cli(url, migrations_dir, "drift", "--replay")

    assert applied_now.returncode == 0, applied_now.stderr
    assert tables_of(pg_url, "tenant2")[0] == "schema_migrations"
    assert "users" in tables_of(pg_url, "tenant2")
    assert tables_of(pg_url, "public") == []
    assert replayed.returncode == 0, replayed.output
    assert "no drift" in replayed.stdout
    assert query(pg_url, "SELECT count(*) FROM pg_database WHERE datname LIKE 'dbledger_scratch_%'") == [(0,)]


def test_dump_of_a_tenant_lists_only_its_objects(pg_url: str, tenant: Urls, folder: Path) -> None:
    for name in ("tenant1", "tenant2"):
        assert cli(tenant(name), folder, "up").returncode == 0
    query(pg_url, "CREATE TABLE tenant1.newthing (x INTEGER)")

    one = cli(tenant("tenant2"), folder, "dump")
    whole = cli(pg_url, folder, "dump")

    assert one.returncode == 0, one.stderr
    assert "CREATE SCHEMA tenant2;" in one.stdout
    assert "CREATE TABLE tenant2.orgs (" in one.stdout
    assert "CREATE INDEX conns_org ON tenant2.conns USING btree (org_id);" in one.stdout
    assert "tenant1" not in one.stdout
    assert "EXTENSION" not in one.stdout  # citext lives in public, outside the tenant
    assert "schema_migrations" not in one.stdout
    assert whole.returncode == 0, whole.stderr
    for text in (
        "CREATE TABLE tenant1.orgs (",
        "CREATE TABLE tenant2.orgs (",
        "CREATE TABLE tenant1.newthing (",
    ):
        assert text in whole.stdout
    assert "CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;" in whole.stdout

    # A search_path of the database's (or the role's) settings is the server's default, not a
    # target: the whole database is still seen.
    query(pg_url, f'ALTER DATABASE "{urlsplit(pg_url).path.lstrip("/")}" SET search_path = tenant1')
    defaulted = cli(pg_url, folder, "dump")
    assert defaulted.returncode == 0, defaulted.stderr
    for text in (
        "CREATE TABLE tenant1.newthing (",
        "CREATE TABLE tenant2.orgs (",
        "CREATE TABLE tenant2.conns (",
    ):
        assert text in defaulted.stdout


def test_a_tenant_built_by_hand_is_matched_in_its_own_schema(pg_url: str, tenant: Urls, folder: Path) -> None:
    assert cli(tenant("tenant1"), folder, "up").returncode == 0
    with psycopg.connect(tenant("tenant2"), autocommit=True) as conn:  # with psql, long ago
        for name in sorted(FILES):
            conn.execute(FILES[name].encode())

    refused = cli(tenant("tenant2"), folder, "up")

    assert refused.returncode == 1
    assert "the database already has 2 table(s) (tenant2.conns, tenant2.orgs) but no ledger" in refused.stderr
    assert "exactly what the migrations up to 002_conns produce: run 'dbledger baseline 2'" in refused.stderr
    verified = cli(tenant("tenant2"), folder, "baseline", "2", "--verify")
    assert verified.returncode == 0, verified.stderr
    assert applied(pg_url, "tenant2") == ["001_orgs", "002_conns"]


def test_two_tenants_migrate_at_once_without_waiting_for_each_other(
    pg_url: str, tenant: Urls, migrations_dir: Path
) -> None:
    write(
        migrations_dir,
        "001_slow_for_tenant1.sql",
        "SELECT pg_sleep(CASE current_schema() WHEN 'tenant1' THEN 10 ELSE 0 END);\n"
        "CREATE TABLE orgs (id INTEGER PRIMARY KEY);\n",
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DBLEDGER_DIR")}
    command = [sys.executable, "-m", "dbledger", "--dir", str(migrations_dir), "up"]
    slow = subprocess.Popen(
        [*command, "--database-url", tenant("tenant1")],
        cwd=migrations_dir,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        sleeping = (
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE 'SELECT pg_sleep(CASE%'"
        )
        while not query(pg_url, sleeping):  # tenant1's run holds its lock and sleeps
            assert slow.poll() is None, slow.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)

        same_tenant = cli(tenant("tenant1"), migrations_dir, "up", "--lock-timeout", "1")
        # With --lock-timeout 1, a run that had to wait for tenant1's lock would have failed.
        other_tenant = cli(tenant("tenant2"), migrations_dir, "up", "--lock-timeout", "1")

        assert same_tenant.returncode == 1  # tenant1's own lock is held: the run is real
        assert "gave up after waiting 1 s for the migration lock" in same_tenant.stderr
        assert other_tenant.returncode == 0, other_tenant.stderr
        assert "applied 1 migration(s)" in other_tenant.stdout
        assert slow.poll() is None  # tenant1's migration is still running
    finally:
        _, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err
    assert applied(pg_url, "tenant1") == applied(pg_url, "tenant2") == ["001_slow_for_tenant1"]


@pytest.mark.parametrize("how", ["option", "environment", "pyproject"])
def test_schema_names_the_target_and_up_creates_it(how: str, pg_url: str, folder: Path) -> None:
    query(pg_url, "CREATE EXTENSION citext")
    args: list[str] = []
    env: dict[str, str] = {}
    if how == "option":
        args = ["--schema", "tenant3"]
    elif how == "environment":
        env = {"DBLEDGER_SCHEMA": "tenant3"}
    else:
        write(folder, "pyproject.toml", '[tool.dbledger]\nschema = "tenant3"\n')
    # A search_path in the URL gives way to the named schema.
    url = with_search_path(pg_url, "tenant1")

    done = cli(url, folder, *args, "up", env=env)

    assert done.returncode == 0, done.stderr
    assert "schema tenant3" in done.stderr  # the "using database ..." line
    assert applied(pg_url, "tenant3") == ["001_orgs", "002_conns"]
    assert "orgs" in tables_of(pg_url, "tenant3")
    assert query(pg_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant1'") == [(0,)]
    if how == "option":  # the replay's scratch database gets the same search_path and schema
        replayed = cli(url, folder, *args, "drift", "--replay", env=env)
        assert replayed.returncode == 0, replayed.output


def test_a_read_command_creates_no_schema(pg_url: str, folder: Path) -> None:
    result = cli(pg_url, folder, "--schema", "tenant9", "status", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ledger_exists"] is False
    assert [m["name"] for m in json.loads(result.stdout)["pending"]] == ["001_orgs", "002_conns"]
    assert query(pg_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant9'") == [(0,)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "Tenant-1",
            "invalid schema 'Tenant-1' (from --schema): give lower-case letters, digits and '_', "
            "starting with a letter or '_', at most 63, not a system schema (e.g. tenant_42)",
        ),
        ("pg_catalog", "invalid schema 'pg_catalog' (from --schema)"),
        ("", "invalid schema '' (from --schema)"),
    ],
)
def test_a_bad_schema_name_is_a_usage_error(value: str, message: str, tmp_path: Path) -> None:
    result = run_cli(
        "--database-url", "postgresql://app@127.0.0.1:1/app", "--schema", value, "status", cwd=tmp_path
    )

    assert result.returncode == 2
    assert message in result.stderr


def test_sqlite_has_no_target_schema(sqlite_url: str, folder: Path) -> None:
    result = cli(sqlite_url, folder, "--schema", "tenant1", "up")

    assert result.returncode == 2
    assert (
        "a target schema ('tenant1', from --schema) is for PostgreSQL: a SQLite database has one "
        "schema; give each tenant its own database file instead"
    ) in result.stderr


def test_a_tenant_role_without_create_on_the_database(pg_url: str, folder: Path) -> None:
    # The usual tenant role: it owns its schema and may create nothing else in the database.
    role = f"tenant_role_{os.getpid()}"
    query(pg_url, "CREATE EXTENSION citext")
    query(pg_url, f"CREATE ROLE {role} LOGIN PASSWORD 'tenantpass123'")
    try:
        query(pg_url, f"CREATE SCHEMA tenant1 AUTHORIZATION {role}")  # and no CREATE on the database
        parts = urlsplit(pg_url)
        url = parts._replace(netloc=f"{role}:tenantpass123@{parts.hostname}:{parts.port}").geturl()

        done = cli(url, folder, "--schema", "tenant1", "up")

        assert done.returncode == 0, done.stderr
        assert applied(pg_url, "tenant1") == ["001_orgs", "002_conns"]
    finally:
        query(pg_url, f"DROP OWNED BY {role} CASCADE")
        query(pg_url, f"DROP ROLE {role}")


def test_the_whole_database_is_the_target_without_a_search_path(pg_url: str, migrations_dir: Path) -> None:
    write(
        migrations_dir,
        "001_billing.sql",
        "CREATE SCHEMA billing;\nCREATE TABLE billing.invoices (id INTEGER PRIMARY KEY);\n"
        "CREATE TABLE orgs (id INTEGER PRIMARY KEY);\n",
    )
    assert cli(pg_url, migrations_dir, "up").returncode == 0
    query(pg_url, "CREATE TABLE billing.hand_made (x INTEGER)")

    drifted = cli(pg_url, migrations_dir, "drift")

    assert applied(pg_url, "public") == ["001_billing"]
    assert drifted.returncode == 1
    assert "extra table billing.hand_made" in drifted.stdout


@pytest.fixture
def shadow_url(pg_server: Cluster | ExternalServer) -> Iterator[str]:
    name = f"shadow{os.getpid()}"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


def test_a_replay_on_a_shadow_database_lands_in_the_tenant_schema(
    pg_url: str, tenant: Urls, folder: Path, shadow_url: str
) -> None:
    query(shadow_url, "CREATE EXTENSION citext")
    assert cli(tenant("tenant2"), folder, "up").returncode == 0

    replayed = cli(tenant("tenant2"), folder, "drift", "--shadow-url", shadow_url)

    assert replayed.returncode == 0, replayed.output
    assert "no drift" in replayed.stdout
    assert query(shadow_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant2'") == [(0,)]


def test_a_backup_holds_the_tenant_alone(pg_url: str, tenant: Urls, folder: Path, tmp_path: Path) -> None:
    pg_dump_for(pg_url)
    write(folder, "003_drop.sql", "-- migrate:up backup:true\nALTER TABLE conns DROP COLUMN email;\n")
    assert cli(tenant("tenant1"), folder, "up").returncode == 0
    assert cli(tenant("tenant2"), folder, "up", "--to", "2").returncode == 0

    done = cli(tenant("tenant2"), folder, "up", "--backup", str(tmp_path / "backups"), "--json")

    assert done.returncode == 0, done.stderr
    backup = json.loads(done.stdout)["backup"]
    path = Path(backup["path"])
    assert path.name.startswith(f"{urlsplit(pg_url).path.lstrip('/')}.tenant2-")
    listing = subprocess.run(["pg_restore", "--list", str(path)], capture_output=True, text=True, check=True)
    assert "SCHEMA - tenant2" in listing.stdout
    assert "TABLE tenant2 conns" in listing.stdout
    assert "tenant1" not in listing.stdout

    # Restored in place with the command the backup gives: tenant2 as before 003, tenant1 as it is.
    environment = {**os.environ, "PGPASSWORD": str(urlsplit(pg_url).password)}
    restored = subprocess.run(
        shlex.split(backup["restore_command"]), env=environment, capture_output=True, text=True, check=False
    )
    assert restored.returncode == 0, restored.stderr
    columns = "SELECT table_schema FROM information_schema.columns WHERE column_name = 'email' ORDER BY 1"
    assert query(pg_url, columns) == [("tenant2",)]
    assert applied(pg_url, "tenant2") == ["001_orgs", "002_conns"]
    assert applied(pg_url, "tenant1") == ["001_orgs", "002_conns", "003_drop"]
