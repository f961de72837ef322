"""The incident report's own service, rebuilt on dbledger, tested the way the report tells it.

Real PostgreSQL (a fresh database per test), the real process (``python -m connections_service``
on a free port) and real HTTP. In order: the report's verification Tests 1-4; the incident
itself, replayed one migration at a time; its root cause (a database built by hand, no ledger);
a broken release next to a running one; eight replicas starting together; a restart; the
endpoints; the configuration errors; the migrations' down sections; ids and log redaction.
Every service's output is checked for the database password when the test ends.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from connections_service import MIGRATIONS, ids
from connections_service.__main__ import FullCommandFilter, RedactingFilter, full_command_hint, read_settings

import dbledger
from dbledger.redaction import redact
from tests.helpers import query, table_exists, write
from tests.service_helpers import (
    BEARER,
    Service,
    StartService,
    execute_script,
    password_of,
    section,
    service_starter,
)

NAMES = [
    "001_initial_schema",
    "002_discovery_schema",
    "003_clerk_complete_migration",
    "004_fix_audit_trigger_for_deletes",
]
# The audit trigger's function, a repeatable migration: run after the numbered ones.
REPEATABLE = "repeatable/log_platform_connection_changes"
LEDGER_NAMES = [*NAMES, REPEATABLE]

# The report's queries, as written there (trailing whitespace aside).
SEED_TEST_1 = """
SELECT table_name, column_name, data_type
FROM information_schema.columns
WHERE table_name IN ('organizations', 'platform_connections')
  AND column_name IN ('id', 'organization_id');
"""
SEED_TEST_2_INSERT = """
INSERT INTO platform_connections (
    id, organization_id, platform_type,
    platform_user_id, display_name, status
) VALUES (
    'slack-test-9876543210',
    'org_test_clerk_123',
    'slack',
    'U9876543',
    'Test Connection',
    'active'
);
"""
SEED_TEST_2_DELETE = "DELETE FROM platform_connections WHERE id = 'slack-test-9876543210';"
SEED_TEST_3 = """
SELECT
    event_type,
    platform_connection_id IS NULL as "connection_id_is_null",
    resource_id,
    event_data->>'platform_connection_id' as stored_id
FROM audit_logs
WHERE resource_id = 'slack-test-9876543210';
"""
SEED_TEST_4 = """
SELECT migration_name, applied_at, success
FROM schema_migrations
ORDER BY id;
"""
SEED_ORGANIZATION = "INSERT INTO organizations (id, name) VALUES ('org_test_clerk_123', 'Clerk test')"
SEED_CONNECTION = "slack-test-9876543210"
SEED_BODY = {
    "id": SEED_CONNECTION,
    "organization_id": "org_test_clerk_123",
    "platform_type": "slack",
    "platform_user_id": "U9876543",
    "display_name": "Test Connection",
    "status": "active",
}
DELETED_AUDIT_ROW = ("platform_connection_deleted", True, SEED_CONNECTION, SEED_CONNECTION)

# Every key column of the service's tables: what 003 converts.
KEY_COLUMNS = """
SELECT table_name, column_name, data_type, character_maximum_length
FROM information_schema.columns
WHERE table_schema = 'public'
  AND table_name IN ('organizations', 'platform_connections', 'audit_logs', 'discovery_runs',
                     'discovered_apps')
  AND column_name IN ('id', 'organization_id', 'platform_connection_id', 'discovery_run_id')
