"""The Python API: one plain function per command. The command line and the integrations call
these and nothing below them.

Each function takes the database URL, the migrations directory, the ledger table and the target
``schema`` (``None`` means: resolve them from the environment, ``pyproject.toml`` and the defaults,
as the command line does), resolves them once, reports which it uses through
``progress("using", ...)``, and raises a ``DbledgerError`` on any failure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from dbledger import engine
from dbledger.backends import open_backend
from dbledger.backends.base import Backend, poll_intervals
from dbledger.config import (
    DEFAULT_LOCK_TIMEOUT,
    MAX_LOCK_TIMEOUT,
    Settings,
    WaitPolicy,
    check_connect_timeout,
    check_lease_ttl,
    check_lock_mode,
    check_lock_timeout,
    check_wait_policy,
    parse_database_url,
    resolve,
)
from dbledger.contracts import Applied, LedgerRow, Progress, RolledBack, no_progress
from dbledger.errors import (
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    DriftFound,
    LedgerStateError,
    NotMigrated,
    UsageError,
)
from dbledger.ledger import LEDGER_VERSION
from dbledger.migrations import FILE_NAME, Folder, Migration, read_folder
from dbledger.plan import Allowances, Plan, make_plan

if TYPE_CHECKING:
    from dbledger.drift import Drift
    from dbledger.dryrun import DryRun

PathLike = str | os.PathLike[str]
Repaired = engine.Repaired

__all__ = ["Applied", "Repaired", "Report", "RolledBack", "Status"]


@dataclass(frozen=True)
class Report:
    """What ``migrate`` did."""

    database: str  # redacted
    directory: str
    applied: list[Applied]
    backup: dict[str, str] | None = None  # path, sha256, restore_command when --backup took one

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "directory": self.directory,
            "backup": self.backup,
            "applied": [
                {
                    "name": a.name,
                    "version": a.version,
                    "execution_time_ms": a.execution_time_ms,
                    "checksum": a.checksum,
                }
                for a in self.applied
            ],
        }


def _row_dict(row: LedgerRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "version": row.version,
        "state": row.state,
        "checksum": row.checksum,
        "applied_at": row.applied_at,
        "applied_order": row.applied_order,
        "execution_time_ms": row.execution_time_ms,
        "error_message": row.error_message,
    }


@dataclass(frozen=True)
class Status:
    """The files and the ledger side by side (``plan``), for ``status`` and ``verify``."""

    database: str
    directory: str
    plan: Plan
    ledger_exists: bool
    problems: list[str] = field(default_factory=list)
    # With check_schema: the recorded and the live fingerprint ({"expected", "found", "drifted"}),
    # and when they differ "differences" (each Difference.to_dict(), with its severity).
    schema: dict[str, Any] | None = None
    ledger_format: int | None = None
    # verify: the history chain's head hash and what breaks it ({"head", "problems"}).
    history: dict[str, Any] | None = None

    @property
    def version(self) -> int | None:
        return self.plan.current_version

    @property
    def clean(self) -> bool:
        """No problem, no failed migration: what a health check wants."""
        return not self.problems and not self.plan.failed

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "database": self.database,
            "directory": self.directory,
            "ledger_exists": self.ledger_exists,
            "ledger_format": self.ledger_format,
            "version": self.version,
            "applied": [_row_dict(r) for r in plan.applied],
            "applied_in_version_order": not plan.order_differs,
            "pending": [
                {
                    "name": m.name,
                    "version": m.version,
                    "checksum": m.checksum,
                    "transaction": m.up.transaction,
                }
                for m in plan.pending
            ],
            "running": [_row_dict(r) for r in plan.running],
            "failed": [_row_dict(r) for r in plan.failed],
            "modified": [_modified_dict(m, row, plan) for m, row in plan.modified],
            "renamed": [{**_row_dict(row), "renamed_to": m.name} for m, row in plan.renamed],
            "missing": [_row_dict(r) for r in plan.missing],
            "out_of_order": [{"name": m.name, "version": m.version} for m in plan.out_of_order],
            "dirty": [_row_dict(r) for r in plan.dirty],
            "problems": self.problems,
            "schema": self.schema,
            "history": self.history,
        }


def _modified_dict(migration: Migration, row: LedgerRow, plan: Plan) -> dict[str, Any]:
    """A changed applied file: its row, the checksum on disk, and how it changed."""
    edit = plan.edit(row.name)
    return {
        **_row_dict(row),
        "checksum_on_disk": migration.checksum,
        "checksum_algorithm": row.checksum_algorithm,
        "change": None if edit is None else edit.kind,
        "change_reason": None if edit is None else edit.reason,
        "diff": [] if edit is None else list(edit.diff),
    }


class _Locks(NamedTuple):
    """The lock and wait options every writing function takes; None keeps the configuration's."""

    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    waits: WaitPolicy | Mapping[str, Any] | None = None  # a whole policy, or the fields to change
    lock_mode: str | None = None
    lease_ttl: float | None = None

    def over(self, settings: Settings) -> Settings:
        """``settings`` with these options in place of the configuration's, each checked."""
        if self.waits is not None:
            chosen = (
                self.waits if isinstance(self.waits, WaitPolicy) else settings.waits._replace(**self.waits)
            )
            settings = replace(settings, waits=check_wait_policy(chosen))
        if self.lock_mode is not None:
            settings = replace(settings, lock_mode=check_lock_mode(self.lock_mode))
        if self.lease_ttl is not None:
            settings = replace(settings, lease_ttl=check_lease_ttl(self.lease_ttl))
        return settings


