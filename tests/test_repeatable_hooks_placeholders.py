"""Repeatable migrations, hook files and application hooks, and placeholders, on both databases
(docs/repeatable-and-hooks.md, docs/placeholders.md): what runs, when, in which transaction,
what the ledger and its history keep, and every bad input refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dbledger
from dbledger.contracts import HookCall
from tests.helpers import Result, query, run_cli, table_exists, write

T = "CREATE TABLE t (id integer);\n"


def cli(url: str, folder: Path, *args: str) -> Result:
    return run_cli("--database-url", url, "--dir", str(folder), *args, cwd=folder.parent)


def history(url: str, name: str) -> list[tuple[str, str | None]]:
    rows = query(
        url,
        "SELECT action, detail FROM schema_migrations_history WHERE migration_name = %s ORDER BY id",
        (name,),
    )
    return [(action, detail) for action, detail in rows]


def view_columns(url: str) -> list[str]:
    if url.startswith("sqlite"):
        return [name for (_, name, *_) in query(url, "PRAGMA table_info(v)")]
    rows = query(
        url, "SELECT attname FROM pg_attribute WHERE attrelid = 'v'::regclass AND attnum > 0 ORDER BY attnum"
    )
    return [name for (name,) in rows]


def view(columns: str) -> str:
    return f"DROP VIEW IF EXISTS v;\nCREATE VIEW v AS SELECT id, {columns} FROM t;\n"


# -- repeatable migrations ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["dbledger", "flyway"])
def test_a_repeatable_migration_runs_after_the_versioned_ones_and_again_only_when_changed(
    layout: str, db_url: str, migrations_dir: Path
) -> None:
    if layout == "flyway":
        write(migrations_dir, "V1__t.sql", T)
        path, name = migrations_dir / "R__views.sql", "R__views"
    else:
        write(migrations_dir, "001_t.sql", T)
        (migrations_dir / "repeatable").mkdir()
        path, name = migrations_dir / "repeatable" / "views.sql", "repeatable/views"
    path.write_text(view("1 AS one"))
    first = cli(db_url, migrations_dir, "up")
    assert first.returncode == 0, first.output
    assert view_columns(db_url) == ["id", "one"]
    assert cli(db_url, migrations_dir, "up").stdout.startswith("nothing to do")

    path.write_text(view("2 AS two"))
    status = json.loads(cli(db_url, migrations_dir, "status", "--json").stdout)
    assert [(r["name"], r["state"]) for r in status["repeatable"]] == [(name, "pending")]
    assert status["pending"] == []  # the versioned ones are all applied
    again = cli(db_url, migrations_dir, "up")
    assert again.returncode == 0, again.output
    assert f"applying {name}" in again.stderr
    assert view_columns(db_url) == ["id", "two"]
    assert cli(db_url, migrations_dir, "up").stdout.startswith("nothing to do")
    assert [action for action, _ in history(db_url, name)] == ["apply", "apply"]
    assert query(
        db_url, "SELECT version, state FROM schema_migrations WHERE migration_name = %s", (name,)
    ) == [("", "applied")]
    assert cli(db_url, migrations_dir, "verify").returncode == 0


def test_repeatables_run_in_name_order_each_in_its_own_transaction(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", T)
    (migrations_dir / "repeatable").mkdir()
    write(
        migrations_dir / "repeatable", "b_broken.sql", "INSERT INTO t VALUES (2);\nSELECT * FROM nowhere;\n"
    )
    write(migrations_dir / "repeatable", "a_fill.sql", "INSERT INTO t VALUES (1);\n")
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 1
    assert "migration 'repeatable/b_broken' failed" in result.stderr
    assert query(db_url, "SELECT id FROM t") == [(1,)]  # a_fill committed; b_broken left nothing
    states = dict(query(db_url, "SELECT migration_name, state FROM schema_migrations"))
    assert states == {"001_t": "applied", "repeatable/a_fill": "applied", "repeatable/b_broken": "failed"}
    write(migrations_dir / "repeatable", "b_broken.sql", "INSERT INTO t VALUES (2);\n")
    assert cli(db_url, migrations_dir, "up").returncode == 0
    assert sorted(query(db_url, "SELECT id FROM t")) == [(1,), (2,)]


def test_the_dry_run_lists_a_changed_repeatable_and_changes_nothing(
    sqlite_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_t.sql", T)
    (migrations_dir / "repeatable").mkdir()
    write(migrations_dir / "repeatable", "views.sql", view("1 AS one"))
    assert cli(sqlite_url, migrations_dir, "up").returncode == 0
    write(migrations_dir / "repeatable", "views.sql", view("2 AS two"))
    dry = cli(sqlite_url, migrations_dir, "up", "--dry-run")
    assert dry.returncode == 0, dry.output
    assert "-- repeatable/views (up, in one transaction)" in dry.stdout
    assert view_columns(sqlite_url) == ["id", "one"]


def test_a_repeatable_migration_with_a_down_section_is_refused(sqlite_url: str, migrations_dir: Path) -> None:
    (migrations_dir / "repeatable").mkdir()
    write(migrations_dir / "repeatable", "v.sql", "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;\n")
    result = cli(sqlite_url, migrations_dir, "up")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"dbledger: error: {migrations_dir / 'repeatable' / 'v.sql'}: a repeatable migration has no down "
        "section: it runs again whenever it changes; remove '-- migrate:down' and what follows"
    )


def test_drift_replay_includes_the_repeatables_as_they_ran(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", T)
    (migrations_dir / "repeatable").mkdir()
    write(
        migrations_dir / "repeatable",
        "views.sql",
        "CREATE OR REPLACE VIEW v AS SELECT id, 1 AS one FROM t;\n",
    )
    assert cli(pg_url, migrations_dir, "up").returncode == 0
    drift = cli(pg_url, migrations_dir, "drift", "--replay")
    assert drift.returncode == 0, drift.output


# -- hooks --------------------------------------------------------------------------------------


def hook_folder(folder: Path) -> None:
    write(folder, "001_t.sql", T)
    write(folder, "002_u.sql", "CREATE TABLE u (id integer);\n")
    write(
        folder,
        "before-all.sql",
        "CREATE TABLE IF NOT EXISTS runs (what text);\nINSERT INTO runs VALUES ('before-all');\n",
    )
    write(folder, "after-each.sql", "INSERT INTO runs VALUES ('after-each');\n")
    write(folder, "after-all.sql", "INSERT INTO runs VALUES ('after-all');\n")


def test_hook_files_run_around_the_migrations_and_are_recorded(db_url: str, migrations_dir: Path) -> None:
    hook_folder(migrations_dir)
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert [what for (what,) in query(db_url, "SELECT what FROM runs")] == [
        "before-all",
        "after-each",
        "after-each",
        "after-all",
    ]
    hooks = query(
        db_url,
        "SELECT migration_name, detail FROM schema_migrations_history WHERE action = 'hook' ORDER BY id",
    )
    assert [(name, detail.split(":")[0]) for name, detail in hooks] == [
        (None, "before-all"),
        ("001_t", "after-each"),
        ("002_u", "after-each"),
        (None, "after-all"),
    ]
    assert cli(db_url, migrations_dir, "up").returncode == 0
    assert query(db_url, "SELECT count(*) FROM runs") == [(4,)]  # nothing to do: no hook ran


def test_a_failing_after_each_hook_fails_its_migration_and_leaves_nothing(
    db_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_t.sql", T)
    write(migrations_dir, "after-each.sql", "INSERT INTO nowhere VALUES (1);\n")
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 1
    assert "migration '001_t' failed" in result.stderr
    assert "the after-each hook (after-each.sql) failed:" in result.stderr
    assert not table_exists(db_url, "t")
    assert query(db_url, "SELECT state FROM schema_migrations WHERE migration_name = '001_t'") == [
        ("failed",)
    ]


def test_the_dry_run_says_which_hooks_run(sqlite_url: str, migrations_dir: Path) -> None:
    hook_folder(migrations_dir)
    dry = cli(sqlite_url, migrations_dir, "up", "--dry-run")
    assert (
        "-- hook before-all: before-all.sql runs before the first migration, in its own transaction"
        in dry.stdout
    )
    assert (
        "-- hook after-each: after-each.sql runs after each migration's statements, in its transaction"
        in dry.stdout
    )
    assert not table_exists(sqlite_url, "runs")


def test_flyways_callback_names_are_hooks(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "V1__t.sql", T)
    write(migrations_dir, "afterMigrate.sql", "CREATE TABLE done (id integer);\n")
    assert cli(sqlite_url, migrations_dir, "up").returncode == 0
    assert table_exists(sqlite_url, "done")


def test_two_files_for_one_hook_are_refused(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", T)
    write(migrations_dir, "after-all.sql", "SELECT 1;\n")
    write(migrations_dir, "afterMigrate.sql", "SELECT 1;\n")
    result = cli(sqlite_url, migrations_dir, "up")
    assert result.returncode == 2
    assert "a second after-all hook, beside after-all.sql: keep one of them" in result.stderr


def test_application_hooks_run_in_each_migrations_transaction(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", T)
    write(migrations_dir, "002_u.sql", "CREATE TABLE u (id integer);\n")
    calls: list[tuple[str, str | None]] = []

    def grant(call: HookCall) -> None:
        calls.append((call.event, call.migration))
        if call.event == "after-each" and call.migration == "002_u":
            call.execute("INSERT INTO u VALUES (7)")

    dbledger.migrate(db_url, migrations_dir, hooks={"after-each": grant, "before-all": grant})
    assert calls == [("before-all", None), ("after-each", "001_t"), ("after-each", "002_u")]
    assert query(db_url, "SELECT id FROM u") == [(7,)]
    with pytest.raises(dbledger.UsageError, match="unknown hook event 'after_each'"):
        dbledger.migrate(db_url, migrations_dir, hooks={"after_each": grant})


# -- placeholders -------------------------------------------------------------------------------


def project(tmp_path: Path, placeholders: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        f"[tool.dbledger]\ndir = 'migrations'\n\n[tool.dbledger.placeholders]\n{placeholders}"
    )
    return tmp_path


def in_project(url: str, where: Path, *args: str) -> Result:
    return run_cli("--database-url", url, *args, cwd=where)


def test_placeholders_are_quoted_as_identifiers_and_literals(
    db_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    where = project(
        tmp_path,
        'owner_table = { identifier = "Big \\"Owners\\"" }\n'
        'note = "it\'s; DROP TABLE x; --"\n'
        'admin_password = "hunter2"\n',
    )
    write(
        migrations_dir,
        "001_t.sql",
        "CREATE TABLE ${owner_table} (note text, secret text);\n"
        "INSERT INTO ${owner_table} VALUES (${note}, ${admin_password});\n"
        "-- ${unknown} in a comment is text\n"
        "INSERT INTO ${owner_table} VALUES ('${kept} in a string', NULL);\n",
    )
    result = in_project(db_url, where, "up")
    assert result.returncode == 0, result.output
    assert query(db_url, 'SELECT note FROM "Big ""Owners"""') == [
        ("it's; DROP TABLE x; --",),
        ("${kept} in a string",),
    ]
    [(detail,)] = query(db_url, "SELECT detail FROM schema_migrations_history WHERE action = 'apply'")
    assert (
        detail == "placeholders: admin_password=***, note='it''s; DROP TABLE x; --', "
        'owner_table="Big ""Owners"""'
    )
    assert "hunter2" not in result.output
    # The checksum is of the file as written.
    import hashlib

    [(recorded,)] = query(db_url, "SELECT checksum FROM schema_migrations")
    assert recorded == hashlib.sha256((migrations_dir / "001_t.sql").read_bytes()).hexdigest()


