"""``dbledger adopt --from TOOL``: another tool's history becomes dbledger's ledger.

The other tool's table is read, never written: each migration it applied is matched to its file
in the folder (by version, or by name where the tool keeps names), checked against the checksum
the tool kept where it keeps one, and written to dbledger's ledger as applied, with an "adopt"
history row saying where it came from. The next ``up`` then runs only what the other tool never
ran. Refused, with every reason at once and nothing written:

- the other tool's state is not clean: golang-migrate's ``dirty``, a failed Flyway row, a Prisma
  migration started and never finished;
- files and history disagree: a recorded migration without its file, a file changed since the
  tool applied it (Flyway's CRC32 and Prisma's SHA-256 tell), or an Alembic head nobody mapped.

Where each tool keeps its history (``--table`` names another):

- flyway: ``flyway_schema_history`` (version, script, checksum, type, success);
- golang-migrate: ``schema_migrations`` (version, dirty): one row, everything up to it applied;
- dbmate: ``schema_migrations`` (version), one row per applied migration;
- diesel: ``__diesel_schema_migrations`` (version, run_on);
- prisma: ``_prisma_migrations`` (migration_name, checksum, finished_at, rolled_back_at);
- alembic: ``alembic_version`` (version_num): only the head revision, so the user names its file
  (``--revision REV=NAME``), and every file up to it is adopted;
- yoyo: ``_yoyo_migration`` (migration_id, the file stem).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from dbledger import engine
from dbledger.backends.base import Backend
from dbledger.config import ADOPT_SOURCES
from dbledger.contracts import Progress, Version, no_progress
from dbledger.errors import LedgerStateError, UsageError
from dbledger.migrations import Migration, normalise, sha256

SOURCES = ADOPT_SOURCES
DEFAULT_TABLES = {
    "flyway": "flyway_schema_history",
    "golang-migrate": "schema_migrations",
    "dbmate": "schema_migrations",
    "diesel": "__diesel_schema_migrations",
    "prisma": "_prisma_migrations",
    "alembic": "alembic_version",
    "yoyo": "_yoyo_migration",
}
# The columns each reader needs; a table without them is not that tool's.
_NEEDS = {
    "flyway": {"installed_rank", "version", "script", "checksum", "type", "success"},
    "golang-migrate": {"version", "dirty"},
    "dbmate": {"version"},
    "diesel": {"version"},
    "prisma": {"migration_name", "checksum", "finished_at", "rolled_back_at"},
    "alembic": {"version_num"},
    "yoyo": {"migration_id"},
}


class Adoption(NamedTuple):
    """What ``adopt`` wrote (or, in a dry run, would write)."""

    tool: str
    table: str
    adopted: list[str]  # the migrations written to dbledger's ledger, in version order
    already: list[str]  # in dbledger's ledger before: adopting twice changes nothing
    pending: list[str]  # files the other tool never applied: the next 'up' runs them
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


class _Recorded(NamedTuple):
    """One migration the other tool's history holds: its version or name, and its checksum."""

    key: str
    by_name: bool  # matched to a file by its name (Prisma, yoyo, a repeatable), else by its version
    checksum: Any = None  # the tool's own checksum of the file, where it keeps one
    where: str = ""  # for a message: which row


class _History(NamedTuple):
    recorded: list[_Recorded]
    upto: Version | None = None  # every file up to this version is applied as well
    problems: tuple[str, ...] = ()


