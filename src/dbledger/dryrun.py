"""``up --dry-run`` and ``down --dry-run``: what would run, statement by statement, with the
transaction boundaries, and on PostgreSQL the lock each statement takes, whether it rewrites or
scans a table, the table's size and an estimated time.

A dry run changes nothing at all: it reads the ledger (without creating it) and the catalog, and
takes no migration lock. Reading a table's size opens the table, so on a live database a dry run
waits while another session (a migration under way) holds an ACCESS EXCLUSIVE lock on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from dbledger.backends.base import Backend, Statement
from dbledger.migrations import Migration, Section
from dbledger.plan import Allowances, make_plan
from dbledger.redaction import redact
from dbledger.rollback import check, select
from dbledger.runner import check_target

_NO_LEDGER = (
    "the database has tables but no ledger table schema_migrations: 'dbledger up' would refuse. "
    "Mark what it already contains with 'dbledger baseline VERSION' (run 'dbledger up' without "
    "--dry-run to have the version worked out), or pass --allow-existing-schema"
)


@dataclass(frozen=True)
class Annotation:
    """What the analysis says of one statement."""

    summary: str  # one line for people, e.g. "ACCESS EXCLUSIVE on t; rewrites t (10,000 rows)"
    details: dict[str, Any]  # the same, for --json
    estimate_ms: float | None
    destructive: bool = False


@dataclass(frozen=True)
class SectionAnnotation:
    """The analysis of one section: an annotation per statement, and notes on the whole (how
    long each table stays locked)."""

    statements: list[Annotation]
    notes: list[str]


class Annotator(Protocol):
    """Analyses a database's statements (PostgreSQL: the parser and the catalog); SQLite has
    none. Called once per section, in the order the sections would run."""

    def annotate(self, statements: list[Statement], transactional: bool) -> SectionAnnotation: ...


@dataclass(frozen=True)
class PlannedStatement:
    sql: str
    line: int
    annotation: Annotation | None


@dataclass(frozen=True)
class PlannedMigration:
    name: str
    version: int
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
    problems: list[str] = field(default_factory=list)

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
            "problems": self.problems,
            "estimate_ms": self.estimate_ms,
            "migrations": [
                {
                    "name": m.name,
                    "version": m.version,
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


def _planned(
    backend: Backend, annotator: Annotator | None, migration: Migration, section: Section, direction: str
) -> PlannedMigration:
    split = backend.split(section)
    if annotator is None:
        planned = [PlannedStatement(s.sql, s.line, None) for s in split]
        return PlannedMigration(migration.name, migration.version, direction, section.transaction, planned)
    analysed = annotator.annotate(split, section.transaction)
    planned = [
        PlannedStatement(s.sql, s.line, annotation)
        for s, annotation in zip(split, analysed.statements, strict=True)
    ]
    return PlannedMigration(
        migration.name, migration.version, direction, section.transaction, planned, analysed.notes
    )


def plan_up(
    backend: Backend,
    migrations: list[Migration],
    annotator: Annotator | None,
    *,
    target: int | None = None,
    allow: Allowances = Allowances(),
    allow_existing_schema: bool = False,
    atomic: bool = False,
) -> tuple[list[PlannedMigration], list[str]]:
    """The migrations ``up`` would apply and the problems that would stop it."""
    check_target(migrations, target)
    rows = backend.read_ledger()
    plan = make_plan(migrations, rows or [])
    problems = plan.problems(allow)
    if rows is None and not allow_existing_schema and backend.user_tables():
        problems.append(_NO_LEDGER)
    todo = plan.to_apply(target)
    if atomic and (outside := [m.name for m in todo if not m.up.transaction]):
        problems.append(f"--atomic would refuse: {', '.join(outside)} must run outside a transaction")
    return [_planned(backend, annotator, m, m.up, "up") for m in todo], problems


def plan_down(
    backend: Backend,
    migrations: list[Migration],
    annotator: Annotator | None,
    *,
    steps: int | None = None,
    target: int | None = None,
) -> list[PlannedMigration]:
    """The migrations ``down`` would roll back, newest first (LedgerStateError when it would
    refuse)."""
    rows = backend.read_ledger() or []
    chosen = check(backend, select(rows, steps=steps, target=target), migrations, rows)
    planned = []
    for migration in chosen:
        assert migration.down is not None  # check() made sure
        planned.append(_planned(backend, annotator, migration, migration.down, "down"))
    return planned


def render(run: DryRun) -> str:
    """The plan as a SQL script a person can read (and could run by hand): each migration with
    its transaction boundaries, each statement preceded by its line and analysis as comments."""
    out: list[str] = [f"-- dbledger {run.direction} --dry-run on {run.database}: nothing was changed"]
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
    for problem in run.problems:
        out.append(f"-- would refuse: {problem}")
    return "\n".join(out)


def _duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"; estimated {ms:.0f} ms"
    if ms < 120_000:
        return f"; estimated {ms / 1000:.1f} s"
    return f"; estimated {ms / 60_000:.1f} min"
