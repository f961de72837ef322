"""Through a real PgBouncer in transaction mode: each transaction may run on another server
connection, so a session advisory lock excludes no one. dbledger sees the pooler and uses the
lease lock; racing runners apply each migration exactly once and in order; a holder killed
mid-lease is taken over after expiry; a holder that wakes up after its lease was taken cannot
write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import query, run_cli, write
from tests.pgbouncer import find_pgbouncer, pgbouncer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_pgbouncer() is None, reason="pgbouncer is not installed (CI installs it)"),
]


@pytest.fixture
def pooled(pg_url: str) -> Iterator[str]:
    with pgbouncer(pg_url) as url:
        yield url


def start(url: str, folder: Path, cwd: Path, *args: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DBLEDGER_DIR")}
    return subprocess.Popen(
        [sys.executable, "-m", "dbledger", "--database-url", url, "--dir", str(folder), "up", *args],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_query(url: str, text: str, timeout: float = 20) -> None:
    """Until some session runs a query containing ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active'",
            (f"%{text}%",),
        )[0][0]:
            return
        time.sleep(0.05)
    raise AssertionError(f"no session ran {text!r}")


def counted(folder: Path, count: int) -> None:
    """``count`` migrations, each recording that it ran."""
    write(
        folder,
        "001_runs.sql",
        "CREATE TABLE runs (name text NOT NULL, at timestamptz DEFAULT clock_timestamp());\n"
        "INSERT INTO runs (name) VALUES ('001');",
    )
    for version in range(2, count + 1):
        write(
            folder,
            f"{version:03d}_step.sql",
            f"INSERT INTO runs (name) VALUES ('{version:03d}');\nSELECT pg_sleep(0.01);",
        )