def adopt(
    backend: Backend,
    migrations: list[Migration],
    tool: str,
    *,
    repeatables: Sequence[Migration] = (),
    table: str | None = None,
    revisions: Mapping[str, str] | None = None,
    accept_checksums: bool = False,
    dry_run: bool = False,
    progress: Progress = no_progress,
) -> Adoption:
    """Write dbledger's ledger from ``tool``'s history; see the module docstring."""
    if tool not in SOURCES:
        raise UsageError(f"unknown tool {tool!r}: give one of {', '.join(SOURCES)}")
    table = table or DEFAULT_TABLES[tool]
    if table.split(".")[-1] == backend.names.table and table.count(".") == 0:
        raise UsageError(
            f"{tool}'s history is in {table}, the name dbledger's own ledger has: give dbledger's "
            'ledger another name, e.g. ledger_table = "dbledger_migrations" in [tool.dbledger] '
            "(every later command reads it there), or --ledger-table dbledger_migrations"
        )
    rows = backend.foreign_table(table)
    if rows is None:
        raise LedgerStateError(
            [
                f"there is no table {table} in {backend.database.display}: is this the database "
                f"{tool} manages? (--table names another table)"
            ]
        )
    history = _read(tool, table, rows, revisions or {}, migrations)
    chosen, problems = _match(history, [*migrations, *repeatables], tool, accept_checksums)
    if problems:
        raise LedgerStateError([*problems, f"nothing was written: {tool}'s history stays as it is"])
    adopted, already = engine.adopt(
        backend, chosen, f"adopted from {tool} ({table})", dry_run=dry_run, progress=progress
    )
    names = {m.name for m in chosen}
    pending = [m.name for m in [*migrations, *repeatables] if m.name not in names and m.name not in already]
    return Adoption(tool, table, adopted, already, pending, dry_run)


def _read(
    tool: str,
    table: str,
    rows: list[dict[str, Any]],
    revisions: Mapping[str, str],
    migrations: list[Migration],
) -> _History:
    columns = set(rows[0]) if rows else set()
    missing = _NEEDS[tool] - columns
    if rows and missing:
        raise LedgerStateError(
            [
                f"{table} is not {tool}'s history: it has no column {', '.join(sorted(missing))} "
                "(--from names the tool)"
            ]
        )
    if tool == "flyway":
        return _flyway(rows)
    if tool == "golang-migrate":
        return _golang(rows)
    if tool == "prisma":
        return _prisma(rows)
    if tool == "alembic":
        return _alembic(rows, revisions, migrations)
    if tool == "yoyo":
        return _History([_Recorded(str(r["migration_id"]), True, where="migration_id") for r in rows])
    # dbmate and Diesel: one row per applied version
    if tool == "dbmate" and "dirty" in columns:
        raise LedgerStateError(
            [f"{table} has a dirty column: it is golang-migrate's; adopt --from golang-migrate"]
        )
    return _History([_Recorded(str(r["version"]).replace("-", ""), False, where="version") for r in rows])


def _flyway(rows: list[dict[str, Any]]) -> _History:
    applied: dict[str, _Recorded] = {}
    problems: list[str] = []
    upto: Version | None = None
    for row in sorted(rows, key=lambda r: int(r["installed_rank"])):
        version, kind, script = row["version"], str(row["type"]), row["script"]
        where = f"installed_rank {row['installed_rank']}, {script}"
        if not row["success"]:
            problems.append(
                f"Flyway's history has a failed migration ({where}): clean up what it left, run "
                "'flyway repair', then adopt"
            )
        elif kind in ("SCHEMA",):
            continue
        elif kind in ("BASELINE", "SQL_BASELINE") and version is not None:
            upto = Version.of(str(version))
        elif kind in ("DELETE", "UNDO_SQL") and version is not None:
            applied.pop(str(version), None)
        elif version is not None:
            applied[str(version)] = _Recorded(str(version), False, row["checksum"], where)
        elif kind == "SQL":  # a repeatable migration: its newest run counts
            name = str(script).rsplit("/", 1)[-1].removesuffix(".sql")
            applied[f"R:{name}"] = _Recorded(name, True, row["checksum"], where)
    return _History(list(applied.values()), upto, tuple(problems))


def _golang(rows: list[dict[str, Any]]) -> _History:
    if not rows:
        return _History([])
    if len(rows) > 1:
        raise LedgerStateError([f"golang-migrate's schema_migrations holds {len(rows)} rows, not one"])
    [row] = rows
    if row["dirty"]:
        return _History(
            [],
            problems=(
                f"golang-migrate left version {row['version']} dirty: it failed halfway; fix the database "
                f"by hand, run 'migrate force {row['version']}' (or the version before it), then adopt",
            ),
        )
    version = str(row["version"])
    return _History([_Recorded(version, False, where="version")], Version.of(version))


