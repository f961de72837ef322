"""The Python API: one plain function per command. The command line and the integrations call
these and nothing below them.

Each function takes the database URL, the migrations directory, the ledger table and the target
``schema`` (``None`` means: resolve them from the environment, ``pyproject.toml`` and the defaults,
as the command line does), resolves them once, reports which it uses through
``progress("using", ...)``, and raises a ``DbledgerError`` on any failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from dbledger import engine, layouts, sqltrees
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
from dbledger.contracts import Applied, Hooks, LedgerRow, Progress, RolledBack, Version, no_progress
from dbledger.errors import (
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    DbledgerError,
    DriftFound,
    LedgerStateError,
    LintFailed,
    NotMigrated,
    UsageError,
)
from dbledger.ledger import CHAINED_FORMAT
from dbledger.migrations import HOOK_EVENTS, Folder, Migration, parse, shown_path
from dbledger.placeholders import Placeholder
from dbledger.plan import Allowances, Plan, make_plan
from dbledger.redaction import redact

if TYPE_CHECKING:
    from dbledger.adoption import Adoption
    from dbledger.checks import CheckReport
    from dbledger.dryrun import DryRun
    from dbledger.lint import Finding
    from dbledger.rehearse import Rehearsal
    from dbledger.schemadrift import Drift

PathLike = str | os.PathLike[str]
# A version as callers give it: 3, "3", "1.1" or a Version.
VersionLike = int | str | Version
Repaired = engine.Repaired

__all__ = ["Applied", "LintReport", "Repaired", "Report", "RolledBack", "Status"]


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
                    "version": a.version.shown(),
                    "execution_time_ms": a.execution_time_ms,
                    "checksum": a.checksum,
                }
                for a in self.applied
            ],
        }


def as_version(value: VersionLike | None) -> Version | None:
    """``value`` as a Version (None stays None); UsageError naming it when it is not one."""
    if value is None or isinstance(value, Version):
        return value
    try:
        return Version.of(str(value))  # an int as its digits; -1 is refused as text would be
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _required(version: Version | None) -> Version:
    if version is None:
        raise UsageError("baseline needs a version")
    return version


def _row_dict(row: LedgerRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "version": row.version.shown(),
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
    # The folder's repeatable migrations, each with its ledger row when it ran before.
    repeatables: tuple[Migration, ...] = ()

    def repeatable_states(self) -> list[tuple[Migration, LedgerRow | None, str]]:
        """Each repeatable migration, its row, and its state: applied, pending (new or changed:
        the next 'up' runs it), or failed."""
        due = {m.name for m in self.plan.repeatables_due(self.repeatables)}
        found = []
        for migration in self.repeatables:
            row = self.plan.repeatable_rows.get(migration.name)
            state = (
                "applied"
                if migration.name not in due
                else ("failed" if row and row.state == "failed" else "pending")
            )
            found.append((migration, row, state))
        return found

    @property
    def version(self) -> Version | None:
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
            "version": None if self.version is None else self.version.shown(),
            "applied": [_row_dict(r) for r in plan.applied],
            "applied_in_version_order": not plan.order_differs,
            "pending": [
                {
                    "name": m.name,
                    "version": m.version.shown(),
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
            "out_of_order": [{"name": m.name, "version": m.version.shown()} for m in plan.out_of_order],
            "dirty": [_row_dict(r) for r in plan.dirty],
            "problems": self.problems,
            "schema": self.schema,
            "history": self.history,
            "repeatable": [
                {
                    "name": m.name,
                    "state": state,
                    "checksum": m.checksum,
                    "applied_at": row.applied_at if row else None,
                    "execution_time_ms": row.execution_time_ms if row else None,
                }
                for m, row, state in self.repeatable_states()
            ],
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
) -> Iterator[tuple[Settings, Folder, Backend]]:
    """Resolve the settings once, say which are used, read the files (a malformed one fails
    before any connection), and open the database. ``reading``: the command only reads, so a
    database that does not exist yet is worth a note. ``locks``: a writing command's lock and
    wait options, over the configuration's."""
    locks = locks or _Locks()
    check_lock_timeout(locks.lock_timeout)
    settings = locks.over(_settings(database_url, directory, ledger_table, progress, schema=schema))
    folder = _read_folder(settings, progress)
    with (
        _open(
            settings, progress, lock_timeout=locks.lock_timeout, connect_timeout=connect_timeout
        ) as backend,
        sqltrees.shared(),  # one parse of each statement for the preflight, lint and analysis
    ):
        if reading and (absent := backend.absence()) is not None:
            progress("note", absent, None)
        yield settings, folder, backend