@contextmanager
def _session(
    database_url: str | None,
    directory: PathLike | None,
    ledger_table: str | None,
    connect_timeout: float | None,
    progress: Progress,
    *,
    locks: _Locks | None = None,
    reading: bool = False,
    schema: str | None = None,
) -> Iterator[tuple[Settings, list[Migration], Backend]]:
    """Resolve the settings once, say which are used, read the files (a malformed one fails
    before any connection), and open the database. ``reading``: the command only reads, so a
    database that does not exist yet is worth a note. ``locks``: a writing command's lock and
    wait options, over the configuration's."""
    locks = locks or _Locks()
    check_lock_timeout(locks.lock_timeout)
    settings = locks.over(_settings(database_url, directory, ledger_table, progress, schema=schema))
    migrations = _read_folder(settings, progress).migrations
    with _open(
        settings, progress, lock_timeout=locks.lock_timeout, connect_timeout=connect_timeout
    ) as backend:
        if reading and (absent := backend.absence()) is not None:
            progress("note", absent, None)
        yield settings, migrations, backend


def _read_folder(settings: Settings, progress: Progress) -> Folder:
    folder = read_folder(settings.directory)
    for stray in folder.strays:
        progress("warning", stray, None)
    return folder


def _settings(
    database_url: str | None,
    directory: PathLike | None,
    ledger_table: str | None,
    progress: Progress,
    *,
    schema: str | None = None,
) -> Settings:
    settings = resolve(database_url, directory, ledger_table=ledger_table, schema=schema)
    progress("using", settings.describe(), None)
    for warning in settings.warnings:
        progress("warning", warning, None)
    return settings


def _open(
    settings: Settings,
    progress: Progress,
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    connect_timeout: float | None = None,
) -> Backend:
    """The database, connected; ``progress("busy", ...)`` says what it waits for, while it does."""
    if connect_timeout is not None:
        check_connect_timeout(connect_timeout)
    return open_backend(
        settings.database,
        settings.ledger,
        lock_timeout=lock_timeout,
        connect_timeout=connect_timeout,
        on_busy=lambda holder: progress("busy", holder, None),
        on_note=lambda text: progress("note", text, None),
        waits=settings.waits,
        lock_mode=settings.lock_mode,
        lease_ttl=settings.lease_ttl,
    )