def _prisma(rows: list[dict[str, Any]]) -> _History:
    recorded: list[_Recorded] = []
    problems: list[str] = []
    for row in rows:
        name = str(row["migration_name"])
        if row["rolled_back_at"] is not None:
            continue
        if row["finished_at"] is None:
            problems.append(
                f"Prisma's migration {name} started and never finished: fix the database, run "
                f"'prisma migrate resolve --applied {name}' (or --rolled-back), then adopt"
            )
            continue
        recorded.append(_Recorded(name, True, row["checksum"], "migration_name"))
    return _History(recorded, None, tuple(problems))


def _alembic(
    rows: list[dict[str, Any]], revisions: Mapping[str, str], migrations: list[Migration]
) -> _History:
    heads = [str(row["version_num"]) for row in rows]
    unmapped = [head for head in heads if head not in revisions]
    if unmapped:
        return _History(
            [],
            problems=tuple(
                f"alembic_version says revision {head} is applied, and dbledger cannot tell which file "
                f"holds it: name it, e.g. --revision {head}=<migration name> (the last file it covers)"
                for head in unmapped
            ),
        )
    by_name = {m.name: m for m in migrations}
    problems = [
        f"--revision {rev}={name}: there is no migration {name!r}"
        for rev, name in revisions.items()
        if name not in by_name
    ]
    if problems:
        return _History([], problems=tuple(problems))
    newest = max(by_name[revisions[head]].version for head in heads) if heads else None
    return _History([_Recorded(revisions[h], True, where=f"revision {h}") for h in heads], newest)


def _match(
    history: _History, migrations: list[Migration], tool: str, accept_checksums: bool
) -> tuple[list[Migration], list[str]]:
    """The migrations the history says are applied, and every disagreement with the files."""
    problems = list(history.problems)
    by_version = {str(m.version): m for m in migrations if m.version}
    by_name = {m.name: m for m in migrations}
    chosen: dict[str, Migration] = {}
    for recorded in history.recorded:
        key = recorded.key if recorded.by_name else str(_version_or_none(recorded.key) or recorded.key)
        migration = (by_name if recorded.by_name else by_version).get(key)
        if migration is None:
            problems.append(
                f"{tool}'s history has {recorded.key} ({recorded.where}), and no file in the folder is "
                "that migration: restore its file, or point --dir at the folder it belongs to"
            )
            continue
        changed = recorded.checksum is not None and not _same(tool, recorded.checksum, migration)
        if changed and not migration.version:
            continue  # a repeatable migration changed since: it is pending, and 'up' runs it again
        if changed and not accept_checksums:
            problems.append(
                f"{migration.path} changed since {tool} applied it (its checksum then: {recorded.checksum}): "
                "restore the file as applied, or pass --accept-checksums to adopt the file as it is now"
            )
        chosen[migration.name] = migration
    if history.upto is not None:
        for migration in migrations:
            if migration.version and migration.version <= history.upto:
                chosen.setdefault(migration.name, migration)
    # Versioned first, in order; the repeatable ones (no version) after them, as they run.
    return sorted(chosen.values(), key=lambda m: (not m.version, m.version, m.name)), problems


def _version_or_none(text: str) -> Version | None:
    try:
        return Version.of(text)
    except ValueError:
        return None


def _same(tool: str, recorded: Any, migration: Migration) -> bool:
    """Whether the tool's checksum ``recorded`` is the one of ``migration``'s file now."""
    raw = Path(migration.path).read_bytes()
    if tool == "flyway":
        return int(recorded) == flyway_checksum(raw)
    # Prisma: SHA-256 of migration.sql, of its bytes as they were (CRLF kept on Windows)
    return str(recorded) in (sha256(raw), sha256(normalise(raw)))


_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def flyway_checksum(raw: bytes) -> int:
    """Flyway's checksum of a file: CRC32 over its lines without their line breaks (a leading
    BOM dropped), as a signed 32-bit number, as flyway_schema_history keeps it."""
    text = raw.decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = _LINE_BREAKS.split(text)
    if lines and lines[-1] == "":
        lines.pop()  # a break ends the last line; it does not start another
    crc = 0
    for line in lines:
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return crc - (1 << 32) if crc >= 1 << 31 else crc
