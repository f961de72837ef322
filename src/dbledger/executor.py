"""Run the steps a preflight decided: each section's statements, in a transaction or on their own,
together with its ledger row and history row, and its failure recorded when it fails.

One executor serves ``up``, ``down``, ``redo``, ``--atomic`` and every replay, so a migration runs
the same way whichever command runs it:

- each migration but the first of a run starts from a clean session (``Backend.reset_session``):
  a ``search_path`` or role one migration set does not leak into the next;
- a transactional section commits together with its ledger row, or leaves nothing;
- a ``transaction:false`` section is marked dirty before it starts and applied after it ends; when
  it fails, a transaction it opened itself is rolled back, and the row stays dirty only if some
  of its work may have been committed;
- a failure is recorded after the failed transaction rolled back, in a transaction of its own;
- the before-each and after-each hooks (a folder's hook files, then the application's) run in
  each applied migration's transaction, around its statements (in a transaction of their own
  before and after a ``transaction:false`` one); a hook that fails fails the migration.

Called under the migration lock, except for replays on a scratch database (no ledger there).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

from dbledger.backends.base import Backend
from dbledger.config import DEFAULT_WAITS, MAX_RETRY_DELAY, WaitPolicy
from dbledger.contracts import (
    COMMIT_STATEMENT,
    REMOVED,
    Action,
    Applied,
    HookCall,
    Hooks,
    LedgerEvent,
    LedgerRow,
    Progress,
    RolledBack,
    RowChange,
    Statement,
    WaitLimits,
    no_progress,
)
from dbledger.edits import kept_source
from dbledger.errors import DatabaseError, DbledgerError, MigrationFailed
from dbledger.placeholders import recorded
from dbledger.preflight import Step
from dbledger.redaction import redact

# A migration that gave up on a lock (lock_timeout) or was chosen as a deadlock's victim is rolled
# back whole and can simply run again once the other session is gone.
RETRIED_SQLSTATES = frozenset({"55P03", "40P01"})


def _detail(step: Step, retries: int) -> str | None:
    """What an apply's history row says beside its times: its lock-wait retries, the
    placeholders it ran with."""
    said = [f"applied after {retries} lock-wait retr{'ies' if retries > 1 else 'y'}"] if retries else []
    if step.placeholders:
        said.append(recorded(step.placeholders))
    return "; ".join(said) or None


def _elapsed_ms(start: float) -> int:
    return round((time.perf_counter() - start) * 1000)


class Executor:
    """Runs steps on one backend. ``record=False`` for a replay: no ledger is written."""

    def __init__(
        self,
        backend: Backend,
        *,
        progress: Progress = no_progress,
        record: bool = True,
        policy: WaitPolicy = DEFAULT_WAITS,
        hook_steps: Mapping[str, Step] | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.backend = backend
        self.progress = progress
        self.record = record
        self.policy = policy
        self.hook_steps = hook_steps or {}
        self.hooks = hooks or {}
        self._session_limits: WaitLimits | None = None  # set on the session outside a transaction
        self._fresh = True  # nothing a migration left is in the session (none has run yet)
        # A callback that asks for each statement (the command line's -v) gets each, redacted;
        # the others cost nothing per statement (a data file can hold 500,000).
        self._each_statement = bool(getattr(progress, "statements", False))

    def _clean_session(self, step: Step | None = None, *, within_transaction: bool = False) -> None:
        """Reset the session unless it is clean, before ``step`` runs; after it, the session is
        clean only if none of its statements could leave anything there (the dialect says)."""
        if not self._fresh:
            self.backend.reset_session(within_transaction=within_transaction)
            self._session_limits = None  # the reset put the server's own limits back
        dialect = self.backend.dialect
        self._fresh = step is not None and not any(dialect.may_change_session(s) for s in step.statements)

    # -- lock waits ------------------------------------------------------------------------
    def _limits(self, step: Step, statement: Statement | None = None) -> WaitLimits:
        """What ``statement`` (or every statement of a transactional ``step``) may wait for a
        lock and run: the section's own options, else the run's policy; CONCURRENTLY has its own."""
        section = step.section
        lock = section.lock_timeout
        if lock is None:
            concurrent = statement is not None and "CONCURRENTLY" in (
                self.backend.dialect.outside_transaction_only(statement) or ""
            )
            lock = self.policy.concurrently_lock_timeout if concurrent else self.policy.lock_timeout
        run = (
            section.statement_timeout
            if section.statement_timeout is not None
            else self.policy.statement_timeout
        )
        # A transaction's bound: never set for statements outside one, where it would stay on
        # the session (and a CONCURRENTLY cut short leaves an INVALID index).
        whole = (
            section.transaction_timeout
            if section.transaction_timeout is not None
            else self.policy.transaction_timeout
            if section.transaction
            else 0.0
        )
        return WaitLimits(round(lock * 1000), round(run * 1000), round(whole * 1000))

    def _may_retry(self, step: Step, err: DatabaseError, attempt: int, limits: WaitLimits) -> bool:
        """After ``err`` rolled a migration (or one of its statements) back: when it gave up on a
        lock and retries are left, wait a growing, jittered delay and say so; then True."""
        if err.sqlstate not in RETRIED_SQLSTATES or attempt >= self.policy.retries:
            return False
        import random  # only on a retry

        delay = min(MAX_RETRY_DELAY, self.policy.retry_delay * 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311 -- jitter, not a secret
        what = (
            "a deadlock" if err.sqlstate == "40P01" else f"a lock after {limits.lock_timeout_ms / 1000:g} s"
        )
        blockers = self.backend.blockers()
        held = f" (held by {'; '.join(blockers)})" if blockers else ""
        self.progress(
            "retry",
            f"{step.name}: gave up on {what}{held}; rolled back, try {attempt + 2} of "
            f"{self.policy.retries + 1} in {delay:.1f} s",
            None,
        )
        time.sleep(delay)
        return True

    def _gave_up(
        self, err: DatabaseError, attempt: int, limits: WaitLimits, *, retried: bool = True
    ) -> DatabaseError:
        """``err`` with what an operator needs when a migration gave up on a lock: how often it
        was tried, who held the lock, and what would let it through. ``retried``: whether this
        kind of statement is tried again at all (not under --atomic, not CONCURRENTLY)."""
        if err.sqlstate not in RETRIED_SQLSTATES:
            return err
        tries = f"tried {attempt + 1} time{'s' if attempt else ''}"
        blockers = self.backend.blockers()
        held = (
            "".join(f"\n  blocked by {who}" for who in blockers) or "\n  (the blocking session was not seen)"
        )
        if err.sqlstate == "40P01":
            what, advice = "lost a deadlock", ""
        else:
            waited = f"{limits.lock_timeout_ms / 1000:g} s" if limits.lock_timeout_ms else "without a limit"
            what = f"waited {waited} for a lock"
            advice = (
                "\nto let each statement wait longer: --statement-lock-timeout, or lock_timeout:DURATION "
                "on the section's marker line" + ("; to try more often: --lock-retries" if retried else "")
            )
        return DatabaseError(
            f"{err.message}\ngave up: it {what} ({tries}):{held}{advice}",
            sqlstate=err.sqlstate,
            statement=err.statement,
            connection_lost=err.connection_lost,
        )

    # -- up --------------------------------------------------------------------------------
    def apply(self, step: Step, order: int) -> Applied:
        """Apply one up section; it becomes number ``order`` in the applied order."""
        self._clean_session(step)
        estimate = self._estimate(step)
        if not step.transactional:
            return self._apply_outside(step, order, estimate)
        limits = self._limits(step)
        self.progress("start", step.name, None)
        for attempt in itertools.count():
            started = time.perf_counter()
            try:
                with self.backend.transaction(limits), self.backend.watching_waits(limits):
                    self._hook("before-each", step)
                    self._run(step)
                    self._hook("after-each", step)
                    ms = _elapsed_ms(started)
                    self._write(self._applied(step, order, ms, estimate, attempt), after=step)
                break
            except DatabaseError as err:
                if not self._may_retry(step, err, attempt, limits):
                    raise self._failed(
                        step, self._gave_up(err, attempt, limits), _elapsed_ms(started), dirty=False
                    ) from None
                self._clean_session()
        self.progress("done", step.name, ms)
        return Applied(step.name, step.migration.version, ms, step.migration.checksum)

    def _apply_outside(self, step: Step, order: int, estimate: int | None) -> Applied:
        # Outside a transaction a crash can leave partial work: say so in the ledger first.
        with self.backend.transaction():
            self._hook("before-each", step)
            self._write(self._started(step))
        self.progress("start", step.name, None)
        started = time.perf_counter()
        if (failure := self._run_outside(step)) is not None:
            error, dirty = failure
            raise self._failed(step, error, _elapsed_ms(started), dirty=dirty)
        ms = _elapsed_ms(started)
        with self.backend.transaction():
            self._hook("after-each", step)
            self._write(self._applied(step, order, ms, estimate), after=step)
        self.progress("done", step.name, ms)
        return Applied(step.name, step.migration.version, ms, step.migration.checksum)

    def _run_outside(self, step: Step) -> tuple[DatabaseError, bool] | None:
        """Run a ``transaction:false`` section statement by statement. On failure, roll back a
        transaction the section opened itself and return the error and whether some of the
        section's work may have been committed (then the migration is dirty)."""
        with self.backend.watching_waits(self._limits(step)):  # armed once for the section
            return self._each_outside(step)

    def _each_outside(self, step: Step) -> tuple[DatabaseError, bool] | None:
        committed = False
        for statement in step.statements:
            inside = self.backend.in_transaction()
            if self._each_statement:
                self._tell(step, statement)
            limits = self._limits(step, statement)
            if not inside and limits != self._session_limits:
                self.backend.limit_waits(limits)
                self._session_limits = limits
            for attempt in itertools.count():
                try:
                    self.backend.execute(statement)
                    break
                except DatabaseError as err:
                    self.backend.roll_back_open()
                    # Outside a transaction, a statement that commits in phases (CREATE INDEX
                    # CONCURRENTLY, a procedure) leaves its first phases behind when a later one
                    # fails: it is never tried again. A statement inside a transaction the
                    # section opened itself cannot be tried again alone.
                    phased = not inside and self.backend.dialect.commits_in_phases(statement)
                    if inside or phased:
                        return self._gave_up(err, attempt, limits, retried=False), committed or phased
                    if not self._may_retry(step, err, attempt, limits):
                        return self._gave_up(err, attempt, limits), committed
            committed = committed or not self.backend.in_transaction()
        return None

    def apply_atomically(self, steps: tuple[Step, ...], first_order: int) -> list[Applied]:
        """Every step in one transaction with its ledger rows: the deploy commits whole or leaves
        the database exactly as it was. After each migration its deferred constraints are
        checked, so a violation names the migration that caused it."""
        applied: list[Applied] = []
        current: Step | None = None
        started = time.perf_counter()
        # The run's limits for the whole deploy (a section's own options hold only for a
        # migration in its own transaction).
        policy = self.policy
        limits = WaitLimits(
            round(policy.lock_timeout * 1000),
            round(policy.statement_timeout * 1000),
            round(policy.transaction_timeout * 1000),
        )
        try:
            with self.backend.transaction(limits), self.backend.watching_waits(limits):
                for position, step in enumerate(steps):
                    current = step
                    if not self._fresh:  # the reset clears SET LOCAL too: the limits again
                        self._clean_session(within_transaction=True)
                        self.backend.limit_waits(limits, local=True)
                    self._fresh = False
                    estimate = self._estimate(step)
                    self.progress("start", step.name, None)
                    started = time.perf_counter()
                    self._hook("before-each", step)
                    self._run(step)
                    self._hook("after-each", step)
                    if len(steps) > 1:
                        self.backend.check_deferred()
                    ms = _elapsed_ms(started)
                    self._write(self._applied(step, first_order + position, ms, estimate), after=step)
                    applied.append(Applied(step.name, step.migration.version, ms, step.migration.checksum))
        except DatabaseError as err:
            if current is None:
                raise
            if err.statement is COMMIT_STATEMENT and len(steps) > 1:
                raise self._failed_at_commit(steps, err) from None
            undone = tuple(a.name for a in applied if a.name != current.name)
            failure = self._gave_up(err, 0, limits, retried=False)
            raise self._failed(current, failure, _elapsed_ms(started), dirty=False, undone=undone) from None
        for result in applied:
            self.progress("done", result.name, result.execution_time_ms)
        return applied

    # -- down ------------------------------------------------------------------------------
    def roll_back(self, step: Step, row: LedgerRow) -> RolledBack:
        """Run one down section; the ledger row goes, the history keeps a ``rollback`` row."""
        self._clean_session(step)
        self.progress("rollback", step.name, None)
        started = time.perf_counter()
        if step.transactional:
            limits = self._limits(step)
            for attempt in itertools.count():
                try:
                    with self.backend.transaction(limits), self.backend.watching_waits(limits):
                        self._run(step)
                        ms = _elapsed_ms(started)
                        self._write(self._rolled_back(step, ms), after=step)
                    break
                except DatabaseError as err:
                    if not self._may_retry(step, err, attempt, limits):
                        gave_up = self._gave_up(err, attempt, limits)
                        raise self._rollback_failed(step, row, gave_up, dirty=False) from None
                    self._clean_session()
                    started = time.perf_counter()
        else:
            with self.backend.transaction():  # half a rollback must be as visible as half a migration
                self._write(self._row_state(step, "start", "dirty", runner=self.backend.lock_token))
            if (failure := self._run_outside(step)) is not None:
                error, dirty = failure
                raise self._rollback_failed(step, row, error, dirty=dirty)
            ms = _elapsed_ms(started)
            with self.backend.transaction():
                self._write(self._rolled_back(step, ms), after=step)
        self.progress("rolled back", step.name, ms)
        return RolledBack(step.name, step.migration.version, ms)

    # -- replay ----------------------------------------------------------------------------
    def replay(self, step: Step, *, within_transaction: bool = False) -> None:
        """Run one section on a scratch database, with no ledger. Raises DatabaseError.
        ``within_transaction``: inside one that the caller holds (and rolls back)."""
        self._clean_session(step, within_transaction=within_transaction)
        if within_transaction:
            self._run(step)
            return
        if step.transactional:
            with self.backend.transaction():
                self._run(step)
            return
        try:
            for statement in step.statements:
                self.backend.execute(statement)
        except DatabaseError:
            self.backend.roll_back_open()
            raise

    # -- the pieces ------------------------------------------------------------------------
    def _tell(self, step: Step, statement: Statement) -> None:
        self.progress("statement", f"{step.name} line {statement.line}: {redact(statement.sql)}", None)

    def run_hooks(self, event: str) -> None:
        """Run the before-all or after-all hooks, in a transaction of their own; DatabaseError
        when one fails (the run stops there: before the first migration, or after the last)."""
        if event in self.hook_steps or event in self.hooks:
            with self.backend.transaction():
                self._hook(event, None)

    def _hook(self, event: str, step: Step | None) -> None:
        """The ``event`` hook file's statements, then the application's ``event`` hook, in the
        open transaction; each recorded in the history (action "hook")."""
        found, call = self.hook_steps.get(event), self.hooks.get(event)
        if found is None and call is None:
            return
        name = None if step is None else step.name
        started = time.perf_counter()
        if found is not None:
            try:
                self._run(found)
            except DatabaseError as err:
                raise DatabaseError(
                    f"the {event} hook ({found.migration.path.name}) failed: {err.message}",
                    sqlstate=err.sqlstate,
                    statement=err.statement,
                    connection_lost=err.connection_lost,
                ) from None
        if call is not None:
            call(HookCall(event, name, lambda sql: self.backend.execute(Statement(sql, 0))))
        file = None if found is None else found.migration
        where = f"{file.path.name} sha256:{file.checksum[:12]}" if file else "the application's hook"
        self._write(
            LedgerEvent(
                "hook", name, "none", execution_time_ms=_elapsed_ms(started), detail=f"{event}: {where}"
            )
        )

    def _run(self, step: Step) -> None:
        if self._each_statement:
            for statement in step.statements:
                self._tell(step, statement)
                self.backend.execute(statement)
            return
        for statement in step.statements:
            self.backend.execute(statement)

    def _write(self, event: LedgerEvent, after: Step | None = None) -> None:
        """Write a ledger event; ``after``: the step whose statements just ran in this session,
        which may have changed the role the ledger would be written as."""
        if not self.record:
            return
        if after is not None and any(self.backend.dialect.may_change_identity(s) for s in after.statements):
            self.backend.restore_identity()
        self.backend.write(event)

    def _estimate(self, step: Step) -> int | None:
        """The analysis's time estimate for a migration about to run, recorded with its actual
        time so later dry runs can correct their estimates for this database. Never fails a
        migration."""
        annotator = self.backend.annotator() if self.record else None
        if annotator is None:
            return None
        try:
            analysed = annotator.annotate(list(step.statements), step.transactional)
        except Exception:  # an analysis gap must never stop a deploy
            return None
        estimates = [a.estimate_ms for a in analysed.statements]
        return (
            None if any(e is None for e in estimates) else round(sum(e for e in estimates if e is not None))
        )

    def _event(self, step: Step, action: Action, change: RowChange, **fields: Any) -> LedgerEvent:
        """A ledger event about ``step``'s migration: its name, version and checksum, and
        ``fields``."""
        migration = step.migration
        return LedgerEvent(
            action,
            migration.name,
            change,
            version=migration.version,
            checksum=migration.checksum,
            source=kept_source(migration),
            **fields,
        )

    def _applied(
        self, step: Step, order: int, ms: int, estimate: int | None, retries: int = 0
    ) -> LedgerEvent:
        return self._event(
            step,
            "apply",
            "upsert",
            state="applied",
            execution_time_ms=ms,
            estimate_ms=estimate,
            applied_order=order,
            detail=_detail(step, retries),
        )

    def _started(self, step: Step) -> LedgerEvent:
        return self._event(
            step,
            "start",
            "upsert",
            state="dirty",
            error_message="started outside a transaction; not finished",
            runner=self.backend.lock_token,
        )

    def _row_state(
        self,
        step: Step,
        action: Action,
        state: str,
        *,
        order: int | None = None,
        runner: str | None = None,
        error: str | None = None,
        detail: str = "rollback",
    ) -> LedgerEvent:
        """A rollback's change of the row's state in place (its id and times stay)."""
        if error is None and state == "dirty":
            error = "rollback started outside a transaction; not finished"
        return self._event(
            step,
            action,
            "update",
            state=state,
            applied_order=order,
            runner=runner,
            error_message=error,
            detail=detail,
        )

    def _rolled_back(self, step: Step, ms: int) -> LedgerEvent:
        return self._event(step, "rollback", "delete", state=REMOVED, execution_time_ms=ms)

    def _failed(
        self, step: Step, err: DatabaseError, ms: int, *, dirty: bool, undone: tuple[str, ...] = ()
    ) -> MigrationFailed:
        state = "dirty" if dirty else "failed"
        event = self._event(
            step, "fail", "upsert", state=state, execution_time_ms=ms, error_message=err.message
        )
        note = self._record_failure(event, step)
        return MigrationFailed(
            step.name,
            err.message + note,
            sqlstate=err.sqlstate,
            statement=err.statement.sql if err.statement is not None else None,
            line=err.line,
            dirty=dirty,
            undone=undone,
            connection_lost=err.connection_lost,
        )

    def _failed_at_commit(self, steps: tuple[Step, ...], err: DatabaseError) -> MigrationFailed:
        """A deferred constraint failed at the deploy's COMMIT and the database could not say
        which migration it belongs to: say so, and record it without blaming one."""
        names = ", ".join(step.name for step in steps)
        text = (
            f"{err.message}\nthis database checks deferred constraints only at COMMIT, so it cannot "
            f"tell which of {names} caused it"
        )
        note = self._record_failure(
            LedgerEvent("fail", None, "none", error_message=text, detail=f"--atomic: {names}")
        )
        last = steps[-1]
        return MigrationFailed(
            last.name,
            text + note,
            sqlstate=err.sqlstate,
            statement="COMMIT",
            undone=tuple(step.name for step in steps[:-1]),
        )

    def _rollback_failed(
        self, step: Step, row: LedgerRow, err: DatabaseError, *, dirty: bool
    ) -> MigrationFailed:
        """Record a failed down section: the row is dirty when part of it may have been
        committed; otherwise the migration is still applied, as it was."""
        if dirty:
            event = self._row_state(step, "fail", "dirty", error=f"rollback failed: {err.message}")
        elif step.transactional:
            event = self._event(step, "fail", "none", error_message=err.message, detail="rollback")
        else:  # undo the dirty mark: nothing of the down section stayed
            first = err.message.splitlines()[0] if err.message else ""
            detail = f"rollback failed and left nothing behind: {first}"
            event = self._row_state(step, "fail", row.state, order=row.applied_order, detail=detail)
        note = self._record_failure(event, step)
        return MigrationFailed(
            step.name,
            f"rollback failed: {err.message}{note}",
            sqlstate=err.sqlstate,
            statement=err.statement.sql if err.statement is not None else None,
            line=err.line,
            dirty=dirty,
            rollback=True,
        )

    def _record_failure(self, event: LedgerEvent, step: Step | None = None) -> str:
        """Write a failure in a transaction of its own; a note for the message when even that
        fails (the connection died with the migration)."""
        if not self.record:
            return ""
        try:
            with self.backend.transaction():
                self._write(event, after=step)
        except DbledgerError as exc:
            return f"\n(the failure could not be recorded in the ledger: {exc.message})"
        return ""
