"""Find migration files, parse their sections, and checksum them.

A file is ``<version>_<name>.sql``: the version is digits of any width, compared as an integer;
the name is ``[a-z0-9_]+``; the file stem is the migration's identity in the ledger. A plain file
is an up-only migration. dbmate-style markers split a file into sections, with options on the
marker line::

    -- migrate:up transaction:false
    CREATE INDEX CONCURRENTLY ...;
    -- migrate:down
    DROP INDEX CONCURRENTLY ...;

``lock_timeout:10s`` and ``statement_timeout:5min`` on a marker line bound that section's
statements instead of the run's settings, and ``transaction_timeout:10min`` its transaction
(PostgreSQL; transaction_timeout from PostgreSQL 17).
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from dbledger import checksumcache
from dbledger.config import parse_duration
from dbledger.contracts import Version
from dbledger.errors import ConfigError, MigrationFileError

FILE_NAME = re.compile(r"^(?P<version>[0-9]+)_(?P<name>[a-z0-9_]+)\.sql$")
_MARKER = re.compile(r"^--\s*migrate:(?P<kind>[A-Za-z]+)(?P<options>.*)$")
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_BOOLEANS = {"true": True, "false": False}
# Options a section marker may carry, and the values each accepts.
KNOWN_OPTIONS = {"transaction": _BOOLEANS, "backup": _BOOLEANS}
# Options that take a duration (500ms, 3s, 2min; 0: no limit): this section's statements wait
# at most that long for a lock, or run at most that long, or the section's transaction lasts at
# most that long, instead of the run's setting.
DURATION_OPTIONS = ("lock_timeout", "statement_timeout", "transaction_timeout")


@dataclass(frozen=True)
class Section:
    """One direction of a migration: its SQL, where it starts in the file, and its options."""

    sql: str
    line: int  # 1-based line of the file on which ``sql`` starts
    transaction: bool = True
    backup: bool = False  # take a backup before it runs, when the run has --backup DIR
    lock_timeout: float | None = None  # seconds; None: the run's setting
    statement_timeout: float | None = None
    transaction_timeout: float | None = None
    # Only comments and blank lines (the template 'dbledger new' writes): listed as not written
    # yet by the read commands, refused by any command that would run it. Another tool's layout
    # runs such a section as a no-op instead (dbledger.layouts).
    empty: bool = False
    # The file ``sql`` comes from when it is not the migration's own (a golang-migrate .down.sql).
    path: Path | None = None
    # Another tool's file with no transaction setting (golang-migrate, Flyway, Prisma): it runs
    # outside a transaction when its statements cannot run in one (dbledger.preflight decides).
    auto_transaction: bool = False


class Content(NamedTuple):
    text: str  # the file as checksummed (normalised line endings, decoded)
    up: Section
    down: Section | None


class Migration:
    """A migration file: its version, its name (the file stem, its identity in the ledger), its
    path and its checksum, all known from the folder's scan. Its text and sections come from the
    file's bytes, parsed in the scan when the scan read them, else when first asked for: a file
    whose checksum the record of an earlier scan vouched for is read only by a command that runs
    or shows its SQL (``dbledger.checksumcache``)."""

    __slots__ = ("_content", "_path", "checksum", "name", "version")

    def __init__(
        self,
        version: Version,
        name: str,
        path: Path | str,
        checksum: str,
        content: Content | None = None,
    ) -> None:
        self.version = version
        self.name = name
        self._path = path  # a Path when first asked for: pathlib costs ~15 us a path
        self.checksum = checksum
        self._content = content

    @property
    def path(self) -> Path:
        if not isinstance(self._path, Path):
            self._path = Path(self._path)
        return self._path

    @property
    def up(self) -> Section:
        return self._parsed().up

    @property
    def down(self) -> Section | None:
        return self._parsed().down

    @property
    def text(self) -> str:
        """The file as checksummed (normalised line endings, decoded): what the ledger keeps."""
        return self._parsed().text

    def _parsed(self) -> Content:
        if self._content is None:
            data = normalise(_read(self.path))
            if sha256(data) != self.checksum:
                raise MigrationFileError(
                    str(self.path), "changed while dbledger was running: run the command again"
                )
            self._content = _content(self.path, data)
        return self._content

    def file_of(self, section: Section) -> Path:
        """The file ``section`` was read from: what an error or a finding names."""
        return section.path or self.path

    def _key(self) -> tuple[Version, str, Path, str]:
        return (self.version, self.name, self.path, self.checksum)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Migration) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Migration(version={self.version!r}, name={self.name!r}, checksum={self.checksum[:12]!r}…)"


def normalise(raw: bytes) -> bytes:
    """Strip a UTF-8 BOM and turn CRLF and lone CR into LF, so a Windows checkout hashes the same."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def checksum(raw: bytes) -> str:
    """The SHA-256 recorded in the ledger: hex digest of the normalised bytes."""
    return sha256(normalise(raw))


