"""Compare two schema models and say, object by object, what differs, in words a person can act
on: ``column platform_connections.id: expected character varying(255), found uuid``, ``missing
table discovery_runs``, ``extra table hand_made``, ``trigger function log_changes: body differs``
with a unified diff of the body in ``details``.

Each difference also says what it can do to an application written for the expected schema, its
``severity``, from the most to the least severe (``SEVERITIES`` lists them the other way round):

* ``breaking``: statements the application runs can fail. A missing table, column, view,
  function, sequence, type, schema or extension; a column's type; a column that became NOT NULL,
  or that lost the default (identity, generation) a NOT NULL column's inserts relied on; an extra
  NOT NULL column with no default (every insert that does not name it fails); a column that became
  generated or GENERATED ALWAYS (explicit values are refused); an enum without a label the
  application writes; a function's kind, return type or arguments; a view turned into a
  materialized view or back (writes through it, or REFRESH, fail); an extension in another schema.
* ``risky``: statements still work, but the database no longer keeps a rule the migrations set,
  keeps one they did not, or runs other code: a missing or extra constraint (a missing primary key
  or unique constraint also fails ``ON CONFLICT`` on it), a unique index missing, extra or INVALID,
  a changed constraint or foreign-key rule, a missing, extra, changed or disabled trigger, a
  trigger function missing, a function's body, language, volatility, strictness or security, a
  view's definition, a column's default or generation expression changed, a default, identity
  or generation lost where inserts can do without it, a NOT NULL that is gone, enum labels in
  another order, a domain's checks or default, a sequence's type, bounds, increment or
  cycling, a table rebuilt as partitioned or foreign.
* ``slow``: a plain (not unique) index missing, INVALID or defined otherwise: every query still
  answers, perhaps slowly.
* ``harmless``: an extra object the migrations do not know (a table, view, function, sequence,
  type, schema, extension, a non-unique index, a nullable column or one with a default), a default
  or BY DEFAULT identity where none was expected, an index that became valid, enum labels added,
  a sequence's start, cache or owner. Comments, grants, owners and storage parameters are not in
  the model at all, so they are never a difference.

A difference of a kind this module does not classify is ``breaking``: unknown means "look".
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dbledger.schema.model import (
    Column,
    Constraint,
    Domain,
    Enum,
    Function,
    Index,
    SchemaModel,
    Table,
    View,
    key_of,
)

__all__ = ["SEVERITIES", "Difference", "Severity", "diff"]

Severity = Literal["harmless", "slow", "risky", "breaking"]
# From the least to the most severe: a threshold means "this one and every one after it".
SEVERITIES: tuple[Severity, ...] = ("harmless", "slow", "risky", "breaking")


@dataclass(frozen=True)
class Difference:
    kind: str  # 'table', 'column', 'foreign key', 'index', 'trigger function', ...
    name: str
    message: str
    details: str | None = None  # a unified diff of a body or definition, when one helps
    change: Literal["missing", "extra", "changed"] = "changed"
    attribute: str | None = None  # what changed ('type', 'nullable', 'definition', 'body', ...)
    severity: Severity = "breaking"  # what it can do to the application: the module docstring

    def to_dict(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "name": self.name,
            "message": self.message,
            "details": self.details,
            "change": self.change,
            "attribute": self.attribute,
            "severity": self.severity,
        }

    def __str__(self) -> str:
        return self.message + (f"\n{self.details}" if self.details else "")


Render = Callable[[Any], str]


def _labelled(label: str, none: str | None = None) -> Render:
    return lambda value: (none or f"no {label}") if value is None else f"{label} {value}"


def _flag(label: str) -> Render:
    return lambda value: label if value else f"not {label}"


def _plain(value: Any) -> str:
    return str(value)


def _checks(checks: tuple[Constraint, ...]) -> str:
    return "checks " + ("; ".join(f"{c.name} {c.definition}" for c in checks) or "none")


# For each kind of object, the fields compared one by one, and how a value reads in a message.
_COLUMN: dict[str, Render] = {
    "type": _plain,
    "nullable": lambda value: "nullable" if value else "NOT NULL",
    "default": _labelled("default"),
    "identity": _labelled("identity GENERATED", "no identity"),
    "generated": _labelled("generated as", "not generated"),
}
_RULES: dict[str, Render] = {
    "on_delete": _labelled("ON DELETE"),
    "on_update": _labelled("ON UPDATE"),
    "deferrable": lambda value: value or "NOT DEFERRABLE",
}
_FIELDS: dict[str, dict[str, Render]] = {
    "sequence": {
        "type": _labelled("type"),
        "start": _labelled("start"),
        "increment": _labelled("increment"),
        "minimum": _labelled("minimum"),
        "maximum": _labelled("maximum"),
        "cache": _labelled("cache"),
        "cycle": _flag("CYCLE"),
        "owned_by": _labelled("owned by", "not owned by a column"),
    },
    "enum": {"labels": lambda labels: "labels (" + ", ".join(repr(label) for label in labels) + ")"},
    "domain": {
        "type": _labelled("type"),
        "nullable": lambda value: "nullable" if value else "NOT NULL",
        "default": _labelled("default"),
        "checks": _checks,
    },
    "extension": {"schema": _labelled("schema")},
    "index": {"definition": _plain, "valid": lambda value: "valid" if value else "INVALID"},
    "trigger": {"definition": _plain, "enabled": _labelled("enabled")},
}
_FUNCTION: dict[str, Render] = {
    "kind": _plain,
    "returns": _labelled("returns"),
    "language": _labelled("language"),
    "volatility": _plain,
    "strict": _flag("STRICT"),
    "security_definer": _flag("SECURITY DEFINER"),
    "full_arguments": _labelled("arguments"),
}


def diff(expected: SchemaModel, found: SchemaModel) -> list[Difference]:
    """Every difference between the ``expected`` schema and the one ``found``, by kind of object
    and then by name; empty when the models are equal."""
    out: list[Difference] = []
    out += _pair("schema", [(s, s) for s in expected.schemas], [(s, s) for s in found.schemas], _nothing)
    out += _objects("extension", expected.extensions, found.extensions)
    out += _objects("enum", expected.enums, found.enums)
    out += _objects("domain", expected.domains, found.domains)
    out += _objects("sequence", expected.sequences, found.sequences)
    out += _pair("table", _keyed(expected.tables), _keyed(found.tables), _table)
    out += _objects("index", expected.indexes, found.indexes)
    out += _pair("view", _keyed(expected.views), _keyed(found.views), _view, kind_of=_view_kind)
    out += _pair("function", _keyed(expected.functions), _keyed(found.functions), _function, kind_of=_fn_kind)
    out += _objects("trigger", expected.triggers, found.triggers)
    return out


def _keyed(items: Iterable[Any]) -> list[tuple[str, Any]]:
    return [(key_of(item), item) for item in items]


def _pair(
    kind: str,
    expected: Sequence[tuple[str, Any]],
    found: Sequence[tuple[str, Any]],
    compare: Callable[[str, str, Any, Any], Iterator[Difference]],
    kind_of: Callable[[Any], str] | None = None,
) -> Iterator[Difference]:
    """Missing, extra and changed objects of one kind, matched by key."""
    want, have = dict(expected), dict(found)
    for key in sorted(want.keys() | have.keys()):
        name = kind_of(want.get(key, have.get(key))) if kind_of else kind
        if key not in have:
            severity = _presence(name, "missing", want[key])
            yield Difference(name, key, f"missing {name} {key}", change="missing", severity=severity)
        elif key not in want:
            severity = _presence(name, "extra", have[key])
            yield Difference(name, key, f"extra {name} {key}", change="extra", severity=severity)
        elif want[key] != have[key]:
            yield from compare(name, key, want[key], have[key])


def _objects(kind: str, expected: Iterable[Any], found: Iterable[Any]) -> Iterator[Difference]:
    return _pair(kind, _keyed(expected), _keyed(found), lambda k, n, a, b: _fields(k, n, a, b, _FIELDS[k]))


def _nothing(kind: str, name: str, a: Any, b: Any) -> Iterator[Difference]:
    return iter(())


def _fields(kind: str, name: str, want: Any, have: Any, fields: dict[str, Render]) -> Iterator[Difference]:
    judge = _JUDGES.get(kind, _unknown)
    for field, render in fields.items():
        a, b = getattr(want, field), getattr(have, field)
        if a != b:
            message = f"{kind} {name}: expected {render(a)}, found {render(b)}"
            yield Difference(kind, name, message, attribute=field, severity=judge(field, want, have))


def _table(kind: str, name: str, want: Table, have: Table) -> Iterator[Difference]:
    if want.kind != have.kind:
        message = f"table {name}: expected a {want.kind}, found a {have.kind}"
        yield Difference(kind, name, message, attribute="kind", severity="risky")

    def columns(table: Table) -> list[tuple[str, Column]]:
        return [(f"{name}.{c.name}", c) for c in table.columns]

    def constraints(table: Table) -> list[tuple[str, Constraint]]:
        return [(f"{name}.{c.name}", c) for c in table.constraints]

    yield from _pair("column", columns(want), columns(have), lambda k, n, a, b: _fields(k, n, a, b, _COLUMN))
    yield from _pair(
        "constraint", constraints(want), constraints(have), _constraint, kind_of=_constraint_kind
    )


def _constraint_kind(constraint: Constraint) -> str:
    return constraint.kind if constraint.kind == "foreign key" else f"{constraint.kind} constraint"


def _constraint(kind: str, name: str, want: Constraint, have: Constraint) -> Iterator[Difference]:
    rules = list(_fields(kind, name, want, have, _RULES)) if want.kind == have.kind else []
    if rules:
        yield from rules
    else:
        message = f"{kind} {name}: expected {want.definition}, found {have.definition}"
        yield Difference(kind, name, message, attribute="definition", severity="risky")


def _view_kind(view: View) -> str:
    return "materialized view" if view.materialized else "view"


def _view(kind: str, name: str, want: View, have: View) -> Iterator[Difference]:
    if want.materialized != have.materialized:
        message = f"view {name}: expected a {kind}, found a {_view_kind(have)}"
        yield Difference(kind, name, message, attribute="materialized", severity="breaking")
    if want.definition != have.definition:
        details = _unified(want.definition, have.definition, name)
        message = f"{kind} {name}: definition differs"
        yield Difference(kind, name, message, details, attribute="definition", severity="risky")


def _fn_kind(function: Function) -> str:
    return function.kind


def _function(kind: str, name: str, want: Function, have: Function) -> Iterator[Difference]:
    yield from _fields(kind, name, want, have, _FUNCTION)
    if want.body != have.body:
        details = _unified(want.body, have.body, name)
        yield Difference(
            kind, name, f"{kind} {name}: body differs", details, attribute="body", severity="risky"
        )


# -- severities: what a difference can do to an application (see the module docstring) ----------

_CONSTRAINTS = (
    "primary key constraint",
    "unique constraint",
    "check constraint",
    "foreign key",
    "exclusion constraint",
    "trigger constraint",
)
_RULE: tuple[Severity, Severity] = ("risky", "risky")  # gone: not enforced; extra: may refuse writes
# The severity of a missing and of an extra object, by kind (columns and indexes: _presence).
_PRESENCE: dict[str, tuple[Severity, Severity]] = {
    # What the application names in its statements: gone, they fail; extra, nobody asks for them.
    **{
        kind: ("breaking", "harmless")
        for kind in (
            *("schema", "extension", "enum", "domain", "sequence", "table", "column"),
            *("view", "materialized view", "function", "procedure", "aggregate", "window function"),
        )
    },
    "trigger function": ("risky", "harmless"),  # the application never calls one; its trigger is gone
    "trigger": _RULE,  # missing: audit rows or derived data go unwritten; extra: code on every write
    "index": ("slow", "harmless"),  # a unique one is a rule: _presence
    **dict.fromkeys(_CONSTRAINTS, _RULE),
}


def _presence(kind: str, change: str, item: Any) -> Severity:
    if isinstance(item, Index) and _unique(item):
        return "risky"
    if isinstance(item, Column) and change == "extra" and _needs_value(item):
        return "breaking"  # every insert that does not name it fails
    missing, extra = _PRESENCE.get(kind, ("breaking", "breaking"))
    return missing if change == "missing" else extra


def _unique(index: Index) -> bool:
    return re.match(r"\s*CREATE\s+UNIQUE\s", index.definition, re.IGNORECASE) is not None


def _needs_value(column: Column) -> bool:
    """True when an insert that leaves the column out fails."""
    return not column.nullable and column.default is None and column.identity is None and not column.generated


Judge = Callable[[str, Any, Any], Severity]  # (attribute, expected object, found object)


def _column_change(attribute: str, want: Column, have: Column) -> Severity:
    if attribute == "type":
        return "breaking"
    if attribute == "nullable":
        return "risky" if have.nullable else "breaking"  # NULLs get in / writes of NULL fail
    if getattr(have, attribute) is None:  # a default, identity or generation the migrations gave
        return "breaking" if _needs_value(have) else "risky"
    if attribute == "generated" and want.generated is None:
        return "breaking"  # a value written to a generated column is refused
    if attribute == "identity":
        return "breaking" if have.identity == "ALWAYS" else "harmless"  # ALWAYS refuses given ids
    return "harmless" if getattr(want, attribute) is None else "risky"


def _enum_change(attribute: str, want: Enum, have: Enum) -> Severity:
    if not set(want.labels) <= set(have.labels):
        return "breaking"  # writing a label that is gone fails
    kept = tuple(label for label in have.labels if label in want.labels)
    return "harmless" if kept == want.labels else "risky"  # the order is what < compares


def _domain_change(attribute: str, want: Domain, have: Domain) -> Severity:
    if attribute == "type":
        return "breaking"
    if attribute == "nullable":
        return "risky" if have.nullable else "breaking"
    if attribute == "default" and want.default is None:
        return "harmless"
    return "risky"  # another default, or checks: a rule gone lets bad data in, a new one refuses


def _index_change(attribute: str, want: Index, have: Index) -> Severity:
    if attribute == "valid" and have.valid:
        return "harmless"  # an INVALID index the migrations left was rebuilt
    return "risky" if _unique(want) or _unique(have) else "slow"


def _fixed(severities: dict[str, Severity]) -> Judge:
    return lambda attribute, want, have: severities.get(attribute, "breaking")


def _unknown(attribute: str, want: Any, have: Any) -> Severity:
    return "breaking"


_FUNCTION_SEVERITY = _fixed(
    {
        "kind": "breaking",  # SELECT f() against CALL p()
        "returns": "breaking",
        "full_arguments": "breaking",  # calls by argument name, or relying on a default
        "language": "risky",
        "volatility": "risky",
        "strict": "risky",
        "security_definer": "risky",
    }
)
_JUDGES: dict[str, Judge] = {
    "column": _column_change,
    "enum": _enum_change,
    "domain": _domain_change,
    "index": _index_change,
    "sequence": _fixed(
        {
            "type": "risky",  # a smaller type runs out sooner
            "start": "harmless",  # only a RESTART reads it
            "increment": "risky",
            "minimum": "risky",
            "maximum": "risky",
            "cache": "harmless",
            "cycle": "risky",  # a cycling sequence hands out ids again
            "owned_by": "harmless",
        }
    ),
    "extension": _fixed({"schema": "breaking"}),  # unqualified calls miss it
    "trigger": _fixed({"definition": "risky", "enabled": "risky"}),
    **dict.fromkeys(
        ("function", "procedure", "aggregate", "window function", "trigger function"), _FUNCTION_SEVERITY
    ),
    # ON DELETE, ON UPDATE, DEFERRABLE: deletes cascade or refuse, checks run at another time
    **dict.fromkeys(_CONSTRAINTS, _fixed(dict.fromkeys(_RULES, "risky"))),
}


def _unified(expected: str, found: str, name: str) -> str:
    lines = difflib.unified_diff(
        expected.splitlines(), found.splitlines(), f"expected {name}", f"found {name}", lineterm=""
    )
    return "\n".join(lines)
