"""``--all``: one command over a fleet of targets (schemas of one database, and databases), with
real PostgreSQL and real processes: where the targets come from, what each target's ledger holds
afterwards, failures with and without --continue-on-error, two runners splitting one fleet, and
no password in any output."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from dbledger.config import parse_database_url
from dbledger.errors import ConfigError
from dbledger.targets import parse_target, query_targets, read_targets_file, targets_from
from dbledger.testing import Cluster
from tests.conftest import ExternalServer
from tests.helpers import Result, query, run_cli, write
from tests.test_cli_conventions import BOX, ESCAPE, on_a_terminal

MIGRATIONS = ("001_a", "002_b", "003_c")
TENANTS = [f"tenant_{n}" for n in range(1, 6)]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three small migrations, every one creating a table in the target."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_a.sql", "CREATE TABLE a (id integer PRIMARY KEY);\n")
    write(migrations, "002_b.sql", "CREATE TABLE b (id integer PRIMARY KEY, a integer REFERENCES a);\n")
    write(migrations, "003_c.sql", "CREATE TABLE c (id integer);\n")
    return migrations


def make_schemas(url: str, names: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE SCHEMA {name}".encode())


@pytest.fixture
def databases(pg_server: Cluster | ExternalServer) -> Iterator[Callable[[], str]]:
    """More fresh databases on the test server (their URLs carry the password), dropped after."""
    names: list[str] = []

    def create() -> str:
        name = f"fleet_{len(names)}_{time.monotonic_ns()}"
        names.append(name)
        return pg_server.create_database(name)

    yield create
    for name in names:
        pg_server.drop_database(name)


def fleet(url: str, folder: Path, *args: str) -> Result:
    return run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder.parent)


def document(result: Result) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def outcomes(result: Result) -> dict[str, str]:
    """Each target (its label) and its outcome, from the JSON summary."""
    return {item["target"]: item["outcome"] for item in document(result)["targets"]}


def ledger(url: str, schema: str = "public") -> list[tuple[str, bool]]:
    rows = query(url, f"SELECT migration_name, success FROM {schema}.schema_migrations ORDER BY id")
    return [(str(name), bool(success)) for name, success in rows]


def applies(url: str, schema: str = "public") -> Counter[str]:
    """How many times the history says each migration was applied."""
    rows = query(url, f"SELECT migration_name FROM {schema}.schema_migrations_history WHERE action = 'apply'")
    return Counter(str(name) for (name,) in rows)


def has_ledger(url: str, schema: str) -> bool:
    return query(url, "SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.schema_migrations",))[0][0] is True


ALL_APPLIED = [(name, True) for name in MIGRATIONS]


def test_five_schemas_and_two_databases_from_a_file(
    pg_url: str, databases: Callable[[], str], folder: Path
) -> None:
    make_schemas(pg_url, TENANTS)
    others = [databases(), databases()]
    listed = folder.parent / "targets.txt"
    listed.write_text(
        "# the tenants of the main database\n"
        + "".join(f"{name}\n" for name in TENANTS)
        + "\n"
        + "".join(f"{url}   # a database of its own\n" for url in others),
        encoding="utf-8",
    )

    done = fleet(pg_url, folder, "up", "--all", "--targets-file", str(listed), "--json")

    assert done.returncode == 0, done.output
    summary = document(done)
    assert summary["ok"] is True
    assert summary["counts"] == {"applied": 7}
    assert [item["schema"] for item in summary["targets"]] == [*TENANTS, None, None]
    assert [item["source"] for item in summary["targets"]] == [
        f"{listed}:{line}" for line in (2, 3, 4, 5, 6, 8, 9)
    ]
    assert all(item["applied"] == list(MIGRATIONS) for item in summary["targets"])
    for name in TENANTS:
        assert ledger(pg_url, name) == ALL_APPLIED
        assert query(pg_url, "SELECT to_regclass(%s) IS NOT NULL", (f"{name}.c",))[0][0] is True
    assert not has_ledger(pg_url, "public")  # the main database's own schema is not a target
    for url in others:
        assert ledger(url) == ALL_APPLIED

    again = fleet(pg_url, folder, "up", "--all", "--targets-file", str(listed), "--json")
    assert again.returncode == 0, again.output
    assert document(again)["counts"] == {"up_to_date": 7}


def test_targets_from_pyproject(pg_url: str, databases: Callable[[], str], folder: Path) -> None:
    make_schemas(pg_url, TENANTS[:2])
    other = databases()
    entries = ", ".join(json.dumps(entry) for entry in [*TENANTS[:2], other])
    (folder.parent / "pyproject.toml").write_text(
        f'[tool.dbledger]\ndatabase_url = "{pg_url}"\ndir = "migrations"\ntargets = [{entries}]\n',
        encoding="utf-8",
    )

    done = run_cli("up", "--all", "--json", cwd=folder.parent)

    assert done.returncode == 0, done.output
    summary = document(done)
    assert summary["counts"] == {"applied": 3}
    assert summary["targets_from"] == "pyproject.toml [tool.dbledger] targets"
    assert summary["targets"][2]["source"] == "pyproject.toml: [tool.dbledger] targets[2]"
    assert ledger(pg_url, TENANTS[0]) == ledger(pg_url, TENANTS[1]) == ledger(other) == ALL_APPLIED


def test_targets_from_a_query_of_schema_names_and_urls(
    pg_url: str, databases: Callable[[], str], folder: Path
) -> None:
    make_schemas(pg_url, [*TENANTS, "billing"])
    other = databases()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(b"CREATE TABLE public.tenants (name text, active boolean)")
        for name in TENANTS:
            conn.execute(b"INSERT INTO public.tenants VALUES (%s, %s)", (name, name != "tenant_4"))
        conn.execute(b"INSERT INTO public.tenants VALUES (%s, true)", (other,))
    sql = "SELECT name FROM public.tenants WHERE active ORDER BY name LIKE 'tenant%' DESC, name"

    done = fleet(pg_url, folder, "up", "--all", "--targets-query", sql, "--json")

    assert done.returncode == 0, done.output
    summary = document(done)
    assert [item["schema"] for item in summary["targets"]] == [
        "tenant_1",
        "tenant_2",
        "tenant_3",
        "tenant_5",
        None,
    ]
    assert summary["counts"] == {"applied": 5}
    assert summary["targets"][4]["source"] == "--targets-query row 5"
    assert not has_ledger(pg_url, "tenant_4")
    assert not has_ledger(pg_url, "billing")
    assert ledger(other) == ALL_APPLIED


def failing_fleet(pg_url: str, folder: Path) -> Path:
    """Four tenants; 002 fails in tenant_2 only (a division by zero there)."""
    make_schemas(pg_url, TENANTS[:4])
    write(
        folder,
        "002_b.sql",
        "CREATE TABLE b (id integer PRIMARY KEY, a integer REFERENCES a);\n"
        "SELECT 1 / (current_schema() <> 'tenant_2')::integer;\n",
    )
    listed = folder.parent / "targets.txt"
    listed.write_text("".join(f"{name}\n" for name in TENANTS[:4]), encoding="utf-8")
    return listed


def test_without_continue_on_error_no_target_starts_after_a_failure(pg_url: str, folder: Path) -> None:
    listed = failing_fleet(pg_url, folder)

    done = fleet(pg_url, folder, "up", "--all", "--targets-file", str(listed), "--jobs", "1", "--json")

    assert done.returncode == 1, done.output
    summary = document(done)
    assert summary["ok"] is False
    assert summary["error"]["type"] == "FleetFailed"
    assert summary["error"]["failed"] == 1
    assert summary["error"]["message"].startswith("1 of 4 target(s) failed; the first: ")
    assert [item["outcome"] for item in summary["targets"]] == [
        "applied",
        "failed",
        "not_started",
        "not_started",
    ]
    failed = summary["targets"][1]
    assert failed["detail"].startswith("failed: migration '002_b' failed (line 2): 22012: division by zero")
    assert failed["error"]["type"] == "MigrationFailed"
    assert failed["applied"] == []
    assert ledger(pg_url, "tenant_1") == ALL_APPLIED
    assert ledger(pg_url, "tenant_2") == [("001_a", True), ("002_b", False)]
    assert not has_ledger(pg_url, "tenant_3")
    assert not has_ledger(pg_url, "tenant_4")


def test_with_continue_on_error_every_target_runs_and_the_exit_is_1(pg_url: str, folder: Path) -> None:
    listed = failing_fleet(pg_url, folder)

    done = fleet(pg_url, folder, "up", "--all", "--targets-file", str(listed), "--continue-on-error")

    assert done.returncode == 1, done.output
    lines = done.stdout.splitlines()
    assert lines[0] == f"up --all: 4 target(s) from {listed}"
    assert lines[1].split() == ["target", "schema", "outcome", "ms"]
    rows = {line.split()[1]: line for line in lines[2:6]}
    assert "applied 3" in rows["tenant_1"]
    assert "failed: migration '002_b' failed (line 2): 22012: division by zero" in rows["tenant_2"]
    assert "applied 3" in rows["tenant_3"]
    assert "applied 3" in rows["tenant_4"]
    assert lines[6].startswith("4 target(s) in ")
    assert lines[6].endswith(": 3 applied, 1 failed")
    using, error = done.stderr.splitlines()  # off a terminal: no progress, only what it works on
    assert using == f"dbledger: 4 target(s) from {listed}, migrations {folder}, 4 at a time"
    assert error.startswith("dbledger: error: 1 of 4 target(s) failed; the first: ")
    assert "schema tenant_2: failed: migration '002_b' failed (line 2)" in error
    for name in ("tenant_1", "tenant_3", "tenant_4"):
        assert ledger(pg_url, name) == ALL_APPLIED


def test_status_and_verify_all(pg_url: str, folder: Path) -> None:
    make_schemas(pg_url, TENANTS[:3])
    listed = folder.parent / "targets.txt"
    listed.write_text("tenant_1\ntenant_2\ntenant_3\n", encoding="utf-8")
    assert fleet(pg_url, folder, "--schema", "tenant_1", "up").returncode == 0
    assert fleet(pg_url, folder, "--schema", "tenant_2", "up", "--to", "2").returncode == 0
    query(
        pg_url,
        "UPDATE tenant_1.schema_migrations SET checksum = repeat('0', 64) WHERE migration_name = '001_a'",
    )

    status = fleet(pg_url, folder, "status", "--all", "--targets-file", str(listed), "--json")
    assert status.returncode == 0, status.output  # status reports; it fails only on a target it cannot read
    targets = document(status)["targets"]
    assert [item["outcome"] for item in targets] == ["problems", "pending", "pending"]
    assert targets[0]["detail"].startswith("3 applied, 0 pending; ")
    assert "migration '001_a'" in targets[0]["detail"]
    assert targets[1]["detail"] == "2 applied, 1 pending"
    assert targets[2]["detail"] == "0 applied, 3 pending"
    assert [m["name"] for m in targets[1]["result"]["pending"]] == ["003_c"]

    verify = fleet(pg_url, folder, "verify", "--all", "--targets-file", str(listed), "--json")
    assert verify.returncode == 1, verify.output
    targets = document(verify)["targets"]
    assert [item["outcome"] for item in targets] == ["failed", "ok", "ok"]
    assert targets[0]["error"]["type"] == "LedgerStateError"
    assert targets[1]["detail"] == "ok: 2 applied, 1 pending"

    strict = fleet(pg_url, folder, "verify", "--all", "--strict", "--targets-file", str(listed), "--json")
    assert strict.returncode == 1, strict.output
    assert [item["outcome"] for item in document(strict)["targets"]] == ["failed", "failed", "failed"]

    listed.write_text("tenant_2\ntenant_3\n", encoding="utf-8")
    assert fleet(pg_url, folder, "up", "--all", "--targets-file", str(listed)).returncode == 0
    clean = fleet(pg_url, folder, "verify", "--all", "--strict", "--targets-file", str(listed))
    assert clean.returncode == 0, clean.output
    assert "2 target(s) in " in clean.stdout
    assert clean.stdout.rstrip().endswith(": 2 ok")
    drift = fleet(pg_url, folder, "drift", "--all", "--targets-file", str(listed), "--json")
    assert drift.returncode == 0, drift.output
    assert document(drift)["counts"] == {"ok": 2}


def test_on_a_terminal_a_bar_then_a_table(pg_url: str, folder: Path) -> None:
    make_schemas(pg_url, TENANTS[:3])
    for migration in MIGRATIONS:  # long enough for the bar to be drawn
        path = folder / f"{migration}.sql"
        path.write_text(path.read_text(encoding="utf-8") + "SELECT pg_sleep(0.2);\n", encoding="utf-8")
    listed = folder.parent / "targets.txt"
    listed.write_text("tenant_1\ntenant_2\ntenant_3\n", encoding="utf-8")

    code, shown = on_a_terminal(
        "--database-url", pg_url, "--dir", str(folder), "up", "--all", "--targets-file", str(listed),
        "--jobs", "1", cwd=folder.parent,
    )  # fmt: skip

    assert code == 0, shown
    assert re.search(r"targets: \d+ applied.*[1-3]/3", shown)  # the bar, with the counts so far
    assert "schema tenant_2" in shown or "tenant_2" in shown
    assert BOX.search(shown)  # the summary is a table
    assert "3 target(s) in " in shown
    assert ESCAPE.search(shown)


_GATED = r"""
import runpy, sys
import dbledger.cli, dbledger.fleet, dbledger.targets, dbledger.backends.postgres, dbledger.executor
print("ready", flush=True)
sys.stdin.readline()
sys.argv = ["dbledger", *sys.argv[1:]]
runpy.run_module("dbledger", run_name="__main__", alter_sys=True)
"""


def start_runners(count: int, args: list[str], cwd: Path) -> list[subprocess.Popen[str]]:
    """``count`` dbledger processes, imported and waiting, then let go at the same moment."""
    runners = [
        subprocess.Popen(
            [sys.executable, "-c", _GATED, *args],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for runner in runners:
        assert runner.stdout is not None
        assert runner.stdout.readline() == "ready\n"
    for runner in runners:
        assert runner.stdin is not None
        runner.stdin.write("go\n")
        runner.stdin.flush()
    return runners


def finish(runner: subprocess.Popen[str], timeout: float = 120) -> Result:
    out, err = runner.communicate(timeout=timeout)
    return Result(runner.returncode, out, err)


@pytest.mark.slow
def test_two_runners_split_a_fleet_and_apply_each_migration_once(pg_url: str, folder: Path) -> None:
    names = [f"tenant_{n}" for n in range(1, 11)]
    make_schemas(pg_url, names)
    for migration in MIGRATIONS:  # slow enough for the runners to meet on the fleet
        path = folder / f"{migration}.sql"
        path.write_text(path.read_text(encoding="utf-8") + "SELECT pg_sleep(0.3);\n", encoding="utf-8")
    listed = folder.parent / "targets.txt"
    listed.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    args = ["--database-url", pg_url, "--dir", str(folder), "up", "--all", "--targets-file", str(listed)]

    runners = start_runners(2, [*args, "--jobs", "2", "--json"], folder.parent)
    results = [finish(runner) for runner in runners]

    for result in results:
        assert result.returncode == 0, result.output
    summaries = [document(result)["targets"] for result in results]
    for summary in summaries:
        assert [item["schema"] for item in summary] == names  # each runner reports every target
        assert {item["outcome"] for item in summary} <= {"applied", "up_to_date", "claimed"}
    for index, name in enumerate(names):
        applied_here = [summary[index]["applied"] for summary in summaries]
        assert sorted(m for chunk in applied_here for m in chunk) == list(MIGRATIONS), (name, applied_here)
        assert ledger(pg_url, name) == ALL_APPLIED
        assert applies(pg_url, name) == Counter(MIGRATIONS)
    by_runner = [sum(item["outcome"] == "applied" for item in summary) for summary in summaries]
    assert sum(by_runner) == len(names)
    assert min(by_runner) >= 1, by_runner  # the fleet was split, not run twice one after the other
    assert any(item["outcome"] != "applied" for summary in summaries for item in summary)


def test_a_target_another_runner_holds_is_claimed_not_failed(pg_url: str, folder: Path) -> None:
    make_schemas(pg_url, TENANTS[:3])
    write(
        folder,
        "004_slow.sql",
        "DO $$ BEGIN IF current_schema() = 'tenant_2' THEN PERFORM pg_sleep(6); END IF; END $$;\n",
    )
    listed = folder.parent / "targets.txt"
    listed.write_text("tenant_1\ntenant_2\ntenant_3\n", encoding="utf-8")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dbledger",
            "--database-url",
            pg_url,
            "--dir",
            str(folder),
            "--schema",
            "tenant_2",
            "up",
        ],
        cwd=folder.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not query(
        pg_url,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE query LIKE '%PERFORM pg_sleep(6)%' AND pid <> pg_backend_pid()",
    )[0][0]:
        assert time.monotonic() < deadline, "the holder never started its slow migration"
        time.sleep(0.1)

    done = fleet(pg_url, folder, "up", "--all", "--targets-file", str(listed), "--json")

    held = finish(holder)
    assert held.returncode == 0, held.output
    assert done.returncode == 0, done.output
    targets = document(done)["targets"]
    assert [item["outcome"] for item in targets] == ["applied", "claimed", "applied"]
    assert targets[1]["detail"] == "skipped: claimed by another runner"
    assert targets[1]["retried"] is True
    assert targets[1]["holder"] is not None
    assert "backend" in targets[1]["holder"]
    assert applies(pg_url, "tenant_2") == Counter([*MIGRATIONS, "004_slow"])


def test_a_password_in_a_target_never_appears(
    pg_url: str, databases: Callable[[], str], folder: Path
) -> None:
    secret = "fleet-Secret-9e1b7"  # the test's own throwaway role
    role = f"fleet_role_{time.monotonic_ns()}"
    query(pg_url, f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{secret}'")
    try:
        parts = urlsplit(databases())
        good = urlunsplit(parts._replace(netloc=f"{role}:{secret}@{parts.hostname}:{parts.port}"))
        bad = urlunsplit(parts._replace(netloc=f"{role}:{secret}x@{parts.hostname}:{parts.port}"))
        listed = folder.parent / "targets.txt"
        listed.write_text(f"{good}\n{bad}\n", encoding="utf-8")
        for mode in (["-v"], [], ["--json"]):  # -v first: the migrations run, statement by statement
            done = fleet(
                pg_url, folder, "up", "--all", "--continue-on-error", "--targets-file", str(listed), *mode
            )
            assert done.returncode == 1, done.output
            assert secret not in done.output
            assert f"{role}:***@" in done.output
            if mode == ["-v"]:  # each target's events, named with the target
                assert (
                    f"{role}:***@{parts.hostname}:{parts.port}/{parts.path.lstrip('/')}: 001_a line 1: CREATE"
                    in done.stderr
                )
    finally:
        query(good, f"DROP OWNED BY {role}")  # the ledger it created there
        query(pg_url, f"DROP ROLE IF EXISTS {role}")


# -- bad input, named where it is ----------------------------------------------------------


def test_bad_target_lists_are_usage_errors_naming_the_place(pg_url: str, folder: Path) -> None:
    listed = folder.parent / "targets.txt"
    cases = {
        "# nothing but a comment\n\n": f"{listed}: no targets in the file (only blank lines and comments): "
        "give one database URL or schema name a line",
        "tenant_1\nmysql://app:hunter22@db/app\n": f"{listed}:2: 'mysql://app:***@db/app' is not a database "
        "URL (postgresql://..., sqlite:///...) nor a schema name",
        "tenant_1\n\ntenant_1\n": f"{listed}:3: duplicate target "
        f"'{parse_database_url(pg_url).display} schema tenant_1': {listed}:1 lists it already",
        "Tenant_1\n": f"invalid schema 'Tenant_1' (from {listed}:1): give lower-case letters, digits and "
        "'_', "
        "starting with a letter or '_', at most 63, not a system schema (e.g. tenant_42)",
    }
    for text, message in cases.items():
        listed.write_text(text, encoding="utf-8")
        done = fleet(pg_url, folder, "up", "--all", "--targets-file", str(listed), "--json")
        assert done.returncode == 2, done.output
        assert document(done)["error"]["message"] == message
        assert "hunter22" not in done.output

    missing = fleet(pg_url, folder, "status", "--all", "--targets-file", "nowhere.txt")
    assert missing.returncode == 2
    assert (
        "dbledger: error: cannot read the targets file 'nowhere.txt': No such file or directory"
        in missing.stderr
    )


def test_a_bad_targets_query_is_a_usage_error(pg_url: str, folder: Path) -> None:
    display = parse_database_url(pg_url).display
    cases = {
        "SELECT name FROM no_such_table": "--targets-query failed on "
        f'{display}: 42P01: relation "no_such_table" does not exist',
        "SELECT 'a', 'b'": "--targets-query must return one column (database URLs or schema names); it "
        "returns 2 (?column?, ?column?)",
        "SELECT 'x' WHERE false": f"--targets-query returned no rows on {display}: no targets to run",
        "SELECT NULL::text": "--targets-query row 1: NULL is not a target: return text, a database URL or a "
        "schema name a row",
        "CREATE TABLE sneaky (id int)": f"--targets-query failed on {display}: "
        "25006: cannot execute CREATE TABLE in a read-only transaction",
    }
    for sql, message in cases.items():
        with pytest.raises(ConfigError) as raised:
            query_targets(sql, parse_database_url(pg_url))
        assert raised.value.message == message
    assert query(pg_url, "SELECT to_regclass('sneaky') IS NULL") == [(True,)]
    done = fleet(pg_url, folder, "up", "--all", "--targets-query", "SELECT name FROM no_such_table", "--json")
    assert done.returncode == 2, done.output
    assert document(done)["error"]["message"] == next(iter(cases.values()))


def test_all_options_need_all_and_all_needs_targets(pg_url: str, folder: Path) -> None:
    alone = fleet(pg_url, folder, "up", "--jobs", "3")
    assert alone.returncode == 2
    assert "dbledger: error: --jobs works with --all: run 'dbledger up --all --jobs ...'" in alone.stderr
    none = fleet(pg_url, folder, "status", "--all")
    assert none.returncode == 2
    assert (
        "dbledger: error: --all needs a list of targets: set targets = [...] in [tool.dbledger] of "
        "pyproject.toml, or pass --targets-file FILE or --targets-query SQL" in none.stderr
    )
    both = fleet(pg_url, folder, "up", "--all", "--targets-file", "a", "--targets-query", "b")
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    listed = folder.parent / "targets.txt"
    listed.write_text("tenant_1\n", encoding="utf-8")
    for extra in (["--dry-run"], ["--backup", "b"]):
        refused = fleet(pg_url, folder, "up", "--all", "--targets-file", str(listed), *extra)
        assert refused.returncode == 2
        assert (
            f"dbledger: error: {extra[0]} works on one database: drop --all, or drop {extra[0]}"
            in refused.stderr
        )
    jobs = fleet(pg_url, folder, "up", "--all", "--targets-file", str(listed), "--jobs", "0")
    assert jobs.returncode == 2
    assert "invalid --jobs 0: give a whole number from 1 to 64" in jobs.stderr
    schema = fleet(pg_url, folder, "--schema", "tenant_9", "up", "--all", "--targets-file", str(listed))
    assert schema.returncode == 2
    assert "a target schema ('tenant_9') names one target, and --all runs on many" in schema.stderr


def test_every_fleet_option_is_in_the_help(tmp_path: Path) -> None:
    for command in ("up", "status", "verify", "drift"):
        shown = run_cli(command, "--help", cwd=tmp_path)
        assert shown.returncode == 0
        for option in (
            "--all",
            "--targets-file FILE",
            "--targets-query SQL",
            "--jobs N",
            "--continue-on-error",
        ):
            assert option in shown.stdout, (command, option)


def test_targets_in_pyproject_are_checked(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    cases = {
        "targets = []": "targets must be a non-empty list of strings",
        'targets = "tenant_1"': "targets must be a non-empty list of strings",
        'targets = ["tenant_1", 7]': "targets[1]: 7 is not a target",
        'targets = ["tenant_1", ""]': "targets[1]: '' is not a target",
    }
    for line, message in cases.items():
        (tmp_path / "pyproject.toml").write_text(f"[tool.dbledger]\n{line}\n", encoding="utf-8")
        done = run_cli("status", "--all", cwd=tmp_path)
        assert done.returncode == 2, done.output
        assert f"dbledger: error: {tmp_path / 'pyproject.toml'}: [tool.dbledger] {message}" in done.stderr


# -- the target lists, in-process ----------------------------------------------------------

NEITHER = "is not a database URL (postgresql://..., sqlite:///...) nor a schema name"
MAIN = parse_database_url("postgresql://app:s3cret-long-pw@db.invalid/app")


def test_entries_are_urls_or_schema_names() -> None:
    schema = parse_target("tenant_7", MAIN, "here")
    assert (schema.url, schema.schema, schema.label) == (
        MAIN.url,
        "tenant_7",
        "postgresql://app:***@db.invalid/app schema tenant_7",
    )
    database = parse_target("  postgres://u:pw@h/other  ", MAIN, "here")
    assert (database.url, database.schema, database.label) == (
        "postgres://u:pw@h/other",
        None,
        "postgres://u:***@h/other",
    )
    libpq = parse_target("host=h dbname=x password=abc", MAIN, "here")
    assert libpq.label == "host=h dbname=x password=***"
    assert parse_target("sqlite:///t.db", MAIN, "here").label == "sqlite:///t.db"
    for bad, message in {
        "https://x.invalid/": f"here: 'https://x.invalid/' {NEITHER}",
        "tenant 7": f"here: 'tenant 7' {NEITHER}",
        "pg_catalog": "invalid schema 'pg_catalog' (from here)",
        "postgresql://u:p@h:99999/x": "here: malformed PostgreSQL URL 'postgresql://u:***@h:99999/x'",
    }.items():
        with pytest.raises(ConfigError) as raised:
            parse_target(bad, MAIN, "here")
        assert raised.value.message.startswith(message), raised.value.message
    with pytest.raises(ConfigError) as raised:
        parse_target("tenant_1", parse_database_url("sqlite:///x.db"), "here")
    assert raised.value.message.startswith(
        "here: schema 'tenant_1' is a schema of the main database, which must be PostgreSQL"
    )


def test_a_file_has_comments_and_blank_lines(tmp_path: Path) -> None:
    listed = tmp_path / "t.txt"
    listed.write_text(
        "# header\n\n  tenant_1  # first\ntenant_2#not-a-comment\npostgresql://u@h/x#frag\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as raised:
        read_targets_file(listed, MAIN)
    assert raised.value.message.startswith(f"{listed}:4: 'tenant_2#not-a-comment' is not a database URL")
    listed.write_text("# header\n\n  tenant_1  # first\npostgresql://u@h/x#frag\n", encoding="utf-8")
    found = read_targets_file(listed, MAIN)
    assert [(t.schema, t.source) for t in found] == [("tenant_1", f"{listed}:3"), (None, f"{listed}:4")]
    assert found[1].url == "postgresql://u@h/x#frag"


def test_duplicates_are_found_across_spellings_of_one_entry() -> None:
    with pytest.raises(ConfigError) as raised:
        targets_from([("a", "tenant_1"), ("b", " tenant_1 ")], MAIN)
    assert raised.value.message == (
        "b: duplicate target 'postgresql://app:***@db.invalid/app schema tenant_1': a lists it already"
    )