def test_through_a_pooler_the_lease_lock_is_chosen_and_said(
    pooled: str, pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    counted(migrations_dir, 3)
    result = run_cli("--database-url", pooled, "--dir", str(migrations_dir), "up", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert "a pooler or proxy" in result.stderr
    assert "using the lease lock" in result.stderr
    assert query(pg_url, "SELECT count(*) FROM runs") == [(3,)]
    # The lease is released (expired) at the end, and its table is dbledger's own: no drift.
    assert query(pg_url, "SELECT expires_at < now() FROM schema_migrations_lock") == [(True,)]
    drift = run_cli("--database-url", pg_url, "--dir", str(migrations_dir), "drift", cwd=tmp_path)
    assert drift.returncode == 0, drift.output
    # A direct connection keeps the session lock, and says nothing about it.
    direct = run_cli("--database-url", pg_url, "--dir", str(migrations_dir), "up", cwd=tmp_path)
    assert direct.returncode == 0
    assert "lease" not in direct.stderr


def test_eight_racing_runners_through_the_pooler_apply_each_migration_once_in_order(
    pooled: str, pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    counted(migrations_dir, 21)
    runners = [start(pooled, migrations_dir, tmp_path) for _ in range(8)]
    outcomes = [(runner.communicate(timeout=180)[1], runner.returncode) for runner in runners]
    for stderr, code in outcomes:
        assert code == 0, stderr
        assert "prepared statement" not in stderr
    runs = query(pg_url, "SELECT name FROM runs ORDER BY at")
    assert [name for (name,) in runs] == [f"{v:03d}" for v in range(1, 22)]
    order = query(pg_url, "SELECT migration_name FROM schema_migrations ORDER BY applied_order")
    assert [name for (name,) in order] == ["001_runs"] + [f"{v:03d}_step" for v in range(2, 22)]
    applies = query(
        pg_url,
        "SELECT count(*), count(DISTINCT migration_name) FROM schema_migrations_history"
        " WHERE action = 'apply'",
    )
    assert applies == [(21, 21)]


def test_a_run_through_the_pooler_waits_for_a_direct_run_and_back(
    pooled: str, pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    """Runs that chose different locks still exclude one another: each checks the other's."""
    write(
        migrations_dir, "001_pause.sql", "CREATE TABLE pause (seconds float);\nINSERT INTO pause VALUES (0);"
    )
    assert run_cli("--database-url", pg_url, "--dir", str(migrations_dir), "up", cwd=tmp_path).returncode == 0
    query(pg_url, "UPDATE pause SET seconds = 2")
    write(
        migrations_dir,
        "002_slow.sql",
        "CREATE TABLE slow_done (id int);\nSELECT pg_sleep((SELECT seconds FROM pause));",
    )
    write(migrations_dir, "003_after.sql", "CREATE TABLE after_done (id int);")
    direct = start(pg_url, migrations_dir, tmp_path, "--to", "2")
    wait_for_query(pg_url, "pg_sleep((SELECT seconds")
    through = run_cli("--database-url", pooled, "--dir", str(migrations_dir), "up", cwd=tmp_path)
    direct.communicate(timeout=60)
    assert direct.returncode == 0
    assert through.returncode == 0, through.output
    assert "waiting for the migration lock, held by backend pid" in through.stderr
    assert query(pg_url, "SELECT count(*) FROM schema_migrations_history WHERE action = 'apply'") == [(3,)]


def test_a_killed_holder_is_taken_over_after_its_lease_expires(
    pooled: str, pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(
        migrations_dir,
        "001_pause.sql",
        "CREATE TABLE pause (seconds float);\nINSERT INTO pause VALUES (0);\nCREATE TABLE runs (name text);",
    )
    assert run_cli("--database-url", pg_url, "--dir", str(migrations_dir), "up", cwd=tmp_path).returncode == 0
    query(pg_url, "UPDATE pause SET seconds = 60")
    write(
        migrations_dir,
        "002_slow.sql",
        "INSERT INTO runs VALUES ('002');\nSELECT pg_sleep((SELECT seconds FROM pause));",
    )
    holder = start(pooled, migrations_dir, tmp_path, "--lease-ttl", "2s")
    wait_for_query(pg_url, "pg_sleep((SELECT seconds")
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=10)
    query(pg_url, "UPDATE pause SET seconds = 0")
    heir = run_cli(
        "--database-url", pooled, "--dir", str(migrations_dir), "up", "--lease-ttl", "2s", cwd=tmp_path
    )
    assert heir.returncode == 0, heir.output
    assert "held by the lease of" in heir.stderr
    assert query(pg_url, "SELECT name FROM runs") == [("002",)]
    assert query(pg_url, "SELECT state FROM schema_migrations WHERE migration_name = '002_slow'") == [
        ("applied",)
    ]


def test_a_holder_that_wakes_after_its_lease_was_taken_cannot_write(
    pooled: str, pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(
        migrations_dir,
        "001_pause.sql",
        "CREATE TABLE pause (seconds float);\nINSERT INTO pause VALUES (0);\nCREATE TABLE runs (name text);",
    )
    assert run_cli("--database-url", pg_url, "--dir", str(migrations_dir), "up", cwd=tmp_path).returncode == 0
    query(pg_url, "UPDATE pause SET seconds = 1.5")
    write(
        migrations_dir,
        "002_slow.sql",
        "INSERT INTO runs VALUES ('002');\nSELECT pg_sleep((SELECT seconds FROM pause));",
    )
    late = start(pooled, migrations_dir, tmp_path, "--lease-ttl", "1s")
    wait_for_query(pg_url, "pg_sleep((SELECT seconds")
    late.send_signal(signal.SIGSTOP)  # frozen: no heartbeat, its transaction open
    try:
        time.sleep(2.5)  # the lease expires
        query(pg_url, "UPDATE pause SET seconds = 0")
        heir = run_cli(
            "--database-url", pooled, "--dir", str(migrations_dir), "up", "--lease-ttl", "1s", cwd=tmp_path
        )
        assert heir.returncode == 0, heir.output
    finally:
        late.send_signal(signal.SIGCONT)
    stderr = late.communicate(timeout=30)[1]
    assert late.returncode != 0
    assert "expired and another run took the lock" in stderr
    # The late holder's INSERT was rolled back with its refused ledger write: one run of 002.
    assert query(pg_url, "SELECT name FROM runs") == [("002",)]
    assert query(
        pg_url,
        "SELECT count(*) FROM schema_migrations_history"
        " WHERE action = 'apply' AND migration_name = '002_slow'",
    ) == [(1,)]


def test_lease_mode_on_a_direct_connection(pg_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    """lock = "lease" in pyproject.toml: the same lease without a pooler (databases without
    advisory locks); a reader sees a running migration's lease holder."""
    (tmp_path / "pyproject.toml").write_text('[tool.dbledger]\nlock = "lease"\n')
    counted(migrations_dir, 2)
    result = run_cli("--database-url", pg_url, "--dir", str(migrations_dir), "up", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert query(pg_url, "SELECT token FROM schema_migrations_lock") == [(1,)]
    again = run_cli("--database-url", pg_url, "--dir", str(migrations_dir), "up", cwd=tmp_path)
    assert again.returncode == 0


def test_bad_lock_settings_are_named(sqlite_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.dbledger]\nlock = "mutex"\n')
    result = run_cli("--database-url", sqlite_url, "--dir", str(migrations_dir), "up", cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert (
        "invalid pyproject.toml: [tool.dbledger] lock 'mutex': give one of auto, advisory, lease"
        in result.stderr
    )
    (tmp_path / "pyproject.toml").unlink()
    result = run_cli(
        "--database-url", sqlite_url, "--dir", str(migrations_dir), "up", "--lease-ttl", "0.5s", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "invalid lease time to live 0.5" in result.stderr
