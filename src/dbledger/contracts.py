"""The records every layer of dbledger passes around, at the bottom of the house: no dbledger module
is imported here, and each of the others may import this one.

- ``Version``: a migration's version, its numbers compared part by part.
- ``Statement``: one SQL statement of a migration section, with the file line it starts on.
- ``LedgerRow``: one row of the ledger table as a backend read it; ``LedgerSnapshot``: all of them.
- ``LedgerEvent``: one change the engine asks a backend to write (a ledger row and its history row).
- ``HistoryRow``: one row of the append-only history, as read back.
- (the analysis protocol, ``Annotation`` and ``Annotator``, is its own bottom module:
  ``dbledger.annotation``, loaded only where statements are analysed.)
- ``Progress``: the callback through which commands report what they do while they do it.

The records are NamedTuples rather than dataclasses: every replica defines them at every start,
and a frozen dataclass costs about five times as much to define.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, NamedTuple

# The state of one migration in the ledger table.
State = Literal["applied", "baseline", "failed", "dirty"]
APPLIED_STATES: frozenset[str] = frozenset({"applied", "baseline"})
# In a history row: the ledger row was deleted by this action (rollback, repair, rename).
REMOVED = "removed"

# What a history row records.
Action = Literal[
    "apply",
    "fail",
    "start",
    "rollback",
    "repair",
    "rename",
    "baseline",
    "adopt",
    "hook",
    "backup",
    "create",
    "upgrade",
]

# How a ledger event changes the ledger table: write the row whole (inserted, or the existing row
# of that name overwritten, keeping its id, as a failed migration's row becomes a success);
# update its state in place (keeping its times); delete it; accept a new checksum; rename it;
# or leave the table alone (the history row only).
RowChange = Literal["upsert", "update", "delete", "checksum", "rename", "none"]


class Version(tuple[int, ...]):
    """A migration's version: its numbers, compared part by part, so ``1.10`` sorts after ``1.9``
    (Flyway's rule) and ``9`` before ``10``. Trailing zero parts are dropped, so ``1.0`` is ``1``.
    A tuple, so a sort of ten thousand compares in C. Shown without leading zeros or trailing zero
    parts (``003`` as ``3``, ``1.1.0`` as ``1.1``); in JSON an integer when it has one part
    (``shown``)."""

    __slots__ = ()

    @classmethod
    def of(cls, text: str) -> Version:
        """``text`` as a version: digits, in parts split by ``.`` or ``_`` (``003``, ``1.1``,
        ``1_1``). ValueError when it is not one."""
        if text.isascii() and text.isdigit():  # the common case, at every start for every file
            return cls((int(text),))
        parts_text = text.replace("_", ".").split(".")
        if not all(part.isascii() and part.isdigit() for part in parts_text):
            raise ValueError(
                f"{text!r} is not a version: give the digits of a migration's version (3, "
                "20240101120000, 1.1)"
            )
        parts = [int(part) for part in parts_text]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return cls(parts)

    def __str__(self) -> str:
        return ".".join(map(str, self))

    def __repr__(self) -> str:
        return f"Version({str(self)!r})"

    def shown(self) -> int | str | None:
        """The version in JSON: an integer when it has one part, else its dotted text; None for
        a repeatable migration's."""
        if not self:
            return None
        return self[0] if len(self) == 1 else str(self)


# ``down --to 0``: roll back everything.
ZERO = Version((0,))
# A repeatable migration's: no version (empty, so false; kept as '' in the ledger's column). It
# runs again whenever its file changes, after the versioned migrations.
REPEATABLE = Version(())


class Statement(NamedTuple):
    """One SQL statement of a section, without its terminator, and the file line it starts on."""

    sql: str
    line: int


class WaitLimits(NamedTuple):
    """What each statement of a migration may wait for a lock, and run, and its transaction
    last, in milliseconds (0: no limit); sent to the database before the statements run."""

    lock_timeout_ms: int
    statement_timeout_ms: int
    transaction_timeout_ms: int = 0


# Stands for the end of a migration's transaction in errors raised at COMMIT (line 0: no line of
# the file).
COMMIT_STATEMENT = Statement(sql="COMMIT", line=0)


class LedgerRow(NamedTuple):
    """One row of the ledger table."""

    name: str
    version: Version
    state: str  # one of State; kept as text so a row written by a newer dbledger still reads
    checksum: str | None
    applied_at: str | None
    execution_time_ms: int | None
    success: bool
    error_message: str | None
    # 1, 2, 3... in the order migrations were applied; None while failed or dirty.
    applied_order: int | None = None
    # The lock holder running a transaction:false migration (state dirty) while it runs.
    runner: str | None = None
    # How ``checksum`` was computed, so a later dbledger can change it and still read old rows.
    checksum_algorithm: str = "sha256"


class LedgerSnapshot(NamedTuple):
    """The whole ledger as read at one moment: its format version and its rows, in applied order
    (failed and dirty rows last)."""

    version: int
    rows: tuple[LedgerRow, ...]


class LedgerEvent(NamedTuple):
    """One change to the ledger: how the ledger row changes (``change``) and the history row that
    records it. ``state`` is the row's state afterwards, ``REMOVED`` when the row is deleted, or
    None when no row is involved (a backup, an upgrade)."""

    action: Action
    name: str | None
    change: RowChange
    state: str | None = None
    version: Version | None = None
    checksum: str | None = None
    execution_time_ms: int | None = None
    error_message: str | None = None
    detail: str | None = None
    estimate_ms: int | None = None
    applied_order: int | None = None
    runner: str | None = None
    new_name: str | None = None  # change == "rename": the row's name afterwards
    # The migration file as applied (passwords redacted), kept in the ledger row so a later
    # change to the file can be told cosmetic or semantic; None: not kept.
    source: str | None = None


class HistoryRow(NamedTuple):
    """One row of the history table, oldest first by ``id``. ``prev_hash`` and ``hash`` chain it
    to the row before (see ``dbledger.chain``)."""

    id: int
    at: str
    action: str
    migration_name: str | None
    version: str | None
    state: str | None
    checksum: str | None
    execution_time_ms: int | None
    estimate_ms: int | None
    applied_order: int | None
    error_message: str | None
    detail: str | None
    actor: str | None
    dbledger_version: str | None
    prev_hash: str | None
    hash: str | None


class Applied(NamedTuple):
    """One migration a run applied."""

    name: str
    version: Version
    execution_time_ms: int
    checksum: str


class RolledBack(NamedTuple):
    """One migration a run rolled back."""

    name: str
    version: Version
    execution_time_ms: int


class HookCall(NamedTuple):
    """What an application's hook receives (``migrate(hooks={"after-each": fn})``): the event
    (before-all, before-each, after-each, after-all), the migration it runs for (None for the
    -all events), and ``execute(sql)``, which runs SQL in the migration's transaction (for the
    -each events) or in the hook's own (for the -all events)."""

    event: str
    migration: str | None
    execute: Callable[[str], None]


# What an application passes as ``hooks``: event -> the function to call.
Hooks = Mapping[str, Callable[[HookCall], None]]


# progress(event, subject, elapsed ms or None). Events: "using" (subject: the database and the
# migrations folder), "waiting" (who holds the lock), "upgrade" (the ledger's old and new
# version), "backup" (where it went), "start" and "done" (a migration), "rollback" and
# "rolled back" (a migration), "warning" (what went wrong, the run goes on), "busy" (what the
# database waits for: another connection's lock), "steps" (how many migrations the run will apply
# or roll back, as digits), "statement" (each statement as it runs, redacted; sent only to a
# callback whose ``statements`` attribute is true).
Progress = Callable[[str, str, int | None], None]


def no_progress(event: str, subject: str, ms: int | None) -> None:
    """The default progress callback: report nothing."""
