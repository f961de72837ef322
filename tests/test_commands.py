"""Every command `dbledger --help` lists, run from the outside as a user would, once with and once
without --json: exit codes, what reaches stdout and stderr, and that the README documents it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Result, query, run_cli, table_exists, write

README = Path(__file__).resolve().parent.parent / "README.md"

ITEMS = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);\n"
TAGS = "CREATE TABLE tags (id integer PRIMARY KEY);\n"

# The commands this file exercises; test_every_listed_command_is_exercised keeps it honest.
EXERCISED = {
    "up",
    "status",
    "verify",
    "new",
    "completion",
    "repair",
    "baseline",
    "down",
    "redo",
    "drift",
    "dump",
    "wait",
    "check",
    "lint",
    "rehearse",
    "init",
    "adopt",
}

JSON = pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])


def listed_commands() -> list[str]:
    """The sub-commands as `dbledger --help` prints them (one per line, indented four spaces)."""
    result = run_cli("--help", cwd=Path.cwd())
    assert result.returncode == 0, result.output
    return re.findall(r"^ {4}([a-z][a-z_-]*)(?: |$)", result.stdout, flags=re.MULTILINE)


def cli(url: str, folder: Path, as_json: bool, *args: str) -> Result:
    flags = ["--json"] if as_json else []
    return run_cli(*args, *flags, "--database-url", url, "--dir", str(folder), cwd=folder.parent)


def outcome(result: Result, as_json: bool, exit_code: int) -> dict[str, Any]:
    """Check the exit code and the shape of the output; return the JSON document ({} for humans)."""
    assert result.returncode == exit_code, result.output
    assert "Traceback" not in result.stderr
    if not as_json:
        if exit_code != 0:
            assert re.search(r"^dbledger( \w+)?: error: ", result.stderr, re.MULTILINE)
        with pytest.raises(json.JSONDecodeError):
            json.loads(result.stdout)
        return {}
    document = json.loads(result.stdout)  # exactly one document: trailing text would not parse
    assert isinstance(document, dict)
    assert document["ok"] is (exit_code == 0)
    if exit_code != 0:
        assert document["error"]["exit_code"] == exit_code
        assert document["error"]["message"]
        assert re.search(r"^dbledger( \w+)?: error: ", result.stderr, re.MULTILINE)
    return document


def ledger_names(url: str) -> list[str]:
    return [name for (name,) in query(url, "SELECT migration_name FROM schema_migrations ORDER BY id")]


# -- the list of commands ---------------------------------------------------------------------


def test_help_lists_the_documented_commands() -> None:
    commands = listed_commands()
    assert {"up", "status", "verify", "new", "repair", "baseline"} <= set(commands)


def test_every_listed_command_is_exercised() -> None:
    missing = set(listed_commands()) - EXERCISED
    assert not missing, f"commands without a test in {Path(__file__).name}: {sorted(missing)}"


@pytest.mark.parametrize("command", sorted(EXERCISED))
def test_every_command_has_help_and_accepts_json(command: str, tmp_path: Path) -> None:
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert f"dbledger {command}" in result.stdout
    assert "--json" in result.stdout


def test_readme_documents_every_command() -> None:
    if not README.exists():
        pytest.skip("README.md is not written yet")
    text = README.read_text(encoding="utf-8")
    undocumented = [c for c in listed_commands() if f"dbledger {c}" not in text]
    assert not undocumented, f"README.md does not mention: {undocumented}"


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("upp", cwd=tmp_path)
    assert result.returncode == 2
    assert "upp" in result.stderr


# -- one test per command ---------------------------------------------------------------------


@JSON
def test_up(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    write(migrations_dir, "002_create_tags.sql", TAGS)

    result = cli(db_url, migrations_dir, as_json, "up")

    document = outcome(result, as_json, 0)
    assert "applying 001_create_items" in result.stderr
    assert "applying 002_create_tags" in result.stderr
    if as_json:
        assert [a["name"] for a in document["applied"]] == ["001_create_items", "002_create_tags"]
        assert all(isinstance(a["execution_time_ms"], int) for a in document["applied"])
    else:
        assert "applied 2 migration(s)" in result.stdout
    assert ledger_names(db_url) == ["001_create_items", "002_create_tags"]

    write(migrations_dir, "003_broken.sql", "INSERT INTO nope VALUES (1);\n")
    failed = cli(db_url, migrations_dir, as_json, "up")

    document = outcome(failed, as_json, 1)
    assert "003_broken" in failed.stderr
    if as_json:
        assert document["error"]["migration"] == "003_broken"
        assert document["error"]["line"] == 1


@JSON
def test_status(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    run_cli("up", "--database-url", db_url, "--dir", str(migrations_dir), cwd=migrations_dir.parent)
    write(migrations_dir, "002_create_tags.sql", TAGS)

    result = cli(db_url, migrations_dir, as_json, "status")

    document = outcome(result, as_json, 0)
    if as_json:
        assert [a["name"] for a in document["applied"]] == ["001_create_items"]
        assert [p["name"] for p in document["pending"]] == ["002_create_tags"]
        assert document["failed"] == document["modified"] == document["missing"] == []
    else:
        assert any("001_create_items" in line and "applied" in line for line in result.stdout.splitlines())
        assert any("002_create_tags" in line and "pending" in line for line in result.stdout.splitlines())
    assert not table_exists(db_url, "tags")  # status runs nothing

    write(migrations_dir, "003_Bad-Name.sql", TAGS)
    failed = cli(db_url, migrations_dir, as_json, "status")

    document = outcome(failed, as_json, 2)
    assert "003_Bad-Name.sql" in failed.stderr


@JSON
def test_wait(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    pending = cli(db_url, migrations_dir, as_json, "wait", "--timeout", "1s")
    document = outcome(pending, as_json, 1)
    if as_json:
        assert document["error"]["type"] == "NotMigrated"
        assert "001_create_items" in document["error"]["message"]
    run_cli("up", "--database-url", db_url, "--dir", str(migrations_dir), cwd=migrations_dir.parent)
    ready = cli(db_url, migrations_dir, as_json, "wait")
    document = outcome(ready, as_json, 0)
    if as_json:
        assert document["version"] == 1
        assert document["pending"] == []
    else:
        assert "ready: every migration is applied (version 1)" in ready.stdout


@JSON
def test_verify(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    run_cli("up", "--database-url", db_url, "--dir", str(migrations_dir), cwd=migrations_dir.parent)

    result = cli(db_url, migrations_dir, as_json, "verify")

    document = outcome(result, as_json, 0)
    if as_json:
        assert [a["name"] for a in document["applied"]] == ["001_create_items"]
    else:
        assert "ok: 1 applied migration(s) match their files" in result.stdout

    write(migrations_dir, "001_create_items.sql", ITEMS.replace("name text", "title text"))
    failed = cli(db_url, migrations_dir, as_json, "verify")

    document = outcome(failed, as_json, 1)
    assert "001_create_items" in failed.stderr
    assert "was modified after it was applied" in failed.stderr
    if as_json:
        assert any("001_create_items" in p for p in document["error"]["problems"])


def created_path(result: Result, as_json: bool) -> Path:
    document = outcome(result, as_json, 0)
    return Path(document["path"]) if as_json else Path(result.stdout.split("created ", 1)[1].strip())


@JSON
def test_new(as_json: bool, tmp_path: Path) -> None:
    flags = ["--json"] if as_json else []
    folder = tmp_path / "migrations"
    write_dir = tmp_path / "db"
    write_dir.mkdir()
    write(write_dir, "007_existing.sql", ITEMS)

    default = created_path(run_cli("new", "create_users", *flags, cwd=tmp_path), as_json)
    numbered = created_path(run_cli("new", "add_users_email", *flags, "--dir", "db", cwd=tmp_path), as_json)

    assert default == folder / "001_create_users.sql"  # default directory ./migrations
    assert numbered == write_dir / "008_add_users_email.sql"  # the next version after the newest
    text = default.read_text(encoding="utf-8")
    assert "-- migrate:up" in text
    assert "-- migrate:down" in text

    # An untouched template is an empty up section: `up` refuses it, naming the file.
    refused = run_cli("up", *flags, "--database-url", f"sqlite:///{tmp_path / 'app.db'}", cwd=tmp_path)
    outcome(refused, as_json, 2)
    assert "001_create_users.sql" in refused.stderr
    assert not (tmp_path / "app.db").exists()

    spelt = created_path(run_cli("new", "Add-Users", *flags, cwd=tmp_path), as_json)
    assert spelt == folder / "002_add_users.sql"  # what a person types becomes a file name
    bad = run_cli("new", "!!", *flags, cwd=tmp_path)
    outcome(bad, as_json, 2)
    assert "invalid migration name '!!'" in bad.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["001_create_users.sql", "002_add_users.sql"]


@JSON
def test_init(as_json: bool, tmp_path: Path) -> None:
    flags = ["--json"] if as_json else []
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\n')
    result = run_cli("init", *flags, "--dir", "db/migrations", "--layout", "golang-migrate", cwd=tmp_path)
    document = outcome(result, as_json, 0)
    if as_json:
        assert document["written"] == [str(tmp_path / "pyproject.toml"), str(tmp_path / "db" / "migrations")]
    text = (tmp_path / "pyproject.toml").read_text()
    assert text.startswith('[project]\nname = "app"\n\n[tool.dbledger]\n')
    assert 'dir = "db/migrations"\nlayout = "golang-migrate"\n' in text
    created = created_path(run_cli("new", "create_users", *flags, cwd=tmp_path), as_json)
    assert created == tmp_path / "db" / "migrations" / "000001_create_users.up.sql"
    assert (tmp_path / "db" / "migrations" / "000001_create_users.down.sql").exists()
    again = run_cli("init", *flags, cwd=tmp_path)
    outcome(again, as_json, 2)
    assert (
        f"{tmp_path / 'pyproject.toml'} has a [tool.dbledger] section already: edit it there" in again.stderr
    )


@JSON
def test_adopt(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "20240101000001_create_items.sql", ITEMS)
    write(migrations_dir, "20240101000002_create_tags.sql", TAGS)
    query(db_url, ITEMS)
    query(db_url, "CREATE TABLE __diesel_schema_migrations (version varchar(50) PRIMARY KEY)")
    query(db_url, "INSERT INTO __diesel_schema_migrations VALUES ('20240101000001')")
    result = cli(db_url, migrations_dir, as_json, "adopt", "--from", "diesel")
    document = outcome(result, as_json, 0)
    if as_json:
        assert document["adopted"] == ["20240101000001_create_items"]
        assert document["pending"] == ["20240101000002_create_tags"]
    assert ledger_names(db_url) == ["20240101000001_create_items"]
    applied = cli(db_url, migrations_dir, as_json, "up")
    outcome(applied, as_json, 0)
    assert ledger_names(db_url) == ["20240101000001_create_items", "20240101000002_create_tags"]
    unknown = cli(db_url, migrations_dir, as_json, "adopt", "--from", "liquibase")
    outcome(unknown, as_json, 2)
    assert "invalid choice: 'liquibase'" in unknown.stderr


def test_new_twice_before_filling_in_the_first(tmp_path: Path) -> None:
    """Writing two migrations in a row is ordinary: the first, still an empty template, must not
    stop `new` from numbering the second (`new` applies nothing, so emptiness is no danger)."""
    first = run_cli("new", "create_users", cwd=tmp_path)
    assert first.returncode == 0, first.output

    second = run_cli("new", "add_users_email", cwd=tmp_path)

    assert second.returncode == 0, second.output
    assert sorted(p.name for p in (tmp_path / "migrations").iterdir()) == [
        "001_create_users.sql",
        "002_add_users_email.sql",
    ]


@JSON
def test_repair(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    run_cli("up", "--database-url", db_url, "--dir", str(migrations_dir), cwd=migrations_dir.parent)
    write(migrations_dir, "001_create_items.sql", "-- reformatted\n" + ITEMS)

    result = cli(db_url, migrations_dir, as_json, "repair")

    document = outcome(result, as_json, 0)
    if as_json:
        [repaired] = document["repaired"]
        assert repaired["name"] == "001_create_items"
        assert repaired["action"] == "checksum accepted"
    else:
        assert "001_create_items: checksum accepted" in result.stdout
    verified = run_cli(
        "verify", "--database-url", db_url, "--dir", str(migrations_dir), cwd=migrations_dir.parent
    )
    assert verified.returncode == 0, verified.output

    # A file not written yet is pending, not a fault: repair has nothing to do with it.
    write(migrations_dir, "002_empty.sql", "-- nothing yet\n")
    again = cli(db_url, migrations_dir, as_json, "repair")
    document = outcome(again, as_json, 0)
    assert document.get("repaired", []) == []

    # A record whose file is gone is kept unless asked; the answer says how to drop it.
    (migrations_dir / "001_create_items.sql").unlink()
    kept = cli(db_url, migrations_dir, as_json, "repair")
    outcome(kept, as_json, 0)
    assert (
        "dbledger: warning: kept the records of 001_create_items, whose files are missing: restore "
        "the files, or run 'dbledger repair --forget-missing' to drop the records"
    ) in kept.stderr.splitlines()
    assert ledger_names(db_url) == ["001_create_items"]


def test_completion_scripts_complete_commands_and_options(tmp_path: Path) -> None:
    bash = run_cli("completion", "bash", cwd=tmp_path)
    assert bash.returncode == 0, bash.output
    script = tmp_path / "dbledger.bash"
    script.write_text(bash.stdout, encoding="utf-8")

    def complete(*words: str) -> list[str]:
        line = " ".join(["dbledger", *words])
        shell = (
            f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words)}; _dbledger; "
            'printf "%s\\n" "${COMPREPLY[@]}"'
        )
        done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, check=True)
        return done.stdout.split()

    assert complete("st") == ["status"]
    assert "--dry-run" in complete("up", "--d")
    assert "--forget-missing" in complete("repair", "--f")
    assert "--dry-run" not in complete("status", "--d")
    assert complete("--color", "a") == ["auto", "always"]  # an option's own values
    assert complete("--dir", "status", "--dr") == []  # 'status' was --dir's value, not the command
    assert complete("completion", "z") == ["zsh"]
    zsh = run_cli("completion", "zsh", cwd=tmp_path)
    assert zsh.returncode == 0, zsh.output
    assert zsh.stdout.startswith("#compdef dbledger\n")
    assert "complete -o default -F _dbledger dbledger" in zsh.stdout


@JSON
def test_baseline(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    write(migrations_dir, "002_create_tags.sql", TAGS)

    result = cli(db_url, migrations_dir, as_json, "baseline", "1")

    document = outcome(result, as_json, 0)
    if as_json:
        assert document["baselined"] == ["001_create_items"]
    else:
        assert "001_create_items" in result.stdout
        assert "002_create_tags" not in result.stdout
    assert ledger_names(db_url) == ["001_create_items"]
    assert not table_exists(db_url, "items")

    failed = cli(db_url, migrations_dir, as_json, "baseline", "3")

    outcome(failed, as_json, 2)
    assert "version 3" in failed.stderr
    assert ledger_names(db_url) == ["001_create_items"]


REVERSIBLE = (
    "-- migrate:up\nCREATE TABLE items (id integer PRIMARY KEY);\n-- migrate:down\nDROP TABLE items;\n"
)


@JSON
def test_down(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", REVERSIBLE)
    write(migrations_dir, "002_create_tags.sql", TAGS)  # no down section
    run_cli("up", "--database-url", db_url, "--dir", str(migrations_dir), cwd=migrations_dir.parent)

    refused = cli(db_url, migrations_dir, as_json, "down")

    outcome(refused, as_json, 1)
    assert "migration '002_create_tags' has no down section" in refused.stderr
    assert ledger_names(db_url) == ["001_create_items", "002_create_tags"]

    write(migrations_dir, "002_create_tags.sql", TAGS)
    result = cli(db_url, migrations_dir, as_json, "down", "--to", "1")
    outcome(result, as_json, 1)  # still no down section for 002

    (migrations_dir / "002_create_tags.sql").unlink()
    query(db_url, "DELETE FROM schema_migrations WHERE migration_name = '002_create_tags'")
    result = cli(db_url, migrations_dir, as_json, "down")
    document = outcome(result, as_json, 0)
    if as_json:
        assert [r["name"] for r in document["rolled_back"]] == ["001_create_items"]
    else:
        assert "rolled back 1 migration(s)" in result.stdout
    assert not table_exists(db_url, "items")
    assert ledger_names(db_url) == []


@JSON
def test_redo(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", REVERSIBLE)
    empty = cli(db_url, migrations_dir, as_json, "redo")
    outcome(empty, as_json, 0)  # no ledger yet: nothing to roll back, then nothing to apply
    run_cli("up", "--database-url", db_url, "--dir", str(migrations_dir), cwd=migrations_dir.parent)
    query(db_url, "INSERT INTO items VALUES (1)")

    result = cli(db_url, migrations_dir, as_json, "redo")

    document = outcome(result, as_json, 0)
    if as_json:
        assert [a["name"] for a in document["applied"]] == ["001_create_items"]
    else:
        assert "redid 001_create_items" in result.stdout
    assert query(db_url, "SELECT count(*) FROM items") == [(0,)]  # dropped and created again


@JSON
def test_drift(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    run_cli("up", "--database-url", db_url, "--dir", str(migrations_dir), cwd=migrations_dir.parent)

    clean = cli(db_url, migrations_dir, as_json, "drift")
    document = outcome(clean, as_json, 0)
    if as_json:
        assert document["drifted"] is False

    query(db_url, "CREATE TABLE extra (x integer)")
    drifted = cli(db_url, migrations_dir, as_json, "drift")
    document = outcome(drifted, as_json, 1)
    if as_json:
        assert [d["message"] for d in document["differences"]] == ["extra table extra"]
    else:
        assert drifted.stdout.strip() == "extra table extra"


@JSON
def test_dump(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    run_cli("up", "--database-url", db_url, "--dir", str(migrations_dir), cwd=migrations_dir.parent)

    result = cli(db_url, migrations_dir, as_json, "dump")

    document = outcome(result, as_json, 0)
    text = document["sql"] if as_json else result.stdout
    assert "items" in text
    assert "schema_migrations" not in text


@JSON
def test_lint(as_json: bool, db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_items.sql", ITEMS)
    lint = ["lint"]
    if db_url.startswith("sqlite"):  # the rules are PostgreSQL's: nothing is linted unless asked
        skipped = cli(db_url, migrations_dir, as_json, "lint")
        document = outcome(skipped, as_json, 0)
        if as_json:
            assert (document["files"], document["findings"]) == ([], [])
            assert "the configured database is SQLite" in document["skipped"]
        else:
            assert skipped.stdout.startswith("lint: nothing linted: the configured database is SQLite")
        lint = ["lint", "--no-database"]

    clean = cli(db_url, migrations_dir, as_json, *lint)

    document = outcome(clean, as_json, 0)
    if as_json:
        assert (document["findings"], document["files"]) == ([], ["migrations/001_create_items.sql"])
    else:
        assert clean.stdout == "lint: no findings in 1 file(s)\n"

    write(migrations_dir, "002_drop_tags.sql", "DROP TABLE tags;\n")
    found = cli(db_url, migrations_dir, as_json, *lint)
    document = outcome(found, as_json, 1)
    line = (
        "migrations/002_drop_tags.sql:1:1 ban-drop-table error DROP TABLE tags deletes the table and its rows"
    )
    if as_json:
        assert [(f["path"], f["rule"]) for f in document["findings"]] == [
            ("migrations/002_drop_tags.sql", "ban-drop-table")
        ]
    else:
        assert found.stdout.splitlines()[0] == line


def test_the_startup_path_imports_no_driver_parser_or_optional_feature() -> None:
    """Every replica imports dbledger at every start: drivers, the parser, rich and the dry-run,
    drift and backup modules load only when a command needs them."""
    heavy = [
        "psycopg",
        "pglast",
        "rich",
        "dbledger.dryrun",
        "dbledger.schemadrift",
        "dbledger.schema",
        "dbledger.backup",
    ]
    code = f"import sys, dbledger, dbledger.cli; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
