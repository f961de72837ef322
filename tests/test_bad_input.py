"""Every bad input gets one clear line and the right exit code, never a traceback; with --json,
exactly one document on stdout. Signals, broken pipes, servers that never answer, locked files,
files that look like migrations but are not, and configuration that is almost right."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dbledger.config import PYPROJECT_KEYS
from tests.helpers import Result, query, run_cli, table_exists, write

CREATE_T = "CREATE TABLE t (id integer);\n"


def cli(url: str, folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder.parent, env=env)


def last_line(result: Result) -> str:
    return result.stderr.splitlines()[-1]


def one_document(result: Result) -> dict[str, object]:
    """The single JSON document stdout must hold (json.loads refuses trailing text)."""
    document: dict[str, object] = json.loads(result.stdout)
    return document


def started(url: str, folder: Path, *args: str, until: str) -> subprocess.Popen[str]:
    """dbledger running in the background, once it has printed a line starting with ``until``
    on stderr (the rest of stderr stays unread in the pipe)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dbledger", "--database-url", url, "--dir", str(folder), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith(until):
            return process
    raise AssertionError(f"dbledger ended without printing {until!r}")


# -- 1. text the scanner cannot cut ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        (
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1;\nSELECT 2;\n",
            'unterminated dollar-quoted string at or near "$$ SELECT 1; SELECT 2;"',
        ),
        ("SELECT 1;\nINSERT INTO t VALUES ('abc);\n", 'unterminated quoted string at or near "\'abc);"'),
    ],
)
def test_unterminated_quote_names_the_file_and_line(
    sql: str, reason: str, pg_url: str, migrations_dir: Path
) -> None:
    path = write(migrations_dir, "001_a.sql", sql)
    line = 1 if sql.startswith("CREATE") else 2
    expected = f"{path}: line {line}: {reason}: close it, or the rest of the file is part of it"
    result = cli(pg_url, migrations_dir, "up", "--json")
    assert result.returncode == 2
    assert last_line(result) == f"dbledger: error: {expected}"
    error = one_document(result)["error"]
    assert isinstance(error, dict)
    assert error["message"] == expected
    assert not table_exists(pg_url, "schema_migrations")