def sha256(data: bytes) -> str:
    """The hex SHA-256 of ``data`` (already normalised)."""
    import hashlib  # ~3 ms: not when the checksum record vouches for every file

    return hashlib.sha256(data).hexdigest()


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working directory when it lies inside it: what a person reads, an
    editor opens, and a CI annotation needs (a path of the checkout); otherwise as given."""
    here, absolute = os.getcwd(), os.path.abspath(path)
    return os.path.relpath(absolute, here) if os.path.commonpath([here, absolute]) == here else str(path)


def is_blank(sql: str) -> bool:
    """True when ``sql`` holds nothing but whitespace, comments and semicolons."""
    return not _COMMENTS.sub("", sql).replace(";", "").strip()


# The hook files a folder may hold, and the event each runs on (dbledger.layouts); Flyway's
# callback names too, so a Flyway folder keeps its habits.
HOOK_EVENTS = ("before-all", "before-each", "after-each", "after-all")
HOOK_FILES = {f"{event}.sql": event for event in HOOK_EVENTS} | {
    "beforeMigrate.sql": "before-all",
    "beforeEachMigrate.sql": "before-each",
    "afterEachMigrate.sql": "after-each",
    "afterMigrate.sql": "after-all",
}

# The line the files 'dbledger new' writes in the other tools' layouts hold (dbledger.scaffold):
# there a file of only comments runs as a no-op, so one that still holds this line with nothing
# else is refused as not written yet, as dbledger's own template is.
NOT_WRITTEN = "-- dbledger new: write this migration's SQL here"

# Endings editors and tools give copies of a file.
_COPY_SUFFIXES = (".bak", ".orig", ".old", ".swp", ".tmp", "~")
_FLYWAY = re.compile(r"^[Vv](?P<version>[0-9]+)__(?P<name>.+)$")  # V1__init.sql; not V1.1__
_DIRECTIONS = re.compile(r"^(?P<stem>.+)\.(?P<direction>up|down)$")
_NOT_NAME = re.compile(r"[^a-z0-9]+")


def suggested_name(file_name: str) -> str | None:
    """The ``<version>_<name>.sql`` a misnamed migration file should have, when one can be read
    from its name: ``V1__Init.sql`` -> ``1_init.sql``, ``001-add users.SQL`` -> ``001_add_users.sql``."""
    stem = file_name[: -len(".sql")] if file_name.lower().endswith(".sql") else None
    if stem is None:
        return None
    stem = _DIRECTIONS.sub(r"\g<stem>", stem)
    flyway = _FLYWAY.match(stem)
    if flyway is not None:
        stem = f"{flyway.group('version')}_{flyway.group('name')}"
    version = re.match(r"^[0-9]+", stem)
    if version is None:
        return None
    name = _NOT_NAME.sub("_", stem[version.end() :].lower()).strip("_")
    return f"{version.group(0)}_{name}.sql" if name else None


def stray_advice(file_name: str) -> str | None:
    """What to do with a file that is not ``*.sql`` but looks like a migration (None: it does
    not, e.g. README.md, and stays unmentioned)."""
    lowered = file_name.lower()
    for suffix in _COPY_SUFFIXES:
        if lowered.endswith(suffix) and lowered[: -len(suffix)].endswith(".sql"):
            return "a copy left by an editor or a tool? move it out of the migrations folder"
    suggestion = suggested_name(file_name)
    if suggestion is not None:
        return f"rename it to {suggestion}"
    return None


def _misnamed(path: Path) -> MigrationFileError:
    suggestion = suggested_name(path.name)
    direction = _DIRECTIONS.match(path.name[: -len(".sql")])
    if direction is not None and suggestion is not None:
        advice = (
            f"one file holds both directions: put the SQL of the .up.sql and .down.sql files into "
            f"{suggestion} under '-- migrate:up' and '-- migrate:down'"
        )
    elif suggestion is not None:
        advice = f"rename it to {suggestion}"
    else:
        advice = "e.g. 005_add_index.sql"
    return MigrationFileError(
        str(path),
        "file name does not match <version>_<name>.sql (version: digits; name: lower-case "
        f"letters, digits and '_'): {advice}",
    )


def parse(path: Path, raw: bytes) -> Migration:
    """Parse one file's bytes. Raises MigrationFileError naming the file and, where it can, the line."""
    match = FILE_NAME.match(path.name)
    if match is None:
        raise _misnamed(path)
    data = normalise(raw)
    return Migration(Version.of(match.group("version")), path.stem, path, sha256(data), _content(path, data))


