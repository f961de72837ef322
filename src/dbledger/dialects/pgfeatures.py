"""The SQL a PostgreSQL version added, read off a statement's parse tree: the preflight refuses a
migration that uses what the server's version lacks before anything runs, naming the line and
both versions, instead of failing halfway through a deploy (docs/postgres-versions.md).

The parser (pglast) reads the newest grammar, so it reads what an older server would reject.
Only what the parse tree shows is listed: a new function or type name (``any_value``, a
multirange) is left to the server, which names it.
"""

from __future__ import annotations

import re
from typing import Any

# Words one of the features below is written with: a statement with none of them is not parsed.
_WORDS = re.compile(
    r"merge|concurrently|compression|distinct|atomic|return|replace|expression|generated|json"
    r"|security_invoker|transaction_timeout|valid|enforced|overlaps|on_error|parameter|access",
    re.IGNORECASE,
)

# Node type -> (what, first major version), for nodes that are a feature by their kind alone.
_NODES = {
    "JsonTable": ("JSON_TABLE", 17),
    "JsonFuncExpr": ("JSON_QUERY, JSON_VALUE or JSON_EXISTS", 17),
    "JsonObjectConstructor": ("JSON_OBJECT", 16),
    "JsonArrayConstructor": ("JSON_ARRAY", 16),
    "JsonArrayQueryConstructor": ("JSON_ARRAY", 16),
    "JsonObjectAgg": ("JSON_OBJECTAGG", 16),
    "JsonArrayAgg": ("JSON_ARRAYAGG", 16),
    "JsonIsPredicate": ("IS JSON", 16),
    "JsonParseExpr": ("JSON()", 17),
    "JsonScalarExpr": ("JSON_SCALAR", 17),
    "JsonSerializeExpr": ("JSON_SERIALIZE", 17),
}
_ALTER_TABLE = {
    "AT_SetCompression": ("ALTER COLUMN ... SET COMPRESSION", 14),
    "AT_SetAccessMethod": ("ALTER TABLE ... SET ACCESS METHOD", 15),
    "AT_SetExpression": ("ALTER COLUMN ... SET EXPRESSION", 17),
}
_SETTINGS = {"transaction_timeout": 17}


def may_use_any(sql: str) -> bool:
    """Whether ``sql`` has a word one of the features is written with (else it is not parsed)."""
    return _WORDS.search(sql) is not None


def newest_feature(tree: Any) -> tuple[str, int] | None:
    """The feature of the parse tree ``tree`` that needs the newest PostgreSQL, as (what, first
    major version); None when it needs nothing newer than 13."""
    from pglast.visitors import Visitor

    found: list[tuple[str, int]] = []

    class Features(Visitor):
        def visit(self, ancestors: Any, node: Any) -> None:
            feature = _feature(node)
            if feature is not None:
                found.append(feature)

    Features()(tree)
    return max(found, key=lambda feature: feature[1], default=None)


def _feature(node: Any) -> tuple[str, int] | None:
    kind = type(node).__name__
    if kind in _NODES:
        return _NODES[kind]
    if kind == "MergeStmt":
        return ("MERGE ... RETURNING", 17) if node.returningClause is not None else ("MERGE", 15)
    if kind == "AlterTableCmd":
        if node.subtype.name == "AT_DetachPartition" and getattr(node.def_, "concurrent", False):
            return "DETACH PARTITION ... CONCURRENTLY", 14
        return _ALTER_TABLE.get(node.subtype.name)
    if kind == "Constraint":
        return _constraint(node)
    if kind == "ColumnDef" and node.compression:
        return "a column's COMPRESSION", 14
    if kind == "IndexStmt" and node.nulls_not_distinct:
        return "NULLS NOT DISTINCT", 15
    if kind == "CreateFunctionStmt" and node.sql_body is not None:
        return "a SQL-standard function body (BEGIN ATOMIC or RETURN)", 14
    if kind == "CreateTrigStmt" and node.replace:
        return "CREATE OR REPLACE TRIGGER", 14
    if kind == "ViewStmt" and any(option.defname == "security_invoker" for option in node.options or ()):
        return "a security_invoker view", 15
    if kind == "VariableSetStmt" and node.name in _SETTINGS:
        return f"the setting {node.name}", _SETTINGS[node.name]
    if kind == "CopyStmt" and any(option.defname == "on_error" for option in node.options or ()):
        return "COPY ... ON_ERROR", 17
    if kind == "GrantStmt" and node.objtype.name == "OBJECT_PARAMETER_ACL":
        return "GRANT ... ON PARAMETER", 15
    return None


def _constraint(node: Any) -> tuple[str, int] | None:
    kind = node.contype.name
    if kind == "CONSTR_GENERATED" and node.generated_kind == "v":
        return "a virtual generated column (GENERATED ALWAYS AS without STORED)", 18
    if kind == "CONSTR_NOTNULL" and node.skip_validation:
        return "NOT NULL ... NOT VALID", 18
    if kind in ("CONSTR_CHECK", "CONSTR_FOREIGN") and node.is_enforced is False:
        return "NOT ENFORCED", 18
    if node.without_overlaps:
        return "WITHOUT OVERLAPS", 18
    if node.nulls_not_distinct:
        return "NULLS NOT DISTINCT", 15
    return None
