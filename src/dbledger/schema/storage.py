"""A model back from its stored JSON form (``SchemaModel.to_dict(positions=True)``): the ledger
keeps the schema each successful run left, so ``drift`` knows what to expect without replaying."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from dbledger.schema.model import (
    Column,
    Constraint,
    Domain,
    Enum,
    Extension,
    Function,
    Index,
    SchemaModel,
    Sequence,
    Table,
    Trigger,
    View,
)
from dbledger.schema.normalise import normalise_body, normalise_view, procedure_arguments


def dumps(model: SchemaModel) -> str:
    """The stored form: canonical JSON with column positions (so a dump keeps table layouts)."""
    return json.dumps(model.to_dict(positions=True), sort_keys=True, separators=(",", ":"))


def loads(text: str) -> SchemaModel:
    """The model ``dumps`` stored."""
    data: dict[str, Any] = json.loads(text)

    def constraints(items: list[dict[str, Any]]) -> tuple[Constraint, ...]:
        return tuple(Constraint(**c) for c in items)

    return SchemaModel(
        dialect=data["dialect"],
        schemas=tuple(data["schemas"]),
        extensions=tuple(Extension(**e) for e in data["extensions"]),
        enums=tuple(Enum(name=e["name"], labels=tuple(e["labels"])) for e in data["enums"]),
        domains=tuple(Domain(**{**d, "checks": constraints(d["checks"])}) for d in data["domains"]),
        sequences=tuple(Sequence(**s) for s in data["sequences"]),
        tables=tuple(
            Table(
                **{
                    **t,
                    "columns": tuple(Column(**c) for c in t["columns"]),
                    "constraints": constraints(t["constraints"]),
                }
            )
            for t in data["tables"]
        ),
        indexes=tuple(Index(**i) for i in data["indexes"]),
        views=tuple(_view(v, data["dialect"]) for v in data["views"]),
        functions=tuple(_function(f, data["dialect"]) for f in data["functions"]),
        triggers=tuple(Trigger(**t) for t in data["triggers"]),
    )


# A model stored by an older dbledger, or read from an older server, is put in the form the
# introspection gives today (dbledger.schema.normalise), so that it compares equal to the same
# schema on any supported version.


def _view(stored: dict[str, Any], dialect: str) -> View:
    view = View(**stored)
    if dialect != "postgresql":
        return view
    return View(view.name, normalise_body(normalise_view(view.definition)), view.materialized)


def _function(stored: dict[str, Any], dialect: str) -> Function:
    function = Function(**stored)
    if dialect != "postgresql" or function.kind != "procedure":
        return function
    return replace(
        function,
        arguments=procedure_arguments(function.arguments),
        full_arguments=procedure_arguments(function.full_arguments),
    )
