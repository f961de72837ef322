"""Migration files: naming, sections, options, ordering, checksums, every malformed case, and
``dbledger new``. Unit tests of ``discover``/``parse``, then the same behaviour from the outside
through the command line against real databases.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import pytest

from dbledger.contracts import Version
from dbledger.errors import ConfigError, MigrationFileError, UsageError
from dbledger.migrations import Migration, checksum, discover, parse
from tests.helpers import Result, query, run_cli, table_exists, write

CREATE_T = "CREATE TABLE t (id integer PRIMARY KEY, x integer);\n"


def parse_text(name: str, text: str) -> Migration:
    return parse(Path("migrations") / name, text.encode())


def cli(url: str, folder: Path, *args: str, timeout: float = 120) -> Result:
    return run_cli(*args, "--database-url", url, "--dir", str(folder), cwd=folder.parent, timeout=timeout)


def ledger(url: str) -> list[tuple[str, str, bool]]:
    rows = query(url, "SELECT migration_name, checksum, success FROM schema_migrations ORDER BY id")
    return [(name, digest, bool(ok)) for name, digest, ok in rows]


def nothing_written(url: str) -> bool:
    """No ledger table and no table from any migration file: the database was not touched."""
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return True
    return not table_exists(url, "schema_migrations") and not table_exists(url, "good")


# -- parsing -----------------------------------------------------------------------------------


def test_plain_file_is_an_up_only_migration() -> None:
    text = "-- create the table\nCREATE TABLE t (id integer);\nINSERT INTO t VALUES (1);\n"
    m = parse_text("001_create_t.sql", text)
    assert m.version == Version((1,))
    assert m.name == "001_create_t"
    assert m.path == Path("migrations/001_create_t.sql")
    assert m.up.sql == text
    assert m.up.line == 1
    assert m.up.transaction is True
    assert m.down is None
    assert m.checksum == hashlib.sha256(text.encode()).hexdigest()


def test_up_and_down_sections_with_their_lines() -> None:
    text = (
        "-- adds a column; comments above the first marker are fine\n"  # 1
        "\n"  # 2
        "-- migrate:up\n"  # 3
        "ALTER TABLE t ADD COLUMN c text;\n"  # 4
        "UPDATE t SET c = 'x';\n"  # 5
        "\n"  # 6
        "-- migrate:down\n"  # 7
        "ALTER TABLE t DROP COLUMN c;\n"  # 8
    )
    m = parse_text("002_add_c.sql", text)
    assert m.up.sql.strip() == "ALTER TABLE t ADD COLUMN c text;\nUPDATE t SET c = 'x';"
    assert m.up.line == 4
    assert m.up.transaction is True
    assert m.down is not None
    assert m.down.sql.strip() == "ALTER TABLE t DROP COLUMN c;"
    assert m.down.line == 8
    assert m.down.transaction is True


def test_up_section_without_down() -> None:
    m = parse_text("003_x.sql", "-- migrate:up\nCREATE TABLE x (id integer);\n")
    assert m.up.sql.strip() == "CREATE TABLE x (id integer);"
    assert m.up.line == 2
    assert m.down is None


def test_empty_down_section_means_no_rollback() -> None:
    m = parse_text(
        "004_x.sql", "-- migrate:up\nCREATE TABLE x (id integer);\n-- migrate:down\n-- nothing\n\n"
    )
    assert m.down is None


def test_transaction_false_option() -> None:
    text = (
        "-- migrate:up transaction:false\n"
        "CREATE INDEX CONCURRENTLY t_x ON t (x);\n"
        "-- migrate:down\n"
        "DROP INDEX t_x;\n"
    )
    m = parse_text("005_index.sql", text)
    assert m.up.transaction is False
    assert m.up.line == 2
    assert m.down is not None
    assert m.down.transaction is True


@pytest.mark.parametrize(
    ("marker", "transaction"),
    [
        ("-- migrate:up transaction:true", True),
        ("-- migrate:up   transaction:false  ", False),
    ],
)
def test_option_spellings(marker: str, transaction: bool) -> None:
    m = parse_text("006_x.sql", f"{marker}\nSELECT 1;\n-- migrate:down transaction:false\nSELECT 2;\n")
    assert m.up.transaction is transaction
    assert m.down is not None
    assert m.down.transaction is False


def test_crlf_file_gets_the_same_sections_and_lines() -> None:
    text = "-- migrate:up\nCREATE TABLE x (id integer);\n-- migrate:down\nDROP TABLE x;\n"
    lf = parse(Path("007_x.sql"), text.encode())
    crlf = parse(Path("007_x.sql"), b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert crlf.up == lf.up
    assert crlf.down == lf.down
    assert crlf.checksum == lf.checksum


@pytest.mark.parametrize(
    ("file_name", "version", "name"),
    [
        ("1_a.sql", 1, "1_a"),
        ("001_create_users.sql", 1, "001_create_users"),
        ("20240501120000_add_2fa.sql", 20240501120000, "20240501120000_add_2fa"),
        ("010_x_y_z_1.sql", 10, "010_x_y_z_1"),
    ],
)
def test_file_names(file_name: str, version: int, name: str) -> None:
    m = parse_text(file_name, "SELECT 1;\n")
    assert (m.version.shown(), m.name) == (version, name)


def test_discover_sorts_versions_as_integers(migrations_dir: Path) -> None:
    for stem in ("10_b", "9_a", "100_c", "0011_d"):
        write(migrations_dir, f"{stem}.sql", f"SELECT '{stem}';\n")
    found = discover(migrations_dir)
    assert [m.name for m in found] == ["9_a", "10_b", "0011_d", "100_c"]
    assert [m.version.shown() for m in found] == [9, 10, 11, 100]


def test_discover_ignores_files_that_are_not_sql(migrations_dir: Path) -> None:
    write(migrations_dir, "001_a.sql", "SELECT 1;\n")
    write(migrations_dir, "README.md", "# Migrations\nnot SQL at all\n")
    write(migrations_dir, "notes.txt", "V1__whatever\n")
    write(migrations_dir, "002_b.sql.orig", "garbage")
    (migrations_dir / "archive").mkdir()
    assert [m.name for m in discover(migrations_dir)] == ["001_a"]


def test_discover_empty_directory(migrations_dir: Path) -> None:
    assert discover(migrations_dir) == []


def test_discover_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        discover(missing)
    assert info.value.exit_code == 2
    assert str(missing) in info.value.message
    assert "does not exist" in info.value.message


def test_discover_file_instead_of_directory(tmp_path: Path) -> None:
    path = write(tmp_path, "migrations", "not a folder")
    with pytest.raises(ConfigError) as info:
        discover(path)
    assert str(path) in info.value.message
    assert "is not a directory" in info.value.message


# -- checksums ---------------------------------------------------------------------------------

LF_TEXT = "-- migrate:up\nCREATE TABLE t (id integer);\n\n-- migrate:down\nDROP TABLE t;\n"
LF_SHA = hashlib.sha256(LF_TEXT.encode()).hexdigest()


@pytest.mark.parametrize(
    "raw",
    [
        LF_TEXT.encode(),
        LF_TEXT.replace("\n", "\r\n").encode(),
        LF_TEXT.replace("\n", "\r").encode(),
        b"\xef\xbb\xbf" + LF_TEXT.encode(),
        b"\xef\xbb\xbf" + LF_TEXT.replace("\n", "\r\n").encode(),
        # a file edited on both systems: some lines CRLF, some LF
        LF_TEXT.replace("\n", "\r\n", 2).encode(),
    ],
    ids=["lf", "crlf", "lone-cr", "bom", "bom-crlf", "mixed"],
)
def test_checksum_ignores_bom_and_line_endings(raw: bytes) -> None:
    assert checksum(raw) == LF_SHA
    assert parse(Path("001_t.sql"), raw).checksum == LF_SHA


@pytest.mark.parametrize(
    "edited",
    [
        LF_TEXT.replace("integer", "bigint"),
        LF_TEXT.replace("TABLE t", "table t"),
        LF_TEXT.replace("(id integer)", "(id  integer)"),
        LF_TEXT + "\n",
        LF_TEXT.rstrip("\n"),
        LF_TEXT.replace("DROP TABLE t;", "DROP TABLE t CASCADE;"),
    ],
    ids=["type", "case", "space", "extra-newline", "no-final-newline", "down-section"],
)
def test_any_real_edit_changes_the_checksum(edited: str) -> None:
    assert checksum(edited.encode()) != LF_SHA
    assert checksum(edited.replace("\n", "\r\n").encode()) != LF_SHA


def test_checksum_is_64_lowercase_hex() -> None:
    digest = checksum(b"SELECT 1;\n")
    assert len(digest) == 64
    assert digest == digest.lower()
    int(digest, 16)


def test_cli_records_the_normalised_checksum_and_a_windows_checkout_is_not_tampering(
    db_url: str, migrations_dir: Path
) -> None:
    path = migrations_dir / "001_t.sql"
    path.write_bytes(b"\xef\xbb\xbf" + LF_TEXT.replace("\n", "\r\n").encode())
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert ledger(db_url) == [("001_t", LF_SHA, True)]

    # The same file checked out with LF endings and no BOM: not a modification.
    path.write_bytes(LF_TEXT.encode())
    verified = cli(db_url, migrations_dir, "verify")
    assert verified.returncode == 0, verified.output
    again = cli(db_url, migrations_dir, "up")
    assert again.returncode == 0, again.output
    assert "nothing to do" in again.output
    assert ledger(db_url) == [("001_t", LF_SHA, True)]

    # A real edit is.
    path.write_bytes(LF_TEXT.replace("integer", "bigint").encode())
    modified = cli(db_url, migrations_dir, "verify")
    assert modified.returncode == 1, modified.output
    assert "'001_t' was modified" in modified.stderr
    assert "dbledger repair" in modified.stderr
    refused = cli(db_url, migrations_dir, "up")
    assert refused.returncode == 1, refused.output
    assert "'001_t' was modified" in refused.stderr
    assert ledger(db_url) == [("001_t", LF_SHA, True)]


# -- applying well-formed files from the outside -------------------------------------------------


def test_cli_applies_plain_and_sectioned_files(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_t.sql", CREATE_T)
    write(
        migrations_dir,
        "002_add_c.sql",
        "-- migrate:up\nALTER TABLE t ADD COLUMN c text;\n-- migrate:down\nDROP TABLE t;\n",
    )
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert [(n, ok) for n, _, ok in ledger(db_url)] == [("001_create_t", True), ("002_add_c", True)]
    # The up section ran, the down section did not.
    assert table_exists(db_url, "t")
    query(db_url, "INSERT INTO t (id, x, c) VALUES (1, 2, 'three')")


def test_cli_applies_versions_in_integer_order(db_url: str, migrations_dir: Path) -> None:
    # 10 depends on 9, and 100 on 10: sorting the names as text would run 10 first and fail.
    write(migrations_dir, "9_create_a.sql", "CREATE TABLE a (id integer);\n")
    write(migrations_dir, "10_add_b.sql", "ALTER TABLE a ADD COLUMN b integer;\n")
    write(migrations_dir, "100_fill.sql", "INSERT INTO a (id, b) VALUES (1, 2);\n")
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert [n for n, _, _ in ledger(db_url)] == ["9_create_a", "10_add_b", "100_fill"]
    status = cli(db_url, migrations_dir, "status", "--json")
    assert status.returncode == 0, status.output
    document = json.loads(status.stdout)
    assert [m["name"] for m in document["applied"]] == ["9_create_a", "10_add_b", "100_fill"]
    assert document["version"] == 100


def test_cli_ignores_non_sql_files(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_t.sql", CREATE_T)
    write(migrations_dir, "README.md", "# How to write migrations\nDROP TABLE t;\n")
    write(migrations_dir, "002_draft.sql.txt", "this is not SQL")
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert [n for n, _, _ in ledger(db_url)] == ["001_create_t"]
    status = cli(db_url, migrations_dir, "status", "--json")
    document = json.loads(status.stdout)
    assert document["pending"] == []


def test_transaction_false_runs_outside_a_transaction(pg_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_t.sql", CREATE_T)
    write(
        migrations_dir,
        "002_index.sql",
        "-- migrate:up transaction:false\n"
        "CREATE INDEX CONCURRENTLY t_x_idx ON t (x);\n"
        "-- migrate:down transaction:false\n"
        "DROP INDEX CONCURRENTLY t_x_idx;\n",
    )
    result = cli(pg_url, migrations_dir, "up")
    assert result.returncode == 0, result.output
    assert query(pg_url, "SELECT indexname FROM pg_indexes WHERE tablename = 't' AND indexname = 't_x_idx'")
    assert [(n, ok) for n, _, ok in ledger(pg_url)] == [("001_create_t", True), ("002_index", True)]


def test_without_the_option_concurrently_is_refused_before_anything_runs(
    pg_url: str, migrations_dir: Path
) -> None:
    # The control for the test above: the option is what makes the difference. Without it the
    # file is refused as it stands, before 001 or the ledger, not failed at run time with 25001.
    write(migrations_dir, "001_create_t.sql", CREATE_T)
    index = write(
        migrations_dir, "002_index.sql", "-- migrate:up\nCREATE INDEX CONCURRENTLY t_x_idx ON t (x);\n"
    )
    result = cli(pg_url, migrations_dir, "up")
    assert result.returncode == 2, result.output
    assert (
        f"{index}: line 2: CREATE INDEX CONCURRENTLY cannot run inside a transaction, and this section "
        "runs in one: mark it '-- migrate:up transaction:false'"
    ) in result.stderr
    assert not table_exists(pg_url, "t")
    assert not table_exists(pg_url, "schema_migrations")


# -- malformed files ---------------------------------------------------------------------------

GOOD = "CREATE TABLE good (id integer);\n"

# id -> (files, the file the error must name, fragments the message must contain)
BAD: dict[str, tuple[dict[str, bytes], str, list[str]]] = {
    "duplicate version": (
        {"1_a.sql": b"SELECT 1;\n", "001_b.sql": b"SELECT 2;\n"},
        "1_a.sql",
        ["version 1 is also used by", "001_b.sql", "unique"],
    ),
    "upper-case name": (
        {"001_Add.sql": b"SELECT 1;\n"},
        "001_Add.sql",
        ["does not match <version>_<name>.sql"],
    ),
    "dash instead of underscore": (
        {"001-add.sql": b"SELECT 1;\n"},
        "001-add.sql",
        ["does not match <version>_<name>.sql"],
    ),
    "not utf-8": (
        {"001_latin1.sql": b"CREATE TABLE t (id integer);\n-- caf\xe9\nSELECT 1;\n"},
        "001_latin1.sql",
        ["line 2", "not valid UTF-8"],
    ),
    "not utf-8 after crlf lines": (
        {"001_latin1.sql": b"\xef\xbb\xbfSELECT 1;\r\nSELECT 2;\r\nSELECT '\xe9';\r\n"},
        "001_latin1.sql",
        ["line 3", "not valid UTF-8"],
    ),
    "unknown option": (
        {"001_opt.sql": b"-- migrate:up foo:bar\nSELECT 1;\n"},
        "001_opt.sql",
        ["line 1", "unknown option 'foo:bar'", "transaction:true|false"],
    ),
    "option without a value": (
        {"001_opt.sql": b"-- migrate:up transaction\nSELECT 1;\n"},
        "001_opt.sql",
        ["line 1", "unknown option 'transaction'"],
    ),
    "bad option value": (
        {"001_opt.sql": b"-- migrate:up transaction:maybe\nSELECT 1;\n"},
        "001_opt.sql",
        ["line 1", "'transaction'", "'maybe'"],
    ),
    "unknown option on the down marker": (
        {"001_opt.sql": b"-- migrate:up\nSELECT 1;\n-- migrate:down later:yes\nSELECT 2;\n"},
        "001_opt.sql",
        ["line 3", "unknown option 'later:yes'"],
    ),
    "down before up": (
        {"001_order.sql": b"-- migrate:down\nDROP TABLE t;\n-- migrate:up\nCREATE TABLE t (id integer);\n"},
        "001_order.sql",
        ["line 1", "'-- migrate:down' comes before '-- migrate:up'"],
    ),
    "sql before the up marker": (
        {"001_stray.sql": b"-- header\nCREATE TABLE t (id integer);\n-- migrate:up\nSELECT 1;\n"},
        "001_stray.sql",
        ["line 3", "before '-- migrate:up'"],
    ),
    "second up marker": (
        {"001_twice.sql": b"-- migrate:up\nSELECT 1;\n-- migrate:up\nSELECT 2;\n"},
        "001_twice.sql",
        ["line 3", "a second '-- migrate:up'"],
    ),
    "second down marker": (
        {
            "001_twice.sql": (
                b"-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;\n-- migrate:down\nSELECT 3;\n"
            )
        },
        "001_twice.sql",
        ["line 5", "a second '-- migrate:down'"],
    ),
    "unknown section": (
        {"001_sideways.sql": b"-- migrate:up\nSELECT 1;\n-- migrate:sideways\nSELECT 2;\n"},
        "001_sideways.sql",
        ["line 3", "unknown section"],
    ),
}


def write_bad(folder: Path, files: dict[str, bytes]) -> None:
    # A good file that sorts first: a tool that applied files while still reading the folder
    # would create table "good" before it met the bad one.
    write(folder, "000_good.sql", GOOD)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_discover_rejects_malformed_files(
    case: tuple[dict[str, bytes], str, list[str]], migrations_dir: Path
) -> None:
    files, offender, fragments = case
    write_bad(migrations_dir, files)
    with pytest.raises(MigrationFileError) as info:
        discover(migrations_dir)
    error = info.value
    assert isinstance(error, UsageError)
    assert error.exit_code == 2
    assert error.path == str(migrations_dir / offender)
    assert error.message.startswith(f"{migrations_dir / offender}: ")
    for fragment in fragments:
        assert fragment in error.message


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_cli_refuses_malformed_files_and_writes_nothing(
    case: tuple[dict[str, bytes], str, list[str]], db_url: str, migrations_dir: Path
) -> None:
    files, offender, fragments = case
    write_bad(migrations_dir, files)
    for command in ("up", "status"):
        result = cli(db_url, migrations_dir, command)
        assert result.returncode == 2, (command, result.output)
        assert str(migrations_dir / offender) in result.stderr, command
        for fragment in fragments:
            assert fragment in result.stderr, (command, fragment)
        assert "Traceback" not in result.stderr
        assert nothing_written(db_url), command


def test_cli_json_error_for_a_malformed_file(sqlite_url: str, migrations_dir: Path) -> None:
    write_bad(migrations_dir, {"001_opt.sql": b"-- migrate:up foo:bar\nSELECT 1;\n"})
    result = cli(sqlite_url, migrations_dir, "up", "--json")
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert document["error"]["type"] == "MigrationFileError"
    assert document["error"]["exit_code"] == 2
    assert document["error"]["path"] == str(migrations_dir / "001_opt.sql")
    assert "unknown option 'foo:bar'" in document["error"]["message"]
    assert nothing_written(sqlite_url)


def test_malformed_file_blocks_even_when_earlier_files_are_applied(db_url: str, migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_t.sql", CREATE_T)
    assert cli(db_url, migrations_dir, "up").returncode == 0
    write(migrations_dir, "002_add.sql", "-- migrate:up transaction:maybe\nALTER TABLE t ADD COLUMN y int;\n")
    write(migrations_dir, "003_good.sql", GOOD)
    result = cli(db_url, migrations_dir, "up")
    assert result.returncode == 2, result.output
    assert str(migrations_dir / "002_add.sql") in result.stderr
    assert [n for n, _, _ in ledger(db_url)] == ["001_create_t"]
    assert not table_exists(db_url, "good")


@pytest.mark.parametrize("command", ["up", "status", "verify"])
def test_cli_missing_migrations_directory(command: str, sqlite_url: str, tmp_path: Path) -> None:
    missing = tmp_path / "migrations"
    result = cli(sqlite_url, missing, command)
    assert result.returncode == 2, result.output
    assert f"migrations directory '{missing}' does not exist" in result.stderr
    assert "dbledger new NAME" in result.stderr
    assert "--dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert nothing_written(sqlite_url)
    assert not missing.exists()


def test_cli_migrations_path_is_a_file(sqlite_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "migrations", "SELECT 1;\n")
    result = cli(sqlite_url, path, "up")
    assert result.returncode == 2, result.output
    assert str(path) in result.stderr
    assert "is not a directory" in result.stderr


# -- dbledger new ------------------------------------------------------------------------------


def new(folder: Path, *args: str, cwd: Path | None = None) -> Result:
    return run_cli("new", *args, "--dir", str(folder), cwd=cwd or folder.parent)


def sql_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".sql")


def test_new_creates_the_first_file_and_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "db" / "migrations"
    result = new(folder, "create_users", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert sql_files(folder) == ["001_create_users.sql"]
    assert str(folder / "001_create_users.sql") in result.stdout
    text = (folder / "001_create_users.sql").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines()]
    assert "-- migrate:up" in lines
    assert "-- migrate:down" in lines
    assert lines.index("-- migrate:up") < lines.index("-- migrate:down")


EMPTY_FILES = {
    "plain file with only comments": b"-- TODO write this\n/* later */\n\n",
    "empty file": b"",
    "up section with only comments": (
        b"-- migrate:up\n-- CREATE TABLE t ();\n\n-- migrate:down\nDROP TABLE t;\n"
    ),
    "template from dbledger new": b"-- migrate:up\n\n\n-- migrate:down\n\n",
}


@pytest.mark.parametrize("raw", EMPTY_FILES.values(), ids=EMPTY_FILES.keys())
def test_a_file_not_written_yet_is_listed_and_only_up_refuses_it(
    raw: bytes, db_url: str, migrations_dir: Path
) -> None:
    write(migrations_dir, "001_create_t.sql", CREATE_T)
    path = migrations_dir / "002_later.sql"
    path.write_bytes(raw)

    status = cli(db_url, migrations_dir, "status", "--json")
    assert status.returncode == 0, status.output
    assert [m["name"] for m in json.loads(status.stdout)["pending"]] == ["001_create_t", "002_later"]
    human = cli(db_url, migrations_dir, "status")
    assert human.returncode == 0, human.output
    assert re.search(r"^\s*2\s+002_later\s+not written yet$", human.stdout, re.MULTILINE), human.stdout
    assert cli(db_url, migrations_dir, "verify").returncode == 0

    refused = cli(db_url, migrations_dir, "up")
    assert refused.returncode == 2, refused.output
    assert refused.stderr.splitlines()[-1] == (
        f"dbledger: error: {path}: the up section is empty (only comments or blank lines): write "
        "the migration's SQL, or delete the file"
    )
    assert nothing_written(db_url)
    applied = cli(db_url, migrations_dir, "up", "--to", "1")  # what comes before it still runs
    assert applied.returncode == 0, applied.output


def test_new_numbers_after_filled_in_files(migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_users.sql", CREATE_T)
    result = new(migrations_dir, "add_email")
    assert result.returncode == 0, result.output
    assert sql_files(migrations_dir) == ["001_create_users.sql", "002_add_email.sql"]


def test_new_twice_in_a_row(migrations_dir: Path) -> None:
    # Writing two migrations before filling in either is ordinary: the first, still empty,
    # template must not stop 'new' from numbering the second.
    first = new(migrations_dir, "create_users")
    assert first.returncode == 0, first.output
    second = new(migrations_dir, "add_email")
    assert second.returncode == 0, second.output
    assert sql_files(migrations_dir) == ["001_create_users.sql", "002_add_email.sql"]


@pytest.mark.parametrize(
    ("existing", "created"),
    [
        (["0007_x.sql"], "0008_y.sql"),
        (["20240501120000_a.sql", "20991231235959_far_future.sql"], "20991231235960_y.sql"),
        (["9_a.sql", "099_b.sql"], "100_y.sql"),
    ],
)
def test_new_keeps_the_width_of_existing_numbers(
    existing: list[str], created: str, migrations_dir: Path
) -> None:
    for name in existing:
        write(migrations_dir, name, f"SELECT '{name}';\n")
    result = new(migrations_dir, "y")
    assert result.returncode == 0, result.output
    assert sql_files(migrations_dir) == sorted([*existing, created])


def test_new_in_a_timestamped_folder_takes_the_current_utc_time(migrations_dir: Path) -> None:
    from datetime import UTC, datetime

    write(migrations_dir, "20240501120000_a.sql", "SELECT 1;\n")
    before = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    result = new(migrations_dir, "y")
    after = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    assert result.returncode == 0, result.output
    [created] = [name for name in sql_files(migrations_dir) if name.endswith("_y.sql")]
    assert before <= created.removesuffix("_y.sql") <= after


@pytest.mark.parametrize(
    ("typed", "file_name"),
    [
        ("Add Users", "001_add_users.sql"),
        ("add-users.email", "001_add_users_email.sql"),
        ("AddUsers", "001_addusers.sql"),
    ],
)
def test_new_turns_what_is_typed_into_a_name(typed: str, file_name: str, migrations_dir: Path) -> None:
    result = new(migrations_dir, typed)
    assert result.returncode == 0, result.output
    assert sql_files(migrations_dir) == [file_name]


@pytest.mark.parametrize("name", ["", "!!!", "中文", "  "])
def test_new_rejects_a_name_without_words(name: str, migrations_dir: Path) -> None:
    result = new(migrations_dir, name)
    assert result.returncode == 2, result.output
    assert result.stderr.splitlines()[-1] == (
        f"dbledger: error: invalid migration name {name!r}: give words that say what the change "
        "does (e.g. add_users_email)"
    )
    assert sql_files(migrations_dir) == []


def test_new_json_prints_the_path(migrations_dir: Path) -> None:
    write(migrations_dir, "001_create_users.sql", CREATE_T)
    result = new(migrations_dir, "add_email", "--json")
    assert result.returncode == 0, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert document["path"] == str(migrations_dir / "002_add_email.sql")
    assert Path(document["path"]).is_file()


def test_new_uses_dbledger_dir_from_the_environment(tmp_path: Path) -> None:
    result = run_cli("new", "create_users", cwd=tmp_path, env={"DBLEDGER_DIR": "sql"})
    assert result.returncode == 0, result.output
    assert sql_files(tmp_path / "sql") == ["001_create_users.sql"]
    assert not os.path.exists(tmp_path / "migrations")


# -- only regular files inside the folder are migrations -----------------------------------------


def test_a_symlink_out_of_the_folder_is_refused_before_it_is_read(db_url: str, migrations_dir: Path) -> None:
    secret = migrations_dir.parent / "credentials"
    secret.write_text("SELECT 'aws_secret_access_key=AKIAFAKEKEY0000';\n", encoding="utf-8")
    write(migrations_dir, "001_a.sql", CREATE_T)
    (migrations_dir / "002_x.sql").symlink_to(Path("..") / "credentials")

    for args in (("up", "--dry-run", "--json"), ("up",), ("status", "--json")):
        result = cli(db_url, migrations_dir, *args)
        assert result.returncode == 2, result.output
        assert (
            f"{migrations_dir / '002_x.sql'}: is a symbolic link to {secret}, outside the migrations folder"
            in (result.stderr)
        )
        assert "AKIAFAKEKEY" not in result.output
    assert not table_exists(db_url, "t")
    assert not table_exists(db_url, "schema_migrations")


def test_a_symlink_inside_the_folder_is_a_migration(sqlite_url: str, migrations_dir: Path) -> None:
    (migrations_dir / "shared").mkdir()
    write(migrations_dir / "shared", "create_t.sql", CREATE_T)
    (migrations_dir / "001_t.sql").symlink_to(Path("shared") / "create_t.sql")

    result = cli(sqlite_url, migrations_dir, "up")

    assert result.returncode == 0, result.output
    assert table_exists(sqlite_url, "t")


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_migration_that_is_not_a_regular_file_is_refused(
    kind: str, sqlite_url: str, migrations_dir: Path
) -> None:
    path = migrations_dir / "001_a.sql"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would wait forever for a writer
        described = "a named pipe (FIFO)"
    elif kind == "directory":
        path.mkdir()
        described = "a directory"
    else:
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
        except PermissionError:
            pytest.skip("creating a device node needs CAP_MKNOD")
        described = "a character device"

    result = cli(sqlite_url, migrations_dir, "up", timeout=20)

    assert result.returncode == 2, result.output
    assert f"{path}: is {described}, not a regular file" in result.stderr
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
