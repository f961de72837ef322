"""Backups before risky migrations, against real databases: a PostgreSQL dump restored with the
documented command into a fresh database and in place is identical in data and schema; a SQLite
copy taken while another connection holds the file open restores by copying; no password reaches
pg_dump's command line, the restore command or an error; a failure leaves no partial file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbledger import backup as backup_module
from dbledger.backup import Backup, copy_sqlite, dump_postgres
from dbledger.config import Database, parse_database_url
from dbledger.errors import BackupFailed
from dbledger.testing import Cluster, free_port
from tests.conftest import ExternalServer
from tests.helpers import pg_dump_for, query, server_version

LABEL = "003_clerk_complete_migration"

PG_SCHEMA = """
CREATE SEQUENCE invoice_numbers START 1000 INCREMENT 7;
CREATE TABLE customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    settings jsonb NOT NULL DEFAULT '{}',
    balance numeric(12, 2),
    joined timestamptz,
    tags text[],
    active boolean,
    photo bytea,
    ip inet,
    uid uuid
);
CREATE TABLE invoices (
    id bigint PRIMARY KEY DEFAULT nextval('invoice_numbers'),
    customer_id int NOT NULL REFERENCES customers ON DELETE CASCADE,
    total numeric NOT NULL CHECK (total >= 0),
    updated_at timestamptz
);
CREATE INDEX invoices_customer ON invoices (customer_id);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := '2001-02-03 04:05:06+00';
    RETURN NEW;
END
$$;
CREATE TRIGGER invoices_touch BEFORE INSERT OR UPDATE ON invoices
    FOR EACH ROW EXECUTE FUNCTION touch();
INSERT INTO customers (name, settings, balance, joined, tags, active, photo, ip, uid) VALUES
    ('Ada', '{"theme": "dark", "limits": {"daily": 5}, "beta": [1, 2]}', 12.50,
     '2024-01-02 03:04:05+00', '{a,"b c"}', true, '\\x00ff10', '10.0.0.7',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
    ('Zoë ''quoted'' $$', '{}', NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO invoices (customer_id, total) VALUES (1, 10), (1, 0.5), (2, 99999999.99);
SELECT nextval('invoice_numbers');
"""

PG_CATALOG = {
    "columns": """SELECT table_name, column_name, data_type, column_default, is_nullable
                  FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2""",
    "constraints": """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(c.oid)
                      FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
                      WHERE n.nspname = 'public' ORDER BY 1, 2""",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    "functions": """SELECT p.proname, pg_get_functiondef(p.oid)
                    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname = 'public' ORDER BY 1""",
    "triggers": """SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
                   FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "sequences": """SELECT sequencename, start_value, increment_by, last_value
                    FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1""",
    "customers": "SELECT * FROM customers ORDER BY id",
    "invoices": "SELECT * FROM invoices ORDER BY id",
}


def take_backup(database: Database, folder: Path, *, label: str) -> Backup:
    """The backup each backend takes for its database."""
    take = dump_postgres if database.dialect == "postgresql" else copy_sqlite
    return take(database, folder, label=label)


def pg_snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {key: query(url, statement) for key, statement in PG_CATALOG.items()}


def password_of(url: str) -> str | None:
    password = psycopg.conninfo.conninfo_to_dict(url).get("password")
    return None if password is None else str(password)


def run_restore(args: list[str], url: str) -> None:
    """Run a restore command as a user would, with the password in PGPASSWORD."""
    env = dict(os.environ)
    if (password := password_of(url)) is not None:
        env["PGPASSWORD"] = password
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def sqlite_snapshot(path: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        return [*schema, *conn.execute("SELECT * FROM notes ORDER BY id").fetchall()]


@pytest.fixture
def fresh_pg(pg_server: Cluster | ExternalServer) -> Iterator[str]:
    """A second, empty database on the same server, to restore into."""
    name = f"restored{os.getpid()}_{free_port()}"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An otherwise empty bin directory that is the only place pg_dump is looked for."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setattr(backup_module, "PG_DUMP_GLOB", str(tmp_path / "nowhere" / "*" / "bin" / "pg_dump"))
    return folder


def fake_pg_dump(folder: Path, body: str, url: str, *, major: int | None = None) -> Path:
    """A pg_dump of the major version of the server behind ``url`` (or ``major``), with a
    pg_restore beside it, that records its command line and PGPASSWORD, then runs ``body``."""
    major = major or server_version(url) // 10000
    (folder / "pg_restore").write_text("#!/bin/sh\nexit 0\n")
    (folder / "pg_restore").chmod(0o755)
    script = folder / "pg_dump"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) {major}.4"; exit 0; fi\n'
        f"printf '%s\\n' \"$@\" > {folder}/argv\n"
        f"printf '%s' \"$PGPASSWORD\" > {folder}/pgpassword\n"
        'for arg in "$@"; do case "$arg" in --file=*) out="${arg#--file=}";; esac; done\n'
        f"{body}\n"
    )
    script.chmod(0o755)
    return script


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- PostgreSQL ---------------------------------------------------------------------------------


