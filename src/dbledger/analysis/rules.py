"""The building blocks every statement's analysis uses: an accumulator for locks, work and notes,
the rules for which type changes rewrite a table, and which default expressions are volatile.

Sources: PostgreSQL 15 documentation, ALTER TABLE ("Notes": a rewrite is skipped when the old type
is binary coercible to the new one; a volatile default forces a rewrite; a constant default does not
since PostgreSQL 11) and the length-coercion support functions (``varchar_support``,
``numeric_support``, ``timestamp_support``) that make widening a typmod a catalog-only change.
Whether a type change loses values is a separate question: smallint -> integer -> bigint rewrites
every row and keeps every value (the implicit casts of "Type Conversion", the ranges of "Numeric
Types"). Each rule is checked against a real server in tests/test_analysis.py.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class TypeChange:
    """What converting a column from one type to another does: ``rewrites`` the table (every row
    converted), and whether it is ``lossless`` (every value kept, nothing cut or rounded), why."""

    rewrites: bool
    lossless: bool
    why: str


def type_change(old: SqlType, new: SqlType) -> TypeChange:
    """Converting a column from ``old`` to ``new`` with no USING expression."""
    arrow = f"{display(old)} -> {display(new)}"
    rewrites, why = _rewrites(old, new, arrow)
    lossless = not rewrites or keeps_values(old, new)
    if rewrites and lossless:
        why = f"{arrow} keeps every value but rewrites the table"
    return TypeChange(rewrites, lossless, why)


def type_change_rewrites(old: SqlType, new: SqlType) -> tuple[bool, str]:
    """Whether converting a column from ``old`` to ``new`` (with no USING expression) rewrites the
    table, and why, in words."""
    change = type_change(old, new)
    return change.rewrites, change.why


def _rewrites(old: SqlType, new: SqlType, arrow: str) -> tuple[bool, str]:
    if old.array != new.array or old.mods is None or new.mods is None:
        return True, f"{arrow} rewrites the table"
    if old == new:
        return False, f"{arrow}: the same type, nothing to convert"
    if old.name == new.name:
        if old.name in _WIDENABLE and _length_widens(old.mods, new.mods):
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


# -- lossless conversions ---------------------------------------------------------------------

# Up the numeric hierarchy (PostgreSQL's implicit casts) where every value fits: a float4 holds
# integers up to 2^24 exactly, a float8 up to 2^53; float4 -> float8 is exact.
_WIDER_NUMBERS: dict[str, frozenset[str]] = {
    "int2": frozenset({"int4", "int8", "float4", "float8", "numeric"}),
    "int4": frozenset({"int8", "float8", "numeric"}),
    "int8": frozenset({"numeric"}),
    "float4": frozenset({"float8"}),
}
# Digits of each integer type's extremes: numeric(p, s) holds them all when p - s is at least this.
_INTEGER_DIGITS = {"int2": 5, "int4": 10, "int8": 19}
# Types whose text form is exact and independent of session settings (floats depend on
# extra_float_digits, dates and times on DateStyle and TimeZone), with its longest length where
# it has one: to text, unbounded varchar, or varchar(n) at least that long, nothing is lost.
_TEXT_FORM: dict[str, int | None] = {
    "int2": 6,
    "int4": 11,
    "int8": 20,
    "bool": 5,
    "uuid": 36,
    "numeric": None,
    "inet": None,
    "cidr": None,
    "macaddr": 17,
    "json": None,
    "jsonb": None,
}
_STRINGS = frozenset({"text", "varchar", "bpchar"})


def keeps_values(old: SqlType, new: SqlType) -> bool:
    """Whether every value of ``old`` converts to ``new`` unchanged (arrays element by element):
    integers to wider integers or numerics that hold them, a larger length or precision, a
    string type at least as long. Unknown typmods, other types and USING are not (the caller
    decides USING)."""
    if old.array != new.array or old.mods is None or new.mods is None:
        return False
    if old.name == new.name or (old.name, new.name) in _BINARY_COERCIBLE:
        return _same_type_widens(old.name, old.mods, new.mods)
    if new.name in _WIDER_NUMBERS.get(old.name, ()):
        return new.name != "numeric" or _numeric_holds_integers(old.name, new.mods)
    if old.name in _STRINGS and new.name in ("text", "varchar"):
        # char(n) to a string type drops the trailing blanks, which char never counts ("Character
        # Types": they are semantically insignificant).
        return new.name == "text" or _length_widens(old.mods, new.mods)
    if old.name in _TEXT_FORM and new.name in ("text", "varchar"):
        longest = _TEXT_FORM[old.name]
        return not new.mods or (longest is not None and new.mods[0] >= longest)
    return old.name == "date" and new.name == "timestamp"  # midnight of that day, exactly


def _same_type_widens(name: str, old: tuple[int, ...], new: tuple[int, ...]) -> bool:
    """Within one type (or varchar -> text, cidr -> inet): a typmod that holds every old value."""
    if name == "numeric":
        return _numeric_keeps(old, new)
    if name in _WIDENABLE or name in ("bpchar", "cidr"):
        return _length_widens(old, new)
    return old == new


def _length_widens(old: tuple[int, ...], new: tuple[int, ...]) -> bool:
    """A length or precision typmod that holds every value of the old one (none: unlimited)."""
    return not new or bool(old and new[0] >= old[0])


def _numeric_keeps(old: tuple[int, ...], new: tuple[int, ...]) -> bool:
    """numeric(q, t) holds every numeric(p, s) when it has as many digits before the point and as
    many after: t >= s and q - t >= p - s. Unconstrained numeric holds everything."""
    if not new:
        return True
    if not old:
        return False
    old_scale = old[1] if len(old) > 1 else 0
    new_scale = new[1] if len(new) > 1 else 0
    return new_scale >= old_scale and new[0] - new_scale >= old[0] - old_scale


def _numeric_holds_integers(integer_type: str, mods: tuple[int, ...]) -> bool:
    if not mods:
        return True
    scale = mods[1] if len(mods) > 1 else 0
    return mods[0] - scale >= _INTEGER_DIGITS.get(integer_type, mods[0] + 1)


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
