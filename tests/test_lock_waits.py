"""Migrations on a database that serves traffic: each statement waits a bounded time for its
table lock, a migration that gave up is rolled back and tried again, and the sessions that
blocked it are named when it finally fails. Checked as users feel it: whether short SELECTs on
the table, while a long transaction holds it and a migration ALTERs it, queue behind the ALTER
long enough for the server to give up on them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.helpers import Result, query, run_cli, write

pytestmark = pytest.mark.slow


@pytest.fixture
def accounts(pg_url: str, migrations_dir: Path, tmp_path: Path) -> str:
    """A database whose first migration made a table of accounts, applied."""
    write(
        migrations_dir,
        "001_accounts.sql",
        "CREATE TABLE accounts (id int PRIMARY KEY, name text);\n"
        "INSERT INTO accounts SELECT g, 'a' || g FROM generate_series(1, 100) g;\n",
    )
    assert up(pg_url, migrations_dir, tmp_path).returncode == 0
    return pg_url


@contextmanager
def holding(url: str, seconds: float, lock: str = "SELECT count(*) FROM accounts") -> Iterator[int]:
    """A report job's transaction that holds ``lock`` on accounts for ``seconds``; yields its pid."""
    conn = psycopg.connect(url, autocommit=True, application_name="report-job")
    conn.execute("BEGIN")
    conn.execute(lock.encode())
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    ended = threading.Event()

    def end() -> None:
        ended.wait(seconds)
        conn.execute("COMMIT")

    ender = threading.Thread(target=end)
    ender.start()
    try:
        yield pid
    finally:
        ended.set()
        ender.join()
        conn.close()


class Readers:
    """Short SELECTs on accounts, one after another, while a migration runs. Each reader waits
    for a lock at most ``patience`` (its own lock_timeout): a read the server gives up on, with
    55P03, is one that queued behind the migration that long. What counts is what the server
    said, not a clock of the test's."""

    def __init__(self, url: str, patience: str = "1500ms") -> None:
        self.url = url
        self.patience = patience
        self.count = 0
        self.gave_up = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read)

    def _read(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="reader") as conn:
            conn.execute(f"SET lock_timeout = '{self.patience}'".encode())
            while not self._stop.is_set():
                try:
                    conn.execute("SELECT name FROM accounts WHERE id = 7").fetchone()
                    self.count += 1
                except psycopg.errors.LockNotAvailable:
                    self.gave_up += 1
                time.sleep(0.02)

    def __enter__(self) -> Readers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def up(url: str, folder: Path, cwd: Path, *args: str) -> Result:
    """``dbledger up`` on ``url`` with the migrations in ``folder``, as a separate process."""
    return run_cli("--database-url", url, "--dir", str(folder), "up", *args, cwd=cwd)


