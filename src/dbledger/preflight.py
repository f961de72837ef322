"""The one place where a run is decided: from the files, the ledger's rows and the options to
the steps that will run, in order, or the refusal that stops the run before its first change.

Every command that runs or previews migrations comes through here: ``up`` (also ``--atomic``),
``down``, ``redo``, each ``--dry-run``, and the replays of ``drift --replay`` and
``baseline --verify``. A dry run therefore refuses exactly what its command refuses, with the
same words and exit code. The checks that need the statements (``COMMIT`` or ``CREATE INDEX
CONCURRENTLY`` in a transactional section, a statement on dbledger's own tables) are made here
for every section of the run, before the ledger is created.

Pure: no I/O. What the database holds comes in as arguments (``Ledger``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from dbledger.contracts import ZERO, LedgerRow, LedgerSnapshot, Statement, Version
from dbledger.dialects import Dialect
from dbledger.edits import Edit
from dbledger.errors import ConfigError, ExistingSchema, LedgerStateError, MigrationFileError, UsageError
from dbledger.ledger import LedgerNames
from dbledger.migrations import Migration, Section, down_advice
from dbledger.pgversions import NEWEST, SINCE, Server, major
from dbledger.placeholders import Placeholder, substitute
from dbledger.plan import Allowances, Plan, check_target, make_plan

Direction = Literal["up", "down"]


@dataclass(frozen=True)
class Ledger:
    """What the preflight needs to know of the database: the ledger as read (None: no ledger
    table yet), where it lives, the schema unqualified names resolve to, and, when there is no
    ledger, the tables the database already has."""

    snapshot: LedgerSnapshot | None
    names: LedgerNames
    schema: str | None  # the ledger's schema as the connection resolved it
    default_schema: str | None  # where an unqualified table name goes
    existing_tables: tuple[str, ...] = ()
    # The ledger's copies of the files whose checksums changed since they were applied (None:
    # no copy kept), to tell each change cosmetic or semantic.
    sources: Mapping[str, str | None] = field(default_factory=dict)
    # The server's version (None: SQLite), for what an older one cannot run.
    server: Server | None = None
    # The run's own transaction_timeout, in seconds (0: none), for the sections without theirs.
    transaction_timeout: float = 0.0
    # [tool.dbledger.placeholders]: ${name} in a statement becomes its quoted value.
    placeholders: Mapping[str, Placeholder] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One section to run: a migration's up or down section, its statements, how it runs."""

    migration: Migration
    direction: Direction
    section: Section
    statements: tuple[Statement, ...]
    # The placeholders its statements used, each name with its value as sent (for the history).
    placeholders: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.migration.name

    @property
    def transactional(self) -> bool:
        return self.section.transaction


@dataclass(frozen=True)
class Work:
    """What a run will do: its steps in order, and the plan they came from."""

    plan: Plan
    steps: tuple[Step, ...] = ()
    atomic: bool = False
    # The folder's hook files as steps, by event (before-all, before-each, after-each, after-all).
    hooks: Mapping[str, Step] = field(default_factory=dict)

    @property
    def nothing_to_do(self) -> bool:
        return not self.steps


def plan_for(migrations: list[Migration], ledger: Ledger, dialect: Dialect) -> Plan:
    plan = make_plan(migrations, () if ledger.snapshot is None else ledger.snapshot.rows)
    if plan.modified:
        plan.classify_edits(lambda name: ledger.sources.get(name), dialect)
    return plan


def up(
    migrations: list[Migration],
    ledger: Ledger,
    dialect: Dialect,
    *,
    target: Version | None = None,
    allow: Allowances = Allowances(),
    allow_existing_schema: bool = False,
    atomic: bool = False,
    repeatables: Sequence[Migration] = (),
    hooks: Sequence[Migration] = (),
) -> Work:
    """The pending migrations up to ``target``, in version order, then the repeatable ones that
    are new or changed, in name order; or the refusal."""
    check_target(migrations, target)
    plan = plan_for(migrations, ledger, dialect)
    if problems := plan.problems(allow):
        raise LedgerStateError(problems)
    if ledger.snapshot is None and ledger.existing_tables and not allow_existing_schema:
        raise ExistingSchema(list(ledger.existing_tables), ledger.names.qualified())
    todo = plan.to_apply(target) + plan.repeatables_due(repeatables, target)
    if unwritten := [m for m in todo if m.up.empty]:
        raise MigrationFileError(
            str(unwritten[0].path),
            "the up section is empty (only comments or blank lines): write the migration's SQL, "
            "or delete the file",
        )
    if atomic and (outside := [m.name for m in todo if not m.up.transaction]):
        raise UsageError(
            f"--atomic runs every pending migration in one transaction, but {', '.join(outside)} "
            "must run outside one (transaction:false): deploy without --atomic, or apply up to the "
            "version before it atomically first (--to)"
        )
    steps = tuple(_step(m, "up", m.up, dialect, ledger) for m in todo)
    hook_steps = {hook.name: _step(hook, "up", hook.up, dialect, ledger) for hook in hooks} if steps else {}
    return Work(plan, steps, atomic=atomic, hooks=hook_steps)


