"""Compare the migration files with the ledger's rows: what is applied, pending, failed, modified,
missing, out of order or dirty, and which of those make running anything unsafe.

Pure functions over plain data: no I/O, so every case is a table-driven test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dbledger.migrations import Migration

APPLIED_STATES = frozenset({"applied", "baseline"})


@dataclass(frozen=True)
class LedgerRow:
    """One row of ``schema_migrations`` as the backends read it."""

    name: str
    version: int
    state: str  # "applied", "baseline", "failed" or "dirty"
    checksum: str | None
    applied_at: str | None
    execution_time_ms: int | None
    success: bool
    error_message: str | None


@dataclass(frozen=True)
class Allowances:
    """The explicit flags that let ``up`` pass a check it would otherwise refuse on."""

    out_of_order: bool = False
    missing: bool = False


@dataclass
class Plan:
    """The files and the ledger side by side. Lists keep version order."""

    migrations: list[Migration]
    rows: dict[str, LedgerRow]
    applied: list[LedgerRow] = field(default_factory=list)
    pending: list[Migration] = field(default_factory=list)
    failed: list[LedgerRow] = field(default_factory=list)
    modified: list[tuple[Migration, LedgerRow]] = field(default_factory=list)
    missing: list[LedgerRow] = field(default_factory=list)
    out_of_order: list[Migration] = field(default_factory=list)
    dirty: list[LedgerRow] = field(default_factory=list)

    @property
    def current_version(self) -> int | None:
        """The newest applied version, or None when nothing is applied."""
        return max((row.version for row in self.applied), default=None)

    def problems(self, allow: Allowances = Allowances()) -> list[str]:
        """Why running ``up`` now would be unsafe, one actionable line per migration."""
        lines: list[str] = []
        for row in self.dirty:
            lines.append(
                f"migration '{row.name}' ran outside a transaction and did not finish "
                f"(started {row.applied_at}{_reason(row)}): it may have left partial work, such as "
                "an INVALID index from CREATE INDEX CONCURRENTLY; undo or finish that work by hand, "
                "then run 'dbledger repair'"
            )
        for migration, row in self.modified:
            lines.append(
                f"migration '{row.name}' was modified after it was applied (checksum "
                f"{_short(row.checksum)} recorded, {_short(migration.checksum)} on disk): "
                "restore the file, or run 'dbledger repair' to accept the new checksum"
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

    def to_apply(self, target: int | None = None) -> list[Migration]:
        """Pending migrations in version order, up to and including ``target`` when given."""
        return [m for m in self.pending if target is None or m.version <= target]


def _short(checksum: str | None) -> str:
    return f"{checksum[:12]}…" if checksum else "none"


def _reason(row: LedgerRow) -> str:
    return f"; error: {row.error_message}" if row.error_message else ""


def make_plan(migrations: list[Migration], rows: list[LedgerRow]) -> Plan:
    """Classify every file and every ledger row."""
    by_name = {row.name: row for row in rows}
    plan = Plan(migrations=migrations, rows=by_name)
    files = {m.name: m for m in migrations}

    for row in sorted(rows, key=lambda r: (r.version, r.name)):
        migration = files.get(row.name)
        if row.state in APPLIED_STATES:
            plan.applied.append(row)
            if migration is None:
                plan.missing.append(row)
            elif row.checksum != migration.checksum:
                plan.modified.append((migration, row))
        elif row.state == "dirty":
            plan.dirty.append(row)
        else:
            plan.failed.append(row)

    newest = plan.current_version
    for migration in migrations:
        found = by_name.get(migration.name)
        if found is None or found.state == "failed":
            plan.pending.append(migration)
            if newest is not None and migration.version < newest:
                plan.out_of_order.append(migration)
    return plan
