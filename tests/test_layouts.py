"""Other tools' folders read as they are (dbledger.layouts, docs/switching.md): each layout's
files applied in that tool's order on both databases, rolled back through its own down files, a
comment-only up file and an empty down file run as the tool runs them (no-ops), and folders that
mix layouts, reuse a version or contradict the configured layout refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Result, query, run_cli, table_exists, write

# (version as the tool writes it, name, up SQL, down SQL or None)
Spec = tuple[str, str, str, str | None]
HISTORY: list[Spec] = [
    ("1", "create_a", "CREATE TABLE a (id integer);\n", "DROP TABLE a;\n"),
    ("2", "mysql_only", "-- this migration is for MySQL; nothing to do here\n", ""),
    ("10", "create_b", "CREATE TABLE b (id integer);\n", "DROP TABLE b;\n"),
]


def golang(folder: Path, specs: list[Spec]) -> list[str]:
    names = []
    for version, name, up, down in specs:
        stem = f"{int(version):06d}_{name}"
        write(folder, f"{stem}.up.sql", up)
        if down is not None:
            write(folder, f"{stem}.down.sql", down)
        names.append(stem)
    return names


def flyway(folder: Path, specs: list[Spec]) -> list[str]:
    names = []
    for version, name, up, down in specs:
        write(folder, f"V{version}__{name}.sql", up)
        if down is not None:
            write(folder, f"U{version}__{name}.sql", down)
        names.append(f"V{version}__{name}")
    return names


def diesel(folder: Path, specs: list[Spec]) -> list[str]:
    names = []
    for version, name, up, down in specs:
        stem = f"2024-01-01-{int(version):06d}_{name}"
        (folder / stem).mkdir()
        write(folder / stem, "up.sql", up)
        if down is not None:
            write(folder / stem, "down.sql", down)
        names.append(stem)
    return names


def prisma(folder: Path, specs: list[Spec]) -> list[str]:
    names = []
    for version, name, up, _ in specs:
        stem = f"202401010000{int(version):02d}_{name}"
        (folder / stem).mkdir()
        write(folder / stem, "migration.sql", up)
        names.append(stem)
    write(folder, "migration_lock.toml", 'provider = "postgresql"\n')
    return names


def dbmate(folder: Path, specs: list[Spec]) -> list[str]:
    names = []
    for version, name, up, down in specs:
        stem = f"2024010100000{version}_{name.replace('_', '-').title()}"
        write(folder, f"{stem}.sql", f"-- migrate:up\n{up}-- migrate:down\n{down or ''}")
        names.append(stem)
    return names


WRITERS: dict[str, Callable[[Path, list[Spec]], list[str]]] = {
    "golang-migrate": golang,
    "flyway": flyway,
    "diesel": diesel,
    "prisma": prisma,
}


def cli(url: str, folder: Path, *args: str, layout: str | None = None) -> Result:
    env = {"DBLEDGER_LAYOUT": layout} if layout else None
    return run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder.parent, env=env)


def applied(url: str) -> list[str]:
    return [
        name for (name,) in query(url, "SELECT migration_name FROM schema_migrations ORDER BY applied_order")
    ]


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_each_layout_is_read_in_its_tools_order_and_found_from_its_files(
    layout: str, db_url: str, migrations_dir: Path
) -> None:
    names = WRITERS[layout](migrations_dir, HISTORY)
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert f"note: reading {migrations_dir} in {layout}'s layout (from " in result.stderr
    assert f'set layout = "{layout}" in [tool.dbledger] to say so' in result.stderr
    assert applied(db_url) == names  # 10 after 2: numbers, not text
    assert table_exists(db_url, "a")
    assert table_exists(db_url, "b")
    again = cli(db_url, migrations_dir, "up", layout=layout)
    assert again.returncode == 0, again.output
    assert "nothing to do" in again.stdout
    assert "note: reading" not in again.stderr  # configured: nothing to say


@pytest.mark.parametrize("layout", ["golang-migrate", "flyway", "diesel"])
def test_rollback_runs_the_down_files_and_an_empty_one_as_a_no_op(
    layout: str, db_url: str, migrations_dir: Path
) -> None:
    WRITERS[layout](migrations_dir, HISTORY)
    assert cli(db_url, migrations_dir, "up", layout=layout).returncode == 0
    result = cli(db_url, migrations_dir, "down", "--steps", "3", layout=layout)
    assert result.returncode == 0, result.output
    assert "rolled back 3 migration(s)" in result.stdout
    assert applied(db_url) == []
    assert not table_exists(db_url, "a")
    assert not table_exists(db_url, "b")


@pytest.mark.parametrize(
    ("layout", "advice"),
    [
        ("golang-migrate", "add 000003_c.down.sql with SQL that undoes it"),
        ("flyway", "add its undo file, U3__c.sql"),
        ("diesel", "add down.sql with SQL that undoes it to {folder}/2024-01-01-000003_c"),
        ("prisma", "a Prisma migration has no down: undo it with a new migration"),
    ],
)
def test_a_rollback_without_a_down_file_says_what_to_add_in_the_layouts_terms(
    layout: str, advice: str, sqlite_url: str, migrations_dir: Path
) -> None:
    WRITERS[layout](migrations_dir, [("3", "c", "CREATE TABLE c (id integer);\n", None)])
    assert cli(sqlite_url, migrations_dir, "up", layout=layout).returncode == 0
    result = cli(sqlite_url, migrations_dir, "down", layout=layout)
    assert result.returncode == 1, result.output
    assert "has no down section (" in result.stderr
    assert advice.format(folder=migrations_dir) + ", or roll back fewer steps" in result.stderr
    assert table_exists(sqlite_url, "c")


def test_flyway_versions_compare_part_by_part(db_url: str, migrations_dir: Path) -> None:
    for version in ("2", "1.10", "1_2", "1.1", "1"):  # 1_2 is 1.2, as Flyway reads it
        write(
            migrations_dir,
            f"V{version}__step.sql",
            f"CREATE TABLE t_{version.replace('.', '_')} (id integer);\n",
        )
    result = cli(db_url, migrations_dir, "up", "--to", "1.2")
    assert result.returncode == 0, result.output
    assert applied(db_url) == ["V1__step", "V1.1__step", "V1_2__step"]
    assert cli(db_url, migrations_dir, "up").returncode == 0
    assert applied(db_url)[3:] == ["V1.10__step", "V2__step"]
    status = json.loads(cli(db_url, migrations_dir, "status", "--json").stdout)
    assert [row["version"] for row in status["applied"]] == [1, "1.1", "1.2", "1.10", 2]
    assert status["version"] == 2


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"V1__a.sql": "SELECT 1;\n", "V1.0__b.sql": "SELECT 1;\n"}, "version 1 is also used by"),
        ({"V001__a.sql": "SELECT 1;\n", "V1__b.sql": "SELECT 1;\n"}, "version 1 is also used by"),
        (
            {"U2__a.sql": "SELECT 1;\n", "V1__b.sql": "SELECT 1;\n"},
            "an undo file for version 2, which has no V2__ file",
        ),
        (
            {"V1__a.sql": "SELECT 1;\n", "V1__a.sql.conf": "retries=3\n"},
            "unknown Flyway script setting 'retries'",
        ),
        (
            {"V1__a.sql": "-- flyway:executeInTransaction=maybe\nSELECT 1;\n"},
            "line 1: executeInTransaction must be true or false, not 'maybe'",
        ),
    ],
)
def test_flyway_files_it_would_refuse_are_refused(
    files: dict[str, str], message: str, sqlite_url: str, migrations_dir: Path
) -> None:
    for name, text in files.items():
        write(migrations_dir, name, text)
    result = cli(sqlite_url, migrations_dir, "up")
    assert result.returncode == 2, result.output
    assert message in result.stderr
    assert str(migrations_dir) in result.stderr.splitlines()[-1]
    assert not table_exists(sqlite_url, "schema_migrations")


def concurrently(url: str) -> str:
    return (
        "CREATE INDEX CONCURRENTLY t_id ON t (id);\n"
        if url.startswith("postgresql")
        else "CREATE INDEX t_id ON t (id);\n"
    )


def index_exists(url: str) -> bool:
    if url.startswith("sqlite"):
        return bool(query(url, "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 't_id'"))
    return bool(query(url, "SELECT 1 FROM pg_indexes WHERE indexname = 't_id'"))


@pytest.mark.parametrize("how", ["script config file", "comment line"])
def test_flyway_execute_in_transaction_false_runs_outside_a_transaction(
    how: str, db_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "V1__t.sql", "CREATE TABLE t (id integer);\n")
    if how == "comment line":
        write(
            migrations_dir, "V2__index.sql", "-- flyway:executeInTransaction=false\n" + concurrently(db_url)
        )
    else:
        write(migrations_dir, "V2__index.sql", concurrently(db_url))
        write(
            migrations_dir,
            "V2__index.sql.conf",
            "# Flyway's script configuration\nexecuteInTransaction=false\n",
        )
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert index_exists(db_url)


def test_diesel_metadata_run_in_transaction_false(db_url: str, migrations_dir: Path) -> None:
    diesel(migrations_dir, [("1", "t", "CREATE TABLE t (id integer);\n", "DROP TABLE t;\n")])
    folder = migrations_dir / "2024-01-01-000002_index"
    folder.mkdir()
    write(folder, "up.sql", concurrently(db_url))
    write(folder, "down.sql", "DROP INDEX t_id;\n")
    write(folder, "metadata.toml", "run_in_transaction = false\n")
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert index_exists(db_url)


def test_diesel_metadata_it_does_not_know_is_refused(sqlite_url: str, migrations_dir: Path) -> None:
    diesel(migrations_dir, [("1", "t", "CREATE TABLE t (id integer);\n", None)])
    write(migrations_dir / "2024-01-01-000001_t", "metadata.toml", "run_in_transaction = 'no'\n")
    result = cli(sqlite_url, migrations_dir, "status")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"dbledger: error: {migrations_dir / '2024-01-01-000001_t' / 'metadata.toml'}: "
        "run_in_transaction must be true or false, not 'no'"
    )


def test_a_folder_mixing_two_tools_layouts_is_refused_naming_a_file_of_each(
    db_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (id integer);\n")
    write(migrations_dir, "000002_b.up.sql", "CREATE TABLE b (id integer);\n")
    write(migrations_dir, "V3__c.sql", "CREATE TABLE c (id integer);\n")
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 2, result.output
    assert result.stderr.splitlines()[-1] == (
        f"dbledger: error: {migrations_dir / '001_a.sql'}: the migrations folder mixes the layouts of "
        "different tools: 000002_b.up.sql is named for golang-migrate, 001_a.sql for dbledger, "
        "V3__c.sql for flyway: a folder holds one tool's migrations; rename or move the others"
    )
    assert not table_exists(db_url, "a")
    assert not table_exists(db_url, "schema_migrations")


def test_a_configured_layout_the_files_contradict_is_refused(sqlite_url: str, migrations_dir: Path) -> None:
    flyway(migrations_dir, [("1", "a", "CREATE TABLE a (id integer);\n", None)])
    result = cli(sqlite_url, migrations_dir, "status", layout="golang-migrate")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"dbledger: error: layout is 'golang-migrate', but V1__a.sql in '{migrations_dir}' is named for "
        'flyway: rename it in golang-migrate\'s way, or set layout = "flyway"'
    )


def test_an_unknown_layout_is_a_usage_error(sqlite_url: str, migrations_dir: Path) -> None:
    result = cli(sqlite_url, migrations_dir, "status", layout="flywya")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "dbledger: error: unknown layout 'flywya' (from DBLEDGER_LAYOUT); did you mean 'flyway'? "
        "(known: dbledger, dbmate, golang-migrate, flyway, diesel, prisma)"
    )


def test_the_layout_is_read_from_pyproject(sqlite_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "db" / "migrations"
    folder.mkdir(parents=True)
    dbmate(folder, HISTORY[:1])
    (tmp_path / "pyproject.toml").write_text('[tool.dbledger]\nlayout = "dbmate"\ndir = "db/migrations"\n')
    result = run_cli("--database-url", sqlite_url, "up", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert applied(sqlite_url) == ["20240101000001_Create-A"]


def test_dbmate_layout_runs_empty_sections_as_dbmate_does_and_dbledgers_own_refuses_them(
    sqlite_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "20240101000001_noop.sql", "-- migrate:up\n-- for MySQL only\n-- migrate:down\n")
    own = cli(sqlite_url, migrations_dir, "up")
    assert own.returncode == 2, own.output  # dbledger's layout: the template of 'dbledger new'
    assert "the up section is empty" in own.stderr
    assert cli(sqlite_url, migrations_dir, "up", layout="dbmate").returncode == 0
    assert applied(sqlite_url) == ["20240101000001_noop"]
    down = cli(sqlite_url, migrations_dir, "down", layout="dbmate")
    assert down.returncode == 0, down.output
    assert applied(sqlite_url) == []


def test_a_golang_migrate_down_file_without_its_up_file_is_refused(
    sqlite_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "000001_a.up.sql", "SELECT 1;\n")
    write(migrations_dir, "000002_b.down.sql", "SELECT 1;\n")
    result = cli(sqlite_url, migrations_dir, "status")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"dbledger: error: {migrations_dir / '000002_b.down.sql'}: a down file without its up file: "
        "add 000002_b.up.sql, or remove this one"
    )


def test_a_changed_up_file_is_a_modified_migration_and_a_changed_down_file_is_not(
    sqlite_url: str, migrations_dir: Path
) -> None:
    golang(migrations_dir, HISTORY[:1])
    assert cli(sqlite_url, migrations_dir, "up").returncode == 0
    write(migrations_dir, "000001_create_a.down.sql", "DROP TABLE IF EXISTS a;\n")
    assert cli(sqlite_url, migrations_dir, "verify").returncode == 0
    write(migrations_dir, "000001_create_a.up.sql", "CREATE TABLE a (id bigint);\n")
    verify = cli(sqlite_url, migrations_dir, "verify")
    assert verify.returncode == 1
    assert "migration '000001_create_a' was modified after it was applied" in verify.stderr


def test_a_link_out_of_a_diesel_folder_is_refused(
    sqlite_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "credentials"
    secret.write_text("password=hunter2\n")
    folder = migrations_dir / "2024-01-01-000001_leak"
    folder.mkdir()
    (folder / "up.sql").symlink_to(secret)
    result = cli(sqlite_url, migrations_dir, "up", "--dry-run")
    assert result.returncode == 2
    assert f"is a symbolic link to {secret}, outside the migrations folder" in result.stderr
    assert "hunter2" not in result.output


def test_golang_migrate_files_that_cannot_run_in_a_transaction_run_as_migrate_runs_them(
    db_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "000001_t.up.sql", "CREATE TABLE t (id integer);\n")
    write(migrations_dir, "000002_own_transaction.up.sql", "BEGIN;\nINSERT INTO t VALUES (1);\nCOMMIT;\n")
    write(migrations_dir, "000003_index.up.sql", concurrently(db_url))
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert query(db_url, "SELECT id FROM t") == [(1,)]
    assert index_exists(db_url)


def test_diesel_down_to_0_rolls_back_its_initial_setup_too(sqlite_url: str, migrations_dir: Path) -> None:
    for stem, up in [
        ("00000000000000_diesel_initial_setup", "-- setup\n"),
        ("2024-01-01-000001_t", "CREATE TABLE t (id integer);\n"),
    ]:
        (migrations_dir / stem).mkdir()
        write(migrations_dir / stem, "up.sql", up)
        write(migrations_dir / stem, "down.sql", "DROP TABLE t;\n" if "_t" in stem else "")
    assert cli(sqlite_url, migrations_dir, "up").returncode == 0
    result = cli(sqlite_url, migrations_dir, "down", "--to", "0")
    assert result.returncode == 0, result.output
    assert applied(sqlite_url) == []


def test_flyway_reads_its_subfolders(sqlite_url: str, migrations_dir: Path) -> None:
    (migrations_dir / "v1").mkdir()
    (migrations_dir / "v2" / "deep").mkdir(parents=True)
    write(migrations_dir / "v1", "V1__a.sql", "CREATE TABLE a (id integer);\n")
    write(migrations_dir / "v2" / "deep", "V2__b.sql", "CREATE TABLE b (id integer);\n")
    result = cli(sqlite_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert "in flyway's layout (from V1__a.sql)" in result.stderr
    assert applied(sqlite_url) == ["V1__a", "V2__b"]


@pytest.mark.parametrize("layout", ["golang-migrate", "diesel", "dbmate"])
def test_what_new_writes_is_refused_until_written_up_and_down(
    layout: str, sqlite_url: str, migrations_dir: Path
) -> None:
    env = {"DBLEDGER_LAYOUT": layout}
    created = run_cli("--dir", str(migrations_dir), "new", "add_t", cwd=migrations_dir.parent, env=env)
    assert created.returncode == 0, created.output
    up = cli(sqlite_url, migrations_dir, "up", layout=layout)
    assert up.returncode == 2
    assert "the up section is empty" in up.stderr
    path = Path(created.stdout.split("created ", 1)[1].strip())
    text = path.read_text().replace(
        "-- dbledger new: write this migration's SQL here", "CREATE TABLE t (id integer);", 1
    )
    path.write_text(text)
    assert cli(sqlite_url, migrations_dir, "up", layout=layout).returncode == 0
    down = cli(sqlite_url, migrations_dir, "down", layout=layout)
    assert down.returncode == 1, down.output  # its down is still the template: no rollback yet
    assert "has no down section" in down.stderr
    assert table_exists(sqlite_url, "t")
