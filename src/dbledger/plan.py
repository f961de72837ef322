"""Compare the migration files with the ledger's rows: what is applied (and in which order),
pending, failed, running, dirty, modified, missing, renamed or out of order, and which of those
make running anything unsafe.

Pure functions over plain data: no I/O, so every case is a table-driven test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dbledger.contracts import APPLIED_STATES, LedgerRow, Version
from dbledger.errors import UsageError
from dbledger.ledger import CHECKSUM_ALGORITHM
from dbledger.migrations import Migration

if TYPE_CHECKING:  # every replica plans at every start; edits are looked at only when one changed
    from dbledger.dialects import Dialect
    from dbledger.edits import Edit

__all__ = ["APPLIED_STATES", "Allowances", "LedgerRow", "Plan", "check_target", "make_plan"]


@dataclass(frozen=True)
class Allowances:
    """The explicit flags that let ``up`` pass a check it would otherwise refuse on."""

    out_of_order: bool = False
    missing: bool = False


@dataclass
class Plan:
    """The files and the ledger side by side. ``applied`` is in the order the migrations were
    applied; the other lists keep version order."""

    migrations: list[Migration]
    rows: dict[str, LedgerRow]
    applied: list[LedgerRow] = field(default_factory=list)
    pending: list[Migration] = field(default_factory=list)
    failed: list[LedgerRow] = field(default_factory=list)
    modified: list[tuple[Migration, LedgerRow]] = field(default_factory=list)
    missing: list[LedgerRow] = field(default_factory=list)
    # A file whose version was applied under another name: same checksum (renamed), or not.
    renamed: list[tuple[Migration, LedgerRow]] = field(default_factory=list)
    reused: list[tuple[Migration, LedgerRow]] = field(default_factory=list)
    out_of_order: list[Migration] = field(default_factory=list)
    dirty: list[LedgerRow] = field(default_factory=list)
    # Dirty rows whose runner still holds the migration lock: a transaction:false migration at work.
    running: list[LedgerRow] = field(default_factory=list)
    # How each modified file changed (by migration name), once ``classify_edits`` has looked.
    edits: dict[str, Edit] = field(default_factory=dict)
    # Applied rows whose checksum another algorithm made (a newer dbledger wrote them).
    unknown_checksums: list[LedgerRow] = field(default_factory=list)
    # The repeatable migrations' rows, by name: outside the versioned order, run again when
    # their file changes (``repeatables_due``).
    repeatable_rows: dict[str, LedgerRow] = field(default_factory=dict)

    def repeatables_due(
        self, repeatables: Sequence[Migration], target: Version | None = None
    ) -> list[Migration]:
        """The repeatable migrations to run (again), in name order: new ones, changed ones, and
        those whose last run failed. They belong to the newest schema: a run that stops short of
        the newest file (``--to``) leaves them."""
        newest = self.migrations[-1].version if self.migrations else None
        if target is not None and newest is not None and target < newest:
            return []
        due = []
        for migration in repeatables:
            row = self.repeatable_rows.get(migration.name)
            if row is None or row.state not in APPLIED_STATES or row.checksum != migration.checksum:
                due.append(migration)
        return sorted(due, key=lambda m: m.name)

    def classify_edits(self, read_source: Callable[[str], str | None], dialect: Dialect) -> None:
        """Tell each modified file's change cosmetic or semantic, from the copy of the file as
        applied that ``read_source(name)`` returns (the ledger row's)."""
        from dbledger.edits import classify

        for migration, row in self.modified:
            if row.name not in self.edits:
                self.edits[row.name] = classify(read_source(row.name), migration, dialect)

    def edit(self, name: str) -> Edit | None:
        return self.edits.get(name)

    def modified_problems(self) -> list[str]:
        """For each modified file, in ``modified``'s order: why it stops a run, and the way out."""
        return [_modified(migration, row, self.edits.get(row.name)) for migration, row in self.modified]

    @property
    def current_version(self) -> Version | None:
        """The newest applied version, or None when nothing is applied."""
        return max((row.version for row in self.applied), default=None)

    @property
    def next_order(self) -> int:
        """The applied order the next migration to be applied gets."""
        rows = [*self.applied, *self.repeatable_rows.values()]
        return max((row.applied_order or 0 for row in rows), default=0) + 1

    @property
    def order_differs(self) -> bool:
        """True when the migrations were applied in another order than their versions'."""
        versions = [row.version for row in self.applied]
        return versions != sorted(versions)

    def problems(self, allow: Allowances = Allowances()) -> list[str]:
        """Why running ``up`` now would be unsafe, one actionable line per migration."""
        lines = [_dirty(row) for row in self.dirty]
        lines += self.modified_problems()
        lines += [
            f"migration '{row.name}' has a checksum made with {row.checksum_algorithm}, which this "
            f"dbledger does not know (it uses {CHECKSUM_ALGORITHM}): a newer dbledger applied it; "
            "upgrade dbledger"
            for row in self.unknown_checksums
        ]
        for migration, row in self.renamed:
            lines.append(
                f"migration '{row.name}' was renamed to '{migration.name}' (same version {row.version}, "
                "same checksum): run 'dbledger repair' to record the new name, or restore the old one"
            )
        for migration, row in self.reused:
            lines.append(
                f"version {row.version} was applied as '{row.name}', whose file is gone, and "
                f"'{migration.name}' has the same version but other content: a version is applied "
                f"once; give {migration.path.name} a new version, or restore {row.name}.sql"
            )
        if not allow.missing:
            for row in self.missing:
                lines.append(
                    f"migration '{row.name}' was applied ({row.applied_at}) but its file is "
                    "missing: restore the file, or pass --allow-missing to go on without it"
                )
        if not allow.out_of_order:
            newest = self.current_version
            for migration in self.out_of_order:
                lines.append(
                    f"migration '{migration.name}' is pending but sorts before version {newest}, "
                    "which is already applied: renumber it after the newest migration, or pass "
                    "--allow-out-of-order to apply it anyway"
                )
        return lines

    def to_apply(self, target: Version | None = None) -> list[Migration]:
        """Pending migrations in version order, up to and including ``target`` when given."""
        return [m for m in self.pending if target is None or m.version <= target]


def _short(checksum: str | None) -> str:
    return f"{checksum[:12]}…" if checksum else "none"


def _modified(migration: Migration, row: LedgerRow, edit: Edit | None) -> str:
    """Why an edited applied file stops the run, and the way out that fits the edit."""
    head = f"migration '{row.name}' was modified after it was applied"
    if edit is not None and edit.kind == "cosmetic":
        return f"{head}, cosmetically ({edit.reason}): run 'dbledger repair' to accept it, or restore it"
    sums = f"checksum {_short(row.checksum)} recorded, {_short(migration.checksum)} on disk"
    if edit is None:  # not looked at: the plan alone cannot say how it changed
        return f"{head} ({sums}): restore the file, or run 'dbledger repair' to accept the new checksum"
    if edit.kind == "unknown":
        return (
            f"{head} ({sums}); {edit.reason}: restore the file, or, once you are sure the database "
            f"matches it, accept it by naming it to 'dbledger repair': dbledger repair --accept {row.name}"
        )
    diff = "".join(f"\n    {line}" for line in edit.diff)  # after the advice: its first line is whole
    return (
        f"{head}, and what it does changed ({edit.reason}; {sums}): restore the file and put the "
        f"change in a new migration, or, if the database already matches the new file, accept it by "
        f"naming it to 'dbledger repair': dbledger repair --accept {row.name}{diff}"
    )


def _dirty(row: LedgerRow) -> str:
    reason = f"; error: {row.error_message}" if row.error_message else ""
    return (
        f"migration '{row.name}' ran outside a transaction and did not finish (started "
        f"{row.applied_at}{reason}): it may have left partial work, such as an INVALID index from "
        "CREATE INDEX CONCURRENTLY; undo that work by hand, then run 'dbledger repair' (the next "
        "'dbledger up' runs the migration again, whole)"
    )


def make_plan(
    migrations: list[Migration],
    rows: list[LedgerRow] | tuple[LedgerRow, ...],
    running: frozenset[str] = frozenset(),
) -> Plan:
    """Classify every file and every ledger row. ``rows`` come in applied order; ``running`` holds
    the lock holders of this moment, so a dirty row whose runner is among them is running."""
    # A repeatable migration's row stays with the others while dirty: a transaction:false one that
    # did not finish may have left partial work, and must be cleaned up and repaired first.
    repeatable = {row.name: row for row in rows if not row.version and row.state != "dirty"}
    if repeatable:
        rows = [row for row in rows if row.name not in repeatable]
    by_name = {row.name: row for row in rows}
    plan = Plan(migrations=migrations, rows=by_name, repeatable_rows=repeatable)
    files = {m.name: m for m in migrations}
    by_version = {m.version: m for m in migrations}

    for row in sorted(rows, key=lambda r: (r.applied_order is None, r.applied_order or 0)):
        migration = files.get(row.name)
        if row.state == "dirty":
            (plan.running if row.runner is not None and row.runner in running else plan.dirty).append(row)
            continue
        if row.state not in APPLIED_STATES:
            plan.failed.append(row)
            continue
        plan.applied.append(row)
        if migration is not None:
            if row.checksum_algorithm != CHECKSUM_ALGORITHM:
                plan.unknown_checksums.append(row)
            elif row.checksum != migration.checksum:
                plan.modified.append((migration, row))
            continue
        other = by_version.get(row.version)
        if other is not None and other.name not in by_name:  # the same version under a new name
            (plan.renamed if other.checksum == row.checksum else plan.reused).append((other, row))
        else:
            plan.missing.append(row)

    taken = {migration.name for migration, _ in plan.renamed + plan.reused}
    newest = plan.current_version
    for migration in migrations:
        found = by_name.get(migration.name)
        if migration.name in taken or (found is not None and found.state != "failed"):
            continue
        plan.pending.append(migration)
        if newest is not None and migration.version < newest:
            plan.out_of_order.append(migration)
    return plan


def check_target(migrations: list[Migration], target: Version | None, what: str = "--to") -> None:
    """``--to V`` (or ``baseline V``) must name a version that exists, so a typo never means
    "everything"."""
    if target is not None and all(m.version != target for m in migrations):
        known = ", ".join(str(m.version) for m in migrations[-10:]) or "none"
        raise UsageError(
            f"no migration file has version {target}: {what} must name the version of an existing "
            f"file (the newest versions are: {known})"
        )