def migrate(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    to: int | None = None,
    allow_out_of_order: bool = False,
    allow_missing: bool = False,
    allow_existing_schema: bool = False,
    atomic: bool = False,
    backup_dir: PathLike | None = None,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    waits: WaitPolicy | Mapping[str, Any] | None = None,
    lock_mode: str | None = None,
    lease_ttl: float | None = None,
    progress: Progress | None = None,
) -> Report:
    """Apply every pending migration (up to version ``to``), or raise a DbledgerError.

    Safe to call from every replica of an application at the same moment: one applies, the
    others wait for the lock and find nothing left to do.
    """
    report = progress or no_progress
    options = engine.UpOptions(
        to, Allowances(allow_out_of_order, allow_missing), allow_existing_schema, atomic
    )
    with _session(
        database_url,
        directory,
        ledger_table,
        connect_timeout,
        report,
        locks=_Locks(lock_timeout, waits, lock_mode, lease_ttl),
        schema=schema,
    ) as (
        settings,
        migrations,
        backend,
    ):
        done = engine.up(
            backend,
            migrations,
            options,
            backup_dir=None if backup_dir is None else Path(backup_dir),
            progress=report,
        )
    backup = None if done.backup is None else done.backup._asdict()
    return Report(settings.database.display, str(settings.directory), done.applied, backup)


def status(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    check_schema: bool = True,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    progress: Progress | None = None,
) -> Status:
    """Read the ledger and the files; change nothing (not even create the ledger table). With
    ``check_schema``, also compare the live schema's fingerprint with the one the last run
    recorded (an introspection: ~10 ms for 10 tables, ~250 ms for 1000, see docs/drift.md)."""
    with _session(
        database_url,
        directory,
        ledger_table,
        connect_timeout,
        progress or no_progress,
        reading=True,
        schema=schema,
    ) as session:
        return _inspect(*session, check_schema=check_schema)


def wait_until_migrated(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    timeout: float = 300.0,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    progress: Progress | None = None,
) -> Status:
    """Return once every migration in the folder is applied: for a replica that does not migrate
    while another process (a Job, an init container) runs ``up``. A database that is not up yet
    is waited for too. Raises NotMigrated after ``timeout`` seconds, or at once when a migration
    failed, is dirty with no run at work on it, or was changed after it was applied."""
    import time

    if not 0 < timeout <= MAX_LOCK_TIMEOUT:
        raise ConfigError(
            f"invalid wait timeout {timeout!r}: give seconds above 0, at most {MAX_LOCK_TIMEOUT:g}"
        )
    report = progress or no_progress
    settings = _settings(database_url, directory, ledger_table, report, schema=schema)
    migrations = _read_folder(settings, report).migrations
    deadline = time.monotonic() + timeout
    intervals = poll_intervals(start=0.2, cap=2.0)
    told = ""
    while True:
        try:
            with _open(settings, report, connect_timeout=connect_timeout) as backend:
                found = _inspect(settings, migrations, backend, check_schema=False)
            waiting = _still_to_come(found.plan)
        except (DatabaseUnavailable, DatabaseError) as exc:  # not up yet, or restarting
            waiting = f"the database: {exc.message.splitlines()[0]}"
        if not waiting:
            return found
        if waiting != told:
            report("busy", waiting, None)
            told = waiting
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotMigrated(f"gave up after waiting {timeout:g} s for {waiting}")
        time.sleep(min(next(intervals), left))


def _still_to_come(plan: Plan) -> str:
    """What a waiting replica still waits for, in words ("" when every file is applied); raises
    NotMigrated for what waiting cannot mend."""
    stuck = [f"migration '{r.name}' failed" for r in plan.failed]
    stuck += [
        f"migration '{r.name}' is dirty (it may be half applied)" for r in plan.dirty if r not in plan.running
    ]
    stuck += [f"migration '{m.name}' was changed after it was applied" for m, _ in plan.modified]
    if stuck:
        raise NotMigrated("; ".join(stuck) + ": waiting cannot mend this; see 'dbledger status'")
    coming = [m.name for m in plan.pending] + [r.name for r in plan.running]
    if not coming:
        return ""
    shown = ", ".join(coming[:3]) + (f" and {len(coming) - 3} more" if len(coming) > 3 else "")
    return f"{len(coming)} migration(s) to be applied by another run: {shown}"


