"""The building blocks every statement's analysis uses: an accumulator for locks, work and notes,
the rules for which type changes rewrite a table, and which default expressions are volatile.

Sources: PostgreSQL 15 documentation, ALTER TABLE ("Notes": a rewrite is skipped when the old type
is binary coercible to the new one; a volatile default forces a rewrite; a constant default does not
since PostgreSQL 11) and the length-coercion support functions (``varchar_support``,
``numeric_support``, ``timestamp_support``) that make widening a typmod a catalog-only change. Each
rule is checked against a real server in tests/test_analysis.py.
"""

from __future__ import annotations

from dbledger.analysis.model import (
    Change,
    Effect,
    StatementAnalysis,
    TableLock,
    Work,
    lock_strength,
    strongest,
)
from dbledger.analysis.nodes import (
    Node,
    SqlType,
    child,
    children,
    enum,
    kind_of,
    sql_type,
    strings,
    text,
    walk,
)

# Precedence when a statement does several things: the heaviest names the effect.
_EFFECT_OF_WORK: dict[str, Effect] = {
    "rewrite": "rewrite",
    "build": "build",
    "scan": "scan",
    "join": "scan",
    "data": "data",
}
_EFFECT_RANK: tuple[Effect, ...] = ("catalog", "data", "scan", "build", "unknown", "rewrite")


