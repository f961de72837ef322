"""Compare two schema models and say, object by object, what differs, in words a person can act
on: ``column platform_connections.id: expected character varying(255), found uuid``, ``missing
table discovery_runs``, ``extra table hand_made``, ``trigger function log_changes: body differs``
with a unified diff of the body in ``details``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dbledger.schema.model import Column, Constraint, Function, SchemaModel, Table, View, key_of


@dataclass(frozen=True)
class Difference:
    kind: str  # 'table', 'column', 'foreign key', 'index', 'trigger function', ...
    name: str
    message: str
    details: str | None = None  # a unified diff of a body or definition, when one helps

    def to_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "name": self.name, "message": self.message, "details": self.details}

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
            yield Difference(name, key, f"missing {name} {key}")
        elif key not in want:
            yield Difference(name, key, f"extra {name} {key}")
        elif want[key] != have[key]:
            yield from compare(name, key, want[key], have[key])


def _objects(kind: str, expected: Iterable[Any], found: Iterable[Any]) -> Iterator[Difference]:
    return _pair(kind, _keyed(expected), _keyed(found), lambda k, n, a, b: _fields(k, n, a, b, _FIELDS[k]))


def _nothing(kind: str, name: str, a: Any, b: Any) -> Iterator[Difference]:
    return iter(())


def _fields(kind: str, name: str, want: Any, have: Any, fields: dict[str, Render]) -> Iterator[Difference]:
    for field, render in fields.items():
        a, b = getattr(want, field), getattr(have, field)
        if a != b:
            yield Difference(kind, name, f"{kind} {name}: expected {render(a)}, found {render(b)}")


def _table(kind: str, name: str, want: Table, have: Table) -> Iterator[Difference]:
    if want.kind != have.kind:
        yield Difference(kind, name, f"table {name}: expected a {want.kind}, found a {have.kind}")

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
        yield Difference(kind, name, f"{kind} {name}: expected {want.definition}, found {have.definition}")


def _view_kind(view: View) -> str:
    return "materialized view" if view.materialized else "view"


def _view(kind: str, name: str, want: View, have: View) -> Iterator[Difference]:
    if want.materialized != have.materialized:
        yield Difference(kind, name, f"view {name}: expected a {kind}, found a {_view_kind(have)}")
    if want.definition != have.definition:
        details = _unified(want.definition, have.definition, name)
        yield Difference(kind, name, f"{kind} {name}: definition differs", details)


def _fn_kind(function: Function) -> str:
    return function.kind


def _function(kind: str, name: str, want: Function, have: Function) -> Iterator[Difference]:
    yield from _fields(kind, name, want, have, _FUNCTION)
    if want.body != have.body:
        yield Difference(kind, name, f"{kind} {name}: body differs", _unified(want.body, have.body, name))


def _unified(expected: str, found: str, name: str) -> str:
    lines = difflib.unified_diff(
        expected.splitlines(), found.splitlines(), f"expected {name}", f"found {name}", lineterm=""
    )
    return "\n".join(lines)