def test_postgres_backup_restores_identically(pg_url: str, fresh_pg: str, tmp_path: Path) -> None:
    pg_dump_for(pg_url)
    query(pg_url, PG_SCHEMA)
    before = pg_snapshot(pg_url)
    database = parse_database_url(pg_url)

    made = take_backup(database, tmp_path / "backups", label=LABEL)

    dbname = psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    assert re.fullmatch(rf"{dbname}-\d{{8}}T\d{{6}}Z-{LABEL}\.dump", made.path.name)
    assert entries(tmp_path / "backups") == [made.path.name]
    assert made.path.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
    args = shlex.split(made.restore_command)
    assert Path(args[0]).name == "pg_restore"
    assert args[1:7] == ["--clean", "--if-exists", "--no-owner", "--single-transaction", "--dbname", args[6]]
    assert args[7:] == [str(made.path)]
    assert password_of(args[6]) is None

    # Into a fresh database: the documented command with only the database name changed.
    args[6] = psycopg.conninfo.make_conninfo(
        args[6], dbname=psycopg.conninfo.conninfo_to_dict(fresh_pg)["dbname"]
    )
    run_restore(args, pg_url)
    assert pg_snapshot(fresh_pg) == before
    query(fresh_pg, "INSERT INTO invoices (customer_id, total) VALUES (2, 1)")
    assert query(fresh_pg, "SELECT id, updated_at::text FROM invoices ORDER BY id DESC LIMIT 1") == [
        (1028, "2001-02-03 04:05:06+00")  # the sequence went on where it was; the trigger fired
    ]

    # In place, after the migration went wrong: the exact command.
    query(pg_url, "DELETE FROM invoices; UPDATE customers SET settings = '[]'; DROP FUNCTION touch CASCADE")
    run_restore(shlex.split(made.restore_command), pg_url)
    assert pg_snapshot(pg_url) == before


@pytest.fixture
def real_pg_dump(pg_url: str) -> Path | None:
    """The real pg_dump of the server's version, found before ``fake_bin`` hides it."""
    return pg_dump_for(pg_url)


def test_password_stays_off_the_pg_dump_command_line(
    pg_url: str, tmp_path: Path, real_pg_dump: Path, fake_bin: Path
) -> None:
    password = password_of(pg_url)
    if password is None:
        pytest.skip("the server's URL carries no password")
    fake_pg_dump(fake_bin, f'exec {real_pg_dump} "$@"', pg_url)

    made = take_backup(parse_database_url(pg_url), tmp_path / "backups", label=LABEL)

    argv = (fake_bin / "argv").read_text()
    assert "--format=custom" in argv
    assert "--dbname=" in argv
    assert password not in argv
    assert "password=" not in argv
    assert (fake_bin / "pgpassword").read_text() == password
    assert password not in made.restore_command
    assert "***" not in made.restore_command  # left out, not masked: the command runs as shown
    assert made.path.read_bytes().startswith(b"PGDMP")


