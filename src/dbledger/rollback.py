"""Roll back applied migrations with their down sections: ``down`` and ``redo``.

Everything that could make a rollback unsafe is checked, for every migration in the range, before
the first one runs: a missing file, no down section, a file changed since it was applied, a dirty
record. Then each step runs in its own transaction together with its ledger change (the row is
deleted; the history keeps a ``rollback`` entry), newest first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dbledger.backends.base import Backend, StatementError
from dbledger.config import DEFAULT_LOCK_TIMEOUT
from dbledger.errors import LedgerStateError, MigrationFailed, UsageError
from dbledger.migrations import Migration
from dbledger.plan import APPLIED_STATES, Allowances, LedgerRow, make_plan
from dbledger.runner import (
    Applied,
    Progress,
    _apply_next,
    _refuse_transaction_control,
    mark_dirty,
    no_progress,
    record_schema,
)


@dataclass(frozen=True)
class RolledBack:
    """One migration this run rolled back."""

    name: str
    version: int
    execution_time_ms: int


def select(rows: list[LedgerRow], *, steps: int | None, target: int | None) -> list[LedgerRow]:
    """The applied rows to roll back, newest first: the newest ``steps`` (default 1), or all
    above version ``target`` (``0``: everything)."""
    if steps is not None and target is not None:
        raise UsageError("give --steps or --to, not both")
    if steps is not None and steps < 1:
        raise UsageError(f"--steps must be 1 or more, not {steps}")
    # Newest first in the order they were applied (rows come in ledger order), which differs from
    # version order after --allow-out-of-order.
    applied = [r for r in reversed(rows) if r.state in APPLIED_STATES]
    if target is not None:
        if target < 0:
            raise UsageError(f"--to must be 0 (everything) or a version, not {target}")
        if target != 0 and all(r.version != target for r in applied):
            known = ", ".join(str(r.version) for r in applied[:10]) or "none"
            raise UsageError(
                f"no applied migration has version {target}: --to must be 0 or an applied version "
                f"(the newest applied: {known})"
            )
        return [r for r in applied if r.version > target]
    return applied[: steps or 1]


def check(
    backend: Backend, chosen: list[LedgerRow], migrations: list[Migration], rows: list[LedgerRow]
) -> list[Migration]:
    """The files of ``chosen``, or LedgerStateError naming every one that cannot be rolled back;
    a down section with COMMIT or ROLLBACK is refused here too, before any step runs."""
    files = {m.name: m for m in migrations}
    plan = make_plan(migrations, rows)
    problems = [
        f"migration '{row.name}' is dirty: clean up and run 'dbledger repair' before rolling back"
        for row in plan.dirty
    ]
    for row in chosen:
        migration = files.get(row.name)
        if migration is None:
            problems.append(f"migration '{row.name}' cannot be rolled back: its file is missing")
        elif migration.down is None:
            problems.append(
                f"migration '{row.name}' has no down section ({migration.path}): add "
                "'-- migrate:down' with SQL that undoes it, or roll back fewer steps"
            )
        elif migration.checksum != row.checksum:
            problems.append(
                f"migration '{row.name}' was modified after it was applied: its down section may "
                "not match what ran; restore the file, or run 'dbledger repair' to accept it"
            )
    if problems:
        raise LedgerStateError(problems)
    for row in chosen:
        section = files[row.name].down
        if section is not None and section.transaction:
            _refuse_transaction_control(files[row.name], backend.split(section), "down")
    return [files[row.name] for row in chosen]


def down(
    backend: Backend,
    migrations: list[Migration],
    *,
    steps: int | None = None,
    target: int | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    progress: Progress = no_progress,
) -> list[RolledBack]:
    """Roll back the newest ``steps`` migrations, or all above ``target``."""
    if backend.read_ledger() is None:
        return []
    with backend.migration_lock(lock_timeout, lambda holder: progress("waiting", holder, None)):
        rows = backend.read_ledger() or []
        chosen = check(backend, select(rows, steps=steps, target=target), migrations, rows)
        undone = [_roll_back(backend, migration, progress) for migration in chosen]
        if undone:
            record_schema(backend, "down", undone[-1].name, progress)
        return undone


def redo(
    backend: Backend,
    migrations: list[Migration],
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    progress: Progress = no_progress,
) -> tuple[RolledBack | None, list[Applied]]:
    """Roll back the newest migration and apply it again: the loop while writing one. Everything
    ``up`` would refuse is refused first, and both halves run under one lock. Returns (None, [])
    when nothing is applied."""
    if backend.read_ledger() is None:
        return None, []
    with backend.migration_lock(lock_timeout, lambda holder: progress("waiting", holder, None)):
        rows = backend.read_ledger() or []
        plan = make_plan(migrations, rows)
        if problems := plan.problems():
            raise LedgerStateError(problems)
        chosen = check(backend, select(rows, steps=1, target=None), migrations, rows)
        if not chosen:
            return None, []
        newest = chosen[0]
        if others := [m.name for m in plan.pending if m.version <= newest.version]:
            raise LedgerStateError(
                [
                    f"redo of '{newest.name}' would also apply {', '.join(others)}, pending before "
                    "it: run 'dbledger up' first"
                ]
            )
        undone = _roll_back(backend, newest, progress)
        applied = []
        while (
            result := _apply_next(backend, migrations, newest.version, Allowances(), progress)
        ) is not None:
            applied.append(result)
        record_schema(backend, "redo", newest.name, progress)
        return undone, applied


def _roll_back(backend: Backend, migration: Migration, progress: Progress) -> RolledBack:
    section = migration.down
    assert section is not None  # check() made sure
    statements = backend.split(section)
    progress("rollback", migration.name, None)
    started = time.perf_counter()
    try:
        if section.transaction:
            _refuse_transaction_control(migration, statements)
            with backend.transaction():
                for statement in statements:
                    backend.execute(statement)
                ms = round((time.perf_counter() - started) * 1000)
                _forget(backend, migration, ms)
        else:
            with backend.transaction():  # half a rollback must be as visible as half a migration
                mark_dirty(backend, migration, "rollback started outside a transaction; not finished")
            for statement in statements:
                backend.execute(statement)
            ms = round((time.perf_counter() - started) * 1000)
            with backend.transaction():
                _forget(backend, migration, ms)
    except StatementError as err:
        dirty = not section.transaction
        with backend.transaction():
            if dirty:
                mark_dirty(backend, migration, f"rollback failed: {err.message}")
            backend.log(
                "fail",
                migration.name,
                checksum=migration.checksum,
                error_message=err.message,
                detail="rollback",
            )
        failed = MigrationFailed(
            migration.name,
            f"rollback failed: {err.message}",
            sqlstate=err.sqlstate,
            statement=err.statement.sql,
            line=err.statement.line,
            dirty=dirty,
            rollback=True,
        )
        raise failed from None
    progress("rolled back", migration.name, ms)
    return RolledBack(migration.name, migration.version, ms)


def _forget(backend: Backend, migration: Migration, ms: int) -> None:
    backend.forget(migration.name)
    backend.log("rollback", migration.name, checksum=migration.checksum, execution_time_ms=ms)
