"""dbledger: database migrations with a ledger, checksums and a lock.

    import dbledger
    report = dbledger.migrate("postgresql://app@db/app", "migrations")

Importing this package is cheap: the database drivers load only when a database is opened.
"""

from dbledger.api import (
    LintReport,
    Report,
    Status,
    adopt,
    baseline,
    check,
    down,
    drift,
    migrate,
    new,
    redo,
    repair,
    status,
    verify,
    wait_until_migrated,
)
from dbledger.contracts import HookCall
from dbledger.errors import (
    BackupFailed,
    CheckFailed,
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    DbledgerError,
    DriftFound,
    ExistingSchema,
    FleetFailed,
    ForeignLedger,
    Interrupted,
    LedgerStateError,
    LintFailed,
    LockTimeout,
    MigrationFailed,
    MigrationFileError,
    NotMigrated,
    Terminated,
    UsageError,
)
from dbledger.ledger import DBLEDGER_VERSION as __version__

__all__ = [
    "BackupFailed",
    "CheckFailed",
    "ConfigError",
    "DatabaseError",
    "DatabaseUnavailable",
    "DbledgerError",
    "DriftFound",
    "ExistingSchema",
    "FleetFailed",
    "ForeignLedger",
    "HookCall",
    "Interrupted",
    "LedgerStateError",
    "LintFailed",
    "LintReport",
    "LockTimeout",
    "MigrationFailed",
    "MigrationFileError",
    "NotMigrated",
    "Report",
    "Status",
    "Terminated",
    "UsageError",
    "__version__",
    "adopt",
    "baseline",
    "check",
    "down",
    "drift",
    "migrate",
    "new",
    "redo",
    "repair",
    "status",
    "verify",
    "wait_until_migrated",
]
