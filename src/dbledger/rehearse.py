"""``dbledger rehearse``: run the pending migrations on a scratch copy of the live database and
report what each one really did (its time, the locks its session held, the tables it rewrote)
next to what the dry run estimated for it.

1. The live database is read, never written: the same preflight as ``up`` decides what is
   pending (and refuses what ``up`` would refuse), then its connection is closed.
2. ``dbledger.scratchcopy`` copies it to a scratch database on the same server (a template copy,
   or pg_dump | pg_restore; ``schema_only``: dbledger's tables keep their rows, no other does).
3. ``dbledger.synthetic`` fills tables to the row counts asked for (``rows``, ``table_rows``).
4. On the copy, the dry run analyses the pending migrations (``dbledger.dryrun``, as
   ``up --dry-run``), then ``dbledger.engine.up`` applies them, the same engine as ``up`` with
   the same wait policy, while ``dbledger.lockwatch`` watches each one from a second connection.
5. The scratch database is dropped, unless ``keep``.

PostgreSQL only: a SQLite migration holds the whole file's write lock, and a copy of the file is
all a rehearsal there needs (the refusal says how).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from dbledger import engine, scratchcopy
from dbledger.backends import open_backend
from dbledger.config import Settings
from dbledger.contracts import Progress, Version
from dbledger.dryrun import PlannedMigration, planned
from dbledger.errors import DbledgerError, MigrationFailed, UsageError
from dbledger.lockwatch import HeldLock, Seen, Watch
from dbledger.migrations import Migration
from dbledger.synthetic import Filled, fill

__all__ = ["Options", "Rehearsal", "RehearsalFailed", "Rehearsed", "render", "run"]


class Options(NamedTuple):
    """What to rehearse and on what: migrations up to ``to``; every table filled to ``rows``
    and the tables of ``table_rows`` to theirs; the copy's way (``scratchcopy.COPY_METHODS``)."""

    to: Version | None = None
    rows: int | None = None
    table_rows: tuple[tuple[str, int], ...] = ()
    schema_only: bool = False
    copy: str = "auto"
    keep: bool = False


@dataclass(frozen=True)
class Rehearsed:
    """One pending migration on the copy: what it did and what the dry run said it would do."""

    name: str
    version: Version
    transaction: bool
    state: str  # "applied", "failed" or "not run" (after one that failed)
    execution_time_ms: int | None
    estimate_ms: float | None
    estimated_locks: list[tuple[str, str]]  # (table, mode), the strongest per table
    estimated_rewrites: list[str]
    locks: list[HeldLock] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    rebuilt_indexes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version.shown(),
            "transaction": self.transaction,
            "state": self.state,
            "execution_time_ms": self.execution_time_ms,
            "estimate_ms": None if self.estimate_ms is None else round(self.estimate_ms, 1),
            "locks": [lock._asdict() for lock in self.locks],
            "estimated_locks": [{"table": table, "mode": mode} for table, mode in self.estimated_locks],
            "rewritten": self.rewritten,
            "estimated_rewrites": self.estimated_rewrites,
            "rebuilt_indexes": self.rebuilt_indexes,
            "notes": self.notes,
            "error": self.error,
        }


@dataclass(frozen=True)
class Rehearsal:
    """What a rehearsal did: the copy (how, how long, kept or dropped), the fill, and each
    pending migration. ``method`` is None when nothing was pending (no copy was made)."""

    database: str  # the live database, redacted
    directory: str
    scratch: str | None  # the scratch database's redacted URL
    scratch_name: str | None
    kept: bool
    method: str | None
    schema_only: bool = False
    copy_seconds: float | None = None
    copy_note: str | None = None
    filled: list[Filled] = field(default_factory=list)
    migrations: list[Rehearsed] = field(default_factory=list)
    # Where unqualified names go on the copy: the text leaves it out of relation names.
    default_schema: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "directory": self.directory,
            "scratch": self.scratch,
            "scratch_name": self.scratch_name,
            "kept": self.kept,
            "copy": {
                "method": self.method,
                "schema_only": self.schema_only,
                "seconds": None if self.copy_seconds is None else round(self.copy_seconds, 3),
                "note": self.copy_note,
            },
            "filled": [
                {
                    "table": f.table,
                    "rows_before": f.before,
                    "rows_added": f.added,
                    "seconds": round(f.seconds, 3),
                }
                for f in self.filled
            ],
            "migrations": [m.to_dict() for m in self.migrations],
        }


