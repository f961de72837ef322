"""Apply, repair and baseline under the migration lock, recording every step in the ledger.

The order of work matters and is the point of this module:
  1. a cheap read of the ledger, before any lock, may only conclude "nothing to do";
  2. under the lock, the ledger is read again and every refusal (dirty, modified, missing, out of
     order) is decided on that fresh read;
  3. each migration commits in one transaction together with its ledger row and history entry;
  4. a failure is rolled back first, then recorded in a transaction of its own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from dbledger.backends.base import Backend, Statement, StatementError
from dbledger.config import DEFAULT_LOCK_TIMEOUT, Database
from dbledger.errors import DbledgerError, LedgerStateError, MigrationFailed, MigrationFileError, UsageError
from dbledger.existing import existing_schema_problem
from dbledger.migrations import Migration
from dbledger.plan import APPLIED_STATES, Allowances, Plan, make_plan
from dbledger.redaction import redact

# progress(event, name, elapsed ms or None). Events: "waiting" (name: who holds the lock),
# "backup" (name: where the backup went), "start" and "done" (name: the migration).
Progress = Callable[[str, str, int | None], None]
# Takes a backup before the named migration runs; returns where it went, its SHA-256 and the
# command that restores it.
BackupHook = Callable[[str], tuple[str, str, str]]


@dataclass(frozen=True)
class Applied:
    """One migration this run applied."""

    name: str
    version: int
    execution_time_ms: int
    checksum: str


def _short(checksum: str | None) -> str:
    return checksum[:12] if checksum else "none"


def _elapsed_ms(start: float) -> int:
    return round((time.perf_counter() - start) * 1000)


def no_progress(event: str, name: str, ms: int | None) -> None:
    """The default progress callback: report nothing."""
    pass


def check_target(migrations: list[Migration], target: int | None, what: str = "--to") -> None:
    """``--to V`` (or ``baseline V``) must name a version that exists, so a typo never means
    "everything"."""
    if target is not None and all(m.version != target for m in migrations):
        known = ", ".join(str(m.version) for m in migrations[-10:]) or "none"
        raise UsageError(
            f"no migration file has version {target}: {what} must name the version of an existing "
            f"file (the newest versions are: {known})"
        )


def up(
    backend: Backend,
    migrations: list[Migration],
    *,
    target: int | None = None,
    allow: Allowances = Allowances(),
    allow_existing_schema: bool = False,
    atomic: bool = False,
    backup: BackupHook | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    progress: Progress = no_progress,
) -> list[Applied]:
    """Apply pending migrations in version order, each exactly once across concurrent runners.
    With ``atomic``, all of them in one transaction: a failure undoes the whole deploy. With
    ``backup``, when a pending migration is risky (marked ``backup:true``, or destructive by the
    backend's analysis), a backup is taken before the run's first change, so it holds the
    database as it was before this deploy and a failed backup stops the run before any change."""
    check_target(migrations, target)
    rows = backend.read_ledger()
    if rows is None and not migrations:
        return []
    if rows is not None:
        plan = make_plan(migrations, rows)
        if not plan.to_apply(target) and not plan.problems(allow):
            return []  # the path every replica takes at every start: one read, no lock

    applied: list[Applied] = []
    with backend.migration_lock(lock_timeout, lambda holder: progress("waiting", holder, None)):
        # One transaction for "no ledger yet? then are there tables? then create it": on SQLite
        # another runner could otherwise create the ledger and a first table in between.
        existing: list[str] = []
        with backend.transaction():
            if backend.read_ledger() is None:
                existing = [] if allow_existing_schema else backend.user_tables()
                if not existing:
                    backend.ensure_ledger()
        if existing:  # outside the transaction: the replay may need CREATE DATABASE
            raise LedgerStateError([existing_schema_problem(backend, migrations, existing)])
        if backup is not None:
            pending = _fresh_plan(backend, migrations, allow).to_apply(target)
            if atomic and (outside := [m.name for m in pending if not m.up.transaction]):
                raise UsageError(
                    f"--atomic runs every pending migration in one transaction, but "
                    f"{', '.join(outside)} must run outside one (transaction:false): deploy without "
                    "--atomic, or apply up to the version before it atomically first (--to)"
                )
            for migration in pending:  # refuse malformed sections before a long backup, not after
                if migration.up.transaction:
                    _refuse_transaction_control(migration, backend.split(migration.up))
            risky = next((m for m in pending if _is_risky(backend, m)), None)
            if risky is not None:
                _back_up(backend, risky, backup, progress)
        if atomic:
            applied = _apply_atomically(backend, migrations, target, allow, progress)
        else:
            while (result := _apply_next(backend, migrations, target, allow, progress)) is not None:
                applied.append(result)
        if applied:
            record_schema(backend, "up", applied[-1].name, progress)
    return applied


def record_schema(backend: Backend, action: str, name: str | None, progress: Progress) -> None:
    """Remember the schema this run left, for ``drift`` and ``status``. Called under the lock
    after the run's work committed; a failure here is reported, never turned into a failed run."""
    from dbledger.schema import fingerprint  # only after real work: introspection costs 10-250 ms
    from dbledger.schema.storage import dumps

    try:
        model = backend.introspect()
        with backend.transaction():
            backend.save_schema(action, name, fingerprint(model), dumps(model))
    except Exception as exc:  # the migrations are committed; losing the snapshot is not fatal
        progress("warning", redact(f"the schema could not be recorded for drift checks: {exc}"), None)


def _is_risky(backend: Backend, migration: Migration) -> bool:
    """Marked ``backup:true``, or destructive by the backend's analysis (DROP, a rewriting type
    change, TRUNCATE, DELETE without WHERE)."""
    if migration.up.backup:
        return True
    annotator = backend.annotator()
    if annotator is None:
        return False
    try:
        analysed = annotator.annotate(backend.split(migration.up), migration.up.transaction)
    except Exception:  # an analysis gap: back up rather than guess that it is safe
        return True
    return any(annotation.destructive for annotation in analysed.statements)


def _back_up(backend: Backend, migration: Migration, backup: BackupHook, progress: Progress) -> None:
    path, digest, restore = backup(migration.name)
    with backend.transaction():
        backend.log("backup", migration.name, checksum=migration.checksum, detail=f"{path} sha256:{digest}")
    progress("backup", f"{path} (sha256 {digest[:12]}…); restore with: {restore}", None)


def _apply_atomically(
    backend: Backend,
    migrations: list[Migration],
    target: int | None,
    allow: Allowances,
    progress: Progress,
) -> list[Applied]:
    """Every pending migration in one transaction, with their ledger rows: the deploy commits
    whole or leaves the database exactly as it found it."""
    applied: list[Applied] = []
    current: Migration | None = None
    started = 0.0
    try:
        with backend.transaction():
            todo = _fresh_plan(backend, migrations, allow).to_apply(target)
            outside = [m.name for m in todo if not m.up.transaction]
            if outside:
                raise UsageError(
                    f"--atomic runs every pending migration in one transaction, but "
                    f"{', '.join(outside)} must run outside one (transaction:false): deploy without "
                    "--atomic, or apply up to the version before it atomically first (--to)"
                )
            batches = [(migration, backend.split(migration.up)) for migration in todo]
            for migration, statements in batches:
                _refuse_transaction_control(migration, statements)
            for migration, statements in batches:
                current = migration
                estimate = _estimate(backend, statements, transactional=True)
                progress("start", migration.name, None)
                started = time.perf_counter()
                for statement in statements:
                    backend.execute(statement)
                applied.append(_record_applied(backend, migration, _elapsed_ms(started), estimate))
    except StatementError as err:
        if current is None:
            raise DbledgerError(f"cannot read the ledger: {err.message}") from None
        undone = tuple(a.name for a in applied if a.name != current.name)
        raise _record_failure(
            backend, current, err, _elapsed_ms(started), dirty=False, undone=undone
        ) from None
    for result in applied:
        progress("done", result.name, result.execution_time_ms)
    return applied


def _fresh_plan(backend: Backend, migrations: list[Migration], allow: Allowances) -> Plan:
    plan = make_plan(migrations, backend.read_ledger() or [])
    if problems := plan.problems(allow):
        raise LedgerStateError(problems)
    return plan


def _apply_next(
    backend: Backend,
    migrations: list[Migration],
    target: int | None,
    allow: Allowances,
    progress: Progress,
) -> Applied | None:
    """Apply the first pending migration, deciding which one inside its own transaction (on
    SQLite that transaction is what makes the choice exclusive between runners)."""
    started = 0.0
    migration: Migration | None = None
    result: Applied | None = None
    try:
        with backend.transaction():  # an error raised at COMMIT arrives as a StatementError too
            todo = _fresh_plan(backend, migrations, allow).to_apply(target)
            if not todo:
                return None
            migration = todo[0]
            statements = backend.split(migration.up)
            if migration.up.transaction:
                _refuse_transaction_control(migration, statements)
            estimate = _estimate(backend, statements, transactional=migration.up.transaction)
            progress("start", migration.name, None)
            started = time.perf_counter()
            if migration.up.transaction:
                for statement in statements:
                    backend.execute(statement)
                result = _record_applied(backend, migration, _elapsed_ms(started), estimate)
            else:
                # Outside a transaction a crash can leave partial work: say so in the ledger first.
                mark_dirty(backend, migration, "started outside a transaction; not finished")
                backend.log("start", migration.name, checksum=migration.checksum)
    except StatementError as err:
        if migration is None:
            raise DbledgerError(f"cannot read the ledger: {err.message}") from None
        raise _record_failure(backend, migration, err, _elapsed_ms(started), dirty=False) from None
    if result is None:
        started = time.perf_counter()
        try:
            for statement in statements:
                backend.execute(statement)
        except StatementError as err:
            raise _record_failure(backend, migration, err, _elapsed_ms(started), dirty=True) from None
        with backend.transaction():
            result = _record_applied(backend, migration, _elapsed_ms(started), estimate)
    progress("done", migration.name, result.execution_time_ms)
    return result


_TRANSACTION_CONTROL = re.compile(
    r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*"
    r"(?P<word>BEGIN|START\s+TRANSACTION|COMMIT|END|ABORT|ROLLBACK(?!\s+(?:WORK\s+|TRANSACTION\s+)?TO\b))\b",
    re.IGNORECASE | re.DOTALL,
)


def _refuse_transaction_control(
    migration: Migration, statements: list[Statement], section: str = "up"
) -> None:
    """A COMMIT or ROLLBACK inside a migration would end the transaction dbledger runs it in:
    the ledger would then record work that was rolled back, or miss work that was committed."""
    for statement in statements:
        found = _TRANSACTION_CONTROL.match(statement.sql)
        if found:
            word = " ".join(found.group("word").upper().split())
            raise MigrationFileError(
                str(migration.path),
                f"line {statement.line}: {word} would end the transaction dbledger runs this "
                "migration in (one per migration, with its ledger row): remove it, or mark the "
                f"section '-- migrate:{section} transaction:false' to run each statement on its own",
            )


def mark_dirty(backend: Backend, migration: Migration, note: str) -> None:
    """Record that ``migration`` is half done outside a transaction; ``up`` and ``down`` refuse
    to pass a dirty row until a person has looked and run ``repair``."""
    backend.record(
        name=migration.name,
        version=migration.version,
        state="dirty",
        checksum=migration.checksum,
        execution_time_ms=None,
        error_message=note,
    )


def _estimate(backend: Backend, statements: list[Statement], *, transactional: bool) -> float | None:
    """The analysis's time estimate for a migration about to run, recorded with its actual time
    so later dry runs can correct their estimates for this database. Never fails a migration."""
    annotator = backend.annotator()
    if annotator is None:
        return None
    try:
        analysed = annotator.annotate(statements, transactional)
    except Exception:  # an analysis gap must never stop a deploy
        return None
    estimates = [a.estimate_ms for a in analysed.statements]
    return None if any(e is None for e in estimates) else sum(e for e in estimates if e is not None)


ESTIMATE_PREFIX = "estimate_ms="


def _record_applied(
    backend: Backend, migration: Migration, ms: int, estimate: float | None = None
) -> Applied:
    backend.record(
        name=migration.name,
        version=migration.version,
        state="applied",
        checksum=migration.checksum,
        execution_time_ms=ms,
        error_message=None,
    )
    detail = None if estimate is None else f"{ESTIMATE_PREFIX}{estimate:.0f}"
    backend.log("apply", migration.name, checksum=migration.checksum, execution_time_ms=ms, detail=detail)
    return Applied(migration.name, migration.version, ms, migration.checksum)


def _record_failure(
    backend: Backend,
    migration: Migration,
    err: StatementError,
    ms: int,
    *,
    dirty: bool,
    undone: tuple[str, ...] = (),
) -> MigrationFailed:
    note = ""
    try:
        _write_failure(backend, migration, err, ms, dirty=dirty)
    except Exception as exc:  # e.g. the connection died with the migration
        note = f"\n(the failure could not be recorded in the ledger: {exc})"
    return MigrationFailed(
        migration.name,
        err.message + note,
        sqlstate=err.sqlstate,
        statement=err.statement.sql,
        line=err.statement.line,
        dirty=dirty,
        undone=undone,
    )


def _write_failure(
    backend: Backend, migration: Migration, err: StatementError, ms: int, *, dirty: bool
) -> None:
    with backend.transaction():
        backend.record(
            name=migration.name,
            version=migration.version,
            state="dirty" if dirty else "failed",
            checksum=migration.checksum,
            execution_time_ms=ms,
            error_message=err.message,
        )
        backend.log(
            "fail",
            migration.name,
            checksum=migration.checksum,
            execution_time_ms=ms,
            error_message=err.message,
        )


@dataclass(frozen=True)
class Repaired:
    """One ledger row ``repair`` changed, and how."""

    name: str
    action: (
        str  # "checksum accepted", "failed record removed", "dirty record removed", "missing record removed"
    )
    detail: str


def repair(
    backend: Backend,
    migrations: list[Migration],
    *,
    forget_missing: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> list[Repaired]:
    """Accept the checksums of modified files and clear failed and dirty rows, so the next ``up``
    runs those migrations again; with ``forget_missing``, also drop the records of applied
    migrations whose files are gone (kept by default: restoring such a file later would make it
    look pending and run it twice). Every change goes into the history."""
    if backend.read_ledger() is None:
        return []
    done: list[Repaired] = []
    with backend.migration_lock(lock_timeout), backend.transaction():
        plan = make_plan(migrations, backend.read_ledger() or [])
        for migration, row in plan.modified:
            detail = f"checksum {row.checksum} -> {migration.checksum}"
            backend.accept_checksum(row.name, migration.checksum)
            backend.log("repair", row.name, checksum=migration.checksum, detail=detail)
            done.append(Repaired(row.name, "checksum accepted", detail))
        for row, what in (
            [(r, "failed") for r in plan.failed]
            + [(r, "dirty") for r in plan.dirty]
            + [(r, "missing") for r in plan.missing if forget_missing]
        ):
            detail = f"state was {row.state}, checksum {_short(row.checksum)}"
            if row.error_message:
                detail += f"; its error: {row.error_message.splitlines()[0]}"
            backend.forget(row.name)
            backend.log(
                "repair", row.name, checksum=row.checksum, error_message=row.error_message, detail=detail
            )
            done.append(Repaired(row.name, f"{what} record removed", detail))
    return done


def baseline(
    backend: Backend,
    migrations: list[Migration],
    version: int,
    *,
    verify: bool = False,
    shadow: Database | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> list[str]:
    """Mark every migration up to ``version`` as applied without running it (for a database that
    was built before the ledger existed). With ``verify``, first compare the live schema with what
    the files up to ``version`` produce on a scratch database, and refuse with the differences.
    Returns the names marked."""
    check_target(migrations, version, "baseline VERSION")
    marked: list[str] = []
    with backend.migration_lock(lock_timeout):
        if verify:
            from dbledger.drift import replayed_model  # a scratch database: only when asked
            from dbledger.schema import diff

            upto = [m for m in migrations if m.version <= version]
            differences = diff(replayed_model(backend, upto, shadow), backend.introspect())
            if differences:
                raise LedgerStateError(
                    [f"the database is not what migrations up to version {version} produce:"]
                    + [str(d) for d in differences]
                    + ["nothing was marked: find the version it really matches, or fix it by hand"]
                )
        with backend.transaction():
            backend.ensure_ledger()
            rows = {row.name: row for row in backend.read_ledger() or []}
            for migration in migrations:
                if migration.version > version:
                    break
                row = rows.get(migration.name)
                if row is not None and row.state in APPLIED_STATES:
                    continue
                backend.record(
                    name=migration.name,
                    version=migration.version,
                    state="baseline",
                    checksum=migration.checksum,
                    execution_time_ms=None,
                    error_message=None,
                )
                backend.log(
                    "baseline", migration.name, checksum=migration.checksum, detail=f"baseline {version}"
                )
                marked.append(migration.name)
        if marked:
            record_schema(backend, "baseline", marked[-1], no_progress)
    return marked