def test_an_unknown_placeholder_is_refused_naming_its_line(
    db_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    where = project(tmp_path, 'schema_name = { identifier = "app" }\n')
    write(
        migrations_dir,
        "001_t.sql",
        "CREATE TABLE t (id integer);\nCREATE TABLE ${scheme_name}.u (id integer);\n",
    )
    result = in_project(db_url, where, "up")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"dbledger: error: {migrations_dir / '001_t.sql'}: line 2: unknown placeholder ${{scheme_name}} "
        "(known: schema_name): define it under [tool.dbledger.placeholders], e.g. "
        'scheme_name = { identifier = "..." } or scheme_name = "a literal"'
    )
    assert not table_exists(db_url, "t")


def test_a_placeholder_with_none_configured_is_refused_not_sent(
    sqlite_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_t.sql", "CREATE TABLE ${prefix}_users (id integer);\n")
    result = cli(sqlite_url, migrations_dir, "up")
    assert result.returncode == 2
    assert "line 1: unknown placeholder ${prefix} (known: none are configured)" in result.stderr
    assert not table_exists(sqlite_url, "schema_migrations")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "x = 3\n",
            'placeholder \'x\' must be a string (a literal) or { identifier = "..." } or { literal = "..." }',
        ),
        ('x = { ident = "a" }\n', "placeholder 'x' must be a string"),
        ("x = { identifier = 1 }\n", "placeholder 'x': its identifier must be a string, not 1"),
    ],
)
def test_a_malformed_placeholder_entry_is_a_usage_error(
    entry: str, message: str, sqlite_url: str, tmp_path: Path
) -> None:
    where = project(tmp_path, entry)
    (tmp_path / "migrations").mkdir()
    result = in_project(sqlite_url, where, "status")
    assert result.returncode == 2
    assert message in result.stderr