class RehearsalFailed(DbledgerError):
    """A migration failed on the scratch copy; the live database was not touched. ``rehearsal``
    is the report up to the failure, as ``--json`` prints it."""

    fields: ClassVar[tuple[str, ...]] = ("migration", "sqlstate", "line", "rehearsal")

    def __init__(self, rehearsal: Rehearsal, failure: MigrationFailed) -> None:
        self.rehearsal = rehearsal.to_dict()
        self.migration = failure.migration
        self.sqlstate = failure.sqlstate
        self.line = failure.line
        where = f" (line {failure.line})" if failure.line else ""
        kept = f"; the copy is kept: {rehearsal.scratch}" if rehearsal.kept else ""
        super().__init__(
            f"migration '{failure.migration}' failed in the rehearsal{where}: {failure.error}\n"
            f"the live database was not touched{kept}: fix the file and rehearse again"
        )


def run(
    settings: Settings,
    migrations: list[Migration],
    options: Options,
    *,
    lock_timeout: float,
    connect_timeout: float | None,
    progress: Progress,
    repeatables: tuple[Migration, ...] = (),
    hooks: tuple[Migration, ...] = (),
) -> Rehearsal:
    """Rehearse the pending migrations of ``settings.database`` (see the module docstring).
    Raises RehearsalFailed when one fails on the copy, UsageError on SQLite."""
    live = settings.database
    if live.dialect != "postgresql":
        raise UsageError(
            f"dbledger rehearse copies a PostgreSQL database, and {live.display} is SQLite: there a "
            "migration holds the whole file's write lock, so copy the file and time 'dbledger up' "
            "on the copy (cp app.db rehearsal.db; dbledger up --database-url sqlite:///rehearsal.db)"
        )
    # As 'up' runs them: the folder's repeatable migrations and hooks, the project's placeholders.
    up_options = engine.UpOptions(target=options.to, repeatables=repeatables, hook_files=hooks)
    with open_backend(
        live, settings.ledger, connect_timeout=connect_timeout, placeholders=settings.placeholders
    ) as backend:
        pending = engine.prepare_up(backend, migrations, up_options, backend.read_ledger())
        own = [(str(backend.ledger_schema), table) for table in settings.ledger.tables]
    directory = str(settings.directory)
    if pending.nothing_to_do:
        progress("note", "nothing to rehearse: every migration is applied", None)
        return Rehearsal(live.display, directory, None, None, False, None)
    tell: Callable[[str], None] = lambda text: progress("note", text, None)  # noqa: E731
    copy = scratchcopy.make_copy(
        live,
        method=options.copy,
        schema_only=options.schema_only,
        keep_data=own,
        connect_timeout=connect_timeout,
        note=tell,
    )
    tell(f"copied {live.display} into {copy.database.display} ({_method(copy)}, {copy.seconds:.1f} s)")
    failure: MigrationFailed | None = None
    try:
        filled = (
            _fill(copy, options, own, connect_timeout, progress) if options.rows or options.table_rows else []
        )
        rehearsed, failure, default_schema = _on_copy(
            copy, settings, migrations, up_options, lock_timeout, connect_timeout, progress
        )
    finally:
        if not options.keep:
            scratchcopy.drop_copy(copy, connect_timeout)
    report = Rehearsal(
        live.display,
        directory,
        copy.database.display,
        copy.name,
        options.keep,
        copy.method,
        copy.schema_only,
        copy.seconds,
        copy.note,
        filled,
        rehearsed,
        default_schema,
    )
    if failure is not None:
        raise RehearsalFailed(report, failure)
    return report