def _inspect(
    settings: Settings,
    migrations: list[Migration],
    backend: Backend,
    *,
    check_schema: bool,
    check_history: bool = False,
) -> Status:
    snapshot = backend.read_ledger()
    rows = snapshot.rows if snapshot is not None else ()
    # A dirty row whose runner still holds the lock is a transaction:false migration at work.
    running = backend.lock_holders() if any(row.state == "dirty" for row in rows) else frozenset()
    plan = make_plan(migrations, rows, running)
    if plan.modified:
        sources = engine.applied_sources(backend, snapshot, migrations)
        plan.classify_edits(lambda name: sources.get(name), backend.dialect)
    problems = plan.problems()
    for row in plan.failed:
        problems.append(
            f"migration '{row.name}' failed at {row.applied_at}: "
            f"{(row.error_message or 'no error recorded').splitlines()[0]}; fix the file and run "
            "'dbledger up' again, or 'dbledger repair' to clear the record"
        )
    schema = None
    if check_schema and (recorded := backend.latest_schema()) is not None:
        from dbledger.schema import diff, fingerprint
        from dbledger.schema.storage import loads

        model = backend.introspect()
        found = fingerprint(model)
        schema = {"expected": recorded[0], "found": found, "drifted": found != recorded[0]}
        if schema["drifted"]:  # each difference with its severity, for /health (no more I/O)
            schema["differences"] = [d.to_dict() for d in diff(loads(recorded[1]), model)]
            problems.append(
                f"the live schema differs from the one recorded after the last migration run "
                f"(fingerprint {recorded[0][:12]}… recorded, {found[:12]}… now): run 'dbledger drift' "
                "to see how"
            )
    history = _history_check(backend, snapshot.version, rows) if check_history and snapshot else None
    if history is not None:
        problems += history["problems"]
    return Status(
        settings.database.display,
        str(settings.directory),
        plan,
        snapshot is not None,
        problems,
        schema,
        None if snapshot is None else snapshot.version,
        history,
    )


def _history_check(backend: Backend, version: int, rows: tuple[LedgerRow, ...]) -> dict[str, Any]:
    """The history chain and the ledger rows against it (tamper evidence)."""
    from dbledger import chain  # only verify checks the chain

    if version < LEDGER_VERSION:
        return {
            "head": None,
            "problems": [],
            "note": f"ledger format {version} has no chain yet: 'dbledger up' upgrades it",
        }
    history = backend.history()
    problems = chain.chain_problems(history) + chain.ledger_problems(history, rows)
    return {"head": chain.head(history), "rows": len(history), "problems": problems}


def verify(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    strict: bool = False,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    progress: Progress | None = None,
) -> Status:
    """Like ``status``, and also check the history chain and that every ledger row is what its
    history says; raise LedgerStateError when a check fails (and, with ``strict``, when anything
    is pending: the incident's "written but never applied")."""
    report = progress or no_progress
    settings = _settings(database_url, directory, ledger_table, report, schema=schema)
    folder = _read_folder(settings, report)  # read once: its strays fail verify too
    with _open(settings, report, connect_timeout=connect_timeout) as backend:
        if (absent := backend.absence()) is not None:
            report("note", absent, None)
        result = _inspect(settings, folder.migrations, backend, check_schema=False, check_history=True)
    problems = list(result.problems) + folder.strays
    if strict:
        problems += [
            f"migration '{m.name}' is pending: it exists on disk but was never applied; run 'dbledger up'"
            for m in result.plan.pending
            if m not in result.plan.out_of_order
        ]
        problems += [
            f"migration '{row.name}' is still running (transaction:false, under the lock of {row.runner})"
            for row in result.plan.running
        ]
    if problems:
        raise LedgerStateError(problems)
    return result


def repair(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    forget_missing: bool = False,
    accept: Iterable[str] = (),
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    waits: WaitPolicy | Mapping[str, Any] | None = None,
    lock_mode: str | None = None,
    lease_ttl: float | None = None,
    progress: Progress | None = None,
) -> list[Repaired]:
    """Accept modified checksums, record renamed files, clear failed and dirty records (and,
    with ``forget_missing``, records whose files are gone); every change is recorded. A file
    changed semantically (other statements) is accepted only when ``accept`` names it."""
    report = progress or no_progress
    with _session(
        database_url,
        directory,
        ledger_table,
        connect_timeout,
        report,
        locks=_Locks(lock_timeout, waits, lock_mode, lease_ttl),
        schema=schema,
    ) as (
        _,
        migrations,
        backend,
    ):
        return engine.repair(
            backend, migrations, forget_missing=forget_missing, accept=frozenset(accept), progress=report
        )


