"""Dry-run analysis of PostgreSQL migrations: which locks each statement takes, whether it
rewrites, scans or builds, and how long it should take on this database.

    from dbledger.analysis import PostgresCatalog, analyse_all, estimate_migration

    catalog = PostgresCatalog(conn)
    for analysis in analyse_all(statements, catalog):
        print(analysis.kind, analysis.lock, analysis.effect, analysis.notes)
    print(estimate_migration(statements, catalog).total_ms)

Importing this package imports pglast (~90 ms) and psycopg; ``import dbledger`` never imports it.
"""

from dbledger.analysis.catalog import Overlay, PostgresCatalog, StaticCatalog
from dbledger.analysis.estimate import (
    CALIBRATED,
    CostModel,
    LockHold,
    MigrationEstimate,
    StatementEstimate,
    estimate_migration,
    estimate_ms,
    history_scale,
)
from dbledger.analysis.model import (
    LOCK_BLOCKS,
    LOCK_MODES,
    Catalog,
    Change,
    Effect,
    ForeignKey,
    StatementAnalysis,
    TableLock,
    TableSize,
    Work,
    lock_from_pg_locks,
    lock_strength,
    strongest,
)
from dbledger.analysis.statements import analyse, analyse_all, walk_statements

__all__ = [
    "CALIBRATED",
    "LOCK_BLOCKS",
    "LOCK_MODES",
    "Catalog",
    "Change",
    "CostModel",
    "Effect",
    "ForeignKey",
    "LockHold",
    "MigrationEstimate",
    "Overlay",
    "PostgresCatalog",
    "StatementAnalysis",
    "StatementEstimate",
    "StaticCatalog",
    "TableLock",
    "TableSize",
    "Work",
    "analyse",
    "analyse_all",
    "estimate_migration",
    "estimate_ms",
    "history_scale",
    "lock_from_pg_locks",
    "lock_strength",
    "strongest",
    "walk_statements",
]
