"""The command line behaves like the tools people know: plain text off a terminal, colour only
where it belongs (NO_COLOR, --color), progress on a terminal only, -q and -v, examples in every
--help, --version, and one default for schema checks in the CLI and the Python API."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

import dbledger
from tests.helpers import Result, query, run_cli, write

ESCAPE = re.compile(r"\x1b\[")
BOX = re.compile(r"[\u2500-\u257f]")
LONG = "a_migration_whose_name_is_long_enough_to_pass_eighty_columns_on_its_own_and_then_some"


def cli(url: str, folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder.parent, env=env)


def on_a_terminal(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run dbledger with stdout and stderr on a pseudo-terminal; (exit code, what it showed)."""
    leader, follower = pty.openpty()
    environment = {**os.environ, "COLUMNS": "100", "TERM": "xterm-256color", **(env or {})}
    environment.pop("NO_COLOR", None) if "NO_COLOR" not in (env or {}) else None
    process = subprocess.Popen(
        [sys.executable, "-m", "dbledger", *args],
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    shown = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return process.wait(timeout=60), shown.decode("utf-8", "replace")


@pytest.fixture
def applied(sqlite_url: str, migrations_dir: Path) -> str:
    write(migrations_dir, f"001_{LONG}.sql", "CREATE TABLE t (id integer);\n")
    write(migrations_dir, "002_pending.sql", "CREATE TABLE u (id integer);\n")
    done = cli(sqlite_url, migrations_dir, "up", "--to", "1")
    assert done.returncode == 0, done.output
    return sqlite_url


def test_status_off_a_terminal_is_plain_aligned_and_whole(applied: str, migrations_dir: Path) -> None:
    result = cli(applied, migrations_dir, "status")
    assert result.returncode == 0, result.output
    assert not ESCAPE.search(result.output)
    assert not BOX.search(result.stdout)
    lines = result.stdout.splitlines()
    assert all(line == line.rstrip() for line in lines)
    assert lines[0] == f"{applied}  ({migrations_dir})"
    header, first, second = lines[1], lines[2], lines[3]
    assert header.split() == ["version", "migration", "state", "applied", "at", "ms", "checksum"]
    assert first.split()[:3] == ["1", f"001_{LONG}", "applied"]  # never wrapped
    assert second.split() == ["2", "002_pending", "pending"]
    assert header.index("state") == first.index("applied") == second.rindex("pending")  # aligned
    assert lines[4] == "version 1: 1 applied, 1 pending, 0 failed"


def test_problems_are_never_cut_across_lines(applied: str, migrations_dir: Path) -> None:
    write(migrations_dir, f"001_{LONG}.sql", "CREATE TABLE t (id integer, edited integer);\n")
    result = cli(applied, migrations_dir, "status")
    [problem] = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert problem.startswith(f"problem: migration '001_{LONG}' was modified after it was applied")
    # A semantic change (a new column): the advice ends the line, the diff follows on its own lines.
    assert problem.endswith(f"naming it to 'dbledger repair': dbledger repair --accept 001_{LONG}")


def test_color_always_colours_a_pipe_and_never_and_no_color_do_not(
    applied: str, migrations_dir: Path
) -> None:
    coloured = cli(applied, migrations_dir, "--color", "always", "status")
    assert "\x1b[32mapplied\x1b[0m" in coloured.stdout
    assert not BOX.search(coloured.stdout)  # colour, but still plain lines
    also = cli(applied, migrations_dir, "--color", "always", "status", env={"NO_COLOR": "1"})
    assert ESCAPE.search(also.stdout)  # an explicit option beats the environment


def test_a_terminal_gets_a_table_and_colour(applied: str, migrations_dir: Path) -> None:
    code, shown = on_a_terminal(
        "--database-url", applied, "--dir", str(migrations_dir), "status", cwd=migrations_dir
    )
    assert code == 0, shown
    assert BOX.search(shown)
    assert ESCAPE.search(shown)


@pytest.mark.parametrize(("flag", "env"), [(["--color", "never"], {}), ([], {"NO_COLOR": "1"})])
def test_no_color_removes_every_escape_sequence_on_a_terminal(
    flag: list[str], env: dict[str, str], applied: str, migrations_dir: Path
) -> None:
    code, shown = on_a_terminal(
        "--database-url", applied, "--dir", str(migrations_dir), *flag, "status", cwd=migrations_dir, env=env
    )
    assert code == 0, shown
    assert BOX.search(shown)  # still the terminal's table
    assert not re.search(r"\x1b\[[0-9;]*m", shown), repr(shown)  # no colour, bold or italic


def test_progress_on_a_terminal_shows_the_run(sqlite_url: str, migrations_dir: Path) -> None:
    slow = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000)\n"
        "SELECT count(*) FROM n;\n"
    )
    for number in (1, 2, 3):
        write(migrations_dir, f"00{number}_m{number}.sql", f"CREATE TABLE m{number} (id integer);\n{slow}")
    code, shown = on_a_terminal(
        "--database-url", sqlite_url, "--dir", str(migrations_dir), "up", cwd=migrations_dir
    )
    assert code == 0, shown
    assert "applying 002_m2" in shown  # the migration at work, on the live line
    assert re.search(r"[0-3]/3", shown)  # the bar over the run's migrations
    assert re.search(r"applied  003_m3 in \d+ ms", shown)
    assert "applied 3 migration(s) in" in shown