def baseline(
    version: int,
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    verify: bool = False,
    shadow_url: str | None = None,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    waits: WaitPolicy | Mapping[str, Any] | None = None,
    lock_mode: str | None = None,
    lease_ttl: float | None = None,
    progress: Progress | None = None,
) -> list[str]:
    """Mark migrations up to ``version`` as applied without running them."""
    report = progress or no_progress
    shadow = None if shadow_url is None else parse_database_url(shadow_url)
    with _session(
        database_url,
        directory,
        ledger_table,
        connect_timeout,
        report,
        locks=_Locks(lock_timeout, waits, lock_mode, lease_ttl),
        schema=schema,
    ) as (
        _,
        migrations,
        backend,
    ):
        return engine.baseline(backend, migrations, version, verify=verify, shadow=shadow, progress=report)


def down(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    steps: int | None = None,
    to: int | None = None,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    waits: WaitPolicy | Mapping[str, Any] | None = None,
    lock_mode: str | None = None,
    lease_ttl: float | None = None,
    progress: Progress | None = None,
) -> list[RolledBack]:
    """Roll back the newest ``steps`` applied migrations (default 1), or every one above version
    ``to`` (``to=0``: all), with their down sections; refuses before running anything when one
    cannot be rolled back."""
    report = progress or no_progress
    with _session(
        database_url,
        directory,
        ledger_table,
        connect_timeout,
        report,
        locks=_Locks(lock_timeout, waits, lock_mode, lease_ttl),
        schema=schema,
    ) as (
        _,
        migrations,
        backend,
    ):
        return engine.down(backend, migrations, steps=steps, target=to, progress=report)


def redo(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    waits: WaitPolicy | Mapping[str, Any] | None = None,
    lock_mode: str | None = None,
    lease_ttl: float | None = None,
    progress: Progress | None = None,
) -> tuple[RolledBack | None, list[Applied]]:
    """Roll back the newest applied migration and apply it again; (None, []) when nothing is applied."""
    report = progress or no_progress
    with _session(
        database_url,
        directory,
        ledger_table,
        connect_timeout,
        report,
        locks=_Locks(lock_timeout, waits, lock_mode, lease_ttl),
        schema=schema,
    ) as (
        _,
        migrations,
        backend,
    ):
        return engine.redo(backend, migrations, progress=report)


