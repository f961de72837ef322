"""One command over many targets (``--all``): every tenant's database, or schema, of a fleet
(``dbledger.targets`` says where the list comes from).

Targets run in threads, ``jobs`` at a time (the work is waiting for databases), each through the
API's own functions with a connection of its own. A failure ends only its target; without
``continue_on_error`` no new target starts after the first failure, the running ones finish and
the rest are reported as not started.

Runners on several machines split a fleet without a coordinator: ``up`` claims each target by
trying its migration lock once, without waiting. A target whose lock is held (by another runner,
or an application replica migrating it) is *claimed*, not failed. After its pass a runner tries
its claimed targets once more, again without waiting: a peer that died has lost its session and
so its lock, and its targets are taken over instead of silently left; those still claimed are
being migrated by a live peer. Each migration is still applied exactly once: the lock and the
re-read of the ledger under it are those of one ``up``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from dbledger import api, layouts
from dbledger.config import WaitPolicy, resolve
from dbledger.contracts import Progress, no_progress
from dbledger.errors import ConfigError, DbledgerError, DriftFound, FleetFailed, LedgerStateError, LockTimeout
from dbledger.redaction import redact
from dbledger.targets import Target, Targets

__all__ = ["Fleet", "FleetReport", "TargetResult", "Watch"]

PathLike = str | os.PathLike[str]
DEFAULT_JOBS = 4
MAX_JOBS = 64
# A claim is one try of the target's migration lock; the API's lock wait must be above zero.
CLAIM_TIMEOUT = 0.001

Outcome = Literal[
    "applied", "up_to_date", "pending", "problems", "ok", "claimed", "failed", "not_started", "interrupted"
]


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetResult:
    """What the command did on one target. ``detail`` is the summary table's cell."""

    target: Target
    outcome: Outcome
    detail: str
    elapsed_ms: int = 0
    applied: tuple[str, ...] = ()
    document: dict[str, Any] | None = None  # the command's own --json document for this target
    error: DbledgerError | None = None
    holder: str | None = None  # claimed: who held the lock
    retried: bool = False  # claimed on the first try, tried again after the pass

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.label,
            "database": self.target.database,
            "schema": self.target.schema,
            "source": self.target.source,
            "outcome": self.outcome,
            "detail": self.detail,
            "elapsed_ms": self.elapsed_ms,
            "applied": list(self.applied),
            "holder": self.holder,
            "retried": self.retried,
            "error": None if self.error is None else self.error.to_dict(),
            "result": self.document,
        }


@dataclass(frozen=True)
class FleetReport:
    """One run over a fleet: a result for every target, in the order they were listed."""

    command: str
    source: str
    jobs: int
    results: list[TargetResult]
    elapsed_ms: int

    @property
    def failed(self) -> list[TargetResult]:
        return [result for result in self.results if result.failed]

    def counts(self) -> dict[str, int]:
        return dict(Counter(result.outcome for result in self.results))

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "targets_from": self.source,
            "jobs": self.jobs,
            "elapsed_ms": self.elapsed_ms,
            "counts": self.counts(),
            "targets": [result.to_dict() for result in self.results],
        }

    def check(self) -> FleetReport:
        """This report, or FleetFailed when a target failed."""
        if self.failed:
            first = self.failed[0]
            raise FleetFailed(
                self.to_dict(), len(self.failed), len(self.results), f"{first.target.label}: {first.detail}"
            )
        return self


class Watch(Protocol):
    """Told, on the calling thread, what a fleet run does while it works."""

    def started(self, target: Target) -> None: ...
    def finished(self, result: TargetResult) -> None: ...
    def retrying(self, count: int) -> None: ...
    def note(self, target: Target, event: str, subject: str, ms: int | None) -> None: ...


class _NoWatch:
    def started(self, target: Target) -> None:
        pass

    def finished(self, result: TargetResult) -> None:
        pass

    def retrying(self, count: int) -> None:
        pass

    def note(self, target: Target, event: str, subject: str, ms: int | None) -> None:
        pass