# -- the service's audit function -----------------------------------------------------------------


def test_the_services_audit_function_is_reapplied_once_and_only_once_when_changed(
    pg_url: str, tmp_path: Path
) -> None:
    import shutil
    import subprocess
    import sys

    from connections_service import MIGRATIONS

    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    name = "repeatable/log_platform_connection_changes"
    assert cli(pg_url, folder, "up").returncode == 0
    assert [action for action, _ in history(pg_url, name)] == ["apply"]

    function = folder / "repeatable" / "log_platform_connection_changes.sql"
    function.write_text(
        function.read_text().replace("'platform_connection_deleted'", "'platform_connection_removed'")
    )
    # Four replicas start at once: one re-applies the function, the others find nothing to do.
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "dbledger", "--database-url", pg_url, "--dir", str(folder), "up"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], outcomes
    assert [action for action, _ in history(pg_url, name)] == ["apply", "apply"]
    assert sum(f"applied  {name}" in err for _, err in outcomes) == 1

    query(pg_url, "INSERT INTO organizations (id, name) VALUES ('org_1', 'Org')")
    query(
        pg_url,
        "INSERT INTO platform_connections (id, organization_id, platform_type, platform_user_id,"
        " display_name, status) VALUES ('pc_1', 'org_1', 'google', 'u1', 'U', 'active')",
    )
    query(pg_url, "DELETE FROM platform_connections WHERE id = 'pc_1'")
    events = {e for (e,) in query(pg_url, "SELECT event_type FROM audit_logs")}
    assert events == {"platform_connection_created", "platform_connection_removed"}


