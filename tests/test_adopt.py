"""``dbledger adopt --from TOOL`` (dbledger.adoption, docs/switching.md): histories written by the
real tools where they install here (dbmate, yoyo, alembic), and by the documented table shapes
otherwise (Flyway, golang-migrate, Diesel, Prisma), on both databases. Each: the same applied set
adopted, nothing else in the database changed, the next ``up`` a no-op, a new migration applied
after it, and every unclean or disagreeing history refused with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import Result, query, run_cli, table_exists, write
from tests.other_tools import alembic_history, flyway_crc, sqlalchemy_url, tool

LEDGER = "dbledger_migrations"
USERS = "CREATE TABLE users (id integer PRIMARY KEY);\n"
ORDERS = "CREATE TABLE orders (id integer PRIMARY KEY);\n"
ITEMS = "CREATE TABLE items (id integer PRIMARY KEY);\n"


def cli(url: str, folder: Path, *args: str, layout: str | None = None) -> Result:
    env = {"DBLEDGER_LAYOUT": layout} if layout else None
    return run_cli(
        "--database-url",
        url,
        "--dir",
        str(folder),
        "--ledger-table",
        LEDGER,
        *args,
        cwd=folder.parent,
        env=env,
    )


def ledger(url: str) -> list[tuple[str, str]]:
    return [
        (name, state)
        for name, state in query(url, f"SELECT migration_name, state FROM {LEDGER} ORDER BY applied_order")
    ]


def adopted_history(url: str) -> list[tuple[str, str]]:
    rows = query(
        url, f"SELECT migration_name, detail FROM {LEDGER}_history WHERE action = 'adopt' ORDER BY id"
    )
    return [(name, detail) for name, detail in rows]


def then_up_is_a_no_op_and_a_new_migration_runs(
    url: str, folder: Path, new_file: str, layout: str | None = None
) -> None:
    again = cli(url, folder, "up", layout=layout)
    assert again.returncode == 0, again.output
    assert "nothing to do" in again.stdout
    write(folder, new_file, ITEMS)
    after = cli(url, folder, "up", layout=layout)
    assert after.returncode == 0, after.output
    assert ledger(url)[-1] == (Path(new_file).stem.removesuffix(".up"), "applied")
    assert table_exists(url, "items")


# -- dbmate, the real tool ----------------------------------------------------------------------


def dbmate_bin() -> str:
    found = os.environ.get("DBMATE_BIN") or next(
        iter(sorted(Path(__file__).parent.parent.glob(".cache/dbmate/node_modules/@dbmate/*/bin/dbmate"))),
        None,
    )
    if not found:
        pytest.skip("no dbmate: scripts/test installs it from npm")
    return str(found)


def dbmate_url(url: str) -> str:
    if url.startswith("sqlite:///"):
        return f"sqlite:{url[len('sqlite://') :]}"
    return url.replace("postgresql://", "postgres://", 1) + "?sslmode=disable"


def test_a_history_dbmate_wrote_is_adopted(db_url: str, migrations_dir: Path) -> None:
    dbmate = dbmate_bin()
    write(
        migrations_dir,
        "20240101000001_create_users.sql",
        f"-- migrate:up\n{USERS}-- migrate:down\nDROP TABLE users;\n",
    )
    write(
        migrations_dir,
        "20240101000002_create_orders.sql",
        f"-- migrate:up\n{ORDERS}-- migrate:down\nDROP TABLE orders;\n",
    )
    done = subprocess.run(
        [
            dbmate,
            "--url",
            dbmate_url(db_url),
            "--migrations-dir",
            str(migrations_dir),
            "--no-dump-schema",
            "up",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    theirs = query(db_url, "SELECT version FROM schema_migrations ORDER BY version")

    same_name = run_cli(
        "--database-url",
        db_url,
        "--dir",
        str(migrations_dir),
        "adopt",
        "--from",
        "dbmate",
        cwd=migrations_dir.parent,
    )
    assert same_name.returncode == 2
    assert same_name.stderr.splitlines()[-1] == (
        "dbledger: error: dbmate's history is in schema_migrations, the name dbledger's own ledger has: "
        'give dbledger\'s ledger another name, e.g. ledger_table = "dbledger_migrations" in '
        "[tool.dbledger] (every later command reads it there), or --ledger-table dbledger_migrations"
    )

    dry = cli(db_url, migrations_dir, "adopt", "--from", "dbmate", "--dry-run", "--json")
    assert dry.returncode == 0, dry.output
    assert json.loads(dry.stdout)["adopted"] == [
        "20240101000001_create_users",
        "20240101000002_create_orders",
    ]
    assert not table_exists(db_url, LEDGER)

    result = cli(db_url, migrations_dir, "adopt", "--from", "dbmate")
    assert result.returncode == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        "adopted 2 migration(s) from dbmate (schema_migrations); 0 already in the ledger, "
        "0 pending for 'dbledger up'"
    )
    assert ledger(db_url) == [
        ("20240101000001_create_users", "applied"),
        ("20240101000002_create_orders", "applied"),
    ]
    assert adopted_history(db_url)[0] == (
        "20240101000001_create_users",
        "adopted from dbmate (schema_migrations)",
    )
    assert query(db_url, "SELECT version FROM schema_migrations ORDER BY version") == theirs  # untouched
    twice = cli(db_url, migrations_dir, "adopt", "--from", "dbmate")
    assert twice.returncode == 0, twice.output
    assert "adopted 0 migration(s) from dbmate (schema_migrations); 2 already in the ledger" in twice.stdout
    then_up_is_a_no_op_and_a_new_migration_runs(db_url, migrations_dir, "20240101000003_items.sql")


# -- yoyo and alembic, the real tools -----------------------------------------------------------


def test_a_history_yoyo_wrote_is_adopted(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "0001_create_users.sql", USERS)
    write(migrations_dir, "0002_create_orders.sql", ORDERS)
    done = subprocess.run(
        [
            tool("yoyo"),
            "apply",
            "--batch",
            "--no-config-file",
            "--database",
            sqlalchemy_url(db_url),
            str(migrations_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert query(db_url, "SELECT count(*) FROM _yoyo_migration") == [(2,)]
    result = cli(db_url, migrations_dir, "adopt", "--from", "yoyo")
    assert result.returncode == 0, result.output
    assert ledger(db_url) == [("0001_create_users", "applied"), ("0002_create_orders", "applied")]
    then_up_is_a_no_op_and_a_new_migration_runs(db_url, migrations_dir, "0003_items.sql")


def test_a_history_alembic_wrote_is_adopted_once_its_head_is_mapped(
    db_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    alembic_history(
        tmp_path / "alembic_project",
        db_url,
        [("a1b2c3", None, "users", USERS), ("d4e5f6", "a1b2c3", "orders", ORDERS)],
    )
    # The same history as SQL files, as a team writes them when it moves to dbledger.
    write(migrations_dir, "001_create_users.sql", USERS)
    write(migrations_dir, "002_create_orders.sql", ORDERS)

    unmapped = cli(db_url, migrations_dir, "adopt", "--from", "alembic")
    assert unmapped.returncode == 1
    assert (
        "alembic_version says revision d4e5f6 is applied, and dbledger cannot tell which file holds it: "
        "name it, e.g. --revision d4e5f6=<migration name> (the last file it covers)"
    ) in unmapped.stderr
    assert not table_exists(db_url, LEDGER)
    wrong = cli(db_url, migrations_dir, "adopt", "--from", "alembic", "--revision", "d4e5f6=002_orders")
    assert wrong.returncode == 1
    assert "--revision d4e5f6=002_orders: there is no migration '002_orders'" in wrong.stderr

    result = cli(
        db_url, migrations_dir, "adopt", "--from", "alembic", "--revision", "d4e5f6=002_create_orders"
    )
    assert result.returncode == 0, result.output
    assert ledger(db_url) == [("001_create_users", "applied"), ("002_create_orders", "applied")]
    assert query(db_url, "SELECT version_num FROM alembic_version") == [("d4e5f6",)]
    then_up_is_a_no_op_and_a_new_migration_runs(db_url, migrations_dir, "003_items.sql")


# -- Flyway, golang-migrate, Diesel and Prisma: their documented tables --------------------------


def flyway_history(url: str, rows: list[tuple[int, str | None, str, str, int | None, bool]]) -> None:
    query(
        url,
        "CREATE TABLE flyway_schema_history (installed_rank integer PRIMARY KEY, version varchar(50), "
        "description varchar(200) NOT NULL, type varchar(20) NOT NULL, script varchar(1000) NOT NULL, "
        "checksum integer, installed_by varchar(100) NOT NULL, installed_on timestamp NOT NULL DEFAULT "
        "CURRENT_TIMESTAMP, execution_time integer NOT NULL, success boolean NOT NULL)",
    )
    for rank, version, kind, script, checksum, success in rows:
        query(
            url,
            "INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, checksum,"
            " installed_by, execution_time, success) VALUES (%s, %s, %s, %s, %s, %s, 'app', 5, %s)",
            (rank, version, script, kind, script, checksum, success),
        )


def flyway_folder(folder: Path) -> None:
    write(folder, "V1__create_users.sql", USERS)
    write(folder, "V1.1__create_orders.sql", "-- orders\r\n" + ORDERS)


def test_a_flyway_history_is_adopted_with_its_checksums_checked(db_url: str, migrations_dir: Path) -> None:
    flyway_folder(migrations_dir)
    flyway_history(
        db_url,
        [
            (1, "1", "SQL", "V1__create_users.sql", flyway_crc(USERS), True),
            (2, "1.1", "SQL", "V1.1__create_orders.sql", flyway_crc("-- orders\r\n" + ORDERS), True),
        ],
    )
    query(db_url, USERS)
    query(db_url, ORDERS)
    result = cli(db_url, migrations_dir, "adopt", "--from", "flyway")
    assert result.returncode == 0, result.output
    assert ledger(db_url) == [("V1__create_users", "applied"), ("V1.1__create_orders", "applied")]
    then_up_is_a_no_op_and_a_new_migration_runs(db_url, migrations_dir, "V2__items.sql")


def test_a_flyway_baseline_adopts_every_file_up_to_it(sqlite_url: str, migrations_dir: Path) -> None:
    flyway_folder(migrations_dir)
    write(migrations_dir, "V2__later.sql", "CREATE TABLE later (id integer);\n")
    flyway_history(
        sqlite_url,
        [
            (1, "1.1", "BASELINE", "<< Flyway Baseline >>", None, True),
        ],
    )
    result = cli(sqlite_url, migrations_dir, "adopt", "--from", "flyway")
    assert result.returncode == 0, result.output
    assert [name for name, _ in ledger(sqlite_url)] == ["V1__create_users", "V1.1__create_orders"]
    assert "1 pending for 'dbledger up'" in result.stdout


def test_flyway_rows_undone_or_deleted_are_not_adopted(sqlite_url: str, migrations_dir: Path) -> None:
    flyway_folder(migrations_dir)
    flyway_history(
        sqlite_url,
        [
            (1, "1", "SQL", "V1__create_users.sql", flyway_crc(USERS), True),
            (2, "1.1", "SQL", "V1.1__create_orders.sql", flyway_crc("-- orders\r\n" + ORDERS), True),
            (3, "1.1", "UNDO_SQL", "U1.1__create_orders.sql", None, True),
        ],
    )
    result = cli(sqlite_url, migrations_dir, "adopt", "--from", "flyway")
    assert result.returncode == 0, result.output
    assert [name for name, _ in ledger(sqlite_url)] == ["V1__create_users"]


@pytest.mark.parametrize(
    ("rows", "fragments"),
    [
        (
            [(1, "1", "SQL", "V1__create_users.sql", flyway_crc(USERS), False)],
            [
                "Flyway's history has a failed migration (installed_rank 1, V1__create_users.sql): "
                "clean up what it left, run 'flyway repair', then adopt"
            ],
        ),
        (
            [(1, "1", "SQL", "V1__create_users.sql", 12345, True)],
            [
                "V1__create_users.sql changed since flyway applied it (its checksum then: 12345): "
                "restore the file as applied, or pass --accept-checksums to adopt the file as it is now"
            ],
        ),
        (
            [(1, "7", "SQL", "V7__gone.sql", 1, True)],
            [
                "flyway's history has 7 (installed_rank 1, V7__gone.sql), and no file in the folder is that "
                "migration: restore its file, or point --dir at the folder it belongs to"
            ],
        ),
    ],
)
def test_an_unclean_or_disagreeing_flyway_history_is_refused_and_nothing_written(
    rows: list[tuple[int, str | None, str, str, int | None, bool]],
    fragments: list[str],
    db_url: str,
    migrations_dir: Path,
) -> None:
    flyway_folder(migrations_dir)
    flyway_history(db_url, rows)
    result = cli(db_url, migrations_dir, "adopt", "--from", "flyway")
    assert result.returncode == 1, result.output
    for fragment in fragments:
        assert fragment in result.stderr
    assert "nothing was written: flyway's history stays as it is" in result.stderr
    assert not table_exists(db_url, LEDGER)


def test_accept_checksums_adopts_a_file_changed_since(sqlite_url: str, migrations_dir: Path) -> None:
    flyway_folder(migrations_dir)
    flyway_history(sqlite_url, [(1, "1", "SQL", "V1__create_users.sql", 12345, True)])
    result = cli(sqlite_url, migrations_dir, "adopt", "--from", "flyway", "--accept-checksums")
    assert result.returncode == 0, result.output
    assert [name for name, _ in ledger(sqlite_url)] == ["V1__create_users"]


def golang_history(url: str, version: int, dirty: bool) -> None:
    query(url, "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)")
    query(url, "INSERT INTO schema_migrations (version, dirty) VALUES (%s, %s)", (version, dirty))


def test_a_golang_migrate_history_adopts_every_file_up_to_its_version(
    db_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "000001_create_users.up.sql", USERS)
    write(migrations_dir, "000001_create_users.down.sql", "DROP TABLE users;\n")
    write(migrations_dir, "000002_create_orders.up.sql", ORDERS)
    write(migrations_dir, "000003_later.up.sql", "CREATE TABLE later (id integer);\n")
    golang_history(db_url, 2, False)
    result = cli(db_url, migrations_dir, "adopt", "--from", "golang-migrate")
    assert result.returncode == 0, result.output
    assert [name for name, _ in ledger(db_url)] == ["000001_create_users", "000002_create_orders"]
    assert "1 pending for 'dbledger up'" in result.stdout
    assert query(db_url, "SELECT version, dirty FROM schema_migrations") == [(2, False)]
    after = cli(db_url, migrations_dir, "up")
    assert after.returncode == 0, after.output
    assert [name for name, _ in ledger(db_url)][-1] == "000003_later"
    then_up_is_a_no_op_and_a_new_migration_runs(db_url, migrations_dir, "000004_items.up.sql")


def test_a_dirty_golang_migrate_history_is_refused(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "000001_create_users.up.sql", USERS)
    golang_history(db_url, 1, True)
    result = cli(db_url, migrations_dir, "adopt", "--from", "golang-migrate")
    assert result.returncode == 1
    assert (
        "golang-migrate left version 1 dirty: it failed halfway; fix the database by hand, run "
        "'migrate force 1' (or the version before it), then adopt"
    ) in result.stderr
    assert not table_exists(db_url, LEDGER)


def test_a_diesel_history_is_adopted(db_url: str, migrations_dir: Path) -> None:
    for stem, sql in [
        ("00000000000000_diesel_initial_setup", "-- setup\n"),
        ("2024-01-01-000001_create_users", USERS),
    ]:
        (migrations_dir / stem).mkdir()
        write(migrations_dir / stem, "up.sql", sql)
        write(migrations_dir / stem, "down.sql", "")
    query(
        db_url,
        "CREATE TABLE __diesel_schema_migrations (version varchar(50) PRIMARY KEY NOT NULL, "
        "run_on timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )
    query(
        db_url,
        "INSERT INTO __diesel_schema_migrations (version) VALUES ('00000000000000'), ('20240101000001')",
    )
    result = cli(db_url, migrations_dir, "adopt", "--from", "diesel")
    assert result.returncode == 0, result.output
    assert [name for name, _ in ledger(db_url)] == [
        "00000000000000_diesel_initial_setup",
        "2024-01-01-000001_create_users",
    ]
    then_up_is_a_no_op_and_a_new_migration_runs_diesel(db_url, migrations_dir)


def then_up_is_a_no_op_and_a_new_migration_runs_diesel(url: str, folder: Path) -> None:
    assert "nothing to do" in cli(url, folder, "up").stdout
    (folder / "2024-01-02-000000_items").mkdir()
    write(folder / "2024-01-02-000000_items", "up.sql", ITEMS)
    assert cli(url, folder, "up").returncode == 0
    assert ledger(url)[-1] == ("2024-01-02-000000_items", "applied")


def prisma_history(url: str, rows: list[tuple[str, str, bool, bool]]) -> None:
    query(
        url,
        "CREATE TABLE _prisma_migrations (id varchar(36) PRIMARY KEY, checksum varchar(64) NOT NULL, "
        "finished_at timestamp, migration_name varchar(255) NOT NULL, logs text, rolled_back_at timestamp, "
        "started_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP, "
        "applied_steps_count integer NOT NULL DEFAULT 0)",
    )
    for index, (name, checksum, finished, rolled_back) in enumerate(rows):
        query(
            url,
            "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, rolled_back_at) "
            "VALUES (%s, %s, "
            + ("CURRENT_TIMESTAMP" if finished else "NULL")
            + ", %s, "
            + ("CURRENT_TIMESTAMP" if rolled_back else "NULL")
            + ")",
            (str(index), checksum, name),
        )


def sha256_hex(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def prisma_folder(folder: Path) -> None:
    for stem, sql in [("20240101000001_users", USERS), ("20240101000002_orders", ORDERS)]:
        (folder / stem).mkdir()
        write(folder / stem, "migration.sql", sql)


def test_a_prisma_history_is_adopted_skipping_rolled_back_attempts(db_url: str, migrations_dir: Path) -> None:
    prisma_folder(migrations_dir)
    prisma_history(
        db_url,
        [
            ("20240101000001_users", sha256_hex(USERS), True, False),
            ("20240101000002_orders", sha256_hex(ORDERS), False, True),  # failed, then resolved
            ("20240101000002_orders", sha256_hex(ORDERS), True, False),
        ],
    )
    result = cli(db_url, migrations_dir, "adopt", "--from", "prisma")
    assert result.returncode == 0, result.output
    assert [name for name, _ in ledger(db_url)] == ["20240101000001_users", "20240101000002_orders"]
    assert "nothing to do" in cli(db_url, migrations_dir, "up").stdout
    (migrations_dir / "20240101000003_items").mkdir()
    write(migrations_dir / "20240101000003_items", "migration.sql", ITEMS)
    assert cli(db_url, migrations_dir, "up").returncode == 0
    assert ledger(db_url)[-1] == ("20240101000003_items", "applied")


def test_a_prisma_migration_never_finished_is_refused(db_url: str, migrations_dir: Path) -> None:
    prisma_folder(migrations_dir)
    prisma_history(db_url, [("20240101000001_users", sha256_hex(USERS), False, False)])
    result = cli(db_url, migrations_dir, "adopt", "--from", "prisma")
    assert result.returncode == 1
    assert (
        "Prisma's migration 20240101000001_users started and never finished: fix the database, run "
        "'prisma migrate resolve --applied 20240101000001_users' (or --rolled-back), then adopt"
    ) in result.stderr
    assert not table_exists(db_url, LEDGER)


def test_a_table_that_is_not_the_tools_history_is_refused(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", USERS)
    query(sqlite_url, "CREATE TABLE _prisma_migrations (id text)")
    query(sqlite_url, "INSERT INTO _prisma_migrations VALUES ('x')")
    result = cli(sqlite_url, migrations_dir, "adopt", "--from", "prisma")
    assert result.returncode == 1
    assert (
        "_prisma_migrations is not prisma's history: it has no column checksum, finished_at, "
        "migration_name, rolled_back_at" in result.stderr
    )


def test_no_such_table(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", USERS)
    query(sqlite_url, "CREATE TABLE unrelated (id integer)")
    result = cli(sqlite_url, migrations_dir, "adopt", "--from", "diesel")
    assert result.returncode == 1
    assert "there is no table __diesel_schema_migrations in" in result.stderr


def test_a_flyway_repeatable_changed_since_stays_pending(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "V1__create_users.sql", USERS)
    write(migrations_dir, "R__users_view.sql", "CREATE VIEW v AS SELECT id FROM users;\n")
    flyway_history(
        sqlite_url,
        [
            (1, "1", "SQL", "V1__create_users.sql", flyway_crc(USERS), True),
            (2, None, "SQL", "R__users_view.sql", flyway_crc("CREATE VIEW v AS SELECT 1;\n"), True),
        ],
    )
    query(sqlite_url, USERS)
    result = cli(sqlite_url, migrations_dir, "adopt", "--from", "flyway")
    assert result.returncode == 0, result.output
    assert ledger(sqlite_url) == [("V1__create_users", "applied")]
    assert "1 pending for 'dbledger up'" in result.stdout
    assert cli(sqlite_url, migrations_dir, "up").returncode == 0
    assert ledger(sqlite_url)[-1] == ("R__users_view", "applied")
