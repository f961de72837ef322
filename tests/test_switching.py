"""docs/switching/*.md, run as written: for each tool, a project that tool built (its files, and its
history in the database, written by the tool itself where it installs here: dbmate, yoyo,
alembic), then every ```bash block of the walk-through in one shell, in a scratch folder, with
the suite's virtualenv first on PATH. Each command must succeed, and the database must end with
the tool's history adopted and the walk-through's new migration applied."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import write
from tests.other_tools import alembic_history, flyway_crc, run_tool, tool

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "switching"
USERS = "CREATE TABLE users (id integer PRIMARY KEY);\n"
EMAIL = "ALTER TABLE users ADD COLUMN email text;\n"
ORDERS = "CREATE TABLE orders (id integer PRIMARY KEY);\n"
VIEW = "DROP VIEW IF EXISTS user_emails;\nCREATE VIEW user_emails AS SELECT id, email FROM users;\n"


def blocks(doc: Path) -> str:
    """The walk-through's ```bash blocks, as one script."""
    return "\n".join(re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), re.DOTALL))


def sql(db: Path, *statements: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        rows: list[tuple[object, ...]] = []
        for statement in statements:
            if params:
                rows = conn.execute(statement, params).fetchall()
            else:
                conn.executescript(statement)
        return rows


def query(db: Path, statement: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(statement).fetchall()


# -- the projects each tool left ----------------------------------------------------------------


def flyway(here: Path) -> None:
    folder = here / "src" / "main" / "resources" / "db" / "migration"
    folder.mkdir(parents=True)
    files = [
        ("1", "V1__create_users.sql", USERS),
        ("1.1", "V1.1__add_email.sql", EMAIL),
        (None, "R__user_emails.sql", VIEW),
    ]
    db = here / "app.db"
    sql(
        db,
        "CREATE TABLE flyway_schema_history (installed_rank integer PRIMARY KEY, version text,"
        " description text, type text, script text, checksum integer, installed_by text,"
        " installed_on text, execution_time integer, success boolean)",
    )
    for rank, (version, name, text) in enumerate(files, 1):
        write(folder, name, text)
        sql(db, text)
        sql(
            db,
            "INSERT INTO flyway_schema_history VALUES (?, ?, ?, 'SQL', ?, ?, 'app', '2024-01-01', 3, 1)",
            params=(rank, version, name, name, flyway_crc(text)),
        )


def golang_migrate(here: Path) -> None:
    folder = here / "migrations"
    folder.mkdir()
    write(folder, "000001_create_users.up.sql", USERS)
    write(folder, "000001_create_users.down.sql", "DROP TABLE users;\n")
    write(folder, "000002_add_email.up.sql", EMAIL)
    db = here / "app.db"
    sql(
        db,
        USERS,
        EMAIL,
        "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
    )
    sql(db, "INSERT INTO schema_migrations VALUES (2, 0)")


def dbmate(here: Path) -> None:
    binary = os.environ.get("DBMATE_BIN") or next(
        iter(sorted(ROOT.glob(".cache/dbmate/node_modules/@dbmate/*/bin/dbmate"))), None
    )
    if not binary:
        pytest.skip("no dbmate: scripts/test installs it from npm")
    folder = here / "db" / "migrations"
    folder.mkdir(parents=True)
    write(
        folder,
        "20240101000001_create_users.sql",
        f"-- migrate:up\n{USERS}-- migrate:down\nDROP TABLE users;\n",
    )
    write(folder, "20240101000002_add_email.sql", f"-- migrate:up\n{EMAIL}-- migrate:down\n")
    run_tool([str(binary), "--url", f"sqlite:{here / 'app.db'}", "--no-dump-schema", "up"], here)


def diesel(here: Path) -> None:
    folder = here / "migrations"
    for stem, up in [
        ("00000000000000_diesel_initial_setup", "-- Diesel's setup, for PostgreSQL only\n"),
        ("2024-01-01-000001_create_users", USERS),
    ]:
        (folder / stem).mkdir(parents=True)
        write(folder / stem, "up.sql", up)
        write(folder / stem, "down.sql", "")
    db = here / "app.db"
    sql(
        db,
        USERS,
        "CREATE TABLE __diesel_schema_migrations (version varchar(50) PRIMARY KEY NOT NULL,"
        " run_on timestamp)",
    )
    sql(db, "INSERT INTO __diesel_schema_migrations (version) VALUES ('00000000000000'), ('20240101000001')")


def prisma(here: Path) -> None:
    folder = here / "prisma" / "migrations"
    db = here / "app.db"
    sql(
        db,
        "CREATE TABLE _prisma_migrations (id text PRIMARY KEY, checksum text NOT NULL, finished_at text, "
        "migration_name text NOT NULL, logs text, rolled_back_at text, started_at text,"
        " applied_steps_count integer)",
    )
    for stem, text in [("20240101000001_init", USERS), ("20240101000002_add_email", EMAIL)]:
        (folder / stem).mkdir(parents=True)
        write(folder / stem, "migration.sql", text)
        sql(db, text)
        sql(
            db,
            "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name)"
            " VALUES (?, ?, 'now', ?)",
            params=(stem, hashlib.sha256(text.encode()).hexdigest(), stem),
        )
    write(folder, "migration_lock.toml", 'provider = "sqlite"\n')


def alembic(here: Path) -> None:
    alembic_history(
        here,
        f"sqlite:///{here / 'app.db'}",
        [("a1b2c3", None, "users", USERS), ("d4e5f6", "a1b2c3", "orders", ORDERS)],
    )
    (here / "migrations").mkdir()
    write(here / "migrations", "001_create_users.sql", USERS)
    write(here / "migrations", "002_create_orders.sql", ORDERS)


def yoyo(here: Path) -> None:
    folder = here / "migrations"
    folder.mkdir()
    write(folder, "0001_create_users.sql", USERS)
    write(folder, "0002_add_email.sql", EMAIL)
    run_tool(
        [
            tool("yoyo"),
            "apply",
            "--batch",
            "--no-config-file",
            "--database",
            f"sqlite:///{here / 'app.db'}",
            str(folder),
        ],
        here,
    )


# tool -> (the project it left, dbledger's ledger table, what the ledger holds at the end)
PROJECTS: dict[str, tuple[Callable[[Path], None], str, list[str]]] = {
    "flyway": (
        flyway,
        "schema_migrations",
        ["V1__create_users", "V1.1__add_email", "R__user_emails", "V2__add_nickname"],
    ),
    "golang-migrate": (golang_migrate, "dbledger_migrations", ["000001_create_users", "000002_add_email"]),
    "dbmate": (dbmate, "dbledger_migrations", ["20240101000001_create_users", "20240101000002_add_email"]),
    "diesel": (
        diesel,
        "schema_migrations",
        ["00000000000000_diesel_initial_setup", "2024-01-01-000001_create_users"],
    ),
    "prisma": (prisma, "schema_migrations", ["20240101000001_init", "20240101000002_add_email"]),
    "alembic": (alembic, "schema_migrations", ["001_create_users", "002_create_orders"]),
    "yoyo": (yoyo, "schema_migrations", ["0001_create_users", "0002_add_email"]),
}


def test_every_walk_through_is_tested() -> None:
    assert sorted(p.stem for p in DOCS.glob("*.md")) == sorted(PROJECTS)


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_the_walk_through_runs_as_written(name: str, tmp_path: Path) -> None:
    setup, ledger, expected = PROJECTS[name]
    setup(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBLEDGER_", "DATABASE_URL"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", blocks(DOCS / f"{name}.md")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    db = tmp_path / "app.db"
    rows = [
        name
        for (name,) in query(
            db, f"SELECT migration_name FROM {ledger} WHERE state = 'applied' ORDER BY applied_order"
        )
    ]
    assert rows[: len(expected)] == expected
    adopted = query(db, f"SELECT count(*) FROM {ledger}_history WHERE action = 'adopt'")
    assert adopted == [(len([n for n in expected if n != "V2__add_nickname"]),)]
