"""``up --dry-run`` and ``down --dry-run``: what would run, statement by statement, with the
transaction boundaries, and on PostgreSQL the lock each statement takes, whether it rewrites or
scans a table, the table's size and an estimated time.

The steps come from the same preflight as the real run (``dbledger.engine.prepare_up`` and
``prepare_down``), so a dry run refuses exactly what its command would, with the same message and
exit code. A dry run changes nothing at all: it reads the ledger (without creating it) and the
catalog, and takes no migration lock. Reading a table's size opens the table, so on a live
database a dry run waits while another session (a migration under way) holds an ACCESS EXCLUSIVE
lock on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dbledger.annotation import Annotation, Annotator
from dbledger.config import WaitPolicy
from dbledger.contracts import Version
from dbledger.preflight import Step, Work
from dbledger.redaction import redact


@dataclass(frozen=True)
class PlannedStatement:
    sql: str
    line: int
    annotation: Annotation | None


@dataclass(frozen=True)
class PlannedMigration:
    name: str
    version: Version
    direction: str  # "up" or "down"
    transaction: bool
    statements: list[PlannedStatement]
    notes: list[str] = field(default_factory=list)

    @property
    def estimate_ms(self) -> float | None:
        estimates = [s.annotation.estimate_ms for s in self.statements if s.annotation]
        if not estimates or any(e is None for e in estimates):
            return None
        return sum(e for e in estimates if e is not None)


@dataclass(frozen=True)
class DryRun:
    database: str
    directory: str
    direction: str
    atomic: bool
    migrations: list[PlannedMigration]
    # What each statement may wait for a lock (PostgreSQL), said once above the plan.
    waits: WaitPolicy | None = None
    # The hook files that run with the plan, each said once: "after-each: after-each.sql ...".
    hooks: list[str] = field(default_factory=list)

    @property
    def estimate_ms(self) -> float | None:
        estimates = [m.estimate_ms for m in self.migrations]
        if not estimates or any(e is None for e in estimates):
            return None
        return sum(e for e in estimates if e is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "directory": self.directory,
            "direction": self.direction,
            "atomic": self.atomic,
            "estimate_ms": self.estimate_ms,
            "waits": None if self.waits is None else self.waits._asdict(),
            "hooks": self.hooks,
            "migrations": [
                {
                    "name": m.name,
                    "version": m.version.shown(),
                    "direction": m.direction,
                    "transaction": m.transaction or self.atomic,
                    "estimate_ms": m.estimate_ms,
                    "notes": m.notes,
                    "statements": [
                        {
                            "line": s.line,
                            "sql": redact(s.sql),
                            **({"analysis": s.annotation.details} if s.annotation else {}),
                            "estimate_ms": s.annotation.estimate_ms if s.annotation else None,
                        }
                        for s in m.statements
                    ],
                }
                for m in self.migrations
            ],
        }


# Where each hook event runs, as the executor runs it.
_HOOK_PLACES = {
    "before-all": "before the first migration, in its own transaction",
    "before-each": "before each migration's statements, in its transaction",
    "after-each": "after each migration's statements, in its transaction",
    "after-all": "after the last migration, in its own transaction",
}


def hooks(work: Work) -> list[str]:
    """One line for each hook file that runs with ``work``: its event, its file, where it runs."""
    return [
        f"{event}: {step.migration.path.name} runs {_HOOK_PLACES[event]}"
        for event, step in work.hooks.items()
    ]


def planned(work: Work, annotator: Annotator | None) -> list[PlannedMigration]:
    """Each step of ``work``, analysed in the order it would run (each sees the schema the ones
    before it leave)."""
    return [_planned(step, annotator) for step in work.steps]


def _planned(step: Step, annotator: Annotator | None) -> PlannedMigration:
    migration = step.migration
    if annotator is None:
        statements = [PlannedStatement(s.sql, s.line, None) for s in step.statements]
        return PlannedMigration(
            migration.name, migration.version, step.direction, step.transactional, statements
        )
    analysed = annotator.annotate(list(step.statements), step.transactional)
    statements = [
        PlannedStatement(s.sql, s.line, annotation)
        for s, annotation in zip(step.statements, analysed.statements, strict=True)
    ]
    return PlannedMigration(
        migration.name, migration.version, step.direction, step.transactional, statements, analysed.notes
    )


def render(run: DryRun) -> str:
    """The plan as a SQL script a person can read (and could run by hand): each migration with
    its transaction boundaries, each statement preceded by its line and analysis as comments."""
    out: list[str] = [f"-- dbledger {run.direction} --dry-run on {run.database}: nothing was changed"]
    if run.waits is not None and run.migrations:
        out.append(f"-- {wait_rule(run.waits, run.atomic)}")
    out.extend(f"-- hook {hook}" for hook in run.hooks)
    if not run.migrations:
        out.append("-- nothing to do")
    if run.atomic and run.migrations:
        out.append("BEGIN;  -- --atomic: one transaction for the whole deploy")
    for migration in run.migrations:
        estimate = _duration(migration.estimate_ms)
        inside = migration.transaction and not run.atomic
        mode = "in one transaction" if migration.transaction or run.atomic else "outside a transaction"
        out.append("")
        out.append(f"-- {migration.name} ({migration.direction}, {mode}{estimate})")
        if inside:
            out.append("BEGIN;")
        for statement in migration.statements:
            note = f": {statement.annotation.summary}" if statement.annotation else ""
            out.append(f"-- line {statement.line}{note}")
            sql = redact(statement.sql)
            # A statement ending in a comment would swallow a ';' on its last line.
            out.append(sql + ("\n;" if "--" in sql.rsplit("\n", 1)[-1] else ";"))
        if inside:
            out.append("COMMIT;")
        out.extend(f"-- {note}" for note in migration.notes)
    if run.atomic and run.migrations:
        out.append("COMMIT;")
    total = run.estimate_ms
    if run.migrations and total is not None:
        out.append("")
        out.append(f"-- estimated total: {_duration(total).removeprefix('; estimated ')}")
    return "\n".join(out)


def wait_rule(waits: WaitPolicy, atomic: bool = False) -> str:
    """The run's lock-wait rule in one line."""
    if waits.lock_timeout == 0:
        return "each statement waits for its locks without a limit (--statement-lock-timeout 0)"
    retries = (
        f"tried again up to {waits.retries} times" if waits.retries and not atomic else "not tried again"
    )
    concurrently = (
        "; CONCURRENTLY waits without a limit"
        if waits.concurrently_lock_timeout == 0
        else f"; CONCURRENTLY at most {waits.concurrently_lock_timeout:g} s"
    )
    return (
        f"each statement waits at most {waits.lock_timeout:g} s for a lock{concurrently}; a "
        f"{'deploy' if atomic else 'migration'} that gives up is rolled back and {retries}"
    )


def _duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"; estimated {ms:.0f} ms"
    if ms < 120_000:
        return f"; estimated {ms / 1000:.1f} s"
    return f"; estimated {ms / 60_000:.1f} min"