Task = Callable[[Target, Progress], TargetResult]


def first_line(exc: DbledgerError) -> str:
    """An error in one line, for the summary table."""
    if isinstance(exc, LedgerStateError) and len(exc.problems) > 1:
        return f"{len(exc.problems)} problems, the first: {exc.problems[0].splitlines()[0]}"
    lines = exc.message.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _failure(target: Target, exc: DbledgerError) -> TargetResult:
    document = exc.document if isinstance(exc, DriftFound) else None  # the differences, for --json
    return TargetResult(target, "failed", f"failed: {first_line(exc)}", document=document, error=exc)


# -- running --------------------------------------------------------------------------------


class _Pool:
    """Runs a task on targets, ``jobs`` threads at a time. Only the calling thread talks to the
    watch: the workers hand their events over through a queue."""

    def __init__(
        self,
        task: Task,
        jobs: int,
        watch: Watch,
        said: frozenset[str] = frozenset(),
        statements: bool = False,
    ) -> None:
        self.task = task
        self.jobs = jobs
        self.watch = watch
        self.said = said  # warnings the run gave once, which every target would repeat
        self.statements = statements  # the executor reports each statement (--verbose)
        self.events: queue.Queue[tuple[str, int, Any]] = queue.Queue()
        # Set when the command is interrupted: each worker stops at its next step, where its
        # migration is rolled back exactly as one interrupted 'dbledger up' rolls back.
        self.stopping = threading.Event()

    def run(
        self, targets: Sequence[Target], order: Sequence[int], *, stop_on_failure: bool
    ) -> tuple[dict[int, TargetResult], bool]:
        """A result for each index of ``order`` started, and whether a failure stopped the run."""
        results: dict[int, TargetResult] = {}
        todo = deque(order)
        running = 0
        stopped = False
        try:
            while running or (todo and not stopped):
                while todo and running < self.jobs and not stopped:
                    index = todo.popleft()
                    self.watch.started(targets[index])
                    worker = threading.Thread(target=self._work, args=(index, targets[index]), daemon=True)
                    worker.start()
                    running += 1
                kind, index, payload = self._next()
                if kind == "note":
                    self.watch.note(targets[index], *payload)
                    continue
                running -= 1
                results[index] = payload
                self.watch.finished(payload)
                stopped = stopped or (stop_on_failure and payload.failed)
        except KeyboardInterrupt:
            self.stopping.set()
            self._drain(running)  # a second signal ends the wait (the workers die with the process)
            raise
        return results, stopped

    def _next(self) -> tuple[str, int, Any]:
        while True:  # a bounded wait, so a signal reaches this thread promptly
            try:
                return self.events.get(timeout=0.5)
            except queue.Empty:
                continue

    def _drain(self, running: int) -> None:
        while running:
            kind, _, _ = self._next()
            running -= kind == "done"

    def _work(self, index: int, target: Target) -> None:
        progress = _Relay(self, index)
        started = time.monotonic()
        result = TargetResult(target, "failed", "failed: the run ended before this target did")
        try:
            result = self.task(target, progress)
        except KeyboardInterrupt:
            result = TargetResult(target, "interrupted", "interrupted: stopped at its next step")
        except DbledgerError as exc:
            result = _failure(target, exc)
        except Exception as exc:  # a fault in one target must not hang the others
            words = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "", secrets=True)
            result = TargetResult(target, "failed", f"failed: {type(exc).__name__}: {words}")
        finally:
            elapsed = int((time.monotonic() - started) * 1000)
            self.events.put(("done", index, replace(result, elapsed_ms=elapsed)))