def down(
    migrations: list[Migration],
    ledger: Ledger,
    dialect: Dialect,
    *,
    steps: int | None = None,
    target: Version | None = None,
) -> Work:
    """The applied migrations to roll back, newest applied first, or the refusal naming every
    one that cannot be rolled back."""
    plan = plan_for(migrations, ledger, dialect)
    chosen = select(plan, steps=steps, target=target)
    files = {m.name: m for m in migrations}
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
                f"migration '{row.name}' has no down section ({migration.path}): "
                f"{down_advice(migration)}, or roll back fewer steps"
            )
        elif migration.checksum != row.checksum:
            problems.append(_changed_down(row.name, plan.edit(row.name)))
    if problems:
        raise LedgerStateError(problems)
    work = []
    for row in chosen:
        migration = files[row.name]
        assert migration.down is not None  # checked above
        work.append(_step(migration, "down", migration.down, dialect, ledger))
    return Work(plan, tuple(work))


def _changed_down(name: str, edit: Edit | None) -> str:
    """Why a file changed since it was applied is not rolled back, and what to run first."""
    head = f"migration '{name}' was modified after it was applied"
    if edit is not None and edit.kind == "cosmetic":
        return (
            f"{head}, cosmetically ({edit.reason}): run 'dbledger repair' to accept the new "
            "checksum, then roll back"
        )
    why = f" ({edit.reason})" if edit is not None else ""
    return (
        f"{head}{why}: its down section may not undo what ran; restore the file, or, once the "
        f"database matches the new file, accept it by naming it to 'dbledger repair': dbledger "
        f"repair --accept {name}"
    )


def select(plan: Plan, *, steps: int | None, target: Version | None) -> list[LedgerRow]:
    """The applied rows to roll back, newest applied first: the newest ``steps`` (default 1), or
    all above version ``target`` (``0``: everything). Applied order, not version order: after
    ``--allow-out-of-order`` or a retried failure the two differ."""
    if steps is not None and target is not None:
        raise UsageError("give --steps or --to, not both")
    if steps is not None and steps < 1:
        raise UsageError(f"--steps must be 1 or more, not {steps}")
    applied = list(reversed(plan.applied))
    if target is None:
        return applied[: steps or 1]
    if target != ZERO and all(row.version != target for row in applied):
        known = ", ".join(str(row.version) for row in applied[:10]) or "none"
        raise UsageError(
            f"no applied migration has version {target}: --to must be 0 or an applied version "
            f"(the newest applied: {known})"
        )
    if target == ZERO:  # everything, a version 0 too (Diesel's initial setup has one)
        return applied
    return [row for row in applied if row.version > target]


def redo(migrations: list[Migration], ledger: Ledger, dialect: Dialect) -> Work:
    """Roll back the newest applied migration and apply it again; refuses whatever ``up`` would."""
    plan = plan_for(migrations, ledger, dialect)
    if problems := plan.problems():
        raise LedgerStateError(problems)
    back = down(migrations, ledger, dialect, steps=1)
    if not back.steps:
        return back
    newest = back.steps[0].migration
    if others := [m.name for m in plan.pending if m.version <= newest.version]:
        raise LedgerStateError(
            [
                f"redo of '{newest.name}' would also apply {', '.join(others)}, pending before it: "
                "run 'dbledger up' first"
            ]
        )
    again = _step(newest, "up", newest.up, dialect, ledger)
    return Work(plan, (*back.steps, again))


def replay(
    migrations: list[Migration],
    dialect: Dialect,
    names: LedgerNames,
    server: Server | None,
    placeholders: Mapping[str, Placeholder] | None = None,
) -> tuple[Step, ...]:
    """Every migration's up section, in the order given, to run on an empty scratch database
    (``drift --replay``, ``baseline --verify``, a database built without dbledger) of ``server``,
    with the run's ``placeholders``."""
    scratch = Ledger(
        snapshot=None,
        names=names,
        schema=None,
        default_schema=None,
        server=server,
        placeholders=placeholders or {},
    )
    return tuple(_step(m, "up", m.up, dialect, scratch, own_tables=False) for m in migrations)


