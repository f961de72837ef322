"""A model back from its stored JSON form (``SchemaModel.to_dict(positions=True)``): the ledger
keeps the schema each successful run left, so ``drift`` knows what to expect without replaying."""

from __future__ import annotations

import json
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
        views=tuple(View(**v) for v in data["views"]),
        functions=tuple(Function(**f) for f in data["functions"]),
        triggers=tuple(Trigger(**t) for t in data["triggers"]),
    )
