"""Small typed helpers over pglast's syntax tree (pglast ships no type hints), and SQL types as
comparable records.

Every value read from a node goes through one of these helpers, so the rest of the analysis is
type-checked. Types are compared by parsing both sides with the same parser: the type written in
``ALTER COLUMN ... TYPE`` and the type the catalog reports (``format_type`` prints valid SQL type
syntax, e.g. ``timestamp(3) without time zone``), so aliases (``int``, ``integer``, ``int4``) meet.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError

Node = Any  # a pglast.ast.Node


def kind_of(node: Node) -> str:
    """The node's class name, e.g. ``AlterTableStmt``."""
    return type(node).__name__


def text(node: Node, attr: str) -> str | None:
    value = getattr(node, attr, None)
    return value if isinstance(value, str) else None


def flag(node: Node, attr: str) -> bool:
    return bool(getattr(node, attr, False))


def integer(node: Node, attr: str) -> int | None:
    value = getattr(node, attr, None)
    return int(value) if isinstance(value, int) else None


def enum(node: Node, attr: str) -> str:
    """The member name of an enum field (``AT_AddColumn``), or '' when absent."""
    value = getattr(node, attr, None)
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else ""


def child(node: Node, attr: str) -> Node | None:
    value = getattr(node, attr, None)
    return value if _is_node(value) else None


def children(node: Node, attr: str) -> tuple[Node, ...]:
    """A list field as a tuple of nodes (a single node becomes a 1-tuple, None an empty one)."""
    value = getattr(node, attr, None)
    if value is None:
        return ()
    if isinstance(value, tuple):
        return tuple(item for item in value if item is not None)
    return (value,)


def strings(items: tuple[Node, ...]) -> tuple[str, ...]:
    """The text of a list of ``String`` nodes (qualified names, column lists)."""
    return tuple(s for s in (text(item, "sval") for item in items) if s is not None)


def walk(node: Node) -> Iterator[Node]:
    """``node`` and every node below it, depth first."""
    stack: list[object] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, tuple):
            stack.extend(reversed(current))
        elif _is_node(current):
            yield current
            slots: dict[str, object] = getattr(type(current), "__slots__", {})
            for slot in slots:
                stack.append(getattr(current, slot, None))


def _is_node(value: object) -> bool:
    return isinstance(value, ast.Node)


def quote_ident(name: str) -> str:
    """An identifier as PostgreSQL's ``quote_ident`` writes it: bare when it is lower-case
    letters, digits, ``_`` and ``$`` not starting with a digit, double-quoted otherwise."""
    plain = (
        bool(name)
        and (name[0].islower() or name[0] == "_")
        and all(c.islower() or c.isdigit() or c in "_$" for c in name)
        and name.isascii()
    )
    return name if plain else '"' + name.replace('"', '""') + '"'


def qualified(parts: tuple[str, ...]) -> str:
    return ".".join(quote_ident(part) for part in parts)


def qualified_like(relation: str, name: str) -> str:
    """``name`` in the schema ``relation`` is qualified with, if any: an index is in its table's
    schema, a relation renamed stays in its own."""
    return qualified((*split_qualified(relation)[:-1], name))


def split_qualified(name: str) -> tuple[str, ...]:
    """The parts of a name ``qualified`` wrote, quotes removed: ``app."Order Lines"`` ->
    ``("app", "Order Lines")``."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    index = 0
    while index < len(name):
        char = name[index]
        if quoted and char == '"' and name[index + 1 : index + 2] == '"':
            current.append('"')
            index += 1
        elif char == '"':
            quoted = not quoted
        elif char == "." and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return tuple(parts)


def relation(range_var: Node | None) -> str | None:
    """``schema.table`` when the SQL qualified it, else ``table``; quoted where needed."""
    if range_var is None:
        return None
    name = text(range_var, "relname")
    if name is None:
        return None
    schema = text(range_var, "schemaname")
    return qualified((schema, name) if schema else (name,))


# -- SQL types ------------------------------------------------------------------------------

# Names the parser leaves as written, mapped to the catalog's internal names the parser produces
# for the SQL-standard spellings (``integer`` -> ``pg_catalog.int4``).
_ALIASES = {
    "int": "int4",
    "integer": "int4",
    "smallint": "int2",
    "bigint": "int8",
    "real": "float4",
    "float": "float8",
    "decimal": "numeric",
    "boolean": "bool",
}


@dataclass(frozen=True)
class SqlType:
    """A type reduced to what decides whether converting to it rewrites the table."""

    name: str  # internal name without pg_catalog: "varchar", "int4", "timestamptz", "s.my_type"
    mods: tuple[int, ...] | None  # typmods as written; None when not plain integers
    array: bool

    def __str__(self) -> str:
        mods = "" if not self.mods else "(" + ",".join(map(str, self.mods)) + ")"
        return f"{self.name}{mods}{'[]' if self.array else ''}"


def sql_type(type_name: Node) -> SqlType:
    """The ``SqlType`` of a ``TypeName`` node."""
    parts = strings(children(type_name, "names"))
    if len(parts) == 2 and parts[0] == "pg_catalog":
        parts = parts[1:]
    name = _ALIASES.get(parts[-1], parts[-1]) if len(parts) == 1 else ".".join(parts)
    mods: list[int] | None = []
    for mod in children(type_name, "typmods"):
        value = integer(child(mod, "val"), "ival") if child(mod, "val") is not None else None
        if value is None or mods is None:
            mods = None
        else:
            mods.append(value)
    if name == "interval" and mods:
        mods = None  # field mask and precision packed together: compared as unknown
    return SqlType(
        name=name,
        mods=tuple(mods) if mods is not None else None,
        array=bool(children(type_name, "arrayBounds")),
    )


@lru_cache(maxsize=256)
def parse_type(text_: str) -> SqlType | None:
    """The ``SqlType`` of a type as text (``format_type`` output), or None if it does not parse."""
    try:
        parsed = parse_sql(f"SELECT NULL::{text_}")
    except ParseError:
        return None
    if len(parsed) != 1:
        return None
    statement = parsed[0].stmt
    targets = children(statement, "targetList")
    cast = child(targets[0], "val") if len(targets) == 1 else None
    type_name = child(cast, "typeName") if cast is not None else None
    return sql_type(type_name) if type_name is not None else None
