"""``up --backup DIR``: a backup before the run's first change when a pending migration is risky,
recorded in the history with its checksum; a failed backup changes nothing."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import psycopg

from tests.helpers import pg_dump_for, query, run_cli, table_exists, write

CREATE = "CREATE TABLE a (x INTEGER);\nINSERT INTO a VALUES (1), (2);\n"
DROP = "-- migrate:up backup:true\nDROP TABLE a;\n"


def up(url: str, folder: Path, *args: str) -> tuple[int, str]:
    result = run_cli("--database-url", url, "--dir", str(folder), "up", *args, cwd=folder)
    return result.returncode, result.stderr


def test_a_risky_migration_gets_a_backup_of_the_database_before_the_deploy(
    db_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    pg_dump_for(db_url)
    write(migrations_dir, "001_a.sql", CREATE)
    assert up(db_url, migrations_dir)[0] == 0
    write(migrations_dir, "002_drop.sql", DROP)
    backups = tmp_path / "backups"

    code, err = up(db_url, migrations_dir, "--backup", str(backups))

    assert code == 0, err
    [dump] = list(backups.iterdir())
    assert "002_drop" in dump.name
    assert "backed up to " in err
    assert err.index("backed up to") < err.index("applying 002_drop")
    [(detail,)] = query(db_url, "SELECT detail FROM schema_migrations_history WHERE action = 'backup'")
    assert detail == f"{dump} sha256:{hashlib.sha256(dump.read_bytes()).hexdigest()}"
    assert not table_exists(db_url, "a")
    restore = err.split("restore with: ", 1)[1].splitlines()[0]

    # The backup holds table a as it was: restore it and look.
    if db_url.startswith("sqlite"):
        subprocess.run(restore, shell=True, check=True)
    else:
        password = psycopg.conninfo.conninfo_to_dict(db_url)["password"]
        subprocess.run(restore, shell=True, check=True, env={**os.environ, "PGPASSWORD": str(password)})
    assert query(db_url, "SELECT x FROM a ORDER BY x") == [(1,), (2,)]


def test_no_risky_migration_no_backup(db_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    write(migrations_dir, "001_a.sql", CREATE)

    code, err = up(db_url, migrations_dir, "--backup", str(tmp_path / "backups"))

    assert code == 0, err
    assert not (tmp_path / "backups").exists()
    assert query(db_url, "SELECT count(*) FROM schema_migrations_history WHERE action = 'backup'") == [(0,)]


def test_a_failed_backup_stops_the_run_before_any_change(
    db_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(migrations_dir, "001_a.sql", CREATE)
    write(migrations_dir, "002_drop.sql", DROP)
    blocker = write(tmp_path, "not_a_directory", "x")

    code, err = up(db_url, migrations_dir, "--backup", str(blocker / "backups"))

    assert code == 1
    assert "cannot back up" in err
    assert not table_exists(db_url, "a")  # not even the harmless 001 ran
    assert query(db_url, "SELECT count(*) FROM schema_migrations") == [(0,)]