def _method(copy: scratchcopy.ScratchCopy) -> str:
    if copy.method == "template":
        return "CREATE DATABASE ... TEMPLATE"
    return "pg_dump | pg_restore" + (", schema only" if copy.schema_only else "")


def _fill(
    copy: scratchcopy.ScratchCopy,
    options: Options,
    own: list[tuple[str, str]],
    connect_timeout: float | None,
    progress: Progress,
) -> list[Filled]:
    with scratchcopy.connect(copy.database, connect_timeout) as conn:
        return fill(
            conn,
            dict(options.table_rows),
            default=options.rows,
            skip=frozenset(f"{schema}.{table}" for schema, table in own),
            progress=lambda table, text: progress("note", f"filled {table}: {text}", None),
        )


def _on_copy(
    copy: scratchcopy.ScratchCopy,
    settings: Settings,
    migrations: list[Migration],
    up_options: engine.UpOptions,
    lock_timeout: float,
    connect_timeout: float | None,
    progress: Progress,
) -> tuple[list[Rehearsed], MigrationFailed | None, str | None]:
    """Analyse, then apply, the pending migrations on the copy, each watched; also returns the
    schema unqualified names go to there."""
    with open_backend(
        copy.database,
        settings.ledger,
        lock_timeout=lock_timeout,
        connect_timeout=connect_timeout,
        waits=settings.waits,
        lock_mode=settings.lock_mode,
        lease_ttl=settings.lease_ttl,
        on_note=lambda text: progress("note", text, None),
        placeholders=settings.placeholders,
    ) as backend:
        work = engine.prepare_up(backend, migrations, up_options, backend.read_ledger())
        plans = planned(work, backend.annotator(calibrate=True))
        schema, default_schema = str(backend.ledger_schema), backend.default_schema
        watch = Watch(
            lambda: scratchcopy.connect(copy.database, connect_timeout),
            ledger=(schema, settings.ledger.table),
            own={f"{schema}.{table}" for table in settings.ledger.tables},
        )
        seen: dict[str, Seen] = {}
        applied: dict[str, int] = {}  # name -> ms, as the engine measured it
        started: list[str] = []

        def watched(event: str, subject: str, ms: int | None) -> None:
            if event == "start":  # before the migration's transaction begins
                watch.begin()
                started.append(subject)
            progress(event, subject, ms)
            if event == "done":  # after it committed
                seen[subject] = watch.end()
                applied[subject] = ms or 0

        failure: MigrationFailed | None = None
        try:
            engine.up(backend, migrations, up_options, progress=watched)
        except MigrationFailed as exc:
            failure = exc
            if started and started[-1] not in seen:
                seen[started[-1]] = watch.end()
        finally:
            watch.close()
    rehearsed = [_rehearsed(plan, applied, seen.get(plan.name), failure) for plan in plans]
    return rehearsed, failure, default_schema


def _rehearsed(
    plan: PlannedMigration, applied: dict[str, int], seen: Seen | None, failure: MigrationFailed | None
) -> Rehearsed:
    estimated: dict[str, str] = {}
    rewrites: list[str] = []
    for statement in plan.statements:
        details = statement.annotation.details if statement.annotation else {}
        for lock in details.get("locks", []):
            if not lock["new"] and _stronger(lock["mode"], estimated.get(lock["table"])):
                estimated[lock["table"]] = lock["mode"]
        if details.get("effect") == "rewrite":
            rewrites += [t for t in details.get("tables", []) if t not in rewrites]
    state = "applied" if plan.name in applied else "not run"
    error = None
    if failure is not None and failure.migration == plan.name:
        state, error = "failed", failure.error
    observed = seen or Seen([], [], [], [])
    return Rehearsed(
        plan.name,
        plan.version,
        plan.transaction,
        state,
        applied.get(plan.name) if state == "applied" else None,
        plan.estimate_ms,
        sorted(estimated.items()),
        rewrites,
        observed.locks,
        observed.rewritten,
        observed.rebuilt,
        observed.notes,
        error,
    )


