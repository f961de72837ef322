"""Run a command that writes, under the migration lock: read the ledger afresh, run the preflight
(every refusal, before any change), create or upgrade the ledger, back up, execute the steps,
and record the schema the run left.

The order of work is the point of this module:
  1. a cheap read of the ledger, before any lock, may only conclude "nothing to do";
  2. under the lock, the ledger is read again and the preflight decides every refusal on that
     fresh read, for every step of the run, before the ledger is even created;
  3. each step commits with its ledger rows (``dbledger.executor``);
  4. the schema is recorded after every run that committed something, also one that then failed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from dbledger import sqltrees
from dbledger.backends.base import Backend
from dbledger.config import Database
from dbledger.contracts import (
    APPLIED_STATES,
    REMOVED,
    Applied,
    Hooks,
    LedgerEvent,
    LedgerRow,
    LedgerSnapshot,
    Progress,
    RolledBack,
    Version,
    no_progress,
)
from dbledger.errors import BackupFailed, ExistingSchema, LedgerStateError, UsageError
from dbledger.ledger import LEDGER_VERSION
from dbledger.migrations import Migration
from dbledger.plan import Allowances, Plan, check_target, make_plan
from dbledger.redaction import redact

if TYPE_CHECKING:
    from dbledger import preflight
    from dbledger.executor import Executor

# The preflight (pglast, for PostgreSQL) and the executor load only when there is work: the
# path every replica takes at every start needs neither.


class UpOptions(NamedTuple):
    """What ``up`` applies and what it lets pass."""

    target: Version | None = None
    allow: Allowances = Allowances()
    allow_existing_schema: bool = False
    atomic: bool = False
    # The folder's repeatable migrations: those new or changed run after the versioned ones.
    repeatables: tuple[Migration, ...] = ()
    # The folder's hook files (before-all.sql...), and the application's hooks by event.
    hook_files: tuple[Migration, ...] = ()
    hooks: Hooks | None = None


class Backup(NamedTuple):
    """The backup a deploy took before its first change."""

    path: str
    sha256: str
    restore_command: str


class UpResult(NamedTuple):
    """What ``up`` did: the migrations it applied, and the backup it took first, if any."""

    applied: list[Applied]
    backup: Backup | None = None


def ledger_view(
    backend: Backend, snapshot: LedgerSnapshot | None, migrations: list[Migration]
) -> preflight.Ledger:
    """What the preflight needs to know of the database: its tables when it has no ledger, the
    ledger's copies of the files changed since they were applied."""
    from dbledger import preflight

    existing = tuple(backend.user_tables()) if snapshot is None else ()
    return preflight.Ledger(
        snapshot,
        backend.names,
        backend.ledger_schema,
        backend.default_schema,
        existing,
        sources=applied_sources(backend, snapshot, migrations),
        server=backend.server(),
        transaction_timeout=backend.waits.transaction_timeout,
        placeholders=backend.placeholders,
    )


def applied_sources(
    backend: Backend, snapshot: LedgerSnapshot | None, migrations: list[Migration]
) -> dict[str, str | None]:
    """The ledger's copy of each file whose checksum differs from its applied row's (read only
    for those: usually none)."""
    if snapshot is None:
        return {}
    checksums = {m.name: m.checksum for m in migrations}
    kept = snapshot.version >= 3  # format 3 keeps the copies; an older ledger, until upgraded, none
    return {
        row.name: backend.read_source(row.name) if kept else None
        for row in snapshot.rows
        if row.name in checksums and row.checksum != checksums[row.name] and row.state in APPLIED_STATES
    }


def prepare_up(
    backend: Backend, migrations: list[Migration], options: UpOptions, snapshot: LedgerSnapshot | None
) -> preflight.Work:
    """The preflight of ``up`` against the ledger as just read; ``up`` under its lock and
    ``up --dry-run`` without one. A database built without dbledger is refused with the exact
    ``dbledger baseline V`` its schema matches, worked out by replaying the files."""
    from dbledger import preflight

    view = ledger_view(backend, snapshot, migrations)
    try:
        return preflight.up(
            migrations,
            view,
            backend.dialect,
            target=options.target,
            allow=options.allow,
            allow_existing_schema=options.allow_existing_schema,
            atomic=options.atomic,
            repeatables=options.repeatables,
            hooks=options.hook_files,
        )
    except ExistingSchema as refusal:
        from dbledger.replay import baseline_advice  # a scratch database: only on this refusal

        raise ExistingSchema(refusal.tables, refusal.ledger, baseline_advice(backend, migrations)) from None