def _read_folder(settings: Settings, progress: Progress) -> Folder:
    folder, note = layouts.read(settings.directory, settings.layout)
    if note is not None:
        progress("note", note, None)
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
        on_warning=lambda text: progress("warning", text, None),
        waits=settings.waits,
        lock_mode=settings.lock_mode,
        lease_ttl=settings.lease_ttl,
        placeholders=settings.placeholders,
    )


def migrate(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    to: VersionLike | None = None,
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
    strict: bool = False,
    hooks: Hooks | None = None,
    progress: Progress | None = None,
) -> Report:
    """Apply every pending migration (up to version ``to``), or raise a DbledgerError.

    Safe to call from every replica of an application at the same moment: one applies, the
    others wait for the lock and find nothing left to do.

    On PostgreSQL the migrations about to be applied are linted first: each finding is a
    ``progress("warning", ...)``; with ``strict``, an error-severity finding refuses the run
    (LintFailed) before anything is applied.

    ``hooks``: the application's functions by event (before-all, before-each, after-each,
    after-all), each called with a ``HookCall`` after the folder's hook file of that event; they
    run only when there is something to apply (docs/repeatable-and-hooks.md).
    """
    report = progress or no_progress
    if unknown := sorted(set(hooks or {}) - set(HOOK_EVENTS)):
        raise UsageError(f"unknown hook event {unknown[0]!r}: give one of {', '.join(HOOK_EVENTS)}")
    options = engine.UpOptions(
        as_version(to), Allowances(allow_out_of_order, allow_missing), allow_existing_schema, atomic
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
        folder,
        backend,
    ):

        def lint(pending: list[Migration]) -> None:
            _lint_pending(backend, pending, settings.waits, strict=strict, progress=report)

        done = engine.up(
            backend,
            folder.migrations,
            options._replace(repeatables=folder.repeatables, hook_files=folder.hooks, hooks=hooks),
            backup_dir=None if backup_dir is None else Path(backup_dir),
            on_pending=lint if backend.dialect_name == "postgresql" else None,
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
    recorded (an introspection: ~10 ms for 10 tables, ~120 ms for 1000, see docs/drift.md)."""
    with _session(
        database_url,
        directory,
        ledger_table,
        connect_timeout,
        progress or no_progress,
        reading=True,
        schema=schema,
    ) as session:
        settings, folder, backend = session
        return _inspect(
            settings, folder.migrations, backend, check_schema=check_schema, repeatables=folder.repeatables
        )


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
    folder = _read_folder(settings, report)
    deadline = time.monotonic() + timeout
    intervals = poll_intervals(start=0.2, cap=2.0)
    told = ""
    while True:
        try:
            with _open(settings, report, connect_timeout=connect_timeout) as backend:
                found = _inspect(
                    settings, folder.migrations, backend, check_schema=False, repeatables=folder.repeatables
                )
            waiting = _still_to_come(found)
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


def _still_to_come(found: Status) -> str:
    """What a waiting replica still waits for, in words ("" when every file is applied, the
    repeatable ones as they are now included); raises NotMigrated for what waiting cannot mend."""
    plan = found.plan
    repeatables = found.repeatable_states()
    stuck = [f"migration '{r.name}' failed" for r in plan.failed]
    stuck += [f"repeatable migration '{m.name}' failed" for m, _, state in repeatables if state == "failed"]
    stuck += [
        f"migration '{r.name}' is dirty (it may be half applied)" for r in plan.dirty if r not in plan.running
    ]
    stuck += [f"migration '{m.name}' was changed after it was applied" for m, _ in plan.modified]
    if stuck:
        raise NotMigrated("; ".join(stuck) + ": waiting cannot mend this; see 'dbledger status'")
    coming = [m.name for m in plan.pending] + [r.name for r in plan.running]
    coming += [m.name for m, _, state in repeatables if state == "pending"]
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
    repeatables: tuple[Migration, ...] = (),
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
        expected = None if found == recorded[0] else loads(recorded[1])
        # A model recorded by an older dbledger, or on an older server, is read into today's
        # form (dbledger.schema.storage): only its fingerprint then says whether it drifted.
        drifted = expected is not None and fingerprint(expected) != found
        expected_print = recorded[0] if expected is None else fingerprint(expected)
        schema = {"expected": expected_print, "found": found, "drifted": drifted}
        if expected is not None and drifted:  # each difference with its severity, for /health
            schema["differences"] = [d.to_dict() for d in diff(expected, model)]
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
        tuple(repeatables),
    )


def _history_check(backend: Backend, version: int, rows: tuple[LedgerRow, ...]) -> dict[str, Any]:
    """The history chain and the ledger rows against it (tamper evidence)."""
    from dbledger import chain  # only verify checks the chain

    if version < CHAINED_FORMAT:
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
        result = _inspect(
            settings,
            folder.migrations,
            backend,
            check_schema=False,
            check_history=True,
            repeatables=folder.repeatables,
        )
    problems = list(result.problems) + folder.strays
    if strict:
        problems += [
            f"repeatable migration '{m.name}' is {state}: its file as it is now has not run; "
            "run 'dbledger up'"
            for m, _, state in result.repeatable_states()
            if state != "applied"
        ]
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
        folder,
        backend,
    ):
        return engine.repair(
            backend,
            folder.migrations,
            forget_missing=forget_missing,
            accept=frozenset(accept),
            progress=report,
        )


def baseline(
    version: VersionLike,
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
        folder,
        backend,
    ):
        return engine.baseline(
            backend,
            folder.migrations,
            _required(as_version(version)),
            verify=verify,
            shadow=shadow,
            progress=report,
        )


def adopt(
    tool: str,
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    table: str | None = None,
    revisions: Mapping[str, str] | None = None,
    accept_checksums: bool = False,
    dry_run: bool = False,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    lock_mode: str | None = None,
    lease_ttl: float | None = None,
    progress: Progress | None = None,
) -> Adoption:
    """Write dbledger's ledger from another tool's history (``dbledger.adoption``): the same
    applied set, with the files' checksums; nothing else in the database changes. ``revisions``
    (Alembic): which migration holds each revision alembic_version names. ``dry_run``: say what
    would be written, write nothing."""
    from dbledger import adoption

    report = progress or no_progress
    if tool not in adoption.SOURCES:  # before any connection
        raise UsageError(f"unknown tool {tool!r} for --from: give one of {', '.join(adoption.SOURCES)}")
    with _session(
        database_url,
        directory,
        ledger_table,
        connect_timeout,
        report,
        locks=_Locks(lock_timeout, None, lock_mode, lease_ttl),
        schema=schema,
    ) as (_, folder, backend):
        return adoption.adopt(
            backend,
            folder.migrations,
            tool,
            repeatables=folder.repeatables,
            table=table,
            revisions=revisions,
            accept_checksums=accept_checksums,
            dry_run=dry_run,
            progress=report,
        )


def down(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    steps: int | None = None,
    to: VersionLike | None = None,
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
        folder,
        backend,
    ):
        return engine.down(backend, folder.migrations, steps=steps, target=as_version(to), progress=report)


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
        folder,
        backend,
    ):
        return engine.redo(backend, folder.migrations, progress=report)


def plan_migrate(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    to: VersionLike | None = None,
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
        as_version(to), Allowances(allow_out_of_order, allow_missing), allow_existing_schema, atomic
    )
    with (
        _session(
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
            folder,
            backend,
        ),
    ):
        work = engine.prepare_up(
            backend,
            folder.migrations,
            options._replace(repeatables=folder.repeatables, hook_files=folder.hooks),
            backend.read_ledger(),
        )
        planned = dryrun.planned(work, backend.annotator(calibrate=True, live=True))
    waits = settings.waits if backend.dialect_name == "postgresql" else None
    shown = dryrun.DryRun(settings.database.display, str(settings.directory), "up", atomic, planned, waits)
    return replace(shown, hooks=dryrun.hooks(work))


def plan_down(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    steps: int | None = None,
    to: VersionLike | None = None,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    waits: WaitPolicy | Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> DryRun:
    """What ``down`` would roll back, statement by statement, analysed; changes nothing."""
    from dbledger import dryrun

    with (
        _session(
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
            folder,
            backend,
        ),
    ):
        work = engine.prepare_down(
            backend, folder.migrations, backend.read_ledger(), steps=steps, target=as_version(to)
        )
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
    from dbledger.schemadrift import detect  # loads the schema model only for this command

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
        folder,
        backend,
    ):
        found = detect(
            backend,
            folder.migrations,
            settings.database.display,
            replay_files=replay,
            shadow=shadow,
            repeatables=folder.repeatables,
        )
    if found.differences:
        raise DriftFound(found.to_dict(), [str(d) for d in found.differences])
    return found


def check(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    shadow_url: str | None = None,
    queries: Iterable[PathLike] = (),
    against: str | None = None,
    parts: Iterable[str] | None = None,
    ledger_table: str | None = None,
    connect_timeout: float | None = None,
    progress: Progress = no_progress,
) -> CheckReport:
    """Prove the migrations folder for CI (``dbledger.checks`` says what each part does): apply
    every migration from empty on a scratch database (a temporary database on the server of
    ``database_url``, a temporary SQLite file, or the empty ``shadow_url`` database, left empty),
    round-trip each down section, lint, check the folder, run the application's ``queries``
    after each migration, and with ``against`` verify a real database's ledger (read-only).
    The roles the migrations create on a borrowed server are dropped afterwards.
    ``parts``: the names of the parts to run (None: all). Returns the report, findings and
    all; raises only for bad usage (UsageError: a malformed file, an unknown part) or when a
    database cannot be reached."""
    from dbledger import checkrun, checks
    from dbledger.sandbox import emptied

    chosen = checks.chosen_parts(parts)
    settings = _settings(database_url, directory, ledger_table, progress)
    folder, note = layouts.read(settings.directory, settings.layout)  # a malformed file: a usage error
    if note is not None:
        progress("note", note, None)
    scratch = settings.database if shadow_url is None else parse_database_url(shadow_url)
    found = checkrun.read_queries(queries, scratch.dialect) if "queries" in chosen else []
    run = checkrun.Run(folder, chosen, found, scratch.dialect, progress)
    run.placeholders = settings.placeholders
    if chosen & checks.ON_SCRATCH:
        with _open(replace(settings, database=scratch), progress, connect_timeout=connect_timeout) as backend:
            if shadow_url is None:
                try:
                    with backend.scratch() as empty:
                        empty.placeholders = backend.placeholders
                        run.on_scratch(empty, nested=False)
                finally:  # the roles the migrations created on the server, the scratch database gone
                    run.leave_server(backend)
            else:
                run.on_scratch(emptied(backend, scratch.display), nested=True)
    linted = None
    if against is not None and "against" in chosen:
        real = replace(settings, database=parse_database_url(against))
        problems, pending, linted = _check_against(
            real, folder.migrations, lint="lint" in chosen, connect_timeout=connect_timeout, progress=progress
        )
        run.against(problems, pending, real.database.display)
    if "lint" in chosen:
        run.lint(linted)
    return run.report(str(settings.directory))


def _check_against(
    real: Settings,
    migrations: list[Migration],
    *,
    lint: bool,
    connect_timeout: float | None,
    progress: Progress,
) -> tuple[list[str], list[str] | None, list[Finding] | None]:
    """``check --against``: what ``verify`` finds on the real database (read-only), the names
    of the migrations it has pending, and with ``lint`` lint's findings for those against its
    catalog. A database ``up`` would refuse, or one that does not exist, is a problem and has
    no pending list: a ledger must say what is pending; an empty database has all pending."""
    from dbledger.errors import ExistingSchema

    with _open(real, progress, connect_timeout=connect_timeout) as backend:
        if real.database.dialect == "sqlite" and backend.absence() is not None:
            return (
                [
                    f"there is no database file {real.database.sqlite_path!r} (check reads it without "
                    "creating it): give --against the URL of a database the migrations were deployed to"
                ],
                None,
                None,
            )
        try:
            status = _inspect(real, migrations, backend, check_schema=False, check_history=True)
        except LedgerStateError as unreadable:  # a newer ledger format, a table of another tool's
            return unreadable.problems, None, None
        if not status.ledger_exists and (tables := backend.user_tables()):
            # A wrong --ledger-table: dbledger's tables are there under another name.
            named = [t for t in tables if f"{t}_history" in tables and f"{t}_version" in tables]
            refusal = (
                f"it has no ledger table {backend.names.qualified()}, but a dbledger ledger named "
                f"{named[0]}: give that name with --ledger-table"
                if named
                else ExistingSchema(tables, backend.names.qualified()).problems[0]
            )
            return [f"'dbledger up' there refuses to run: {refusal}"], None, None
        pending = status.plan.pending
        linted = None
        if lint and backend.dialect_name == "postgresql":  # what the deploy will run
            linted = _lint_with(backend, pending, real.waits)
    return status.problems, [m.name for m in pending], linted


# -- lint -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LintReport:
    """What ``lint`` found: ``database`` is the (redacted) database whose catalog the rules read,
    None without one; ``files`` the files linted, in the order they were; ``skipped`` why
    nothing was linted (a SQLite database is configured), None when lint ran."""

    database: str | None
    files: list[str]
    findings: list[Finding]
    skipped: str | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def lines(self) -> list[str]:
        """Each finding in its one-line form, then its help line, indented."""
        return [text for f in self.findings for text in (f.format(), f"  help: {f.help}")]

    def summary(self) -> str:
        errors, files = len(self.errors), len(self.files)
        if self.skipped is not None:
            return f"lint: nothing linted: {self.skipped}"
        if not self.files:
            if self.database:
                return "lint: no pending migration to lint (--no-database lints every file)"
            return "lint: no migration to lint"
        if not self.findings:
            return f"lint: no findings in {files} file(s)"
        return f"lint: {errors} error(s), {len(self.findings) - errors} warning(s) in {files} file(s)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "files": self.files,
            "errors": len(self.errors),
            "warnings": len(self.findings) - len(self.errors),
            "findings": [f.to_dict() for f in self.findings],
            "skipped": self.skipped,
        }

    def check(self) -> None:
        """Raise LintFailed (exit 1) when a finding is an error; warnings pass."""
        if self.errors:
            raise LintFailed(
                f"{len(self.errors)} lint error(s) in {len(self.files)} file(s): fix each as its help "
                "line says, or suppress it with '-- dbledger:ignore RULE reason' on the line before "
                "the statement (docs/lint.md)",
                self.to_dict(),
                self.lines(),
            )


def lint(
    files: Iterable[PathLike] = (),
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    offline: bool = False,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    waits: WaitPolicy | Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> LintReport:
    """Lint PostgreSQL migrations (``dbledger.lint``). Which files: ``files`` when given (each a
    migration file; in version order), else the folder's. Against what: when the configured
    database is PostgreSQL (and not ``offline``), its live catalog, for table sizes and what
    exists; then without ``files`` only the pending migrations are linted, since the applied
    ones already ran. A SQLite database configured (not the default one): nothing is linted,
    since the rules are PostgreSQL's (``report.skipped`` says so), as ``check`` leaves lint out
    for SQLite. Otherwise (``offline``, or no database configured) no database: every file of
    the folder, read as PostgreSQL, and every table they do not create counts as existing.
    ``waits``: the lock-wait policy ``up`` will use (default: the configuration's). Returns the
    report; ``report.check()`` raises LintFailed on an error."""
    report = progress or no_progress
    configured = resolve(database_url, directory, ledger_table=ledger_table, schema=schema)
    settings = _Locks(waits=waits).over(configured)
    chosen = _lint_files(files)
    if not offline and settings.database.dialect != "postgresql" and settings.database_source != "default":
        why = (
            f"the configured database is SQLite ({settings.database.display}, from "
            f"{settings.database_source}) and lint's rules are PostgreSQL's (--no-database reads the "
            "files as PostgreSQL)"
        )
        report("using", settings.describe(), None)
        return LintReport(None, [], [], skipped=why)
    if offline or settings.database.dialect != "postgresql":
        where = "the files given" if chosen else f"migrations {settings.directory}"
        report("using", f"no database ({where}): each table the files do not create counts as existing", None)
        migrations = chosen or _read_folder(settings, report).migrations
        return _lint_report(
            None, migrations, _lint_with(None, migrations, settings.waits, settings.placeholders)
        )
    report("using", settings.describe(), None)
    for warning in settings.warnings:
        report("warning", warning, None)
    with _open(settings, report, connect_timeout=connect_timeout) as backend:
        if not chosen:
            snapshot = backend.read_ledger()
            folder = _read_folder(settings, report).migrations
            chosen = make_plan(folder, snapshot.rows if snapshot else ()).pending
        findings = _lint_with(backend, chosen, settings.waits)
    return _lint_report(settings.database.display, chosen, findings)


def _lint_files(files: Iterable[PathLike]) -> list[Migration]:
    """The migration files named on the command line, parsed, in version order; UsageError for
    one that does not exist or is not a .sql file."""
    found: list[Migration] = []
    for name in files:
        path = Path(name)
        if path.is_dir():
            raise UsageError(
                f"cannot lint {str(path)!r}: a folder, not a file; lint a folder with --dir {path}"
            )
        if path.suffix != ".sql":
            raise UsageError(f"cannot lint {str(path)!r}: not a .sql file (lint takes migration files)")
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"cannot lint {str(path)!r}: no such file") from None
        except OSError as exc:
            raise UsageError(f"cannot lint {str(path)!r}: {exc.strerror}") from None
        found.append(parse(path, raw))
    return sorted(found, key=lambda m: (m.version, m.name, str(m.path)))


def _lint_with(
    backend: Backend | None,
    migrations: list[Migration],
    waits: WaitPolicy,
    placeholders: Mapping[str, Placeholder] | None = None,
) -> list[Finding]:
    """The findings of ``migrations``, against ``backend``'s live catalog when it is PostgreSQL,
    with their placeholders (``backend``'s, else ``placeholders``) in place."""
    import psycopg

    from dbledger.lint import lint_migrations

    catalog = None if backend is None else backend.catalog()
    try:
        values = backend.placeholders if backend is not None else placeholders or {}
        return lint_migrations(migrations, catalog=catalog, waits=waits, placeholders=values)
    except psycopg.Error as exc:  # the catalog could not be read: the connection's error
        message = f"cannot read the catalog for lint: {redact(str(exc))}"
        raise DatabaseError(message, sqlstate=exc.sqlstate) from exc


def _lint_report(database: str | None, migrations: list[Migration], findings: list[Finding]) -> LintReport:
    """The report, paths relative to the current directory where they are inside it: what an
    editor opens and what GitHub matches an annotation with (the repository's paths)."""
    files = [shown_path(m.path) for m in migrations]
    return LintReport(database, files, [f._replace(path=Path(shown_path(f.path))) for f in findings])


def _lint_pending(
    backend: Backend,
    pending: list[Migration],
    waits: WaitPolicy,
    *,
    strict: bool,
    progress: Progress,
) -> None:
    """``up``'s lint of the migrations it is about to apply, called under the lock once the
    preflight has passed (PostgreSQL: the rules are its own): each finding a warning event;
    with ``strict``, LintFailed before anything runs when one is an error. The no-op path
    never gets here: nothing is parsed, and pglast is not imported, when nothing is pending."""
    try:
        findings = _lint_with(backend, pending, waits)
    except DbledgerError:
        raise  # a malformed file, a lost connection: the run itself would fail the same way
    except Exception as exc:
        # Without --strict the lint only advises: a statement it cannot read must not stop a deploy.
        if strict:
            raise
        failure = redact(f"{type(exc).__name__}: {exc}", secrets=True)  # may quote a statement
        progress("warning", f"lint could not check the pending migrations: {failure}", None)
        return
    found = _lint_report(backend.database.display, pending, findings)
    for finding in found.findings:
        progress("warning", f"{finding.format()}\n  help: {finding.help}", None)
    if strict and found.errors:
        first, more = found.errors[0], len(found.errors) - 1
        others = f" (and {more} more lint error(s))" if more else ""
        raise LintFailed(
            f"up --strict: {first.path}:{first.line} {first.rule}{others} in a pending migration: "
            f"nothing was applied; fix the statement as the help line says ('dbledger lint' shows "
            f"every finding), or suppress it with '-- dbledger:ignore {first.rule} REASON' on the "
            "line before the statement",
            found.to_dict(),
            [],  # each finding was a warning event already
        )


def rehearse(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    to: VersionLike | None = None,
    rows: int | None = None,
    table_rows: Mapping[str, int] | None = None,
    schema_only: bool = False,
    copy: str = "auto",
    keep: bool = False,
    ledger_table: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    waits: WaitPolicy | Mapping[str, Any] | None = None,
    lock_mode: str | None = None,
    lease_ttl: float | None = None,
    progress: Progress | None = None,
) -> Rehearsal:
    """Copy the database to a scratch database on its server (``copy``: "template", "pg_dump" or
    "auto", the template copy with pg_dump when it is refused; ``schema_only``: no rows but
    dbledger's), fill every table to ``rows`` and each of ``table_rows`` to its count, run the
    pending migrations (up to ``to``) there with the engine and wait policy of ``migrate``, and
    report each one's real time, locks held and rewrites next to the dry run's estimate. The
    live database is only read. The copy is dropped unless ``keep``. PostgreSQL only; raises
    RehearsalFailed when a migration fails on the copy."""
    from dbledger import rehearse as rehearsal  # the copy, the fill and the watcher: this command only

    report = progress or no_progress
    check_lock_timeout(lock_timeout)
    locks = _Locks(lock_timeout, waits, lock_mode, lease_ttl)
    settings = locks.over(_settings(database_url, directory, ledger_table, report, schema=schema))
    for table, count in [("", rows), *(table_rows or {}).items()]:
        if count is not None and count < 0:
            raise UsageError(f"invalid row count {count} for {table or 'every table'}: give 0 or more")
    options = rehearsal.Options(
        as_version(to), rows, tuple((table_rows or {}).items()), schema_only, copy, keep
    )
    folder = _read_folder(settings, report)
    return rehearsal.run(
        settings,
        folder.migrations,
        options,
        lock_timeout=lock_timeout,
        connect_timeout=connect_timeout,
        progress=report,
        repeatables=folder.repeatables,
        hooks=folder.hooks,
    )


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


def new(name: str, directory: PathLike | None = None) -> Path:
    """Create the next migration in the folder's layout (dbledger.scaffold): empty up and down
    sections, or the other tool's files. The version keeps the folder's width; in a folder
    numbered by timestamps it is the current UTC time. Returns the up file."""
    from dbledger import scaffold

    slug = scaffold.migration_name(name)
    if not slug:
        raise UsageError(
            f"invalid migration name {name!r}: give words that say what the change does "
            "(e.g. add_users_email)"
        )
    settings = resolve("sqlite:///:memory:", directory)  # the database plays no part here
    return scaffold.new_migration(settings.directory, settings.layout, slug)


def init(
    directory: PathLike | None = None, *, layout: str | None = None, here: PathLike | None = None
) -> list[Path]:
    """Start a project (``dbledger init``): the migrations folder (default ``migrations``) and a
    ``[tool.dbledger]`` section in ``here``'s pyproject.toml (the current folder's by default).
    Returns what it wrote."""
    from dbledger import scaffold
    from dbledger.config import check_layout

    if layout is not None:
        check_layout(layout, "--layout")
    where = Path(here) if here is not None else Path.cwd()
    return scaffold.init_project(where, str(directory or "migrations"), layout)