class Builder:
    """Collects what a statement does, then freezes it into a ``StatementAnalysis``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.tables: list[str] = []
        self._locks: dict[str, TableLock] = {}
        self._work: list[Work] = []
        self._rewrites: dict[str, int] = {}  # table -> columns converted by the rewrite
        self.notes: list[str] = []
        self.destructive = False
        self.unknown = False
        self.transactional = True
        self.changes: list[Change] = []

    def touch(self, table: str) -> None:
        if table not in self.tables:
            self.tables.append(table)

    def lock(self, table: str, mode: str, *, new: bool = False) -> None:
        """Record ``mode`` on ``table``, keeping the strongest mode per table."""
        self.touch(table)
        held = self._locks.get(table)
        if held is None or lock_strength(mode) > lock_strength(held.mode):
            self._locks[table] = TableLock(table, mode, new=new or (held.new if held else False))

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def work(self, item: Work) -> None:
        self._work.append(item)

    def rewrite(self, table: str, *, columns: int = 0) -> None:
        """The table is rewritten once per statement, however many subcommands ask for it."""
        self._rewrites[table] = self._rewrites.get(table, 0) + columns

    def change(self, item: Change) -> None:
        self.changes.append(item)

    def result(self) -> StatementAnalysis:
        work = [Work("rewrite", table, columns=n) for table, n in self._rewrites.items()]
        # A rewrite re-checks every constraint while it copies: separate scans of that table fold in.
        work += [w for w in self._work if not (w.kind == "scan" and w.table in self._rewrites)]
        kinds: list[Effect] = [_EFFECT_OF_WORK[w.kind] for w in work]
        if self.unknown:
            kinds.append("unknown")
        effect: Effect = max(kinds, key=_EFFECT_RANK.index) if kinds else "catalog"
        locks = tuple(self._locks.values())
        return StatementAnalysis(
            kind=self.kind,
            tables=tuple(self.tables),
            lock=strongest([lock.mode for lock in locks]),
            effect=effect,
            destructive=self.destructive,
            notes=tuple(self.notes),
            locks=locks,
            work=tuple(work),
            transactional=self.transactional,
            changes=tuple(self.changes),
        )


# -- type changes ---------------------------------------------------------------------------

# format_type's names for the internal names, for notes a reader recognises.
_DISPLAY = {
    "varchar": "character varying",
    "bpchar": "character",
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "bool": "boolean",
    "varbit": "bit varying",
}
_TIME = {
    "timestamp": ("timestamp", " without time zone"),
    "timestamptz": ("timestamp", " with time zone"),
    "time": ("time", " without time zone"),
    "timetz": ("time", " with time zone"),
}
# Types whose length or precision typmod can grow without touching a row (a support function
# turns the coercion into a no-op): widening is catalog-only, narrowing rewrites.
_WIDENABLE = frozenset({"varchar", "varbit", "timestamp", "timestamptz", "time", "timetz"})
# Binary-coercible pairs (old, new) beyond a typmod change: no rewrite, and for varchar <-> text
# not even an index rebuild (they sort identically).
_BINARY_COERCIBLE = frozenset({("varchar", "text"), ("cidr", "inet")})


def display(sql_type: SqlType) -> str:
    """A type as ``format_type`` prints it: ``character varying(255)``, ``timestamp(3) with time
    zone``."""
    mods = "" if not sql_type.mods else "(" + ",".join(map(str, sql_type.mods)) + ")"
    if sql_type.name in _TIME:
        base, suffix = _TIME[sql_type.name]
        name = f"{base}{mods}{suffix}"
    else:
        name = _DISPLAY.get(sql_type.name, sql_type.name) + mods
    return name + ("[]" if sql_type.array else "")


def type_change_rewrites(old: SqlType, new: SqlType) -> tuple[bool, str]:
    """Whether converting a column from ``old`` to ``new`` (with no USING expression) rewrites the
    table, and why, in words."""
    arrow = f"{display(old)} -> {display(new)}"
    if old.array != new.array or old.mods is None or new.mods is None:
        return True, f"{arrow} rewrites the table"
    if old == new:
        return False, f"{arrow}: the same type, nothing to convert"
    if old.name == new.name:
        if old.name in _WIDENABLE and (not new.mods or (old.mods and new.mods[0] >= old.mods[0])):
            return False, f"{arrow} only widens the type: catalog only, no row is touched"
        if old.name == "numeric" and _numeric_widens(old.mods, new.mods):
            return False, f"{arrow} keeps the scale and widens the precision: catalog only"
        return True, f"{arrow} narrows or re-pads the values: the table is rewritten"
    if (old.name, new.name) in _BINARY_COERCIBLE or (
        old.name == "text" and new == SqlType("varchar", (), False)
    ):
        return False, f"{arrow} is binary coercible: catalog only, no row is touched"
    if {old.name, new.name} == {"timestamp", "timestamptz"}:
        return True, (
            f"{arrow} rewrites the table (PostgreSQL 12+ skips the rewrite only when the session "
            "TimeZone is UTC)"
        )
    return True, f"{arrow} rewrites the table"


def _numeric_widens(old: tuple[int, ...], new: tuple[int, ...]) -> bool:
    if not new:
        return True  # unconstrained numeric holds any value
    if not old:
        return False
    old_scale = old[1] if len(old) > 1 else 0
    new_scale = new[1] if len(new) > 1 else 0
    return new_scale == old_scale and new[0] >= old[0]


def plain_using(using: Node | None, column: str, new: SqlType) -> bool:
    """True when a USING expression leaves the values as they are: absent, the column itself, or
    the column cast to the new type. Anything else is computed row by row: a rewrite."""
    if using is None:
        return True
    if kind_of(using) == "TypeCast":
        type_name = child(using, "typeName")
        if type_name is None or sql_type(type_name) != new:
            return False
        using = child(using, "arg")
    return kind_of(using) == "ColumnRef" and strings(children(using, "fields")) == (column,)


# -- volatility -------------------------------------------------------------------------------

# Built-in volatile functions a migration puts into a DEFAULT: each row gets its own value, so
# ADD COLUMN must rewrite the table to store them.
VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "gen_random_uuid",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "gen_random_bytes",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "setval",
        "currval",
        "txid_current",
        "pg_current_xact_id",
    }
)
# Built-in stable or immutable functions common in defaults: evaluated once, stored in the catalog.
STABLE_FUNCTIONS = frozenset(
    {
        "now",
        "transaction_timestamp",
        "statement_timestamp",
        "current_setting",
        "lower",
        "upper",
        "length",
        "concat",
        "md5",
        "to_char",
        "to_timestamp",
        "to_date",
        "date_trunc",
        "make_interval",
        "make_date",
        "jsonb_build_object",
        "json_build_object",
        "jsonb_build_array",
        "json_build_array",
        "array_fill",
        "timezone",
        "replace",
        "substr",
        "trim",
    }
)


def volatile_calls(expression: Node | None) -> tuple[list[str], list[str]]:
    """Functions called by ``expression``: (known volatile, of unknown volatility)."""
    volatile: list[str] = []
    unknown: list[str] = []
    if expression is None:
        return volatile, unknown
    for node in walk(expression):
        if kind_of(node) != "FuncCall":
            continue
        name = strings(children(node, "funcname"))
        short = name[-1] if name else "?"
        if short in VOLATILE_FUNCTIONS:
            volatile.append(short)
        elif short not in STABLE_FUNCTIONS or (len(name) == 2 and name[0] != "pg_catalog"):
            unknown.append(".".join(name))
    return volatile, unknown


def constraint_type(constraint: Node) -> str:
    """``CHECK``, ``FOREIGN``, ``PRIMARY``... from a ``Constraint`` node's ``contype``."""
    return enum(constraint, "contype").removeprefix("CONSTR_")


def constraint_name(constraint: Node) -> str | None:
    return text(constraint, "conname")