class _Relay:
    """A target's progress callback, in its worker: its events go to the pool's queue, and once
    the run is interrupted, the next one raises KeyboardInterrupt there."""

    def __init__(self, pool: _Pool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.statements = pool.statements

    def __call__(self, event: str, subject: str, ms: int | None) -> None:
        pool = self.pool
        if pool.stopping.is_set():
            raise KeyboardInterrupt
        if event != "using" and not (event == "warning" and subject in pool.said):
            pool.events.put(("note", self.index, (event, subject, ms)))


class _Claim:
    """A target's progress callback for ``up``, which also keeps who held the lock when the
    claim found it busy."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.statements = bool(getattr(progress, "statements", False))
        self.holder: str | None = None

    def __call__(self, event: str, subject: str, ms: int | None) -> None:
        if event == "waiting":  # the lock is busy: the claim is about to be given up
            self.holder = subject
        self.progress(event, subject, ms)


def _check_jobs(jobs: int) -> int:
    if not 1 <= jobs <= MAX_JOBS or jobs != int(jobs):
        raise ConfigError(f"invalid --jobs {jobs!r}: give a whole number from 1 to {MAX_JOBS}")
    return jobs


def _count(items: Sequence[object], what: str) -> str:
    return f"{len(items)} {what}"


@dataclass(frozen=True)
class Fleet:
    """The targets, and how to run a command on them: ``jobs`` at a time; ``continue_on_error``:
    go on after a target failed; ``watch``: told what happens while it happens; ``progress``:
    the run's own messages (which targets, which folder). The other fields are the API's.

    Each command returns a FleetReport, a result for every target; ``.check()`` raises
    FleetFailed when one failed::

        fleet = Fleet(find_targets(targets_file="tenants.txt"), "migrations", jobs=8)
        fleet.migrate().check()
    """

    targets: Targets
    directory: PathLike | None = None
    jobs: int = DEFAULT_JOBS
    continue_on_error: bool = False
    ledger_table: str | None = None
    connect_timeout: float | None = None
    watch: Watch | None = None
    progress: Progress | None = None

    def migrate(
        self,
        *,
        to: int | None = None,
        allow_out_of_order: bool = False,
        allow_missing: bool = False,
        allow_existing_schema: bool = False,
        atomic: bool = False,
        waits: WaitPolicy | Mapping[str, Any] | None = None,
        lock_mode: str | None = None,
        lease_ttl: float | None = None,
    ) -> FleetReport:
        """``migrate`` on every target, each claimed through its own migration lock without
        waiting: a target another runner holds is ``claimed``, and tried once more after the pass."""
        options: dict[str, Any] = {
            "to": to,
            "allow_out_of_order": allow_out_of_order,
            "allow_missing": allow_missing,
            "allow_existing_schema": allow_existing_schema,
            "atomic": atomic,
            "waits": waits,
            "lock_mode": lock_mode,
            "lease_ttl": lease_ttl,
        }

        def up(target: Target, folder: Path, progress: Progress) -> TargetResult:
            claim = _Claim(progress)
            try:
                done = api.migrate(**self._api(target, folder, claim), **options, lock_timeout=CLAIM_TIMEOUT)
            except LockTimeout:
                return TargetResult(
                    target, "claimed", "skipped: claimed by another runner", holder=claim.holder
                )
            names = tuple(applied.name for applied in done.applied)
            if not names:
                return TargetResult(target, "up_to_date", "up to date", document=done.to_dict())
            detail = f"applied {len(names)}"
            return TargetResult(target, "applied", detail, applied=names, document=done.to_dict())

        return self._run("up", up, retry_claimed=True)

    def status(self) -> FleetReport:
        """``status`` of every target: ``up_to_date``, ``pending``, or ``problems`` (failed,
        modified, missing, drifted, ...); only a target that cannot be read fails."""

        def status(target: Target, folder: Path, progress: Progress) -> TargetResult:
            state = api.status(**self._api(target, folder, progress))
            plan = state.plan
            detail = f"{_count(plan.applied, 'applied')}, {_count(plan.pending, 'pending')}"
            if plan.failed:
                detail += f", {_count(plan.failed, 'failed')}"
            outcome: Outcome = "pending" if plan.pending else "up_to_date"
            if state.problems:
                outcome = "problems"
                detail += (
                    f"; {len(state.problems)} problem(s), the first: {state.problems[0].splitlines()[0]}"
                )
            return TargetResult(target, outcome, detail, document=state.to_dict())

        return self._run("status", status)

    def verify(self, *, strict: bool = False) -> FleetReport:
        """``verify`` on every target; a target whose checks fail is ``failed``."""

        def verify(target: Target, folder: Path, progress: Progress) -> TargetResult:
            state = api.verify(**self._api(target, folder, progress), strict=strict)
            pending = f", {_count(state.plan.pending, 'pending')}" if state.plan.pending else ""
            detail = f"ok: {_count(state.plan.applied, 'applied')}{pending}"
            return TargetResult(target, "ok", detail, document=state.to_dict())

        return self._run("verify", verify)

    def drift(self, *, replay: bool = False) -> FleetReport:
        """``drift`` on every target (``replay``: each on a scratch database of its own); a
        target whose schema drifted is ``failed``, its differences in its result's document."""

        def drift(target: Target, folder: Path, progress: Progress) -> TargetResult:
            found = api.drift(**self._api(target, folder, progress), replay=replay)
            return TargetResult(target, "ok", "no drift", document=found.to_dict())

        return self._run("drift", drift)

    def _api(self, target: Target, folder: Path, progress: Progress) -> dict[str, Any]:
        """The API's arguments that say where: the target, the folder, the ledger."""
        return {
            "database_url": target.url,
            "directory": folder,
            "schema": target.schema,
            "ledger_table": self.ledger_table,
            "connect_timeout": self.connect_timeout,
            "progress": progress,
        }

    def _run(
        self,
        command: str,
        task: Callable[[Target, Path, Progress], TargetResult],
        *,
        retry_claimed: bool = False,
    ) -> FleetReport:
        """Read the folder once (a malformed file fails before any target is touched), run
        ``task`` on every target in the order listed (a canary listed first goes first: a broken
        migration stops there), claimed targets once more at the end, and report in that order.
        Runners on one list leapfrog each other: a target at work elsewhere costs one read."""
        jobs = _check_jobs(self.jobs)
        report = self.progress or no_progress
        settings = resolve("sqlite:///:memory:", self.directory)  # the folder only: targets are the databases
        folder = settings.directory
        files, note = layouts.read(folder, settings.layout)
        warnings = [*settings.warnings, *files.strays]
        targets = self.targets.targets
        report(
            "using",
            f"{len(targets)} target(s) from {self.targets.source}, migrations {folder}, {jobs} at a time",
            None,
        )
        if note is not None:
            report("note", note, None)
        for warning in warnings:
            report("warning", warning, None)
        pool = _Pool(
            lambda target, progress: task(target, folder, progress),
            jobs,
            self.watch or _NoWatch(),
            frozenset(warnings),
            statements=bool(getattr(self.progress, "statements", False)),
        )
        order = list(range(len(targets)))
        began = time.monotonic()
        results, stopped = pool.run(targets, order, stop_on_failure=not self.continue_on_error)
        claimed = [index for index in order if index in results and results[index].outcome == "claimed"]
        if retry_claimed and claimed and not stopped:
            pool.watch.retrying(len(claimed))
            again, _ = pool.run(targets, claimed, stop_on_failure=not self.continue_on_error)
            results.update({index: replace(result, retried=True) for index, result in again.items()})
        not_started = "not started: an earlier target failed (--continue-on-error goes on)"
        listed = [
            results.get(index) or TargetResult(target, "not_started", not_started)
            for index, target in enumerate(targets)
        ]
        return FleetReport(command, self.targets.source, jobs, listed, int((time.monotonic() - began) * 1000))
