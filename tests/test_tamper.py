"""Tamper evidence: every history row is chained to the one before it by SHA-256, and every
ledger row must be what its newest history row recorded. ``verify`` names what was edited,
deleted or reordered behind dbledger's back; on PostgreSQL the migrating role can be limited to
inserting into the history, as docs/design.md shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

import dbledger
from tests.helpers import query, run_cli, write


def applied(url: str, folder: Path) -> None:
    write(folder, "001_a.sql", "CREATE TABLE a (id INTEGER);\n")
    write(folder, "002_b.sql", "CREATE TABLE b (id INTEGER);\n")
    write(folder, "003_c.sql", "CREATE TABLE c (id INTEGER);\n")
    dbledger.migrate(url, folder)


def verify(url: str, folder: Path) -> tuple[int, dict[str, object], str]:
    result = run_cli("--database-url", url, "--dir", str(folder), "verify", "--json", cwd=folder.parent)
    return result.returncode, json.loads(result.stdout), result.stderr


def history_id(url: str, action: str, name: str) -> int:
    [(found,)] = query(
        url,
        "SELECT id FROM schema_migrations_history WHERE action = %s AND migration_name = %s",
        (action, name),
    )
    return int(found)


def test_an_untouched_ledger_verifies_and_reports_its_chain_head(db_url: str, migrations_dir: Path) -> None:
    applied(db_url, migrations_dir)

    code, document, err = verify(db_url, migrations_dir)

    assert code == 0, err
    history = document["history"]
    assert isinstance(history, dict)
    assert history["problems"] == []
    assert history["rows"] == 4  # create and three applies
    [(head,)] = query(db_url, "SELECT hash FROM schema_migrations_history ORDER BY id DESC LIMIT 1")
    assert history["head"] == head


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (
            "UPDATE schema_migrations SET checksum = 'deadbeef' WHERE migration_name = '002_b'",
            "ledger row '002_b' was edited outside dbledger: its checksum is deadbeef, "
            "but history row {apply_002}",
        ),
        (
            "DELETE FROM schema_migrations WHERE migration_name = '003_c'",
            "ledger row '003_c' was deleted outside dbledger: history row {apply_003}",
        ),
        (
            "INSERT INTO schema_migrations (migration_name, version, state, success)"
            " VALUES ('009_forged', '9', 'applied', true)",
            "ledger row '009_forged' has no history row that explains it",
        ),
        (
            "UPDATE schema_migrations_history SET execution_time_ms = 99999 WHERE action = 'apply'"
            " AND migration_name = '002_b'",
            "history row {apply_002} (apply 002_b, ",
        ),
        (
            "DELETE FROM schema_migrations_history WHERE action = 'apply' AND migration_name = '002_b'",
            "the history row written before history row {apply_003} (apply 003_c, ",
        ),
    ],
    ids=[
        "ledger checksum edited",
        "ledger row deleted",
        "ledger row forged",
        "history edited",
        "history deleted",
    ],
)
def test_verify_names_what_was_changed_behind_its_back(
    db_url: str, migrations_dir: Path, tamper: str, expected: str
) -> None:
    applied(db_url, migrations_dir)
    ids = {
        "apply_002": history_id(db_url, "apply", "002_b"),
        "apply_003": history_id(db_url, "apply", "003_c"),
    }
    query(db_url, tamper)

    code, document, err = verify(db_url, migrations_dir)

    assert code == 1, err
    error = document["error"]
    assert isinstance(error, dict)
    assert any(expected.format(**ids) in problem for problem in error["problems"]), error["problems"]


def test_reordered_history_rows_are_named(db_url: str, migrations_dir: Path) -> None:
    applied(db_url, migrations_dir)
    first, second = history_id(db_url, "apply", "002_b"), history_id(db_url, "apply", "003_c")
    # Swap the two rows' places in the chain (their ids), keeping their content and hashes.
    query(db_url, f"UPDATE schema_migrations_history SET id = -1 WHERE id = {first}")
    query(db_url, f"UPDATE schema_migrations_history SET id = {first} WHERE id = {second}")
    query(db_url, f"UPDATE schema_migrations_history SET id = {second} WHERE id = -1")

    code, document, _ = verify(db_url, migrations_dir)

    assert code == 1
    error = document["error"]
    assert isinstance(error, dict)
    problems = error["problems"]
    assert any(
        p.startswith(f"history row {first} (apply 003_c, ")
        and p.endswith(f"was moved: it was written after history row {second}")
        for p in problems
    ), problems


def test_the_migrating_role_can_be_kept_to_inserting_history(pg_url: str, migrations_dir: Path) -> None:
    """The grants docs/design.md gives: the owner creates the ledger, the migrating role may
    read and write the ledger rows and only insert into the history."""
    applied(pg_url, migrations_dir)
    role = f"migrator_{pg_url.rsplit('/', 1)[1]}"
    query(pg_url, f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'migrator-pw'")
    for grant in (
        "GRANT CREATE, USAGE ON SCHEMA public TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON schema_migrations TO {role}",
        "GRANT SELECT, INSERT ON schema_migrations_history, schema_migrations_schema TO {role}",
        "GRANT SELECT ON schema_migrations_version TO {role}",
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}",
    ):
        query(pg_url, grant.format(role=f'"{role}"'))
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    as_migrator = psycopg.conninfo.make_conninfo(pg_url, user=role, password="migrator-pw")
    write(migrations_dir, "004_d.sql", "CREATE TABLE d (id INTEGER);\n")
    try:
        report = dbledger.migrate(as_migrator, migrations_dir)
        assert [a.name for a in report.applied] == ["004_d"]
        assert dbledger.verify(as_migrator, migrations_dir).problems == []
        with (
            psycopg.connect(as_migrator, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("DELETE FROM schema_migrations_history")
        with (
            psycopg.connect(as_migrator, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("UPDATE schema_migrations_history SET detail = 'x'")
    finally:
        query(pg_url, f'DROP OWNED BY "{role}"')
        query(pg_url, f'DROP ROLE "{role}"')
    assert info["dbname"]