def prepare_down(
    backend: Backend,
    migrations: list[Migration],
    snapshot: LedgerSnapshot | None,
    *,
    steps: int | None,
    target: Version | None,
) -> preflight.Work:
    """The preflight of ``down`` against the ledger as just read."""
    from dbledger import preflight

    return preflight.down(
        migrations, ledger_view(backend, snapshot, migrations), backend.dialect, steps=steps, target=target
    )


@contextmanager
def _locked(backend: Backend, progress: Progress) -> Iterator[None]:
    with backend.migration_lock(backend.lock_timeout, lambda holder: progress("waiting", holder, None)):
        yield


def _executor(
    backend: Backend, progress: Progress, work: preflight.Work | None = None, hooks: Hooks | None = None
) -> Executor:
    from dbledger.executor import Executor

    hook_steps = work.hooks if work is not None else None
    return Executor(backend, progress=progress, policy=backend.waits, hook_steps=hook_steps, hooks=hooks)


def _make_current(backend: Backend, snapshot: LedgerSnapshot | None, progress: Progress) -> None:
    """Create the ledger, or upgrade an older one in place; under the lock, after the preflight."""
    if snapshot is not None and snapshot.version == LEDGER_VERSION:
        return
    with backend.transaction():
        if snapshot is None:
            backend.create_ledger()
        else:
            backend.upgrade_ledger(snapshot)
    if snapshot is not None:
        progress("upgrade", f"ledger format {snapshot.version} -> {LEDGER_VERSION}", None)


def up(
    backend: Backend,
    migrations: list[Migration],
    options: UpOptions = UpOptions(),
    *,
    backup_dir: Path | None = None,
    on_pending: Callable[[list[Migration]], None] | None = None,
    progress: Progress = no_progress,
) -> UpResult:
    """Apply pending migrations in version order, each exactly once across concurrent runners.
    With ``options.atomic``, all of them in one transaction. With ``backup_dir``, a backup is
    taken before the run's first change when a pending migration is risky. ``on_pending`` sees
    the migrations about to be applied, under the lock, before the first change (the lint); it
    may refuse the run by raising."""
    check_target(migrations, options.target)
    snapshot = backend.read_ledger()
    if snapshot is None and not migrations:
        return UpResult([])
    if snapshot is not None and snapshot.version == LEDGER_VERSION:
        plan = make_plan(migrations, snapshot.rows)
        idle = not plan.to_apply(options.target) and not plan.repeatables_due(
            options.repeatables, options.target
        )
        if idle and not plan.problems(options.allow):
            return UpResult([])  # the path every replica takes at every start: one read, no lock
    applied: list[Applied] = []
    backup = None
    with _locked(backend, progress), sqltrees.shared():  # each statement parsed once for all readers
        snapshot = backend.read_ledger()
        work = prepare_up(backend, migrations, options, snapshot)
        if snapshot is None and work.nothing_to_do:
            return UpResult([])
        if on_pending is not None and work.steps:
            on_pending([step.migration for step in work.steps])
        _make_current(backend, snapshot, progress)
        if backup_dir is not None and work.steps:
            backup = _back_up_if_risky(backend, work, backup_dir, progress)
        executor = _executor(backend, progress, work, options.hooks)
        if work.steps:
            progress("steps", str(len(work.steps)), None)
            executor.run_hooks("before-all")
        if work.atomic and work.steps:
            applied = executor.apply_atomically(work.steps, work.plan.next_order)
            record_schema(backend, "up", applied[-1].name, progress)
        else:
            orders = itertools.count(work.plan.next_order)
            applied = _run_steps(
                backend, work.steps, lambda step: executor.apply(step, next(orders)), "up", progress
            )
        if work.steps:
            executor.run_hooks("after-all")
    return UpResult(applied, backup)


_Done = TypeVar("_Done", Applied, RolledBack)


def _run_steps(
    backend: Backend,
    steps: Iterable[preflight.Step],
    run: Callable[[preflight.Step], _Done],
    action: str,
    progress: Progress,
) -> list[_Done]:
    """Run the steps one by one. The schema is recorded after the run, also when a step failed
    after others committed, and before a ``transaction:false`` step (whose failure could leave
    partial work that must not become the expected schema)."""
    done: list[_Done] = []
    recorded = 0
    try:
        for step in steps:
            if not step.transactional and len(done) > recorded:
                record_schema(backend, action, done[-1].name, progress)
                recorded = len(done)
            done.append(run(step))
    finally:
        if len(done) > recorded:
            record_schema(backend, action, done[-1].name, progress)
    return done


