"""Edges of rollback and dry runs found in review: refusals before any change, validated
targets, redacted and runnable dry-run scripts, JSON that keeps the plan and the backup."""

from __future__ import annotations

import json
from pathlib import Path

import dbledger
from tests.helpers import pg_dump_for, query, run_cli, table_exists, write

A = "-- migrate:up\nCREATE TABLE a (x INTEGER);\n-- migrate:down\nDROP TABLE a;\n"
C = "-- migrate:up\nCREATE TABLE c (x INTEGER);\n-- migrate:down\nDROP TABLE c;\n"


def cli(url: str, folder: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder)
    return result.returncode, result.stdout, result.stderr


def names(url: str) -> list[str]:
    return [n for (n,) in query(url, "SELECT migration_name FROM schema_migrations ORDER BY id")]


def test_redo_refuses_what_up_would_refuse_before_changing_anything(
    db_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_a.sql", A)
    write(migrations_dir, "003_c.sql", C)
    dbledger.migrate(db_url, migrations_dir)
    write(migrations_dir, "002_b.sql", "CREATE TABLE b (x INTEGER);\n")  # out of order

    code, _, err = cli(db_url, migrations_dir, "redo")

    assert code == 1
    assert "migration '002_b' is pending but sorts before version 3" in err
    assert table_exists(db_url, "c")
    assert names(db_url) == ["001_a", "003_c"]


def test_commit_in_an_older_down_section_refuses_before_the_first_step(
    db_url: str, migrations_dir: Path
) -> None:
    write(
        migrations_dir,
        "001_a.sql",
        "-- migrate:up\nCREATE TABLE a (x INTEGER);\n-- migrate:down\nDROP TABLE a;\nCOMMIT;\n",
    )
    write(migrations_dir, "002_c.sql", C)
    dbledger.migrate(db_url, migrations_dir)

    for args in (("down", "--to", "0"), ("down", "--to", "0", "--dry-run")):
        code, _, err = cli(db_url, migrations_dir, *args)
        assert code == 2, err
        assert "line 5: COMMIT would end the transaction" in err
        assert "'-- migrate:down transaction:false'" in err
        assert table_exists(db_url, "c")
        assert names(db_url) == ["001_a", "002_c"]


def test_down_to_a_version_that_is_not_applied_is_a_usage_error(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", A)
    dbledger.migrate(db_url, migrations_dir)

    code, _, err = cli(db_url, migrations_dir, "down", "--to", "99")

    assert code == 2
    assert "no applied migration has version 99" in err
    assert names(db_url) == ["001_a"]


def test_a_refused_dry_run_answers_like_the_command(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", A)
    dbledger.migrate(db_url, migrations_dir)
    write(migrations_dir, "001_a.sql", A + "-- edited\n")
    write(migrations_dir, "002_c.sql", C)

    dry = cli(db_url, migrations_dir, "up", "--dry-run", "--json")
    real = cli(db_url, migrations_dir, "up", "--json")

    assert dry[0] == real[0] == 1
    dry_doc, real_doc = json.loads(dry[1]), json.loads(real[1])
    assert dry_doc == real_doc
    assert dry_doc["ok"] is False
    assert dry_doc["error"]["type"] == "LedgerStateError"
    assert "was modified after it was applied" in dry_doc["error"]["problems"][0]
    assert names(db_url) == ["001_a"]


def test_dry_run_masks_passwords_and_keeps_trailing_comments_runnable(
    pg_url: str, migrations_dir: Path
) -> None:
    write(
        migrations_dir,
        "001_role.sql",
        "CREATE ROLE app_ro LOGIN PASSWORD 'S3cr3t-RO-pass';\nCREATE TABLE t (x INTEGER) -- note\n;\n",
    )

    code, out, _ = cli(pg_url, migrations_dir, "up", "--dry-run")
    json_code, json_out, _ = cli(pg_url, migrations_dir, "up", "--dry-run", "--json")

    assert (code, json_code) == (0, 0)
    assert "S3cr3t-RO-pass" not in out + json_out
    assert "PASSWORD '***'" in out
    assert "CREATE TABLE t (x INTEGER) -- note\n;" in out


def test_up_json_reports_the_backup(db_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    pg_dump_for(db_url)
    write(migrations_dir, "001_a.sql", "-- migrate:up backup:true\nCREATE TABLE a (x INTEGER);\n")

    code, out, err = cli(db_url, migrations_dir, "up", "--json", "--backup", str(tmp_path / "b"))

    assert code == 0, err
    backup = json.loads(out)["backup"]
    assert Path(backup["path"]).parent == tmp_path / "b"
    assert len(backup["sha256"]) == 64
    assert backup["restore_command"]
