"""The records the analysis produces and the catalog protocol it reads (no parser, no driver here).

Lock modes are named as the PostgreSQL documentation's "Explicit Locking" table names them, from the
weakest to the strongest; ``pg_locks.mode`` spells the same modes ``AccessExclusiveLock`` and so on
(``lock_from_pg_locks`` converts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Effect = Literal["rewrite", "scan", "catalog", "data", "build", "unknown"]

# Table-level lock modes, weakest first: the position is the strength (LOCK TABLE's mode numbers,
# 1 to 8, in the same order).
LOCK_MODES: tuple[str, ...] = (
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
)
ACCESS_SHARE, ROW_SHARE, ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE = LOCK_MODES[:4]
SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE = LOCK_MODES[4:]

# What each mode lets other sessions still do, for one-line explanations.
LOCK_BLOCKS: dict[str, str] = {
    ACCESS_SHARE: "blocks only ACCESS EXCLUSIVE (DDL that rewrites or drops)",
    ROW_SHARE: "blocks EXCLUSIVE and ACCESS EXCLUSIVE",
    ROW_EXCLUSIVE: "blocks SHARE and stronger (CREATE INDEX, most DDL); reads and writes go on",
    SHARE_UPDATE_EXCLUSIVE: "reads and writes go on; other DDL, VACUUM and ANALYZE wait",
    SHARE: "reads go on; INSERT, UPDATE and DELETE wait",
    SHARE_ROW_EXCLUSIVE: "reads go on; INSERT, UPDATE and DELETE wait",
    EXCLUSIVE: "only plain reads go on; writes and SELECT ... FOR UPDATE wait",
    ACCESS_EXCLUSIVE: "every other statement on the table waits, plain SELECT included",
}


# Which modes each mode waits for (PostgreSQL's table of conflicting lock modes), by strength.
_CONFLICTS = {
    1: {8},
    2: {7, 8},
    3: {5, 6, 7, 8},
    4: {4, 5, 6, 7, 8},
    5: {3, 4, 6, 7, 8},
    6: {3, 4, 5, 6, 7, 8},
    7: {2, 3, 4, 5, 6, 7, 8},
    8: {1, 2, 3, 4, 5, 6, 7, 8},
}


def conflicts(wanted: str, held: str) -> bool:
    """Does a request for ``wanted`` wait while another session holds ``held``?"""
    return lock_strength(held) in _CONFLICTS[lock_strength(wanted)]


def lock_strength(mode: str | None) -> int:
    """0 for no lock, 1 (ACCESS SHARE) to 8 (ACCESS EXCLUSIVE)."""
    return 0 if mode is None else LOCK_MODES.index(mode) + 1


def strongest(modes: list[str | None] | tuple[str | None, ...]) -> str | None:
    """The strongest of ``modes``, or None when there is none."""
    best: str | None = None
    for mode in modes:
        if lock_strength(mode) > lock_strength(best):
            best = mode
    return best


def lock_from_pg_locks(mode: str) -> str:
    """``AccessExclusiveLock`` (``pg_locks.mode``) -> ``ACCESS EXCLUSIVE``."""
    for name in LOCK_MODES:
        if name.title().replace(" ", "") + "Lock" == mode:
            return name
    raise ValueError(f"not a table-level lock mode: {mode!r}")


@dataclass(frozen=True)
class TableLock:
    """One table-level lock a statement takes. ``new`` marks the relation the statement itself
    creates: the lock is real, but no other session can see the table before the commit."""

    table: str
    mode: str
    new: bool = False


@dataclass(frozen=True)
class Work:
    """One pass over a table's data that a statement makes; the estimate prices each one.

    rewrite: the table is copied into a new file and every index rebuilt (``columns``: how many
    columns' values are converted on the way); scan: every row is read and checked; join: a
    foreign key is validated, ``table``'s rows looked up in ``other``; build: one index is built;
    data: rows are written. ``rows``, when set, bounds the rows a data or scan pass touches (an
    INSERT's VALUES, ANALYZE's sample); otherwise the pass touches every row of the table.
    """

    kind: Literal["rewrite", "scan", "join", "build", "data"]
    table: str
    other: str | None = None
    rows: int | None = None
    columns: int = 0


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key: ``table(columns)`` references ``referenced(referenced_columns)``."""

    name: str
    table: str
    columns: tuple[str, ...]
    referenced: str
    referenced_columns: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """What a statement changes in the catalog, so that the statements after it are analysed
    against the schema as it will be then (a type changed, a foreign key dropped, a table created).

    op: "create_table" (``columns`` holds (name, type) pairs; ``complete`` when they are all of
    its columns), "drop_table", "create_relation" / "drop_relation" (a view, sequence or other
    relation without known columns), "rename_table" (any relation; ``name`` is the new name),
    "column" (``column`` gets ``type``; None drops it), "rename_column", "add_fk" /
    "drop_constraint" (``name``), "add_index" / "drop_index" (``table`` is the index's table).
    """

    op: Literal[
        "create_table",
        "drop_table",
        "create_relation",
        "drop_relation",
        "rename_table",
        "column",
        "rename_column",
        "add_fk",
        "drop_constraint",
        "add_index",
        "drop_index",
    ]
    table: str
    column: str | None = None
    type: str | None = None
    name: str | None = None
    columns: tuple[tuple[str, str], ...] = ()
    complete: bool = False
    foreign_key: ForeignKey | None = None


@dataclass(frozen=True)
class StatementAnalysis:
    """What one statement does to the database, decided from its syntax tree and the catalog.

    ``lock`` is the strongest table-level lock it takes (``locks`` lists every table's); ``effect``
    the heaviest thing it does to data: rewrite (new relfilenode: the table and its indexes are
    copied), build (an index is built), scan (every row read under the lock: validating a
    constraint, SET NOT NULL), data (rows inserted, updated or deleted), catalog (catalog rows
    only: fast at any size once the lock is granted), unknown (not analysed).
    """

    kind: str
    tables: tuple[str, ...]
    lock: str | None
    effect: Effect
    destructive: bool
    notes: tuple[str, ...]
    locks: tuple[TableLock, ...] = ()
    work: tuple[Work, ...] = ()
    # False for statements PostgreSQL refuses inside a transaction block (CREATE INDEX
    # CONCURRENTLY, VACUUM): their section needs ``transaction:false``.
    transactional: bool = True
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True)
class TableSize:
    """How big a table is: live rows (planner statistics) and bytes with indexes and TOAST."""

    rows: int
    bytes: int


class Catalog(Protocol):
    """What the analysis asks of the database: read-only questions, by table name as written in
    the SQL (``"s.t"`` or ``"t"``). Each answers None (or 0, or nothing) for what does not exist."""

    def column_type(self, table: str, column: str) -> str | None:
        """The column's type as ``format_type`` prints it, e.g. ``character varying(255)``."""
        ...

    def table_size(self, table: str) -> TableSize | None: ...

    def index_count(self, table: str) -> int: ...

    def index_table(self, index: str) -> str | None:
        """The table an index belongs to (DROP INDEX locks that table)."""
        ...

    def foreign_keys(self, table: str) -> tuple[ForeignKey, ...]:
        """Every foreign key from or to ``table``, ``table`` named in them as asked."""
        ...

    def server_version(self) -> int | None:
        """The server's ``server_version_num`` (e.g. 130023), for locks that changed between
        versions; None when unknown (the analysis then says what the newest version does)."""
        ...

    def exists(self, relation: str, column: str | None = None) -> bool | None:
        """Whether a relation of that name (table, view, index, sequence...) exists, or that
        column of it; None when the catalog cannot tell. Only False lets the analysis call an
        IF EXISTS statement a no-op."""
        ...