def _step(
    migration: Migration,
    direction: Direction,
    section: Section,
    dialect: Dialect,
    ledger: Ledger,
    *,
    own_tables: bool = True,
) -> Step:
    server = ledger.server
    _check_transaction_timeout(migration, section, ledger)
    path = migration.file_of(section)
    statements, used = _substituted(
        dialect.split(section.sql, section.line, path), str(path), dialect, ledger
    )
    if section.auto_transaction and any(
        dialect.transaction_control(s) or dialect.outside_transaction_only(s) for s in statements
    ):
        # As golang-migrate and Flyway run such a file: statement by statement, its own BEGIN
        # and COMMIT making its transaction (dbledger.layouts).
        section = replace(section, transaction=False)
    # A server of the newest supported version has every feature the dialect knows of.
    older = server is not None and major(server.version) < NEWEST
    for statement in statements:
        _check(migration, direction, section, statement, dialect, ledger if own_tables else None)
        if (
            older
            and server
            and (feature := dialect.newest_feature(statement))
            and (why := server.lacks(*feature))
        ):
            raise MigrationFileError(
                str(migration.file_of(section)),
                f"line {statement.line}: {why}: upgrade the server, or write the statement without it",
            )
    return Step(migration, direction, section, statements, used)


def _substituted(
    statements: list[Statement], path: str, dialect: Dialect, ledger: Ledger
) -> tuple[tuple[Statement, ...], dict[str, str]]:
    """The statements with their placeholders replaced (MigrationFileError for an unknown one),
    and the values used."""
    used: dict[str, str] = {}
    done = []
    for statement in statements:
        replaced, values = substitute(statement, path, ledger.placeholders, dialect.quote)
        done.append(replaced)
        used |= values
    return tuple(done), used


def _check_transaction_timeout(migration: Migration, section: Section, ledger: Ledger) -> None:
    """Refuse a transaction_timeout, the section's or the run's, that the server cannot set."""
    own = section.transaction_timeout
    wanted = own if own is not None else ledger.transaction_timeout if section.transaction else 0
    server, setting = ledger.server, "transaction_timeout"
    why = server.lacks(setting, SINCE[setting]) if wanted and server is not None else None
    if why is None:
        return
    if own is not None:
        raise MigrationFileError(
            str(migration.file_of(section)),
            f"line {section.line - 1}: {why}: remove transaction_timeout from the marker, or bound "
            "the statements with statement_timeout instead",
        )
    raise ConfigError(
        f"{why}: leave out --transaction-timeout (or transaction_timeout in [tool.dbledger]), "
        "or bound the statements with --statement-timeout instead"
    )


def _check(
    migration: Migration,
    direction: Direction,
    section: Section,
    statement: Statement,
    dialect: Dialect,
    ledger: Ledger | None,
) -> None:
    """Refuse a statement that cannot run where the section would run it."""
    marker = f"'-- migrate:{direction} transaction:false'"
    if section.transaction and (word := dialect.transaction_control(statement)):
        raise MigrationFileError(
            str(migration.file_of(section)),
            f"line {statement.line}: {word} would end the transaction dbledger runs this migration in "
            f"(one per migration, with its ledger row): remove it, or mark the section {marker} "
            "to run each statement on its own",
        )
    if section.transaction and (command := dialect.outside_transaction_only(statement)):
        raise MigrationFileError(
            str(migration.file_of(section)),
            f"line {statement.line}: {command} cannot run inside a transaction, and this section runs "
            f"in one: mark it {marker} (and keep it to statements that must run on their own)",
        )
    if command := dialect.releases_lock(statement):
        raise MigrationFileError(
            str(migration.file_of(section)),
            f"line {statement.line}: {command} releases the migration lock dbledger holds while it "
            "runs, so a replica waiting for it would start migrating too: remove it",
        )
    if ledger is not None and (table := _own_table(statement, dialect, ledger)):
        raise MigrationFileError(
            str(migration.file_of(section)),
            f"line {statement.line}: the statement names {table}, one of dbledger's own tables "
            f"({', '.join(ledger.names.tables)}): a migration must not touch the ledger. If the "
            "table belongs to the application (or to the tool used before), give dbledger's ledger "
            "another name with --ledger-table NAME (e.g. dbledger_migrations)",
        )


def _own_table(statement: Statement, dialect: Dialect, ledger: Ledger) -> str | None:
    tables = frozenset(ledger.names.tables)
    for schema, table in dialect.references(statement, tables):
        if (schema or ledger.default_schema) == ledger.schema:
            return table if schema is None else f"{schema}.{table}"
    return None