def test_placeholders_inside_e_strings_nested_comments_and_dollar_bodies_stay_text(
    pg_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    where = project(tmp_path, 'v = "x\'); DROP TABLE t; --"\n')
    write(
        migrations_dir,
        "001_t.sql",
        "CREATE TABLE t (note text);\n"
        "INSERT INTO t VALUES (E'it\\'s ${v}');\n"
        "/* outer /* inner ${v} */ still a comment ${v} */\n"
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT '${v}' $$;\n"
        "INSERT INTO t VALUES (${v});\n",
    )
    result = in_project(pg_url, where, "up")
    assert result.returncode == 0, result.output
    assert query(pg_url, "SELECT note FROM t ORDER BY note") == [("it's ${v}",), ("x'); DROP TABLE t; --",)]
    assert query(pg_url, "SELECT f()") == [("${v}",)]


def test_a_secret_placeholder_is_masked_in_errors(
    sqlite_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    where = project(tmp_path, 'api_token = "tok-3f9a-77c1-secret"\n')
    write(migrations_dir, "001_t.sql", "INSERT INTO nowhere VALUES (${api_token});\n")
    result = in_project(sqlite_url, where, "up", "-v")
    assert result.returncode == 1
    assert "tok-3f9a-77c1-secret" not in result.output
    assert "***" in result.stderr
    assert not any(
        "tok-3f9a-77c1-secret" in str(cell)
        for row in query(sqlite_url, "SELECT * FROM schema_migrations_history")
        for cell in row
    )


def test_a_dirty_repeatable_migration_blocks_up_until_repaired(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", T)
    (migrations_dir / "repeatable").mkdir()
    write(
        migrations_dir / "repeatable",
        "index.sql",
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n",
    )
    assert cli(pg_url, migrations_dir, "up").returncode == 0
    query(pg_url, "UPDATE schema_migrations SET state = 'dirty' WHERE migration_name = 'repeatable/index'")
    write(
        migrations_dir / "repeatable",
        "index.sql",
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n",
    )
    refused = cli(pg_url, migrations_dir, "up")
    assert refused.returncode == 1
    assert "migration 'repeatable/index' ran outside a transaction and did not finish" in refused.stderr
    assert cli(pg_url, migrations_dir, "repair").returncode == 0
    assert cli(pg_url, migrations_dir, "up").returncode == 0


def test_a_hook_marked_transaction_false_is_refused(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", T)
    write(migrations_dir, "after-all.sql", "-- migrate:up transaction:false\nVACUUM;\n")
    result = cli(sqlite_url, migrations_dir, "up")
    assert result.returncode == 2
    assert (
        "a hook runs in a transaction (its migration's, or its own): remove transaction:false"
        in result.stderr
    )


def test_wait_and_verify_strict_count_a_pending_repeatable(sqlite_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_t.sql", T)
    (migrations_dir / "repeatable").mkdir()
    write(migrations_dir / "repeatable", "views.sql", view("1 AS one"))
    assert cli(sqlite_url, migrations_dir, "up").returncode == 0
    write(migrations_dir / "repeatable", "views.sql", view("2 AS two"))
    strict = cli(sqlite_url, migrations_dir, "verify", "--strict")
    assert strict.returncode == 1
    assert "repeatable migration 'repeatable/views' is pending" in strict.stderr
    waited = cli(sqlite_url, migrations_dir, "wait", "--timeout", "1")
    assert waited.returncode == 1
    assert "repeatable/views" in waited.stderr
