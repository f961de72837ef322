"""The exceptions dbledger raises, one tree, with the process exit code on each class.

    DbledgerError                      exit 1: the database work or a check failed
    ├── UsageError                     exit 2: bad usage or configuration
    │   ├── ConfigError                a malformed URL, an unreadable directory, a bad option value
    │   └── MigrationFileError         a malformed migration file or folder (names the file)
    ├── DatabaseUnavailable            the database cannot be reached or refused the login
    ├── LockTimeout                    another process held the migration lock for too long
    ├── BackupFailed                   a backup before a risky migration failed (dbledger.backup)
    ├── LedgerStateError               the ledger and the files disagree; nothing was run
    │   (modified, missing, out of order, dirty, no ledger on a non-empty database)
    └── MigrationFailed                a migration's SQL failed; it was rolled back and recorded

Every message is redacted before it is stored on the exception, so printing one never shows a
password, whatever the driver put into it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from dbledger.redaction import redact

__all__ = [
    "ConfigError",
    "DatabaseUnavailable",
    "DbledgerError",
    "LedgerStateError",
    "LockTimeout",
    "MigrationFailed",
    "MigrationFileError",
    "UsageError",
]


class DbledgerError(Exception):
    """Root of every error dbledger raises on purpose."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        self.message = redact(message)
        super().__init__(self.message)


class UsageError(DbledgerError):
    """The command line, the configuration or the input files are wrong; nothing was touched."""

    exit_code: ClassVar[int] = 2


class ConfigError(UsageError):
    """A configuration value is malformed (URL, directory, option)."""


class MigrationFileError(UsageError):
    """A migration file or the folder holding them is malformed."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DatabaseUnavailable(DbledgerError):
    """The database could not be reached, or refused the login."""


class LockTimeout(DbledgerError):
    """The migration lock was not obtained within the allowed wait."""


class LedgerStateError(DbledgerError):
    """The ledger and the migration files disagree in a way that makes running anything unsafe.

    ``problems`` holds one line per migration at fault, each already saying what to do next.
    """

    def __init__(self, problems: list[str], document: dict[str, Any] | None = None) -> None:
        self.problems = [redact(p) for p in problems]
        # For --json: what the command found before refusing (a dry run's plan).
        self.document = document or {}
        if len(problems) == 1:
            message = problems[0]
        else:
            message = f"{len(problems)} problems, nothing was run:\n" + "\n".join(
                f"  - {p}" for p in problems
            )
        super().__init__(message)


def foreign_ledger(table: str) -> LedgerStateError:
    """The ledger table exists but another tool made it (dbmate, golang-migrate and Rails all use
    the name schema_migrations)."""
    return LedgerStateError(
        [
            f"table {table} exists but is not dbledger's ledger (it has no migration_name column); "
            "another migration tool (dbmate, golang-migrate, Rails) uses that name: rename it "
            f"(ALTER TABLE {table} RENAME TO schema_migrations_old) before running dbledger here"
        ]
    )


class MigrationFailed(DbledgerError):
    """A migration's SQL failed. The failure is recorded in the ledger before this is raised.

    Structured fields keep what the database said, so callers need not parse the message.
    """

    def __init__(
        self,
        migration: str,
        error: str,
        *,
        sqlstate: str | None = None,
        statement: str | None = None,
        line: int | None = None,
        dirty: bool = False,
        undone: tuple[str, ...] = (),
        rollback: bool = False,
    ) -> None:
        self.migration = migration
        self.error = redact(error)
        self.sqlstate = sqlstate
        self.statement = redact(statement) if statement is not None else None
        self.line = line
        self.dirty = dirty
        self.undone = undone
        where = f" (line {line})" if line else ""
        message = f"migration '{migration}' failed{where}: {self.error}"
        if dirty and rollback:
            message += (
                "\nthe down section ran outside a transaction and stopped part way: finish the "
                "rollback by hand (do what the rest of the down section does), then run "
                "'dbledger repair', which records the migration as rolled back"
            )
        elif dirty:
            message += (
                "\nit ran outside a transaction, so part of it may have been applied; "
                "undo or finish that work by hand, then run 'dbledger repair'"
            )
        elif rollback:
            message += (
                "\nthe rollback was undone: the migration is still applied; fix its down section "
                "and run 'dbledger down' again"
            )
        else:
            message += (
                "\nthis migration was rolled back and left nothing behind; fix the file and run "
                "'dbledger up' again"
            )
        if undone:
            message += (
                f"\n--atomic: the whole deploy was rolled back, including {', '.join(undone)}, "
                "which ran before it in the same transaction"
            )
        super().__init__(message)
