"""Health a probe can use: liveness that never reads the database, readiness that answers 503 only
for what stops this code from serving, with every other finding a warning. Through the FastAPI
router on a real PostgreSQL, asserting on status and body; the severities of schema differences
table-driven; the service's own endpoints and environment variables through the real process."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from connections_service.__main__ import read_settings
from fastapi import FastAPI

import dbledger
from dbledger.errors import ConfigError
from dbledger.integrations.fastapi import HealthPolicy, ledger_router, open_access
from dbledger.schema.diff import SEVERITIES, diff
from dbledger.schema.model import (
    Column,
    Constraint,
    Domain,
    Enum,
    Extension,
    Function,
    Index,
    SchemaModel,
    Sequence,
    Table,
    Trigger,
    View,
)
from dbledger.testing import free_port
from tests.helpers import query, write
from tests.service_helpers import password_of, service_starter

READY = ("/health", "/health/ready")
NO_DRIFT = {"breaking": 0, "risky": 0, "slow": 0, "harmless": 0}
SCHEMA = """
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    plan TEXT NOT NULL DEFAULT 'free',
    note TEXT
);
CREATE INDEX accounts_plan ON accounts (plan);
"""


class Client:
    """Requests to an application in process (httpx's ASGI transport; starlette's TestClient
    warns about its httpx), one event loop per request as a probe's requests are independent."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def get(self, path: str) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                return await http.get(path)

        return asyncio.run(call())


@contextmanager
def client(url: str, folder: Path, **options: Any) -> Iterator[Client]:
    app = FastAPI()
    app.include_router(ledger_router(url, folder, version_access=open_access, **options))
    yield Client(app)


def ready(url: str, folder: Path, **options: Any) -> tuple[int, dict[str, Any]]:
    """Readiness through both of its paths, which must agree: (status code, body)."""
    with client(url, folder, **options) as http:
        answers = [http.get(path) for path in READY]
    (code, body), other = [(a.status_code, a.json()) for a in answers]
    assert other == (code, body)
    return code, body


@pytest.fixture
def migrated(pg_url: str, migrations_dir: Path) -> str:
    write(migrations_dir, "001_accounts.sql", SCHEMA)
    dbledger.migrate(pg_url, migrations_dir)
    return pg_url


# -- the cases -------------------------------------------------------------------------


def test_an_extra_index_made_by_hand_is_a_warning_and_the_service_stays_ready(
    migrated: str, migrations_dir: Path
) -> None:
    query(migrated, "CREATE INDEX accounts_note_by_hand ON accounts (note)")

    assert ready(migrated, migrations_dir) == (
        200,
        {
            "status": "warning",
            "version": 1,
            "reasons": [],
            "warnings": ["extra index accounts_note_by_hand (harmless schema drift)"],
            "running": [],
            "drift": {**NO_DRIFT, "harmless": 1},
        },
    )


def test_a_dropped_column_is_a_503_naming_it(migrated: str, migrations_dir: Path) -> None:
    query(migrated, "ALTER TABLE accounts DROP COLUMN note")

    code, body = ready(migrated, migrations_dir)

    assert code == 503
    assert body["status"] == "unhealthy"
    assert body["reasons"] == ["missing column accounts.note (breaking schema drift)"]
    assert body["drift"] == {**NO_DRIFT, "breaking": 1}


def test_a_type_change_is_a_503(migrated: str, migrations_dir: Path) -> None:
    query(migrated, "ALTER TABLE accounts ALTER COLUMN note TYPE varchar(20)")

    code, body = ready(migrated, migrations_dir)

    assert code == 503
    assert body["reasons"] == ["column accounts.note: type differs (breaking schema drift)"]


def test_liveness_answers_while_the_database_is_unreachable(migrations_dir: Path) -> None:
    url = f"postgresql://app:pw@127.0.0.1:{free_port()}/app"  # nothing listens there
    with client(url, migrations_dir) as http:
        live, readiness = http.get("/health/live"), http.get("/health/ready")

    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    assert readiness.status_code == 503
    assert readiness.headers["retry-after"] == "5"
    assert readiness.json() == {
        "status": "unavailable",
        "reasons": ["the database is unreachable: the service's log has the details"],
    }