ORDER BY 1, 2
"""
KEY_COLUMN_COUNT = 13

CONNECTION_ID = re.compile(r"(?P<type>[a-z0-9_]+)-(?P<ms>[0-9]{13})")
ORGANIZATION_ID = re.compile(r"org_[0-9A-Za-z]{27}")

BROKEN_RELEASE = """\
-- A release's migration with a typo in its second statement.
-- migrate:up
ALTER TABLE platform_connections ADD COLUMN last_synced_at TIMESTAMPTZ;
CREATE INDEX platform_connections_last_synced_idx ON platform_connections (last_sync_at);
-- migrate:down
ALTER TABLE platform_connections DROP COLUMN last_synced_at;
"""


@pytest.fixture
def start_service(tmp_path: Path, pg_url: str) -> Iterator[StartService]:
    """Start ``python -m connections_service`` processes; all stopped at the end of the test, and
    none may have printed the database password."""
    with service_starter(tmp_path, [password_of(pg_url)]) as start:
        yield start


@contextmanager
def api(service: Service) -> Iterator[httpx.Client]:
    """An HTTP client for ``service``; at the end, no response may have been a 500."""
    responses: list[httpx.Response] = []
    with httpx.Client(
        base_url=service.url, timeout=10, event_hooks={"response": [responses.append]}
    ) as client:
        yield client
    errors = [f"{r.request.method} {r.request.url} -> 500" for r in responses if r.status_code == 500]
    assert not errors
    assert "Exception in ASGI application" not in service.log


def connection_body(organization_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "organization_id": organization_id,
        "platform_type": "google",
        "platform_user_id": "103947561234",
        "display_name": "Google Workspace",
        **changes,
    }


def error_fields(response: httpx.Response) -> list[str]:
    """The field each error of a 422 names (the last element of its ``loc``)."""
    assert response.status_code == 422, response.text
    return [str(error["loc"][-1]) for error in response.json()["detail"]]


# -- the report's verification -------------------------------------------------------------------


def test_seed_verification_tests_1_to_4(pg_url: str, start_service: StartService) -> None:
    service = start_service(pg_url)
    service.wait_healthy()

    # Test 1: UUID to VARCHAR conversion.
    assert sorted(query(pg_url, SEED_TEST_1)) == [
        ("organizations", "id", "character varying"),
        ("platform_connections", "id", "character varying"),
        ("platform_connections", "organization_id", "character varying"),
    ]
    keys = query(pg_url, KEY_COLUMNS)
    assert len(keys) == KEY_COLUMN_COUNT
    assert {(data_type, length) for _, _, data_type, length in keys} == {("character varying", 255)}

    with api(service) as client:
        created = client.post("/api/organizations", json={"id": "org_test_clerk_123", "name": "Clerk test"})
        assert created.status_code == 201, created.text

        # Test 2: DELETE, through SQL as in the report ("DELETE 1")...
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(SEED_TEST_2_INSERT)
            assert conn.execute(SEED_TEST_2_DELETE).rowcount == 1

        # ... and through the endpoint that used to answer 500.
        assert client.post("/api/connections", json=SEED_BODY).status_code == 201
        deleted = client.delete(f"/api/connections/{SEED_CONNECTION}")
        assert deleted.status_code == 204, deleted.text
        assert client.get(f"/api/connections/{SEED_CONNECTION}").status_code == 404

        # Test 3: the audit rows of both deletions.
        audit = query(pg_url, SEED_TEST_3)
        assert [row for row in audit if row[0] == "platform_connection_deleted"] == [DELETED_AUDIT_ROW] * 2
        trail = client.get("/api/audit-logs", params={"resource_id": SEED_CONNECTION}).json()
        assert [entry["event_type"] for entry in trail] == [
            "platform_connection_created",
            "platform_connection_deleted",
        ] * 2
        assert trail[-1]["platform_connection_id"] is None
        assert trail[-1]["event_data"]["platform_connection_id"] == SEED_CONNECTION

    # Test 4: the migration ledger.
    ledger = query(pg_url, SEED_TEST_4)
    assert [(name, success) for name, _, success in ledger] == [(name, True) for name in LEDGER_NAMES]
    assert all(isinstance(applied_at, datetime) for _, applied_at, _ in ledger)


# -- the incident, replayed ----------------------------------------------------------------------


def test_the_incident_fails_at_2_and_3_and_is_fixed_by_4(pg_url: str) -> None:
    # The schema the production database had: 001 and 002 only, UUID keys.
    dbledger.migrate(pg_url, MIGRATIONS, to=2)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        with pytest.raises(
            psycopg.errors.InvalidTextRepresentation,
            match='invalid input syntax for type uuid: "google-1759721169098"',
        ):
            conn.execute("DELETE FROM platform_connections WHERE id = 'google-1759721169098'")
        with pytest.raises(
            psycopg.errors.InvalidTextRepresentation,
            match='invalid input syntax for type uuid: "slack-test-9876543210"',
        ):
            conn.execute(SEED_TEST_2_INSERT)

    # 003 applied at last: the ids fit, and the DELETE now fails on the audit trigger.
    assert [a.name for a in dbledger.migrate(pg_url, MIGRATIONS, to=3).applied] == [NAMES[2]]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(SEED_ORGANIZATION)
        conn.execute(SEED_TEST_2_INSERT)
        with pytest.raises(psycopg.errors.ForeignKeyViolation) as caught:
            conn.execute(SEED_TEST_2_DELETE)
    assert caught.value.diag.message_primary == (
        'insert or update on table "audit_logs" violates foreign key constraint '
        '"audit_logs_platform_connection_id_fkey"'
    )
    assert caught.value.diag.message_detail == (
        'Key (platform_connection_id)=(slack-test-9876543210) is not present in table "platform_connections".'
    )
    assert query(pg_url, "SELECT count(*) FROM platform_connections") == [(1,)]

    # 004: the trigger fixed, the DELETE succeeds and is audited.
    assert [a.name for a in dbledger.migrate(pg_url, MIGRATIONS).applied] == [NAMES[3], REPEATABLE]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute(SEED_TEST_2_DELETE).rowcount == 1
    assert [row for row in query(pg_url, SEED_TEST_3) if row[0] == "platform_connection_deleted"] == [
        DELETED_AUDIT_ROW
    ]


@pytest.mark.slow
def test_a_database_built_by_hand_is_refused_until_baselined(
    pg_url: str, start_service: StartService, tmp_path: Path
) -> None:
    # As the developers did it: psql -f on 001 and 002, no ledger. And data of the time.
    execute_script(pg_url, section("001", "up"))
    execute_script(pg_url, section("002", "up"))
    ((organization_id,),) = query(
        pg_url, "INSERT INTO organizations (name) VALUES ('Acme') RETURNING id::text"
    )
    ((old_connection,),) = query(
        pg_url,
        "INSERT INTO platform_connections (organization_id, platform_type, platform_user_id, display_name)"
        " VALUES (%s, 'slack', 'U1', 'Acme Slack') RETURNING id::text",
        (organization_id,),
    )

    refused = start_service(pg_url)
    assert refused.wait_exit() == 1
    assert not refused.port_seen_open
    assert "but no ledger table schema_migrations" in refused.log
    assert "Uvicorn running" not in refused.log
    assert not table_exists(pg_url, "schema_migrations")  # refused before touching anything

    # The refusal is dbledger's own, completed with the command in full: the migrations folder is
    # inside the package, and the URL is the service's variable, not one masked as user:***.
    with pytest.raises(dbledger.ExistingSchema) as caught:
        dbledger.migrate(pg_url, MIGRATIONS)
    assert "'dbledger baseline 2'" in caught.value.message
    folder = shlex.quote(str(MIGRATIONS))
    command = f'dbledger --dir {folder} --database-url "$DATABASE_URL" baseline 2'
    hint = (
        f"This service's migrations are in {folder}; with DATABASE_URL set as for the service, run: {command}"
    )
    (line,) = [line for line in refused.log.splitlines() if " ERROR " in line]
    assert line.split(" ", 2)[2] == (
        f"ERROR connections_service.migrate: migrations failed, not starting: {caught.value.message}. {hint}"
    )

    # The command, pasted into a shell where DATABASE_URL is set as for the service.
    dbledger_executable = Path(sys.executable).with_name("dbledger")
    baseline = subprocess.run(
        ["bash", "-c", command.replace("dbledger", shlex.quote(str(dbledger_executable)), 1)],
        cwd=tmp_path,
        env={**os.environ, "DATABASE_URL": pg_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr
    assert password_of(pg_url) not in baseline.stdout + baseline.stderr

    service = start_service(pg_url)
    service.wait_healthy()
    assert "applied migration 003_clerk_complete_migration" in service.log
    assert "applied migration 004_fix_audit_trigger_for_deletes" in service.log
    assert query(pg_url, "SELECT migration_name, state, success FROM schema_migrations ORDER BY id") == [
        (NAMES[0], "baseline", True),
        (NAMES[1], "baseline", True),
        (NAMES[2], "applied", True),
        (NAMES[3], "applied", True),
        (REPEATABLE, "applied", True),
    ]
    with api(service) as client:
        old = client.get(f"/api/connections/{old_connection}")
        assert old.status_code == 200, old.text
        assert old.json()["organization_id"] == organization_id  # the UUIDs survived as text
        assert client.delete(f"/api/connections/{old_connection}").status_code == 204
        assert client.post("/api/organizations", json={"id": "org_test_clerk_123", "name": "x"}).is_success
        assert client.post("/api/connections", json=SEED_BODY).status_code == 201
        assert client.delete(f"/api/connections/{SEED_CONNECTION}").status_code == 204


# -- releases and replicas -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_broken_migration_never_listens_and_the_running_replica_warns_and_stays_ready(
    pg_url: str, start_service: StartService, tmp_path: Path
) -> None:
    running = start_service(pg_url)
    running.wait_healthy()

    release = tmp_path / "release-2"
    shutil.copytree(MIGRATIONS, release)
    write(release, "005_add_last_synced_index.sql", BROKEN_RELEASE)
    new = start_service(pg_url, directory=release)
    assert new.wait_exit() == 1
    assert not new.port_seen_open
    assert "migration '005_add_last_synced_index' failed" in new.log
    assert 'column "last_sync_at" does not exist' in new.log

    ((success, state, error),) = query(
        pg_url,
        "SELECT success, state, error_message FROM schema_migrations WHERE migration_name = %s",
        ("005_add_last_synced_index",),
    )
    assert (success, state) == (False, "failed")
    assert 'column "last_sync_at" does not exist' in error
    assert "42703" in error  # SQLSTATE undefined_column
    # Rolled back whole: the first statement left nothing either.
    assert query(
        pg_url,
        "SELECT count(*) FROM information_schema.columns WHERE column_name = 'last_synced_at'",
    ) == [(0,)]

    with api(running) as client:
        # The failed migration is the new release's and left nothing behind: the running replica
        # stays ready on the schema it knows (a 503 here would take every old replica out).
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["warnings"] == [
            "migration '005_add_last_synced_index' failed: its error is in the version endpoint, and "
            "it is newer than this service's migrations: the database is ahead of this code"
        ]
        assert client.get("/api/connections", params={"organization_id": "org_x"}).json() == []


@pytest.mark.slow
def test_eight_replicas_starting_together_apply_each_migration_once(
    pg_url: str, start_service: StartService
) -> None:
    replicas = [start_service(pg_url) for _ in range(8)]
    for replica in replicas:
        replica.wait_healthy()

    assert query(pg_url, "SELECT migration_name, success FROM schema_migrations ORDER BY id") == [
        (name, True) for name in LEDGER_NAMES
    ]
    assert query(
        pg_url,
        "SELECT action, migration_name, count(*) FROM schema_migrations_history GROUP BY 1, 2 ORDER BY 2",
    ) == [("apply", name, 1) for name in LEDGER_NAMES] + [("create", None, 1)]
    assert sum(replica.log.count("applied migration ") for replica in replicas) == len(LEDGER_NAMES)


@pytest.mark.slow
def test_a_restart_applies_nothing_and_records_nothing(pg_url: str, start_service: StartService) -> None:
    first = start_service(pg_url)
    first.wait_healthy()
    first.stop()
    ledger = query(pg_url, "SELECT * FROM schema_migrations ORDER BY id")
    history = query(pg_url, "SELECT * FROM schema_migrations_history ORDER BY id")
    assert len(ledger) == len(LEDGER_NAMES)
    assert len(history) == len(LEDGER_NAMES) + 1  # and the ledger's own 'create' row

    second = start_service(pg_url)
    second.wait_healthy()
    assert "database schema is up to date" in second.log
    assert "applied migration" not in second.log
    assert query(pg_url, "SELECT * FROM schema_migrations ORDER BY id") == ledger
    assert query(pg_url, "SELECT * FROM schema_migrations_history ORDER BY id") == history


# -- the endpoints -------------------------------------------------------------------------------


def test_endpoints(pg_url: str, start_service: StartService) -> None:
    service = start_service(pg_url)
    service.wait_healthy()
    with api(service) as client:
        # Organizations: a generated Clerk-style id, a given one, a duplicate, invalid bodies.
        generated = client.post("/api/organizations", json={"name": "Acme"})
        assert generated.status_code == 201, generated.text
        assert ORGANIZATION_ID.fullmatch(generated.json()["id"])
        org = "org_33fSYwlyUqkYiSD2kBt7hqBz7dE"
        given = client.post("/api/organizations", json={"id": org, "name": "Globex"})
        assert given.status_code == 201
        assert given.json()["id"] == org
        duplicate = client.post("/api/organizations", json={"id": org, "name": "Again"})
        assert duplicate.status_code == 409
        assert org in duplicate.json()["detail"]
        assert error_fields(client.post("/api/organizations", json={"id": "org 1!", "name": "x"})) == ["id"]
        assert error_fields(client.post("/api/organizations", json={})) == ["name"]
        assert error_fields(client.post("/api/organizations", json={"name": "x", "nme": "y"})) == ["nme"]

        # Connections with a given id, as the application sends them.
        google = client.post("/api/connections", json=connection_body(org, id="google-1759721169098"))
        assert google.status_code == 201, google.text
        assert google.json() | {"created_at": None, "updated_at": None} == {
            **connection_body(org),
            "id": "google-1759721169098",
            "status": "active",
            "created_at": None,
            "updated_at": None,
        }
        again = client.post("/api/connections", json=connection_body(org, id="google-1759721169098"))
        assert again.status_code == 409

        # Without an id: {platform_type}-{epoch ms}, unique even for a burst in one millisecond.
        before_ms = time.time_ns() // 1_000_000
        with ThreadPoolExecutor(8) as threads:
            burst = list(
                threads.map(
                    lambda n: client.post(
                        "/api/connections", json=connection_body(org, platform_type="slack", status="pending")
                    ),
                    range(16),
                )
            )
        assert [r.status_code for r in burst] == [201] * 16
        made = [r.json()["id"] for r in burst]
        assert len(set(made)) == 16
        for made_id in made:
            match = CONNECTION_ID.fullmatch(made_id)
            assert match is not None
            assert match["type"] == "slack"
            assert before_ms <= int(match["ms"]) < before_ms + 60_000

        # Validation names the field; an unknown organization is a 422 on organization_id.
        unknown = client.post("/api/connections", json=connection_body("org_missing"))
        assert error_fields(unknown) == ["organization_id"]
        assert "org_missing" in unknown.json()["detail"][0]["msg"]
        assert error_fields(
            client.post("/api/connections", json=connection_body(org, platform_type="Slack!"))
        ) == ["platform_type"]
        assert error_fields(client.post("/api/connections", json=connection_body(org, status="deleted"))) == [
            "status"
        ]
        assert error_fields(client.post("/api/connections", json=connection_body(org, id="x" * 256))) == [
            "id"
        ]
        assert error_fields(client.post("/api/connections", json={"organization_id": org})) == [
            "platform_type",
            "platform_user_id",
            "display_name",
        ]

        # Read: list, get, 404s, query parameters validated.
        listed = client.get("/api/connections", params={"organization_id": org})
        assert listed.status_code == 200
        assert {c["id"] for c in listed.json()} == {"google-1759721169098", *made}
        assert client.get("/api/connections", params={"organization_id": generated.json()["id"]}).json() == []
        assert error_fields(client.get("/api/connections")) == ["organization_id"]
        assert (
            client.get("/api/connections/google-1759721169098").json()["display_name"] == "Google Workspace"
        )
        missing = client.get("/api/connections/google-0000000000000")
        assert missing.status_code == 404
        assert "google-0000000000000" in missing.json()["detail"]
        assert error_fields(client.get("/api/connections/bad id!")) == ["connection_id"]

        # Delete: 204, then 404, never 500; the audit trail keeps the id.
        assert client.delete("/api/connections/google-1759721169098").status_code == 204
        assert client.delete("/api/connections/google-1759721169098").status_code == 404
        assert client.delete("/api/connections/never-existed").status_code == 404
        assert error_fields(client.delete("/api/connections/" + "x" * 256)) == ["connection_id"]
        trail = client.get("/api/audit-logs", params={"resource_id": "google-1759721169098"}).json()
        assert [(e["event_type"], e["platform_connection_id"], e["organization_id"]) for e in trail] == [
            ("platform_connection_created", None, org),
            ("platform_connection_deleted", None, org),
        ]
        assert trail[1]["event_data"]["platform_connection_id"] == "google-1759721169098"
        assert trail[1]["resource_type"] == "platform_connection"
        assert client.get("/api/audit-logs", params={"resource_id": "nothing"}).json() == []
        assert error_fields(client.get("/api/audit-logs")) == ["resource_id"]

        # The schema version, from dbledger's router.
        assert client.get("/api/db/version").status_code == 401
        version = client.get("/api/db/version", headers=BEARER)
        assert version.status_code == 200
        state = version.json()
        assert state["version"] == 4
        assert password_of(pg_url) not in version.text
        assert [m["name"] for m in state["applied"]] == NAMES
        for migration in state["applied"]:
            on_disk = (MIGRATIONS / f"{migration['name']}.sql").read_bytes()
            assert migration["checksum"] == hashlib.sha256(on_disk).hexdigest()
            assert datetime.fromisoformat(migration["applied_at"])
        assert state["pending"] == state["failed"] == state["modified"] == state["missing"] == []
        assert client.get("/health").json() == {
            "status": "ok",
            "version": 4,
            "reasons": [],
            "warnings": [],
            "running": [],
            "drift": {"breaking": 0, "risky": 0, "slow": 0, "harmless": 0},
        }

        # A database restart kills every pooled connection: the next requests still succeed.
        killed = query(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'connections-service'",
        )
        assert killed
        # The pool replaces the dead connections first; on a loaded machine that takes a while.
        statuses = [client.get(f"/api/connections/{made[0]}", timeout=60).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]


# -- configuration errors ------------------------------------------------------------------------


def test_configuration_errors_exit_1_without_listening(pg_url: str, start_service: StartService) -> None:
    no_url = start_service(None)
    not_postgres = start_service("sqlite:///app.sqlite3")
    wrong_password = start_service(pg_url.replace(password_of(pg_url), "wrong-secret-8472"))
    for service in (no_url, not_postgres, wrong_password):
        assert service.wait_exit() == 1
        assert not service.port_seen_open
    assert "DATABASE_URL is not set" in no_url.log
    assert "DATABASE_URL must point at PostgreSQL" in not_postgres.log
    assert (
        "migrations failed, not starting: cannot connect to postgresql://postgres:***@" in wrong_password.log
    )
    assert "password authentication failed" in wrong_password.log
    assert "wrong-secret-8472" not in wrong_password.log
    for service in (no_url, not_postgres, wrong_password):
        assert "Traceback" not in service.log


def test_read_settings() -> None:
    url = "postgresql://app:pw@db/app"
    settings = read_settings({"DATABASE_URL": url})
    assert (settings.host, settings.port, settings.directory) == ("127.0.0.1", 8000, MIGRATIONS)
    settings = read_settings({"DATABASE_URL": url, "HOST": "0.0.0.0", "PORT": "9000", "DBLEDGER_DIR": "m"})
    assert (settings.host, settings.port, settings.directory) == ("0.0.0.0", 9000, Path("m"))
    assert read_settings({"DATABASE_URL": "host=db dbname=app"}).database_url == "host=db dbname=app"
    with pytest.raises(ValueError, match="DATABASE_URL is not set"):
        read_settings({"DATABASE_URL": " "})
    with pytest.raises(ValueError, match=re.escape("not 'mysql://app:***@db/app'")):
        read_settings({"DATABASE_URL": "mysql://app:hunter22@db/app"})
    with pytest.raises(ValueError, match="PORT must be a port number between 1 and 65535, not '0'"):
        read_settings({"DATABASE_URL": url, "PORT": "0"})

    # How long a request waits for the database, and the version endpoint's token.
    assert (settings.wait, settings.version_token) == (3.0, None)
    settings = read_settings({"DATABASE_URL": url, "DATABASE_WAIT": "0.5", "VERSION_TOKEN": " tok "})
    assert (settings.wait, settings.version_token) == (0.5, "tok")
    assert "tok" not in repr(settings)
    assert "pw" not in repr(settings)  # the database URL's password
    for bad in ("0", "-1", "nan", "inf", "1e9", "3s", "forever"):
        with pytest.raises(ValueError, match=re.escape(f"between 0.1 and 300, not {bad!r}")):
            read_settings({"DATABASE_URL": url, "DATABASE_WAIT": bad})


def test_log_filter_masks_passwords_in_messages_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("tests.service.redaction")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.warning("cannot reach %s", "postgresql://app:s3cret-pw@db:5432/app")
        try:
            raise RuntimeError("connection to host=db password=s3cret-pw failed")
        except RuntimeError:
            log.exception("request failed")
    finally:
        log.removeHandler(handler)
    output = stream.getvalue()
    assert "s3cret-pw" not in output
    assert "cannot reach postgresql://app:***@db:5432/app" in output
    assert "RuntimeError: connection to host=db password=*** failed" in output


def test_a_suggested_dbledger_command_is_given_in_full_and_survives_redaction(tmp_path: Path) -> None:
    folder = tmp_path / "my migrations"
    message = "run 'dbledger baseline 2' with the same database and migrations folder, then 'dbledger up'"
    hint = full_command_hint(message, folder, {})
    assert hint == (
        f"This service's migrations are in '{folder}'; with DATABASE_URL set as for the service, run: "
        f"dbledger --dir '{folder}' --database-url \"$DATABASE_URL\" baseline 2"
    )
    assert redact(hint) == hint  # nothing in it looks like a password
    assert full_command_hint(message, folder, {"DBLEDGER_LEDGER_TABLE": "ops.ledger"}) == hint.replace(
        "baseline 2", "--ledger-table ops.ledger baseline 2"
    )
    assert full_command_hint("cannot connect to postgresql://app:***@db/app", folder, {}) is None

    # On the startup migration's logger: errors only, the rest untouched.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("tests.service.full_command")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    log.addFilter(FullCommandFilter(MIGRATIONS))
    try:
        log.info("applied migration %s in %d ms", "001_initial_schema", 3)
        log.error("migrations failed, not starting: %s", "restore the file, or run 'dbledger repair'")
    finally:
        log.removeHandler(handler)
    assert stream.getvalue().splitlines() == [
        "applied migration 001_initial_schema in 3 ms",
        "migrations failed, not starting: restore the file, or run 'dbledger repair'. This service's "
        f"migrations are in {MIGRATIONS}; with DATABASE_URL set as for the service, run: "
        f'dbledger --dir {MIGRATIONS} --database-url "$DATABASE_URL" repair',
    ]


# -- the migrations' down sections ---------------------------------------------------------------


def test_down_sections_undo_each_migration(pg_url: str) -> None:
    dbledger.migrate(pg_url, MIGRATIONS)
    query(pg_url, SEED_ORGANIZATION)
    query(pg_url, SEED_TEST_2_INSERT)

    # 004 down brings the broken trigger back.
    execute_script(pg_url, section("004", "down"))
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="is not present in table"):
        query(pg_url, SEED_TEST_2_DELETE)

    # 003 down cannot turn Clerk ids into UUIDs, and changes nothing trying.
    with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="invalid input syntax for type uuid"):
        execute_script(pg_url, section("003", "down"))
    assert {row[2] for row in query(pg_url, KEY_COLUMNS)} == {"character varying"}
    query(pg_url, "TRUNCATE organizations, platform_connections, audit_logs CASCADE")
    execute_script(pg_url, section("003", "down"))
    keys = query(pg_url, KEY_COLUMNS)
    assert len(keys) == KEY_COLUMN_COUNT
    assert {row[2] for row in keys} == {"uuid"}

    execute_script(pg_url, section("002", "down"))
    execute_script(pg_url, section("001", "down"))
    assert query(
        pg_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    ) == [
        ("schema_migrations",),
        ("schema_migrations_history",),
        ("schema_migrations_schema",),
        ("schema_migrations_version",),
    ]
    assert query(
        pg_url, "SELECT count(*) FROM pg_proc WHERE proname = 'log_platform_connection_changes'"
    ) == [(0,)]


# -- generated ids -------------------------------------------------------------------------------


def test_connection_ids_are_unique_within_one_millisecond() -> None:
    before_ms = time.time_ns() // 1_000_000
    with ThreadPoolExecutor(8) as threads:
        made = list(threads.map(lambda _: ids.connection_id("google"), range(2000)))
    assert len(set(made)) == len(made)
    stamps = []
    for made_id in made:
        match = CONNECTION_ID.fullmatch(made_id)
        assert match is not None
        assert match["type"] == "google"
        stamps.append(int(match["ms"]))
    # A burst runs ahead of the clock by at most one millisecond per id.
    assert before_ms <= min(stamps)
    assert max(stamps) < time.time_ns() // 1_000_000 + len(made)


def test_organization_ids_are_clerk_style_ksuids() -> None:
    made = [ids.organization_id() for _ in range(1000)]
    assert len(set(made)) == len(made)
    for made_id in made:
        assert ORGANIZATION_ID.fullmatch(made_id)
        value = 0
        for character in made_id[4:]:
            value = value * 62 + ids.BASE62.index(character)
        seconds = value >> 128  # KSUID: 32 bits of seconds since 2014-05-13, then 128 random bits
        assert abs(seconds + 1_400_000_000 - time.time()) < 5


def test_the_service_keeps_its_ledger_where_it_is_told(pg_url: str, start_service: StartService) -> None:
    service = start_service(pg_url, env={"DBLEDGER_LEDGER_TABLE": "ops.deploys"})
    service.wait_healthy()

    placed = query(pg_url, "SELECT migration_name FROM ops.deploys ORDER BY applied_order")
    assert placed == [(name,) for name in LEDGER_NAMES]
    assert not query(pg_url, "SELECT 1 FROM pg_tables WHERE tablename = 'schema_migrations'")
    version = httpx.get(f"{service.url}/api/db/version", headers=BEARER, timeout=10).json()
    assert [m["name"] for m in version["applied"]] == NAMES
    assert version["pending"] == []