def record_schema(backend: Backend, action: str, name: str | None, progress: Progress) -> None:
    """Remember the schema the run left, for ``drift`` and ``status``. A failure here is reported,
    never turned into a failed run: the migrations are committed."""
    from dbledger.schema import fingerprint  # only after real work: introspection costs 10-250 ms
    from dbledger.schema.storage import dumps

    sqltrees.drop()  # 10,000 migrations' trees weigh ~20 MB, as much as the model of their schema
    try:
        model = backend.introspect()
        with backend.transaction():
            backend.save_schema(action, name, fingerprint(model), dumps(model))
    except Exception as exc:
        progress("warning", redact(f"the schema could not be recorded for drift checks: {exc}"), None)


def _back_up_if_risky(
    backend: Backend, work: preflight.Work, directory: Path, progress: Progress
) -> Backup | None:
    """Back up before the deploy's first change when a step is marked ``backup:true`` or the
    backend's analysis finds it destructive (DROP, a rewriting type change, TRUNCATE, DELETE
    without WHERE). The backup then holds the database as it was before this deploy."""
    risky = _first_risky(backend, work.steps)
    if risky is None:
        return None
    try:
        done = backend.take_backup(directory, risky.name)
    except BackupFailed as exc:
        raise BackupFailed(
            f"{exc.message}\nnothing was applied: fix the backup directory (or pg_dump), or run "
            "without --backup"
        ) from exc
    with backend.transaction():
        backend.write(
            LedgerEvent(
                "backup",
                risky.name,
                "none",
                checksum=risky.migration.checksum,
                detail=f"{done.path} sha256:{done.sha256}",
            )
        )
    progress(
        "backup", f"{done.path} (sha256 {done.sha256[:12]}…); restore with: {done.restore_command}", None
    )
    return Backup(str(done.path), done.sha256, done.restore_command)


def _first_risky(backend: Backend, steps: tuple[preflight.Step, ...]) -> preflight.Step | None:
    """The first step marked ``backup:true`` or destructive by the backend's analysis, each
    analysed against the schema the steps before it leave (as the dry run does)."""
    annotator = backend.annotator()
    for step in steps:
        if step.section.backup:
            return step
        if annotator is None:
            continue
        try:
            analysed = annotator.annotate(list(step.statements), step.transactional)
        except Exception:  # an analysis gap: back up rather than guess that it is safe
            return step
        if any(annotation.destructive for annotation in analysed.statements):
            return step
    return None


def down(
    backend: Backend,
    migrations: list[Migration],
    *,
    steps: int | None = None,
    target: Version | None = None,
    progress: Progress = no_progress,
) -> list[RolledBack]:
    """Roll back the newest ``steps`` applied migrations (default 1), or all above ``target``."""
    if backend.read_ledger() is None:
        prepare_down(backend, migrations, None, steps=steps, target=target)  # bad arguments are still refused
        return []
    with _locked(backend, progress):
        snapshot = backend.read_ledger()
        if snapshot is None:  # dropped since the first read: nothing to roll back
            return []
        work = prepare_down(backend, migrations, snapshot, steps=steps, target=target)
        _make_current(backend, snapshot, progress)
        rows = work.plan.rows
        executor = _executor(backend, progress)
        if work.steps:
            progress("steps", str(len(work.steps)), None)
        return _run_steps(
            backend, work.steps, lambda step: executor.roll_back(step, rows[step.name]), "down", progress
        )


def redo(
    backend: Backend, migrations: list[Migration], *, progress: Progress = no_progress
) -> tuple[RolledBack | None, list[Applied]]:
    """Roll back the newest applied migration and apply it again: the loop while writing one.
    Everything ``up`` would refuse is refused first; both halves run under one lock."""
    if backend.read_ledger() is None:
        return None, []
    with _locked(backend, progress):
        snapshot = backend.read_ledger()
        from dbledger import preflight

        work = preflight.redo(migrations, ledger_view(backend, snapshot, migrations), backend.dialect)
        if work.nothing_to_do:
            return None, []
        _make_current(backend, snapshot, progress)
        back, again = work.steps
        row = work.plan.rows[back.name]
        executor = _executor(backend, progress)
        undone: RolledBack | None = None
        try:
            undone = executor.roll_back(back, row)
            # The newest applied migration goes back to its own place in the applied order.
            applied = [executor.apply(again, row.applied_order or work.plan.next_order)]
        finally:
            if undone is not None:
                record_schema(backend, "redo", back.name, progress)
        return undone, applied