def test_liveness_never_reads_the_database_not_even_the_migrations_folder(tmp_path: Path) -> None:
    # Neither a database URL that cannot be parsed nor a folder that does not exist is read.
    with client("nonsense://", tmp_path / "nowhere") as http:
        live = http.get("/health/live")
        assert (live.status_code, live.json()) == (200, {"status": "alive"})
        assert http.get("/health/ready").status_code == 503


def test_a_running_migration_is_reported_as_running(migrated: str, migrations_dir: Path) -> None:
    write(
        migrations_dir,
        "002_index.sql",
        "-- migrate:up transaction:false\nCREATE INDEX a_note ON accounts (note);\n",
    )
    seen: list[tuple[int, dict[str, Any]]] = []

    def watch(event: str, name: str, ms: int | None) -> None:
        if (event, name) == ("start", "002_index"):  # its row is dirty; its runner holds the lock
            seen.append(ready(migrated, migrations_dir))

    dbledger.migrate(migrated, migrations_dir, progress=watch)

    assert seen == [
        (
            200,
            {
                "status": "running",
                "version": 1,
                "reasons": [],
                "warnings": [],
                "running": ["002_index"],
                "drift": NO_DRIFT,
            },
        )
    ]
    assert ready(migrated, migrations_dir)[1]["status"] == "ok"


def test_a_dirty_migration_whose_runner_is_gone_is_not_running(migrated: str, migrations_dir: Path) -> None:
    query(migrated, "UPDATE schema_migrations SET state = 'dirty', success = false, runner = 'backend 1'")

    code, body = ready(migrated, migrations_dir)

    assert (code, body["status"], body["running"]) == (503, "unhealthy", [])
    assert body["reasons"] == ["migration '001_accounts' ran outside a transaction and did not finish"]


def test_the_configured_threshold_changes_the_outcome(migrated: str, migrations_dir: Path) -> None:
    query(migrated, "CREATE INDEX accounts_note_by_hand ON accounts (note)")
    query(migrated, "ALTER TABLE accounts DROP CONSTRAINT accounts_email_key")

    # By default: a missing unique constraint (risky) and an extra index (harmless) are warnings.
    code, body = ready(migrated, migrations_dir)
    assert (code, body["status"]) == (200, "warning")
    assert body["warnings"] == [
        "missing unique constraint accounts.accounts_email_key (risky schema drift)",
        "extra index accounts_note_by_hand (harmless schema drift)",
    ]

    code, body = ready(migrated, migrations_dir, unhealthy_drift="risky")
    assert code == 503
    assert body["reasons"] == ["missing unique constraint accounts.accounts_email_key (risky schema drift)"]
    assert body["warnings"] == ["extra index accounts_note_by_hand (harmless schema drift)"]

    code, body = ready(migrated, migrations_dir, unhealthy_drift="harmless")  # any drift: as before
    assert code == 503
    assert len(body["reasons"]) == 2

    query(migrated, "ALTER TABLE accounts DROP COLUMN note")
    code, body = ready(migrated, migrations_dir, unhealthy_drift="never")
    assert (code, body["status"], body["reasons"]) == (200, "warning", [])
    assert "missing column accounts.note (breaking schema drift)" in body["warnings"]


def test_a_bad_threshold_is_refused_when_the_router_is_built(migrations_dir: Path) -> None:
    typo: Any = "brekaing"  # what a configuration file or a variable may hold
    with pytest.raises(ConfigError) as refused:
        ledger_router("sqlite:///x.db", migrations_dir, version_access=open_access, unhealthy_drift=typo)
    assert refused.value.message == (
        "unhealthy_drift must be one of 'harmless', 'slow', 'risky', 'breaking' or 'never', not 'brekaing'"
    )
    with pytest.raises(
        ConfigError, match=re.escape("ledger_ahead must be one of 'warning' or 'unhealthy', not 'warn'")
    ):
        HealthPolicy(ledger_ahead=typo[:0] + "warn")