def columns(url: str) -> set[str]:
    rows = query(url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'accounts'")
    return {name for (name,) in rows}


def test_readers_wait_at_most_about_the_lock_timeout_and_the_migration_lands(
    accounts: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(migrations_dir, "002_add_email.sql", "ALTER TABLE accounts ADD COLUMN email text;")
    with holding(accounts, 4.0), Readers(accounts) as readers:
        time.sleep(0.2)
        result = up(
            accounts, migrations_dir, tmp_path, "--statement-lock-timeout", "500ms", "--lock-retries", "10"
        )
    assert result.returncode == 0, result.output
    assert "email" in columns(accounts)
    assert "retry: 002_add_email: gave up on a lock after 0.5 s (held by pid" in result.stderr
    assert "report-job" in result.stderr
    assert readers.count > 10
    # No read queued 1.5 s (three times the migration's limit) behind it, in the 4 s the table was held.
    assert readers.gave_up == 0
    detail = query(
        accounts,
        "SELECT detail FROM schema_migrations_history WHERE action = 'apply' ORDER BY id DESC LIMIT 1",
    )
    assert detail[0][0].startswith("applied after ")
    assert "lock-wait retr" in detail[0][0]


def test_without_a_lock_timeout_readers_queue_behind_the_waiting_alter(
    accounts: str, migrations_dir: Path, tmp_path: Path
) -> None:
    """The control: the same scene with no limit shows the outage the limit prevents."""
    write(migrations_dir, "002_add_email.sql", "ALTER TABLE accounts ADD COLUMN email text;")
    with holding(accounts, 5.0), Readers(accounts) as readers:
        time.sleep(0.2)
        result = up(accounts, migrations_dir, tmp_path, "--statement-lock-timeout", "0")
    assert result.returncode == 0, result.output
    assert readers.gave_up > 0  # reads queued behind the waiting ALTER until the server gave up on them


def test_gives_up_after_the_retries_names_the_blocker_and_leaves_nothing(
    accounts: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(
        migrations_dir,
        "002_two_changes.sql",
        "CREATE TABLE audit (id int);\nALTER TABLE accounts ADD COLUMN email text;",
    )
    with holding(accounts, 30.0) as pid:
        result = up(
            accounts, migrations_dir, tmp_path, "--statement-lock-timeout", "300ms", "--lock-retries", "1"
        )
    assert result.returncode != 0
    assert "55P03" in result.stderr
    assert "gave up: it waited 0.3 s for a lock (tried 2 times)" in result.stderr
    assert "to try more often: --lock-retries" in result.stderr
    assert f"blocked by pid {pid} (report-job" in result.stderr
    assert "idle in transaction" in result.stderr
    assert "last query: SELECT pg_backend_pid()" in result.stderr
    # Never half-applied: neither the table nor the column, and the failure is in the ledger.
    assert "email" not in columns(accounts)
    assert query(accounts, "SELECT to_regclass('audit')") == [(None,)]
    row = query(
        accounts,
        "SELECT state, error_message FROM schema_migrations WHERE migration_name = '002_two_changes'",
    )
    assert row[0][0] == "failed"
    assert f"blocked by pid {pid}" in row[0][1]


def test_a_statement_outside_a_transaction_is_retried_alone(
    accounts: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(
        migrations_dir,
        "002_outside.sql",
        "-- migrate:up transaction:false\nCREATE TABLE first_done (id int);\n"
        "ALTER TABLE accounts ADD COLUMN email text;\n",
    )
    with holding(accounts, 2.0):
        result = up(
            accounts, migrations_dir, tmp_path, "--statement-lock-timeout", "300ms", "--lock-retries", "8"
        )
    assert result.returncode == 0, result.output
    assert "email" in columns(accounts)
    assert query(accounts, "SELECT count(*) FROM first_done") == [(0,)]  # ran once, not again
    assert query(accounts, "SELECT state FROM schema_migrations ORDER BY id") == [("applied",), ("applied",)]


def test_concurrently_has_its_own_limit(accounts: str, migrations_dir: Path, tmp_path: Path) -> None:
    """CREATE INDEX CONCURRENTLY waits for older transactions; with the default (no limit for
    CONCURRENTLY) it outwaits a holder that a plain statement's 300 ms would not."""
    write(
        migrations_dir,
        "002_index.sql",
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY accounts_name ON accounts (name);\n",
    )
    with holding(accounts, 1.5, lock="LOCK TABLE accounts IN SHARE UPDATE EXCLUSIVE MODE"):
        result = up(
            accounts, migrations_dir, tmp_path, "--statement-lock-timeout", "300ms", "--lock-retries", "0"
        )
    assert result.returncode == 0, result.output
    assert query(
        accounts, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'accounts_name'::regclass"
    ) == [(True,)]


def test_settings_reach_the_statements(db_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    """What each statement runs with, as the database reports it: the run's limits, a section's
    own options, and CONCURRENTLY's limit. On SQLite the options are accepted and have no effect."""
    if db_url.startswith("sqlite"):
        write(migrations_dir, "001_a.sql", "-- migrate:up lock_timeout:2s\nCREATE TABLE t (id int);\n")
        assert up(db_url, migrations_dir, tmp_path).returncode == 0
        return
    seen = (
        "INSERT INTO seen VALUES ('{0}', current_setting('lock_timeout'),"
        " current_setting('statement_timeout'));\n"
    )
    write(
        migrations_dir,
        "001_table.sql",
        "CREATE TABLE seen (name text, lock text, run text);\n" + seen.format("run"),
    )
    write(
        migrations_dir,
        "002_section.sql",
        "-- migrate:up lock_timeout:1500ms statement_timeout:1min\n" + seen.format("section"),
    )
    write(
        migrations_dir,
        "003_outside.sql",
        "-- migrate:up transaction:false\n"
        + seen.format("outside")
        + "CREATE INDEX CONCURRENTLY seen_name ON seen (name);\n"
        + seen.format("after"),
    )
    result = up(db_url, migrations_dir, tmp_path, "--statement-timeout", "10s")
    assert result.returncode == 0, result.output
    assert query(db_url, "SELECT name, lock, run FROM seen ORDER BY name") == [
        ("after", "3s", "10s"),
        ("outside", "3s", "10s"),
        ("run", "3s", "10s"),
        ("section", "1500ms", "1min"),
    ]
    # After the run the session's own settings are back: nothing leaks into the ledger's reads.
    assert query(db_url, "SELECT count(*) FROM schema_migrations WHERE state = 'applied'") == [(3,)]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--statement-lock-timeout", "3 parsecs", "invalid statement lock timeout '3 parsecs'"),
        ("--statement-lock-timeout", "-1s", "invalid statement lock timeout '-1s'"),
        ("--statement-timeout", "2days", "invalid statement timeout '2days'"),
        ("--lock-retries", "-1", "invalid lock retries -1"),
    ],
)
def test_bad_wait_options_are_named(
    option: str, value: str, message: str, sqlite_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    result = up(sqlite_url, migrations_dir, tmp_path, f"{option}={value}")
    assert result.returncode == 2, result.output
    assert message in result.stderr


def test_bad_section_option_names_the_file_and_line(
    sqlite_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(migrations_dir, "001_a.sql", "-- migrate:up lock_timeout:soon\nCREATE TABLE t (id int);\n")
    result = up(sqlite_url, migrations_dir, tmp_path)
    assert result.returncode != 0
    assert "001_a.sql" in result.stderr
    assert "line 1" in result.stderr
    assert "invalid lock_timeout 'soon'" in result.stderr


def test_pyproject_sets_the_waits(pg_url: str, migrations_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.dbledger]\nstatement_lock_timeout = "750ms"\nstatement_timeout = 20\nlock_retries = 2\n'
    )
    write(
        migrations_dir,
        "001_a.sql",
        "CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock,"
        " current_setting('statement_timeout') AS run;",
    )
    result = up(pg_url, migrations_dir, tmp_path)
    assert result.returncode == 0, result.output
    assert query(pg_url, "SELECT lock, run FROM seen") == [("750ms", "20s")]


def test_the_dry_run_says_the_wait_rule_and_who_would_block_now(
    accounts: str, migrations_dir: Path, tmp_path: Path
) -> None:
    """Found: the dry run said "~0 ms" for an ALTER that was about to wait 7 s behind a report."""
    write(migrations_dir, "002_add_email.sql", "ALTER TABLE accounts ADD COLUMN email text;")
    with holding(accounts, 30.0) as pid:
        result = up(accounts, migrations_dir, tmp_path, "--dry-run", "--statement-lock-timeout", "2s")
    assert result.returncode == 0, result.output
    assert (
        "each statement waits at most 2 s for a lock; CONCURRENTLY waits without a limit; a migration "
        "that gives up is rolled back and tried again up to 5 times" in result.stdout
    )
    assert f"waits now: accounts is held (ACCESS SHARE) by pid {pid} (report-job" in result.stdout
    assert "ACCESS EXCLUSIVE waits for it" in result.stdout
    assert "email" not in columns(accounts)


def test_atomic_keeps_the_limits_for_every_migration(
    pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    """--atomic resets the session between its migrations inside one transaction; the reset must
    not take the deploy's lock timeout with it."""
    seen = "INSERT INTO seen VALUES ('{0}', current_setting('lock_timeout'));\n"
    write(migrations_dir, "001_a.sql", "CREATE TABLE seen (name text, lock text);\n" + seen.format("a"))
    write(migrations_dir, "002_b.sql", "SET lock_timeout = '9s';\n" + seen.format("b"))
    write(migrations_dir, "003_c.sql", seen.format("c"))
    result = up(pg_url, migrations_dir, tmp_path, "--atomic", "--statement-lock-timeout", "2s")
    assert result.returncode == 0, result.output
    assert query(pg_url, "SELECT name, lock FROM seen ORDER BY name") == [
        ("a", "2s"),
        ("b", "9s"),
        ("c", "2s"),
    ]