class Repaired(NamedTuple):
    """One ledger row ``repair`` changed, and how."""

    name: str
    # "checksum accepted", "renamed", "failed record removed", "dirty record removed",
    # "missing record removed"
    action: str
    detail: str


def repair(
    backend: Backend,
    migrations: list[Migration],
    *,
    forget_missing: bool = False,
    accept: Collection[str] = (),
    progress: Progress = no_progress,
) -> list[Repaired]:
    """Accept the checksums of modified files, record renamed files under their new names, and
    clear failed and dirty rows, so the next ``up`` runs those again; with ``forget_missing``,
    also drop the records of applied migrations whose files are gone (kept by default: restoring
    such a file later would make it look pending and run it twice). Every change goes into the
    history.

    A cosmetic change (the same statements) is accepted as it is; a semantic one, or one whose
    kind cannot be told, only when its migration is named in ``accept``: otherwise nothing is
    changed and the refusal shows what changed."""
    from dbledger.edits import kept_source

    if backend.read_ledger() is None:
        return []
    done: list[Repaired] = []
    with _locked(backend, progress):
        snapshot = backend.read_ledger()
        if snapshot is None:  # dropped since the first read
            return []
        _make_current(backend, snapshot, progress)
        plan = make_plan(migrations, snapshot.rows)
        sources = applied_sources(backend, snapshot, migrations)
        plan.classify_edits(lambda name: sources.get(name), backend.dialect)
        _check_accepted(plan, accept)
        with backend.transaction():
            for migration, row in plan.modified:
                edit = plan.edits[row.name]
                how = "" if edit.kind == "cosmetic" else ", accepted with --accept"
                detail = (
                    f"{edit.kind} change{how}: {edit.reason}; checksum {row.checksum} -> {migration.checksum}"
                )
                backend.write(
                    LedgerEvent(
                        "repair",
                        row.name,
                        "checksum",
                        state=row.state,
                        version=row.version,
                        checksum=migration.checksum,
                        applied_order=row.applied_order,
                        detail=detail,
                        source=kept_source(migration),
                    )
                )
                done.append(Repaired(row.name, "checksum accepted", detail))
                if edit.kind != "cosmetic":
                    backend.set_schema_aside("repair", row.name)
            for migration, row in plan.renamed:
                _rename(backend, row.name, migration.name, row)
                done.append(Repaired(row.name, "renamed", f"{row.name} -> {migration.name}"))
            removals = [(r, "failed") for r in plan.failed] + [(r, "dirty") for r in plan.dirty]
            removals += [(r, "missing") for r in plan.missing if forget_missing]
            for row, what in removals:
                detail = f"state was {row.state}, checksum {(row.checksum or 'none')[:12]}"
                if row.error_message:
                    detail += f"; its error: {row.error_message.splitlines()[0]}"
                backend.write(
                    LedgerEvent(
                        "repair",
                        row.name,
                        "delete",
                        state=REMOVED,
                        version=row.version,
                        checksum=row.checksum,
                        error_message=row.error_message,
                        detail=detail,
                    )
                )
                done.append(Repaired(row.name, f"{what} record removed", detail))
        if plan.missing and not forget_missing:
            names = ", ".join(row.name for row in plan.missing)
            progress(
                "warning",
                f"kept the records of {names}, whose files are missing: restore the files, or run "
                "'dbledger repair --forget-missing' to drop the records",
                None,
            )
    return done


def _check_accepted(plan: Plan, accept: Collection[str]) -> None:
    """Refuse a repair that would accept a semantic change nobody named, and an ``--accept``
    naming no changed migration (a typo must not pass for a decision)."""
    changed = {row.name for _, row in plan.modified}
    if strays := sorted(set(accept) - changed):
        listed = ", ".join(sorted(changed)) or "none"
        raise UsageError(
            f"--accept {strays[0]}: no applied migration of that name was changed (changed: {listed})"
        )
    refused = [
        problem
        for (_, row), problem in zip(plan.modified, plan.modified_problems(), strict=True)
        if plan.edits[row.name].kind != "cosmetic" and row.name not in accept
    ]
    if refused:
        raise LedgerStateError(refused)


def _rename(backend: Backend, old: str, new: str, row: LedgerRow) -> None:
    """The row moves to the new name, keeping its id, times and order: two history rows, one
    saying the old name is gone and one giving the new name its state."""
    backend.write(
        LedgerEvent(
            "rename",
            old,
            "rename",
            state=REMOVED,
            version=row.version,
            checksum=row.checksum,
            new_name=new,
            detail=f"renamed to {new}",
        )
    )
    backend.write(
        LedgerEvent(
            "rename",
            new,
            "none",
            state=row.state,
            version=row.version,
            checksum=row.checksum,
            applied_order=row.applied_order,
            detail=f"renamed from {old}",
        )
    )


