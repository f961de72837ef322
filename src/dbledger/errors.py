"""Every exception dbledger raises, one tree, with the process exit code and the JSON form on each.

    DbledgerError                      exit 1: the database work or a check failed
    ├── UsageError                     exit 2: bad usage or configuration; nothing was touched
    │   ├── ConfigError                a malformed URL, an unreadable directory, a bad option value
    │   └── MigrationFileError         a malformed migration file or folder (names the file)
    ├── DatabaseUnavailable            the database cannot be reached or refused the login
    ├── DatabaseError                  the database rejected a statement (SQLSTATE, statement, line)
    ├── LockTimeout                    another process held the migration lock for too long
    ├── BackupFailed                   a backup before a risky migration failed; nothing was applied
    ├── LedgerStateError               the ledger and the files disagree; nothing was run
    │   │   (modified, missing, renamed, out of order, dirty, tampered, no ledger on a used database)
    │   ├── ForeignLedger              a table of the ledger's name belongs to another tool
    │   └── ExistingSchema             the database has tables but no ledger (built without dbledger)
    ├── DriftFound                     the live schema differs from the expected one
    ├── LintFailed                     lint found an error-severity finding (or up --strict refused)
    ├── CheckFailed                    check found an error: a migration, a round trip, a query, ...
    ├── MigrationFailed                a migration's SQL failed; it was rolled back and recorded
    ├── FleetFailed                    --all: one or more targets failed (each one's error in it)
    └── Interrupted                    exit 130: stopped by SIGINT; the work was rolled back
        └── Terminated                 exit 143: stopped by SIGTERM

Every message is redacted before it is stored on the exception, so printing one never shows a
password, whatever the driver put into it. ``to_dict()`` is the ``"error"`` object of ``--json``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from dbledger.contracts import Statement
from dbledger.redaction import redact

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
    "Interrupted",
    "LedgerStateError",
    "LintFailed",
    "LockTimeout",
    "MigrationFailed",
    "MigrationFileError",
    "Terminated",
    "UsageError",
]


class DbledgerError(Exception):
    """Root of every error dbledger raises on purpose."""

    exit_code: ClassVar[int] = 1
    # Attributes that go into the JSON form besides type, message and exit code.
    fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str) -> None:
        self.message = redact(message)
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The ``"error"`` object of a ``--json`` document."""
        found = {"type": type(self).__name__, "message": self.message, "exit_code": self.exit_code}
        return found | {name: getattr(self, name) for name in self.fields}


class UsageError(DbledgerError):
    """The command line, the configuration or the input files are wrong; nothing was touched."""

    exit_code: ClassVar[int] = 2


class ConfigError(UsageError):
    """A configuration value is malformed (URL, directory, option)."""


class MigrationFileError(UsageError):
    """A migration file or the folder holding them is malformed."""

    fields: ClassVar[tuple[str, ...]] = ("path",)

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = redact(reason)
        super().__init__(f"{path}: {reason}")


class DatabaseUnavailable(DbledgerError):
    """The database could not be reached, or refused the login."""


class DatabaseError(DbledgerError):
    """The database rejected a statement. Raised by the backends, which translate their driver's
    errors into this one and keep its SQLSTATE (SQLite: its error name, e.g. ``SQLITE_ERROR``)."""

    fields: ClassVar[tuple[str, ...]] = ("sqlstate", "line")

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        statement: Statement | None = None,
        connection_lost: bool = False,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.statement = statement
        self.line = statement.line if statement is not None else None
        # The session ended under the statement (terminated, server restarted): the statement
        # may be fine, and the server rolled back whatever transaction was open.
        self.connection_lost = connection_lost


class LockTimeout(DbledgerError):
    """The migration lock was not obtained within the allowed wait."""


class BackupFailed(DbledgerError):
    """A backup could not be taken; nothing that looks like a backup was left behind."""


class LedgerStateError(DbledgerError):
    """The ledger and the migration files disagree in a way that makes running anything unsafe.

    ``problems`` holds one line per migration at fault, each already saying what to do next.
    """

    fields: ClassVar[tuple[str, ...]] = ("problems",)

    def __init__(self, problems: list[str]) -> None:
        self.problems = [redact(p) for p in problems]
        if len(problems) == 1:
            message = problems[0]
        else:
            message = f"{len(problems)} problems, nothing was run:\n" + "\n".join(
                f"  - {p}" for p in problems
            )
        super().__init__(message)


class ForeignLedger(LedgerStateError):
    """The table where dbledger's ledger belongs exists, but another tool made it."""

    fields: ClassVar[tuple[str, ...]] = ("problems", "table", "tool")

    def __init__(self, table: str, tool: str, columns: list[str]) -> None:
        self.table = table
        self.tool = tool
        super().__init__(
            [
                f"table {table} is not dbledger's ledger: its columns ({', '.join(columns)}) are those "
                f"of {tool}. Leave it as it is and give dbledger a ledger of its own: pass "
                "--ledger-table NAME (or set DBLEDGER_LEDGER_TABLE, or ledger_table in "
                "[tool.dbledger]), e.g. --ledger-table dbledger_migrations; 'dbledger adopt --from "
                "TOOL' then records in it what that tool applied (docs/switching.md)"
            ]
        )


class ExistingSchema(LedgerStateError):
    """The database has tables but no ledger: nothing records which migrations it already holds.
    ``advice`` says which ``dbledger baseline`` matches, when a replay could tell."""

    fields: ClassVar[tuple[str, ...]] = ("problems", "tables")

    def __init__(self, tables: list[str], ledger: str, advice: str | None = None) -> None:
        self.tables = tables
        self.ledger = ledger
        self.advice = advice
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        head = (
            f"the database already has {len(tables)} table(s) ({shown}) but no ledger table "
            f"{ledger}: it was built without dbledger, so nothing records which migrations it "
            "already contains. "
        )
        body = advice or (
            "Mark what it already contains with 'dbledger baseline VERSION' (VERSION = the newest "
            "migration the database already matches)"
        )
        super().__init__(
            [head + body + " (or pass --allow-existing-schema to run every migration on top of it)"]
        )