def test_unreachable_server_error_is_redacted_and_names_the_file(pg_url: str, tmp_path: Path) -> None:
    wrong_port = psycopg.conninfo.make_conninfo(pg_url, port=str(free_port()))
    folder = tmp_path / "backups"
    with pytest.raises(BackupFailed) as caught:
        take_backup(parse_database_url(wrong_port), folder, label=LABEL)

    message = str(caught.value)
    assert caught.value.exit_code == 1
    password = password_of(pg_url)
    assert password is None or password not in message
    assert message.startswith(f"cannot back up {parse_database_url(wrong_port).display} to '{folder}/")
    assert re.search(rf"to '{re.escape(str(folder))}/[^/']+-{LABEL}\.dump'", message)
    # The server's version, which chooses the pg_dump, is asked first.
    assert "cannot connect: connection failed: connection to server at" in message
    assert "Connection refused" in message
    assert entries(folder) == []


def test_pg_dump_failure_mid_dump_leaves_no_partial_file(pg_url: str, tmp_path: Path, fake_bin: Path) -> None:
    fake_pg_dump(
        fake_bin,
        'printf "PGDMP half a dump" > "$out"\n'
        "echo 'pg_dump: error: could not write to output file: No space left on device' >&2\n"
        "exit 1",
        pg_url,
    )
    folder = tmp_path / "backups"
    with pytest.raises(BackupFailed, match="No space left on device") as caught:
        take_backup(parse_database_url(pg_url), folder, label=LABEL)
    assert f"{fake_bin}/pg_dump exited with code 1: pg_dump: error: could not write" in str(caught.value)
    assert entries(folder) == []


@pytest.mark.parametrize("offset", [-2, 1], ids=["older", "newer"])
def test_pg_dump_of_another_version_is_refused_naming_both(
    pg_url: str, tmp_path: Path, fake_bin: Path, offset: int
) -> None:
    """An older pg_dump cannot read the server; a newer one writes what the server may not load
    back: either is refused before it runs."""
    major = server_version(pg_url) // 10000
    fake_pg_dump(fake_bin, "exit 0", pg_url, major=major + offset)
    with pytest.raises(BackupFailed) as caught:
        take_backup(parse_database_url(pg_url), tmp_path / "backups", label=LABEL)
    assert str(caught.value).endswith(
        f"the server runs PostgreSQL {major}, and the pg_dump found is version {major + offset} "
        f"({fake_bin}/pg_dump): a dump must be made and restored by the server's own version, "
        f"PostgreSQL {major}: install the PostgreSQL {major} client programs (apt-get install "
        f"postgresql-client-{major})"
    )
    assert not (fake_bin / "argv").exists()  # never run
    assert entries(tmp_path / "backups") == []


def test_missing_pg_dump(pg_url: str, tmp_path: Path, fake_bin: Path) -> None:
    major = server_version(pg_url) // 10000
    folder = tmp_path / "backups"
    with pytest.raises(BackupFailed) as caught:
        take_backup(parse_database_url(pg_url), folder, label=LABEL)
    assert str(caught.value).endswith(
        f"pg_dump was not found on PATH or in {tmp_path}/nowhere/*/bin: install the PostgreSQL {major} "
        f"client programs (apt-get install postgresql-client-{major})"
    )
    assert entries(folder) == []


def test_the_pg_dump_of_the_servers_version_is_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for major in (9, 17, 13):
        folder = tmp_path / "lib" / str(major) / "bin"
        folder.mkdir(parents=True)
        for program in ("pg_dump", "pg_restore"):
            script = folder / program
            script.write_text(f'#!/bin/sh\necho "{program} (PostgreSQL) {major}.1 (Debian {major}.1-1)"\n')
            script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "lib" / "13" / "bin"))
    monkeypatch.setattr(backup_module, "PG_DUMP_GLOB", str(tmp_path / "lib" / "*" / "bin" / "pg_dump"))
    assert sorted(backup_module.find_pg_dumps()) == [9, 13, 17]
    bin13 = tmp_path / "lib" / "13" / "bin"
    assert backup_module.client_programs(130022) == (bin13 / "pg_dump", bin13 / "pg_restore")
    with pytest.raises(BackupFailed) as caught:
        backup_module.client_programs(160004)
    assert f"PostgreSQL 16, and the pg_dumps found are 9 ({tmp_path}/lib/9/bin/pg_dump), 13 " in str(
        caught.value
    )