# -- 2, 14, 15. pyproject.toml ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"tool = 5\n# dbledger\n", "'tool' must be a table ([tool.dbledger] lives in it), not 5"),
        (b"[tool.dbledger]\ndir = '\xff'\n", "line 2: not valid UTF-8: save the file as UTF-8"),
        (
            b"x = " + b"[" * 3000 + b"]" * 3000 + b"\n# dbledger\n",
            "not readable TOML: arrays or tables nested too deeply",
        ),
        (
            b"[tool.dbledger]\ndatabase-url = 'sqlite:///x.db'\n",
            "[tool.dbledger]: unknown key 'database-url'; did you mean 'database_url'? "
            f"(known: {', '.join(PYPROJECT_KEYS)})",
        ),
    ],
    ids=["tool-not-a-table", "not-utf8", "nested-3000-deep", "unknown-key"],
)
def test_a_bad_pyproject_is_a_usage_error(content: bytes, message: str, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_bytes(content)
    (tmp_path / "migrations").mkdir()
    result = run_cli("status", "--json", cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert last_line(result) == f"dbledger: error: {tmp_path / 'pyproject.toml'}: {message}"
    assert one_document(result)["ok"] is False
    assert "Traceback" not in result.stderr


def test_pyproject_is_found_upward_and_named(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.dbledger]\ndatabase_url = "sqlite:///app.db"\ndir = "db"\n', encoding="utf-8"
    )
    (tmp_path / "db").mkdir()
    write(tmp_path / "db", "001_t.sql", CREATE_T)
    below = tmp_path / "src" / "app"
    below.mkdir(parents=True)
    result = run_cli("up", cwd=below)
    assert result.returncode == 0, result.output
    assert result.stderr.splitlines()[0] == (
        f"dbledger: database sqlite:///app.db (from ../../pyproject.toml), migrations {tmp_path / 'db'}"
    )
    assert query(f"sqlite:///{tmp_path / 'app.db'}", "SELECT migration_name FROM schema_migrations") == [
        ("001_t",)
    ]


def test_an_unknown_dbledger_variable_is_warned_about(sqlite_url: str, migrations_dir: Path) -> None:
    result = cli(sqlite_url, migrations_dir, "status", env={"DBLEDGER_LEDGER": "x"})
    assert result.returncode == 0, result.output
    assert (
        "dbledger: warning: unknown environment variable DBLEDGER_LEDGER; did you mean "
        "'DBLEDGER_LEDGER_TABLE'? (known: DBLEDGER_DIR, DBLEDGER_LAYOUT, DBLEDGER_LEDGER_TABLE, "
        "DBLEDGER_SCHEMA, DBLEDGER_TEST_POSTGRES_URL, DBLEDGER_TEST_PG_BIN): it is ignored"
    ) in result.stderr.splitlines()


# -- 3. dump to a folder that does not exist ----------------------------------------------------


def test_dump_into_a_missing_folder(sqlite_url: str, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "schema.sql"
    result = run_cli("--database-url", sqlite_url, "dump", str(target), "--json", cwd=tmp_path)
    assert result.returncode == 2
    assert last_line(result) == (
        f"dbledger: error: cannot write '{target}': No such file or directory: folder "
        f"'{target.parent}' does not exist, create it first"
    )
    assert one_document(result)["ok"] is False


# -- 4. a reader that goes away -----------------------------------------------------------------


def test_a_closed_pipe_is_not_a_traceback(sqlite_url: str, migrations_dir: Path) -> None:
    # More than a pipe's buffer (64 KiB) of JSON, so the writer meets the closed end.
    for number in range(1, 251):
        write(migrations_dir, f"{number:03d}_m.sql", f"CREATE TABLE m{number} (id integer);\n")
    assert cli(sqlite_url, migrations_dir, "up").returncode == 0
    command = [sys.executable, "-m", "dbledger", "--database-url", sqlite_url, "--dir", str(migrations_dir)]
    codes = set()
    for _ in range(10):
        reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        writer = subprocess.run(
            [*command, "status", "--json"],
            stdout=reader.stdin,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        assert reader.stdin is not None
        reader.stdin.close()
        reader.wait()
        assert "Traceback" not in writer.stderr
        assert writer.stderr.splitlines()[-1].startswith("dbledger: database ")  # nothing after
        codes.add(writer.returncode)
    assert codes == {128 + signal.SIGPIPE}


# -- 5. signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_up_rolls_back_and_answers_in_json(
    signum: int, code: int, pg_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_slow.sql", "CREATE TABLE slow (id integer);\nSELECT pg_sleep(30);\n")
    process = started(pg_url, migrations_dir, "up", "--json", until="applying 001_slow")
    time.sleep(0.3)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == code
    document = json.loads(stdout)
    name = signal.Signals(signum).name
    assert document["error"] == {
        "type": "Interrupted" if signum == signal.SIGINT else "Terminated",
        "message": f"interrupted by {name}: the migration at work, if any, was rolled back (one with "
        "transaction:false may be left dirty); run 'dbledger status' to see where the database stands",
        "exit_code": code,
        "signal": name,
    }
    assert "Traceback" not in stderr
    assert not table_exists(pg_url, "slow")
    assert query(pg_url, "SELECT count(*) FROM schema_migrations") == [(0,)]


# -- 6, 7. a FIFO; a negative step count ----------------------------------------------------------


def test_a_fifo_named_like_a_migration_is_refused_at_once(sqlite_url: str, migrations_dir: Path) -> None:
    fifo = migrations_dir / "001_a.sql"
    os.mkfifo(fifo)
    result = cli(sqlite_url, migrations_dir, "up", "--json")
    assert result.returncode == 2
    assert last_line(result) == (
        f"dbledger: error: {fifo}: is a named pipe (FIFO), not a regular file: a migration must be "
        "a plain SQL file"
    )
    assert one_document(result)["ok"] is False


def test_down_with_negative_steps_on_a_database_without_a_ledger(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", CREATE_T)
    result = cli(db_url, migrations_dir, "down", "--steps", "-1")
    assert result.returncode == 2
    assert last_line(result) == "dbledger: error: --steps must be 1 or more, not -1"


# -- 8. a server that accepts and never answers --------------------------------------------------


@pytest.mark.parametrize("how", ["url", "environment", "option"])
def test_every_way_to_bound_the_connect_is_honoured(
    how: str, silent_server: int, migrations_dir: Path
) -> None:
    url = f"postgresql://app:s3cret@127.0.0.1:{silent_server}/app"
    args, env = [], {}
    if how == "url":
        url += "?connect_timeout=2"
    elif how == "environment":
        env["PGCONNECT_TIMEOUT"] = "2"
    else:
        args = ["--connect-timeout", "2"]
    result = run_cli(
        "--database-url", url, "--dir", str(migrations_dir), *args, "status", cwd=migrations_dir, env=env
    )
    assert result.returncode == 1
    shown = url.replace("s3cret", "***")
    assert last_line(result) == (
        f"dbledger: error: cannot connect to {shown}: connection timeout expired after 2 s: is the "
        "server up and reachable? Wait longer with --connect-timeout SECONDS, connect_timeout in "
        "the URL or PGCONNECT_TIMEOUT"
    )
    assert "s3cret" not in result.output


def test_the_default_connect_timeout_is_stated(tmp_path: Path) -> None:
    result = run_cli("status", "--help", cwd=tmp_path)
    assert "default: connect_timeout in the URL, $PGCONNECT_TIMEOUT, 10)" in " ".join(result.stdout.split())


@pytest.mark.parametrize("value", ["1", "2.5", "abc"])
def test_a_bad_connect_timeout_is_a_usage_error(value: str, sqlite_url: str, migrations_dir: Path) -> None:
    result = cli(sqlite_url, migrations_dir, "--connect-timeout", value, "status")
    assert result.returncode == 2
    expected = (
        "dbledger: error: argument --connect-timeout: invalid float value: 'abc'"
        if value == "abc"
        else f"dbledger: error: invalid connect timeout {float(value)!r}: give whole seconds, at least 2 "
        "and at most 86400"
    )
    assert last_line(result) == expected


# -- 9. SQLite: a reader behind another process's write lock -------------------------------------


def test_a_sqlite_reader_says_what_it_waits_for(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", CREATE_T)
    assert cli(sqlite_url, migrations_dir, "up").returncode == 0
    path = sqlite_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    releaser = threading.Timer(3.0, lambda: holder.execute("COMMIT"))
    releaser.start()
    try:
        result = cli(sqlite_url, migrations_dir, "status", "--json")
    finally:
        releaser.join()
        holder.close()
    assert result.returncode == 0, result.output
    assert f"waiting for the lock of {sqlite_url}, held by another process ..." in result.stderr.splitlines()
    assert one_document(result)["version"] == 1


# -- 11. files that look like migrations ----------------------------------------------------------


def test_near_misses_are_named_and_fail_verify(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", CREATE_T)
    for name in ("002_b.SQL", "001_a.sql.bak", "003_c.sql~"):
        write(migrations_dir, name, "SELECT 1;\n")
    write(migrations_dir, "README.md", "# migrations\n")
    result = cli(sqlite_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("dbledger: warning:")]
    copy = "a copy left by an editor or a tool? move it out of the migrations folder"
    never = "looks like a migration but will never run"
    assert warnings == [
        f"dbledger: warning: {migrations_dir / '001_a.sql.bak'}: {never}: {copy}",
        f"dbledger: warning: {migrations_dir / '002_b.SQL'}: {never}: rename it to 002_b.sql",
        f"dbledger: warning: {migrations_dir / '003_c.sql~'}: {never}: {copy}",
    ]
    verify = cli(sqlite_url, migrations_dir, "verify")
    assert verify.returncode == 1
    assert "3 problems, nothing was run:" in verify.stderr
    assert "README.md" not in verify.output


@pytest.mark.parametrize(
    ("name", "advice"),
    [
        ("V1__init.sql", "rename it to 1_init.sql"),
        ("001-add users.sql", "rename it to 001_add_users.sql"),
        (
            "1_init.up.sql",
            "one file holds both directions: put the SQL of the .up.sql and .down.sql files into "
            "1_init.sql under '-- migrate:up' and '-- migrate:down'",
        ),
        ("init.sql", "e.g. 005_add_index.sql"),
    ],
)
def test_a_misnamed_sql_file_is_refused_with_its_right_name(
    name: str, advice: str, sqlite_url: str, migrations_dir: Path
) -> None:
    # In dbledger's layout; with no layout set, V1__init.sql alone is read as Flyway's
    # (tests/test_layouts.py).
    write(migrations_dir, name, "SELECT 1;\n")
    result = cli(sqlite_url, migrations_dir, "status", env={"DBLEDGER_LAYOUT": "dbledger"})
    assert result.returncode == 2
    assert last_line(result) == (
        f"dbledger: error: {migrations_dir / name}: file name does not match <version>_<name>.sql "
        f"(version: digits; name: lower-case letters, digits and '_'): {advice}"
    )


# -- 16. SQLite paths ----------------------------------------------------------------------------


def test_a_sqlite_file_in_a_missing_folder(migrations_dir: Path, tmp_path: Path) -> None:
    write(migrations_dir, "001_t.sql", CREATE_T)
    url = f"sqlite:///{tmp_path / 'nodir' / 'x.db'}"
    result = cli(url, migrations_dir, "up")
    assert result.returncode == 2
    assert last_line(result) == (
        f"dbledger: error: cannot open {url}: directory '{tmp_path / 'nodir'}' does not exist; "
        "create it, or fix the path in the URL"
    )


@pytest.mark.parametrize("command", ["status", "drift", "verify"])
def test_reading_a_sqlite_file_that_does_not_exist_says_so(
    command: str, migrations_dir: Path, tmp_path: Path
) -> None:
    write(migrations_dir, "001_t.sql", CREATE_T)
    url = f"sqlite:///{tmp_path / 'later.db'}"
    result = cli(url, migrations_dir, command)
    assert result.returncode == 0, result.output
    assert (
        f"dbledger: note: {url} does not exist yet: 'dbledger up' would create it"
        in result.stderr.splitlines()
    )
    assert not (tmp_path / "later.db").exists()


# -- 19. a lost connection is not the file's fault -----------------------------------------------


def test_a_terminated_session_says_the_connection_was_lost(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_slow.sql", "CREATE TABLE slow (id integer);\nSELECT pg_sleep(30);\n")
    process = started(pg_url, migrations_dir, "up", until="applying 001_slow")
    for _ in range(100):
        killed = query(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'dbledger' AND query LIKE '%pg_sleep%'",
        )
        if killed:
            break
        time.sleep(0.1)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "the connection to the database was lost while it ran" in stderr
    assert "run the command again when the database is back (applied migrations never run twice)" in stderr
    assert "fix the file" not in stderr
    again = cli(pg_url, migrations_dir, "up", "--to", "0")
    assert "Traceback" not in again.stderr


# -- a corpus: nothing produces a traceback, --json always one document ------------------------

CORPUS: dict[str, tuple[list[str], dict[str, bytes]]] = {
    "unknown command": (["explode"], {}),
    "bad option value": (["up", "--to", "x"], {}),
    "negative lock timeout": (["up", "--lock-timeout", "-1"], {}),
    "down to a negative version": (["down", "--to", "-3"], {}),
    "baseline a missing version": (["baseline", "99"], {"001_a.sql": b"SELECT 1;\n"}),
    "url with a bad scheme": (["--database-url", "mysql://u:p@h/db", "status"], {}),
    "url with a bad port": (["--database-url", "postgresql://u:p@h:99999/db", "status"], {}),
    "url with garbage": (["--database-url", "postgresql://u:p@[zz/db", "status"], {}),
    "libpq string with a bad timeout": (["--database-url", "host=127.0.0.1 connect_timeout=x", "status"], {}),
    "binary file": (["up"], {"001_a.sql": bytes(range(256))}),
    "unknown section": (["up"], {"001_a.sql": b"-- migrate:sideways\nSELECT 1;\n"}),
    "bad option": (["up"], {"001_a.sql": b"-- migrate:up transaction:maybe\nSELECT 1;\n"}),
    "duplicate version": (["status"], {"001_a.sql": b"SELECT 1;\n", "1_b.sql": b"SELECT 2;\n"}),
    "a directory named like a migration": (["up"], {"001_a.sql/": b""}),
    "new with an empty name": (["new", ""], {}),
    "ledger table with a bad name": (["--ledger-table", "a.b.c", "status"], {}),
    "dump into a file that is a folder": (["dump", "."], {}),
}


@pytest.mark.parametrize("case", CORPUS.values(), ids=CORPUS.keys())
def test_no_bad_input_gives_a_traceback(case: tuple[list[str], dict[str, bytes]], tmp_path: Path) -> None:
    args, files = case
    folder = tmp_path / "migrations"
    folder.mkdir()
    for name, raw in files.items():
        if name.endswith("/"):
            (folder / name.rstrip("/")).mkdir()
        else:
            (folder / name).write_bytes(raw)
    base = ["--database-url", f"sqlite:///{tmp_path / 'app.db'}"] if "--database-url" not in args else []
    for json_flag in ([], ["--json"]):
        result = run_cli(*base, *args, *json_flag, cwd=tmp_path)
        assert result.returncode in (1, 2), result.output
        assert "Traceback" not in result.output
        assert re.match(r"dbledger( \w+)?: error: ", last_line(result)), result.output
        if json_flag:
            assert one_document(result)["ok"] is False


# -- 10. splitting around statements the parser rejects ------------------------------------------

AROUND_REJECTED = {
    "a semicolon in a comment before it": (
        "CREATE TABLE a (id int);\n-- step 2; the bad one\nCREATE TABLEX b (id int);\n",
        [("CREATE TABLE a (id int)", 1), ("CREATE TABLEX b (id int)", 3)],
    ),
    "BEGIN ATOMIC and strings around it": (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\n"
        "SELEC x;\nselect 'a;b';\n",
        [
            ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END", 1),
            ("SELEC x", 2),
            ("select 'a;b'", 3),
        ],
    ),
    "several, with quotes across lines": (
        "select 1;\nselect $$a;\nb$$;\nSELEC 3;\nselect 'x\n;y';\nPARSE ME;\nselect 5;\n",
        [
            ("select 1", 1),
            ("select $$a;\nb$$", 2),
            ("SELEC 3", 4),
            ("select 'x\n;y'", 5),
            ("PARSE ME", 7),
            ("select 5", 8),
        ],
    ),
    "a run of rejected statements, then a block": (
        "".join(f"SELEC {i} 'a;b';\n" for i in range(30))
        + "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\nselect 1;\n",
        [(f"SELEC {i} 'a;b'", i + 1) for i in range(30)]
        + [
            ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END", 31),
            ("select 1", 32),
        ],
    ),
}


@pytest.mark.parametrize("case", AROUND_REJECTED.values(), ids=AROUND_REJECTED.keys())
@pytest.mark.parametrize("window", [None, 7, 64])
def test_statements_around_a_rejected_one_keep_their_text_and_line(
    case: tuple[str, list[tuple[str, int]]], window: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbledger.dialects import for_name, postgres

    if window is not None:  # windows smaller than a statement: the same cut, read in pieces
        monkeypatch.setattr(postgres, "_WINDOW", window)
        monkeypatch.setattr(postgres, "_SCANNED_AFTER_RUN", window)
        monkeypatch.setattr(postgres, "_RUN", 2)
    sql, expected = case
    found = for_name("postgresql").split(sql, 1, Path("x.sql"))
    assert [(statement.sql, statement.line) for statement in found] == expected


def test_the_server_names_the_line_of_the_rejected_statement(pg_url: str, migrations_dir: Path) -> None:
    write(
        migrations_dir,
        "001_a.sql",
        "CREATE TABLE a (id int);\n-- step 2; the bad one\nCREATE TABLEX b (id int);\n",
    )
    result = cli(pg_url, migrations_dir, "up")
    assert result.returncode == 1
    assert "statement at line 3: CREATE TABLEX b (id int)" in result.stderr
    assert not table_exists(pg_url, "a")


# -- found in review: streams, signals while waiting, folders, names, secrets --------------------


def test_ctrl_c_while_waiting_for_a_sqlite_lock(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", CREATE_T)
    assert cli(sqlite_url, migrations_dir, "up").returncode == 0
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        process = started(sqlite_url, migrations_dir, "status", until="waiting for the lock of")
        process.send_signal(signal.SIGINT)
        # The holder keeps the lock until the finally below: a command that could not be
        # interrupted would wait out its 600 s lock timeout, and this would raise TimeoutExpired.
        _, stderr = process.communicate(timeout=60)
    finally:
        holder.close()
    assert process.returncode == 130
    assert stderr.splitlines()[-1].startswith("dbledger: error: interrupted by SIGINT: ")


@pytest.mark.parametrize(
    ("redirect", "code", "message"),
    [
        (
            ">/dev/full",
            1,
            "dbledger: error: cannot write the output: No space left on device; the command itself succeeded",
        ),
        (">&-", 0, None),
    ],
)
def test_stdout_that_cannot_be_written(
    redirect: str, code: int, message: str | None, sqlite_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_t.sql", CREATE_T)
    command = (
        f"{sys.executable} -m dbledger --database-url {sqlite_url} --dir {migrations_dir} status {redirect}"
    )
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    if message is not None:
        assert done.stderr.splitlines()[-1] == message


def test_a_deleted_working_folder(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f"cd {gone} && rmdir {gone} && {sys.executable} -m dbledger status --json"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "dbledger: error: the current folder no longer exists: cd into an existing folder and run "
        "the command again"
    )
    assert json.loads(done.stdout)["ok"] is False


def test_options_are_never_abbreviated(sqlite_url: str, migrations_dir: Path) -> None:
    result = cli(sqlite_url, migrations_dir, "status", "--jso")
    assert result.returncode == 2
    assert last_line(result) == "dbledger: error: unrecognized arguments: --jso"


def test_new_drops_accents_not_letters(migrations_dir: Path) -> None:
    result = run_cli("new", "Café Ünits", "--dir", str(migrations_dir), cwd=migrations_dir.parent)
    assert result.returncode == 0, result.output
    assert [p.name for p in migrations_dir.iterdir()] == ["001_cafe_units.sql"]


def test_a_project_run_from_a_subfolder_uses_the_projects_defaults(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.dbledger]\ndir = "db"\n', encoding="utf-8")
    (tmp_path / "db").mkdir()
    write(tmp_path / "db", "001_t.sql", CREATE_T)
    (tmp_path / "sub").mkdir()
    result = run_cli("up", cwd=tmp_path / "sub")
    assert result.returncode == 0, result.output
    assert (tmp_path / "dbledger.sqlite3").exists()  # the project's database, not a second one
    assert not (tmp_path / "sub" / "dbledger.sqlite3").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("directory", "cannot open {url}: it is a directory; give the database file's path"),
        ("text", "{url} is not a SQLite database (SQLITE_NOTADB): point the URL at the database file"),
    ],
)
def test_a_sqlite_path_that_is_not_a_database(make: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    if make == "directory":
        path.mkdir()
    else:
        path.write_text("hello\n", encoding="utf-8")
    (tmp_path / "migrations").mkdir()
    url = f"sqlite:///{path}"
    result = run_cli("--database-url", url, "status", cwd=tmp_path)
    assert result.returncode in (1, 2)
    assert last_line(result) == f"dbledger: error: {message.format(url=url)}"


def test_reading_a_sqlite_file_in_a_missing_folder_says_what_to_create(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    url = f"sqlite:///{tmp_path / 'nodir' / 'x.db'}"
    result = run_cli("--database-url", url, "status", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert (
        f"dbledger: note: {url} does not exist, nor does its folder '{tmp_path / 'nodir'}': create "
        "the folder, then 'dbledger up' creates the database"
    ) in result.stderr.splitlines()