# -- rolling deploys: the ledger ahead of this code ----------------------------------------------


def old_and_new(url: str, tmp_path: Path, new_migration: str) -> Path:
    """A new release's folder (001 and 002) migrated; the old release's folder (001) returned."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    write(old, "001_accounts.sql", SCHEMA)
    write(new, "001_accounts.sql", SCHEMA)
    write(new, "002_new.sql", new_migration)
    with suppress(dbledger.MigrationFailed):  # a failed one is one of the cases
        dbledger.migrate(url, new)
    return old


def test_a_ledger_ahead_of_the_code_is_a_warning_for_the_old_replicas(pg_url: str, tmp_path: Path) -> None:
    old = old_and_new(pg_url, tmp_path, "ALTER TABLE accounts ADD COLUMN plan_since DATE;\n")

    code, body = ready(pg_url, old)

    assert (code, body["status"], body["version"], body["reasons"]) == (200, "warning", 2, [])
    assert body["warnings"] == [
        "migration '002_new' was applied, and it is newer than this service's migrations: the "
        "database is ahead of this code"
    ]
    assert body["drift"] == NO_DRIFT  # the schema is the one the new release recorded

    code, body = ready(pg_url, old, ledger_ahead="unhealthy")
    assert (code, body["status"]) == (503, "unhealthy")
    assert body["reasons"][0].startswith("migration '002_new' was applied, and it is newer")


def test_a_newer_releases_failed_migration_leaves_the_old_replicas_ready(pg_url: str, tmp_path: Path) -> None:
    old = old_and_new(pg_url, tmp_path, "INSERT INTO accounts VALUES ('private-value-1234');\n")

    code, body = ready(pg_url, old)

    assert (code, body["status"]) == (200, "warning")
    assert body["warnings"] == [
        "migration '002_new' failed: its error is in the version endpoint, and it is newer than "
        "this service's migrations: the database is ahead of this code"
    ]
    assert "private-value-1234" not in str(body)


def test_a_file_missing_from_the_middle_of_the_folder_is_still_unhealthy(pg_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    write(folder, "001_accounts.sql", SCHEMA)
    write(folder, "002_b.sql", "CREATE TABLE b (x INTEGER);\n")
    write(folder, "003_c.sql", "CREATE TABLE c (x INTEGER);\n")
    dbledger.migrate(pg_url, folder)
    (folder / "002_b.sql").unlink()

    code, body = ready(pg_url, folder)

    assert code == 503
    assert body["reasons"] == ["migration '002_b' was applied but its file is missing"]


# -- each kind of difference, through the router -----------------------------------------------


@pytest.mark.parametrize(
    ("statement", "code", "line"),
    [
        # An extra NOT NULL column without a default: every insert of the application fails.
        (
            "ALTER TABLE accounts ADD COLUMN owner INTEGER NOT NULL",
            503,
            "extra column accounts.owner (breaking",
        ),
        (
            "ALTER TABLE accounts ADD COLUMN owner INTEGER NOT NULL DEFAULT 0",
            200,
            "extra column accounts.owner (harmless",
        ),
        ("ALTER TABLE accounts ADD COLUMN owner INTEGER", 200, "extra column accounts.owner (harmless"),
        (
            "ALTER TABLE accounts ALTER COLUMN note SET NOT NULL",
            503,
            "column accounts.note: nullability differs (breaking",
        ),
        (
            "ALTER TABLE accounts ALTER COLUMN email DROP NOT NULL",
            200,
            "column accounts.email: nullability differs (risky",
        ),
        (
            "ALTER TABLE accounts ALTER COLUMN plan DROP DEFAULT",
            503,
            "column accounts.plan: default differs (breaking",
        ),
        (
            "ALTER TABLE accounts ALTER COLUMN note SET DEFAULT 'x'",
            200,
            "column accounts.note: default differs (harmless",
        ),
        ("DROP INDEX accounts_plan", 200, "missing index accounts_plan (slow"),
        (
            "CREATE UNIQUE INDEX accounts_note_unique ON accounts (note)",
            200,
            "extra index accounts_note_unique (risky",
        ),
        ("DROP TABLE accounts", 503, "missing table accounts (breaking"),
        ("CREATE TABLE by_hand (x INTEGER)", 200, "extra table by_hand (harmless"),
        ("CREATE VIEW by_hand AS SELECT 1 AS one", 200, "extra view by_hand (harmless"),
        ("COMMENT ON TABLE accounts IS 'who pays'", 200, None),  # not in the model: no drift at all
    ],
)
def test_each_kind_of_difference_has_its_outcome(
    migrated: str, migrations_dir: Path, statement: str, code: int, line: str | None
) -> None:
    query(migrated, statement)

    answered, body = ready(migrated, migrations_dir)

    assert answered == code, body
    findings = body["reasons"] + body["warnings"]
    assert (findings == []) if line is None else any(found.startswith(line) for found in findings), findings
    assert body["status"] == {503: "unhealthy", 200: "ok" if line is None else "warning"}[code]


def test_health_never_shows_a_definition(migrated: str, migrations_dir: Path) -> None:
    """A check, a default or an index predicate can quote a value: /health names the object and
    what differs; the version endpoint, behind its access check, has the whole difference."""
    query(migrated, "ALTER TABLE accounts ADD CONSTRAINT no_secret CHECK (note <> 'private-literal-42')")
    query(migrated, "ALTER TABLE accounts ALTER COLUMN note SET DEFAULT 'private-default-43'")

    with client(migrated, migrations_dir) as http:
        health, version = http.get("/health"), http.get("/api/db/version")

    assert health.status_code == 200
    assert health.json()["warnings"] == [
        "extra check constraint accounts.no_secret (risky schema drift)",
        "column accounts.note: default differs (harmless schema drift)",
    ]
    assert "private-" not in health.text
    differences = version.json()["schema"]["differences"]
    assert {d["severity"] for d in differences} == {"risky", "harmless"}
    assert "private-default-43" in version.text


def test_many_differences_are_counted_not_all_listed(migrated: str, migrations_dir: Path) -> None:
    query(migrated, "; ".join(f"CREATE TABLE by_hand_{n:02} (x INTEGER)" for n in range(25)))

    code, body = ready(migrated, migrations_dir)

    assert (code, body["drift"]["harmless"]) == (200, 25)
    assert len(body["warnings"]) == 21
    assert body["warnings"][-1] == "and 5 more schema difference(s): 'dbledger drift' lists them all"


# -- the severities, table-driven ----------------------------------------------------------------

COL = Column("c", "integer", True)
NOT_NULL = Column("c", "integer", False)
TABLE = Table("t", (COL,))
FN = Function("f", "", "function", "integer", "sql", "VOLATILE", "SELECT 1")
TRIGGER_FN = Function("tf", "", "trigger function", "trigger", "plpgsql", "VOLATILE", "BEGIN RETURN NEW; END")
PLAIN_INDEX = Index("i", "t", "CREATE INDEX i ON public.t USING btree (c)")
UNIQUE_INDEX = Index("u", "t", "CREATE UNIQUE INDEX u ON public.t USING btree (c)")
CHECK = Constraint("k", "check", "CHECK ((c > 0))")
FK = Constraint("fk", "foreign key", "FOREIGN KEY (c) REFERENCES s(id)", on_delete="CASCADE")
SEQ = Sequence("s", "bigint", 1, 1, 1, 2**63 - 1, 1, False)
ENUM = Enum("e", ("a", "b"))
DOMAIN = Domain("d", "integer", True, None)


def model(**parts: Any) -> SchemaModel:
    return SchemaModel("postgresql", **{key: tuple(value) for key, value in parts.items()})


def table(*columns: Column, constraints: tuple[Constraint, ...] = ()) -> list[Table]:
    return [Table("t", columns, constraints)]


# (case, expected model, found model, the severities of the differences, in diff's order)
CASES: list[tuple[str, SchemaModel, SchemaModel, list[str]]] = [
    ("missing table", model(tables=[TABLE]), model(), ["breaking"]),
    ("extra table", model(), model(tables=[TABLE]), ["harmless"]),
    (
        "missing column",
        model(tables=table(COL, Column("d", "text", True))),
        model(tables=table(COL)),
        ["breaking"],
    ),
    (
        "extra nullable column",
        model(tables=table(COL)),
        model(tables=table(COL, Column("d", "text", True))),
        ["harmless"],
    ),
    (
        "extra NOT NULL column",
        model(tables=table(COL)),
        model(tables=table(COL, Column("d", "text", False))),
        ["breaking"],
    ),
    (
        "extra NOT NULL column with a default",
        model(tables=table(COL)),
        model(tables=table(COL, Column("d", "text", False, "'x'::text"))),
        ["harmless"],
    ),
    (
        "extra identity column",
        model(tables=table(COL)),
        model(tables=table(COL, Column("d", "integer", False, identity="ALWAYS"))),
        ["harmless"],
    ),
    ("type", model(tables=table(COL)), model(tables=table(Column("c", "bigint", True))), ["breaking"]),
    ("became NOT NULL", model(tables=table(COL)), model(tables=table(NOT_NULL)), ["breaking"]),
    ("NOT NULL gone", model(tables=table(NOT_NULL)), model(tables=table(COL)), ["risky"]),
    (
        "default of a NOT NULL column gone",
        model(tables=table(Column("c", "integer", False, "0"))),
        model(tables=table(NOT_NULL)),
        ["breaking"],
    ),
    (
        "default of a nullable column gone",
        model(tables=table(Column("c", "integer", True, "0"))),
        model(tables=table(COL)),
        ["risky"],
    ),
    (
        "another default",
        model(tables=table(Column("c", "integer", True, "0"))),
        model(tables=table(Column("c", "integer", True, "1"))),
        ["risky"],
    ),
    (
        "a new default",
        model(tables=table(COL)),
        model(tables=table(Column("c", "integer", True, "1"))),
        ["harmless"],
    ),
    (
        "identity gone from a NOT NULL column",
        model(tables=table(Column("c", "integer", False, identity="BY DEFAULT"))),
        model(tables=table(NOT_NULL)),
        ["breaking"],
    ),
    (
        "identity BY DEFAULT became ALWAYS",
        model(tables=table(Column("c", "integer", False, identity="BY DEFAULT"))),
        model(tables=table(Column("c", "integer", False, identity="ALWAYS"))),
        ["breaking"],
    ),
    (
        "identity ALWAYS became BY DEFAULT",
        model(tables=table(Column("c", "integer", False, identity="ALWAYS"))),
        model(tables=table(Column("c", "integer", False, identity="BY DEFAULT"))),
        ["harmless"],
    ),
    (
        "became generated",
        model(tables=table(COL)),
        model(tables=table(Column("c", "integer", True, generated="1"))),
        ["breaking"],
    ),
    (
        "another generation",
        model(tables=table(Column("c", "integer", True, generated="1"))),
        model(tables=table(Column("c", "integer", True, generated="2"))),
        ["risky"],
    ),
    (
        "table kind",
        model(tables=[TABLE]),
        model(tables=[Table("t", (COL,), kind="partitioned table")]),
        ["risky"],
    ),
    ("missing check", model(tables=table(COL, constraints=(CHECK,))), model(tables=table(COL)), ["risky"]),
    ("extra check", model(tables=table(COL)), model(tables=table(COL, constraints=(CHECK,))), ["risky"]),
    (
        "another check",
        model(tables=table(COL, constraints=(CHECK,))),
        model(tables=table(COL, constraints=(Constraint("k", "check", "CHECK ((c > 1))"),))),
        ["risky"],
    ),
    (
        "a foreign key's rule",
        model(tables=table(COL, constraints=(FK,))),
        model(
            tables=table(
                COL, constraints=(Constraint("fk", "foreign key", FK.definition, on_delete="RESTRICT"),)
            )
        ),
        ["risky"],
    ),
    (
        "a unique constraint made deferrable",
        model(tables=table(COL, constraints=(Constraint("uq", "unique", "UNIQUE (c)"),))),
        model(
            tables=table(
                COL, constraints=(Constraint("uq", "unique", "UNIQUE (c)", deferrable="DEFERRABLE"),)
            )
        ),
        ["risky"],
    ),
    ("missing index", model(indexes=[PLAIN_INDEX]), model(), ["slow"]),
    ("extra index", model(), model(indexes=[PLAIN_INDEX]), ["harmless"]),
    ("missing unique index", model(indexes=[UNIQUE_INDEX]), model(), ["risky"]),
    ("extra unique index", model(), model(indexes=[UNIQUE_INDEX]), ["risky"]),
    (
        "index INVALID",
        model(indexes=[PLAIN_INDEX]),
        model(indexes=[Index("i", "t", PLAIN_INDEX.definition, False)]),
        ["slow"],
    ),
    (
        "index valid again",
        model(indexes=[Index("i", "t", PLAIN_INDEX.definition, False)]),
        model(indexes=[PLAIN_INDEX]),
        ["harmless"],
    ),
    (
        "unique index INVALID",
        model(indexes=[UNIQUE_INDEX]),
        model(indexes=[Index("u", "t", UNIQUE_INDEX.definition, False)]),
        ["risky"],
    ),
    (
        "index definition",
        model(indexes=[PLAIN_INDEX]),
        model(indexes=[Index("i", "t", "CREATE INDEX i ON public.t USING hash (c)")]),
        ["slow"],
    ),
    ("missing view", model(views=[View("v", "SELECT 1")]), model(), ["breaking"]),
    ("extra view", model(), model(views=[View("v", "SELECT 1")]), ["harmless"]),
    (
        "view definition",
        model(views=[View("v", "SELECT 1")]),
        model(views=[View("v", "SELECT 2")]),
        ["risky"],
    ),
    (
        "view materialized",
        model(views=[View("v", "SELECT 1")]),
        model(views=[View("v", "SELECT 1", True)]),
        ["breaking"],
    ),
    ("missing function", model(functions=[FN]), model(), ["breaking"]),
    ("extra function", model(), model(functions=[FN]), ["harmless"]),
    (
        "function body",
        model(functions=[FN]),
        model(functions=[Function("f", "", "function", "integer", "sql", "VOLATILE", "SELECT 2")]),
        ["risky"],
    ),
    (
        "function returns",
        model(functions=[FN]),
        model(functions=[Function("f", "", "function", "bigint", "sql", "VOLATILE", "SELECT 1")]),
        ["breaking"],
    ),
    (
        "function volatility",
        model(functions=[FN]),
        model(functions=[Function("f", "", "function", "integer", "sql", "STABLE", "SELECT 1")]),
        ["risky"],
    ),
    ("missing trigger function", model(functions=[TRIGGER_FN]), model(), ["risky"]),
    ("missing trigger", model(triggers=[Trigger("tr", "t", "CREATE TRIGGER tr ...")]), model(), ["risky"]),
    ("extra trigger", model(), model(triggers=[Trigger("tr", "t", "CREATE TRIGGER tr ...")]), ["risky"]),
    (
        "trigger disabled",
        model(triggers=[Trigger("tr", "t", "CREATE TRIGGER tr ...")]),
        model(triggers=[Trigger("tr", "t", "CREATE TRIGGER tr ...", "DISABLED")]),
        ["risky"],
    ),
    ("missing sequence", model(sequences=[SEQ]), model(), ["breaking"]),
    ("extra sequence", model(), model(sequences=[SEQ]), ["harmless"]),
    (
        "sequence maximum",
        model(sequences=[SEQ]),
        model(sequences=[Sequence("s", "bigint", 1, 1, 1, 100, 1, False)]),
        ["risky"],
    ),
    (
        "sequence cache",
        model(sequences=[SEQ]),
        model(sequences=[Sequence("s", "bigint", 1, 1, 1, 2**63 - 1, 20, False)]),
        ["harmless"],
    ),
    ("missing enum", model(enums=[ENUM]), model(), ["breaking"]),
    ("enum label gone", model(enums=[ENUM]), model(enums=[Enum("e", ("a",))]), ["breaking"]),
    ("enum label added", model(enums=[ENUM]), model(enums=[Enum("e", ("a", "b", "c"))]), ["harmless"]),
    ("enum labels reordered", model(enums=[ENUM]), model(enums=[Enum("e", ("b", "a"))]), ["risky"]),
    ("missing domain", model(domains=[DOMAIN]), model(), ["breaking"]),
    (
        "domain type",
        model(domains=[DOMAIN]),
        model(domains=[Domain("d", "bigint", True, None)]),
        ["breaking"],
    ),
    (
        "domain checks",
        model(domains=[DOMAIN]),
        model(domains=[Domain("d", "integer", True, None, (CHECK,))]),
        ["risky"],
    ),
    ("missing extension", model(extensions=[Extension("citext", "public")]), model(), ["breaking"]),
    ("extra extension", model(), model(extensions=[Extension("citext", "public")]), ["harmless"]),
    (
        "extension schema",
        model(extensions=[Extension("citext", "public")]),
        model(extensions=[Extension("citext", "ext")]),
        ["breaking"],
    ),
    ("missing schema", model(schemas=["audit"]), model(), ["breaking"]),
    ("extra schema", model(), model(schemas=["audit"]), ["harmless"]),
]


@pytest.mark.parametrize(("case", "expected", "found", "severities"), CASES, ids=[case[0] for case in CASES])
def test_each_difference_has_the_severity_the_readme_gives(
    case: str, expected: SchemaModel, found: SchemaModel, severities: list[str]
) -> None:
    differences = diff(expected, found)
    assert [d.severity for d in differences] == severities, [str(d) for d in differences]
    for difference in differences:
        assert difference.severity in SEVERITIES
        assert difference.change == ("changed" if difference.attribute else difference.message.split()[0])


# -- the service -------------------------------------------------------------------------------


def test_the_service_reads_its_health_policy_from_the_environment() -> None:
    base = {"DATABASE_URL": "postgresql://app@db/app"}
    assert read_settings(base).health == HealthPolicy("breaking", "warning")
    chosen = read_settings({**base, "HEALTH_UNHEALTHY_DRIFT": "risky", "HEALTH_LEDGER_AHEAD": "unhealthy"})
    assert chosen.health == HealthPolicy("risky", "unhealthy")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "HEALTH_UNHEALTHY_DRIFT must be one of harmless, slow, risky, breaking or never, not 'Breaking!'"
        ),
    ):
        read_settings({**base, "HEALTH_UNHEALTHY_DRIFT": "Breaking!"})
    with pytest.raises(
        ValueError, match=re.escape("HEALTH_LEDGER_AHEAD must be one of warning or unhealthy, not 'no'")
    ):
        read_settings({**base, "HEALTH_LEDGER_AHEAD": "no"})


@pytest.mark.slow
def test_the_service_probes_and_its_threshold(pg_url: str, tmp_path: Path) -> None:
    with service_starter(tmp_path, [password_of(pg_url)]) as start:
        default = start(pg_url)
        default.wait_healthy()
        strict = start(pg_url, env={"HEALTH_UNHEALTHY_DRIFT": "harmless"})
        strict.wait_healthy()
        query(pg_url, "CREATE INDEX platform_connections_by_hand ON platform_connections (display_name)")

        for service, code in ((default, 200), (strict, 503)):
            live = httpx.get(f"{service.url}/health/live")
            assert (live.status_code, live.json()) == (200, {"status": "alive"})
            for path in READY:
                answer = httpx.get(f"{service.url}{path}")
                assert answer.status_code == code, answer.text
                body = answer.json()
                assert "extra index platform_connections_by_hand (harmless schema drift)" in (
                    body["warnings"] if code == 200 else body["reasons"]
                )

        bad = start(pg_url, env={"HEALTH_LEDGER_AHEAD": "maybe"})
        assert bad.wait_exit() == 1
        assert "HEALTH_LEDGER_AHEAD must be one of warning or unhealthy, not 'maybe'" in bad.log