def plan_migrate(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    to: int | None = None,
    allow_out_of_order: bool = False,
    allow_missing: bool = False,
    allow_existing_schema: bool = False,
    atomic: bool = False,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    waits: WaitPolicy | Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> DryRun:
    """What ``migrate`` would do, statement by statement, analysed; changes nothing. Refuses
    exactly what ``migrate`` would refuse, with the same error."""
    from dbledger import dryrun  # only for dry runs: every replica imports this module

    options = engine.UpOptions(
        to, Allowances(allow_out_of_order, allow_missing), allow_existing_schema, atomic
    )
    with _session(
        database_url,
        directory,
        ledger_table,
        connect_timeout,
        progress or no_progress,
        reading=True,
        schema=schema,
        locks=_Locks(waits=waits),
    ) as (
        settings,
        migrations,
        backend,
    ):
        work = engine.prepare_up(backend, migrations, options, backend.read_ledger())
        planned = dryrun.planned(work, backend.annotator(calibrate=True, live=True))
    waits = settings.waits if backend.dialect_name == "postgresql" else None
    return dryrun.DryRun(settings.database.display, str(settings.directory), "up", atomic, planned, waits)


def plan_down(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    steps: int | None = None,
    to: int | None = None,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    waits: WaitPolicy | Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> DryRun:
    """What ``down`` would roll back, statement by statement, analysed; changes nothing."""
    from dbledger import dryrun

    with _session(
        database_url,
        directory,
        ledger_table,
        connect_timeout,
        progress or no_progress,
        reading=True,
        schema=schema,
        locks=_Locks(waits=waits),
    ) as (
        settings,
        migrations,
        backend,
    ):
        work = engine.prepare_down(backend, migrations, backend.read_ledger(), steps=steps, target=to)
        planned = dryrun.planned(work, backend.annotator(calibrate=True, live=True))
    waits = settings.waits if backend.dialect_name == "postgresql" else None
    return dryrun.DryRun(settings.database.display, str(settings.directory), "down", False, planned, waits)


def drift(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    replay: bool = False,
    shadow_url: str | None = None,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    progress: Progress | None = None,
) -> Drift:
    """Compare the live schema with the one the last run recorded, or (``replay``) with what the
    applied migrations produce on a scratch database. Raises DriftFound when they differ."""
    from dbledger.drift import detect  # loads the schema model only for this command

    shadow = None if shadow_url is None else parse_database_url(shadow_url)
    with _session(
        database_url,
        directory,
        ledger_table,
        connect_timeout,
        progress or no_progress,
        reading=True,
        schema=schema,
    ) as (
        settings,
        migrations,
        backend,
    ):
        found = detect(backend, migrations, settings.database.display, replay_files=replay, shadow=shadow)
    if found.differences:
        raise DriftFound(found.to_dict(), [str(d) for d in found.differences])
    return found


def dump(
    database_url: str | None = None,
    *,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    to: PathLike | None = None,
    progress: Progress | None = None,
) -> str:
    """The live schema as normalised SQL, stable across runs (for review in pull requests);
    with ``to``, also written to that file."""
    from dbledger.schema import dump_sql

    report = progress or no_progress
    settings = _settings(database_url, "", ledger_table, report, schema=schema)
    with _open(settings, report, connect_timeout=connect_timeout) as backend:
        if (absent := backend.absence()) is not None:
            report("note", absent, None)
        text = dump_sql(backend.introspect())
    if to is not None:
        _write_file(Path(to), text)
    return text


def _write_file(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        folder = path.absolute().parent
        hint = "" if folder.is_dir() else f": folder {str(folder)!r} does not exist, create it first"
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror}{hint}") from None


TEMPLATE = """\
-- migrate:up


-- migrate:down

"""


# A folder whose versions have this many digits numbers them by UTC time (YYYYMMDDHHMMSS), as
# dbmate, Rails and golang-migrate's -format do.
_TIMESTAMP_WIDTH = 14


def migration_name(text: str) -> str:
    """``Add Users-Email`` -> ``add_users_email``, ``Café`` -> ``cafe``: what a person types,
    as a file name's part (accents dropped, not the letters they sit on)."""
    import unicodedata

    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def new(name: str, directory: PathLike | None = None) -> Path:
    """Create the next numbered migration file with empty up and down sections. The version
    keeps the folder's width; in a folder numbered by timestamps it is the current UTC time."""
    slug = migration_name(name)
    if not slug:
        raise UsageError(
            f"invalid migration name {name!r}: give words that say what the change does "
            "(e.g. add_users_email)"
        )
    settings = resolve("sqlite:///:memory:", directory)  # the database plays no part here
    folder = settings.directory
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # From the names alone: the previous 'new' left a template that does not parse yet.
        found = [m for p in folder.glob("*.sql") if (m := FILE_NAME.match(p.name))]
        clash = [m.string for m in found if m.group("name") == slug]
        if clash:
            raise UsageError(
                f"a migration named {slug!r} already exists ({clash[0]}): choose a name that says "
                "what this change does"
            )
        path = folder / f"{_next_version(found)}_{slug}.sql"
        with path.open("x", encoding="utf-8") as handle:
            handle.write(TEMPLATE)
    except OSError as exc:
        raise ConfigError(f"cannot create a migration in {str(folder)!r}: {exc.strerror}") from None
    return path


def _next_version(found: list[re.Match[str]]) -> str:
    width = max([3] + [len(m.group("version")) for m in found])
    last = max((int(m.group("version")) for m in found), default=0)
    if width == _TIMESTAMP_WIDTH:
        from datetime import UTC, datetime

        now = int(datetime.now(UTC).strftime("%Y%m%d%H%M%S"))
        return str(max(now, last + 1))  # a clock behind the newest file still sorts after it
    return f"{last + 1:0{width}d}"
