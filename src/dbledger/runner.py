"""Apply, repair and baseline under the migration lock, recording every step in the ledger.

The order of work matters and is the point of this module:
  1. a cheap read of the ledger, before any lock, may only conclude "nothing to do";
  2. under the lock, the ledger is read again and every refusal (dirty, modified, missing, out of
     order) is decided on that fresh read;
  3. each migration commits in one transaction together with its ledger row and history entry;
  4. a failure is rolled back first, then recorded in a transaction of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dbledger.backends.base import Backend, StatementError
from dbledger.errors import LedgerStateError, MigrationFailed, UsageError
from dbledger.existing import existing_schema_problem
from dbledger.migrations import Migration
from dbledger.plan import APPLIED_STATES, Allowances, Plan, make_plan

# progress(event, migration name, elapsed ms or None); events: "start", "done", "failed".
Progress = Callable[[str, str, int | None], None]


@dataclass(frozen=True)
class Applied:
    """One migration this run applied."""

    name: str
    version: int
    execution_time_ms: int
    checksum: str


def _elapsed_ms(start: float) -> int:
    return round((time.perf_counter() - start) * 1000)


def _quiet(event: str, name: str, ms: int | None) -> None:
    pass


def check_target(migrations: list[Migration], target: int | None, what: str = "--to") -> None:
    """``--to V`` (or ``baseline V``) must name a version that exists, so a typo never means
    "everything"."""
    if target is not None and all(m.version != target for m in migrations):
        raise UsageError(
            f"no migration file has version {target}: {what} must name the version of an existing file"
        )


def up(
    backend: Backend,
    migrations: list[Migration],
    *,
    target: int | None = None,
    allow: Allowances = Allowances(),
    allow_existing_schema: bool = False,
    lock_timeout: float = 600.0,
    progress: Progress = _quiet,
) -> list[Applied]:
    """Apply pending migrations in version order, each exactly once across concurrent runners."""
    check_target(migrations, target)
    rows = backend.read_ledger()
    if rows is None and not migrations:
        return []
    if rows is not None:
        plan = make_plan(migrations, rows)
        if not plan.to_apply(target) and not plan.problems(allow):
            return []  # the path every replica takes at every start: one read, no lock

    applied: list[Applied] = []
    with backend.migration_lock(lock_timeout):
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
        while (result := _apply_next(backend, migrations, target, allow, progress)) is not None:
            applied.append(result)
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
    """Apply the first pending migration, deciding which one inside its own transaction (SQLite
    has no run-level lock, so that transaction is what makes the choice exclusive)."""
    started = 0.0
    migration: Migration | None = None
    try:
        with backend.transaction():
            todo = _fresh_plan(backend, migrations, allow).to_apply(target)
            if not todo:
                return None
            migration = todo[0]
            statements = backend.split(migration.up)
            progress("start", migration.name, None)
            started = time.perf_counter()
            if migration.up.transaction:
                for statement in statements:
                    backend.execute(statement)
                result = _record_applied(backend, migration, _elapsed_ms(started))
                progress("done", migration.name, result.execution_time_ms)
                return result
            # Outside a transaction, a crash can leave partial work: say so in the ledger first.
            backend.record(
                name=migration.name,
                version=migration.version,
                state="dirty",
                checksum=migration.checksum,
                execution_time_ms=None,
                error_message="started outside a transaction; not finished",
            )
            backend.log("start", migration.name, checksum=migration.checksum)
    except StatementError as err:
        assert migration is not None
        raise _record_failure(backend, migration, err, _elapsed_ms(started), dirty=False) from None

    started = time.perf_counter()
    try:
        for statement in statements:
            backend.execute(statement)
    except StatementError as err:
        raise _record_failure(backend, migration, err, _elapsed_ms(started), dirty=True) from None
    with backend.transaction():
        result = _record_applied(backend, migration, _elapsed_ms(started))
    progress("done", migration.name, result.execution_time_ms)
    return result


def _record_applied(backend: Backend, migration: Migration, ms: int) -> Applied:
    backend.record(
        name=migration.name,
        version=migration.version,
        state="applied",
        checksum=migration.checksum,
        execution_time_ms=ms,
        error_message=None,
    )
    backend.log("apply", migration.name, checksum=migration.checksum, execution_time_ms=ms)
    return Applied(migration.name, migration.version, ms, migration.checksum)


def _record_failure(
    backend: Backend, migration: Migration, err: StatementError, ms: int, *, dirty: bool
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


def repair(backend: Backend, migrations: list[Migration], *, lock_timeout: float = 600.0) -> list[Repaired]:
    """Accept the checksums of modified files and clear failed, dirty and missing rows, so the
    next ``up`` runs those migrations again. Every change goes into the history."""
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
            + [(r, "missing") for r in plan.missing]
        ):
            detail = f"removed {what} record (state {row.state}, checksum {row.checksum})"
            if row.error_message:
                detail += f"; it said: {row.error_message}"
            backend.forget(row.name)
            backend.log(
                "repair", row.name, checksum=row.checksum, error_message=row.error_message, detail=detail
            )
            done.append(Repaired(row.name, f"{what} record removed", detail))
    return done


def baseline(
    backend: Backend, migrations: list[Migration], version: int, *, lock_timeout: float = 600.0
) -> list[str]:
    """Mark every migration up to ``version`` as applied without running it (for a database that
    was built before the ledger existed). Returns the names marked."""
    check_target(migrations, version, "baseline VERSION")
    marked: list[str] = []
    with backend.migration_lock(lock_timeout), backend.transaction():
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
            backend.log("baseline", migration.name, checksum=migration.checksum, detail=f"baseline {version}")
            marked.append(migration.name)
    return marked