def _content(path: Path, data: bytes, *, blank_runs: bool = False) -> Content:
    text = decode(path, data)
    up, down = split_sections(path, text, blank_runs=blank_runs)
    return Content(text, up, down)


def decode(path: Path, data: bytes) -> str:
    """``data`` as UTF-8 text; MigrationFileError naming the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MigrationFileError(
            str(path), f"line {line}: not valid UTF-8 (byte {exc.start}): save the file as UTF-8"
        ) from None


def split_sections(path: Path, text: str, *, blank_runs: bool = False) -> tuple[Section, Section | None]:
    """The up and down sections of ``text``. ``blank_runs``: a section of only comments runs as a
    no-op (another tool's files: golang-migrate, Diesel and dbmate run them so) instead of being
    the template 'dbledger new' writes, which must not run and means "no rollback" as a down."""
    lines = text.split("\n")
    markers: list[tuple[str, int, dict[str, Any]]] = []  # (kind, 0-based line, options)
    for index, line in enumerate(lines):
        found = _MARKER.match(line.strip())
        if found is None:
            continue
        kind = found.group("kind")
        if kind not in ("up", "down"):
            raise MigrationFileError(
                str(path),
                f"line {index + 1}: unknown section '-- migrate:{kind}' "
                "(expected '-- migrate:up' or '-- migrate:down')",
            )
        if any(existing == kind for existing, _, _ in markers):
            raise MigrationFileError(str(path), f"line {index + 1}: a second '-- migrate:{kind}' section")
        markers.append((kind, index, _options(path, index + 1, found.group("options"))))

    if not markers:
        return Section(sql=text, line=1, empty=_unwritten(text, blank_runs)), None

    if markers[0][0] != "up":
        raise MigrationFileError(
            str(path), f"line {markers[0][1] + 1}: '-- migrate:down' comes before '-- migrate:up'"
        )
    before = "\n".join(lines[: markers[0][1]])
    if not is_blank(before):
        raise MigrationFileError(
            str(path),
            f"line {markers[0][1] + 1}: SQL before '-- migrate:up' belongs to no section: "
            "move it below the marker",
        )

    sections: dict[str, Section] = {}
    for position, (kind, start, options) in enumerate(markers):
        end = markers[position + 1][1] if position + 1 < len(markers) else len(lines)
        body = "\n".join(lines[start + 1 : end])
        sections[kind] = Section(sql=body, line=start + 2, **options, empty=_unwritten(body, blank_runs))
    down = sections.get("down")
    if down is not None and down.empty:
        down = None  # an empty down section (as written by 'dbledger new') means "no rollback"
    return sections["up"], down


def _unwritten(sql: str, blank_runs: bool) -> bool:
    """Whether a section is a template not written yet, which no command may run: blank, and in
    another tool's layout (``blank_runs``) also holding the line 'dbledger new' wrote there."""
    return is_blank(sql) and (not blank_runs or NOT_WRITTEN in sql)


def _options(path: Path, line: int, text: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for token in text.split():
        key, sep, value = token.partition(":")
        if key in DURATION_OPTIONS and sep:
            try:
                options[key] = parse_duration(value, key)
            except ConfigError as exc:
                raise MigrationFileError(str(path), f"line {line}: {exc.message}") from None
            continue
        allowed = KNOWN_OPTIONS.get(key)
        if allowed is None or not sep:
            known = ", ".join(
                [f"{k}:{'|'.join(v)}" for k, v in KNOWN_OPTIONS.items()]
                + [f"{k}:DURATION" for k in DURATION_OPTIONS]
            )
            raise MigrationFileError(
                str(path), f"line {line}: unknown option {token!r} (known options: {known})"
            )
        if value not in allowed:
            raise MigrationFileError(
                str(path),
                f"line {line}: option {key!r} must be {' or '.join(allowed)}, not {value!r}",
            )
        options[key] = allowed[value]
    if options.get("transaction") is False and "transaction_timeout" in options:
        raise MigrationFileError(
            str(path),
            f"line {line}: transaction_timeout bounds the section's transaction, and "
            "transaction:false runs its statements outside one: bound each with statement_timeout",
        )
    return options


class Folder(NamedTuple):
    """A migrations folder as read: its migrations by version, and the files that look like
    migrations but will never run (``001_a.SQL``, ``001_a.sql.bak``), each with advice."""

    migrations: list[Migration]
    strays: list[str]
    layout: str = "dbledger"  # dbledger.config.LAYOUTS
    # Repeatable migrations (Flyway's R__name.sql, else repeatable/name.sql), by name.
    repeatables: tuple[Migration, ...] = ()
    # The hook files (before-all.sql...), each named for its event (HOOK_EVENTS).
    hooks: tuple[Migration, ...] = ()


def discover(directory: Path) -> list[Migration]:
    """The migrations of ``directory``, sorted by version (see ``read_folder``)."""
    return read_folder(directory).migrations


def read_folder(directory: Path) -> Folder:
    """Parse every ``*.sql`` file of ``directory``, sorted by version. Each file is read once.

    A file that is a symbolic link leading out of the folder, or that is not a regular file (a
    FIFO, a device, a directory), is refused before anything is read from it: a link to
    ``../credentials`` must not end up in a dry run's output or in the ledger's error text."""
    if not directory.is_dir():
        if directory.exists():
            raise ConfigError(f"migrations directory {str(directory)!r} is not a directory")
        raise ConfigError(
            f"migrations directory {str(directory)!r} does not exist: create it "
            "('dbledger new NAME' does), or point --dir / DBLEDGER_DIR at the right folder"
        )
    entries: list[os.DirEntry[str]] = []
    strays: list[str] = []
    scanned_ns = time.time_ns()  # before any file's stamp is read (dbledger.checksumcache)
    try:
        with os.scandir(directory) as listing:
            for entry in listing:
                if entry.name.startswith("."):
                    continue
                if entry.name in HOOK_FILES:
                    continue  # read by dbledger.layouts
                if entry.name.endswith(".sql"):
                    entries.append(entry)
                elif (advice := stray_advice(entry.name)) is not None:
                    strays.append(f"{entry.path}: looks like a migration but will never run: {advice}")
    except OSError as exc:
        raise ConfigError(f"cannot read migrations directory {str(directory)!r}: {exc.strerror}") from None
    entries.sort(key=lambda e: e.name)

    root = os.path.realpath(directory)
    found: dict[Version, Migration] = {}
    cache = checksumcache.location(directory)
    record = checksumcache.load(cache)
    stamps: dict[str, tuple[tuple[int, ...], str]] = {}
    read = 0
    for entry in entries:
        migration, stamp, was_read = _scan(entry, root, record)
        stamps[entry.name] = (stamp, migration.checksum)
        read += was_read
        clash = found.get(migration.version)
        if clash is not None:
            raise MigrationFileError(
                str(migration.path),
                f"version {migration.version} is also used by {clash.path.name}: "
                "each version must be unique, renumber one of them",
            )
        found[migration.version] = migration
    if read or stamps.keys() != record.entries.keys():
        checksumcache.save(cache, checksumcache.Record(scanned_ns, stamps))
    return Folder([found[v] for v in sorted(found)], sorted(strays))


def _scan(
    entry: os.DirEntry[str], root: str, record: checksumcache.Record
) -> tuple[Migration, checksumcache.FileStamp, bool]:
    """The migration in ``entry``, its stamp, and whether its bytes were read: not when the
    record vouches for its checksum (then its sections are parsed when first asked for)."""
    match = FILE_NAME.match(entry.name)
    if match is None:
        raise _misnamed(Path(entry.path))
    check_regular_file(entry, root)
    try:
        stamp = checksumcache.FileStamp.of(entry.stat())  # before the bytes are read
    except OSError as exc:
        raise MigrationFileError(entry.path, f"cannot read the file: {exc.strerror}") from None
    known = record.checksum(entry.name, stamp)
    if known is not None:
        return (
            Migration(Version.of(match.group("version")), entry.name[: -len(".sql")], entry.path, known),
            stamp,
            False,
        )
    path = Path(entry.path)
    return parse(path, _read(path)), stamp, True


def check_regular_file(entry: os.DirEntry[str] | str, root: str) -> str:
    """``entry``'s path, which must be a regular file inside ``root`` (after links). The directory
    listing already knows each entry's type, so a plain file costs no extra call."""
    path = entry if isinstance(entry, str) else entry.path
    try:
        # A path in a subfolder may lead out through a link to its folder: always resolved.
        if isinstance(entry, str) or entry.is_symlink():
            target = os.path.realpath(path)
            if os.path.commonpath([root, target]) != root:
                raise MigrationFileError(
                    path,
                    f"is a symbolic link to {target}, outside the migrations folder: copy the file "
                    "into the folder, or point --dir at the folder it belongs to",
                )
        if not (os.path.isfile(path) if isinstance(entry, str) else entry.is_file()):
            # follows a link inside the folder; checked before any open
            mode = os.stat(path).st_mode
            kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise MigrationFileError(
                path, f"is {kind}, not a regular file: a migration must be a plain SQL file"
            )
    except OSError as exc:
        raise MigrationFileError(path, f"cannot read the file: {exc.strerror}") from None
    return path


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MigrationFileError(str(path), f"cannot read the file: {exc.strerror}") from None


_FILE_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
}


# Flyway's versioned file, for the advice of a rollback without an undo file (dbledger.layouts
# reads the layout itself).
_FLYWAY_FILE = re.compile(r"^[Vv](?P<version>[0-9]+(?:[._][0-9]+)*)__(?P<description>.+)\.sql$")


def down_advice(migration: Migration) -> str:
    """What to add so that ``migration`` can be rolled back, in its layout's terms."""
    path = migration.path
    if path.name.endswith(".up.sql"):
        return f"add {path.name[: -len('.up.sql')]}.down.sql with SQL that undoes it"
    if path.name == "up.sql":
        return f"add down.sql with SQL that undoes it to {path.parent}"
    if path.name == "migration.sql":
        return "a Prisma migration has no down: undo it with a new migration"
    flyway = _FLYWAY_FILE.match(path.name)
    if flyway is not None:
        return f"add its undo file, U{flyway.group('version')}__{flyway.group('description')}.sql"
    return "add '-- migrate:down' with SQL that undoes it"