def _stronger(mode: str, than: str | None) -> bool:
    from dbledger.analysis.model import lock_strength

    return lock_strength(mode) > lock_strength(than)


# -- for people ----------------------------------------------------------------------------------


def render(rehearsal: Rehearsal) -> str:
    """The report as text: the copy, the fill, then each migration's real time, locks and
    rewrites, each next to the dry run's."""
    if rehearsal.method is None:
        return f"nothing to rehearse on {rehearsal.database}: every migration is applied"
    how = "CREATE DATABASE ... TEMPLATE" if rehearsal.method == "template" else "pg_dump | pg_restore"
    if rehearsal.schema_only:
        how += " (schema only)"
    lines = [
        f"rehearsal on a copy of {rehearsal.database}",
        f"  copy      {how} in {rehearsal.copy_seconds or 0:.1f} s"
        + (f" ({rehearsal.copy_note})" if rehearsal.copy_note else ""),
    ]
    lines += [
        f"  filled    {f.table}: {f.before:,} + {f.added:,} rows in {f.seconds:.1f} s"
        for f in rehearsal.filled
    ]
    short = _shortener(rehearsal.default_schema)
    for migration in rehearsal.migrations:
        lines += ["", *_migration_lines(migration, short)]
    lines.append("")
    if rehearsal.kept:
        lines.append(
            f"kept the scratch database {rehearsal.scratch}: drop it when done "
            f"(DROP DATABASE {rehearsal.scratch_name})"
        )
    else:
        lines.append("the scratch database was dropped; the live database was only read")
    return "\n".join(lines)


def _shortener(schema: str | None) -> Callable[[str], str]:
    """``public.t`` -> ``t`` when public is where unqualified names go, as migrations write them."""
    prefix = f"{schema}." if schema else None
    return lambda name: name.removeprefix(prefix) if prefix else name


def _migration_lines(migration: Rehearsed, short: Callable[[str], str]) -> list[str]:
    mode = "in one transaction" if migration.transaction else "outside a transaction"
    estimate = "no estimate" if migration.estimate_ms is None else f"estimated {_ms(migration.estimate_ms)}"
    if migration.state == "applied":
        head = f"{migration.name}: {_ms(migration.execution_time_ms or 0)} ({estimate}), {mode}"
    else:
        head = f"{migration.name}: {migration.state} ({estimate}), {mode}"
    lines = [head]
    if migration.error:
        lines.append(f"  error     {migration.error.splitlines()[0]}")
    if migration.state == "not run":
        return lines
    tables = [
        lock._replace(relation=short(lock.relation)) for lock in migration.locks if lock.kind != "index"
    ]
    lines.append(f"  locks     {_locks(tables) or 'none on tables'}")
    lines.append(
        f"  estimated {_locks([HeldLock(t, 'table', m, '') for t, m in migration.estimated_locks]) or 'none'}"
    )
    rebuilt = (
        f" (and {len(migration.rebuilt_indexes)} index(es) rebuilt)" if migration.rebuilt_indexes else ""
    )
    lines.append(f"  rewrites  {', '.join(map(short, migration.rewritten)) or 'none'}{rebuilt}")
    lines.append(f"  estimated {', '.join(migration.estimated_rewrites) or 'none'}")
    lines += [f"  note      {note}" for note in migration.notes]
    return lines


def _locks(locks: list[HeldLock]) -> str:
    """``ACCESS EXCLUSIVE on a, b (at commit); SHARE on c``: relations grouped by mode and how seen."""
    groups: dict[tuple[str, str], list[str]] = {}
    for lock in locks:
        groups.setdefault((lock.mode, lock.seen), []).append(lock.relation)
    return "; ".join(
        f"{mode} on {', '.join(names)}" + (f" ({seen})" if seen else "")
        for (mode, seen), names in groups.items()
    )


def _ms(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s" if ms < 120_000 else f"{ms / 60_000:.1f} min"