def baseline(
    backend: Backend,
    migrations: list[Migration],
    version: Version,
    *,
    verify: bool = False,
    shadow: Database | None = None,
    progress: Progress = no_progress,
) -> list[str]:
    """Mark every migration up to ``version`` as applied without running it (for a database that
    was built before the ledger existed). With ``verify``, first compare the live schema with what
    the files up to ``version`` produce on a scratch database, and refuse with the differences.
    Returns the names marked."""
    from dbledger.edits import kept_source

    check_target(migrations, version, "baseline VERSION")
    marked: list[str] = []
    with _locked(backend, progress):
        snapshot = backend.read_ledger()
        plan = make_plan(migrations, snapshot.rows if snapshot is not None else ())
        if dirty := [row.name for row in plan.dirty if row.version <= version]:
            raise LedgerStateError(
                [
                    f"migration '{name}' is dirty: it may be half applied, so it cannot be marked "
                    "as already there; clean up and run 'dbledger repair' first"
                    for name in dirty
                ]
            )
        if verify:
            from dbledger.replay import replayed_model  # a scratch database: only when asked
            from dbledger.schema import diff

            upto = [m for m in migrations if m.version <= version]
            differences = diff(replayed_model(backend, upto, shadow), backend.introspect())
            if differences:
                found = "".join(f"\n  {d}" for d in differences)  # one problem, however many lines
                raise LedgerStateError(
                    [
                        f"the database is not what migrations up to version {version} produce "
                        f"({len(differences)} difference(s)):{found}\nnothing was marked: find the "
                        "version it really matches, or fix it by hand"
                    ]
                )
        _make_current(backend, snapshot, progress)
        order = plan.next_order
        with backend.transaction():
            for migration in migrations:
                if migration.version > version:
                    break
                row = plan.rows.get(migration.name)
                if row is not None and row.state in APPLIED_STATES:
                    continue
                backend.write(
                    LedgerEvent(
                        "baseline",
                        migration.name,
                        "upsert",
                        state="baseline",
                        version=migration.version,
                        checksum=migration.checksum,
                        applied_order=order,
                        detail=f"baseline {version}",
                        source=kept_source(migration),
                    )
                )
                order += 1
                marked.append(migration.name)
        if marked:
            record_schema(backend, "baseline", marked[-1], progress)
    return marked


def adopt(
    backend: Backend,
    migrations: list[Migration],
    detail: str,
    *,
    dry_run: bool = False,
    progress: Progress = no_progress,
) -> tuple[list[str], list[str]]:
    """Record ``migrations`` as applied, as another tool applied them (``dbledger adopt``):
    a ledger row each and an "adopt" history row saying ``detail``. Returns the names written
    (in a dry run: that would be) and those the ledger already held as applied."""
    from dbledger.edits import kept_source

    with _locked(backend, progress):
        snapshot = backend.read_ledger()
        rows = snapshot.rows if snapshot is not None else ()
        plan = make_plan([m for m in migrations if m.version], rows)
        if problems := _adopt_problems(plan, migrations):
            raise LedgerStateError(problems)
        held = {row.name: row for row in rows}  # the repeatable ones' rows too
        already = [m.name for m in migrations if (row := held.get(m.name)) and row.state in APPLIED_STATES]
        chosen = [m for m in migrations if m.name not in already]
        if dry_run or not chosen:
            return [m.name for m in chosen], already
        _make_current(backend, snapshot, progress)
        order = plan.next_order
        with backend.transaction():
            for migration in chosen:
                backend.write(
                    LedgerEvent(
                        "adopt",
                        migration.name,
                        "upsert",
                        state="applied",
                        version=migration.version,
                        checksum=migration.checksum,
                        applied_order=order,
                        detail=detail,
                        source=kept_source(migration),
                    )
                )
                order += 1
        record_schema(backend, "adopt", chosen[-1].name, progress)
    return [m.name for m in chosen], already


def _adopt_problems(plan: Plan, migrations: list[Migration]) -> list[str]:
    """Why dbledger's own ledger cannot take these migrations: it disagrees with the files."""
    names = {m.name for m in migrations}
    problems = [
        f"migration '{row.name}' is {row.state} in dbledger's ledger: resolve it ('dbledger repair') first"
        for row in plan.rows.values()
        if row.name in names and row.state not in APPLIED_STATES
    ]
    problems += plan.modified_problems()
    return problems
