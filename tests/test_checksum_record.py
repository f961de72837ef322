"""The checksum record kept between runs (dbledger.checksumcache), the sections read only when
asked for, the parse trees shared within a run (dbledger.sqltrees), and what the no-op path
loads. Every test runs real commands on real databases; the record is the real file dbledger
writes, under this test run's own XDG_CACHE_HOME (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

import dbledger
from dbledger import checksumcache, sqltrees
from dbledger.checksumcache import FileStamp, Record
from dbledger.errors import MigrationFileError
from dbledger.migrations import read_folder

from .helpers import query, run_cli, write


def _settle(folder: Path) -> Path:
    """Make the record of ``folder`` vouch for its files now, as it does on its own once the
    files are ``SETTLE_NS`` older than a scan (rewriting its scan time, not its stamps)."""
    path = checksumcache.location(folder)
    assert path is not None
    document = json.loads(path.read_text())
    document["scanned_ns"] = time.time_ns() + 10 * checksumcache.SETTLE_NS
    path.write_text(json.dumps(document))
    return path


def test_a_scan_writes_a_record_that_holds_no_sql(migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", "CREATE TABLE users (id integer, password text);\n")
    read_folder(migrations_dir)
    path = checksumcache.location(migrations_dir)
    assert path is not None
    assert path.exists()
    text = path.read_text()
    assert "001_users.sql" in text
    assert "CREATE TABLE" not in text
    assert "password" not in text


def test_an_unchanged_folder_is_not_read_again_and_its_sql_is_read_when_asked_for(
    migrations_dir: Path,
) -> None:
    write(migrations_dir, "001_users.sql", "CREATE TABLE users (id integer);\n")
    first = read_folder(migrations_dir).migrations[0]
    _settle(migrations_dir)
    again = read_folder(migrations_dir).migrations[0]
    assert again == first
    assert again.checksum == first.checksum
    assert again.up.sql == "CREATE TABLE users (id integer);\n"  # read now, and checked
    assert again.text == first.text
    assert again.path == first.path


def test_a_file_given_back_its_size_and_mtime_after_an_edit_is_still_caught(
    sqlite_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    """``touch -r`` or a tool that restores timestamps cannot hide an edit: the change time moves."""
    path = write(migrations_dir, "001_grant.sql", "CREATE TABLE t (who text DEFAULT 'anon');\n")
    assert (
        run_cli("--database-url", sqlite_url, "--dir", str(migrations_dir), "up", cwd=tmp_path).returncode
        == 0
    )
    before = path.stat()
    _settle(migrations_dir)
    path.write_text("CREATE TABLE t (who text DEFAULT 'root');\n")  # same length
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    verified = run_cli("--database-url", sqlite_url, "--dir", str(migrations_dir), "verify", cwd=tmp_path)
    assert verified.returncode != 0
    assert "001_grant" in verified.output
    assert "modified" in verified.output


def test_a_record_that_vouches_for_other_bytes_is_caught_when_the_sql_is_read(
    sqlite_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(migrations_dir, "001_users.sql", "CREATE TABLE users (id integer);\n")
    read_folder(migrations_dir)
    path = _settle(migrations_dir)
    document = json.loads(path.read_text())
    document["files"]["001_users.sql"][1] = "0" * 64  # a damaged or forged record
    path.write_text(json.dumps(document))
    done = run_cli("--database-url", sqlite_url, "--dir", str(migrations_dir), "up", cwd=tmp_path)
    assert done.returncode != 0
    assert "001_users.sql" in done.output
    assert "changed while dbledger was running" in done.output
    assert query(sqlite_url, "SELECT count(*) FROM sqlite_master WHERE name = 'users'") == [(0,)]


def test_a_record_of_another_dbledger_version_or_unreadable_is_ignored(migrations_dir: Path) -> None:
    write(migrations_dir, "001_users.sql", "CREATE TABLE users (id integer);\n")
    read_folder(migrations_dir)
    path = _settle(migrations_dir)
    document = json.loads(path.read_text())
    document["dbledger"] = "0.0.1"
    document["files"]["001_users.sql"][1] = "0" * 64
    path.write_text(json.dumps(document))
    assert read_folder(migrations_dir).migrations[0].checksum != "0" * 64
    path.write_text("{not json")
    assert read_folder(migrations_dir).migrations[0].up.sql.startswith("CREATE TABLE users")


def test_without_a_usable_cache_folder_every_file_is_read(
    sqlite_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(migrations_dir, "001_users.sql", "CREATE TABLE users (id integer);\n")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    done = run_cli(
        "--database-url", sqlite_url, "--dir", str(migrations_dir), "up",
        cwd=tmp_path, env={"XDG_CACHE_HOME": str(blocked)},
    )  # fmt: skip
    assert done.returncode == 0, done.output
    assert query(sqlite_url, "SELECT count(*) FROM sqlite_master WHERE name = 'users'") == [(1,)]


def test_an_entry_is_trusted_only_for_its_stamp_and_once_the_file_had_settled() -> None:
    stamp = FileStamp(size=10, mtime_ns=1_000, ctime_ns=2_000, inode=7, device=1)
    settled = Record(2_000 + checksumcache.SETTLE_NS, {"a.sql": (tuple(stamp), "abc")})
    assert settled.checksum("a.sql", stamp) == "abc"
    assert settled.checksum("a.sql", stamp._replace(ctime_ns=2_001)) is None  # written since
    assert settled.checksum("a.sql", stamp._replace(inode=8)) is None  # replaced by another file
    assert settled.checksum("b.sql", stamp) is None
    # Changed within SETTLE_NS of the scan: a second change in the same tick would look the same.
    assert Record(2_000 + checksumcache.SETTLE_NS - 1, settled.entries).checksum("a.sql", stamp) is None


def test_trees_are_shared_inside_a_run_and_bounded_by_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "CREATE TABLE t (id integer)"
    assert sqltrees.parse(text) is not sqltrees.parse(text)  # outside a run: nothing kept
    with sqltrees.shared():
        assert sqltrees.parse(text) is sqltrees.parse(text)
        sqltrees.drop()
        kept = sqltrees.parse(text)
        assert sqltrees.parse(text) is kept
    monkeypatch.setattr(sqltrees, "TEXT_BUDGET", len(text) - 1)
    with sqltrees.shared():
        assert sqltrees.parse(text) is not sqltrees.parse(text)


def test_reading_a_large_ledger_is_planned_below_the_jit_threshold(pg_url: str, migrations_dir: Path) -> None:
    """The version table is never analysed (one row): joined with a 1000-row ledger it was
    guessed at 1130 rows and the read crossed jit_above_cost, +25 ms at every start."""
    for i in range(1, 1001):
        write(migrations_dir, f"{i:04d}_v{i}.sql", f"SELECT {i};\n")
    dbledger.migrate(pg_url, migrations_dir)
    from dbledger.backends import open_backend
    from dbledger.config import resolve

    backend = open_backend(resolve(pg_url, migrations_dir).database)
    try:
        plan = backend._fetch(b"EXPLAIN (FORMAT JSON) " + backend.sql.read)
    finally:
        backend.close()
    with psycopg.connect(pg_url) as conn:
        threshold = float(conn.execute("SHOW jit_above_cost").fetchall()[0][0])
    assert plan[0][0][0]["Plan"]["Total Cost"] < threshold


def test_the_version_table_must_hold_one_row(sqlite_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    write(migrations_dir, "001_users.sql", "CREATE TABLE users (id integer);\n")
    dbledger.migrate(sqlite_url, migrations_dir)
    query(sqlite_url, "INSERT INTO schema_migrations_version SELECT * FROM schema_migrations_version")
    done = run_cli("--database-url", sqlite_url, "--dir", str(migrations_dir), "status", cwd=tmp_path)
    assert done.returncode != 0
    assert "must hold exactly one row" in done.output
    assert "it holds 2" in done.output


def test_a_no_op_up_loads_no_parser_hash_or_engine_beyond_the_read(
    sqlite_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    """Every replica's start: the folder's record, one ledger read, nothing else."""
    for i in range(1, 4):
        write(migrations_dir, f"00{i}_t{i}.sql", f"CREATE TABLE t{i} (id integer);\n")
    dbledger.migrate(sqlite_url, migrations_dir)
    _settle(migrations_dir)
    unwanted = [
        "pglast", "psycopg", "rich", "hashlib", "socket", "secrets", "dbledger.preflight",
        "dbledger.executor", "dbledger.lint", "dbledger.schema", "dbledger.dialects",
    ]  # fmt: skip
    code = (
        "import sys\nfrom dbledger.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as end:\n    assert not end.code, end.code\n"
        f"print([m for m in {unwanted!r} if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "--database-url", sqlite_url, "--dir", str(migrations_dir), "up"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "nothing to do" in done.stdout + done.stderr


def test_lazily_read_sections_refuse_a_file_gone_meanwhile(migrations_dir: Path) -> None:
    path = write(migrations_dir, "001_users.sql", "CREATE TABLE users (id integer);\n")
    read_folder(migrations_dir)
    _settle(migrations_dir)
    migration = read_folder(migrations_dir).migrations[0]
    path.unlink()
    with pytest.raises(MigrationFileError, match="cannot read the file"):
        migration.up  # noqa: B018


def test_a_sqlite_temporary_table_does_not_shadow_the_next_migrations_table(
    sqlite_url: str, migrations_dir: Path
) -> None:
    """SQLite keeps its connection between migrations that cannot leave state there (a new one
    reads the whole schema again); one that creates a temporary object gets a new connection."""
    write(migrations_dir, "001_plain.sql", "CREATE TABLE kept (id INTEGER);\n")
    write(migrations_dir, "002_temp.sql", "CREATE TEMP TABLE scratch (id INTEGER);\n")
    write(
        migrations_dir,
        "003_real.sql",
        "CREATE TABLE scratch (id INTEGER);\nINSERT INTO scratch VALUES (1);\n",
    )
    dbledger.migrate(sqlite_url, migrations_dir)
    assert query(sqlite_url, "SELECT count(*) FROM scratch") == [(1,)]  # the INSERT reached main
