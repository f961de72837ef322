"""Replicas that do not migrate: ``dbledger wait`` and ``wait_until_migrated`` return once every
migration in the folder is applied by another run, and fail at once on what waiting cannot mend."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dbledger
from dbledger.contracts import Version
from dbledger.integrations.startup import wait_or_exit
from tests.helpers import run_cli, write


def two(folder: Path) -> None:
    write(folder, "001_a.sql", "CREATE TABLE a (id int);")
    write(folder, "002_b.sql", "CREATE TABLE b (id int);")


def test_returns_at_once_when_everything_is_applied(
    db_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    two(migrations_dir)
    assert run_cli("--database-url", db_url, "--dir", str(migrations_dir), "up", cwd=tmp_path).returncode == 0
    result = run_cli("--database-url", db_url, "--dir", str(migrations_dir), "wait", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert "ready: every migration is applied (version 2)" in result.stdout
    status = dbledger.wait_until_migrated(db_url, migrations_dir, timeout=5)
    assert status.version == Version((2,))
    assert not status.plan.pending


def test_waits_for_another_run_to_apply_them(db_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    two(migrations_dir)
    assert (
        run_cli(
            "--database-url", db_url, "--dir", str(migrations_dir), "up", "--to", "1", cwd=tmp_path
        ).returncode
        == 0
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DBLEDGER_DIR")}
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dbledger",
            "--database-url",
            db_url,
            "--dir",
            str(migrations_dir),
            "wait",
            "--timeout",
            "60s",
        ],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    assert waiter.poll() is None  # still waiting: 002_b is pending
    assert run_cli("--database-url", db_url, "--dir", str(migrations_dir), "up", cwd=tmp_path).returncode == 0
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert "waiting for 1 migration(s) to be applied by another run: 002_b" in err
    assert "ready" in out


def test_gives_up_after_the_timeout(db_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    two(migrations_dir)
    result = run_cli(
        "--database-url", db_url, "--dir", str(migrations_dir), "wait", "--timeout", "1s", cwd=tmp_path
    )
    assert result.returncode == 1
    assert (
        "gave up after waiting 1 s for 2 migration(s) to be applied by another run: 001_a, 002_b"
        in result.stderr
    )


def test_a_failed_migration_fails_at_once(db_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (id int);")
    write(migrations_dir, "002_bad.sql", "CREATE TABLE a (id int);")  # a already exists
    assert run_cli("--database-url", db_url, "--dir", str(migrations_dir), "up", cwd=tmp_path).returncode == 1
    # An hour's timeout: run_cli's own 120 s would end a run that waited it out.
    result = run_cli(
        "--database-url", db_url, "--dir", str(migrations_dir), "wait", "--timeout", "1h", cwd=tmp_path
    )
    assert result.returncode == 1
    assert "gave up after waiting" not in result.stderr
    assert "migration '002_bad' failed: waiting cannot mend this" in result.stderr
    with pytest.raises(dbledger.NotMigrated, match="002_bad"):
        dbledger.wait_until_migrated(db_url, migrations_dir, timeout=60)


def test_an_unreachable_database_is_waited_for_then_named(
    silent_server: int, migrations_dir: Path, tmp_path: Path
) -> None:
    two(migrations_dir)
    url = f"postgresql://app:secret-pw@127.0.0.1:{silent_server}/app"
    result = run_cli(
        "--database-url",
        url,
        "--dir",
        str(migrations_dir),
        "wait",
        "--timeout",
        "3s",
        "--connect-timeout",
        "2",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "gave up after waiting 3 s for the database: cannot connect" in result.stderr
    assert "secret-pw" not in result.output


def test_the_startup_integration_exits_1(
    sqlite_url: str, migrations_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    two(migrations_dir)
    with caplog.at_level(logging.INFO, logger="dbledger"), pytest.raises(SystemExit) as stopped:
        wait_or_exit(sqlite_url, migrations_dir, timeout=0.5)
    assert stopped.value.code == 1
    assert "gave up after waiting 0.5 s" in caplog.text


def test_bad_timeout_is_named(sqlite_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    result = run_cli(
        "--database-url", sqlite_url, "--dir", str(migrations_dir), "wait", "--timeout", "soon", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "invalid wait timeout 'soon'" in result.stderr