def test_off_a_terminal_progress_is_plain_lines(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (id integer);\n")
    write(migrations_dir, "002_b.sql", "CREATE TABLE b (id integer);\n")
    result = cli(sqlite_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert not ESCAPE.search(result.output)
    lines = result.stderr.splitlines()
    assert lines[1:3] == ["applying 001_a ...", lines[2]]
    assert re.fullmatch(r"applied  001_a in \d+ ms", lines[2])
    assert "/2" not in result.stderr


def test_quiet_prints_only_errors(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (id integer);\n")
    quiet = cli(sqlite_url, migrations_dir, "-q", "up")
    assert quiet.returncode == 0, quiet.output
    assert quiet.output == ""
    write(migrations_dir, "002_b.sql", "CREATE TABLE a (id integer);\n")
    failed = cli(sqlite_url, migrations_dir, "up", "--quiet")
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr.startswith("dbledger: error: migration '002_b' failed")


def test_verbose_shows_each_statement_redacted(pg_url: str, migrations_dir: Path) -> None:
    write(
        migrations_dir,
        "001_role.sql",
        "CREATE TABLE a (id integer, note text);\n"
        "CREATE ROLE reporter_x LOGIN PASSWORD 'hunter2secret';\n"
        "DROP ROLE reporter_x;\n"
        "INSERT INTO a VALUES (1, 'PGPASSWORD=hunter3hunter psql -h db');\n"
        'INSERT INTO a VALUES (2, \'{"password": "hunter4hunter"}\');\n',
    )
    result = cli(pg_url, migrations_dir, "-v", "up")
    assert result.returncode == 0, result.output
    shown = result.stderr.splitlines()
    assert "  001_role line 1: CREATE TABLE a (id integer, note text)" in shown
    assert "  001_role line 2: CREATE ROLE reporter_x LOGIN PASSWORD '***'" in shown
    assert "  001_role line 4: INSERT INTO a VALUES (1, 'PGPASSWORD=*** psql -h db')" in shown
    assert '  001_role line 5: INSERT INTO a VALUES (2, \'{"password": "***"}\')' in shown
    for secret in ("hunter2secret", "hunter3hunter", "hunter4hunter"):
        assert secret not in result.output
    assert query(pg_url, "SELECT count(*) FROM a") == [(2,)]


def test_quiet_and_verbose_exclude_each_other(tmp_path: Path) -> None:
    result = run_cli("-q", "-v", "status", cwd=tmp_path)
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


@pytest.mark.parametrize(
    "command",
    ["up", "down", "redo", "drift", "dump", "status", "verify", "new", "repair", "baseline", "completion"],
)
def test_every_help_ends_with_examples(command: str, tmp_path: Path) -> None:
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    tail = result.stdout.rstrip().split("examples:\n")[-1].splitlines()
    assert 2 <= len(tail) <= 3
    assert all(line.startswith("  ") and "dbledger " in line for line in tail), tail


def test_version(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == f"dbledger {dbledger.__version__}\n"


def test_python_status_reports_drift_by_default_as_the_cli_does(
    sqlite_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_a.sql", "CREATE TABLE a (id integer);\n")
    assert cli(sqlite_url, migrations_dir, "up").returncode == 0
    query(sqlite_url, "ALTER TABLE a ADD COLUMN sneaked integer")
    result = dbledger.status(sqlite_url, migrations_dir)
    assert not result.clean
    assert result.schema is not None
    assert result.schema["drifted"] is True
    shown = cli(sqlite_url, migrations_dir, "status")
    assert any("the live schema differs" in line for line in shown.stdout.splitlines())
