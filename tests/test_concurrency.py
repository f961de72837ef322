"""Concurrency with real processes, real PostgreSQL and real SQLite files.

Many ``dbledger up`` processes (and ``dbledger.migrate`` callers) racing on one fresh database,
waiters while the lock holder builds an index with ``CREATE INDEX CONCURRENTLY``, a process killed
with SIGKILL in the middle of a migration, the bounded lock wait, and the lock-free "nothing to
do" path.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import Result, query, run_cli, server_version, table_exists, write

# A child that imports everything first, says "ready", then waits on stdin for the starting
# signal, so that all racers hit the database at the same moment rather than one Python start-up
# apart. "cli" runs exactly what ``python -m dbledger ARGS`` runs; "api" calls dbledger.migrate.
_GATED_CHILD = r"""
import json, runpy, sys
import dbledger, dbledger.cli, dbledger.backends.postgres, dbledger.backends.sqlite
print("ready", flush=True)
sys.stdin.readline()
mode, args = sys.argv[1], sys.argv[2:]
if mode == "cli":
    sys.argv = ["dbledger", *args]
    runpy.run_module("dbledger", run_name="__main__", alter_sys=True)
else:
    url, folder = args
    try:
        report = dbledger.migrate(url, folder)
    except dbledger.DbledgerError as exc:
        print(f"{type(exc).__name__}: {exc.message}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    print(json.dumps({"applied": [{"name": a.name} for a in report.applied]}), flush=True)
"""

LEDGER_ROWS = "SELECT migration_name, success, state FROM schema_migrations ORDER BY id"
HISTORY_ROWS = "SELECT action, migration_name FROM schema_migrations_history ORDER BY id"


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def sqlite_path(url: str) -> Path:
    return Path(url[len("sqlite:///") :])


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DBLEDGER_DIR")}


def start_cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """``python -m dbledger ARGS`` in the background, stdout and stderr captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "dbledger", *args],
        cwd=cwd,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_gated(count: int, mode: str, args: list[str], cwd: Path) -> list[subprocess.Popen[str]]:
    """Start ``count`` children and wait until each one is imported and waiting at the gate."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _GATED_CHILD, mode, *args],
            cwd=cwd,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line != "ready\n":
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"a racer did not start: {line!r} {err}")
    return procs


def release(procs: list[subprocess.Popen[str]]) -> None:
    """Open the gate for every waiting child, as close to the same instant as possible."""
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> Result:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"process {proc.args!r} hung for {timeout} s; stderr so far:\n{err}")
    return Result(proc.returncode, out, err)


def applied_names(result: Result) -> list[str]:
    """The migrations one run says it applied, from its JSON document on stdout."""
    document: dict[str, Any] = json.loads(result.stdout)
    return [item["name"] for item in document["applied"]]


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30, proc: Any = None) -> None:
    """Poll ``check`` until it is true; fail (with the process's output) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}:\n{out}{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def pg_lock_key(url: str) -> int:
    """The advisory lock key dbledger uses for this database (see PostgresBackend._lock_key)."""
    ((database, schema),) = query(url, "SELECT current_database(), current_schema()")
    digest = hashlib.sha256(f"dbledger:{database}.{schema}.schema_migrations".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def hold_migration_lock(url: str) -> Iterator[int | None]:
    """Hold what another dbledger run holds, from the test's own connection: the advisory lock on
    PostgreSQL (yields this session's backend pid), the lock file's flock on SQLite."""
    if is_pg(url):
        key = pg_lock_key(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            yield conn.info.backend_pid
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return
    with open(f"{sqlite_path(url)}.dbledger-lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield None
        fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def hold_write_lock(url: str) -> Iterator[None]:
    """Hold SQLite's own write lock, as an application's writer would."""
    db = sqlite3.connect(sqlite_path(url), isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield None
        db.execute("ROLLBACK")
    finally:
        db.close()


# -- 1. many processes racing `up` on a fresh database ----------------------------------------


def race_migrations(url: str) -> dict[str, str]:
    """Four migrations that each do a little work, none of them idempotent (a second run of any
    would fail), one slow enough that every racer arrives while it runs."""
    if is_pg(url):
        return {
            "001_accounts.sql": (
                "CREATE TABLE accounts (id integer PRIMARY KEY, name text NOT NULL);\n"
                "INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 5000) g;\n"
            ),
            "002_audit_slow.sql": (
                "CREATE TABLE audit (id integer PRIMARY KEY, note text);\n"
                "INSERT INTO audit SELECT g, md5(g::text) FROM generate_series(1, 20000) g;\n"
                "SELECT pg_sleep(0.5);\n"
            ),
            "003_accounts_name.sql": "CREATE INDEX accounts_name ON accounts (name);\n",
            "004_settings.sql": (
                "-- migrate:up\n"
                "CREATE TABLE settings (key text PRIMARY KEY, value text);\n"
                "INSERT INTO settings VALUES ('schema', 'v4');\n"
                "-- migrate:down\n"
                "DROP TABLE settings;\n"
            ),
        }
    return {
        "001_accounts.sql": (
            "CREATE TABLE accounts (id integer PRIMARY KEY, name text NOT NULL);\n"
            "INSERT INTO accounts WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
            " WHERE x < 5000) SELECT x, 'account ' || x FROM c;\n"
        ),
        "002_audit_slow.sql": (
            "CREATE TABLE audit (id integer PRIMARY KEY, note text);\n"
            "INSERT INTO audit WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
            " WHERE x < 20000) SELECT x, hex(randomblob(16)) FROM c;\n"
            "-- a recursive CTE that takes a moment, as the sleep does on PostgreSQL\n"
            "CREATE TABLE busy AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
            " WHERE x < 1000000) SELECT sum(x) AS total FROM c;\n"
        ),
        "003_accounts_name.sql": "CREATE INDEX accounts_name ON accounts (name);\n",
        "004_settings.sql": (
            "-- migrate:up\n"
            "CREATE TABLE settings (key text PRIMARY KEY, value text);\n"
            "INSERT INTO settings VALUES ('schema', 'v4');\n"
            "-- migrate:down\n"
            "DROP TABLE settings;\n"
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize("interface", ["cli", "api"])
def test_racing_processes_apply_each_migration_exactly_once(
    db_url: str, migrations_dir: Path, tmp_path: Path, interface: str
) -> None:
    files = race_migrations(db_url)
    for name, text in files.items():
        write(migrations_dir, name, text)
    names = [name.removesuffix(".sql") for name in sorted(files)]
    if interface == "cli":
        args = ["up", "--json", "--database-url", db_url, "--dir", str(migrations_dir)]
    else:
        args = [db_url, str(migrations_dir)]

    racers = start_gated(8, interface, args, cwd=tmp_path)
    release(racers)
    results = [finish(proc) for proc in racers]

    for result in results:
        assert result.returncode == 0, result.output
    # Each migration was applied by exactly one racer; the others found nothing left to do.
    claimed = Counter(name for result in results for name in applied_names(result))
    assert claimed == Counter(names)

    assert query(db_url, LEDGER_ROWS) == [(name, True, "applied") for name in names]
    history = query(db_url, HISTORY_ROWS)
    assert sorted(name for action, name in history if action == "apply") == names
    assert [row for row in history if row[0] != "apply"] == [("create", None)]

    for table in ("accounts", "audit", "settings"):
        assert table_exists(db_url, table), table
    assert query(db_url, "SELECT count(*) FROM accounts") == [(5000,)]
    assert query(db_url, "SELECT count(*) FROM audit") == [(20000,)]
    assert query(db_url, "SELECT value FROM settings") == [("v4",)]


# -- 2. waiters while the holder runs CREATE INDEX CONCURRENTLY --------------------------------

# 2 million rows: building an index on the md5 column takes about 2.5 s on the 2-core test
# machine, long enough to have the waiters polling for the lock while the build runs.
BIG_ROWS = 2_000_000

_CIC_PROGRESS = """
SELECT p.pid, p.phase FROM pg_stat_progress_create_index p
WHERE p.datname = current_database() AND p.command = 'CREATE INDEX CONCURRENTLY'
"""


@pytest.mark.slow
def test_waiters_do_not_deadlock_with_create_index_concurrently(
    pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    import dbledger

    write(
        migrations_dir,
        "001_big.sql",
        f"CREATE TABLE big AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, {BIG_ROWS}) g;\n",
    )
    dbledger.migrate(pg_url, migrations_dir)
    write(
        migrations_dir,
        "002_big_h_index.sql",
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY big_h_idx ON big (h);\n",
    )
    args = ["up", "--json", "--database-url", pg_url, "--dir", str(migrations_dir)]
    waiters = start_gated(4, "cli", args, cwd=tmp_path)  # imported and waiting at the gate
    holder = start_cli(*args, cwd=tmp_path)
    try:
        building: list[tuple[Any, ...]] = []

        def build_running() -> bool:
            building[:] = [row for row in query(pg_url, _CIC_PROGRESS) if row[1].startswith("building")]
            return bool(building)

        wait_for("the index build to run", build_running, proc=holder)
        builder_pid = building[0][0]

        release(waiters)
        # Every waiter is connected (polling for the lock) while the build is still running.
        overlap: list[tuple[Any, ...]] = []

        def waiters_connected_or_build_done() -> bool:
            overlap[:] = query(
                pg_url,
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                "  AND backend_type = 'client backend' AND application_name = 'dbledger' AND pid <> %s),"
                " EXISTS (SELECT 1 FROM pg_stat_progress_create_index WHERE pid = %s)",
                (builder_pid, builder_pid),
            )
            count, still_building = overlap[0]
            return count >= len(waiters) or not still_building

        wait_for("the waiters to connect", waiters_connected_or_build_done)
        assert overlap[0] == (len(waiters), True), "the waiters did not overlap with the index build"

        held = finish(holder)
        waited = [finish(proc) for proc in waiters]
    finally:
        for proc in [holder, *waiters]:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    assert held.returncode == 0, held.output
    assert applied_names(held) == ["002_big_h_index"]
    for result in waited:
        assert result.returncode == 0, result.output
        assert applied_names(result) == []

    assert query(
        pg_url,
        "SELECT i.indisvalid, i.indisready FROM pg_index i WHERE i.indexrelid = 'big_h_idx'::regclass",
    ) == [(True, True)]
    assert query(pg_url, LEDGER_ROWS) == [
        ("001_big", True, "applied"),
        ("002_big_h_index", True, "applied"),
    ]
    history = query(pg_url, HISTORY_ROWS)
    assert history == [
        ("create", None),
        ("apply", "001_big"),
        ("start", "002_big_h_index"),
        ("apply", "002_big_h_index"),
    ]


def test_blocking_advisory_lock_would_deadlock_with_create_index_concurrently(pg_url: str) -> None:
    """Why dbledger polls pg_try_advisory_lock: a waiter blocked *inside* pg_advisory_lock keeps a
    snapshot open, CREATE INDEX CONCURRENTLY in the holder's session waits for that snapshot,
    and the waiter waits for the holder. The deadlock detector (made to fire in the holder's
    session first) kills the index build."""
    query(pg_url, "CREATE TABLE small AS SELECT g AS id FROM generate_series(1, 1000) g")
    key = pg_lock_key(pg_url)
    with (
        psycopg.connect(pg_url, autocommit=True) as holder,
        psycopg.connect(pg_url, autocommit=True) as waiter,
    ):
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        waiter.execute("SET deadlock_timeout = '30s'")
        waiter_pid = waiter.info.backend_pid
        outcome: list[BaseException | None] = []

        def blocked_waiter() -> None:
            try:
                waiter.execute("SELECT pg_advisory_lock(%s)", (key,))
                waiter.execute("SELECT pg_advisory_unlock(%s)", (key,))
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=blocked_waiter)
        thread.start()
        try:
            wait_for(
                "the waiter to block in pg_advisory_lock",
                lambda: (
                    query(
                        pg_url,
                        "SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                        (waiter_pid,),
                    )
                    == [("advisory",)]
                ),
            )
            holder.execute("SET deadlock_timeout = '100ms'")
            with pytest.raises(psycopg.errors.DeadlockDetected):
                holder.execute("CREATE INDEX CONCURRENTLY small_id ON small (id)")
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (key,))
            thread.join(timeout=30)
        assert outcome == [None]
    # The failed build left an INVALID index behind: the partial work a transaction:false
    # migration is recorded as "dirty" for.
    assert query(pg_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'small_id'::regclass") == [
        (False,)
    ]


# -- 3. SIGKILL in the middle of a transactional migration ------------------------------------


def slow_migration(url: str, *, fast: bool) -> str:
    if is_pg(url):
        return (
            "CREATE TABLE big AS SELECT g AS id FROM generate_series(1, 100000) g;\n"
            f"SELECT pg_sleep({0.1 if fast else 20});\n"
        )
    limit = 1000 if fast else 200_000_000  # minutes of work, unless killed
    return (
        "CREATE TABLE big (id integer);\n"
        "INSERT INTO big WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
        f" WHERE x < {limit}) SELECT x FROM c;\n"
    )


@pytest.mark.slow
def test_sigkill_mid_migration_leaves_nothing_and_rerun_applies_once(
    db_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(migrations_dir, "001_base.sql", "CREATE TABLE base (id integer PRIMARY KEY);\n")
    write(migrations_dir, "002_big.sql", slow_migration(db_url, fast=False))
    args = ["--database-url", db_url, "--dir", str(migrations_dir)]
    proc = start_cli("up", *args, cwd=tmp_path)
    try:
        if is_pg(db_url):
            wait_for(
                "the migration's pg_sleep(20) to run",
                lambda: bool(
                    query(
                        db_url,
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND application_name = 'dbledger' AND state = 'active'"
                        " AND query LIKE 'SELECT pg_sleep(20)%%'",
                    )
                ),
                proc=proc,
            )
        else:
            assert proc.stderr is not None
            lines: list[str] = []
            while not any(line.startswith("applying 002_big") for line in lines):
                line = proc.stderr.readline()
                assert line, f"the process ended before applying 002_big:\n{''.join(lines)}"
                lines.append(line)
            journal = Path(f"{sqlite_path(db_url)}-journal")
            wait_for("the migration to write to the database", journal.exists, proc=proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    # Nothing of 002 is visible: no ledger row, no history entry, no table.
    assert query(db_url, LEDGER_ROWS) == [("001_base", True, "applied")]
    assert query(db_url, HISTORY_ROWS) == [("create", None), ("apply", "001_base")]
    assert not table_exists(db_url, "big")

    # The rerun must not wait for the orphaned 20 s sleep (the server aborts it once it sees the
    # client gone, with client_connection_check_interval from PostgreSQL 14): the subprocess
    # timeout fails the test if it hangs. PostgreSQL 13 notices only when the sleep ends.
    write(migrations_dir, "002_big.sql", slow_migration(db_url, fast=True))
    checks_client = not is_pg(db_url) or server_version(db_url) >= 140000
    rerun = run_cli("up", "--json", *args, cwd=tmp_path, timeout=15 if checks_client else 60)
    assert rerun.returncode == 0, rerun.output
    assert applied_names(rerun) == ["002_big"]
    assert query(db_url, LEDGER_ROWS) == [("001_base", True, "applied"), ("002_big", True, "applied")]
    assert query(db_url, HISTORY_ROWS) == [("create", None), ("apply", "001_base"), ("apply", "002_big")]
    assert query(db_url, "SELECT count(*) FROM big") == [(100000 if is_pg(db_url) else 1000,)]


# -- 4. the bounded lock wait -----------------------------------------------------------------


def test_lock_wait_timeout_postgres_names_the_holder(
    pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(migrations_dir, "001_slow.sql", "CREATE TABLE slow (id integer);\nSELECT pg_sleep(30);\n")
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    write(other_dir, "001_slow.sql", (migrations_dir / "001_slow.sql").read_text())
    write(other_dir, "002_other.sql", "CREATE TABLE other (id integer);\n")

    holder = start_cli("up", "--database-url", pg_url, "--dir", str(migrations_dir), cwd=tmp_path)
    try:
        holder_pids: list[tuple[Any, ...]] = []

        def holder_sleeping() -> bool:
            holder_pids[:] = query(
                pg_url,
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'dbledger' AND query LIKE 'SELECT pg_sleep(30)%%'",
            )
            return bool(holder_pids)

        wait_for("the holder's migration to run", holder_sleeping, proc=holder)
        ((holder_pid,),) = holder_pids

        waiter = run_cli(
            "up", "--lock-timeout", "1", "--database-url", pg_url, "--dir", str(other_dir), cwd=tmp_path
        )
        assert holder.poll() is None, "the holder finished: the waiter's timeout proves nothing"
    finally:
        holder.kill()
        holder.communicate()

    assert waiter.returncode == 1, waiter.output
    assert "gave up after waiting 1 s for the migration lock" in waiter.stderr
    assert f"held by backend pid {holder_pid} (dbledger, user " in waiter.stderr
    assert "--lock-timeout" in waiter.stderr
    password = psycopg.conninfo.conninfo_to_dict(pg_url)["password"]
    assert str(password) not in waiter.output
    assert "applying" not in waiter.stderr
    assert not table_exists(pg_url, "other")
    assert query(pg_url, "SELECT count(*) FROM schema_migrations WHERE migration_name = '002_other'") == [
        (0,)
    ]


def test_lock_wait_timeout_sqlite_says_the_database_is_locked(
    sqlite_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    args = ["--database-url", sqlite_url, "--dir", str(migrations_dir)]
    write(migrations_dir, "001_base.sql", "CREATE TABLE base (id integer);\n")
    assert run_cli("up", *args, cwd=tmp_path).returncode == 0
    write(migrations_dir, "002_more.sql", "CREATE TABLE more (id integer);\n")

    with hold_write_lock(sqlite_url):
        waiter = run_cli("up", "--lock-timeout", "1", *args, cwd=tmp_path)

    assert waiter.returncode == 1, waiter.output
    assert f"{sqlite_path(sqlite_url)} is locked by another connection after waiting 1 s" in waiter.stderr
    assert "--lock-timeout" in waiter.stderr
    assert not table_exists(sqlite_url, "more")
    assert query(sqlite_url, LEDGER_ROWS) == [("001_base", True, "applied")]
    assert query(sqlite_url, HISTORY_ROWS) == [("create", None), ("apply", "001_base")]

    # Once the lock is free, the same command applies it.
    rerun = run_cli("up", "--lock-timeout", "1", *args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.output
    assert query(sqlite_url, LEDGER_ROWS) == [("001_base", True, "applied"), ("002_more", True, "applied")]


# -- 5. the cheap path: nothing pending means no lock ------------------------------------------


def test_nothing_pending_does_not_take_the_lock_but_refusals_do(
    db_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    args = ["--lock-timeout", "1", "--database-url", db_url, "--dir", str(migrations_dir)]
    first = write(migrations_dir, "001_base.sql", "CREATE TABLE base (id integer);\n")
    assert run_cli("up", *args, cwd=tmp_path).returncode == 0
    ledger = query(db_url, LEDGER_ROWS)
    history = query(db_url, HISTORY_ROWS)

    with hold_migration_lock(db_url) as holder_pid:
        idle = run_cli("up", *args, cwd=tmp_path)
        assert idle.returncode == 0, idle.output
        assert "nothing to do" in idle.stdout

        # Control: the lock held here is the one dbledger waits for.
        pending = write(migrations_dir, "002_more.sql", "CREATE TABLE more (id integer);\n")
        blocked = run_cli("up", *args, cwd=tmp_path)
        assert blocked.returncode == 1, blocked.output
        assert "--lock-timeout" in blocked.stderr
        if holder_pid is not None:
            assert f"held by backend pid {holder_pid} " in blocked.stderr
        pending.unlink()

        # A modified file is a refusal, and refusals are decided under the lock: with the lock
        # held, up waits for it (and gives up) instead of judging from the unlocked read.
        first.write_text("CREATE TABLE base (id integer, note text);\n", encoding="utf-8")
        waiting = run_cli("up", *args, cwd=tmp_path)
        assert waiting.returncode == 1, waiting.output
        assert "--lock-timeout" in waiting.stderr
        assert "was modified" not in waiting.stderr

    refused = run_cli("up", *args, cwd=tmp_path)
    assert refused.returncode == 1, refused.output
    assert "migration '001_base' was modified after it was applied" in refused.stderr
    assert "'dbledger repair'" in refused.stderr
    assert query(db_url, LEDGER_ROWS) == ledger
    assert query(db_url, HISTORY_ROWS) == history
    assert not table_exists(db_url, "more")
