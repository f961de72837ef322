"""How long a migration should take on this database, and how long it holds each lock.

Method. Each statement's analysis lists the passes it makes over table data (``Work``); each pass
is priced from the table's size in the catalog (``pg_class.reltuples`` rows, and
``pg_total_relation_size`` bytes), and a statement costs a fixed overhead plus its passes:

    statement   statement_ms                                  (round trip, catalog updates, locks)
    rewrite     rows * (rewrite_row + columns * convert_row) + MB * rewrite_mb
                + each index rebuilt: rows * log2(rows) * rebuild_row_log
    build       rows * log2(rows) * build_row_log + MB * scan_mb
    scan        rows * scan_row + MB * scan_mb                (CHECK, SET NOT NULL, VACUUM;
                                                               ANALYZE: its sample's share)
    join        child rows * join_row + parent rows * join_parent_row
                + both tables' MB * scan_mb                   (validating a foreign key; nothing
                                                               when the child table is empty)
    data        rows * (data_row + indexes * data_index_row)  (rows the statement names when it
                                                               says, e.g. INSERT ... VALUES;
                                                               otherwise every row: an upper bound)
    catalog     nothing beyond statement_ms

``CREATE INDEX CONCURRENTLY`` scans twice and waits for older transactions: its build costs
``concurrent_factor`` times a plain one. A table created earlier in the same migration is empty.

The constants are calibrated by ``benchmarks/estimate_accuracy.py --calibrate`` on synthetic
tables unrelated to the migrations it then checks (10^5 and 10^6 rows, narrow and wide rows,
each primitive timed alone), on the development machine of docs/dry-run.md, where the seed's 003
then took 1.0 to 1.5 times its estimate at 10^4 to 10^6 rows. Another machine has
other constants; ``history_scale`` corrects for that from the database's own ledger: the median
of actual / estimated time over earlier migrations long enough to measure.

Locks: inside a transaction every lock is held until COMMIT, so a table locked by the first
statement stays locked for the whole migration; ``transaction:false`` statements release their
locks as each one ends. ``lock_holds`` reports both cases.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from dbledger.analysis.model import Catalog, StatementAnalysis, TableSize, Work, lock_strength

__all__ = [
    "CALIBRATED",
    "CostModel",
    "LockHold",
    "MigrationEstimate",
    "StatementEstimate",
    "estimate_migration",
    "estimate_ms",
    "history_scale",
]

_MB = 1024 * 1024


@dataclass(frozen=True)
class CostModel:
    """Milliseconds per unit of work (see the module docstring)."""

    statement_ms: float
    rewrite_row: float
    rewrite_mb: float
    convert_row: float
    rebuild_row_log: float
    build_row_log: float
    scan_row: float
    scan_mb: float
    join_row: float
    join_parent_row: float
    data_row: float
    data_index_row: float
    concurrent_factor: float = 2.0


# Calibrated by benchmarks/estimate_accuracy.py --calibrate (see docs/dry-run.md).
CALIBRATED = CostModel(
    statement_ms=0.229,
    rewrite_row=0.00034,
    rewrite_mb=2.43,
    convert_row=0.000101,
    rebuild_row_log=2.49e-05,
    build_row_log=1.52e-05,
    scan_row=3.91e-05,
    scan_mb=0.234,
    join_row=0.00016,
    join_parent_row=0.000551,
    data_row=0.00184,
    data_index_row=0.00197,
    concurrent_factor=3.54,
)


def _build_ms(rows: int, size_bytes: int, model: CostModel) -> float:
    return rows * math.log2(max(rows, 2)) * model.build_row_log + size_bytes / _MB * model.scan_mb


def estimate_ms(
    analysis: StatementAnalysis,
    size: TableSize | None,
    *,
    indexes: int = 0,
    catalog: Catalog | None = None,
    model: CostModel = CALIBRATED,
) -> float:
    """Milliseconds one statement should take once its locks are granted. ``size`` and
    ``indexes`` describe the statement's first table (``analysis.tables[0]``); any other table a
    pass reads (a foreign key's referenced table) is looked up in ``catalog``, or counted empty."""
    main = analysis.tables[0] if analysis.tables else None

    def table(name: str | None) -> TableSize:
        found = size if name == main else catalog.table_size(name) if catalog and name else None
        return found or TableSize(0, 0)

    def index_count(name: str) -> int:
        if name == main:
            return indexes
        return catalog.index_count(name) if catalog else 0

    total = model.statement_ms
    for work in analysis.work:
        total += _work_ms(
            work, table(work.table), table(work.other), index_count(work.table), analysis, model
        )
    return total


def _work_ms(
    work: Work, size: TableSize, other: TableSize, indexes: int, analysis: StatementAnalysis, model: CostModel
) -> float:
    mb = size.bytes / _MB
    if work.kind == "rewrite":
        copy = size.rows * (model.rewrite_row + work.columns * model.convert_row) + mb * model.rewrite_mb
        return copy + indexes * size.rows * math.log2(max(size.rows, 2)) * model.rebuild_row_log
    if work.kind == "build":
        factor = model.concurrent_factor if not analysis.transactional else 1.0
        return factor * _build_ms(size.rows, size.bytes, model)
    if work.kind == "scan":
        part = 1.0 if work.rows is None or work.rows >= size.rows else work.rows / size.rows
        return part * (size.rows * model.scan_row + mb * model.scan_mb)
    if work.kind == "join":
        if size.rows == 0:
            return 0.0  # an empty table has nothing to check: the query ends at once
        reads = (size.bytes + other.bytes) / _MB * model.scan_mb
        return size.rows * model.join_row + other.rows * model.join_parent_row + reads
    rows = work.rows if work.rows is not None else size.rows
    return rows * (model.data_row + indexes * model.data_index_row)


@dataclass(frozen=True)
class StatementEstimate:
    analysis: StatementAnalysis
    size: TableSize | None  # of the statement's first table, as it will find it
    ms: float
    start_ms: float  # when it should start, from the start of the migration


@dataclass(frozen=True)
class LockHold:
    """``table`` is locked in ``mode`` (the strongest the migration takes on it) from
    ``start_ms`` for ``held_ms``: other sessions needing a conflicting lock wait that long."""

    table: str
    mode: str
    start_ms: float
    held_ms: float
    new: bool  # the migration created the table: nobody else can be waiting for it


@dataclass(frozen=True)
class MigrationEstimate:
    statements: tuple[StatementEstimate, ...]
    total_ms: float
    lock_holds: tuple[LockHold, ...]
    unknown: int  # statements not analysed: their time is a guess (statement overhead only)
    scale: float  # history_scale applied to every statement


def estimate_migration(
    statements: Iterable[str],
    catalog: Catalog,
    *,
    transactional: bool = True,
    model: CostModel = CALIBRATED,
    scale: float = 1.0,
) -> MigrationEstimate:
    """Analyse and price a migration's statements in order (each against the schema the earlier
    ones leave), with how long each table stays locked. ``transactional`` is the section's
    ``transaction`` option; ``scale`` comes from ``history_scale``."""
    from dbledger.analysis.statements import walk_statements

    items: list[StatementEstimate] = []
    holds: dict[str, LockHold] = {}
    clock = 0.0
    unknown = 0
    for analysis, view in walk_statements(statements, catalog):
        main = analysis.tables[0] if analysis.tables else None
        size: TableSize | None
        if main is not None and any(lock.new and lock.table == main for lock in analysis.locks):
            size, indexes = TableSize(0, 0), 0  # the statement creates it: nothing to ask the server
        else:
            size = view.table_size(main) if main else None
            indexes = view.index_count(main) if main else 0
        ms = estimate_ms(analysis, size, indexes=indexes, catalog=view, model=model) * scale
        unknown += analysis.effect == "unknown"
        items.append(StatementEstimate(analysis, size, ms, clock))
        for lock in analysis.locks:
            held = holds.get(lock.table)
            if transactional and held is not None:
                mode = lock.mode if lock_strength(lock.mode) > lock_strength(held.mode) else held.mode
                holds[lock.table] = LockHold(lock.table, mode, held.start_ms, 0.0, held.new or lock.new)
            elif transactional:
                holds[lock.table] = LockHold(lock.table, lock.mode, clock, 0.0, lock.new)
            else:
                previous = holds.get(lock.table)
                if previous is None or ms > previous.held_ms:
                    holds[lock.table] = LockHold(lock.table, lock.mode, clock, ms, lock.new)
        clock += ms
    if transactional:
        # Every lock is released at COMMIT, at the end of the migration.
        holds = {
            t: LockHold(h.table, h.mode, h.start_ms, clock - h.start_ms, h.new) for t, h in holds.items()
        }
    return MigrationEstimate(
        statements=tuple(items),
        total_ms=clock,
        lock_holds=tuple(sorted(holds.values(), key=lambda h: (-h.held_ms, h.table))),
        unknown=unknown,
        scale=scale,
    )


def history_scale(
    pairs: Iterable[tuple[float, float]], *, minimum_ms: float = 200.0, minimum_count: int = 3
) -> float:
    """A correction factor for this database from earlier migrations: ``pairs`` of (estimated ms,
    actual ms, e.g. the ledger's ``execution_time_ms``). The median of actual / estimated over
    pairs where both are at least ``minimum_ms`` (short migrations measure the round trip, not
    the work), clamped to [0.1, 10]; 1.0 with fewer than ``minimum_count`` such pairs."""
    ratios = [
        actual / estimated for estimated, actual in pairs if estimated >= minimum_ms and actual >= minimum_ms
    ]
    if len(ratios) < minimum_count:
        return 1.0
    return min(10.0, max(0.1, statistics.median(ratios)))
