"""Other tools' migration folders, read as they are: no file renamed, each tool's own order.

Each layout: a migration's files; its version; its name in the ledger (its identity).

- dbledger: ``003_add_users.sql``, sections by ``-- migrate:up``; 3; ``003_add_users``.
- dbmate: ``20240101120000_Add-Users.sql``, the same sections; 20240101120000; the file stem.
- golang-migrate: ``000001_init.up.sql`` and ``000001_init.down.sql``; 1; ``000001_init``.
- flyway: ``V1.1__init.sql`` and its undo ``U1.1__init.sql``; 1.1; ``V1.1__init``.
- diesel: ``2024-01-01-000000_init/`` with up.sql, down.sql; 20240101000000; the folder name.
- prisma: ``20240101000000_init/migration.sql``; 20240101000000; the folder name.

Versions are compared as each tool compares them: as numbers, Flyway's part by part (``1.10``
after ``1.9``; ``_`` separates parts as ``.`` does), Diesel's with the dashes removed. The
checksum is of the file that runs up (in dbledger's and dbmate's one file, both sections), so a
later fix to a down file is not a change to what ran. In the other tools' layouts a file of only
comments runs as a no-op and an empty down file rolls back as one, as those tools do; dbledger's
own layout refuses both, since that is the template 'dbledger new' writes.

A folder whose layout is not configured is read in the layout its files show; one that mixes
two is refused, naming a file of each.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from dbledger.contracts import REPEATABLE, Version
from dbledger.errors import ConfigError, MigrationFileError
from dbledger.migrations import (
    FILE_NAME,
    HOOK_EVENTS,
    HOOK_FILES,
    NOT_WRITTEN,
    Content,
    Folder,
    Migration,
    Section,
    check_regular_file,
    decode,
    is_blank,
    normalise,
    read_folder,
    sha256,
    split_sections,
)

_GOLANG = re.compile(r"^(?P<version>[0-9]+)_(?P<title>.*)\.(?P<direction>up|down)\.sql$")
_FLYWAY = re.compile(r"^(?P<prefix>[VvUu])(?P<version>[0-9]+(?:[._][0-9]+)*)__(?P<description>.+)\.sql$")
_FLYWAY_REPEATABLE = re.compile(r"^[Rr]__(?P<description>.+)\.sql$")
_REPEATABLE_NAME = re.compile(r"^[a-z0-9_]+\.sql$")
REPEATABLE_FOLDER = "repeatable"
_DBMATE = re.compile(r"^(?P<version>[0-9]+).*\.sql$")
_DIESEL = re.compile(r"^(?P<version>[^_]+)_(?P<name>.+)$")
_PRISMA = re.compile(r"^(?P<version>[0-9]+)_(?P<name>.+)$")
# In a Flyway file: '-- flyway:executeInTransaction=false' on a line of its own.
_FLYWAY_SETTING = re.compile(r"^--\s*flyway:(?P<key>\w+)=(?P<value>\S*)\s*$")


class Entry(NamedTuple):
    """One file or folder of the migrations folder."""

    name: str
    path: str
    is_dir: bool
    entry: os.DirEntry[str]


def listing(directory: Path) -> list[Entry]:
    """The folder's entries, hidden ones left out, sorted by name; ConfigError when the folder
    cannot be read."""
    if not directory.is_dir():
        read_folder(directory)  # raises the usual message: missing, or not a folder
    try:
        with os.scandir(directory) as found:
            entries = [
                Entry(e.name, e.path, e.is_dir(), e)
                for e in found
                if not e.name.startswith(".") and e.name not in HOOK_FILES
            ]
    except OSError as exc:
        raise ConfigError(f"cannot read migrations directory {str(directory)!r}: {exc.strerror}") from None
    return sorted(entries, key=lambda e: e.name)


def tree(directory: Path) -> list[Entry]:
    """The files of ``directory`` and of its subfolders, at any depth, as Flyway scans a location
    (hidden ones left out), sorted by name; a link to a folder is not followed."""
    found: list[Entry] = []
    for entry in listing(directory):
        if not entry.is_dir:
            found.append(entry)
        elif not entry.entry.is_symlink() and entry.name != REPEATABLE_FOLDER:
            found += tree(Path(entry.path))
    return sorted(found, key=lambda e: e.name)


def kind_of(entry: Entry) -> str | None:
    """The layout whose name ``entry`` has, or None: a file no tool would run (a README)."""
    name = entry.name
    if entry.is_dir:
        if os.path.isfile(os.path.join(entry.path, "migration.sql")):
            return "prisma"
        if os.path.isfile(os.path.join(entry.path, "up.sql")):
            return "diesel"
        return None
    if not name.endswith(".sql"):
        return None
    if _GOLANG.match(name):
        return "golang-migrate"
    if _FLYWAY.match(name) or _FLYWAY_REPEATABLE.match(name):
        return "flyway"
    if FILE_NAME.match(name):
        return "dbledger"
    return None  # dbmate's looser names are read when it is configured, never guessed


def detect(entries: list[Entry], directory: Path) -> tuple[str, str | None]:
    """The layout the files show and a file that shows it (None: an empty folder, or only
    dbledger's own names). MigrationFileError naming a file of each when they show two."""
    seen: dict[str, Entry] = {}
    for entry in entries:
        kind = kind_of(entry)
        if kind is not None and kind not in seen:
            seen[kind] = entry
    if len(seen) > 1:
        (first, one), *others = seen.items()
        named = ", ".join(f"{entry.name} for {kind}" for kind, entry in others)
        raise MigrationFileError(
            others[0][1].path,
            f"the migrations folder mixes the layouts of different tools: {one.name} is named for "
            f"{first}, {named}: a folder holds one tool's migrations; rename or move the others",
        )
    if not seen:
        return "dbledger", None
    [(kind, entry)] = seen.items()
    return kind, (None if kind == "dbledger" else entry.name)


def read(directory: Path, layout: str | None) -> tuple[Folder, str | None]:
    """The folder's migrations in ``layout`` (None: the layout its files show), its repeatable
    ones, and, when the layout was found from the files, a note saying which."""
    folder, note = _versioned(directory, layout)
    repeatables = _repeatables(directory, folder.layout)
    return folder._replace(repeatables=repeatables, hooks=_hooks(directory, folder.layout)), note


def _hooks(directory: Path, layout: str) -> tuple[Migration, ...]:
    """The hook files of the folder (HOOK_FILES), each named for its event; two files for one
    event (before-all.sql and Flyway's beforeMigrate.sql) are refused."""
    root = os.path.realpath(directory)
    found: dict[str, Migration] = {}
    for file_name, event in HOOK_FILES.items():
        path = directory / file_name
        if not os.path.lexists(path):
            continue
        if event in found:
            raise MigrationFileError(
                str(path), f"a second {event} hook, beside {found[event].path.name}: keep one of them"
            )
        path, data = _bytes(str(path), root)
        text = decode(path, data)
        up, down = split_sections(path, text, blank_runs=True)
        if down is not None:
            raise MigrationFileError(
                str(path), "a hook has no down section: remove '-- migrate:down' and what follows"
            )
        if not up.transaction:
            raise MigrationFileError(
                str(path),
                "a hook runs in a transaction (its migration's, or its own): remove transaction:false",
            )
        found[event] = Migration(REPEATABLE, event, path, sha256(data), Content(text, up, None))
    return tuple(found[event] for event in HOOK_EVENTS if event in found)


def _versioned(directory: Path, layout: str | None) -> tuple[Folder, str | None]:
    """dbledger's own folders, the common case at every start, are read first as such; only a
    folder that is not one is looked at again."""
    if layout == "dbledger":
        return read_folder(directory), None
    note = None
    if layout is None:
        own, refused = _own(directory)
        if own is not None and own.migrations:
            return own, None
        entries = listing(directory)
        layout, evidence = detect(entries, directory)
        if evidence is None and any(e.is_dir for e in entries):  # Flyway's files in subfolders
            deep = [
                e.name for e in tree(directory) if _FLYWAY.match(e.name) or _FLYWAY_REPEATABLE.match(e.name)
            ]
            layout, evidence = ("flyway", deep[0]) if deep else (layout, None)
        if evidence is None:  # dbledger's own names, or none at all
            if own is None:
                raise refused or ConfigError(f"cannot read migrations directory {str(directory)!r}")
            return own, None
        note = (
            f"reading {directory} in {layout}'s layout (from {evidence}); set "
            f'layout = "{layout}" in [tool.dbledger] to say so'
        )
    else:
        entries = listing(directory)
        found, evidence = detect(entries, directory)
        if evidence is not None and found != layout:
            raise ConfigError(
                f"layout is {layout!r}, but {evidence} in {str(directory)!r} is named for {found}: "
                f'rename it in {layout}\'s way, or set layout = "{found}"'
            )
    if layout == "flyway":  # Flyway reads its location's subfolders too
        entries = tree(directory)
    migrations, strays = _READERS[layout](entries, os.path.realpath(directory))
    return Folder(_unique(migrations), strays, layout), note


def _repeatables(directory: Path, layout: str) -> tuple[Migration, ...]:
    """Flyway's ``R__<description>.sql`` files; in every other layout the ``repeatable/``
    folder's ``<name>.sql`` files, in dbledger's format (markers and their options), named
    ``repeatable/<name>`` in the ledger. A repeatable migration has no down section."""
    root = os.path.realpath(directory)
    found: list[Migration] = []
    if layout == "flyway":
        for entry in tree(directory):
            if entry.is_dir or not _FLYWAY_REPEATABLE.match(entry.name):
                continue
            path, data = _bytes(entry.entry, root)
            text = decode(path, data)
            up = _whole(path, data, transaction=_flyway_transaction(path, text, root))
            found.append(
                Migration(REPEATABLE, entry.name[: -len(".sql")], path, sha256(data), Content(text, up, None))
            )
        return tuple(sorted(found, key=lambda m: m.name))
    folder = directory / REPEATABLE_FOLDER
    if not folder.is_dir():
        return ()
    for entry in listing(folder):
        if entry.is_dir or not entry.name.endswith(".sql"):
            continue
        path = Path(entry.path)
        if not _REPEATABLE_NAME.match(entry.name):
            raise MigrationFileError(
                entry.path, "a repeatable migration's name is <name>.sql (lower-case letters, digits and '_')"
            )
        path, data = _bytes(entry.entry, root)
        text = decode(path, data)
        up, down = split_sections(path, text, blank_runs=layout != "dbledger")
        if down is not None:
            raise MigrationFileError(
                entry.path,
                "a repeatable migration has no down section: it runs again whenever it changes; "
                "remove '-- migrate:down' and what follows",
            )
        name = f"{REPEATABLE_FOLDER}/{entry.name[: -len('.sql')]}"
        found.append(Migration(REPEATABLE, name, path, sha256(data), Content(text, up, None)))
    return tuple(found)


def _own(directory: Path) -> tuple[Folder | None, MigrationFileError | None]:
    """The folder read in dbledger's layout, or why it is not one (V1__init.sql: perhaps
    another tool's folder)."""
    try:
        return read_folder(directory), None
    except MigrationFileError as exc:
        return None, exc


def _unique(migrations: list[Migration]) -> list[Migration]:
    """``migrations`` sorted by version; MigrationFileError naming both files of a version used twice."""
    by_version: dict[Version, Migration] = {}
    for migration in migrations:
        clash = by_version.get(migration.version)
        if clash is not None:
            raise MigrationFileError(
                str(migration.path),
                f"version {migration.version} is also used by {clash.path}: each version must be "
                "unique, renumber one of them",
            )
        by_version[migration.version] = migration
    return [by_version[v] for v in sorted(by_version)]


def _bytes(entry: os.DirEntry[str] | str, root: str) -> tuple[Path, bytes]:
    """A regular file's path and its normalised bytes (a link out of the folder refused)."""
    path = check_regular_file(entry, root)
    try:
        return Path(path), normalise(Path(path).read_bytes())
    except OSError as exc:
        raise MigrationFileError(path, f"cannot read the file: {exc.strerror}") from None


def _whole(path: Path, data: bytes, *, transaction: bool | None = None) -> Section:
    """A file that is one section, as the other tools run it: no markers read. ``transaction``
    None: as golang-migrate and Flyway run a file, in a transaction unless its statements cannot
    run in one (its own BEGIN/COMMIT, CREATE INDEX CONCURRENTLY); the preflight decides. A file
    of only comments runs as a no-op, unless it is what 'dbledger new' wrote (NOT_WRITTEN)."""
    text = decode(path, data)
    return Section(
        sql=text,
        line=1,
        transaction=transaction is not False,
        empty=is_blank(text) and NOT_WRITTEN in text,
        path=path,
        auto_transaction=transaction is None,
    )


def _written(down: Section) -> Section | None:
    """A down file, or None while it is what 'dbledger new' wrote: no rollback yet (an empty one
    the user left is a no-op rollback, as the tools run it)."""
    return None if down.empty else down


def _stray(path: str, layout: str, example: str) -> str:
    return f"{path}: looks like a migration but will never run: not a {layout} name (e.g. {example})"


Reader = Callable[[list[Entry], str], tuple[list[Migration], list[str]]]


def _dbmate(entries: list[Entry], root: str) -> tuple[list[Migration], list[str]]:
    """dbmate: ``<digits><anything>.sql``, one file with ``-- migrate:up`` / ``-- migrate:down``."""
    found: list[Migration] = []
    strays: list[str] = []
    for entry in entries:
        match = _DBMATE.match(entry.name) if not entry.is_dir else None
        if match is None:
            if entry.name.endswith(".sql"):
                strays.append(_stray(entry.path, "dbmate", "20240101120000_add_users.sql"))
            continue
        path, data = _bytes(entry.entry, root)
        text = decode(path, data)
        up, down = split_sections(path, text, blank_runs=True)
        migration = Migration(
            Version.of(match.group("version")),
            entry.name[: -len(".sql")],
            path,
            sha256(data),
            Content(text, up, down),
        )
        found.append(migration)
    return found, strays


def _golang(entries: list[Entry], root: str) -> tuple[list[Migration], list[str]]:
    """golang-migrate: ``<version>_<title>.up.sql`` and, optionally, ``.down.sql``."""
    pairs: dict[str, dict[str, tuple[str, Entry]]] = {}
    strays: list[str] = []
    for entry in entries:
        match = _GOLANG.match(entry.name) if not entry.is_dir else None
        if match is None:
            if entry.name.endswith(".sql"):
                strays.append(_stray(entry.path, "golang-migrate", "000001_create_users.up.sql"))
            continue
        stem = entry.name[: -len(f".{match.group('direction')}.sql")]
        pairs.setdefault(stem, {})[match.group("direction")] = (match.group("version"), entry)
    found: list[Migration] = []
    for stem, files in pairs.items():
        if "up" not in files:
            _, lone = files["down"]
            raise MigrationFileError(
                lone.path, f"a down file without its up file: add {stem}.up.sql, or remove this one"
            )
        version, up_entry = files["up"]
        path, data = _bytes(up_entry.entry, root)
        down = None
        if "down" in files:
            down_path, down_data = _bytes(files["down"][1].entry, root)
            down = _written(_whole(down_path, down_data))
        found.append(_migration(version, stem, path, data, _whole(path, data), down))
    return found, strays


def _flyway(entries: list[Entry], root: str) -> tuple[list[Migration], list[str]]:
    """Flyway: ``V<version>__<description>.sql``, its undo ``U<version>__<description>.sql``, and
    the settings of a ``.sql.conf`` file beside it or ``-- flyway:`` lines in it."""
    versioned: dict[Version, Entry] = {}
    undo: dict[Version, Entry] = {}
    strays: list[str] = []
    for entry in entries:
        match = _FLYWAY.match(entry.name) if not entry.is_dir else None
        if match is None:
            if entry.name.endswith(".sql") and not _FLYWAY_REPEATABLE.match(entry.name):
                strays.append(_stray(entry.path, "Flyway", "V1__create_users.sql"))
            continue
        version = Version.of(match.group("version"))
        into = undo if match.group("prefix") in "Uu" else versioned
        clash = into.get(version)
        if clash is not None:  # V1__a.sql and V1.0__b.sql, or V1__a.sql and V001__b.sql
            raise MigrationFileError(
                entry.path,
                f"version {version} is also used by {clash.name}: each version must be unique, "
                "renumber one of them",
            )
        into[version] = entry
    for version, entry in undo.items():
        if version not in versioned:
            raise MigrationFileError(
                entry.path, f"an undo file for version {version}, which has no V{version}__ file"
            )
    found: list[Migration] = []
    for version, entry in versioned.items():
        path, data = _bytes(entry.entry, root)
        up = _whole(path, data, transaction=_flyway_transaction(path, decode(path, data), root))
        down = None
        if version in undo:
            undo_path, undo_data = _bytes(undo[version].entry, root)
            undo_text = decode(undo_path, undo_data)
            down = _whole(undo_path, undo_data, transaction=_flyway_transaction(undo_path, undo_text, root))
        found.append(
            Migration(version, entry.name[: -len(".sql")], path, sha256(data), Content(up.sql, up, down))
        )
    return found, strays


def _flyway_transaction(path: Path, text: str, root: str) -> bool | None:
    """What the file's settings say of ``executeInTransaction``; None when they say nothing (then,
    as Flyway does, the statements decide)."""
    settings: dict[str, tuple[str, str]] = {}  # key: (value, where)
    conf = Path(f"{path}.conf")
    if conf.exists():
        conf_path, conf_data = _bytes(str(conf), root)
        for number, line in enumerate(decode(conf_path, conf_data).split("\n"), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                key, sep, value = line.partition("=")
                if not sep:
                    raise MigrationFileError(
                        str(conf), f"line {number}: expected key=value, not {line.strip()!r}"
                    )
                settings[key.strip()] = (value.strip(), f"{conf}: line {number}")
    for number, line in enumerate(text.split("\n"), 1):
        setting = _FLYWAY_SETTING.match(line.strip())
        if setting is not None:
            settings[setting.group("key")] = (setting.group("value"), f"{path}: line {number}")
    transaction = None
    for key, (value, where) in settings.items():
        if key == "encoding" and value.replace("-", "").lower() == "utf8":
            continue  # dbledger reads every file as UTF-8
        if key != "executeInTransaction":
            raise MigrationFileError(
                where,
                f"unknown Flyway script setting {key!r} (dbledger reads executeInTransaction, and "
                "encoding=UTF-8)",
            )
        if value.lower() not in ("true", "false"):
            raise MigrationFileError(where, f"executeInTransaction must be true or false, not {value!r}")
        transaction = value.lower() == "true"
    return transaction


def _diesel(entries: list[Entry], root: str) -> tuple[list[Migration], list[str]]:
    """Diesel: a folder ``<version>_<name>`` with ``up.sql``, ``down.sql`` and, optionally,
    ``metadata.toml`` (``run_in_transaction = false``); the version is the name before the first
    ``_`` with its dashes removed."""
    found: list[Migration] = []
    strays: list[str] = []
    for entry in entries:
        if not entry.is_dir:
            if entry.name.endswith(".sql"):
                strays.append(_stray(entry.path, "Diesel", "2024-01-01-000000_create_users/up.sql"))
            continue
        match = _DIESEL.match(entry.name)
        digits = match.group("version").replace("-", "") if match else ""
        if match is None or not (digits.isascii() and digits.isdigit()):
            if os.path.isfile(os.path.join(entry.path, "up.sql")):
                raise MigrationFileError(
                    entry.path,
                    "folder name does not match <version>_<name> (version: digits and '-', e.g. "
                    "2024-01-01-000000_create_users)",
                )
            continue
        up_path, up_data = _bytes(os.path.join(entry.path, "up.sql"), root)
        transaction = _diesel_transaction(Path(entry.path) / "metadata.toml", root)
        down = None
        if os.path.exists(os.path.join(entry.path, "down.sql")):
            down_path, down_data = _bytes(os.path.join(entry.path, "down.sql"), root)
            down = _written(_whole(down_path, down_data, transaction=transaction))
        up = _whole(up_path, up_data, transaction=transaction)
        found.append(_migration(digits, entry.name, up_path, up_data, up, down))
    return found, strays


def _diesel_transaction(metadata: Path, root: str) -> bool:
    if not metadata.exists():
        return True
    import tomllib

    path, data = _bytes(str(metadata), root)
    try:
        values = tomllib.loads(decode(path, data))
    except tomllib.TOMLDecodeError as exc:
        raise MigrationFileError(str(metadata), f"not valid TOML: {exc}") from None
    unknown = sorted(set(values) - {"run_in_transaction"})
    if unknown:
        raise MigrationFileError(
            str(metadata), f"unknown key {unknown[0]!r} (Diesel's metadata.toml has run_in_transaction)"
        )
    value = values.get("run_in_transaction", True)
    if not isinstance(value, bool):
        raise MigrationFileError(str(metadata), f"run_in_transaction must be true or false, not {value!r}")
    return value


def _prisma(entries: list[Entry], root: str) -> tuple[list[Migration], list[str]]:
    """Prisma: a folder ``<timestamp>_<name>`` with ``migration.sql``, which has no down."""
    found: list[Migration] = []
    strays: list[str] = []
    for entry in entries:
        if not entry.is_dir:
            if entry.name.endswith(".sql"):
                strays.append(_stray(entry.path, "Prisma", "20240101000000_init/migration.sql"))
            continue
        match = _PRISMA.match(entry.name)
        has_file = os.path.isfile(os.path.join(entry.path, "migration.sql"))
        if match is None:
            if has_file:
                raise MigrationFileError(
                    entry.path, "folder name does not match <timestamp>_<name> (e.g. 20240101000000_init)"
                )
            continue
        if not has_file:
            raise MigrationFileError(entry.path, "a Prisma migration folder without migration.sql")
        path, data = _bytes(os.path.join(entry.path, "migration.sql"), root)
        found.append(_migration(match.group("version"), entry.name, path, data, _whole(path, data), None))
    return found, strays


def _migration(
    version: str, name: str, path: Path, data: bytes, up: Section, down: Section | None
) -> Migration:
    """A migration whose up file is ``path``: what is checksummed and kept in the ledger."""
    return Migration(Version.of(version), name, path, sha256(data), Content(up.sql, up, down))


_READERS: dict[str, Reader] = {
    "dbmate": _dbmate,
    "golang-migrate": _golang,
    "flyway": _flyway,
    "diesel": _diesel,
    "prisma": _prisma,
}