# -- SQLite ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_sqlite_backup_while_open_restores_by_copying(tmp_path: Path, journal_mode: str) -> None:
    path = tmp_path / "app.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA journal_mode = {journal_mode}")
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, data BLOB, score REAL)")
        conn.execute("CREATE INDEX notes_score ON notes (score)")
        conn.executemany(
            "INSERT INTO notes (body, data, score) VALUES (?, ?, ?)",
            [
                ("hello", b"\x00\x01", 1.5),
                ("Zoë 'x'", None, None),
                *((f"n{i}", b"x" * i, i) for i in range(500)),
            ],
        )
    conn.close()
    before = sqlite_snapshot(path)

    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process is in the middle of a write
        holder.execute("INSERT INTO notes (body) VALUES ('uncommitted')")
        made = take_backup(parse_database_url(f"sqlite:///{path}"), tmp_path / "backups", label=LABEL)
        holder.execute("ROLLBACK")
    finally:
        holder.close()

    assert re.fullmatch(rf"app-\d{{8}}T\d{{6}}Z-{LABEL}\.sqlite3", made.path.name)
    assert entries(tmp_path / "backups") == [made.path.name]  # no journal or WAL beside it
    assert sqlite_snapshot(made.path) == before
    live = shlex.quote(str(path))
    assert made.restore_command == (
        f"rm -f {live}-journal {live}-wal {live}-shm && cp {shlex.quote(str(made.path))} {live}"
    )

    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM notes WHERE id > 10")
        conn.execute("DROP INDEX notes_score")
    conn.close()
    subprocess.run(made.restore_command, shell=True, check=True)
    assert sqlite_snapshot(path) == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


def test_sqlite_in_memory_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackupFailed) as caught:
        take_backup(parse_database_url("sqlite:///:memory:"), tmp_path / "backups", label=LABEL)
    assert str(caught.value) == (
        "cannot back up sqlite:///:memory:: an in-memory database lives only inside its own "
        "connection; use a database file to take backups"
    )
    assert entries(tmp_path / "backups") == []


def test_sqlite_missing_database_file(tmp_path: Path) -> None:
    with pytest.raises(BackupFailed, match=r"the database file does not exist$"):
        take_backup(
            parse_database_url(f"sqlite:///{tmp_path / 'absent.db'}"), tmp_path / "backups", label=LABEL
        )
    assert not (tmp_path / "absent.db").exists()


# -- both ---------------------------------------------------------------------------------------


def test_checksum_and_size_match_the_file(db_url: str, tmp_path: Path) -> None:
    pg_dump_for(db_url)
    query(db_url, "CREATE TABLE t (x TEXT)")
    query(db_url, "INSERT INTO t VALUES ('one'), ('two')")
    folder = tmp_path / "not" / "yet" / "there"

    first = take_backup(parse_database_url(db_url), folder, label=LABEL)
    second = take_backup(parse_database_url(db_url), folder, label=LABEL)

    for made in (first, second):
        data = made.path.read_bytes()
        assert made.sha256 == hashlib.sha256(data).hexdigest()
        assert made.bytes == len(data) > 0
        assert made.seconds > 0
        assert stat.S_IMODE(made.path.stat().st_mode) == 0o600  # a backup holds all the data
    assert first.path != second.path  # the same second never overwrites a backup
    assert entries(folder) == sorted([first.path.name, second.path.name])


@pytest.fixture(params=["read-only directory", "path through a file"])
def unwritable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    if request.param == "path through a file":
        (tmp_path / "file").write_text("")
        yield tmp_path / "file" / "backups"
        return
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.geteuid() == 0:  # root writes anywhere a mode forbids; an immutable directory stops it
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        if os.access(folder, os.W_OK) and not immutable:
            pytest.skip("cannot make a directory unwritable here")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_unwritable_directory(db_url: str, unwritable: Path) -> None:
    query(db_url, "CREATE TABLE t (x TEXT)")
    database = parse_database_url(db_url)
    with pytest.raises(BackupFailed) as caught:
        take_backup(database, unwritable, label=LABEL)
    message = str(caught.value)
    assert message.startswith(f"cannot back up {database.display} to '{unwritable}/")
    assert f"cannot write to directory '{unwritable}': [Errno" in message
    password = password_of(db_url) if database.dialect == "postgresql" else None
    assert password is None or password not in message
    assert entries(unwritable) == []