class NotMigrated(DbledgerError):
    """``wait``: the migrations were not all applied in time, or one failed or is dirty, which
    no amount of waiting mends."""


class DriftFound(DbledgerError):
    """The live schema differs from the expected one: ``document`` is the comparison (as
    ``--json`` prints it), ``lines`` each difference in words."""

    def __init__(self, document: dict[str, Any], lines: list[str]) -> None:
        self.document = document
        self.lines = lines
        count = len(lines)
        super().__init__(
            f"the live schema has {count} difference(s) from the schema the applied migrations "
            "produce: write a migration for a change that should stay, or undo it by hand"
        )


class LintFailed(DbledgerError):
    """``dbledger lint`` found at least one error-severity finding, or ``up --strict`` refused to
    apply a pending migration that has one: ``document`` is the lint report (as ``--json``
    prints it), ``lines`` each finding in its one-line form with its help line."""

    def __init__(self, message: str, document: dict[str, Any], lines: list[str]) -> None:
        self.document = document
        self.lines = lines
        super().__init__(message)


class CheckFailed(DbledgerError):
    """``dbledger check`` found at least one error: ``document`` is the check's report (as
    ``--json`` prints it), ``lines`` each finding in its one-line form."""

    def __init__(self, message: str, document: dict[str, Any], lines: list[str]) -> None:
        self.document = document
        self.lines = lines
        super().__init__(message)


class FleetFailed(DbledgerError):
    """A command run over many targets (``--all``) failed on some of them: ``document`` is the
    run's summary (as ``--json`` prints it), ``failed`` how many of the ``total`` targets failed."""

    fields: ClassVar[tuple[str, ...]] = ("failed", "total")

    def __init__(self, document: dict[str, Any], failed: int, total: int, first: str) -> None:
        self.document = document
        self.failed = failed
        self.total = total
        super().__init__(f"{failed} of {total} target(s) failed; the first: {first}")


class MigrationFailed(DbledgerError):
    """A migration's SQL failed. The failure is recorded in the ledger before this is raised.

    Structured fields keep what the database said, so callers need not parse the message.
    """

    fields: ClassVar[tuple[str, ...]] = ("migration", "sqlstate", "statement", "line", "dirty", "undone")

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
        connection_lost: bool = False,
    ) -> None:
        self.migration = migration
        self.error = redact(error)
        self.sqlstate = sqlstate
        self.statement = redact(statement) if statement is not None else None
        self.line = line
        self.dirty = dirty
        self.undone = undone
        where = f" (line {line})" if line else ""
        message = f"migration '{migration}' failed{where}: {self.error}\n" + _next_step(
            dirty,
            rollback,
            connection_lost,
            lock_wait=sqlstate in ("55P03", "40P01"),
            out_of_time=sqlstate == "25P04",
        )
        if undone:
            message += (
                f"\n--atomic: the whole deploy was rolled back, including {', '.join(undone)}, "
                "which ran before it in the same transaction"
            )
        super().__init__(message)


def _next_step(
    dirty: bool,
    rollback: bool,
    connection_lost: bool = False,
    *,
    lock_wait: bool = False,
    out_of_time: bool = False,
) -> str:
    if out_of_time and not dirty:  # 25P04: the server ends the session; the ledger cannot say so
        return (
            "it ran longer than its transaction_timeout, so the server ended the session and rolled "
            "it back, leaving nothing behind: give it more time (the section's transaction_timeout, "
            "--transaction-timeout or [tool.dbledger]) or make it faster, then run 'dbledger up' again"
        )
    if lock_wait and not dirty:
        return (
            "it was rolled back and left nothing behind; the file need not be at fault: run the "
            "command again once the blocking session has ended"
        )
    if connection_lost and not dirty:
        return (
            "the connection to the database was lost while it ran (the session was terminated or "
            "the server restarted), so the server rolled it back; the file need not be at fault: "
            "run the command again when the database is back (applied migrations never run twice)"
        )
    if dirty and rollback:
        return (
            "the down section ran outside a transaction and stopped part way: finish the rollback "
            "by hand (do what the rest of the down section does), then run 'dbledger repair', which "
            "records the migration as rolled back"
        )
    if dirty:
        return (
            "it ran outside a transaction and part of its work may have been committed: undo that "
            "work by hand, then run 'dbledger repair' (the next 'dbledger up' runs the migration "
            "again, whole)"
        )
    if rollback:
        return (
            "the rollback was undone: the migration is still applied; fix its down section and run "
            "'dbledger down' again"
        )
    return "this migration was rolled back and left nothing behind; fix the file and run 'dbledger up' again"


class Interrupted(DbledgerError):
    """SIGINT (Ctrl-C) stopped the command; the work in progress was rolled back. The exit code
    is the shell's for the signal: 128 + its number."""

    exit_code: ClassVar[int] = 130
    signal: ClassVar[str] = "SIGINT"
    fields = ("signal",)

    def __init__(self) -> None:
        super().__init__(
            f"interrupted by {self.signal}: the migration at work, if any, was rolled back (one "
            "with transaction:false may be left dirty); run 'dbledger status' to see where the "
            "database stands"
        )


class Terminated(Interrupted):
    """SIGTERM (a container's stop) stopped the command, as Interrupted."""

    exit_code: ClassVar[int] = 143
    signal: ClassVar[str] = "SIGTERM"
